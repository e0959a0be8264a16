"""Tiny random pipelines of every generator family, built from config and written with save_pretrained.

They have the real classes and the real folder layout, so a test goes through exactly the loading code a
published checkpoint does, offline. At 32x32 pixels the denoisers have 20K-300K parameters and the VAEs
under 250K; the CLIP text encoders have 1.6M only because they keep CLIP's real 49408-token vocabulary
(an embedding lookup, no compute). SD1.5's builder lives in `models.tiny` (`build_tiny_sd`, ~1M UNet).

Text encoders: CLIP ones reuse `models.tiny.clip_tokenizer()` (CLIP's real BPE, shipped in open_clip);
T5 ones get a T5Tokenizer (a `tokenizers` Unigram model) over a small vocabulary made here, since the
real SentencePiece file would need the hub.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from models.tiny import CLIP_TEXT, build_tiny_sd, clip_tokenizer

# A 4x-downsampling VAE: SD's 8x would leave a 4x4 latent at 32 px, too coarse for a 2-level denoiser.
VAE_KW: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(16, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,
    norm_num_groups=8,
)
T5_D_MODEL = 64  # SD3 pads the two CLIP hidden states (32 + 32) up to T5's width, so it must be >= 64


@lru_cache(maxsize=1)
def _clip_tokenizer() -> Any:
    return clip_tokenizer()


def t5_tokenizer() -> Any:
    """A T5Tokenizer (the class SD3 and PixArt declare) over single characters and a few whole words,
    scored so that a word beats its spelling; anything else becomes <unk>. Deterministic, no files."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces += [(c, -5.0) for c in chars] + [("\u2581" + c, -4.0) for c in chars]
    words = (
        "a an the of on in with and photo red green blue yellow cube sphere cat dog left right above below next to"
    ).split()
    pieces += [("\u2581" + w, -1.0) for w in dict.fromkeys(words)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _t5_encoder(vocab_size: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=T5_D_MODEL,
            d_kv=16,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def _clip_text(with_projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(CLIPTextConfig(**CLIP_TEXT))


def _vae(image_size: int, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_KW, sample_size=image_size, **extra)


def build_tiny_sdxl(out: Path, seed: int = 0, image_size: int = 32) -> Path:
    """StableDiffusionXLPipeline: UNet with SDXL's text_time conditioning, CLIPTextModel +
    CLIPTextModelWithProjection (whose pooled output feeds the added embedding), two tokenizers."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    hidden, proj, time_dim = CLIP_TEXT["hidden_size"], CLIP_TEXT["projection_dim"], 8
    unet = UNet2DConditionModel(
        sample_size=image_size // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 2),
        use_linear_projection=True,
        cross_attention_dim=2 * hidden,  # the two encoders' hidden states are concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + proj,
    )  # 6 size/crop numbers + pooled text
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(image_size),
        text_encoder=_clip_text(False),
        text_encoder_2=_clip_text(True),
        tokenizer=_clip_tokenizer(),
        tokenizer_2=_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_sd3(out: Path, seed: int = 0, image_size: int = 32) -> Path:
    """StableDiffusion3Pipeline: SD3Transformer2DModel (MMDiT), two CLIPTextModelWithProjection and a
    T5EncoderModel; joint_attention_dim is T5's width, pooled_projection_dim the two CLIP projections."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    heads, head_dim, patch = 2, 8, 2
    latent = image_size // 4
    transformer = SD3Transformer2DModel(
        sample_size=latent,
        patch_size=patch,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=T5_D_MODEL,
        caption_projection_dim=heads * head_dim,
        pooled_projection_dim=2 * CLIP_TEXT["projection_dim"],
        pos_embed_max_size=latent // patch,
    )
    t5_tok = t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(image_size, shift_factor=0.0, scaling_factor=1.0, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_clip_text(True),
        tokenizer=_clip_tokenizer(),
        text_encoder_2=_clip_text(True),
        tokenizer_2=_clip_tokenizer(),
        text_encoder_3=_t5_encoder(len(t5_tok)),
        tokenizer_3=t5_tok,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_pixart_sigma(out: Path, seed: int = 0, image_size: int = 32) -> Path:
    """PixArtSigmaPipeline: PixArtTransformer2DModel (adaLN-single DiT, learned sigma so 2x out channels)
    with T5 captions."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    heads, head_dim = 2, 8
    transformer = PixArtTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=heads * head_dim,
        caption_channels=T5_D_MODEL,
        sample_size=image_size // 4,
        patch_size=2,
        norm_num_groups=8,
    )
    tok = t5_tokenizer()
    pipe = PixArtSigmaPipeline(
        tokenizer=tok,
        text_encoder=_t5_encoder(len(tok)),
        vae=_vae(image_size),
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_stable_cascade(out: Path, seed: int = 0, image_size: int = 32) -> Path:
    """Stable Cascade as `out/prior` (StableCascadePriorPipeline) + `out/decoder` (StableCascadeDecoderPipeline),
    the layout `models.generators.stable_cascade` looks for. Sizes chain as in the real model, scaled down:
    image/8 = prior latent (resolution_multiple 8), x2 = decoder latent (latent_dim_scale), x4 = image (PaellaVQ)."""
    from diffusers import (
        DDPMWuerstchenScheduler,
        StableCascadeDecoderPipeline,
        StableCascadePriorPipeline,
        StableCascadeUNet,
    )
    from diffusers.pipelines.stable_cascade.pipeline_stable_cascade import PaellaVQModel

    torch.manual_seed(seed)
    width, embed_channels = CLIP_TEXT["hidden_size"], 16  # CLIP width; the prior's "EfficientNet" channels
    res_time_attn = ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock")
    prior_unet = StableCascadeUNet(
        in_channels=embed_channels,
        out_channels=embed_channels,
        timestep_ratio_embedding_dim=16,
        patch_size=1,
        conditioning_dim=32,
        block_out_channels=(32, 32),
        num_attention_heads=(2, 2),
        down_num_layers_per_block=(1, 1),
        up_num_layers_per_block=(1, 1),
        down_blocks_repeat_mappers=(1, 1),
        up_blocks_repeat_mappers=(1, 1),
        block_types_per_layer=(res_time_attn, res_time_attn),
        clip_text_in_channels=width,
        clip_text_pooled_in_channels=CLIP_TEXT["projection_dim"],
        clip_image_in_channels=32,
        clip_seq=4,
        dropout=(0.0, 0.0),
        self_attn=True,
        timestep_conditioning_type=("sca", "crp"),
        switch_level=(False,),
    )
    prior = StableCascadePriorPipeline(
        tokenizer=_clip_tokenizer(),
        text_encoder=_clip_text(True),
        prior=prior_unet,
        scheduler=DDPMWuerstchenScheduler(),
        resolution_multiple=8.0,
    )
    prior.save_pretrained(out / "prior", safe_serialization=True)

    decoder_unet = StableCascadeUNet(
        in_channels=4,
        out_channels=4,
        timestep_ratio_embedding_dim=16,
        patch_size=1,
        conditioning_dim=32,
        block_out_channels=(16, 32),
        num_attention_heads=(0, 2),
        down_num_layers_per_block=(1, 1),
        up_num_layers_per_block=(1, 1),
        down_blocks_repeat_mappers=(1, 1),
        up_blocks_repeat_mappers=(1, 1),
        block_types_per_layer=(res_time_attn[:2], res_time_attn),
        clip_text_pooled_in_channels=CLIP_TEXT["projection_dim"],
        clip_seq=4,
        effnet_in_channels=embed_channels,
        pixel_mapper_in_channels=3,  # the UNet's default "pixels" input is a 3-channel zero image
        dropout=(0.0, 0.0),
        self_attn=True,
        timestep_conditioning_type=("sca",),
    )
    vqgan = PaellaVQModel(levels=2, bottleneck_blocks=1, embed_dim=16, latent_channels=4, num_vq_embeddings=32)
    decoder = StableCascadeDecoderPipeline(
        decoder=decoder_unet,
        tokenizer=_clip_tokenizer(),
        text_encoder=_clip_text(True),
        scheduler=DDPMWuerstchenScheduler(),
        vqgan=vqgan,
        latent_dim_scale=2.0,
    )
    decoder.save_pretrained(out / "decoder", safe_serialization=True)
    return out


def build_tiny_lora(pipeline_dir: Path, out: Path, seed: int = 0, rank: int = 2) -> Path:
    """Random LoRA weights for the denoiser of the pipeline in `pipeline_dir`, saved the way the trainer
    saves them (`<Pipeline>.save_lora_weights`). B is random too (peft's usual init zeroes it, which
    would make the LoRA a no-op), so loading it visibly changes the images."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    pipe = DiffusionPipeline.from_pretrained(pipeline_dir)
    key = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
    model = getattr(pipe, key)
    model.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=["to_k", "to_q", "to_v", "to_out.0"]
        )
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
    type(pipe).save_lora_weights(out, **{f"{key}_lora_layers": layers}, safe_serialization=True)
    return out


# Backend name (models.generators registry) -> builder of a tiny pipeline that backend loads.
BUILDERS: dict[str, Callable[..., Path]] = {
    "sd15": build_tiny_sd,
    "sdxl": build_tiny_sdxl,
    "sd3": build_tiny_sd3,
    "pixart-sigma": build_tiny_pixart_sigma,
    "stable-cascade": build_tiny_stable_cascade,
}
