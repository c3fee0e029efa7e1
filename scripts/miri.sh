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
# The table test with a collector of its own leaves strict provenance out:
# crossbeam-epoch casts integers to pointers; it keeps the leak check.
MIRIFLAGS="-Zmiri-strict-provenance" cargo +nightly miri test -p session-engine --lib -- block:: table:: \
  --skip table::tests::a_writer_that_panics_after_a_take_leaves_the_block_to_the_epoch
MIRIFLAGS="-Zmiri-tree-borrows" cargo +nightly miri test -p session-engine --lib -- \
  table::tests::a_writer_that_panics_after_a_take_leaves_the_block_to_the_epoch
# -Zmiri-ignore-leaks: crossbeam-epoch's global collector keeps its
# per-thread records and the last sealed bags of exited threads until the
# process ends (they are static), which Miri reports as leaks. The shard's
# tests drain the epoch at their end (their blocks are freed by then: no
# block appears among those reports); the block and table tests run with
# the leak check on.
MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-ignore-leaks" cargo +nightly miri test -p session-engine --lib -- shard:: --test-threads=1
