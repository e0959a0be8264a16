"""The sections of params.yaml as typed pydantic models: one per stage (`sample` ... `evaluate`), the commands'
own (`export`, `online`, `study`), the shared `paths` and `tracking`, and `Config`, the whole file.

Every model forbids unknown keys, so a typo is an error that names the key. Loading, overrides and the flows'
parameters are in synrank.config, which re-exports every name defined here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from synrank.cluster_config import ClusterConfig, FanOut
from synrank.config_base import CODE_ROOT, FileName, Strict
from synrank.generator_presets import PRESETS
from synrank.plugins import plugin_key
from synrank.train_config import ObjectiveName, TrainConfig

BackendName = plugin_key("generator backend", "a generator backend")
RewardKind = plugin_key("reward kind", "a reward kind")
BenchmarkName = plugin_key("benchmark", "a registered benchmark")
ObjectiveOrBase = plugin_key("objective", "a registered objective (or empty for the untrained base)", "")


def project_root(start: Path | None = None) -> Path:
    """The project a command works on: the nearest folder from `start` (the current one) upward that holds
    params.yaml, else synrank's own checkout. Where the user stands, not where the package is installed:
    `dvc exp run --temp` / `--queue` run each stage in a copy of the repository (.dvc/tmp/exps/...), and
    that copy's params.yaml, data and outputs are the experiment's."""
    here = (start or Path.cwd()).resolve()
    return next((d for d in (here, *here.parents) if (d / "params.yaml").is_file()), CODE_ROOT)


# The project's params.yaml, data and outputs (every relative path in it counts from here).
ROOT = project_root()
# The user's checkout, where the stores that outlive a run live (MLflow's default database, Prefect's
# home): the repository that started a DVC experiment ($DVC_ROOT, which DVC sets for every stage command
# and points at the parent repository in a temporary copy), else ROOT.
WORKSPACE = Path(os.environ.get("DVC_ROOT") or ROOT).resolve()


class Paths(Strict):
    """Where each stage writes; all relative paths are resolved against the project root."""

    data: str = Field(default="data", description="Versioned inputs (data.dvc): prompt files, benchmark lists.")
    prompts: str = Field(default="outputs/prompts", description="sample writes prompts.parquet here.")
    images: str = Field(default="outputs/images", description="generate writes shards and manifest.parquet here.")
    scores: str = Field(default="outputs/scores", description="score writes scores.parquet here.")
    rankings: str = Field(default="outputs/rankings", description="rank writes rankings.parquet here.")
    model: str = Field(default="outputs/model", description="train writes the tuned weights and tuned.json here.")
    eval: str = Field(default="outputs/eval", description="evaluate writes its images, scores and grids here.")
    metrics: str = Field(default="metrics", description="evaluate.json and the DVC plot files.")
    dataset: str = Field(default="outputs/dataset", description="export writes the ranked dataset here.")
    ingested: str = Field(
        default="outputs/ingested",
        description="ingest writes prompts, manifest, shards and rankings here (point prompts, images and "
        "rankings at it to train on them).",
    )
    runs: str = Field(
        default="outputs/runs",
        description="A run from the Prefect UI or API whose settings differ from the deployed params.yaml is an "
        "experiment: it writes here, in a folder named after the flow run, never into the workspace's outputs.",
    )

    def resolve(self, name: str) -> Path:
        """The absolute folder of the field `name` (e.g. "images"): relative paths count from ROOT."""
        p = Path(getattr(self, name))
        return p if p.is_absolute() else ROOT / p


class PromptSource(Strict):
    """One prompt file (or folder) of the sample stage, its format, split and category filter."""

    path: str = Field(
        description="File with prompts (or, for t2i-compbench and dpg-bench, a folder), relative "
        "to the project root or absolute."
    )
    format: Literal["auto", "text", "jsonl", "geneval", "partiprompts", "t2i-compbench", "dpg-bench"] = Field(
        default="auto",
        description="t2i-compbench: <category>_val.txt / <category>_train.txt, one prompt a line, "
        "or a folder of <category>_val.txt; dpg-bench: a folder of <id>.txt, one prompt each.",
    )
    limit: int | None = Field(default=None, ge=1, description="Keep at most this many good prompts.")
    split: Literal["auto", "train", "eval"] = Field(
        default="auto", description="auto = the seeded split; train/eval pins the whole file (held-out sets)."
    )
    categories: list[str] = Field(
        default_factory=list,
        description="Keep only prompts of these categories "
        "(a GenEval tag, a T2I-CompBench or PartiPrompts category); empty = all. "
        "The others are counted as other_category.",
    )


class SampleConfig(Strict):
    """Stage 1 (sample): the prompt files read, and the seeded train/eval split of their prompts."""

    sources: list[PromptSource] = Field(
        default_factory=lambda: [PromptSource(path="data/prompts/train.txt")],
        description="Prompt files read in order; a prompt seen before is a duplicate.",
    )
    eval_fraction: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="Share of split=auto prompts held out for eval (0-1)."
    )
    seed: int = Field(default=0, description="Seed of the train/eval split.")
    max_prompt_chars: int = Field(
        default=2000,
        ge=1,
        description="Longer prompts (in characters, after "
        "cleaning) are dropped and counted as too_long: no text encoder reads that "
        "far, and one runaway line must not bloat every later table.",
    )


class GeneratorSpec(Strict):
    """One text-to-image model: a diffusers pipeline (or another registered backend) and its sampling settings.
    `preset` fills in a published model's card (synrank.generator_presets); any field set here wins. An entry
    without a preset names its path, steps, height and width: nothing falls back to a size nobody chose."""

    model_config = ConfigDict(json_schema_extra=lambda schema: schema.pop("required", None))

    name: FileName = Field(description="Short name used in manifests, MLflow and file names: letters, digits, . _ -.")
    preset: Literal[("", *PRESETS)] = Field(  # type: ignore[valid-type]
        default="",
        description="A published model's settings: "
        + "; ".join(f"{k} = {p.path}, {p.steps} steps, {p.height}x{p.width}, {p.dtype}" for k, p in PRESETS.items())
        + ". Empty = set path, steps, height and width here.",
    )
    backend: BackendName = Field(default="diffusers", description="Key in the generator registry.")
    path: str = Field(description="Hugging Face id or local folder of a diffusers pipeline.")
    steps: int = Field(ge=1, description="Denoising steps per image.")
    guidance: float = Field(default=5.0, description="Classifier-free guidance scale; 1 = none.")
    height: int = Field(ge=8, description="Image height in pixels.")
    width: int = Field(ge=8, description="Image width in pixels.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="Weights dtype for inference."
    )
    lora: str = Field(default="", description="Optional folder with LoRA weights to load on top.")
    images_per_prompt: int | None = Field(
        default=None,
        ge=1,
        description="Images per prompt from this generator; empty = generate.images_per_prompt. Groups of "
        "8 from the base alone are on-policy; 4 from the base plus 1 from each other generator, half-and-half.",
    )
    allow_pickle: bool = Field(
        default=False,
        description="Also load pickled weight files (.bin/.pt/.ckpt) of "
        "this model and its LoRA; they can run code when loaded. Off: safetensors only.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        """The preset's fields under the entry's own; an entry without one must name its size and steps."""
        if not isinstance(data, dict):
            return data
        preset = PRESETS.get(str(data.get("preset") or ""))
        if preset is not None:
            return {**preset.fields(), **data}
        missing = [k for k in ("path", "steps", "height", "width") if k not in data]
        if missing and not data.get("preset"):
            raise ValueError(
                f"generator {data.get('name', '?')!r} names no preset ({', '.join(PRESETS)}) and no "
                f"{', '.join(missing)}: set a preset or every one of path, steps, height and width"
            )
        return data


class GenerateConfig(FanOut):
    """Stage 2 (generate): the generators, images per prompt, batching, shards and where they are stored."""

    WHOLE_GPUS: ClassVar[bool] = True  # a diffusion pipeline gets a GPU (or more) to itself
    # Defaults to empty (validate_config refuses that where a command needs generators) so that a partial
    # parameter from the Prefect API, {"batch_size": 2}, passes the server's schema check and keeps the
    # deployment's generators (synrank.deployment_params).
    generators: list[GeneratorSpec] = Field(
        default_factory=list, description="Every train prompt is rendered by each; at least one."
    )
    images_per_prompt: int = Field(
        default=1, ge=1, description="Images per prompt and generator, one seed each (a generator may set its own)."
    )
    batch_size: int = Field(default=8, ge=1, description="Images per pipeline call.")
    shard_size: int = Field(default=256, ge=1, description="Images per tar shard (the unit of resume).")
    seed: int = Field(default=0, description="Base of the per-image seeds.")
    device: str = Field(default="auto", description="auto = cuda, then mps, then cpu; or a torch device.")
    store: str = Field(
        default="",
        description="Where image shards go: empty = the images folder; "
        "s3://bucket/prefix = S3 (endpoint from AWS_ENDPOINT_URL_S3).",
    )

    def images_of(self, spec: GeneratorSpec) -> int:
        """Images per prompt that `spec` renders: its own images_per_prompt, else the section's."""
        return spec.images_per_prompt or self.images_per_prompt

    def group_size(self) -> int:
        """K, the images of one prompt over all generators."""
        return sum(self.images_of(g) for g in self.generators)


class RewardSpec(Strict):
    """One reward model: its registry kind and the weights (architecture and checkpoint) it loads."""

    name: FileName = Field(
        description="Short name used in score tables, MLflow and file names: letters, digits, . _ -."
    )
    kind: RewardKind = Field(default="clipscore", description="Key in the reward registry.")
    arch: str = Field(
        default="ViT-B-32",
        description="What the kind reads first. clipscore, hpsv2, hpsv2.1: an open_clip architecture (ViT-H-14 "
        "for HPS), a local-dir:/hf-hub: folder or a model-config JSON; aesthetic: an open_clip source of "
        "CLIP ViT-L/14 (e.g. hf-hub:timm/vit_large_patch14_clip_224.openai); pickscore: the PickScore model "
        "folder or hub id (yuvalkirstain/PickScore_v1); imagereward: the folder or hub id of THUDM/ImageReward "
        "(ImageReward.pt, med_config.json); vqascore: the t2v_metrics model name (clip-flant5-xxl); mps: the "
        "processor (laion/CLIP-ViT-H-14-laion2B-s32B-b79K); shapes-detector, shapes-verifier: unused.",
    )
    pretrained: str = Field(
        default="",
        description="What the kind reads second. clipscore: an open_clip pretrained tag or checkpoint file; "
        "hpsv2, hpsv2.1: the HPS checkpoint (HPS_v2.1_compressed.pt); aesthetic: the MLP file "
        "(sac+logos+ava1-l14-linearMSE.pth); pickscore: the processor folder or hub id (empty: the model "
        "folder's, else laion/CLIP-ViT-H-14-laion2B-s32B-b79K); imagereward: the checkpoint file if not "
        "<arch>/ImageReward.pt; mps: MPS_overall_checkpoint.pth.",
    )
    allow_pickle: bool = Field(
        default=False,
        description="Also load pickled checkpoints (.pt/.pth/.bin, e.g. the "
        "released HPS, aesthetic and ImageReward files); they can run code when loaded. "
        "Off: safetensors only.",
    )


class ScoreConfig(FanOut):
    """Stage 3 (score): the reward models every image is scored by, and their batch size and device."""

    rewards: list[RewardSpec] = Field(
        default_factory=list,
        description="Every image is scored by each; at least "
        "one (empty only in a partial parameter, see GenerateConfig.generators).",
    )
    batch_size: int = Field(default=32, ge=1, description="Images per reward forward pass.")
    device: str = Field(default="auto", description="auto = cuda, then mps, then cpu; or a torch device.")
    oracle: bool = Field(
        default=False,
        description="Diagnosis runs only: allow the shapes-verifier reward (the geneval-shapes benchmark's own "
        "judge) next to that benchmark. Off, such a config is refused: its labels would leak the benchmark.",
    )


class RankConfig(Strict):
    """Stage 4 (rank): how the per-reward scores become one ranking (phi) per prompt."""

    method: Literal["algorithm1", "bradley_terry", "zscore"] = Field(
        default="algorithm1", description="How per-reward scores become one phi per image."
    )
    examples: int = Field(default=4, ge=0, description="Prompts shown ranked in the run's example grid.")
    complete_groups: bool = Field(
        default=False,
        description="Leave out a prompt whose group lost an image (no score from some reward, or a non-finite "
        "one) instead of ranking the rest; either way the report counts them.",
    )
    rewards: list[str] = Field(
        default_factory=list, description="Rank with only these reward models (names in score.rewards); empty = all."
    )


class ExportConfig(Strict):
    """`synrank export`: the ranked images as a Hugging Face dataset folder (Syn-Pic's layout)."""

    rows_per_shard: int = Field(default=5000, ge=1, description="Images per parquet file.")
    name: str = Field(default="synrank-synpic", description="Dataset name in its card.")


class IngestConfig(Strict):
    """`synrank ingest`: preference data made elsewhere, as the prompts, images and rankings train reads."""

    source: str = Field(
        default="",
        description="A parquet file or a folder of them (a Hugging Face datasets folder): Pick-a-Pic-style pairs "
        "(caption, jpg_0, jpg_1, label_0 with 0.5 = tie) or synrank's own export; relative to the project.",
    )
    max_rows: int | None = Field(default=None, ge=1, description="Read only the first N rows; null = all.")
    shard_size: int = Field(default=256, ge=1, description="Images per tar shard.")

    def resolved_source(self) -> Path:
        """`source` as an absolute path (relative ones count from the project root)."""
        p = Path(self.source)
        return p if p.is_absolute() else ROOT / p


class EvaluateConfig(Strict):
    """Stage 6 (evaluate): the held-out prompts, images per prompt, benchmarks and the image grid."""

    images_per_prompt: int = Field(
        default=16,
        ge=1,
        description=(
            "Images per eval prompt, one seed each, the same seeds for every model. The benchmark CIs and the "
            "paired difference resample prompts, not images, so more images sharpen each prompt's pass rate "
            "without inflating n."
        ),
    )
    max_prompts: int | None = Field(
        default=None, ge=1, description="Evaluate only the first N eval prompts; null = all."
    )
    seed: int = Field(default=1234, description="Base of the eval seeds, the same for every model.")
    grid_prompts: int = Field(
        default=2,
        ge=0,
        description="Prompts per task (prompt category) shown in the base-vs-tuned image grid; 0 = no grid.",
    )
    benchmarks: list[BenchmarkName] = Field(
        default_factory=lambda: ["geneval-shapes"],
        description="Benchmarks (geneval-shapes; geneval: Mask2Former, as published; geneval-owlv2: OWLv2 in its "
        "place, not comparable with published scores; t2i-compbench; dpg-bench: BLIP-VQA for mPLUG), each run "
        "on the eval prompts it applies to; one whose scorer weights are absent is refused at config validation.",
    )
    all_generators: bool = Field(default=True, description="Also put every other generator on the benchmarks.")


class OnlineConfig(Strict):
    """GPO-style online self-improvement: each round samples G images per prompt from the current model,
    scores and ranks them, trains on those groups, evaluates, and the tuned model starts the next round."""

    rounds: int = Field(default=2, ge=1, description="Rounds of generate, score, rank, train, evaluate.")
    images_per_prompt: int = Field(default=4, ge=2, description="G, the group size per prompt.")
    objective: ObjectiveName = Field(default="gpo", description="Key in the objective registry.")


class StudyArm(Strict):
    """One row of the study: an objective (empty = the untrained base) and the rewards its ranking uses."""

    name: str = Field(description="Row name in the study table and the MLflow tag `method`.")
    objective: ObjectiveOrBase = Field(
        default="", description="Key in the objective registry; empty = the untrained base."
    )
    rewards: list[str] = Field(
        default_factory=list, description="Rank the shared images with only these rewards; empty = all of them."
    )


def _default_arms() -> list[StudyArm]:
    return [StudyArm(name="base"), *(StudyArm(name=o, objective=o) for o in ("sft", "dpo", "rankdpo", "gpo", "sudo"))]


class StudyConfig(Strict):
    """`synrank study`: every arm trained from the same ranked data with `train`'s settings, once per seed,
    and evaluated on the same held-out prompts and noise, so that all differences are paired."""

    arms: list[StudyArm] = Field(default_factory=_default_arms, min_length=2, description="Rows of the study table.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, description="Training seeds per arm.")
    reference: str = Field(default="rankdpo", description="Arm every other arm is also compared with.")
    benchmark: BenchmarkName = Field(
        default="geneval-shapes",
        description="Benchmark of the table (pass/fail, or graded: the mean score stands in for accuracy).",
    )
    out: str = Field(default="outputs/study", description="Folder of the study's runs and table.")


class TrackingConfig(Strict):
    """The MLflow store and experiment every run is logged to."""

    experiment: str = Field(default="synrank", description="MLflow experiment of every run.")
    tracking_uri: str = Field(default="", description="Empty = $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db.")
    register_model: bool = Field(
        default=True,
        description="Register each tuned model as a new version of synrank-<base> in the MLflow model registry. "
        "Off (smoke and trial runs): the model is still logged to its run, and the registry gets no version.",
    )


class Config(Strict):
    """The whole of params.yaml: every section, each with its defaults."""

    paths: Paths = Field(default_factory=Paths, description="Where each stage reads and writes.")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="Stage 1: prompts and their split.")
    generate: GenerateConfig = Field(
        default_factory=GenerateConfig, description="Stage 2: the text-to-image models and images per prompt."
    )
    score: ScoreConfig = Field(default_factory=ScoreConfig, description="Stage 3: the reward models.")
    rank: RankConfig = Field(default_factory=RankConfig, description="Stage 4: how the rewards become a ranking.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Stage 5: preference fine-tuning.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Stage 6: held-out benchmarks.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="`synrank export` only.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="`synrank ingest` only.")
    online: OnlineConfig = Field(default_factory=OnlineConfig, description="`synrank online` only.")
    study: StudyConfig = Field(default_factory=StudyConfig, description="`synrank study` only.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow store and experiment.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="The Ray cluster of engine: ray.")
