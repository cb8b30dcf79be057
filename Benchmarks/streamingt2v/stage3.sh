#!/usr/bin/env bash
# StreamingT2V stage 3's memory and time with the refiner's full-size architecture, as a `lapse run`:
# LoadVideo (FRAMES frames of 256², like stage 2's output) → LoadVid2VidModel (seeded full-size stand-ins of the three
# published files: refiner_step.py's 1.41 B-parameter generator, open_clip's ViT-H-14 .bin, SD2.1's VAE .ckpt; see
# refiner_files.py) → Text / TextEncode ×2 → RefineVideo {1280×720, chunk = FRAMES, STEPS steps, GUIDANCE} → SaveVideo,
# under /usr/bin/time -v. Prints the CPU line, each node's time from lapse's progress lines, and the peak RSS.
#
#   Benchmarks/streamingt2v/stage3.sh [frames=4] [steps=1] [guidance=1]
#
# guidance 1 runs one pass per evaluation (the memory is that of one pass either way); the default 24 frames × CFG
# costs about an hour per evaluation on a 2-core machine (refiner_step.sh's estimate), so the default here is small
# and the peak is measured at two frame counts to see how it grows.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
SRC="${ST2V_SRC:-/work/st2v-src}"
FRAMES="${1:-4}"
STEPS="${2:-1}"
GUIDANCE="${3:-1}"
BENCH=models/bench
mkdir -p "$BENCH"
[ -f "$BENCH/vid2vid_xl_seeded.safetensors" ] || { echo "run Benchmarks/streamingt2v/refiner_step.sh first (it writes the generator)" >&2; exit 1; }
"$PYTHON" Benchmarks/streamingt2v/refiner_files.py "$BENCH" "$SRC"
swift build -c release --product lapse >/dev/null
LAPSE="$(swift build -c release --show-bin-path)/lapse"
"$LAPSE" doctor 2>&1 | head -4
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=256x256:rate=8" -frames:v "$FRAMES" -c:v ffv1 "$TMP/in.mkv"
OVERLAP=$(( FRAMES > 8 ? 8 : FRAMES - 1 ))
cat > "$TMP/stage3.json" <<JSON
{"version": 1, "nodes": {
  "src": {"type": "LoadVideo", "params": {"path": "$TMP/in.mkv"}},
  "v2v": {"type": "LoadVid2VidModel", "params": {"unet": "$PWD/$BENCH/vid2vid_xl_seeded.safetensors",
          "text_encoder": "$PWD/$BENCH/open_clip_vit_h14_seeded.bin", "vae": "$PWD/$BENCH/sd21_vae_seeded.ckpt",
          "vocab": "$PWD/models/clip/bpe_simple_vocab_16e6.txt.gz"}},
  "prompt": {"type": "Text", "params": {"text": "a cat running on the beach", "suffix": ", "}},
  "positive": {"type": "TextEncode", "inputs": {"clip": "v2v.clip", "text": "prompt.text"}},
  "negative": {"type": "TextEncode", "inputs": {"clip": "v2v.clip"}, "params": {"text": ""}},
  "refine": {"type": "RefineVideo", "inputs": {"unet": "v2v.unet", "positive": "positive", "negative": "negative", "vae": "v2v.vae", "frames": "src"},
             "params": {"steps": $STEPS, "chunk": $FRAMES, "overlap": $OVERLAP, "guidance": $GUIDANCE}},
  "save": {"type": "SaveVideo", "inputs": {"frames": "refine"}, "params": {"path": "$TMP/out.mp4"}}
}}
JSON
echo "stage 3: $FRAMES frames → 1280×720 canvas, $STEPS step(s), guidance $GUIDANCE; load $(cut -d' ' -f1-3 /proc/loadavg)"
START=$(date +%s.%N)
/usr/bin/time -v "$LAPSE" run "$TMP/stage3.json" 2> "$TMP/log" || { tail -20 "$TMP/log"; exit 1; }
END=$(date +%s.%N)
grep -E "done in|MS-Vid2Vid-XL" "$TMP/log" | sed 's/^/  /'
RSS_KIB=$(grep "Maximum resident set size" "$TMP/log" | awk '{print $NF}')
awk -v r="$RSS_KIB" -v s="$START" -v e="$END" -v f="$FRAMES" 'BEGIN {
    printf "stage 3, %d frames: wall %.1f s, peak RSS %.2f GiB (%.2f GB)\n", f, e - s, r / 1048576, r * 1024 / 1e9 }'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
