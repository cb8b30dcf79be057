#!/usr/bin/env bash
# APISR / Real-ESRGAN convolutional upscalers: Lapse (release build) vs PyTorch CPU (spandrel, 2 threads) vs ncnn CPU
# (fp32, 2 threads), best of 3, in one run so the figures are comparable; then peak memory of a tiled 1080p ×4 and
# the frame rate of a 480p video ×2 through LoadVideo → Upscale → SaveVideo (with its audio).
#
#   Benchmarks/apisr/bench.sh                 PYTHON=/work/venv/bin/python, VIDEO_SECONDS=10 by default
#   SKIP_VIDEO=1 Benchmarks/apisr/bench.sh    without the video run (SKIP_RRDB_1080=1: without RRDB's ~2 min 1080p)
# Needs scripts/fetch-assets.sh (real ncnn weights) and the ffmpeg CLI (to make the test clip).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
VIDEO_SECONDS="${VIDEO_SECONDS:-10}"
M=models/realesrgan
[ -f "$M/realesrgan-x4plus-anime.param" ] || { echo "run scripts/fetch-assets.sh first" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# SCRATCH=.build-x reuses another build directory (as the engineers' shared machines do).
FLAGS=(-c release ${SCRATCH:+--scratch-path "$SCRATCH"})
swift build "${FLAGS[@]}" --product UpscaleBenchmark >/dev/null
swift build "${FLAGS[@]}" --product lapse >/dev/null
BIN="$(swift build "${FLAGS[@]}" --show-bin-path)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (timings are only comparable within one run)"

echo "== references (same process, 2 threads, best of 3)"
"$PYTHON" - "$M" > "$WORK/ref.txt" <<'PY'
import sys, time, numpy as np, torch, ncnn
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.Compact import Compact
models = sys.argv[1]
torch.set_num_threads(2)

def best(f, runs=3):
    b = float("inf")
    for _ in range(runs):
        t = time.perf_counter(); f(); b = min(b, time.perf_counter() - t)
    return b

def torch_time(model, side):
    x = torch.rand(1, 3, side, side)
    with torch.no_grad():
        model(x)  # warm-up (oneDNN primitive creation)
        return best(lambda: model(x))

def ncnn_time(name, side):
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    net.opt.use_bf16_storage = False
    net.opt.num_threads = 2
    net.load_param(f"{models}/{name}.param"); net.load_model(f"{models}/{name}.bin")
    data = np.random.rand(3, side, side).astype(np.float32)
    def once():
        ex = net.create_extractor(); ex.input("data", ncnn.Mat(data)); ex.extract("output")
    once()
    return best(once)

rrdb = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=6, scale=4).eval()
srvgg = Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4).eval()
print(f"rrdb torch {torch_time(rrdb, 128):.3f}")
print(f"rrdb ncnn {ncnn_time('realesrgan-x4plus-anime', 128):.3f}")
print(f"srvgg torch {torch_time(srvgg, 256):.3f}")
print(f"srvgg ncnn {ncnn_time('realesr-animevideov3-x4', 256):.3f}")
PY
cat "$WORK/ref.txt"

echo "== Lapse"
rrdb=$("$BIN/UpscaleBenchmark" time "$M/realesrgan-x4plus-anime.param" 128 3); echo "$rrdb"
srvgg=$("$BIN/UpscaleBenchmark" time "$M/realesr-animevideov3-x4.param" 256 3); echo "$srvgg"
lapse_rrdb=$(echo "$rrdb" | sed -E 's/.*= ([0-9.]+) s/\1/')
lapse_srvgg=$(echo "$srvgg" | sed -E 's/.*= ([0-9.]+) s/\1/')
ref() { awk -v k="$1 $2" '$1" "$2 == k {print $3}' "$WORK/ref.txt"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "== ratios (Lapse / reference; target ≤ 1.00)"
echo "RRDB-6B x4 128²:  Lapse $lapse_rrdb s | PyTorch $(ref rrdb torch) s → $(ratio "$lapse_rrdb" "$(ref rrdb torch)")× | ncnn $(ref rrdb ncnn) s → $(ratio "$lapse_rrdb" "$(ref rrdb ncnn)")×"
echo "SRVGG x4 256²:    Lapse $lapse_srvgg s | PyTorch $(ref srvgg torch) s → $(ratio "$lapse_srvgg" "$(ref srvgg torch)")× | ncnn $(ref srvgg ncnn) s → $(ratio "$lapse_srvgg" "$(ref srvgg ncnn)")×"

echo "== memory: 1920x1080 x4, tile 0, max_memory_mb 2048 (target: peak RSS < 2.5 GB)"
"$BIN/UpscaleBenchmark" memory "$M/realesr-animevideov3-x4.param" 1920 1080 2048
[ -n "${SKIP_RRDB_1080:-}" ] || "$BIN/UpscaleBenchmark" memory "$M/realesrgan-x4plus-anime.param" 1920 1080 2048

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
