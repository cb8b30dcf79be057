#!/usr/bin/env bash
# GRL tiny2 ×4 on 128² and DAT-small ×4 on 64² (APISR's released configs): Lapse (release build) vs PyTorch CPU
# (spandrel's modules, same seeded weights, same input, same thread count), timed interleaved (PyTorch, Lapse) for
# PAIRS pairs with Benchmarks/pairs.py: the machine, each pair, the median ratio and its spread, Lapse's agreement.
#
#   Benchmarks/apisr/grl_dat.sh [threads]     (PYTHON, PAIRS=5, SCRATCH: see Benchmarks/common.sh)
set -euo pipefail
source "$(dirname "$0")/../common.sh"
THREADS="${1:-$(nproc)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
build_products lapse GRLBenchmark

OPENBLAS_NUM_THREADS="$THREADS" "$PYTHON" - "$WORK" "$BIN" "$PAIRS" "$THREADS" <<'PY'
import sys, torch
import pairs
from spandrel.architectures.GRL import GRL
from spandrel.architectures.DAT import DAT

work, bin, count, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
pairs.machine_header(f"{bin}/lapse")
env = pairs.openblas_environment(f"{bin}/lapse")

def seeded(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        fan_in = p[0].numel() if p.dim() > 1 else 16
        if name.endswith("logit_scale"):
            p.copy_(torch.log(torch.tensor(10.0)) + torch.rand(p.shape, generator=g))
        elif p.dim() == 1 and "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return model.eval()

def bench(workload, name, model, side, target):
    path = f"{work}/{name}.pth"
    torch.save({"model_state_dict": model.state_dict()}, path)
    torch.manual_seed(0)
    x = torch.rand(1, 3, side, side)
    model(x).numpy().astype("<f4").tofile(f"{work}/{name}_out.bin")  # warm-up, and the output Lapse is checked on
    with pairs.LapseWorker([f"{bin}/GRLBenchmark", "serve", name, path, str(side), f"{work}/{name}_out.bin"], env=env) as lapse:
        pairs.interleave(workload, "PyTorch", pairs.timed(lambda: model(x)), lapse.run, count, target)

grl = seeded(GRL(img_size=64, embed_dim=64, upscale=4, upsampler="nearest+conv", depths=[4, 4, 4, 4],
                 num_heads_window=[2, 2, 2, 2], num_heads_stripe=[2, 2, 2, 2], window_size=8, stripe_size=[8, 8],
                 stripe_shift=False, mlp_ratio=2, qkv_bias=True, qkv_proj_type="linear", anchor_proj_type="avgpool",
                 anchor_window_down_factor=2, out_proj_type="linear", conv_type="1conv", local_connection=False), 1)
bench("GRL-tiny2 x4 128²", "grl", grl, 128, 0.8)
dat = seeded(DAT(img_size=64, in_chans=3, embed_dim=180, split_size=[8, 16], depth=[6] * 6, num_heads=[6] * 6,
                 expansion_factor=2.0, qkv_bias=True, upscale=4, img_range=1.0, resi_connection="1conv",
                 upsampler="pixelshuffledirect"), 2)
bench("DAT-small x4 64²", "dat", dat, 64, 0.8)
PY
