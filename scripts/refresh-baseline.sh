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
if [ -n "$(git status --porcelain --untracked-files=no -- engine gate-loops loadgen Cargo.lock)" ]; then
    echo "refresh-baseline: measuring uncommitted changes (recorded as git.dirty): commit them with the baselines" >&2
fi
# The binary cargo built, wherever its configuration puts it.
source scripts/built.sh
bin=$(built loadgen --release --locked -q -p loadgen)
"$bin" gate --instructions --write-baseline results/baseline-instructions.json --quiet
"$bin" gate --write-baseline results/baseline.json --quiet
git --no-pager diff --stat -- results/baseline.json results/baseline-instructions.json
echo "refresh-baseline: commit results/baseline.json and results/baseline-instructions.json with the reason"
