"""One StreamingT2V refiner solver evaluation, Lapse vs PyTorch (driven by refiner_step.sh; see there).

    refiner_step.py <bench-dir> <width> <height> <frames> <pairs> <threads> <UNetBenchmark binary> [src]

The reference is THE ORIGINAL generator: modelscope's `Vid2VidSDUNet()` with its defaults (MS-Vid2Vid-XL, 1.41 B
parameters) from StreamingT2V's copy, t2v_enhanced/thirdparty/modelscope/models/multi_modal/video_to_video/modules/
unet_v2v.py, loaded on its own with the stand-ins of Tools/fixtures/vid2vid_unet.py (fairscale's checkpoint wrapper
as identity, rotary embeddings never built) except that xformers' memory_efficient_attention becomes PyTorch's
scaled_dot_product_attention, whose fused CPU kernel never holds the N×N score matrix (the fixture's plain
softmax(q·kᵀ)·v would need ~100 GB at 1280×720 × 24 frames).

Weights: seeded fp32 (Benchmarks/diffusion/seeded_weights.py, seed 2029) under modelscope's names, written once to
<bench-dir>/vid2vid_xl_seeded.safetensors (5.6 GB), which both sides load. Inputs (torch.Generator seed 0): latents
[1, 4, F, H/8, W/8], positive and negative contexts [1, 77, 1024], timestep 599 (the refiner's first step); written
with PyTorch's positive-pass output to <bench-dir>/refiner_io_<W>x<H>x<F>.safetensors for Lapse to read and compare.

An evaluation is what each refiner solver step asks of the model at CFG 7.5: forward(x, t, positive) and
forward(x, t, negative), two batch-1 passes (video_to_video's diffusion calls the model twice). Timed A B A B:
PyTorch, then Lapse (a UNetBenchmark vid2vid subprocess, answering one evaluation per "run"), so machine load hits
both alike.
"""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "Tools", "fixtures"))
sys.path.insert(0, os.path.join(ROOT, "Benchmarks", "diffusion"))
sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))

from pairs import machine_header, openblas_environment, report  # noqa: E402

from vid2vid_unet import MODULE, install_standins  # noqa: E402  (the fixture's stand-ins for the heavy imports)

SEED = 2029
TIMESTEP = 599.0


def fits(latent_height, latent_width, levels=4):
    """Vid2VidUNet.checkLatentSize: h → h/2 + 1 down, 2h − 2 up, so each level above the lowest needs an even height,
    and the width must halve evenly."""
    h, w = latent_height, latent_width
    for _ in range(levels - 1):
        if h < 2 or h % 2 or w < 2 or w % 2:
            return False
        h, w = h // 2 + 1, w // 2
    return True


def main():
    bench, width, height, frames, pairs, threads, binary = sys.argv[1:8]
    src = sys.argv[8] if len(sys.argv) > 8 else "/work/st2v-src"
    width, height, frames, pairs, threads = int(width), int(height), int(frames), int(pairs), int(threads)
    lapse_binary = os.path.join(os.path.dirname(binary), "lapse")
    machine_header(lapse_binary)
    if width % 8 or height % 8 or not fits(height // 8, width // 8):
        near = [h for h in range(max(8, height - 64), height + 65, 8) if fits(h // 8, width // 8)]
        sys.exit(f"{width}×{height} does not fit MS-Vid2Vid-XL's down/up path (latent height even at every level but "
                 f"the lowest, width divisible by 64 px); heights that fit at this width: {near} (720 works at 1280)")

    install_standins(tempfile.mkdtemp(prefix="refiner-bench-"))
    import importlib.util
    import torch
    import xformers.ops
    from safetensors.torch import load_file, save_file

    def sdpa(query, key, value, attn_bias=None, op=None, scale=None):
        assert attn_bias is None
        # [B·heads, N, d] → one 4-D batch, the layout the fused CPU kernel takes.
        return torch.nn.functional.scaled_dot_product_attention(query[None], key[None], value[None], scale=scale)[0]
    xformers.ops.memory_efficient_attention = sdpa

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    spec = importlib.util.spec_from_file_location("unet_v2v", os.path.join(src, MODULE))
    unet_v2v = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unet_v2v)
    with torch.device("meta"):
        model = unet_v2v.Vid2VidSDUNet()

    weights = os.path.join(bench, "vid2vid_xl_seeded.safetensors")
    if not os.path.exists(weights):
        from seeded_weights import seeded  # the recipe of the other full-size benchmarks
        start = time.perf_counter()
        save_file(seeded(model, SEED), weights + ".part")
        os.replace(weights + ".part", weights)
        print(f"wrote {weights} ({os.path.getsize(weights) / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")
    model.load_state_dict(load_file(weights), assign=True, strict=True)
    model.eval()
    n = sum(p.numel() for p in model.parameters())

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, frames, height // 8, width // 8, generator=g)
    positive = torch.randn(1, 77, 1024, generator=g)
    negative = torch.randn(1, 77, 1024, generator=g)
    t = torch.tensor([TIMESTEP])

    def torch_pass(context):
        return model(latents, t, context)

    def torch_evaluation():
        start = time.perf_counter()
        torch_pass(positive)
        middle = time.perf_counter()
        torch_pass(negative)
        end = time.perf_counter()
        return end - start, middle - start, end - middle

    print(f"torch {torch.__version__} ({threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}); "
          f"Vid2VidSDUNet() {n / 1e9:.2f} B parameters fp32; latents {tuple(latents.shape)} ({width}×{height} × {frames} "
          f"frames), timestep {TIMESTEP:.0f}, contexts [1, 77, 1024]", flush=True)
    # One untimed positive pass: the reference output Lapse is compared with, and PyTorch's warm-up.
    start = time.perf_counter()
    eps = torch_pass(positive)
    print(f"torch warm-up pass {time.perf_counter() - start:.1f} s", flush=True)
    io = os.path.join(bench, f"refiner_io_{width}x{height}x{frames}.safetensors")
    save_file({"latents": latents.contiguous(), "positive": positive, "negative": negative, "t": t,
               "eps": eps.contiguous()}, io)
    del eps

    lapse = subprocess.Popen([binary, "vid2vid", weights, io], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             bufsize=1, env={**openblas_environment(lapse_binary), "OPENBLAS_NUM_THREADS": str(threads)})
    while True:
        line = lapse.stdout.readline()
        if not line:
            sys.exit("UNetBenchmark ended before it was ready")
        print(line.rstrip(), flush=True)
        if line.strip() == "ready":
            break
    torch_times, lapse_times = [], []
    print("pair | torch s (positive + negative) | lapse s (positive + negative) | lapse/torch")
    for i in range(pairs):
        tt = torch_evaluation()
        lapse.stdin.write("run\n")
        lapse.stdin.flush()
        answer = lapse.stdout.readline().split()
        if len(answer) != 4 or answer[0] != "time":
            sys.exit(f"UNetBenchmark answered {answer!r}")
        lt = tuple(float(x) for x in answer[1:])
        torch_times.append(tt[0])
        lapse_times.append(lt[0])
        print(f"{i + 1} | {tt[0]:.2f} ({tt[1]:.2f} + {tt[2]:.2f}) | {lt[0]:.2f} ({lt[1]:.2f} + {lt[2]:.2f}) | "
              f"{lt[0] / tt[0]:.3f}", flush=True)
    lapse.stdin.close()
    for line in lapse.stdout:
        print(line.rstrip())
    if lapse.wait() != 0:
        sys.exit("UNetBenchmark failed")
    report(f"refiner evaluation (2 passes) {width}x{height} x{frames}", "PyTorch", torch_times, lapse_times)


if __name__ == "__main__":
    main()
