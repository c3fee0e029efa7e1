#!/usr/bin/env bash
# The project's test command: everything a fresh machine needs, then every
# test in the workspace. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Redis backend tests run against real servers: install them if missing.
bash scripts/ensure-redis.sh
# The loadgen's instruction-gate test runs valgrind: install it if missing.
bash scripts/ensure-valgrind.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The engine's optional features (serde, uuid) build, lint and pass their tests.
cargo clippy -p session-engine --all-targets --features serde,uuid --locked -- -D warnings
cargo test -p session-engine --features serde,uuid --locked --test ids_and_serde
# The optional `tracing` features (rare events only) build and lint; the
# engine's logs its events.
cargo clippy -p session-engine --all-targets --features tracing --locked -- -D warnings
cargo test -p session-engine --features tracing --locked --test rare_events_are_logged
cargo clippy -p session-redis --all-targets --features tracing --locked -- -D warnings
# The fuzz targets (not workspace members: running them needs nightly and
# cargo-fuzz) must at least build against today's decoders. A check links
# nothing: a libFuzzer path that is never used spares building libFuzzer's
# C++ sources (and needing a C++ compiler on the machine).
fuzz_check() {
    CUSTOM_LIBFUZZER_PATH=/nonexistent/libfuzzer.a CARGO_TARGET_DIR=target/fuzz \
        cargo check --locked --manifest-path "$1"
}
fuzz_check engine/fuzz/Cargo.toml
fuzz_check redis-backend/fuzz/Cargo.toml
fuzz_check tower/fuzz/Cargo.toml
