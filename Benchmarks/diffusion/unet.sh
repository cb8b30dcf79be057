#!/usr/bin/env bash
# One SD1.5-size UNet step (latent 32×32 = 256² images, batch 1, 77-token context, timestep 500): Lapse (release
# build) vs diffusers on the PyTorch CPU backend, same seeded weights and the same inputs, in one run.
# The seeded fp32 weights (3.4 GB) are written once to the git-ignored models/bench/.
#
#   Benchmarks/diffusion/unet.sh [latent-size] [threads]   (PYTHON=/work/venv/bin/python by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
SIZE="${1:-32}"
THREADS="${2:-$(nproc)}"
BENCH=models/bench
mkdir -p "$BENCH"

"$PYTHON" - "$BENCH" "$SIZE" "$THREADS" <<'PY'
import json, os, sys, time
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file, load_file

bench, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
weights = os.path.join(bench, "unet_sd15.safetensors")
config_path = os.path.join(bench, "unet_sd15_config.json")
# diffusers' defaults are SD1.5's blocks; the text width (768) and sample size differ.
unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
if not os.path.exists(weights):
    sys.path.insert(0, "Benchmarks/diffusion")
    from seeded_weights import seeded  # the recipe motion.sh and fullrun.sh share (same draws: the UNet has no buffers)
    sd = seeded(unet, 2024)
    save_file(sd, weights)
    with open(config_path, "w") as f:
        json.dump(dict(unet.config), f, default=str)
unet.load_state_dict(load_file(weights))
unet.eval()
torch.manual_seed(0)
sample = torch.randn(1, 4, size, size)
context = torch.randn(1, 77, 768)
times = []
for _ in range(3):
    t = time.perf_counter(); eps = unet(sample, torch.tensor([500.0]), encoder_hidden_states=context).sample
    times.append(time.perf_counter() - t)
print(f"diffusers ({threads} threads): forward best {min(times):.3f} s, median {sorted(times)[1]:.3f} s (3 runs), "
      f"mean|eps| {eps.abs().mean().item():.6f}")
PY

swift build -c release --scratch-path .build-bench --product UNetBenchmark >/dev/null
OPENBLAS_NUM_THREADS="$THREADS" .build-bench/release/UNetBenchmark "$BENCH/unet_sd15_config.json" "$BENCH/unet_sd15.safetensors" "$SIZE" 1 3
