"""ImageReward (Xu et al. 2023), loaded from its own checkpoint without the `image-reward` package
(which pins timm 0.6 and breaks on transformers 5).

Network (the package's `ImageReward` module): BLIP ViT-L/16 at 224 (`blip.visual_encoder`, timm-style
ViT, LayerNorm eps 1e-6, final norm on every token) -> BLIP's BERT text encoder whose every layer
cross-attends to all image tokens (`blip.text_encoder`, BLIP `med.py`, no pooler, no token-type
embeddings) -> the [CLS] feature -> the aesthetic-predictor MLP 768->1024->128->64->16->1 (`mlp.layers`,
no activations) -> `(r - 0.16717362830052426) / 1.0333394966054072`. The prompt is tokenized by
bert-base-uncased (+ BLIP's added [DEC]/[ENC] tokens) truncated to 35 tokens, [CLS] kept first.
Here: transformers' `BlipVisionModel` (same maths, fused qkv) and `BlipTextModel` (a port of the same
`med.py`, keys identical) plus our `AestheticMLP`; `remap_imagereward` renames the keys.

Files (hub repo THUDM/ImageReward): `ImageReward.pt`, a bare state_dict (the package loads it with
strict=False), and `med_config.json`, a BertConfig with `add_cross_attention: true`, vocab 30524.
Spec: `arch` = that folder (or hub id); `pretrained` = the .pt file if not `<arch>/ImageReward.pt`
(or `<arch>/ImageReward.safetensors`, preferred when present). The .pt file is a pickle: it loads only
with `allow_pickle: true` on the reward.
The tokenizer comes from the folder if it holds one, else google-bert/bert-base-uncased.

Reconstructed, hence uncertain: the checkpoint's key set beyond the modules above. BLIP_Pretrain also
owns `vision_proj`/`text_proj` (unused by the score) and med.py saves `embeddings.position_ids`: those
are skipped on purpose; any other key outside the three loaded prefixes is skipped with a warning
(mirroring the package's strict=False) while keys inside them must all map (strict load). The ViT
size is read from the weights' shapes; heads = width / 64 holds for BLIP's base and large ViTs.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.rewards.aesthetic import AestheticMLP, mlp_sizes
from models.rewards.loading import check_batch, hf_token_window, load_state_dict_file
from models.rewards.preprocess import ClipPreprocess
from models.rewards.registry import REWARDS
from synrank.config import RewardSpec
from synrank.models_io import resolve_model_path

MEAN, STD = 0.16717362830052426, 1.0333394966054072  # the package's reward normalization
MAX_TOKENS = 35
TOKENIZER = "google-bert/bert-base-uncased"
VISUAL, TEXT, MLP = "blip.visual_encoder.", "blip.text_encoder.", "mlp."
SKIPPED = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")

# BLIP's timm-style ViT names -> transformers BlipVisionModel names (the same renames as the
# transformers BLIP conversion script); the first pattern that matches wins.
_VISUAL_RULES = [
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"encoder.layers.\1.layer_norm\2.\3"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
]


def remap_imagereward(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """ImageReward checkpoint keys -> `ImageRewardNet` keys; returns (mapped, skipped keys)."""
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in state.items():
        if key.startswith(SKIPPED):
            skipped.append(key)
        elif key.startswith(VISUAL):
            rest = key.removeprefix(VISUAL)
            for pattern, target in _VISUAL_RULES:
                if re.fullmatch(pattern, rest):
                    mapped["visual_encoder." + re.sub(pattern, target, rest)] = value
                    break
            else:
                raise ValueError(f"ImageReward checkpoint: unknown visual-encoder key '{key}'")
        elif key.startswith(TEXT):  # BlipTextModel keeps med.py's names
            mapped["text_encoder." + key.removeprefix(TEXT)] = value
        elif key.startswith(MLP):
            mapped[key] = value
        else:
            skipped.append(key)
    return mapped, skipped


def vision_config(state: dict[str, torch.Tensor]):
    """BlipVisionConfig of the checkpoint's ViT, read from tensor shapes (ViT-L/16 at 224 for the real one)."""
    from transformers import BlipVisionConfig

    width = state[VISUAL + "cls_token"].shape[-1]
    patch = state[VISUAL + "patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state[VISUAL + "pos_embed"].shape[1] - 1)
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(re.escape(VISUAL) + r"blocks\.(\d+)\.", k)))
    return BlipVisionConfig(
        hidden_size=width,
        intermediate_size=state[VISUAL + "blocks.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=depth,
        num_attention_heads=max(1, width // 64),
        image_size=grid * patch,
        patch_size=patch,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )


def text_config(med: dict, encoder_width: int):
    """BlipTextConfig from ImageReward's med_config.json (a BertConfig). `is_decoder=True` only makes
    BlipTextModel build the cross-attention layers; we call it with is_decoder=False (bidirectional),
    as med.py's BertModel runs in its default 'multimodal' mode."""
    from transformers import BlipTextConfig

    if not med.get("add_cross_attention", False):
        raise ValueError("med_config.json: ImageReward's text encoder needs add_cross_attention: true")
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("med_config.json: only absolute position embeddings are supported")
    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "hidden_act",
        "layer_norm_eps",
        "pad_token_id",
    )
    # BlipTextConfig's special-token defaults are BLIP's ids in the 30524-word vocabulary; scoring uses
    # none of them, so take med_config's (absent: None) rather than ids a smaller vocabulary lacks.
    special = {k: med.get(k) for k in ("bos_token_id", "eos_token_id", "sep_token_id")}
    return BlipTextConfig(
        **{k: med[k] for k in keys if k in med},
        **special,
        encoder_hidden_size=encoder_width,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        is_decoder=True,
    )


class ImageRewardNet(nn.Module):
    """ImageReward's network (Xu et al. 2023): BLIP ViT -> BLIP BERT cross-attending to the image
    tokens -> the [CLS] feature -> the aesthetic-style MLP; built from the configs, weights loaded later."""

    def __init__(self, vision, text, mlp: tuple[int, ...]) -> None:
        from transformers import BlipTextModel, BlipVisionModel

        super().__init__()
        self.visual_encoder = BlipVisionModel(vision)
        self.text_encoder = BlipTextModel(text, add_pooling_layer=False)
        self.mlp = AestheticMLP(mlp)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The raw (un-normalized) reward, shape (N,)."""
        image_embeds = self.visual_encoder(pixel_values=pixels).last_hidden_state
        # ImageReward passes an all-ones image mask; None is the same and skips building it.
        text = self.text_encoder(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds, is_decoder=False
        )
        return self.mlp(text.last_hidden_state[:, 0, :].float()).squeeze(-1)


def default_checkpoint(folder: Path) -> str:
    """`ImageReward.safetensors` in the folder if there is one (a converted checkpoint), else the
    released `ImageReward.pt` (a pickle: it needs allow_pickle)."""
    safe = folder / "ImageReward.safetensors"
    return str(safe if safe.is_file() else folder / "ImageReward.pt")


@REWARDS.register("imagereward")
class ImageReward:
    """ImageReward (Xu et al. 2023) from the THUDM/ImageReward folder `spec.arch`, without the package.
    FileNotFoundError if the folder has no med_config.json; ValueError if the tokenizer outgrows the
    text encoder's vocabulary."""

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        from transformers import BertTokenizer

        what = f"reward '{spec.name}'"
        self.spec, self.device = spec, device
        folder = Path(resolve_model_path(spec.arch, what))
        if not (folder / "med_config.json").is_file():
            raise FileNotFoundError(
                f"{what}: '{folder}' has no med_config.json (ImageReward's text-encoder config, "
                f"from the THUDM/ImageReward repo)"
            )
        ckpt = resolve_model_path(spec.pretrained, what) if spec.pretrained else default_checkpoint(folder)
        state = load_state_dict_file(ckpt, what, spec.allow_pickle)
        med = json.loads((folder / "med_config.json").read_text())
        vision = vision_config(state)
        mapped, skipped = remap_imagereward(state)
        unexpected = [k for k in skipped if not k.startswith(SKIPPED)]
        if unexpected:
            warnings.warn(
                f"{what}: skipping {len(unexpected)} checkpoint keys ImageReward does not use: {unexpected[:5]}",
                stacklevel=2,
            )
        self.model = ImageRewardNet(vision, text_config(med, vision.hidden_size), mlp_sizes(state, what, MLP))
        self.model.load_state_dict(mapped, strict=True)
        self.model.to(device).eval()
        self.skipped = skipped

        has_tokenizer = any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt"))
        self.tokenizer = BertTokenizer.from_pretrained(
            str(folder) if has_tokenizer else resolve_model_path(TOKENIZER, what)
        )
        # BLIP's init_tokenizer adds these two; they take ids 30522/30523 of the 30524-word embedding.
        if "[DEC]" not in self.tokenizer.get_vocab():
            self.tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        if "[ENC]" not in self.tokenizer.get_vocab():
            self.tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        if len(self.tokenizer) > self.model.text_encoder.config.vocab_size:
            raise ValueError(
                f"{what}: tokenizer has {len(self.tokenizer)} tokens, the text encoder "
                f"{self.model.text_encoder.config.vocab_size}"
            )
        self.preprocess = ClipPreprocess(size=vision.image_size)  # ImageReward's _transform: CLIP's recipe

    def text_window(self, prompts: list[str]) -> tuple[list[int], int]:
        """See models.rewards.text_window: ImageReward's MAX_TOKENS."""
        return hf_token_window(self.tokenizer, prompts, MAX_TOKENS)

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """(N,) float64 rewards normalized as the package does, (raw - MEAN) / STD; prompts cut
        at MAX_TOKENS; ValueError if the counts differ."""
        check_batch(images, prompts)
        # Padding to the longest prompt instead of the package's fixed 35 changes nothing: padded
        # positions are masked out of self-attention and the [CLS] feature is read at position 0.
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        raw = self.model(
            self.preprocess(images).to(self.device),
            tokens["input_ids"].to(self.device),
            tokens["attention_mask"].to(self.device),
        )
        return ((raw - MEAN) / STD).cpu().numpy().astype(np.float64)
