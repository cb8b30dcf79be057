#!/usr/bin/env bash
# GRL tiny2 ×4 on 128² and DAT-small ×4 on 64²: Lapse (release build) vs PyTorch CPU (spandrel modules with
# APISR's released configs, 2 threads, best of 3), same seeded weights and the same input in one run.
#
#   Benchmarks/apisr/grl_dat.sh            (PYTHON=/work/venv/bin/python by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" - "$WORK" <<'PY'
import sys, time, torch
from spandrel.architectures.GRL import GRL
from spandrel.architectures.DAT import DAT

work = sys.argv[1]
torch.set_num_threads(2)

def seeded(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 16
            if name.endswith("logit_scale"):
                p.copy_(torch.log(torch.tensor(10.0)) + torch.rand(p.shape, generator=g))
            elif p.dim() == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return model.eval()

def bench(name, model, side, path):
    torch.save({"model_state_dict": model.state_dict()}, path)
    torch.manual_seed(0)
    x = torch.rand(1, 3, side, side)
    best = cpu = float("inf")
    with torch.no_grad():
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            y = model(x)
            best, cpu = min(best, time.perf_counter() - t), min(cpu, time.process_time() - c)
    y.numpy().astype("<f4").tofile(path.replace(".pth", "_out.bin"))
    print(f"torch {name} {side}x{side} -> {list(y.shape)}: best of 3 = {best:.3f} s, cpu {cpu:.3f} s (output mean {y.mean().item():.5f})")

grl = seeded(GRL(img_size=64, embed_dim=64, upscale=4, upsampler="nearest+conv", depths=[4, 4, 4, 4],
                 num_heads_window=[2, 2, 2, 2], num_heads_stripe=[2, 2, 2, 2], window_size=8, stripe_size=[8, 8],
                 stripe_shift=False, mlp_ratio=2, qkv_bias=True, qkv_proj_type="linear", anchor_proj_type="avgpool",
                 anchor_window_down_factor=2, out_proj_type="linear", conv_type="1conv", local_connection=False), 1)
bench("GRL", grl, 128, f"{work}/grl.pth")
dat = seeded(DAT(img_size=64, in_chans=3, embed_dim=180, split_size=[8, 16], depth=[6] * 6, num_heads=[6] * 6,
                 expansion_factor=2.0, qkv_bias=True, upscale=4, img_range=1.0, resi_connection="1conv",
                 upsampler="pixelshuffledirect"), 2)
bench("DAT", dat, 64, f"{work}/dat.pth")
PY

swift build -c release --scratch-path .build-bench --product GRLBenchmark >/dev/null
.build-bench/release/GRLBenchmark grl "$WORK/grl.pth" 128 3 "$WORK/grl_out.bin"
.build-bench/release/GRLBenchmark dat "$WORK/dat.pth" 64 3 "$WORK/dat_out.bin"
