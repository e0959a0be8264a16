"""params.yaml's `train` section: the preference objective, optimizer, schedule, timestep sampling, data
parallelism and checkpointing of the fine-tune (re-exported by synrank.config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synrank.config_base import Strict
from synrank.plugins import plugin_key

ObjectiveName = plugin_key("objective", "a registered objective")


class LaunchConfig(Strict):
    """How the train stage starts its processes with `accelerate launch` when there are several (train.processes
    > 1, or several machines): accelerate's machine settings. With machines > 1 this machine is machine 0, and
    the stage prints the command each other machine runs (the same job file: the work folder must be shared)."""

    machines: int = Field(
        default=1, ge=1, description="Machines (accelerate's num_machines); train.processes run on each."
    )
    main_address: str = Field(
        default="",
        description="Host name or IP of machine 0 that the other machines reach (accelerate's main_process_ip); "
        "needed when machines > 1.",
    )
    main_port: int = Field(default=29500, ge=1, le=65535, description="Port on main_address for the rendezvous.")
    config_file: str = Field(
        default="",
        description="An accelerate config file (configs/accelerate/) for what synrank does not set itself: its "
        "distributed type and plugins, and its mixed precision when train.mixed_precision is auto. The process "
        "and machine counts are synrank's. Empty = data parallel over all GPUs (accelerate's --multi_gpu).",
    )


class TrainConfig(Strict):
    """Stage 5 (train): the preference objective, optimizer, timestep sampling and checkpointing of the fine-tune."""

    base: str = Field(default="", description="Generator name to tune; empty = the first generator.")
    objective: ObjectiveName = Field(default="rankdpo", description="Key in the objective registry.")
    beta: float = Field(default=2500.0, gt=0, description="logit = -beta*(s_w - s_l); = Diffusion-DPO's beta/2.")
    learning_rate: float = Field(default=1e-4, gt=0, description="AdamW learning rate (peak, with a schedule).")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        default="constant",
        description="Learning-rate schedule over train.steps (diffusers' get_scheduler), after lr_warmup_steps "
        "of linear warmup.",
    )
    lr_warmup_steps: int = Field(default=0, ge=0, description="Steps of linear warmup from 0 to learning_rate.")
    scale_lr: bool = Field(
        default=False,
        description="Multiply learning_rate by the global batch in prompt groups (prompts_per_step x grad_accum), "
        "as diffusers' --scale_lr.",
    )
    steps: int = Field(
        default=100,
        ge=1,
        description="Optimizer updates (as diffusers' max_train_steps); each "
        "adds up the gradients of grad_accum micro-batches of prompts_per_step prompt groups.",
    )
    prompts_per_step: int = Field(
        default=4, ge=1, description="Prompt groups (all ranked images of a prompt) per micro-batch."
    )
    grad_accum: int = Field(
        default=1, ge=1, description="Micro-batches whose gradients add up into one optimizer update (one step)."
    )
    processes: int = Field(
        default=1,
        ge=1,
        description="Data-parallel training processes per machine (one per GPU; gloo on a CPU). More than 1: "
        "the train stage runs `accelerate launch` itself and splits each micro-batch's prompts_per_step groups "
        "among all processes of all machines (their number must divide prompts_per_step), so the run is the "
        "one-process run at the same batch.",
    )
    launch: LaunchConfig = Field(
        default_factory=LaunchConfig, description="Machines and accelerate settings of a multi-process launch."
    )
    lora_rank: int = Field(default=8, ge=0, description="0 = full fine-tune with a frozen reference copy.")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        default="auto",
        description="auto = accelerate's own setting (`accelerate launch` config or "
        "ACCELERATE_MIXED_PRECISION; 'no' without either); an explicit value overrides it. One that cannot take "
        "effect (fp16 on a CPU, where accelerate runs fp32) is refused before the model loads.",
    )
    timestep_density: Literal["auto", "uniform", "shifted", "logit_normal", "mode"] = Field(
        default="auto",
        description="Flow-matching (SD3) sigma sampling: logit_normal = sigmoid(N(logit_mean, "
        "logit_std)), mode = SD3's mode density (mode_scale), shifted = uniform; each then through the timestep "
        "shift s -> shift*s/(1+(shift-1)*s). uniform = plain U(0,1) sigma, unshifted. auto = logit_normal "
        "(SD3's recipe, median sigma 0.75 at shift 3) for flow matching; epsilon/v-prediction UNets always draw "
        "discrete timesteps uniformly and refuse any other value.",
    )
    logit_mean: float = Field(default=0.0, description="timestep_density logit_normal: mean of the normal.")
    logit_std: float = Field(default=1.0, gt=0, description="timestep_density logit_normal: std of the normal.")
    mode_scale: float = Field(
        default=1.29,
        ge=-1.0,
        le=1.75,
        description="timestep_density mode: SD3's scale s (monotone for -1 <= s <= 2/(pi-2)).",
    )
    flow_shift: float | None = Field(
        default=None,
        gt=0,
        description="Flow-matching timestep shift; None = the "
        "scheduler's `shift` (3.0 for SD3; 1 for dynamic shifting). 1 = no shift.",
    )
    snr_gamma: float | None = Field(
        default=None,
        gt=0,
        description="Min-SNR-gamma loss weighting (Hang et al. "
        "2023; diffusers' --snr_gamma, 5.0 is the usual value): each timestep's squared "
        "error x min(SNR, gamma)/SNR (epsilon) or /(SNR+1) (v-prediction). None = "
        "unweighted. Flow-matching models refuse it (use timestep_density).",
    )
    timestep_range: tuple[float, float] = Field(
        default=(0.0, 1.0),
        description="The part of the noise range trained, as fractions [min, max] of it (0 = clean, 1 = pure "
        "noise); [0.5, 1.0] trains only the noisier half, where a few-step sampler lays out shapes, counts and "
        "positions. [0, 1] = all timesteps.",
    )
    anchor_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="lambda of the anchored objective: adds lambda x the denoising loss of each group's winners "
        "(tau = 1) to any objective, so the preference loss cannot be won by only making the losers worse. "
        "0 = off (the paper's RankDPO).",
    )
    min_margin: float = Field(
        default=0.0,
        ge=0.0,
        description="Pairs whose labels (phi, or GPO's advantage) differ by less than this carry no weight "
        "(GPO's argument that near-ties are noise). 0 = every ordered pair.",
    )
    balance_tasks: bool = Field(
        default=False,
        description="Draw each step's prompt groups so that every prompt category (GenEval task) is drawn "
        "equally often, as the benchmark weighs its tasks; off = every group equally often.",
    )
    ema_decay: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Keep an exponential moving average of the trainable weights (diffusers' EMAModel: the decay "
        "ramps up as (1 + n) / (10 + n) to this value) and save it as the tuned model instead of the last "
        "weights; 0 = off. 0.999 is usual for thousands of steps.",
    )
    validation_every: int = Field(
        default=0,
        ge=0,
        description="Render validation_prompts with the model as it is every N steps (the base's sampling "
        "settings, seeds seed + i) into the MLflow run's validation/step-N folder; 0 = never.",
    )
    validation_prompts: list[str] = Field(
        default_factory=list, description="The prompts of the validation images (validation_every > 0)."
    )
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations: less memory, slower.")
    resolution: int = Field(default=0, ge=0, description="Training image size; 0 = the generator's.")
    seed: int = Field(default=0, description="Seed of the batches, noise and timesteps.")
    log_every: int = Field(default=10, ge=1, description="Log metrics to MLflow every N steps.")
    checkpoint_every: int = Field(default=0, ge=0, description="accelerate save_state every N steps; 0 = off.")
    holdout_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Ranked prompts kept out of training to measure implicit accuracy."
    )
    nonfinite: Literal["fail", "skip"] = Field(
        default="fail",
        description="A NaN/inf loss or gradient norm: fail = stop before saving anything; skip = "
        "skip that optimizer step and count it (skipped_steps); more than half the steps skipped still fails.",
    )

    @property
    def world_size(self) -> int:
        """Processes over all machines: each micro-batch's prompts_per_step groups are split among them."""
        return self.processes * self.launch.machines

    @property
    def launched(self) -> bool:
        """Whether the stage trains through `accelerate launch` (several processes, or an accelerate config
        file) rather than in its own process."""
        return self.world_size > 1 or bool(self.launch.config_file)
