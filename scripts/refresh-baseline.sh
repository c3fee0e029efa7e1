#!/usr/bin/env bash
# Re-measures both gate baselines from the working tree and writes them where
# the gates read them: results/baseline.json (wall clock: 20 runs) and
# results/baseline-instructions.json (callgrind). Run it on the project's
# machine and commit the two files with the change that moved them, saying
# why in the commit message (each baseline records the commit it was
# measured from, and whether the tree had uncommitted changes).
#
#   bash scripts/refresh-baseline.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-valgrind.sh
if [ -n "$(git status --porcelain --untracked-files=no -- engine loadgen Cargo.lock)" ]; then
    echo "refresh-baseline: measuring uncommitted changes (recorded as git.dirty): commit them with the baselines" >&2
fi
# The binary cargo built, wherever its configuration puts it (a path
# guessed from CARGO_TARGET_DIR would run a stale one left in target/ when
# build.target-dir or CARGO_BUILD_TARGET_DIR sends the build elsewhere).
bin=$(cargo build --release --locked -q -p loadgen --message-format=json-render-diagnostics \
    | sed -n 's/.*"executable":"\([^"]*\/loadgen\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "$(basename "$0"): cargo built no loadgen binary" >&2; exit 1; }
"$bin" gate --instructions --write-baseline results/baseline-instructions.json --quiet
"$bin" gate --write-baseline results/baseline.json --quiet
git --no-pager diff --stat -- results/baseline.json results/baseline-instructions.json
echo "refresh-baseline: commit results/baseline.json and results/baseline-instructions.json with the reason"
