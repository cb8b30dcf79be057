#!/usr/bin/env bash
# StreamingT2V's extension streams: a long video costs time linear in its length and no more memory than a short one.
# Runs graphs/streamingt2v-preview.json on the seeded tiny model set of the StreamingT2V tests (32×32 frames,
# 2 DDIM steps per chunk, stage 1 with 2 steps) for a short and a long length, each as its own `lapse run` process
# under /usr/bin/time, and prints wall time, time per generated chunk and peak RSS of both, with the CPU and the
# OpenBLAS core. The tiny files are rebuilt from the committed manifest (weights are seeds) under models/bench/.
#
#   Benchmarks/streamingt2v/long_extension.sh [short=48] [long=1200]   (PYTHON=/work/venv/bin/python by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
SHORT="${1:-48}"
LONG="${2:-1200}"
DIR=models/bench/streamingt2v-tiny
swift build -c release --product lapse >/dev/null
LAPSE=.build/release/lapse
"$LAPSE" doctor 2>/dev/null | grep -Ei "cpu|openblas|extensions" || true

"$PYTHON" - "$DIR" <<'PY'
import json, os, shutil, sys
import torch
from safetensors.torch import save_file
out = sys.argv[1]
fx = "Tests/StreamingT2VTests/Fixtures"
m = json.load(open(f"{fx}/streamingt2v_manifest.json"))
sections = m["sections"] if isinstance(m["sections"], dict) else json.loads(m["sections"])
state = {}
for name, entry in sections.items():
    g = torch.Generator().manual_seed(entry["seed"])
    for key, shape, scale, offset in entry["tensors"]:
        state[key] = (offset + scale * (2 * torch.rand(shape, generator=g) - 1)).contiguous()
os.makedirs(out, exist_ok=True)
save_file(state, f"{out}/streaming_t2v_tiny.safetensors")
base = f"{out}/tiny_base"
shutil.rmtree(base, ignore_errors=True)
shutil.copytree(f"{fx}/tiny_base", base)
additions = ("cross_attention_merger_", "attn2.conv.", "attn2.conv_ln.", "attn2.alpha")
for folder, file, prefix in [("unet", "diffusion_pytorch_model.safetensors", "base_model."),
                             ("text_encoder", "model.safetensors", "text_encoder."),
                             ("vae", "diffusion_pytorch_model.safetensors", "vae.")]:
    os.makedirs(f"{base}/{folder}", exist_ok=True)
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and not any(a in k for a in additions)}
    save_file(part, f"{base}/{folder}/{file}")
json.dump(m["text_encoder_config"], open(f"{base}/text_encoder/config.json", "w"))
json.dump(m["vae_config"], open(f"{base}/vae/config.json", "w"))
json.dump(m["open_clip_config"], open(f"{out}/open_clip.json", "w"))
PY

run() {
    local length=$1
    local log
    log=$(mktemp)
    /usr/bin/time -v "$LAPSE" run graphs/streamingt2v-preview.json --quiet \
        --set base.path="$DIR/tiny_base" --set st2v.path="$DIR/streaming_t2v_tiny.safetensors" \
        --set st2v.base="$DIR/tiny_base" --set st2v.image_encoder_config="$DIR/open_clip.json" \
        --set latent.width=32 --set latent.height=32 --set stage1.steps=2 --set extend.steps=2 \
        --set extend.length="$length" --set save.path="$DIR/out-$length.mp4" 2> "$log"
    local wall rss chunks
    wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}' | awk -F: '{ if (NF == 3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
    chunks=$(( (length - 16) / 8 ))
    echo "$length $wall $rss $chunks"
    rm -f "$log"
}
read -r s_len s_wall s_rss s_chunks < <(run "$SHORT")
read -r l_len l_wall l_rss l_chunks < <(run "$LONG")
"$PYTHON" - "$s_len" "$s_wall" "$s_rss" "$s_chunks" "$l_len" "$l_wall" "$l_rss" "$l_chunks" <<'PY'
import sys
s_len, s_wall, s_rss, s_chunks, l_len, l_wall, l_rss, l_chunks = sys.argv[1:]
s_wall, l_wall, s_rss, l_rss = float(s_wall), float(l_wall), int(s_rss), int(l_rss)
print(f"{'frames':>7} {'chunks':>6} {'wall s':>8} {'s/chunk (after the first run)':>30} {'peak RSS MiB':>13}")
print(f"{s_len:>7} {s_chunks:>6} {s_wall:>8.1f} {'':>30} {s_rss/1024:>13.1f}")
per = (l_wall - s_wall) / (int(l_chunks) - int(s_chunks))
print(f"{l_len:>7} {l_chunks:>6} {l_wall:>8.1f} {per:>30.3f} {l_rss/1024:>13.1f}")
print(f"peak RSS long/short: {l_rss / s_rss:.3f} (target ≤ 1.10); "
      f"time long/short: {l_wall / s_wall:.1f} for {int(l_chunks) / int(s_chunks):.1f}× the chunks")
PY
