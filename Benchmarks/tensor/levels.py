#!/usr/bin/env python3
"""Times the kernel dispatch levels against each other (and optionally another build) in one interleaved run.

Usage (from the repo root): python3 Benchmarks/tensor/levels.py [--rounds N] [--base PATH] [case ...]
Runs TensorBenchmarks (built with `swift build -c release --product TensorBenchmarks`, or SCRATCH=.build-x) once
per case and variant, in A B C … A B C … order, with LAPSE_CPU_LEVEL=generic, avx2 and avx512 (those the CPU has),
plus `--base PATH`, a TensorBenchmarks binary from another build (e.g. the Swift kernels before this change).
Prints the median seconds per case and variant and each variant's median per-round ratio to the first variant.
"""
import os
import statistics
import subprocess
import sys

CASES = ["conv3x3_64to64_128_winograd", "conv3x3_192to64_128_winograd", "conv3x3_64to32_256_winograd",
         "conv3x3_64to3_512", "attention_window_256x6x64_d16", "cosine_attention_window_256x6x64_d16",
         "attention_16x4096_d40", "motion_mha_2048x16_h8d40", "softmax_16x4096x256", "silu_4M", "gelu_4M",
         "groupnorm32_4M", "layernorm256_4M", "unet_geglu_ff_32x1024x320"]


def main():
    args = sys.argv[1:]
    rounds, base = 5, None
    if "--rounds" in args:
        i = args.index("--rounds"); rounds = int(args[i + 1]); del args[i:i + 2]
    if "--base" in args:
        i = args.index("--base"); base = args[i + 1]; del args[i:i + 2]
    cases = args or CASES
    scratch = os.environ.get("SCRATCH", ".build")
    binary = subprocess.run(["swift", "build", "-c", "release", "--scratch-path", scratch, "--show-bin-path"],
                            check=True, capture_output=True, text=True).stdout.strip() + "/TensorBenchmarks"
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    levels = ["generic"]
    if " avx2 " in flags and " fma " in flags:
        levels.append("avx2")
    if all(f" {x} " in flags for x in ["avx512f", "avx512dq", "avx512bw", "avx512vl"]):
        levels.append("avx512")
    variants = ([("base", base, {})] if base else []) + [(l, binary, {"LAPSE_CPU_LEVEL": l}) for l in levels]
    model = next((l.split(":", 1)[1].strip() for l in flags.splitlines() if l.startswith("model name")), "unknown")
    print(f"CPU {model}; levels {' '.join(levels)}; {rounds} interleaved rounds; OpenBLAS core "
          f"{subprocess.run(['sh', '-c', 'echo ${OPENBLAS_CORETYPE:-auto}'], capture_output=True, text=True).stdout.strip()}")
    times = {c: {v[0]: [] for v in variants} for c in cases}
    for _ in range(rounds):
        for case in cases:
            for name, path, env in variants:
                out = subprocess.run([path, case], check=True, capture_output=True, text=True,
                                     env={**os.environ, **env}).stdout
                for line in out.splitlines():
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == case:
                        times[case][name].append(float(parts[2]))
    first = variants[0][0]
    header = "".join(f"{v[0]:>12}" for v in variants)
    ratios = "".join(f"{v[0] + '/' + first:>16}" for v in variants[1:])
    print(f"{'case (median s)':40}{header}{ratios}")
    for case in cases:
        t = times[case]
        if not t[first]:
            continue
        row = "".join(f"{statistics.median(t[v[0]]):12.5f}" for v in variants)
        rs = ""
        for v in variants[1:]:
            per = [a / b for a, b in zip(t[v[0]], t[first])]
            rs += f"{statistics.median(per):9.2f} ±{(max(per) - min(per)) / 2:4.2f} "
        print(f"{case:40}{row}  {rs}")


if __name__ == "__main__":
    main()
