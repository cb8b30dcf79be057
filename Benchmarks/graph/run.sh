#!/usr/bin/env bash
# Graph runtime overhead: validate + run a chain of N trivial DebugInt nodes (default 10,000; target < 1 s).
# Usage: Benchmarks/graph/run.sh [N]   (builds `lapse` in release with its own scratch path first)
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-10000}"
SCRATCH="${SCRATCH:-.build-bench}"
swift build -c release --scratch-path "$SCRATCH" --product lapse >/dev/null
LAPSE="$SCRATCH/release/lapse"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
GRAPH="$WORK/chain.json"
{
  printf '{"version": 1, "description": "%s-node chain", "nodes": {\n' "$N"
  printf '  "n0": {"type": "DebugInt", "params": {"value": 1}}'
  for ((i = 1; i < N; i++)); do
    printf ',\n  "n%d": {"type": "DebugInt", "inputs": {"in": "n%d"}, "params": {"value": 1}}' "$i" "$((i - 1))"
  done
  printf ',\n  "out": {"type": "DebugWriteText", "inputs": {"value": "n%d"}, "params": {"path": "%s/out.txt"}}\n}}\n' "$((N - 1))" "$WORK"
} > "$GRAPH"
export LAPSE_DEBUG_NODES=1
best_validate=999; best_run=999
for attempt in 1 2 3; do
  t0=$(date +%s.%N); "$LAPSE" validate "$GRAPH" >/dev/null; t1=$(date +%s.%N)
  "$LAPSE" run "$GRAPH" --quiet; t2=$(date +%s.%N)
  v=$(echo "$t1 - $t0" | bc); r=$(echo "$t2 - $t1" | bc)
  best_validate=$(echo "if ($v < $best_validate) $v else $best_validate" | bc)
  best_run=$(echo "if ($r < $best_run) $r else $best_run" | bc)
done
[ "$(cut -d' ' -f2 "$WORK/out.txt")" = "$N" ] || { echo "wrong result: $(cat "$WORK/out.txt")"; exit 1; }
printf '%s-node chain, best of 3 (process start included):\n  lapse validate: %.3f s\n  lapse run (validates, then runs): %.3f s\n' \
  "$N" "$best_validate" "$best_run"
