"""What a training run reports, typed: the trainer returns it, the accelerate launcher reads it back from the
main rank's final.json, and the train flow logs its three parts without knowing the trainer's keys."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class TrainResult:
    """metrics: the last logged step's (loss, implicit_acc, grad_norm, ...), `skipped_steps`, drop_tied_groups'
    counts (groups_ranked, groups_all_tied, groups_used) and `heldout_implicit_acc` with a holdout;
    settings: what training really ran with, beside the configured values ("auto" says only who decided):
    mixed_precision, processes, timestep_density[, timestep_shift, timestep_range];
    latents: where the training latents came from (models.train_data): stored by generate, or encoded."""

    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str | float | int] = field(default_factory=dict)
    latents: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """One line of JSON (final.json)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainResult:
        """The result `to_json` wrote."""
        return cls(**json.loads(text))
