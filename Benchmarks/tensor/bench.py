#!/usr/bin/env python3
"""Times PyTorch CPU and LapseTensor on the same machine in the same run and prints GFLOP/s and the ratio.

Usage (from the repo root): /work/venv/bin/python Benchmarks/tensor/bench.py [--skip-build]
Builds the TensorBenchmarks target in release (scratch path .build-bench), runs it, then PyTorch with 2 threads.
"""
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

THREADS = 2
torch.set_num_threads(THREADS)


def best(fn, repeats=5):
    fn()
    t = float("inf")
    for _ in range(repeats):
        s = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - s)
    return t


def torch_results():
    out = {}
    with torch.inference_mode():
        for size, cin, cout in [(128, 64, 64), (128, 64, 32), (128, 192, 64), (256, 64, 64), (256, 64, 32),
                                (256, 96, 32), (512, 64, 64), (32, 64, 64)]:
            x, w, b = torch.randn(1, cin, size, size), torch.randn(cout, cin, 3, 3), torch.randn(cout)
            flops = 2.0 * cout * cin * 9 * size * size
            t = best(lambda: F.leaky_relu(F.conv2d(x, w, b, padding=1), 0.2))
            out[f"conv3x3_{cin}to{cout}_{size}"] = (flops / t / 1e9, t)
        x, w, b = torch.randn(1, 64, 512, 512), torch.randn(3, 64, 3, 3), torch.randn(3)
        t = best(lambda: F.conv2d(x, w, b, padding=1))
        out["conv3x3_64to3_512"] = (2.0 * 3 * 64 * 9 * 512 * 512 / t / 1e9, t)
        for d in [40, 64]:
            q, k, v = (torch.randn(1, 16, 4096, d) for _ in range(3))
            t = best(lambda: F.scaled_dot_product_attention(q, k, v), repeats=3)
            out[f"attention_16x4096_d{d}"] = (4.0 * 16 * 4096 * 4096 * d / t / 1e9, t)
        # GRL/DAT-style windows; cosine attention written the way GRL's PyTorch code does it.
        q, k, v = (torch.randn(256, 6, 64, 16) for _ in range(3))
        mask, logit = torch.randn(1, 6, 64, 64), torch.randn(6, 1, 1)
        flops = 4.0 * 256 * 6 * 64 * 64 * 16
        t = best(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        out["attention_window_256x6x64_d16"] = (flops / t / 1e9, t)

        def cosine():
            s = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            s = s * torch.clamp(logit, max=4.605170185988092).exp() + mask
            return torch.softmax(s, dim=-1) @ v

        t = best(cosine)
        out["cosine_attention_window_256x6x64_d16"] = (flops / t / 1e9, t)
        # The SD UNet's layers on a 16-frame CFG batch (32 images) of a 256² video, as diffusers runs them.
        for size, cin, cout in [(32, 320, 320), (16, 640, 640), (8, 1280, 1280), (4, 1280, 1280), (8, 2560, 1280),
                                (32, 640, 320)]:
            x, w, b = torch.randn(32, cin, size, size), torch.randn(cout, cin, 3, 3), torch.randn(cout)
            t = best(lambda: F.conv2d(x, w, b, padding=1), repeats=2)
            out[f"unet_conv3x3_32x{cin}to{cout}_{size}"] = (2.0 * 32 * cout * cin * 9 * size * size / t / 1e9, t)
        x, w, b = torch.randn(32, 2560, 4, 4), torch.randn(1280, 2560, 1, 1), torch.randn(1280)
        t = best(lambda: F.conv2d(x, w, b), repeats=2)
        out["unet_conv1x1_32x2560to1280_4"] = (2.0 * 32 * 1280 * 2560 * 16 / t / 1e9, t)
        x, w = torch.randn(32, 1280, 8, 8), torch.randn(1280, 1280, 3, 3)
        t = best(lambda: F.conv2d(x, w, b, stride=2, padding=1), repeats=2)
        out["unet_conv3x3s2_32x1280to1280_8"] = (2.0 * 32 * 1280 * 1280 * 9 * 16 / t / 1e9, t)
        x, wi, bi = torch.randn(32, 1024, 320), torch.randn(2560, 320), torch.randn(2560)
        wo, bo = torch.randn(320, 1280), torch.randn(320)

        def geglu():
            h, gate = F.linear(x, wi, bi).chunk(2, dim=-1)
            return F.linear(h * F.gelu(gate), wo, bo)

        t = best(geglu, repeats=3)
        out["unet_geglu_ff_32x1024x320"] = (2.0 * 32 * 1024 * 320 * (2560 + 1280) / t / 1e9, t)

        def mha(q, k, v):  # diffusers' AttnProcessor2_0: split heads, SDPA, merge heads
            n, l, c = q.shape
            split = lambda t: t.view(n, -1, 8, c // 8).transpose(1, 2)
            return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(n, l, c)

        q, k, v = (torch.randn(32, 1024, 320) for _ in range(3))
        t = best(lambda: mha(q, k, v), repeats=3)
        out["unet_mha_32x1024_h8d40"] = (4.0 * 32 * 1024 * 1024 * 320 / t / 1e9, t)
        q, k, v = (torch.randn(2048, 16, 320) for _ in range(3))
        t = best(lambda: mha(q, k, v), repeats=3)
        out["motion_mha_2048x16_h8d40"] = (4.0 * 2048 * 16 * 16 * 320 / t / 1e9, t)
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        t = best(lambda: a @ b)
        out["gemm_2048_matmul"] = (2.0 * 2048**3 / t / 1e9, t)
    return out


def main():
    scratch = os.environ.get("SCRATCH", ".build-bench")  # SCRATCH=.build-x reuses another build directory
    if "--skip-build" not in sys.argv:
        subprocess.run(["swift", "build", "-c", "release", "--scratch-path", scratch, "--product", "TensorBenchmarks"],
                       check=True)
    binary = subprocess.run(["swift", "build", "-c", "release", "--scratch-path", scratch, "--show-bin-path"],
                            check=True, capture_output=True, text=True).stdout.strip() + "/TensorBenchmarks"
    lapse = {}
    for line in subprocess.run([binary], check=True, capture_output=True, text=True).stdout.splitlines():
        if line.startswith("verify_"):  # fast conv paths vs im2col: relative error
            print(line)
            continue
        name, gflops, secs = line.split()
        lapse[name] = (float(gflops), float(secs))
    ref = torch_results()
    print(f"{'case':34} {'Lapse GF/s':>11} {'torch GF/s':>11} {'ratio':>7}   (torch {torch.__version__}, {THREADS} threads)")
    for name, (gf, _) in lapse.items():
        # Lapse times each 3×3 case by both algorithms (…_im2col / …_winograd) against the one PyTorch figure.
        key = name.removesuffix("_im2col").removesuffix("_winograd")
        if key in ref:
            print(f"{name:34} {gf:11.1f} {ref[key][0]:11.1f} {gf / ref[key][0]:7.2f}")
        elif name in ref:
            print(f"{name:34} {gf:11.1f} {ref[name][0]:11.1f} {gf / ref[name][0]:7.2f}")
        else:
            print(f"{name:34} {gf:11.1f} {'-':>11} {'-':>7}")
    if "gemm_2048_openblas" in lapse:
        print(f"matmul vs raw OpenBLAS: {lapse['gemm_2048_matmul'][0] / lapse['gemm_2048_openblas'][0]:.2f}")


if __name__ == "__main__":
    main()
