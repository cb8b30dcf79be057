#!/usr/bin/env bash
# One StreamingT2V stage-3 refiner solver evaluation at CFG: two forward passes (positive, negative context) of the
# FULL-SIZE MS-Vid2Vid-XL generator (`Vid2VidSDUNet()` defaults, 1.41 B parameters, seeded fp32 weights), latents
# [1, 4, F, H/8, W/8] at timestep 599 with [1, 77, 1024] contexts: Lapse (Vid2VidUNet, release build) vs modelscope's
# original module on PyTorch's CPU backend, same weights and inputs, timed interleaved (torch, Lapse) for PAIRS pairs
# so machine load hits both alike. Prints the machine (Benchmarks/pairs.py), each pair's times, the median
# Lapse/torch ratio with its spread, and how far Lapse's output is from torch's.
# Seeded weights (5.6 GB) are written once to the git-ignored models/bench/ (refiner_step.py, which documents the
# reference's stand-ins).
#
#   Benchmarks/streamingt2v/refiner_step.sh [width=1280] [height=720] [frames=24] [pairs=$PAIRS] [threads=nproc]
#   (PYTHON, PAIRS=5, SCRATCH: see Benchmarks/common.sh; ST2V_SRC=/work/st2v-src; SKIP_BUILD=1 uses the binaries built)
#
# The defaults are the refiner's real size (1280×720, chunks of 24 frames): 139 TFLOP per pass (FlopCounterMode),
# which on a 2-core machine is most of an hour per pass. `refiner_step.sh 448 208 4` (1.94 TFLOP per pass) takes
# about 7.5 minutes there with 3 pairs. Sizes must fit the UNet's down/up path (latent height ≡ 2 mod 8, i.e. 144,
# 208, …, 336, 400, …, 720 px; width a multiple of 64 px): 360 does not fit.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
SRC="${ST2V_SRC:-/work/st2v-src}"
WIDTH="${1:-1280}"
HEIGHT="${2:-720}"
FRAMES="${3:-24}"
PAIRS="${4:-$PAIRS}"
THREADS="${5:-$(nproc)}"
BENCH=models/bench
mkdir -p "$BENCH"
if [ -z "${SKIP_BUILD:-}" ]; then
    build_products lapse UNetBenchmark
else
    BIN="$SCRATCH/release"
fi
echo "memory: $(free -g | awk '/Mem:/ {print $2 " GiB total, " $7 " available"}')"
OPENBLAS_NUM_THREADS="$THREADS" "$PYTHON" Benchmarks/streamingt2v/refiner_step.py "$BENCH" "$WIDTH" "$HEIGHT" "$FRAMES" \
    "$PAIRS" "$THREADS" "$BIN/UNetBenchmark" "$SRC"
