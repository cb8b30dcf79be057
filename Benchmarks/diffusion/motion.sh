#!/usr/bin/env bash
# One AnimateDiff UNet+motion step (diffusers' UNetMotionModel: SD1.5 UNet + AnimateDiff-v3-shaped MotionAdapter),
# classifier-free-guidance batch 2 × 16 frames, latent 32×32 (256² video), 77-token context (the same for all 16
# frames of a video), timestep 500:
# diffusers on the PyTorch CPU backend vs Lapse (release build), same seeded weights and the same inputs, in one run.
# Prints both times, the ratio, how far Lapse's eps is from torch's, and Lapse's peak RSS.
# Lapse runs with MotionNormMode.acrossFrames here because diffusers' AnimateDiffTransformer3D takes its GroupNorm
# statistics over all frames (Lapse's default, per frame, is MagicTime's/original AnimateDiff's behaviour).
# Seeded fp32 weights are written once to the git-ignored models/bench/ (the spatial UNet's is shared with unet.sh);
# torch's inputs and output go to models/bench/motion_io_<size>.safetensors.
#
#   Benchmarks/diffusion/motion.sh [latent-size] [threads] [repeats]   (PYTHON=/work/venv/bin/python by default)
#   MEMORY_ONLY=64 Benchmarks/diffusion/motion.sh    # Lapse only, seeded inputs at latent 64 (512²), peak RSS
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
SIZE="${1:-32}"
THREADS="${2:-$(nproc)}"
REPEATS="${3:-2}"
BENCH=models/bench
mkdir -p "$BENCH"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ -z "${MEMORY_ONLY:-}" ]; then
"$PYTHON" - "$BENCH" "$SIZE" "$THREADS" "$REPEATS" <<'PY'
import gc, json, math, os, resource, sys, time
import torch
from diffusers import UNet2DConditionModel, MotionAdapter, UNetMotionModel
from safetensors.torch import save_file, load_file

bench, size, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.set_grad_enabled(False)

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
params = sum(p.numel() for p in model.parameters())

torch.manual_seed(0)
sample = torch.randn(2, 4, 16, size, size)
context = torch.randn(2, 77, 768)
timestep = torch.tensor([500.0, 500.0])
# diffusers' UNetMotionModel takes per-frame context (its AnimateDiff pipeline repeats the prompt embeddings for
# every frame); Lapse's UNetMotionModel accepts [B, 77, D] and repeats them itself.
per_frame = context.repeat_interleave(16, dim=0)
times = []
for _ in range(repeats):
    t = time.perf_counter(); eps = model(sample, timestep, encoder_hidden_states=per_frame).sample
    times.append(time.perf_counter() - t)
save_file({"sample": sample.contiguous(), "context": context.contiguous(), "eps": eps.contiguous()},
          os.path.join(bench, f"motion_io_{size}.safetensors"))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
print(f"diffusers ({threads} threads, {params / 1e6:.1f} M params = {params * 4 / 2**30:.2f} GiB fp32): forward best "
      f"{min(times):.3f} s ({repeats} runs: {', '.join(f'{t:.2f}' for t in times)}), mean|eps| "
      f"{eps.abs().mean().item():.6f}, peak RSS {rss:.2f} GiB (includes weight set-up copies)")
with open(os.path.join(bench, f"motion_torch_{size}.txt"), "w") as f:
    f.write(f"{min(times)}\n")
PY
fi

swift build -c release --scratch-path .build-bench --product UNetBenchmark >/dev/null
echo "load before lapse: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${MEMORY_ONLY:-}" ]; then
    OPENBLAS_NUM_THREADS="$THREADS" .build-bench/release/UNetBenchmark motion "$BENCH/unet_sd15_config.json" \
        "$BENCH/unet_sd15.safetensors" "$BENCH/motion_v3.safetensors" "$MEMORY_ONLY" 1 across
else
    OPENBLAS_NUM_THREADS="$THREADS" .build-bench/release/UNetBenchmark motion "$BENCH/unet_sd15_config.json" \
        "$BENCH/unet_sd15.safetensors" "$BENCH/motion_v3.safetensors" "$BENCH/motion_io_$SIZE.safetensors" \
        "$REPEATS" across "$(cat "$BENCH/motion_torch_$SIZE.txt")"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
