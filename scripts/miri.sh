#!/usr/bin/env bash
# Runs the tests of the engine's unsafe code under Miri (undefined
# behaviour, data races, leaks): the session blocks (`engine/src/block.rs`),
# the table of tagged pointers (`table.rs`), and the shard paths that
# create, share, replace and free blocks under the epoch (`shard.rs`).
# The shard's tests run under Tree Borrows: crossbeam-epoch's own intrusive
# list is not Stacked-Borrows-clean (crossbeam-rs/crossbeam#545; crossbeam
# itself tests epoch under Tree Borrows since #996).
#
#   bash scripts/miri.sh        # installs nightly's miri component if missing
#
# Not part of scripts/test.sh: it needs a nightly toolchain (downloaded by
# rustup on first use). The same tests run natively in scripts/test.sh.
# (The other unsafe block, the copy into a mapped log segment, calls mmap,
# which Miri does not support; the persistence tests exercise it natively.)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
cargo +nightly miri test -p session-engine --lib -- block:: table::
MIRIFLAGS="-Zmiri-tree-borrows" cargo +nightly miri test -p session-engine --lib -- shard::
