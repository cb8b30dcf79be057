"""Seeded full-size stand-ins for MS-Vid2Vid-XL's three published files, in the published formats, for
Benchmarks/streamingt2v/stage3.sh (run by hand; written to the git-ignored models/bench/):

  open_clip_vit_h14_seeded.bin   open_clip's ViT-H-14 CLIP (text and vision towers), randomly initialised by open_clip
                                 itself, saved as `torch.save(model.state_dict())` like open_clip_pytorch_model.bin
  sd21_vae_seeded.ckpt           modelscope's AutoencoderKL with the refiner's ddconfig (SD2.1's VAE), saved as
                                 `torch.save({'state_dict': {'first_stage_model.' + k: v}})` like v2-1_512-ema-pruned.ckpt
                                 (without the UNet and text encoder, which Lapse never reads)

The generator itself is refiner_step.py's `vid2vid_xl_seeded.safetensors` (1.41 B parameters, seeded fp32).

    /work/venv/bin/python Benchmarks/streamingt2v/refiner_files.py models/bench [/work/st2v-src]
"""
import importlib.util
import os
import sys
import types

import torch


def autoencoder_module(src):
    # autoencoder.py imports modelscope's logger only.
    for name in ["modelscope", "modelscope.utils", "modelscope.utils.logger"]:
        sys.modules.setdefault(name, types.ModuleType(name))
    import logging
    sys.modules["modelscope.utils.logger"].get_logger = lambda: logging.getLogger("autoencoder")
    path = os.path.join(src, "t2v_enhanced/thirdparty/modelscope/models/multi_modal/video_to_video/modules/autoencoder.py")
    spec = importlib.util.spec_from_file_location("autoencoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    out = sys.argv[1]
    src = sys.argv[2] if len(sys.argv) > 2 else "/work/st2v-src"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    clip_path = os.path.join(out, "open_clip_vit_h14_seeded.bin")
    if not os.path.exists(clip_path):
        import open_clip
        model = open_clip.create_model("ViT-H-14", pretrained=None)
        torch.save(model.state_dict(), clip_path + ".tmp")
        os.replace(clip_path + ".tmp", clip_path)
        del model
    vae_path = os.path.join(out, "sd21_vae_seeded.ckpt")
    if not os.path.exists(vae_path):
        ae = autoencoder_module(src)
        ddconfig = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
                        num_res_blocks=2, attn_resolutions=[], dropout=0.0)
        vae = ae.AutoencoderKL(ddconfig, 4)
        state = {"first_stage_model." + k: v for k, v in vae.state_dict().items()}
        torch.save({"state_dict": state}, vae_path + ".tmp")
        os.replace(vae_path + ".tmp", vae_path)
    for p in (clip_path, vae_path):
        print(f"{p}: {os.path.getsize(p) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
