#!/usr/bin/env bash
# One SD1.5-size UNet step (latent 32×32 = 256² images, batch 1, 77-token context, timestep 500): Lapse (release
# build) vs diffusers on the PyTorch CPU backend, same seeded weights and the same inputs, timed interleaved
# (PyTorch, Lapse) for PAIRS pairs with Benchmarks/pairs.py (the machine, each pair, the median ratio and its spread).
# The seeded fp32 weights (3.4 GB) are written once to the git-ignored models/bench/.
#
#   Benchmarks/diffusion/unet.sh [latent-size] [threads]   (PYTHON, PAIRS=5, SCRATCH: see Benchmarks/common.sh)
set -euo pipefail
source "$(dirname "$0")/../common.sh"
SIZE="${1:-32}"
THREADS="${2:-$(nproc)}"
BENCH=models/bench
mkdir -p "$BENCH"
build_products lapse UNetBenchmark

OPENBLAS_NUM_THREADS="$THREADS" "$PYTHON" - "$BENCH" "$SIZE" "$THREADS" "$BIN" "$PAIRS" <<'PY'
import json, os, sys
import torch
import pairs
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file, load_file

bench, size, threads, bin, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
pairs.machine_header(f"{bin}/lapse")
weights = os.path.join(bench, "unet_sd15.safetensors")
config_path = os.path.join(bench, "unet_sd15_config.json")
# diffusers' defaults are SD1.5's blocks; the text width (768) and sample size differ.
unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
if not os.path.exists(weights):
    sys.path.insert(0, "Benchmarks/diffusion")
    from seeded_weights import seeded  # the recipe motion.sh and fullrun.sh share (same draws: the UNet has no buffers)
    save_file(seeded(unet, 2024), weights)
    with open(config_path, "w") as f:
        json.dump(dict(unet.config), f, default=str)
unet.load_state_dict(load_file(weights))
unet.eval()
# The same draws as Lapse's TorchGenerator(seed: 0): sample, then context.
g = torch.Generator().manual_seed(0)
sample = torch.randn(1, 4, size, size, generator=g)
context = torch.randn(1, 77, 768, generator=g)
step = lambda: unet(sample, torch.tensor([500.0]), encoder_hidden_states=context).sample
eps = step()  # warm-up
print(f"torch {torch.__version__} ({threads} threads): mean|eps| {eps.abs().mean().item():.6f}", flush=True)
with pairs.LapseWorker([f"{bin}/UNetBenchmark", config_path, weights, str(size), "1", "serve"],
                       env=pairs.openblas_environment(f"{bin}/lapse")) as lapse:
    pairs.interleave(f"SD1.5 UNet step {size * 8}² batch 1", "PyTorch", pairs.timed(step), lapse.run, count)
PY
