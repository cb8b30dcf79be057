#!/usr/bin/env bash
# One AnimateDiff UNet+motion step (diffusers' UNetMotionModel: SD1.5 UNet + AnimateDiff-v3-shaped MotionAdapter),
# classifier-free-guidance batch 2 × 16 frames, latent 32×32 (256² video), 77-token context (the same for all 16
# frames of a video), timestep 500: diffusers on the PyTorch CPU backend vs Lapse (release build), same seeded weights
# and the same inputs, timed interleaved (PyTorch, Lapse) for PAIRS pairs with Benchmarks/pairs.py: the machine, each
# pair, the median ratio and its spread, how far Lapse's eps is from torch's, and Lapse's peak RSS.
# Lapse runs with MotionNormMode.acrossFrames here because diffusers' AnimateDiffTransformer3D takes its GroupNorm
# statistics over all frames (Lapse's default, per frame, is MagicTime's/original AnimateDiff's behaviour).
# Seeded fp32 weights are written once to the git-ignored models/bench/ (the spatial UNet's is shared with unet.sh);
# torch's inputs and output go to models/bench/motion_io_<size>.safetensors.
#
#   Benchmarks/diffusion/motion.sh [latent-size] [threads]   (PYTHON, PAIRS=5, SCRATCH: see Benchmarks/common.sh)
#   MEMORY_ONLY=64 Benchmarks/diffusion/motion.sh    # Lapse only, seeded inputs at latent 64 (512²), peak RSS
set -euo pipefail
source "$(dirname "$0")/../common.sh"
SIZE="${1:-32}"
THREADS="${2:-$(nproc)}"
BENCH=models/bench
mkdir -p "$BENCH"
build_products lapse UNetBenchmark

if [ -n "${MEMORY_ONLY:-}" ]; then
    OPENBLAS_NUM_THREADS="$THREADS" "$BIN/UNetBenchmark" motion "$BENCH/unet_sd15_config.json" \
        "$BENCH/unet_sd15.safetensors" "$BENCH/motion_v3.safetensors" "$MEMORY_ONLY" 1 across
    exit
fi

OPENBLAS_NUM_THREADS="$THREADS" "$PYTHON" - "$BENCH" "$SIZE" "$THREADS" "$BIN" "$PAIRS" <<'PY'
import gc, json, os, sys
import torch
import pairs
from diffusers import UNet2DConditionModel, MotionAdapter, UNetMotionModel
from safetensors.torch import save_file, load_file

bench, size, threads, bin, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
pairs.machine_header(f"{bin}/lapse")

sys.path.insert(0, "Benchmarks/diffusion")
from seeded_weights import seeded  # noqa: E402

unet_weights = os.path.join(bench, "unet_sd15.safetensors")
unet_config = os.path.join(bench, "unet_sd15_config.json")
unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
if not os.path.exists(unet_weights):
    save_file(seeded(unet, 2024), unet_weights)
    with open(unet_config, "w") as f:
        json.dump(dict(unet.config), f, default=str)
unet.load_state_dict(load_file(unet_weights))

# AnimateDiff v3 (v3_sd15_mm.ckpt) as diffusers configures it.
adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                        motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32,
                        use_motion_mid_block=False)
motion_weights = os.path.join(bench, "motion_v3.safetensors")
motion_config = os.path.join(bench, "motion_v3_config.json")
if not os.path.exists(motion_weights):
    save_file(seeded(adapter, 2025), motion_weights)
    with open(motion_config, "w") as f:
        json.dump(dict(adapter.config), f, default=str)
adapter.load_state_dict(load_file(motion_weights))
model = UNetMotionModel.from_unet2d(unet, adapter)
del unet, adapter
gc.collect()
model.eval()

torch.manual_seed(0)
sample = torch.randn(2, 4, 16, size, size)
context = torch.randn(2, 77, 768)
timestep = torch.tensor([500.0, 500.0])
# diffusers' UNetMotionModel takes per-frame context (its AnimateDiff pipeline repeats the prompt embeddings for
# every frame); Lapse's UNetMotionModel accepts [B, 77, D] and repeats them itself.
per_frame = context.repeat_interleave(16, dim=0)
step = lambda: model(sample, timestep, encoder_hidden_states=per_frame).sample
eps = step()  # warm-up, and the output Lapse is checked on
io = os.path.join(bench, f"motion_io_{size}.safetensors")
save_file({"sample": sample.contiguous(), "context": context.contiguous(), "eps": eps.contiguous()}, io)
print(f"torch {torch.__version__} ({threads} threads), sample {tuple(sample.shape)}", flush=True)
with pairs.LapseWorker([f"{bin}/UNetBenchmark", "motion", unet_config, unet_weights, motion_weights, io, "serve", "across"],
                       env=pairs.openblas_environment(f"{bin}/lapse")) as lapse:
    pairs.interleave(f"UNet+motion step {size * 8}² x16 CFG", "PyTorch", pairs.timed(step), lapse.run, count, 0.7)
PY
