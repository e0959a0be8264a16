"""Where the shard tasks of `generate` and `score` run: the `engine` fields those two sections share, and the
top-level `cluster` section that says which Ray cluster `engine: ray` uses.

None of these fields changes a single output byte (tests/test_ray.py checks it), so they are left out of the
stages' content fingerprints (`CONTENT_EXCLUDED`): switching engines never invalidates a finished stage.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FanOut(BaseModel):
    """How a stage's shards are run (generate: one task per image shard; score: one per reward x image shard)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    WHOLE_GPUS: ClassVar[bool] = False  # a subclass sets True where a fraction of a GPU makes no sense
    CONTENT_EXCLUDED: ClassVar[frozenset[str]] = frozenset(
        {"engine", "gpus_per_task", "cpus_per_task", "resources", "shards_per_task", "max_retries"}
    )

    engine: Literal["local", "ray"] = Field(
        default="local",
        description="local = one shard after another in this process (no Ray import); ray = one "
        "Prefect task per shard on a Ray cluster (`uv sync --extra ray`; see `cluster`).",
    )
    gpus_per_task: float | None = Field(
        default=None,
        ge=0,
        description="engine ray: GPUs each shard task holds (Ray's num_gpus); null = 1 where the "
        "cluster has GPUs, else 0. Whole numbers for generate; a fraction such as 0.25 packs rewards on one GPU.",
    )
    cpus_per_task: float = Field(default=1.0, ge=0, description="engine ray: CPUs each shard task holds (num_cpus).")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="engine ray: custom Ray resources each task needs, e.g. {a100: 1} to pick "
        "nodes started with `ray start --resources '{\"a100\": 8}'`.",
    )
    shards_per_task: int = Field(
        default=1, ge=1, description="engine ray: shards one task renders or scores (more = fewer, longer tasks)."
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        description="engine ray: times Ray runs a task again whose worker or "
        "node died; its finished shards are kept either way.",
    )

    @field_validator("gpus_per_task")
    @classmethod
    def _whole_gpus(cls, value: float | None) -> float | None:
        if cls.WHOLE_GPUS and value is not None and value != int(value):
            raise ValueError("a whole number of GPUs is needed here (one pipeline holds one or more GPUs)")
        return value


class ClusterConfig(BaseModel):
    """The Ray cluster of `engine: ray` (https://docs.ray.io/en/latest/ray-core/starting-ray.html)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    address: str = Field(
        default="",
        description="host:port of a running cluster's head (`ray start --head`); empty = $RAY_ADDRESS, "
        "else a temporary local Ray with this machine's CPUs and GPUs for the run.",
    )
    num_cpus: int | None = Field(default=None, ge=1, description="Temporary local Ray only: CPUs to offer; null = all.")
    num_gpus: int | None = Field(
        default=None,
        ge=0,
        description="Temporary local Ray only: GPUs to offer; null = those torch sees. More than "
        "there are declares fake GPUs: Ray schedules by the count (for trying GPU placement on a CPU machine).",
    )
    api_url: str = Field(
        default="",
        description="Prefect API URL the Ray workers report task runs to; empty = the driver's own. Set "
        "it when the driver's URL (127.0.0.1) is not reachable from the cluster's nodes.",
    )
