"""What train() settles before it loads a model: a mixed precision that really takes effect, and ranked
groups that a preference can be learned from. Either problem stops the run with one line that names it,
before anything is loaded or written.

- Mixed precision: `auto` leaves it to accelerate (an `accelerate launch` config or ACCELERATE_MIXED_PRECISION,
  else "no"); an explicit value overrides that. accelerate turns fp16 on a CPU into a silent no-op (no
  autocast, fp32 losses bit-identical to "no"), so it is refused there; bf16 on a CPU does autocast
  (losses differ from "no") and is kept. What accelerate ends up using is reported (`effective`).
- Ties: a group whose images all got the same label (phi; GPO's advantage) orders no pair. Every objective
  that reads labels drops such groups: rankdpo, dpo and gpo form no pair from them (zero loss, a diluted
  batch); rwr gives them zero weight; sft would denoise an arbitrary "best" (the first of equals), not a
  winner. SUDO ignores labels (its pairs are dataset image vs. a batch mate) and keeps every group. With
  no group left, training stops (NothingToLearnError) instead of saving an all-zero LoRA.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


class PrecisionError(ValueError):
    """A mixed precision that accelerate would accept but not apply; raised before the model loads."""


class NothingToLearnError(ValueError):
    """No ranked group orders a pair of images; raised before the model loads."""


def make_accelerator(mixed_precision: str, grad_accum: int) -> Any:
    """accelerate's Accelerator as train() uses it; mixed_precision "auto" passes None (accelerate decides).
    Refuses, with PrecisionError, a precision that cannot take effect on the device, before building it
    when it can tell (fp16 on a CPU), else right after (accelerate enabled no autocast for it)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, parse_choice_from_env

    chosen = None if mixed_precision == "auto" else mixed_precision
    wanted = chosen or parse_choice_from_env("ACCELERATE_MIXED_PRECISION", "no")
    # Not PartialState() before the Accelerator: on a CPU it would fix every launched rank as a
    # single-process job (DistributedType.NO) instead of accelerate's MULTI_CPU.
    on_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    if wanted == "fp16" and on_cpu:
        raise PrecisionError(_refusal("fp16", "cpu", chosen))
    # cpu=True on a machine without an accelerator: launched ranks then form one MULTI_CPU (gloo) job.
    accelerator = Accelerator(mixed_precision=chosen, gradient_accumulation_steps=grad_accum, cpu=on_cpu)
    self_managed = (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)  # they apply precision themselves
    if (
        accelerator.mixed_precision != "no"
        and not accelerator.native_amp
        and accelerator.distributed_type not in self_managed
    ):
        raise PrecisionError(_refusal(accelerator.mixed_precision, accelerator.device.type, chosen))
    return accelerator


def _refusal(precision: str, device: str, chosen: str | None) -> str:
    source = "" if chosen else " (from accelerate's config / ACCELERATE_MIXED_PRECISION, as mixed_precision 'auto')"
    return (
        f"train: mixed_precision '{precision}'{source} cannot take effect on {device} (accelerate runs fp32 "
        "there); use 'no' or 'bf16'"
    )


def drop_tied_groups(ranked: pd.DataFrame, obj: Any) -> tuple[pd.DataFrame, dict[str, float]]:
    """(ranked without the prompts whose images all tie on the objective's label, counts). A group is a
    prompt with at least 2 images (build_groups drops the others). Counts: groups_ranked, groups_all_tied,
    groups_used (the groups training and the holdout draw from). Objectives without labels (SUDO) keep
    every group. Raises NothingToLearnError when no group is left. Unchanged (the same frame) when no
    group ties, so a run without ties trains exactly as before."""
    label = getattr(obj, "label", "phi")
    label = label if label in ranked else "phi"  # a missing column is reported where the label is read
    sizes = ranked.groupby("prompt_id")["image_id"].transform("size")
    groups = ranked[sizes >= 2]
    n_groups = groups["prompt_id"].nunique()
    tied_rows = groups.groupby("prompt_id")[label].transform("nunique") <= 1
    tied = set(groups.loc[tied_rows, "prompt_id"])
    drop = not obj.self_pairs and bool(tied)
    counts = {
        "groups_ranked": float(n_groups),
        "groups_all_tied": float(len(tied)),
        "groups_used": float(n_groups - len(tied) if drop else n_groups),
    }
    if n_groups == 0:
        raise NothingToLearnError("train: no prompt has 2 or more ranked images; nothing to learn from")
    if not obj.self_pairs and len(tied) == n_groups:
        raise NothingToLearnError(
            f"train: all {n_groups} ranked groups tie (every image of a prompt got the same "
            f"{label}); nothing to learn from"
        )
    return (ranked[~ranked["prompt_id"].isin(tied)] if drop else ranked), counts
