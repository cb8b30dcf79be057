#!/usr/bin/env bash
# The fuzz campaign, run by hand (CI runs a short pass of every family through FuzzSmokeTests in `swift test`).
#
#   Tools/fuzz/run.sh                      every family, 100,000 inputs each
#   Tools/fuzz/run.sh safetensors png      some families
#   RUNS=20000 SECONDS_PER_FAMILY=300 Tools/fuzz/run.sh
#
# Each family runs in its own lapse-fuzz process with a 4 GiB address-space cap and a 10 s hang watchdog; the seed
# corpus is Tools/fuzz/corpus/FAMILY plus the seeds the family makes in code. A crash or hang saves the input under
# fuzz-crashes/ (replay it with `lapse-fuzz FAMILY --replay FILE`) and makes this script exit 1.
set -uo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
RUNS="${RUNS:-100000}"
SECONDS_PER_FAMILY="${SECONDS_PER_FAMILY:-1800}"
swift build -c release --product lapse-fuzz 2>&1 | grep -E "error|warning: unre" && exit 1
BIN="$(swift build -c release --show-bin-path)/lapse-fuzz"
families=("$@")
[ ${#families[@]} -gt 0 ] || mapfile -t families < <("$BIN" --list | awk '{print $1}')
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | xargs)
echo "lapse-fuzz, $RUNS inputs per family (at most ${SECONDS_PER_FAMILY}s), on $cpu, $(date -u +%F)"
status=0
for family in "${families[@]}"; do
    corpus="$root/Tools/fuzz/corpus/$family"
    args=("$family" --runs "$RUNS" --seconds "$SECONDS_PER_FAMILY" --crash-dir "$root/fuzz-crashes")
    [ -d "$corpus" ] && args+=(--corpus "$corpus")
    # Run from an empty folder, so whatever a mutated relative path names lands there.
    work="$(mktemp -d)"
    if ! (cd "$work" && "$BIN" "${args[@]}"); then
        echo "$family: FAILED (see the message above; inputs are in fuzz-crashes/)"
        status=1
    fi
    rm -rf "$work"
done
exit $status
