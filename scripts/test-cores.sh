#!/usr/bin/env bash
# Runs the numeric parity suites once per OpenBLAS core this CPU can run (Prescott, Haswell, SkylakeX, Cooperlake),
# forcing each with OPENBLAS_CORETYPE, and once per level of Lapse's own kernels it can run (generic, avx2, avx512),
# forcing each with LAPSE_CPU_LEVEL, so no parity figure depends on which kernels a user's CPU and OpenBLAS pick.
# By hand (about 10 minutes after a release build on 2 cores); CI runs the suites once, on what lapse would pick.
#
#   scripts/test-cores.sh                    every supported core and level, suites below
#   CORES="Prescott Haswell" LEVELS="generic" scripts/test-cores.sh     (LEVELS="" or CORES="": none of that kind)
#   SUITES="APISRTests" scripts/test-cores.sh
set -euo pipefail
cd "$(dirname "$0")/.."
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { local f; for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
supported=(Prescott)
has avx2 fma && supported+=(Haswell)
has avx512f avx512bw avx512vl avx512dq avx512cd && supported+=(SkylakeX)
has avx512f avx512bw avx512vl avx512dq avx512cd avx512_bf16 && supported+=(Cooperlake)
read -r -a cores <<< "${CORES-${supported[*]}}"
levels_supported=(generic)
has avx2 fma && levels_supported+=(avx2)
has avx512f avx512bw avx512vl avx512dq && levels_supported+=(avx512)
read -r -a levels <<< "${LEVELS-${levels_supported[*]}}"
SUITES="${SUITES:-LapseTensorTests|APISRTests|DiffusionTests|StreamingT2VTests}"

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; OpenBLAS cores: ${cores[*]}; kernel levels: ${levels[*]}"
swift build -c release --build-tests >/dev/null 2>&1 || { echo "the release test build failed: run swift build -c release --build-tests" >&2; exit 1; }
status=0
# run NAME VARIABLE VALUE: the suites with one variable forced.
run() {
    local start log
    start=$(date +%s)
    log="$(mktemp "/tmp/lapse-$1.XXXXXX.log")"
    if env "$2=$3" swift test -c release --skip-build --filter "$SUITES" > "$log" 2>&1; then
        echo "== $2=$3: passed — $(grep -E 'Test run with [0-9]+ tests' "$log" | tail -1 | sed 's/^.*Test run/Test run/') ($(( $(date +%s) - start )) s)"
    else
        echo "== $2=$3: FAILED ($(( $(date +%s) - start )) s); log: $log"
        grep -E '✘|error:|failed' "$log" | head -20
        status=1
    fi
}
for core in "${cores[@]}"; do
    if [[ " ${supported[*]} " != *" $core "* ]]; then echo "== OPENBLAS_CORETYPE=$core: skipped (this CPU lacks its instructions)"; continue; fi
    run "core-$core" OPENBLAS_CORETYPE "$core"
done
for level in "${levels[@]}"; do
    if [[ " ${levels_supported[*]} " != *" $level "* ]]; then echo "== LAPSE_CPU_LEVEL=$level: skipped (this CPU lacks its instructions)"; continue; fi
    run "level-$level" LAPSE_CPU_LEVEL "$level"
done
exit $status
