"""LAION aesthetic predictor v2 ("improved-aesthetic-predictor", Schuhmann): an MLP on the
L2-normalized CLIP ViT-L/14 (OpenAI) image embedding, predicting a 1-10 rating.

Checkpoint: `sac+logos+ava1-l14-linearMSE.pth`, a bare `torch.save(model.state_dict())` of
`layers = nn.Sequential(Linear(768,1024), Dropout(0.2), Linear(1024,128), Dropout(0.2),
Linear(128,64), Dropout(0.1), Linear(64,16), Linear(16,1))`, so the keys are `layers.{0,2,4,6,7}.
{weight,bias}` (dropouts hold no weights). The original code has its ReLUs commented out, so the
predictor is affine in the embedding; we reproduce that, not a "fixed" version with activations.
ImageReward's reward head is the same module on a 768-d text feature (see imagereward.py).

Spec: `arch` = a self-contained open_clip source of the CLIP (`local-dir:` folder or `hf-hub:` repo
with config and weights, e.g. `hf-hub:timm/vit_large_patch14_clip_224.openai`, which is open_clip's
`ViT-L-14-quickgelu` + `openai`); `pretrained` = the MLP .pth file. Preprocessing is OpenAI CLIP's
(shortest side 224, center crop), shared with the other CLIP rewards.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.rewards.loading import check_batch, create_open_clip, load_state_dict_file
from models.rewards.preprocess import from_open_clip
from models.rewards.registry import REWARDS
from synrank.config import RewardSpec
from synrank.models_io import resolve_model_path

LINEAR_INDICES = (0, 2, 4, 6, 7)  # positions of the Linear layers in the Sequential
DROPOUTS = {1: 0.2, 3: 0.2, 5: 0.1}  # inert at inference, kept so indices and repr match
REAL_SIZES = (768, 1024, 128, 64, 16, 1)


class AestheticMLP(nn.Module):
    """The aesthetic predictor's head, `layers.*` keys as in the original. `sizes` are the in/out
    widths (768, 1024, 128, 64, 16, 1 for the real checkpoint)."""

    def __init__(self, sizes: tuple[int, ...] = REAL_SIZES) -> None:
        super().__init__()
        if len(sizes) != len(LINEAR_INDICES) + 1:
            raise ValueError(f"the aesthetic MLP has {len(LINEAR_INDICES)} linear layers, got sizes {sizes}")
        modules: list[nn.Module] = []
        pairs = iter(zip(sizes[:-1], sizes[1:]))
        for i in range(LINEAR_INDICES[-1] + 1):
            modules.append(nn.Dropout(DROPOUTS[i]) if i in DROPOUTS else nn.Linear(*next(pairs)))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, sizes[0]) features -> (N, sizes[-1]): for the predictor, normalized CLIP embeddings -> ratings."""
        return self.layers(x)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], what: str) -> AestheticMLP:
        """Sizes read from the weights' shapes, then a strict load: a wrong file fails here, naming keys."""
        mlp = cls(mlp_sizes(state, what))
        mlp.load_state_dict(state, strict=True)
        return mlp.eval()


def mlp_sizes(state: dict[str, torch.Tensor], what: str, prefix: str = "") -> tuple[int, ...]:
    """The MLP's layer widths from the shapes of its `{prefix}layers.N.weight` tensors."""
    try:
        sizes = [state[f"{prefix}layers.{i}.weight"].shape[1] for i in LINEAR_INDICES]
        sizes.append(state[f"{prefix}layers.{LINEAR_INDICES[-1]}.weight"].shape[0])
    except KeyError as err:
        raise ValueError(
            f"{what}: no aesthetic-MLP weights (missing {err}; the file has {sorted(state)[:4]}...)"
        ) from None
    return tuple(sizes)


@REWARDS.register("aesthetic")
class Aesthetic:
    """LAION aesthetic predictor v2 (Schuhmann, improved-aesthetic-predictor): the MLP on the normalized
    open_clip image embedding of `spec.arch`, weights from `spec.pretrained`. ValueError if `pretrained` is
    unset or the MLP's input width differs from the CLIP's embedding width."""

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        what = f"reward '{spec.name}'"
        if not spec.pretrained:
            raise ValueError(f"{what} (aesthetic): set `pretrained` to the MLP file (sac+logos+ava1-l14-linearMSE.pth)")
        self.spec, self.device = spec, device
        self.clip, _ = create_open_clip(spec, spec.arch, None, device)
        state = load_state_dict_file(resolve_model_path(spec.pretrained, what), what, spec.allow_pickle)
        self.mlp = AestheticMLP.from_state_dict(state, what).to(device)
        embed_dim = self.clip.visual.output_dim
        if self.mlp.layers[0].in_features != embed_dim:
            raise ValueError(
                f"{what}: the MLP takes {self.mlp.layers[0].in_features}-d embeddings but CLIP "
                f"'{spec.arch}' gives {embed_dim}-d (the real predictor needs ViT-L/14, 768)"
            )
        self.preprocess = from_open_clip(self.clip, fit="crop")

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """(N,) float64 predicted ratings (about 1-10) for N images; prompts are ignored but must number N."""
        check_batch(images, prompts)  # the prompt is not used: aesthetics is image-only
        emb = self.clip.encode_image(self.preprocess(images).to(self.device)).float()
        emb = torch.nn.functional.normalize(emb, dim=-1)
        return self.mlp(emb).squeeze(-1).cpu().numpy().astype(np.float64)
