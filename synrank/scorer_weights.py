"""The weights each benchmark's scorer loads: the published models by default, another folder (saved with
save_pretrained) or hub id through an environment variable. One table for the scorers (models/benchmarks),
the evaluate stage's fingerprint, which holds the weights' content (synrank.stamp: new weights under the same
name make evaluate stale), and its MLflow run, which logs their locations as params (`scorers.<key>`).

Pure data, so that the stamp loads no model code. Scorer weights load from safetensors only; a pickled file
(.bin, .pt) is refused unless $SYNRANK_SCORER_ALLOW_PICKLE=1 (it can run code when loaded)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ALLOW_PICKLE_ENV = "SYNRANK_SCORER_ALLOW_PICKLE"


@dataclass(frozen=True)
class ScorerWeights:
    """One model a benchmark's scorer loads."""

    role: str  # e.g. "GenEval detector (OWLv2)"
    env: str  # the variable that points it elsewhere
    default: str  # the published weights (hub id)

    def path(self, environ: Mapping[str, str] = os.environ) -> str:
        """Where the weights are: $env, else the published ones."""
        return environ.get(self.env) or self.default


# GenEval's color classifier is CLIP ViT-L/14 (OpenAI's weights); OWLv2 is GenEval's substitute detector.
GENEVAL_CLIP = ScorerWeights("GenEval color classifier (CLIP)", "SYNRANK_GENEVAL_CLIP", "openai/clip-vit-large-patch14")
OWLV2 = ScorerWeights(
    "OWLv2 detector (T2I-CompBench spatial, geneval-owlv2)",
    "SYNRANK_GENEVAL_OWLV2",
    "google/owlv2-base-patch16-ensemble",
)
SCORERS: dict[str, dict[str, ScorerWeights]] = {
    # GenEval's own detector family: Mask2Former with a Swin-S backbone, COCO instance segmentation.
    "geneval": {
        "detector": ScorerWeights(
            "GenEval detector (Mask2Former)",
            "SYNRANK_GENEVAL_MASK2FORMER",
            "facebook/mask2former-swin-small-coco-instance",
        ),
        "color": GENEVAL_CLIP,
    },
    "geneval-owlv2": {"detector": OWLV2, "color": GENEVAL_CLIP},
    "t2i-compbench": {
        "blip": ScorerWeights("T2I-CompBench BLIP-VQA", "SYNRANK_T2I_BLIP", "Salesforce/blip-vqa-base"),
        "clip": ScorerWeights("T2I-CompBench CLIP", "SYNRANK_T2I_CLIP", "openai/clip-vit-base-patch32"),
        "owlv2": OWLV2,
        # 3d_spatial's depth model, in place of the reference's: relative inverse depth, safetensors.
        "depth": ScorerWeights(
            "T2I-CompBench depth (Depth Anything V2)", "SYNRANK_T2I_DEPTH", "depth-anything/Depth-Anything-V2-Small-hf"
        ),
    },
    # DPG-Bench's questions answered by BLIP-VQA in place of the reference's mPLUG-large (modelscope).
    "dpg-bench": {
        "vqa": ScorerWeights("DPG-Bench VQA (BLIP-VQA)", "SYNRANK_DPG_VQA", "Salesforce/blip-vqa-base"),
    },
}


def chosen(benchmarks: list[str], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`<benchmark>.<part>` -> the weights' location, for the scorers these benchmarks load."""
    return {f"{b}.{k}": w.path(environ) for b in benchmarks for k, w in SCORERS.get(b, {}).items()}


def pickle_allowed(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether $SYNRANK_SCORER_ALLOW_PICKLE allows pickled scorer weights."""
    return environ.get(ALLOW_PICKLE_ENV, "") not in ("", "0", "false")
