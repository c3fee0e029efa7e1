#!/usr/bin/env bash
# The run verdict on this machine: does the default run pass, and do an
# injected stall and an injected engine slowdown fail it? Writes
# results/loadgen/verdicts.md, and keeps the first run of each kind in full
# (results/loadgen/default, stall, slowdown).
#
#   bash scripts/measure-verdicts.sh     # ~15 minutes on 2 cores
#
# RUNS (default 10) default runs, exactly the README's main command's
# binary and scenario; STALLS (10) with --inject-stall 2s:100ms; SLOWED (3)
# with the engine's test-only inject-slowdown feature and
# SESSION_ENGINE_INJECT_GET_SPINS=SPINS (default 10000, ~4 us more per get).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-10}
stalls=${STALLS:-10}
slowed=${SLOWED:-3}
spins=${SPINS:-10000}
command -v jq >/dev/null || { echo "measure-verdicts: needs jq" >&2; exit 1; }
source scripts/built.sh
bin=$(built loadgen --release --locked -q -p loadgen)
slow=$(CARGO_TARGET_DIR=target/inject-slowdown built loadgen --release --locked -q -p loadgen --features inject-slowdown)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rows=()
one() { # kind n binary spins [flags...]
    local kind=$1 n=$2 binary=$3 s=$4
    shift 4
    local dir="$tmp/$kind-$n"
    set +e
    SESSION_ENGINE_INJECT_GET_SPINS=$s "$binary" run --quiet --out "$dir" "$@" >/dev/null
    local code=$?
    set -e
    rows+=("$(jq -r --arg kind "$kind" --arg code "$code" '
        [ $kind, (.started_at), $code, .verdict, (.earlier_attempts | length + 1 | tostring),
          "\(.slices.backend.judged)/\(.slices.backend.measured) + \(.slices.peer.judged)/\(.slices.peer.measured)",
          "\(.judged.typical_p50_ns.get // 0) ns",
          ([.verdicts[] | select(.bound | test("added")) | select(.status == "fail") | "\(.tier) \(.subject) \(.bound) \(.measured)"] | first // "-"),
          ([.verdicts[] | select(.status == "fail") | "\(.tier)/\(.subject)/\(.bound)"] | length | tostring),
          ([.verdicts[] | select(.bound == "p999 added" and .margin != null)] | min_by(.margin) // null
            | if . == null then "-" else "\(.subject) \(.measured)" end),
          ([.verdicts[] | select(.margin != null and .tier != "run")] | min_by(.margin) // null
            | if . == null then "-"
              else "\(if .margin < 0.1 then (.margin * 1000 | floor / 1000) else (.margin * 100 | floor / 100) end)x \(.tier)/\(.subject)/\(.bound)" end)
        ] | "| " + join(" | ") + " |"' "$dir/result.json")")
    echo "$kind $n: exit $code" >&2
}
for n in $(seq "$runs"); do one default "$n" "$bin" 0; done
for n in $(seq "$stalls"); do one stall "$n" "$bin" 0 --inject-stall 2s:100ms; done
for n in $(seq "$slowed"); do one slowdown "$n" "$slow" "$spins"; done
count() { printf '%s\n' "${rows[@]}" | grep "^| $1 " | awk -F'|' '{print $5}' | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//'; }
{
    echo "# Run verdicts on this machine"
    echo
    echo "Command: \`bash scripts/measure-verdicts.sh\` (RUNS=$runs STALLS=$stalls SLOWED=$slowed SPINS=$spins)  "
    echo "Commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- engine gate-loops loadgen || echo ' (with uncommitted changes)'); $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), shared with other work (no \`nice\`)."
    echo
    echo "Each run is \`target/release/loadgen run\` (the default scenario and tiers, what \`cargo run --release -p loadgen -- run\` runs), \`--inject-stall 2s:100ms\`, or the engine built with \`--features inject-slowdown\` and \`SESSION_ENGINE_INJECT_GET_SPINS=$spins\`. The first of each is kept in full: [default](default/summary.md), [stall](stall/summary.md), [slowdown](slowdown/summary.md)."
    echo
    echo "- default: $(count default)"
    echo "- --inject-stall 2s:100ms: $(count stall)"
    echo "- engine slowed: $(count slowdown)"
    echo "- verdicts from a second or later attempt (the first inconclusive): $(printf '%s\n' "${rows[@]}" | awk -F'|' '$6 + 0 > 1' | wc -l) of ${#rows[@]}"
    echo
    echo "\"smallest margin\": the latency bound closest to its limit in the run (limit over measured; below 1x fails). The run's rate bound is left out of it: its margin is 1.05x whenever the schedule is delivered in full."
    echo
    echo "\"attempt\": the attempt the verdict is from (an inconclusive one is run again, up to 3 in all; the figures are the last attempt's, the started time its own)."
    echo
    echo "| run | started (UTC) | exit | verdict | attempt | slices judged (backend + peer) | get p50, typical slice | first failed tail | bounds failed | largest p999 added | smallest margin |"
    echo "| --- | --- | ---: | --- | ---: | --- | ---: | --- | ---: | --- | --- |"
    printf '%s\n' "${rows[@]}"
} > "$tmp/verdicts.md"
# Only now that every run is in: the first run of each kind, and the table.
for kind in default stall slowdown; do
    if [ -d "$tmp/$kind-1" ]; then
        rm -rf "results/loadgen/$kind"
        cp -r "$tmp/$kind-1" "results/loadgen/$kind"
    fi
done
mv "$tmp/verdicts.md" results/loadgen/verdicts.md
cat results/loadgen/verdicts.md
