#!/usr/bin/env bash
# Every Lapse-vs-reference benchmark in one run, then one table of their ratios (run by hand, never in CI).
#
# Each script times Lapse and its reference interleaved (Benchmarks/pairs.py: PAIRS pairs, median of the per-pair
# ratios and the spread) and prints RESULT lines; this collects them under the machine's CPU, vector extensions,
# OpenBLAS core and kernel level. Full logs go to $LOG_DIR (default a fresh folder under /tmp).
#
#   Benchmarks/run-all.sh                     the default set below (about 30 min on 2 cores; tensor/bench.py times
#                                             the UNet layers issue 12 names against PyTorch)
#   ONLY="apisr/grl_dat.sh diffusion/unet.sh" Benchmarks/run-all.sh    a subset
#   PAIRS=7 Benchmarks/run-all.sh             more pairs per workload (default 5)
#   WITH_REFINER=1 Benchmarks/run-all.sh      adds the StreamingT2V refiner step at 448×208 × 4 (≈ 12 min more,
#                                             needs ST2V_SRC, see refiner_step.sh)
# Other variables reach every script (PYTHON, SCRATCH, OPENBLAS_CORETYPE, the kernel-level override, …), so
# `run-all.sh` once as is and once with an override gives the two tables to compare.
set -uo pipefail
source "$(dirname "$0")/common.sh"
export PAIRS
LOG_DIR="${LOG_DIR:-$(mktemp -d /tmp/lapse-bench.XXXXXX)}"
mkdir -p "$LOG_DIR"

# script arguments… (one benchmark invocation per line)
DEFAULT_SET=(
    "apisr/bench.sh"
    "apisr/grl_dat.sh"
    "diffusion/unet.sh 32"
    "diffusion/motion.sh 32"
    "diffusion/unet3d.sh 32 16"
    "tensor/bench.py"
)
[ -n "${WITH_REFINER:-}" ] && DEFAULT_SET+=("streamingt2v/refiner_step.sh 448 208 4")
if [ -n "${ONLY:-}" ]; then
    read -r -a RUN <<< "$ONLY"
else
    RUN=("${DEFAULT_SET[@]}")
fi

build_products lapse
"$PYTHON" -c 'import sys, pairs; pairs.machine_header(sys.argv[1])' "$BIN/lapse" | tee "$LOG_DIR/machine.txt"

failed=()
for entry in "${RUN[@]}"; do
    read -r -a words <<< "$entry"
    script="${words[0]}"
    log="$LOG_DIR/$(echo "$entry" | tr ' /' '__').log"
    echo "== $entry  (log: $log)"
    start=$(date +%s)
    # bench.sh's memory and video parts are not ratios; run-all wants its ratios only.
    runner=("Benchmarks/$script")
    [[ "$script" == *.py ]] && runner=("$PYTHON" "Benchmarks/$script")
    if SKIP_VIDEO=1 SKIP_MEMORY=1 "${runner[@]}" "${words[@]:1}" > "$log" 2>&1; then
        echo "   done in $(( $(date +%s) - start )) s"
    else
        echo "   FAILED after $(( $(date +%s) - start )) s; last lines:"
        tail -5 "$log" | sed 's/^/   | /'
        failed+=("$entry")
    fi
    grep '^RESULT ' "$log" | sed "s|^RESULT |$script\t|" >> "$LOG_DIR/results.tsv"
done

echo
cat "$LOG_DIR/machine.txt"
"$PYTHON" - "$LOG_DIR/results.tsv" <<'PY'
import json, sys
rows = []
try:
    for line in open(sys.argv[1]):
        script, data = line.rstrip("\n").split("\t", 1)
        rows.append((script, json.loads(data)))
except FileNotFoundError:
    pass
header = ["script", "workload", "Lapse s", "reference", "ref s", "ratio", "spread", "pairs", "target"]
table = [header]
for script, r in rows:
    target = "" if r["target"] is None else f"≤ {r['target']:.2f} {'met' if r['ratio'] <= r['target'] else 'NOT met'}"
    table.append([script, r["workload"], f"{r['lapse_s']:.3f}", r["reference"], f"{r['reference_s']:.3f}",
                  f"{r['ratio']:.3f}", f"{r['ratio_min']:.3f}–{r['ratio_max']:.3f}", str(r["pairs"]), target])
widths = [max(len(row[i]) for row in table) for i in range(len(header))]
for n, row in enumerate(table):
    print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
    if n == 0:
        print("| " + " | ".join("-" * w for w in widths) + " |")
PY
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (logs in $LOG_DIR)"
    exit 1
fi
