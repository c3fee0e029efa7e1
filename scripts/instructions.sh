#!/usr/bin/env bash
# Instructions per operation, engine vs peers, counted by callgrind inside the
# measured loop only (`run_ops` in benches/examples/op_loop.rs): repeatable
# whatever else the machine does (BENCHMARKING.md), so they show what a code
# change costs where wall-clock runs drown in noise. Each figure is the
# loop's instructions / N. (Hash keys are seeded per process, so probe
# lengths, and the counts, vary by an instruction or two between runs.)
#
#   bash scripts/instructions.sh [OPS]    # default 200000; needs valgrind
# Writes results/instructions.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ops=${1:-200000}
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
source scripts/built.sh
bin=$(built op_loop --release --locked -q -p session-engine-benches --example op_loop)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

count() { # contender op n -> instructions executed inside run_ops
  # (`set -e` does not reach inside `$(count ...)`: each step checks itself,
  # or a failed run would print the previous contender's count)
  rm -f "$tmp/cg"
  valgrind --tool=callgrind --toggle-collect='*run_ops*' --callgrind-out-file="$tmp/cg" \
    "$bin" "$1" "$2" "$3" >/dev/null 2>&1 || { echo "callgrind of $1 $2 failed" >&2; return 1; }
  local n
  n=$(callgrind_annotate "$tmp/cg" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ',')
  [ -n "$n" ] || { echo "no count for $1 $2" >&2; return 1; }
  echo "$n"
}

contenders=(engine-manual-clock engine mutex-map dashmap)
opnames=(get touch update replace)
out=results/instructions.md
{
  echo "# Instructions per operation (callgrind)"
  echo
  echo "Command: \`bash scripts/instructions.sh $ops\`  "
  echo "Commit: \`$(git rev-parse --short HEAD)\`; $(valgrind --version); 100K sessions, 200-byte metadata, uniform keys, one thread."
  echo
  echo "Instructions counted by valgrind's callgrind inside the measured loop only, divided by $ops operations."
  echo "Exact for a given binary; they do not include cache misses, which dominate wall-clock time at this size."
  echo "\`engine-manual-clock\` reads a manual clock: under valgrind the engine's TSC clock may fall back to \`clock_gettime\`, so \`engine\` overstates the clock's cost."
  echo "Both engine columns' clocks move past the sessions' creation before the loop, so a session's first \`get\` or \`touch\` in it slides its deadline (about 43% of them, at 2 operations a session): the peers' reads write nothing."
  echo
  printf '| op |'; for c in "${contenders[@]}"; do printf ' %s |' "$c"; done; echo
  printf '|---|'; for _ in "${contenders[@]}"; do printf -- '---|'; done; echo
} > "$out.tmp"
for op in "${opnames[@]}"; do
  printf '| %s |' "$op" >> "$out.tmp"
  for c in "${contenders[@]}"; do
    n=$(count "$c" "$op" "$ops") || exit 1
    printf ' %s |' "$(( n / ops ))" >> "$out.tmp"
  done
  echo >> "$out.tmp"
done
mv "$out.tmp" "$out"
cat "$out"
