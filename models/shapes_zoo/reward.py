"""Zoo rewards: tiny open_clip CLIP models trained contrastively on rendered scenes with hard negatives,
saved like tests.fixtures.tiny_models.build_tiny_clip so models/rewards/clipscore.py loads them with `local-dir:`.

A batch is B scenes plus their wrong renders (render_wrong). Each wrong render is itself a correct
(image, caption) pair of its modified spec, so all of them enter one symmetric InfoNCE and every
scene meets its hard negatives in both directions (its image vs the wrong captions, its caption vs
the wrong images). A second term, the softmax of each image over only its own caption and its wrong
captions, keeps the hard negatives from being diluted by the easy in-batch ones. Identical captions
in a batch (there are few single-object prompts) are positives of each other, not negatives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import Pool, batch_indices
from .train_utils import lr_at, optimizer_step, seed_all, set_lr

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's normalisation, as the saved preprocess_cfg says
STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS = {"mean": list(MEAN), "std": list(STD), "interpolation": "bicubic", "resize_mode": "shortest"}


@dataclass(frozen=True)
class RewardConfig:
    """One zoo reward's open_clip architecture (32 px images, 77-token context) and contrastive training
    recipe (module docstring); logged in its zoo.json entry and model card."""

    name: str
    vision_width: int = 64
    vision_layers: int = 3
    patch_size: int = 4
    text_width: int = 16  # the 49408-row token embedding is most of the file: width is kept narrow
    text_layers: int = 3
    embed_dim: int = 32
    kinds: tuple[str, ...] = ("count", "color", "relation", "shape")  # hard-negative kinds used
    steps: int = 400
    batch_size: int = 32  # scenes per step; their valid wrong renders come on top
    lr: float = 1e-3
    hard_weight: float = 1.0
    seed: int = 0

    def model_cfg(self) -> dict:
        """open_clip's model config (embed_dim, vision_cfg, text_cfg) of this architecture, saved as `model_cfg`
        in the reward folder's open_clip_config.json."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": 32,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "patch_size": self.patch_size,
                "head_width": 32,
            },
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": max(2, self.text_width // 8),
                "layers": self.text_layers,
            },
        }

    def as_dict(self) -> dict:
        """The config as a plain dict, for zoo.json."""
        return asdict(self)


def pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> normalised (N, 3, 32, 32), what open_clip's preprocess gives at 32 px."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).movedim(-1, 1)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def _group_batch(pool: Pool, idx: np.ndarray, kinds: tuple[str, ...]):
    """Images, captions and, per scene, the positions of its own and its wrong captions in the batch."""
    use = [pool.kinds.index(k) for k in kinds]
    images, captions, groups = [pool.images[idx]], list(pool.captions[i] for i in idx), []
    extra_images = []
    for row, i in enumerate(idx):
        members = [row]
        for k in use:
            if pool.neg_valid[i, k]:
                members.append(len(idx) + len(extra_images))
                extra_images.append(pool.neg_images[i, k])
                captions.append(pool.neg_captions[i][k])
        groups.append(members)
    if extra_images:
        images.append(np.stack(extra_images))
    return np.concatenate(images), captions, groups


def _contrastive_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    scale: torch.Tensor,
    captions: list[str],
    groups: list[list[int]],
    hard_weight: float,
) -> torch.Tensor:
    logits = scale * img @ txt.T
    ids = {c: n for n, c in enumerate(dict.fromkeys(captions))}
    cap = torch.tensor([ids[c] for c in captions])
    same = (cap[:, None] == cap[None, :]).float()
    target = same / same.sum(1, keepdim=True)  # symmetric in both directions since `same` is
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    hard = [logits[g[0], g] for g in groups if len(g) > 1]  # own caption first, then its wrong ones
    if hard and hard_weight > 0:
        hard_loss = torch.stack([F.cross_entropy(h[None], torch.zeros(1, dtype=torch.long)) for h in hard]).mean()
        loss = loss + hard_weight * hard_loss
    return loss


def contrastive_train(
    model: torch.nn.Module,
    tokenize: Callable[[list[str]], torch.Tensor],
    pool: Pool,
    kinds: tuple[str, ...],
    steps: int,
    batch_size: int,
    lr: float,
    hard_weight: float,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> torch.nn.Module:
    """Train any model with encode_image(pixels), encode_text(ids) and a logit_scale parameter."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    rng = np.random.default_rng([seed, 5])
    batches = batch_indices(len(pool), batch_size, rng)
    model.train()
    for step in range(steps):
        set_lr(opt, lr_at(step, steps, lr, warmup=max(1, steps // 20)))
        images, captions, groups = _group_batch(pool, next(batches), kinds)
        img = F.normalize(model.encode_image(pixels(images)), dim=-1)
        txt = F.normalize(model.encode_text(tokenize(captions)), dim=-1)
        loss = _contrastive_loss(img, txt, model.logit_scale.exp().clamp(max=100), captions, groups, hard_weight)
        optimizer_step(opt, loss, model.parameters())
        if progress:
            progress(step, float(loss.detach()))
    return model.eval().requires_grad_(False)


def train_reward(cfg: RewardConfig, pool: Pool, progress: Callable[[int, float], None] | None = None):
    """An open_clip.CLIP trained on the pool (which must carry negatives of every kind in cfg.kinds)."""
    import open_clip

    seed_all(cfg.seed)
    model = open_clip.CLIP(**cfg.model_cfg())
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the default SimpleTokenizer, what local-dir: gives
    return contrastive_train(
        model, tokenizer, pool, cfg.kinds, cfg.steps, cfg.batch_size, cfg.lr, cfg.hard_weight, cfg.seed, progress
    )


def save_reward(folder: Path, model, cfg: RewardConfig) -> Path:
    """open_clip_config.json + open_clip_model.safetensors (fp16; open_clip copies them into fp32 params)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": cfg.model_cfg(), "preprocess_cfg": PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder
