#!/usr/bin/env bash
# One ModelScope text-to-video UNet step (diffusers' UNet3DConditionModel, text-to-video-ms-1.7b's architecture,
# full-size seeded fp32 weights), classifier-free-guidance batch 2 × 16 frames, latent 32×32 (256² video), 77-token
# context of width 1024, timestep 500: Lapse (release build) vs diffusers on the PyTorch CPU backend, same weights
# and inputs, timed interleaved A B A B (torch, Lapse) for PAIRS pairs so machine load hits both alike.
# Prints the CPU model, its vector extensions and OpenBLAS's core, each pair, the median Lapse/torch ratio and how
# far Lapse's eps is from torch's. Seeded weights (5.7 GB) are written once to the git-ignored models/bench/.
#
#   Benchmarks/diffusion/unet3d.sh [latent-size] [frames] [pairs] [threads]   (PYTHON=/work/venv/bin/python by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
SIZE="${1:-32}"
FRAMES="${2:-16}"
PAIRS="${3:-5}"
THREADS="${4:-$(nproc)}"
BENCH=models/bench
mkdir -p "$BENCH"
swift build -c release --scratch-path .build-bench --product UNetBenchmark >/dev/null
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

OPENBLAS_NUM_THREADS="$THREADS" "$PYTHON" - "$BENCH" "$SIZE" "$FRAMES" "$PAIRS" "$THREADS" <<'PY'
import json, os, statistics, subprocess, sys, time
import torch
from diffusers import UNet3DConditionModel
from safetensors.torch import save_file, load_file

bench, size, frames, pairs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
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

torch_times, lapse_times = [], []


def torch_run():
    t = time.perf_counter()
    out = unet(sample, torch.tensor(500.0), encoder_hidden_states=context).sample
    return time.perf_counter() - t, out


# One untimed torch warm-up writes the io file (inputs + torch's eps) that Lapse reads.
_, eps = torch_run()
save_file({"sample": sample.contiguous(), "context": context.contiguous(), "eps": eps.contiguous()}, io_path)
lapse = subprocess.Popen([".build-bench/release/UNetBenchmark", "unet3d", config_path, weights, io_path],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": str(threads)})
while True:
    line = lapse.stdout.readline()
    if not line:
        sys.exit("UNetBenchmark ended before it was ready")
    print(line.rstrip())
    if line.strip() == "ready":
        break
print(f"torch {torch.__version__} ({threads} threads), sample {tuple(sample.shape)}")
for i in range(pairs):
    t, _ = torch_run()
    torch_times.append(t)
    lapse.stdin.write("run\n"); lapse.stdin.flush()
    answer = lapse.stdout.readline().split()
    lapse_times.append(float(answer[1]))
    print(f"pair {i + 1}: torch {t:.3f} s, lapse {lapse_times[-1]:.3f} s, ratio {lapse_times[-1] / t:.3f}", flush=True)
lapse.stdin.close()
for line in lapse.stdout:
    print(line.rstrip())
lapse.wait()
ratios = [l / t for l, t in zip(lapse_times, torch_times)]
print(f"median: torch {statistics.median(torch_times):.3f} s, lapse {statistics.median(lapse_times):.3f} s, "
      f"median ratio lapse/torch {statistics.median(ratios):.3f} over {pairs} pairs")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
