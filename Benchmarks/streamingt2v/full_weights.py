"""Writes full-size SEEDED fp32 StreamingT2V weights (one safetensors file with the release checkpoint's key names) and
a text-to-video-ms-1.7b-like base folder, for Benchmarks/streamingt2v/stage2.sh.

The key names and shapes come from THE ORIGINAL CODE (VideoLDM, branch StreamingModelscope) built at the release's
sizes on torch's meta device (no memory), with Tools/fixtures/streamingt2v.py's import stand-ins and pins; every
`from_pretrained` of the base folder is replaced by `from_config`, since the folder holds configs only. Values are
uniform noise scaled as the fixture scales them (norm weights ≈ 1, biases small, matrices ~1/sqrt(fan_in)), drawn
per tensor from a seeded generator and streamed to disk chunk by chunk after a header with computed offsets, so
Python never holds more than one chunk. Only `image_encoder.model.visual.*` of the OpenCLIP model is written (the
APM uses the vision tower; the release's text tower is never read).

    python full_weights.py <out.safetensors> <base-folder> [--src /work/st2v-src]
"""
import argparse
import json
import os
import shutil
import struct
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "Tools", "fixtures"))
import streamingt2v as fixture  # noqa: E402  (stand-ins, pins, scale rule, tiny tokenizer)

# text-to-video-ms-1.7b's configs (unet/, text_encoder/, vae/), the values its config.json files set.
UNET_CONFIG = {
    "_class_name": "UNet3DConditionModel", "_diffusers_version": "0.27.2", "act_fn": "silu",
    "attention_head_dim": 64, "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1, "in_channels": 4, "layers_per_block": 2, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 32,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
}
TEXT_CONFIG = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 1024,
    "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16, "max_position_embeddings": 77,
    "hidden_act": "gelu", "layer_norm_eps": 1e-05, "projection_dim": 512, "bos_token_id": 0, "eos_token_id": 2,
    "pad_token_id": 1, "torch_dtype": "float32",
}
VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.27.2", "act_fn": "silu", "in_channels": 3,
    "out_channels": 3, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
    "norm_num_groups": 32, "sample_size": 256, "scaling_factor": 0.18215,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
FRAME_EMBED_CHANNELS = [32, 96, 256, 512]
SEED = 2028
CHUNK = 1 << 24   # elements drawn and written at a time


def write_base(base):
    fx = os.path.join(ROOT, "Tests", "StreamingT2VTests", "Fixtures", "tiny_base")
    for sub in ["tokenizer", "scheduler"]:
        shutil.copytree(os.path.join(fx, sub), os.path.join(base, sub), dirs_exist_ok=True)
    for sub, cfg in [("unet", UNET_CONFIG), ("text_encoder", TEXT_CONFIG), ("vae", VAE_CONFIG)]:
        os.makedirs(os.path.join(base, sub), exist_ok=True)
        with open(os.path.join(base, sub, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)


def build_meta(src, base):
    tmp = tempfile.mkdtemp(prefix="st2v-full-")
    sys.path.insert(0, fixture.PINS)
    fixture.install_standins(os.path.join(tmp, "standins"))
    sys.path.insert(0, os.path.join(src, "t2v_enhanced"))
    sys.path.insert(0, src)
    import torch
    import diffusers
    import transformers
    assert diffusers.__version__ == "0.27.2", diffusers.__version__
    from diffusers.utils.import_utils import is_xformers_available
    assert is_xformers_available()
    torch.set_grad_enabled(False)

    # The base folder has configs only: build every model from its config (on the meta device).
    def model_from_config(cls, path, subfolder=None, **kwargs):
        for k in ["low_cpu_mem_usage", "device_map", "torch_dtype"]:
            kwargs.pop(k, None)
        config = cls.load_config(os.path.join(path, subfolder or ""))
        return cls.from_config(config, **kwargs)
    diffusers.ModelMixin.from_pretrained = classmethod(model_from_config)

    def text_from_config(cls, path, subfolder=None, **kwargs):
        return cls(transformers.CLIPTextConfig.from_pretrained(os.path.join(path, subfolder or "")))
    transformers.CLIPTextModel.from_pretrained = classmethod(text_from_config)

    # The original asks open_clip for a CPU model; keep it on the meta device too.
    import open_clip
    create = open_clip.create_model_and_transforms
    open_clip.create_model_and_transforms = lambda *a, device=None, **k: create(*a, device="meta", **k)

    torch.set_default_device("meta")
    from t2v_enhanced.model.diffusers_conditional.models.controlnet import image_embedder
    from t2v_enhanced.model import pl_module_params_controlnet as params
    from t2v_enhanced.model.requires_grad_setter import LayerConfig
    from t2v_enhanced.model.video_noise_generator import NoiseGenerator
    from t2v_enhanced.model.video_ldm import VideoLDM

    # The values of configs/text_to_video/config.yaml + inference_long_video.yaml (as the fixture), at full size.
    inference_params = params.InferenceParams(
        width=256, height=256, video_length=16, guidance_scale=7.5, use_dec_scaling=True, frame_rate=8,
        num_inference_steps=50, eta=1.0, n_autoregressive_generations=3, mode="long_video",
        start_from_real_input=False, eval_loss_metrics=False, scheduler_cls="", negative_prompt="",
        conditioning_from_all_past=False, validation_samples=80, conditioning_type="fixed",
        result_formats=["eval_mp4"], concat_video=True, seed=33)
    image_encoder = image_embedder.FrozenOpenCLIPImageEmbedder(
        arch="ViT-H-14", version=None, device="meta", max_length=77, freeze=True, antialias=True, ucg_rate=0.0,
        unsqueeze_dim=False, repeat_to_max_len=False, num_image_crops=0, output_tokens=False)
    unet_params = params.UNetParams(
        conditioning_embedding_out_channels=FRAME_EMBED_CHANNELS, ckpt_spatial_layers="", pipeline_repo=base,
        unet_from_diffusers=True, spatial_latent_input=False, num_frame_conditioning=1,
        frame_expansion="none", downsample_controlnet_cond=True, num_frames=16, pre_transformer_in_cond=False,
        num_tranformers=1, zero_conv_3d=False, merging_mode="addition", compute_only_conditioned_frames=False,
        condition_encoder="", zero_conv_mode="Identity", clean_model=True,
        merging_mode_base="attention_cross_attention", attention_mask_params=None, attention_mask_params_base=None,
        modelscope_input_format=True, use_post_merger_zero_conv=False, weight_control_sample=1.0,
        use_controlnet_mask=False, random_mask_shift=False, random_mask=False, use_resampler=True,
        unet_from_pipe=False, unet_operates_on_2d=False, image_encoder="CLIP",
        use_standard_attention_processor=False, num_frames_before_chunk=0, resampler_type="single_frame",
        resampler_cls="t2v_enhanced.model.diffusers_conditional.models.controlnet.image_embedder.ImgEmbContextResampler",
        resampler_merging_layers=4, image_encoder_obj=image_encoder, cfg_text_image=False, aggregation="last_out",
        resampler_random_shift=True, img_cond_alpha_per_frame=False, num_control_input_frames=8,
        use_image_encoder_normalization=False, use_of=False, ema_param=-1.0, concat=False,
        use_image_tokens_main=True, use_image_tokens_ctrl=False)
    layers = LayerConfig(gradient_setup=[[False, ["vae"]], [False, ["text_encoder"]], [False, ["image_encoder"]],
                                         [True, ["resampler"]], [True, ["unet"]], [True, ["base_model"]]])
    opt_params = params.OptimizerParams(
        learning_rate=5e-5, layers_config=layers,
        noise_generator=NoiseGenerator(mode="vanilla", alpha=1.0, shared_noise_across_chunks=True,
                                       forward_steps=850, radius=[2, 2, 2]),
        use_fps_conditioning=False, start_frame_training=16, start_frame_ctrl=16)
    model = VideoLDM(inference_params=inference_params, opt_params=opt_params, unet_params=unet_params)
    rows = []
    for section in ["base_model", "unet", "resampler", "image_encoder", "text_encoder", "vae"]:
        for name, t in getattr(model, section).state_dict().items():
            key = section + "." + name
            if section == "image_encoder" and not key.startswith("image_encoder.model.visual."):
                continue
            if section == "text_encoder" and name.endswith("position_ids"):
                continue   # a buffer, not in the release's state dict
            rows.append((key, list(t.shape)))
    torch.set_default_device("cpu")
    return rows


def write_weights(path, rows):
    import numpy as np
    import torch
    header, offset = {}, 0
    for key, shape in rows:
        n = int(np.prod(shape)) if shape else 1
        header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * n]}
        offset += 4 * n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    g = torch.Generator().manual_seed(SEED)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key, shape in rows:
            n = int(np.prod(shape)) if shape else 1
            scale, shift = fixture.scale_and_offset(key, shape)
            for start in range(0, n, CHUNK):
                r = torch.rand(min(CHUNK, n - start), generator=g)
                f.write(((r * 2 - 1) * scale + shift).numpy().astype("<f4").tobytes())
    os.replace(tmp, path)
    return offset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("base")
    ap.add_argument("--src", default="/work/st2v-src")
    args = ap.parse_args()
    write_base(args.base)
    rows = build_meta(args.src, args.base)
    sections = {}
    for key, shape in rows:
        s = key.split(".")[0]
        n = 1
        for d in shape:
            n *= d
        sections[s] = sections.get(s, 0) + n
    for s, n in sections.items():
        print(f"  {s}: {n / 1e6:.1f} M parameters")
    total = write_weights(args.out, rows)
    print(f"wrote {len(rows)} tensors, {total / 2**30:.2f} GiB of fp32 weights ({total} bytes) to {args.out}")


if __name__ == "__main__":
    main()
