#!/usr/bin/env bash
# StreamingT2V stage 2 at FULL size (the release's architecture, seeded fp32 weights): peak memory of a `lapse run`
# and the CAM + APM overhead of one denoising step over the plain ModelScope UNet3D step.
#
# 1. Writes, once, models/bench/streaming_t2v_full.safetensors (3,401 tensors, 12.7 GB: the checkpoint's key names
#    and shapes, taken from the original code built at full size on torch's meta device; values seeded noise; see
#    full_weights.py) and the base folder models/bench/st2v_base/ (ms-1.7b's unet/text_encoder/vae configs, the DDIM
#    scheduler config, and the test fixtures' tiny tokenizer: the ids are not CLIP's, which changes nothing in timing).
# 2. Runs a graph under /usr/bin/time -v: LoadStreamingT2V → TextEncode ×2 → EmptyLatentVideo 256² × 16 → VAEDecode
#    (the checkpoint's VAE) → EncodeAppearance → StreamExtend {length 24 (one chunk), steps 1} → SaveVideo, and
#    reports peak RSS against the fp32 weight bytes (target ≤ weights + 3 GB) and the wall time.
# 3. Times StreamingT2VDenoiser.predictNoise (CFG batch 2 × 16 frames, 256²) against the plain UNet3DConditionModel
#    on the same base weights and inputs, interleaved A B A B for PAIRS pairs (UNetBenchmark streamingt2v).
# Prints the CPU, its vector extensions and the OpenBLAS core, and the load and free memory before each part.
#
#   Benchmarks/streamingt2v/stage2.sh [pairs=3] [skip: "graph" or "step" to run one part only]
#   (PYTHON=/work/venv/bin/python by default; SKIP_BUILD=1 uses the binaries already built)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
PAIRS="${1:-3}"
SKIP="${2:-}"
BENCH=models/bench
WEIGHTS="$BENCH/streaming_t2v_full.safetensors"
BASE="$BENCH/st2v_base"
mkdir -p "$BENCH"
if [ -z "${SKIP_BUILD:-}" ]; then
    swift build -c release --product lapse >/dev/null
    swift build -c release --scratch-path .build-bench --product UNetBenchmark >/dev/null
fi
LAPSE=.build/release/lapse
if [ ! -f "$WEIGHTS" ] || [ ! -f "$BASE/unet/config.json" ]; then
    "$PYTHON" Benchmarks/streamingt2v/full_weights.py "$WEIGHTS" "$BASE"
fi
BYTES=$(stat -c %s "$WEIGHTS")
"$LAPSE" doctor 2>/dev/null | grep -Ei "cpu|openblas|extensions" || true
machine_state() {
    echo "load: $(cut -d' ' -f1-3 /proc/loadavg); memory: $(free -g | awk '/Mem:/ {print $2 " GiB total, " $3 " used, " $7 " available"}')"
    echo "other processes over 5% CPU or 500 MB: $(ps -eo pcpu=,rss=,comm= --sort=-pcpu | awk '$1 > 5 || $2 > 512000 {printf "%s (%.0f%%, %.1f GB) ", $3, $1, $2 / 1e6}')"
}

if [ "$SKIP" != "graph" ]; then
    GRAPH=$(mktemp --suffix=.json)
    cat > "$GRAPH" <<JSON
{
  "version": 1,
  "description": "Stage 2 of StreamingT2V at full size, one extension chunk with one DDIM step (Benchmarks/streamingt2v/stage2.sh).",
  "nodes": {
    "st2v": {"type": "LoadStreamingT2V", "params": {"path": "$WEIGHTS", "base": "$BASE", "image_encoder_config": ""}},
    "prompt": {"type": "TextEncode", "inputs": {"clip": "st2v.clip"}, "params": {"text": "a tiny red fox"}},
    "negative": {"type": "TextEncode", "inputs": {"clip": "st2v.clip"}, "params": {"text": ""}},
    "latent": {"type": "EmptyLatentVideo", "params": {"width": 256, "height": 256, "frames": 16, "batch": 1}},
    "decode": {"type": "VAEDecode", "inputs": {"vae": "st2v.vae", "latent": "latent"}, "params": {"tile": 0}},
    "appearance": {"type": "EncodeAppearance", "inputs": {"apm": "st2v.apm", "frames": "decode"}, "params": {"frame": 0}},
    "extend": {"type": "StreamExtend", "inputs": {"unet": "st2v.unet", "cam": "st2v.cam", "positive": "prompt", "negative": "negative", "appearance": "appearance", "vae": "st2v.vae", "frames": "decode"},
               "params": {"length": 24, "chunk": 16, "context": 8, "steps": 1, "guidance": 7.5, "eta": 1.0, "seed": 33}},
    "save": {"type": "SaveVideo", "inputs": {"frames": "extend"}, "params": {"path": "$BENCH/st2v_stage2.mp4", "fps": 8, "crf": 18}}
  }
}
JSON
    echo "== stage 2 graph (length 24, 1 step), weights $BYTES bytes ($(awk -v b="$BYTES" 'BEGIN {printf "%.2f GiB", b / 2^30}'))"
    machine_state
    LOG=$(mktemp)
    if ! /usr/bin/time -v "$LAPSE" run "$GRAPH" 2> "$LOG"; then
        cat "$LOG"
        exit 1
    fi
    grep -v "^\s" "$LOG" | tail -n 20 || true
    WALL=$(grep "Elapsed (wall clock)" "$LOG" | awk '{print $NF}' | awk -F: '{ if (NF == 3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    RSS_KIB=$(grep "Maximum resident set size" "$LOG" | awk '{print $NF}')
    awk -v r="$RSS_KIB" -v b="$BYTES" -v w="$WALL" 'BEGIN {
        rss = r * 1024; over = (rss - b) / 1e9
        printf "stage 2: wall %.1f s, peak RSS %.2f GiB (%.2f GB) vs fp32 weights %.2f GB: weights %+.2f GB (target <= +3 GB: %s)\n",
               w, rss / 2^30, rss / 1e9, b / 1e9, over, over <= 3 ? "met" : "NOT met" }'
    rm -f "$GRAPH" "$LOG"
fi

if [ "$SKIP" != "step" ]; then
    echo "== one denoising step: StreamingT2V (CAM + APM) vs plain UNet3D, $PAIRS pairs"
    machine_state
    .build-bench/release/UNetBenchmark streamingt2v "$BASE/unet/config.json" "$WEIGHTS" "$PAIRS"
    machine_state
fi
