"""Seeded stand-in weights for the full-size diffusion benchmarks (motion.sh, fullrun.sh)."""
import math
import torch


def seeded(module, seed):
    """A state dict of `module` with uniform weights scaled by fan-in, so activations stay O(1) through ~100 layers;
    norms near 1, small biases. Buffers (e.g. the motion modules' sinusoidal `pos_embed.pe`) keep their values."""
    g = torch.Generator().manual_seed(seed)
    params = dict(module.named_parameters())
    out = {}
    for name, p in module.state_dict().items():
        if name not in params:
            out[name] = p.clone()
            continue
        r = torch.rand(p.shape, generator=g) * 2 - 1
        if name.endswith(".weight") and p.dim() == 1:
            out[name] = 1 + 0.2 * r
        elif name.endswith(".bias"):
            out[name] = 0.1 * r
        else:
            out[name] = r * (1.5 / math.sqrt(p[0].numel()))
    return out
