#!/usr/bin/env bash
# Peak memory and time of a whole MagicTime-shaped run at full size: graphs/magictime.json (SD1.5 UNet + AnimateDiff
# v3 motion modules + CLIP ViT-L/14 text encoder + SD VAE, 16 frames at 512², CFG) on seeded fp32 weights with the
# official sizes, written once as a diffusers folder under the git-ignored models/bench/ (the UNet and motion
# weights are shared with unet.sh / motion.sh). Peak RSS does not grow with the step count (each step frees its
# activations), so STEPS defaults to 1 to keep the run to minutes; the issue's budget is fp32 weight size + 3 GB.
#
# FP16=1 runs the same weights stored as fp16 files (most published SD1.5/AnimateDiff files are), kept 16-bit in
# memory by the loaders' default `precision: auto`; its target is a peak RSS of 4.5 GB.
#
#   Benchmarks/diffusion/fullrun.sh            (PYTHON=/work/venv/bin/python, STEPS=1, FRAMES=16, SIZE=512, FP16=)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
STEPS="${STEPS:-1}"; FRAMES="${FRAMES:-16}"; SIZE="${SIZE:-512}"
BENCH=models/bench
SD="$BENCH/sd15_diffusers"
mkdir -p "$SD"
[ -f models/clip/bpe_simple_vocab_16e6.txt.gz ] || { echo "run scripts/fetch-assets.sh first (CLIP vocabulary)" >&2; exit 1; }
[ -f "$BENCH/unet_sd15.safetensors" ] && [ -f "$BENCH/motion_v3.safetensors" ] || {
    echo "run Benchmarks/diffusion/motion.sh once first (it writes the seeded UNet and motion weights)" >&2; exit 1; }

"$PYTHON" - "$BENCH" "$SD" <<'PY'
import json, math, os, sys, torch
from safetensors.torch import save_file
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel
bench, sd = sys.argv[1], sys.argv[2]

sys.path.insert(0, "Benchmarks/diffusion")
from seeded_weights import seeded  # noqa: E402  (same recipe as motion.sh)

unet_dir = os.path.join(sd, "unet"); os.makedirs(unet_dir, exist_ok=True)
link = os.path.join(unet_dir, "diffusion_pytorch_model.safetensors")
if not os.path.exists(link):
    os.link(os.path.join(bench, "unet_sd15.safetensors"), link)
with open(os.path.join(bench, "unet_sd15_config.json")) as f, open(os.path.join(unet_dir, "config.json"), "w") as g:
    g.write(f.read())

vae_dir = os.path.join(sd, "vae"); os.makedirs(vae_dir, exist_ok=True)
if not os.path.exists(os.path.join(vae_dir, "diffusion_pytorch_model.safetensors")):
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512)
    save_file(seeded(vae, 2026), os.path.join(vae_dir, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(vae_dir, "config.json"), "w") as f: json.dump(dict(vae.config), f, default=str)

te_dir = os.path.join(sd, "text_encoder"); os.makedirs(te_dir, exist_ok=True)
if not os.path.exists(os.path.join(te_dir, "model.safetensors")):
    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    te = CLIPTextModel(config)
    sd_te = {k: v.contiguous() for k, v in seeded(te, 2027).items() if "position_ids" not in k}
    save_file(sd_te, os.path.join(te_dir, "model.safetensors"))
    config.to_json_file(os.path.join(te_dir, "config.json"))
PY

MOTION="$BENCH/motion_v3.safetensors"
if [ -n "${FP16:-}" ]; then
    # The same tensors rounded to fp16, written once beside the fp32 ones.
    "$PYTHON" - "$SD" "$SD-fp16" "$MOTION" "$BENCH/motion_v3.fp16.safetensors" <<'PY'
import os, shutil, sys
from safetensors.torch import load_file, save_file
sd, half, motion, motion_half = sys.argv[1:5]
pairs = [(os.path.join(sd, part, name), os.path.join(half, part, name)) for part, name in
         [("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
          ("text_encoder", "model.safetensors")]] + [(motion, motion_half)]
for source, target in pairs:
    if os.path.exists(target): continue
    os.makedirs(os.path.dirname(target), exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in load_file(source).items()}, target + ".tmp")
    os.replace(target + ".tmp", target)
    config = os.path.join(os.path.dirname(source), "config.json")
    if os.path.dirname(source) != os.path.dirname(motion) and os.path.exists(config):
        shutil.copy(config, os.path.dirname(target))
PY
    SD="$SD-fp16"; MOTION="$BENCH/motion_v3.fp16.safetensors"
fi
weights=$(du -cb "$SD/unet/diffusion_pytorch_model.safetensors" "$SD/vae/diffusion_pytorch_model.safetensors" \
    "$SD/text_encoder/model.safetensors" "$MOTION" | tail -1 | cut -f1)
swift build -c release --product lapse >/dev/null
BIN="$(swift build -c release --show-bin-path)"
OUT="$(mktemp -d)"; trap 'rm -rf "$OUT"' EXIT
"$BIN/lapse" doctor | head -4
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
/usr/bin/time -v "$BIN/lapse" run graphs/magictime.json --quiet \
    --set ckpt.path="$SD" --set motion.path="$MOTION" \
    --set magic.spatial= --set magic.temporal= --set magic.text_encoder= \
    --set sample.steps="$STEPS" --set latent.frames="$FRAMES" --set latent.width="$SIZE" --set latent.height="$SIZE" \
    --set save.path="$OUT/run.mp4" 2> "$OUT/time.txt"
peak=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/time.txt")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$OUT/time.txt")
awk -v p="$peak" -v w="$weights" -v wall="$wall" -v steps="$STEPS" -v f="$FRAMES" -v s="$SIZE" -v half="${FP16:-}" 'BEGIN {
    gib = 1024 * 1024 * 1024
    budget = half != "" ? 4.5e9 : w + 3e9
    printf "magictime.json, %d frames at %d², %d step(s), CFG: wall %s, peak RSS %.2f GiB; %s weights %.2f GiB; budget (%s) %.2f GiB → %s\n",
        f, s, steps, wall, p * 1024 / gib, (half != "" ? "fp16" : "fp32"), w / gib,
        (half != "" ? "4.5 GB" : "weights + 3 GB"), budget / gib, (p * 1024 <= budget ? "within" : "OVER")
}'
ls -la "$OUT/run.mp4" | awk '{print "output:", $5, "bytes"}'
