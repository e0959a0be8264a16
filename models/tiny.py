"""Tiny random models of the real classes, built from config and saved in the real formats.

They let tests (and the default run, until the trained shapes zoo replaces them) go through exactly
the loading code that real checkpoints use: `DiffusionPipeline.from_pretrained(folder)` for a
Stable Diffusion pipeline, open_clip's `local-dir:` folder (the same layout as an `hf-hub:` repo) for
CLIP. Built with a fixed seed on CPU, the files are byte-identical from run to run, which is what lets
a fresh clone regenerate `data/` with the hash recorded in `data.dvc`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CLIP_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=49408,
    max_position_embeddings=77,
    projection_dim=32,
)


def clip_tokenizer():
    """A CLIPTokenizer over CLIP's real BPE vocabulary, which ships inside open_clip (no hub needed)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    merges = [tuple(pair) for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])]
    # open_clip spells the two special tokens differently from the Hugging Face CLIP vocabulary.
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(k, k): v for k, v in bpe.encoder.items()}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny_sd(
    out: Path, seed: int = 0, image_size: int = 32, channels: tuple[int, ...] = (32, 64), layers_per_block: int = 1
) -> Path:
    """A StableDiffusionPipeline with tiny random UNet, VAE (8x downsampling would be too coarse at
    32 px, so 4x) and CLIP text encoder, written with save_pretrained."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=image_size,
    )
    unet = UNet2DConditionModel(
        sample_size=image_size // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=layers_per_block,
        block_out_channels=channels,
        norm_num_groups=8,
        cross_attention_dim=CLIP_TEXT["hidden_size"],
        attention_head_dim=4,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",),
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_TEXT))
    tokenizer = clip_tokenizer()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


TINY_CLIP = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}


def build_tiny_clip(out: Path, seed: int = 0) -> Path:
    """An open_clip CLIP with a tiny config, saved as open_clip_config.json + open_clip_model.safetensors
    (the layout of an open_clip `hf-hub:` repository), loadable with `local-dir:<out>`."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP["model_cfg"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "open_clip_config.json").write_text(json.dumps(TINY_CLIP, indent=2, sort_keys=True) + "\n")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return out
