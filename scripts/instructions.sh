#!/usr/bin/env bash
# Instructions per operation, engine vs peers, counted by cachegrind: exact
# and repeatable whatever else the machine does (BENCHMARKING.md), so they
# show what a code change costs where wall-clock runs drown in noise. Each
# figure is (instructions with N ops - instructions with 0 ops) / N, the same
# populate and key generation cancelling out.
#
#   bash scripts/instructions.sh [OPS]    # default 200000; needs valgrind
# Writes results/instructions.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ops=${1:-200000}
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p session-engine-benches --example op_loop
bin=target/release/examples/op_loop
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

count() { # contender op n -> total instructions
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$tmp/cg" "$bin" "$1" "$2" "$3" 2>&1 >/dev/null \
    | sed -n 's/.*I *refs: *//p' | tr -d ','
}

contenders=(engine-manual-clock engine mutex-map dashmap)
opnames=(get touch update replace)
out=results/instructions.md
{
  echo "# Instructions per operation (cachegrind)"
  echo
  echo "Command: \`bash scripts/instructions.sh $ops\`  "
  echo "Commit: \`$(git rev-parse --short HEAD)\`; $(valgrind --version); 100K sessions, 200-byte metadata, uniform keys, one thread."
  echo
  echo "Instructions counted by valgrind's cachegrind, per operation: (count with $ops ops - count with none) / $ops."
  echo "Exact for a given binary; they do not include cache misses, which dominate wall-clock time at this size."
  echo "\`engine-manual-clock\` reads a manual clock: under valgrind the engine's TSC clock may fall back to \`clock_gettime\`, so \`engine\` overstates the clock's cost."
  echo
  printf '| op |'; for c in "${contenders[@]}"; do printf ' %s |' "$c"; done; echo
  printf '|---|'; for _ in "${contenders[@]}"; do printf -- '---|'; done; echo
} > "$out.tmp"
declare -A base
for c in "${contenders[@]}"; do base[$c]=$(count "$c" none "$ops"); done
for op in "${opnames[@]}"; do
  printf '| %s |' "$op" >> "$out.tmp"
  for c in "${contenders[@]}"; do
    n=$(count "$c" "$op" "$ops")
    printf ' %s |' "$(( (n - base[$c]) / ops ))" >> "$out.tmp"
  done
  echo >> "$out.tmp"
done
mv "$out.tmp" "$out"
cat "$out"
