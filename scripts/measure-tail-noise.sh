#!/usr/bin/env bash
# How noisy a p99 "added" is on this machine, two ways: RUNS (default 24)
# default runs of the README's main command (one attempt each), and for
# each the get p99 of both sides pooled over their judged slices (what the
# verdict judged until 37e8b79) and in their typical slice (the median of
# the judged slices' p99s, what it judges since), what the backend adds
# either way, and how many judged slices of each side had a p99 over 1 ms
# (a worker held up for milliseconds inside operations, which the slices'
# meters do not see). Prints a markdown table; writes nothing under
# results/.
#
#   bash scripts/measure-tail-noise.sh     # ~10 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-24}
command -v jq >/dev/null || { echo "measure-tail-noise: needs jq" >&2; exit 1; }
source scripts/built.sh
bin=$(built loadgen --release --locked -q -p loadgen)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "Commit \`$(git rev-parse --short HEAD)\`, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| run | verdict | slices judged (backend + peer) | get p99 pooled: backend, peer, added | get p99 typical: backend, peer, added (the verdict's) | judged slices with p99 > 1 ms (backend + peer) | their p99s |"
echo "| ---: | --- | --- | --- | --- | --- | --- |"
for n in $(seq "$runs"); do
    set +e
    "$bin" run --quiet --attempts 1 --out "$tmp/$n" >/dev/null 2>&1
    set -e
    jq -r --arg n "$n" '
        ([.verdicts[] | select(.tier == "embedded" and .subject == "get" and .bound == "p99 added")] | first) as $g
        | (.judged.backend.get.p99_ns / 1000 | floor) as $pb
        | (.judged.peer.get.p99_ns / 1000 | floor) as $pp
        | [.slices.list[] | select(.standing == "judged" and .p99_ns > 1000000)] as $slow
        | "| \($n) | \(.verdict) | \(.slices.backend.judged)/\(.slices.backend.measured) + \(.slices.peer.judged)/\(.slices.peer.measured) | \($pb) µs, \($pp) µs, +\([$pb - $pp, 0] | max) µs | \($g.backend), \($g.peer), \($g.measured) | \([$slow[] | select(.side == "backend")] | length) + \([$slow[] | select(.side == "peer")] | length) | \([$slow[] | "\(.side[0:1]) \(.p99_ns / 1000000 * 10 | floor / 10) ms"] | join(", ")) |"
    ' "$tmp/$n/result.json"
done
