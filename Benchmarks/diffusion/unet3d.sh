#!/usr/bin/env bash
# One ModelScope text-to-video UNet step (diffusers' UNet3DConditionModel, text-to-video-ms-1.7b's architecture,
# full-size seeded fp32 weights), classifier-free-guidance batch 2 × 16 frames, latent 32×32 (256² video), 77-token
# context of width 1024, timestep 500: Lapse (release build) vs diffusers on the PyTorch CPU backend, same weights
# and inputs, timed interleaved (torch, Lapse) for PAIRS pairs with Benchmarks/pairs.py: the machine, each pair, the
# median ratio and its spread, and how far Lapse's eps is from torch's. Seeded weights (5.7 GB) are written once to
# the git-ignored models/bench/.
#
#   Benchmarks/diffusion/unet3d.sh [latent-size] [frames] [threads]   (PYTHON, PAIRS=5, SCRATCH: see Benchmarks/common.sh)
set -euo pipefail
source "$(dirname "$0")/../common.sh"
SIZE="${1:-32}"
FRAMES="${2:-16}"
THREADS="${3:-$(nproc)}"
BENCH=models/bench
mkdir -p "$BENCH"
build_products lapse UNetBenchmark

OPENBLAS_NUM_THREADS="$THREADS" "$PYTHON" - "$BENCH" "$SIZE" "$FRAMES" "$PAIRS" "$THREADS" "$BIN" <<'PY'
import json, os, sys, time
import torch
import pairs
from diffusers import UNet3DConditionModel
from safetensors.torch import save_file, load_file

bench, size, frames, count, threads, bin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
pairs.machine_header(f"{bin}/lapse")
# text-to-video-ms-1.7b's unet/config.json (diffusers' defaults are its blocks; these are the values it sets).
unet = UNet3DConditionModel(sample_size=32, cross_attention_dim=1024, attention_head_dim=64, norm_num_groups=32)
weights = os.path.join(bench, "unet3d_ms.safetensors")
config_path = os.path.join(bench, "unet3d_ms_config.json")
if not os.path.exists(weights):
    sys.path.insert(0, "Benchmarks/diffusion")
    from seeded_weights import seeded  # the recipe unet.sh / motion.sh use
    save_file(seeded(unet, 2027), weights)
    with open(config_path, "w") as f:
        json.dump({"_class_name": "UNet3DConditionModel", **dict(unet.config)}, f, default=list)
unet.load_state_dict(load_file(weights))
unet.eval()
g = torch.Generator().manual_seed(0)
sample = torch.randn(2, 4, frames, size, size, generator=g)
context = torch.randn(2, 77, 1024, generator=g)
io_path = os.path.join(bench, f"unet3d_io_{size}_{frames}.safetensors")

def torch_run():
    return unet(sample, torch.tensor(500.0), encoder_hidden_states=context).sample


# One untimed torch warm-up writes the io file (inputs + torch's eps) that Lapse reads.
eps = torch_run()
save_file({"sample": sample.contiguous(), "context": context.contiguous(), "eps": eps.contiguous()}, io_path)
print(f"torch {torch.__version__} ({threads} threads), sample {tuple(sample.shape)}", flush=True)
with pairs.LapseWorker([f"{bin}/UNetBenchmark", "unet3d", config_path, weights, io_path],
                       env=pairs.openblas_environment(f"{bin}/lapse")) as lapse:
    pairs.interleave(f"ModelScope UNet3D step {size * 8}² x{frames} CFG", "PyTorch", pairs.timed(torch_run), lapse.run, count)
PY
