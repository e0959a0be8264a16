"""Tiny random reward models of the real architectures, written in the real checkpoint formats (the
reward-model counterpart of `models/tiny.py`), so tests and the benchmark go through exactly the
loading code that the released files use. Each builder returns the `RewardSpec` that loads it.

The checkpoint layouts are written out here independently of the loaders: the aesthetic MLP as its
repository declares it, ImageReward's keys listed by hand from the package's modules. The released HPS,
aesthetic-MLP and ImageReward files are pickles (torch.save), so their specs opt in with allow_pickle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from synrank.config import RewardSpec

HPS_ARCH = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 28, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
IR_WORDS = (
    "a red blue cube cat on table photo of two spheres the and with green dog small large "
    "over under near far left right"
).split()


def build_hps(root: Path, kind: str = "hpsv2", wrapped: bool = True, seed: int = 1) -> RewardSpec:
    """A ViT-H-14-shaped open_clip CLIP, shrunk; saved as HPS does: torch.save({'state_dict': sd})."""
    import open_clip

    root.mkdir(parents=True, exist_ok=True)
    arch = root / "synrank-tiny-hps.json"  # registered under its stem: keep it unlike real names
    arch.write_text(json.dumps(HPS_ARCH))
    torch.manual_seed(seed)
    state = open_clip.CLIP(**HPS_ARCH).state_dict()
    ckpt = root / ("HPS_compressed.pt" if wrapped else "HPS_bare.pt")
    torch.save({"state_dict": state} if wrapped else state, ckpt)
    return RewardSpec(name=kind, kind=kind, arch=str(arch), pretrained=str(ckpt), allow_pickle=True)


def build_pickscore(root: Path, seed: int = 2, logit_scale: float = 100.0) -> RewardSpec:
    """A transformers CLIPModel (save_pretrained) and a CLIPProcessor with CLIP's real BPE vocabulary."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from models.tiny import clip_tokenizer

    torch.manual_seed(seed)
    layer = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
    model = CLIPModel(
        CLIPConfig(
            text_config=dict(layer, vocab_size=49408, max_position_embeddings=77),
            vision_config=dict(layer, image_size=32, patch_size=8),
            projection_dim=16,
        )
    )
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale))  # PickScore's learned exp(scale) is 100, not 1/0.07
    model.save_pretrained(root / "model")
    processor = CLIPProcessor(
        tokenizer=clip_tokenizer(),
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, resample=3
        ),
    )
    processor.save_pretrained(root / "processor")
    return RewardSpec(name="pickscore", kind="pickscore", arch=str(root / "model"), pretrained=str(root / "processor"))


def aesthetic_layers(width: int) -> nn.Module:
    """The predictor's module as improved-aesthetic-predictor defines it (its ReLUs commented out)."""
    holder = nn.Module()
    holder.layers = nn.Sequential(
        nn.Linear(width, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )
    return holder


def build_aesthetic(root: Path, seed: int = 3) -> RewardSpec:
    """A tiny open_clip CLIP (`local-dir:` layout, embed 32) and a matching MLP saved as a bare state_dict."""
    from models.tiny import build_tiny_clip

    clip = build_tiny_clip(root / "clip")
    torch.manual_seed(seed)
    torch.save(aesthetic_layers(32).state_dict(), root / "mlp.pth")
    return RewardSpec(
        name="aesthetic",
        kind="aesthetic",
        arch=f"local-dir:{clip}",
        pretrained=str(root / "mlp.pth"),
        allow_pickle=True,
    )


def imagereward_checkpoint(
    vocab: int,
    width: int = 64,
    depth: int = 2,
    patch: int = 8,
    grid: int = 4,
    hidden: int = 32,
    layers: int = 2,
    max_pos: int = 64,
) -> dict[str, torch.Tensor]:
    """A random state_dict with ImageReward.pt's key layout: BLIP timm ViT, BLIP med.py BERT with
    cross-attention (no token types, no pooler, position_ids buffer), the two ITC projections, the MLP."""
    v, t = "blip.visual_encoder.", "blip.text_encoder."
    shapes: dict[str, tuple[int, ...]] = {
        v + "cls_token": (1, 1, width),
        v + "pos_embed": (1, grid * grid + 1, width),
        v + "patch_embed.proj.weight": (width, 3, patch, patch),
        v + "patch_embed.proj.bias": (width,),
        v + "norm.weight": (width,),
        v + "norm.bias": (width,),
        "blip.vision_proj.weight": (256, width),
        "blip.vision_proj.bias": (256,),
        "blip.text_proj.weight": (256, hidden),
        "blip.text_proj.bias": (256,),
        t + "embeddings.word_embeddings.weight": (vocab, hidden),
        t + "embeddings.position_embeddings.weight": (max_pos, hidden),
        t + "embeddings.LayerNorm.weight": (hidden,),
        t + "embeddings.LayerNorm.bias": (hidden,),
    }
    for i in range(depth):
        b = f"{v}blocks.{i}."
        for name, shape in (("norm1", (width,)), ("norm2", (width,))):
            shapes.update({f"{b}{name}.weight": shape, f"{b}{name}.bias": shape})
        for name, out, inp in (
            ("attn.qkv", 3 * width, width),
            ("attn.proj", width, width),
            ("mlp.fc1", 4 * width, width),
            ("mlp.fc2", width, 4 * width),
        ):
            shapes.update({f"{b}{name}.weight": (out, inp), f"{b}{name}.bias": (out,)})
    for i in range(layers):
        b = f"{t}encoder.layer.{i}."
        for part, kv_in in (("attention", hidden), ("crossattention", width)):
            for name, inp in (
                ("self.query", hidden),
                ("self.key", kv_in),
                ("self.value", kv_in),
                ("output.dense", hidden),
            ):
                shapes.update({f"{b}{part}.{name}.weight": (hidden, inp), f"{b}{part}.{name}.bias": (hidden,)})
            shapes.update({f"{b}{part}.output.LayerNorm.{p}": (hidden,) for p in ("weight", "bias")})
        for name, out, inp in (("intermediate.dense", 4 * hidden, hidden), ("output.dense", hidden, 4 * hidden)):
            shapes.update({f"{b}{name}.weight": (out, inp), f"{b}{name}.bias": (out,)})
        shapes.update({f"{b}output.LayerNorm.weight": (hidden,), f"{b}output.LayerNorm.bias": (hidden,)})
    for i, (inp, out) in zip((0, 2, 4, 6, 7), ((hidden, 1024), (1024, 128), (128, 64), (64, 16), (16, 1))):
        shapes.update({f"mlp.layers.{i}.weight": (out, inp), f"mlp.layers.{i}.bias": (out,)})
    gen = torch.Generator().manual_seed(4)
    state = {
        k: torch.randn(s, generator=gen) * (0.5 if k.endswith("bias") else 1.0) / math.sqrt(s[-1])
        for k, s in shapes.items()
    }
    state[t + "embeddings.position_ids"] = torch.arange(max_pos).unsqueeze(0)
    return state


def build_imagereward(root: Path) -> RewardSpec:
    """The THUDM/ImageReward folder layout (med_config.json + ImageReward.pt) plus a tiny BERT
    WordPiece tokenizer, since the real one (bert-base-uncased) cannot be fetched offline."""
    from transformers import BertTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *IR_WORDS])}
    BertTokenizer(vocab=vocab).save_pretrained(root)
    n_vocab = len(vocab) + 2  # + BLIP's [DEC] and [ENC], as 30522 + 2
    (root / "med_config.json").write_text(
        json.dumps(
            {
                "architectures": ["BertModel"],
                "model_type": "bert",
                "hidden_size": 32,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 64,
                "vocab_size": n_vocab,
                "hidden_act": "gelu",
                "layer_norm_eps": 1e-12,
                "hidden_dropout_prob": 0.1,
                "attention_probs_dropout_prob": 0.1,
                "pad_token_id": 0,
                "type_vocab_size": 2,
                "encoder_width": 768,
                "add_cross_attention": True,
            },
            indent=2,
        )
    )
    torch.save(imagereward_checkpoint(n_vocab), root / "ImageReward.pt")
    return RewardSpec(name="imagereward", kind="imagereward", arch=str(root), allow_pickle=True)
