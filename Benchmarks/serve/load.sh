#!/usr/bin/env bash
# Load check of `lapse serve`: JOBS jobs of a small graph (debug nodes: a short sleep, then a file written with the
# job's number) submitted by CLIENTS concurrent curl clients, ROUNDS times. Checks that every job is done and that
# each served output holds its own job's number (none lost, none mixed up), and prints the server's resident memory
# after each round: it must stay flat (fails if the last round grew it by more than 25% over the first).
# Usage: Benchmarks/serve/load.sh [JOBS=200] [CLIENTS=8] [ROUNDS=3]   (LAPSE=path/to/lapse to skip the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS="${1:-200}"; CLIENTS="${2:-8}"; ROUNDS="${3:-3}"
if [ -z "${LAPSE:-}" ]; then
  swift build -c release --product lapse >/dev/null
  LAPSE="$(swift build -c release --show-bin-path)/lapse"
fi
WORK="$(mktemp -d)"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
export LAPSE_DEBUG_NODES=1 LAPSE_TOKEN="load-$RANDOM$RANDOM"
"$LAPSE" serve --port 0 --workspace "$WORK" > "$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/server.log" && break; sleep 0.1; done
URL="$(grep -o 'http://[0-9.]*:[0-9]*' "$WORK/server.log")"
[ -n "$URL" ] || { echo "the server did not start:"; cat "$WORK/server.log"; exit 1; }
AUTH="Authorization: Bearer $LAPSE_TOKEN"
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }

submit() {  # prints "N ID" for job N
  local n="$1"
  local graph="{\"version\": 1, \"nodes\": {
    \"n\": {\"type\": \"DebugInt\", \"params\": {\"value\": $n}},
    \"wait\": {\"type\": \"DebugSleep\", \"inputs\": {\"in\": \"n\"}, \"params\": {\"steps\": 3, \"step_ms\": 1}},
    \"save\": {\"type\": \"DebugWriteText\", \"inputs\": {\"value\": \"wait\"}, \"params\": {\"path\": \"out/n.txt\"}}}}"
  local id
  id="$(curl -sf -H "$AUTH" "$URL/jobs" -d "$graph" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
  echo "$n $id"
}
export -f submit; export URL AUTH

first=""
for round in $(seq "$ROUNDS"); do
  start=$(date +%s.%N)
  seq "$JOBS" | xargs -P "$CLIENTS" -I{} bash -c 'submit {}' > "$WORK/ids.txt"
  [ "$(wc -l < "$WORK/ids.txt")" -eq "$JOBS" ] || { echo "round $round: only $(wc -l < "$WORK/ids.txt") of $JOBS submissions answered"; exit 1; }
  # Every job ends, done, and its output is its own.
  while read -r n id; do
    for _ in $(seq 600); do
      state="$(curl -sf -H "$AUTH" "$URL/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')"
      case "$state" in done) break ;; failed|cancelled) echo "job $n ($id) $state"; exit 1 ;; esac
      sleep 0.05
    done
    [ "$state" = done ] || { echo "job $n ($id) still $state"; exit 1; }
    got="$(curl -sf -H "$AUTH" "$URL/jobs/$id/outputs/out/n.txt")"
    [ "$got" = "0 $n" ] || { echo "job $n ($id) served \"$got\""; exit 1; }  # DebugWriteText: "LINE VALUE"
  done < "$WORK/ids.txt"
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  kb=$(rss)
  [ -n "$first" ] || first=$kb
  printf 'round %d: %d jobs from %d clients all done with their own output in %.1f s; server RSS %d MiB\n' \
    "$round" "$JOBS" "$CLIENTS" "$seconds" $((kb / 1024))
done
listed="$(curl -sf -H "$AUTH" "$URL/jobs" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')"
echo "jobs remembered: $listed (the last 1,000 finished are kept)"
if [ "$kb" -gt $((first * 125 / 100)) ]; then
  echo "RSS grew from $((first / 1024)) MiB to $((kb / 1024)) MiB"; exit 1
fi
echo "RSS flat: $((first / 1024)) MiB after round 1, $((kb / 1024)) MiB after round $ROUNDS"
