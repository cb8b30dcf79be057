#!/usr/bin/env bash
# APISR / Real-ESRGAN convolutional upscalers: Lapse (release build) vs PyTorch CPU (spandrel) and vs ncnn CPU (fp32),
# same thread count, timed interleaved (reference, Lapse) for PAIRS pairs with Benchmarks/pairs.py (the machine, each
# pair, the median ratio and its spread); then peak memory of a tiled 1080p ×4 and the frame rate of a 480p video ×2
# through LoadVideo → Upscale → SaveVideo (with its audio).
#
#   Benchmarks/apisr/bench.sh [threads]       (PYTHON, PAIRS=5, SCRATCH: see Benchmarks/common.sh; VIDEO_SECONDS=10)
#   SKIP_VIDEO=1 SKIP_MEMORY=1 Benchmarks/apisr/bench.sh    ratios only (SKIP_RRDB_1080=1: without RRDB's ~2 min 1080p)
# Needs scripts/fetch-assets.sh (real ncnn weights) and the ffmpeg CLI (to make the test clip).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
THREADS="${1:-$(nproc)}"
VIDEO_SECONDS="${VIDEO_SECONDS:-10}"
M=models/realesrgan
[ -f "$M/realesrgan-x4plus-anime.param" ] || { echo "run scripts/fetch-assets.sh first" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
build_products lapse UpscaleBenchmark

OPENBLAS_NUM_THREADS="$THREADS" "$PYTHON" - "$M" "$BIN" "$PAIRS" "$THREADS" <<'PY'
import sys, numpy as np, torch, ncnn
import pairs
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.Compact import Compact

models, bin, count, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
pairs.machine_header(f"{bin}/lapse")
env = pairs.openblas_environment(f"{bin}/lapse")

def torch_once(model, side):
    x = torch.rand(1, 3, side, side)
    model(x)  # warm-up (oneDNN primitive creation)
    return pairs.timed(lambda: model(x))

def ncnn_once(name, side):
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    net.opt.use_bf16_storage = False
    net.opt.num_threads = threads
    net.load_param(f"{models}/{name}.param"); net.load_model(f"{models}/{name}.bin")
    data = np.random.rand(3, side, side).astype(np.float32)
    def once():
        ex = net.create_extractor(); ex.input("data", ncnn.Mat(data)); ex.extract("output")
    once()
    return pairs.timed(once)

# The real weights' architectures: RealESRGAN_x4plus_anime_6B (RRDB, 6 blocks) and realesr-animevideov3 (SRVGG).
for workload, name, module, side in [
        ("RRDB-6B x4 128²", "realesrgan-x4plus-anime", ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=6, scale=4), 128),
        ("SRVGG x4 256²", "realesr-animevideov3-x4", Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4), 256)]:
    with pairs.LapseWorker([f"{bin}/UpscaleBenchmark", "serve", f"{models}/{name}.param", str(side)], env=env) as lapse:
        pairs.interleave(workload, "PyTorch", torch_once(module.eval(), side), lapse.run, count, 0.7)
        pairs.interleave(workload, "ncnn", ncnn_once(name, side), lapse.run, count, 0.7)
PY

if [ -z "${SKIP_MEMORY:-}" ]; then
    echo "== memory: 1920x1080 x4, tile 0, max_memory_mb 2048 (target: peak RSS < 2.5 GB)"
    "$BIN/UpscaleBenchmark" memory "$M/realesr-animevideov3-x4.param" 1920 1080 2048
    [ -n "${SKIP_RRDB_1080:-}" ] || "$BIN/UpscaleBenchmark" memory "$M/realesrgan-x4plus-anime.param" 1920 1080 2048
fi

if [ -z "${SKIP_VIDEO:-}" ]; then
    echo "== video: ${VIDEO_SECONDS} s 854x480 @ 24 fps with audio, x2 (animevideov3-x2) through graphs/upscale-video.json"
    ffmpeg -v error -f lavfi -i "testsrc2=size=854x480:rate=24:duration=$VIDEO_SECONDS" \
        -f lavfi -i "sine=frequency=440:duration=$VIDEO_SECONDS" -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest \
        "$WORK/clip.mp4"
    start=$(date +%s.%N)
    "$BIN/lapse" run graphs/upscale-video.json --quiet --set src.path="$WORK/clip.mp4" \
        --set save.audio_from="$WORK/clip.mp4" --set save.path="$WORK/clip_x2.mp4"
    end=$(date +%s.%N)
    frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$WORK/clip_x2.mp4")
    size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=s=x:p=0 "$WORK/clip_x2.mp4")
    audio=$(ffprobe -v error -select_streams a -show_entries stream=codec_name -of csv=p=0 "$WORK/clip_x2.mp4")
    awk -v f="$frames" -v s="$start" -v e="$end" -v size="$size" -v a="$audio" \
        'BEGIN {printf "%d frames -> %s, audio: %s, %.1f s, %.2f frames/s\n", f, size, (a == "" ? "none" : a), e - s, f / (e - s)}'
fi
