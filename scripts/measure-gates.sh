#!/usr/bin/env bash
# How steady the gates are, and whether they catch a slower get: writes
# results/gate.md and the runs behind it in results/gate/.
#
#   bash scripts/measure-gates.sh        # ~25 minutes on 2 cores
#
# 1. Builds the loadgen twice in release: as shipped, and with the engine's
#    test-only `inject-slowdown` feature (target/inject-slowdown).
# 2. Writes a wall-clock and an instruction baseline at this commit.
# 3. False alarms: runs both gates RUNS times (default 20) on the same
#    binary against those baselines.
# 4. Catches: runs both gates CATCHES times (default 10) on the slowed binary
#    with SESSION_ENGINE_INJECT_GET_SPINS=SPINS (default 90, chosen for a
#    slowdown of about 15%: results/README.md says how; the summary says by
#    how much the runs measured it).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-20}
catches=${CATCHES:-10}
spins=${SPINS:-90}
out=results/gate
bash scripts/ensure-valgrind.sh
command -v jq >/dev/null || { echo "measure-gates: needs jq" >&2; exit 1; }
source scripts/built.sh
bin=$(built loadgen --release --locked -q -p loadgen)
slow=$(CARGO_TARGET_DIR=target/inject-slowdown built loadgen --release --locked -q -p loadgen --features inject-slowdown)
# The last measurement stays until this one has written results/gate.md: a
# failed run puts it back (a gate.md beside the runs of another sitting
# would describe files that are gone).
rm -rf "$out.old"
if [ -d "$out" ]; then mv "$out" "$out.old"; fi
trap 'if [ -d "$out.old" ]; then rm -rf "$out"; mv "$out.old" "$out"; fi; rm -f results/gate.md.tmp' EXIT
mkdir -p "$out"
"$bin" gate --write-baseline "$out/baseline.json" --quiet
"$bin" gate --instructions --write-baseline "$out/baseline-instructions.json" --quiet

one() { # result-file command... -> runs one gate; a verdict of any kind is a result,
    # an error (exit 2, or no result written) stops the measurement: dropped
    # silently, it would leave the tables below counting fewer runs than they say
    local file=$1 rc=0
    shift
    "$@" --out "$file" --quiet >/dev/null || rc=$?
    if [ "$rc" = 2 ] || [ ! -s "$file" ]; then
        echo "measure-gates: a gate run failed (exit $rc, no verdict): $*" >&2
        exit 1
    fi
}
gate() { # label binary spins n -> gate results as JSON in $out
    local label=$1 binary=$2 n=$4
    SESSION_ENGINE_INJECT_GET_SPINS=$3 one "$out/$label-wall-$n.json" \
        "$binary" gate --verdict --baseline "$out/baseline.json"
    SESSION_ENGINE_INJECT_GET_SPINS=$3 one "$out/$label-instructions-$n.json" \
        "$binary" gate --instructions --baseline "$out/baseline-instructions.json"
}
for n in $(seq "$runs"); do gate same "$bin" 0 "$n"; echo "same commit: run $n of $runs done" >&2; done
for n in $(seq "$catches"); do gate slow "$slow" "$spins" "$n"; echo "slower get: run $n of $catches done" >&2; done

verdicts() { jq -r '.verdict' "$out"/$1-*.json | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//'; }
get_ratio() { jq -r '.rows[] | select(.metric == "get") | .candidate' "$out"/$1-*.json | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
{
    echo "# Gate steadiness: false alarms and catches"
    echo
    echo "Command: \`bash scripts/measure-gates.sh\` (RUNS=$runs CATCHES=$catches SPINS=$spins)  "
    echo "Commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- engine gate-loops loadgen || echo ' (with uncommitted changes)'); $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), shared with other work; $(valgrind --version)."
    echo
    echo "Both baselines were written at this commit ([baseline.json](gate/baseline.json), [baseline-instructions.json](gate/baseline-instructions.json)); every gate run is in [gate/](gate/)."
    echo
    echo "| gate | same commit ($runs runs) | get slowed ($catches runs) |"
    echo "| --- | --- | --- |"
    echo "| wall clock (tolerance 10%) | $(verdicts same-wall) | $(verdicts slow-wall) |"
    echo "| instructions (tolerance 2%) | $(verdicts same-instructions) | $(verdicts slow-instructions) |"
    echo
    echo "A false alarm is a \`fail\` on the same commit; a catch is a \`fail\` with the slowed get."
    echo "\`inconclusive\`: fewer than half of the runs were comparable with the baseline's (the peer's cost moved more than 15%: the machine was in another state)."
    echo
    same=$(get_ratio same-wall)
    slowed=$(get_ratio slow-wall)
    echo "How much slower get was: its engine / peer CPU per operation, median over the runs' medians, was $(printf %.3f "$same")x on the same commit and $(printf %.3f "$slowed")x slowed, **$(awk -v a="$same" -v b="$slowed" 'BEGIN {printf "%+.0f%%", (b / a - 1) * 100}')** (baseline $(printf %.3f "$(jq -r '.ratios.get' "$out/baseline.json")")x); its instructions per operation $(printf %.1f "$(jq -r '.counts.engine.get' "$out/same-instructions-1.json")") and $(printf %.1f "$(jq -r '.counts.engine.get' "$out/slow-instructions-1.json")")."
    echo
    echo "Largest change of any kind on the same commit, wall clock: $(jq -r '.rows[].change' "$out"/same-wall-*.json | sort -g | tail -1 | awk '{printf "%+.1f%%", $1 * 100}') (the tolerance is 10%); smallest change of get slowed: $(jq -r '.rows[] | select(.metric == "get") | .change' "$out"/slow-wall-*.json | sort -g | head -1 | awk '{printf "%+.1f%%", $1 * 100}')."
} > results/gate.md.tmp
mv results/gate.md.tmp results/gate.md
rm -rf "$out.old"
cat results/gate.md
