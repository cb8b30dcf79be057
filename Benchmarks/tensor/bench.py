#!/usr/bin/env python3
"""LapseTensor's hot ops against PyTorch CPU, interleaved: for each case, PyTorch then Lapse, PAIRS times.

Usage (from the repo root): /work/venv/bin/python Benchmarks/tensor/bench.py [case ...]
    no case: the layers issue 12 sets a target for (the SD UNet's 4×4-level 3×3, 1×1 and stride-2 convs: at least
             PyTorch's speed, ratio ≤ 1); `all`: every case with a PyTorch counterpart.
Each side is the best of a few calls (PyTorch with 2 threads in this process; Lapse as one TensorBenchmarks process
per pair, timing itself the same way), so a pair's ratio compares like with like; Benchmarks/pairs.py prints the
median per-pair ratio, its spread and a RESULT line for Benchmarks/run-all.sh. The Lapse case names end in
`_winograd` where they time both 3×3 algorithms: that variant is Lapse's default choice (Winograd where it applies,
else im2col, e.g. at the 4×4 level), `_im2col` forces im2col.
Environment: PAIRS (default 5), SCRATCH (the build folder; default .build-bench), THREADS (default 2).
"""
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pairs  # noqa: E402

THREADS = int(os.environ.get("THREADS", "2"))
torch.set_num_threads(THREADS)
torch.set_grad_enabled(False)

# The cases issue 12's targets name, with the ratio asked for (Lapse's time over PyTorch's).
TARGETS = {
    "unet_conv3x3_32x1280to1280_4": 1.0,
    "unet_conv1x1_32x2560to1280_4": 1.0,
    "unet_conv3x3s2_32x1280to1280_8": 1.0,
}


def best(fn, repeats):
    fn()
    t = float("inf")
    for _ in range(repeats):
        s = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - s)
    return t


def torch_cases():
    """name → (repeats, callable): the same shapes and the same best-of counts as Benchmarks/tensor/main.swift."""
    cases = {}

    def add(name, repeats, fn):
        cases[name] = (repeats, fn)

    for size, cin, cout in [(128, 64, 64), (128, 64, 32), (128, 192, 64), (256, 64, 64), (256, 64, 32),
                            (256, 96, 32), (512, 64, 64), (32, 64, 64)]:
        x, w, b = torch.randn(1, cin, size, size), torch.randn(cout, cin, 3, 3), torch.randn(cout)
        add(f"conv3x3_{cin}to{cout}_{size}", 5, lambda x=x, w=w, b=b: F.leaky_relu(F.conv2d(x, w, b, padding=1), 0.2))
    x, w, b = torch.randn(1, 64, 512, 512), torch.randn(3, 64, 3, 3), torch.randn(3)
    add("conv3x3_64to3_512", 5, lambda: F.conv2d(x, w, b, padding=1))
    for d in [40, 64]:
        q, k, v = (torch.randn(1, 16, 4096, d) for _ in range(3))
        add(f"attention_16x4096_d{d}", 3, lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
    # GRL/DAT-style windows; cosine attention written the way GRL's PyTorch code does it.
    wq, wk, wv = (torch.randn(256, 6, 64, 16) for _ in range(3))
    mask, logit = torch.randn(1, 6, 64, 64), torch.randn(6, 1, 1)
    add("attention_window_256x6x64_d16", 5, lambda: F.scaled_dot_product_attention(wq, wk, wv, attn_mask=mask))

    def cosine():
        s = F.normalize(wq, dim=-1) @ F.normalize(wk, dim=-1).transpose(-2, -1)
        s = s * torch.clamp(logit, max=4.605170185988092).exp() + mask
        return torch.softmax(s, dim=-1) @ wv

    add("cosine_attention_window_256x6x64_d16", 5, cosine)
    # The SD UNet's layers on a 16-frame CFG batch (32 images) of a 256² video, as diffusers runs them.
    for size, cin, cout in [(32, 320, 320), (16, 640, 640), (8, 1280, 1280), (4, 1280, 1280), (8, 2560, 1280),
                            (32, 640, 320)]:
        x, w, b = torch.randn(32, cin, size, size), torch.randn(cout, cin, 3, 3), torch.randn(cout)
        add(f"unet_conv3x3_32x{cin}to{cout}_{size}", 2, lambda x=x, w=w, b=b: F.conv2d(x, w, b, padding=1))
    x1, w1, b1 = torch.randn(32, 2560, 4, 4), torch.randn(1280, 2560, 1, 1), torch.randn(1280)
    add("unet_conv1x1_32x2560to1280_4", 2, lambda: F.conv2d(x1, w1, b1))
    x8, w8 = torch.randn(32, 1280, 8, 8), torch.randn(1280, 1280, 3, 3)
    add("unet_conv3x3s2_32x1280to1280_8", 2, lambda: F.conv2d(x8, w8, b1, stride=2, padding=1))
    gx, wi, bi = torch.randn(32, 1024, 320), torch.randn(2560, 320), torch.randn(2560)
    wo, bo = torch.randn(320, 1280), torch.randn(320)

    def geglu():
        h, gate = F.linear(gx, wi, bi).chunk(2, dim=-1)
        return F.linear(h * F.gelu(gate), wo, bo)

    add("unet_geglu_ff_32x1024x320", 3, geglu)

    def mha(q, k, v):  # diffusers' AttnProcessor2_0: split heads, SDPA, merge heads
        n, l, c = q.shape
        split = lambda t: t.view(n, -1, 8, c // 8).transpose(1, 2)
        return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(n, l, c)

    uq, uk, uv = (torch.randn(32, 1024, 320) for _ in range(3))
    add("unet_mha_32x1024_h8d40", 3, lambda: mha(uq, uk, uv))
    mq, mk, mv = (torch.randn(2048, 16, 320) for _ in range(3))
    add("motion_mha_2048x16_h8d40", 3, lambda: mha(mq, mk, mv))
    a, bm = torch.randn(2048, 2048), torch.randn(2048, 2048)
    add("gemm_2048_matmul", 5, lambda: a @ bm)
    return cases


def main():
    scratch = os.environ.get("SCRATCH", ".build-bench")
    subprocess.run(["swift", "build", "-c", "release", "--scratch-path", scratch, "--product", "TensorBenchmarks"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["swift", "build", "-c", "release", "--scratch-path", scratch, "--product", "lapse"],
                   check=True, stdout=subprocess.DEVNULL)
    bin_path = subprocess.run(["swift", "build", "-c", "release", "--scratch-path", scratch, "--show-bin-path"],
                              check=True, capture_output=True, text=True).stdout.strip()
    binary = os.path.join(bin_path, "TensorBenchmarks")
    pairs.machine_header(os.path.join(bin_path, "lapse"))
    env = pairs.openblas_environment(os.path.join(bin_path, "lapse"))
    env["OPENBLAS_NUM_THREADS"] = str(THREADS)
    count = int(os.environ.get("PAIRS", pairs.DEFAULT_PAIRS))

    cases = torch_cases()
    wanted = sys.argv[1:] or list(TARGETS)
    if wanted == ["all"]:
        wanted = list(cases)
    unknown = [c for c in wanted if c not in cases]
    if unknown:
        sys.exit(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(cases)}")
    print(f"torch {torch.__version__}, {THREADS} threads; {count} pairs per case", flush=True)

    for case in wanted:
        repeats, fn = cases[case]

        def lapse_once(case=case):
            # The binary runs every case whose name contains the filter: for a 3×3 case both algorithms.
            out = subprocess.run([binary, case], check=True, capture_output=True, text=True, env=env).stdout
            seconds = {f[0]: float(f[2]) for f in (line.split() for line in out.splitlines()) if len(f) == 3}
            for name in (case + "_winograd", case):
                if name in seconds:
                    return seconds[name]
            sys.exit(f"TensorBenchmarks printed no line for {case}: {out[-500:]}")

        pairs.interleave(case, "PyTorch", lambda fn=fn, repeats=repeats: best(fn, repeats), lapse_once, pairs=count,
                         target=TARGETS.get(case))


if __name__ == "__main__":
    main()
