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
# cargo-fuzz) must at least build against today's decoders.
CARGO_TARGET_DIR=target/fuzz cargo check --locked --manifest-path engine/fuzz/Cargo.toml
CARGO_TARGET_DIR=target/fuzz cargo check --locked --manifest-path redis-backend/fuzz/Cargo.toml
CARGO_TARGET_DIR=target/fuzz cargo check --locked --manifest-path tower/fuzz/Cargo.toml
