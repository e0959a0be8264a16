"""What every diffusers-backed generator shares: resolving the path, loading the pipeline class in the
spec's dtype, the optional LoRA, a silent progress bar, one seeded torch.Generator per image, and the
final denoised latents of each image (what the pipeline's VAE decodes into it; `render`).

A backend module subclasses `DiffusersBackend`, names its pipeline class and its presets, and registers
itself; this module registers nothing, so importing it (as `import_all` does) adds no backend.

Weights load from safetensors only, unless the spec sets `allow_pickle`: pickled files (.bin, .pt, .ckpt...)
can run code when they are loaded. Local folders are checked before loading (`refuse_pickle`, which the
reward loaders share), and diffusers is told `use_safetensors=True` for what a check cannot see (hub ids).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from synrank.config import GeneratorSpec
from synrank.generator_presets import Preset
from synrank.models_io import resolve_model_path

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class PickleWeightsError(ValueError):
    """A model's weights are pickle files and its spec does not set allow_pickle."""


def _weight_folders(folder: Path) -> list[Path]:
    """The folder and, for a diffusers pipeline, the component folders its model_index.json names (not
    other subfolders such as a trainer's cache or checkpoints, which no loader reads)."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return [folder]
    names = sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list))
    return [folder, *(folder / n for n in names if (folder / n).is_dir())]


def pickle_weight_files(path: str | Path) -> list[Path]:
    """Pickled weight files that loading `path` could unpickle: the file itself, or, for a folder (a model,
    a LoRA, a pipeline and its components), those without a .safetensors file beside them (a loader told
    to use safetensors never reads a pickle that has one). A path that is not local (a hub id) gives []."""
    path = Path(path)
    if path.is_file():
        return [path] if path.suffix.lower() in PICKLE_SUFFIXES else []
    if not path.is_dir():
        return []
    found = []
    for folder in _weight_folders(path):
        files = sorted(f for f in folder.iterdir() if f.is_file())
        if not any(f.suffix == ".safetensors" for f in files):
            found += [f for f in files if f.suffix.lower() in PICKLE_SUFFIXES]
    return found


PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a bare pickle's protocol byte


class WeightsFileError(ValueError):
    """A weights file that cannot be read, in one line: the model, its component and the file."""


def broken_safetensors(path: Path) -> str:
    """Why the .safetensors file `path` cannot be read ('' if its header parses): a pickle saved under that
    name, or a truncated or otherwise damaged file. Reads the header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt"):
            return ""
    except Exception as err:  # noqa: BLE001 - SafetensorError and OSError alike: the reason is what matters
        with path.open("rb") as f:
            head = f.read(4)
        if head.startswith(PICKLE_MAGIC):
            return "is a pickle (torch.save), not safetensors, under a .safetensors name"
        return f"is not a readable safetensors file ({str(err).splitlines()[0] if str(err) else type(err).__name__})"


def check_weight_files(paths: Iterable[str | Path], what: str) -> None:
    """Raise WeightsFileError for the first .safetensors file under `paths` (a file, or a model folder and its
    components) that cannot be read, naming `what`, the component and the file: a load would otherwise end
    in a bare "incomplete metadata" after a long traceback."""
    for root in map(Path, paths):
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = [f for folder in _weight_folders(root) for f in sorted(folder.glob("*.safetensors"))]
        else:
            continue
        for f in files:
            if f.suffix == ".safetensors" and (why := broken_safetensors(f)):
                component = f.parent.name if f.parent != root else "(the folder itself)"
                raise WeightsFileError(f"{what}: component '{component}': '{f}' {why}")


def refuse_pickle(paths: Iterable[str | Path], allow_pickle: bool, what: str, setting: str) -> None:
    """Raise PickleWeightsError naming the first pickled weight file under `paths` (see pickle_weight_files)
    and the setting that allows it, unless allow_pickle. `setting`: where allow_pickle is set, in words."""
    if allow_pickle:
        return
    for path in paths:
        for file in pickle_weight_files(path):
            raise pickle_error(what, file, setting)


def pickle_error(what: str, file: str | Path, setting: str) -> PickleWeightsError:
    """The one message for a refused pickle file: the model, the file and the setting that allows it."""
    return PickleWeightsError(
        f"{what}: '{file}' is a pickle file, which can run code when it is loaded; use "
        f"safetensors weights, or set allow_pickle: true on {setting} if you trust the file"
    )


def pickle_policy(spec: GeneratorSpec, paths: Iterable[str]) -> dict[str, Any]:
    """Refuse pickled weights under `paths` (a pipeline folder, its LoRA) unless spec.allow_pickle, and the
    from_pretrained / load_lora_weights keyword arguments that enforce the same rule where no local file
    can be checked (use_safetensors=True; with allow_pickle, diffusers' default: safetensors first)."""
    refuse_pickle(
        paths, spec.allow_pickle, f"generator '{spec.name}'", "this generator (generate.generators[].allow_pickle)"
    )
    return {} if spec.allow_pickle else {"use_safetensors": True}


def component_id(pipeline_folder: str, component: str = "vae") -> str:
    """Content id of one component folder of a pipeline (synrank.fingerprint.weights_id of
    `<pipeline_folder>/<component>`; 'id:<location>' where it is not local). The generate stage records the
    VAE's id beside each image's latents, and training compares it with its base model's."""
    from synrank.fingerprint import weights_id

    return weights_id(str(Path(pipeline_folder) / component))


@dataclass
class Rendered:
    """One batch of images and the latents the pipeline decoded into them."""

    images: list[Image.Image]
    # (N, C, h, w) float32 on the CPU, in the denoiser's (scaled) latent space; None: the pipeline has no hook
    latents: torch.Tensor | None


class LatentCatcher:
    """Keeps the latents of a pipeline's last denoising step, the tensor its decoder turns into the images.

    Hooked in through the pipeline's own step callback rather than calling it with output_type="latent"
    and decoding here: the pipeline still decodes as it always does (SDXL's fp16 upcast and latents
    mean/std, SD3's shift factor, the safety checker, the postprocess), so the PNGs stay byte-identical
    without a copy of each family's decode path that could drift from diffusers'."""

    def __init__(self) -> None:
        self.latents: torch.Tensor | None = None

    def call_kwargs(self, pipe: Any) -> dict[str, Any]:
        """The pipeline call's keyword arguments that install the hook; {} if the pipeline has none."""
        params = inspect.signature(pipe.__call__).parameters
        if "callback_on_step_end" in params and "latents" in getattr(pipe, "_callback_tensor_inputs", ()):
            return {"callback_on_step_end": self._on_step_end, "callback_on_step_end_tensor_inputs": ["latents"]}
        if "callback" in params and "callback_steps" in params:  # PixArt has only the older per-step hook
            return {"callback": self._on_step, "callback_steps": 1}
        return {}

    def _on_step_end(self, pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        # A reference, no copy: every scheduler step returns a new tensor, so the last one kept is the final
        # latents; copying each step would cost a device sync per step.
        self.latents = kwargs["latents"]
        return kwargs

    def _on_step(self, step: int, timestep: Any, latents: torch.Tensor) -> None:
        self.latents = latents

    def take(self, n: int) -> torch.Tensor | None:
        """The final latents, (n, C, h, w) float32 on the CPU (a copy); None if none or not one per image."""
        if self.latents is None or len(self.latents) != n:
            return None
        return self.latents.to("cpu", torch.float32, copy=True)


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: its noise then depends on its own seed only, not on its batch mates
    or on the device (diffusers draws on the generator's device and moves the tensor)."""
    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


class DiffusersBackend:
    """Base of the per-family backends. Subclasses set `pipeline_class` (the diffusers class name, imported
    lazily so that listing backends does not import diffusers) and may override `load` or `call_kwargs`."""

    pipeline_class: ClassVar[str] = "DiffusionPipeline"
    presets: ClassVar[dict[str, Preset]] = {}

    def __init__(self, spec: GeneratorSpec, device: str = "cpu") -> None:
        self.spec, self.device = spec, device
        self.dtype = DTYPES[spec.dtype]
        # Resolve every path before loading anything: a typo fails in milliseconds with the path named.
        self.source = source = resolve_model_path(spec.path, what=f"generator '{spec.name}'")
        lora = resolve_model_path(spec.lora, what=f"LoRA of generator '{spec.name}'") if spec.lora else ""
        if lora:
            # The class tells before the (slow) load; the generic DiffusionPipeline only once loaded.
            self._require_lora_support(self.pipeline_type())
        local = [*self.weight_paths(source), *([lora] if lora else [])]
        self.weights_kwargs = pickle_policy(spec, local)
        check_weight_files(local, f"generator '{spec.name}'")  # a damaged file named in one line, before loading
        self.pipe = self.load(source)
        if lora:
            self._require_lora_support(type(self.pipe))
            # before .to(): the adapters then move with the weights
            self.pipe.load_lora_weights(lora, **self.weights_kwargs)
            # Merged into the weights and the adapter layers dropped: sampling then costs what the base
            # model's does (unmerged, peft's extra matmuls made the 32-px zoo ~2x slower).
            self.pipe.fuse_lora()
            self.pipe.unload_lora_weights()
        for pipe in self.pipelines():
            pipe.to(device)
            pipe.set_progress_bar_config(disable=True)

    @classmethod
    def around(cls, spec: GeneratorSpec, pipe: Any, device: str) -> DiffusersBackend:
        """This backend over `pipe`, a pipeline of its family loaded elsewhere (the one being trained, for
        validation images): nothing is loaded or moved; rendering goes through the family's own call."""
        self = cls.__new__(cls)
        self.spec, self.device, self.dtype, self.source, self.weights_kwargs = spec, device, pipe.dtype, "", {}
        self.pipe = pipe
        return self

    def _require_lora_support(self, cls: type) -> None:
        if cls.__name__ != "DiffusionPipeline" and not hasattr(cls, "load_lora_weights"):
            raise ValueError(
                f"generator '{self.spec.name}': {cls.__name__} cannot load LoRA weights (spec.lora='{self.spec.lora}')"
            )

    @classmethod
    def pipeline_type(cls) -> type:
        """The diffusers class `pipeline_class` names (imports diffusers); AttributeError for an unknown name."""
        import diffusers

        return getattr(diffusers, cls.pipeline_class)

    def weight_paths(self, source: str) -> list[str]:
        """The local folders whose weights `load` reads (checked for pickles first)."""
        return [source]

    def load(self, source: str) -> Any:
        """The pipeline; `self.weights_kwargs` carries the safetensors rule into from_pretrained."""
        return self.pipeline_type().from_pretrained(source, dtype=self.dtype, **self.weights_kwargs)

    def pipelines(self) -> list[Any]:
        """Every pipeline this backend holds (two for prior + decoder models)."""
        return [self.pipe]

    def sampling_kwargs(self, prompts: list[str], generators: list[torch.Generator]) -> dict[str, Any]:
        """The text-to-image call's arguments every diffusers pipeline shares: prompts, one seeded generator
        per image, spec.steps sampling steps, spec.guidance (classifier-free guidance scale), and the
        spec.height x spec.width output size in pixels."""
        return {
            "prompt": prompts,
            "generator": generators,
            "num_inference_steps": self.spec.steps,
            "guidance_scale": self.spec.guidance,
            "height": self.spec.height,
            "width": self.spec.width,
        }

    def call_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the pipeline call, for the family's own switches."""
        return {}

    def text_window(self) -> tuple[Any, int] | None:
        """(tokenizer, tokens with the special ones) of the text encoder that reads furthest into a prompt:
        CLIP's 77 for SD1.5, SDXL, Stable Cascade and the shapes zoo. The generate stage fits prompts into
        it on purpose (models.prompt_fit) instead of leaving the cut to the pipeline."""
        tok = getattr(self.pipelines()[0], "tokenizer", None)
        return (tok, int(tok.model_max_length)) if tok is not None else None

    def text_encoders(self) -> dict[str, tuple[Any, int]]:
        """Every tokenizer a prompt reaches, with its window: {attribute: (tokenizer, tokens)}, e.g. SD3's
        `tokenizer` and `tokenizer_2` (CLIP, 77) and `tokenizer_3` (T5, text_window's 256); a second
        pipeline's (Stable Cascade's decoder) as `<attribute>@1`. The generate stage fits prompts into
        text_window and reports what each other encoder still cuts (the pipeline cuts it silently)."""
        primary, out = self.text_window(), {}
        for i, pipe in enumerate(self.pipelines()):
            for attr in ("tokenizer", "tokenizer_2", "tokenizer_3"):
                tok = getattr(pipe, attr, None)
                if tok is not None:
                    size = primary[1] if primary is not None and tok is primary[0] else int(tok.model_max_length)
                    out[attr if i == 0 else f"{attr}@{i}"] = (tok, size)
        return out

    def latent_decoder_id(self) -> str:
        """Content id of the model that decodes this generator's latents into images (its VAE folder)."""
        return component_id(self.source, "vae")

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """render's images only: spec.height x spec.width px, image i from seed i alone."""
        return self.render(prompts, seeds).images

    @torch.no_grad()
    def render(self, prompts: list[str], seeds: list[int]) -> Rendered:
        """The images of `prompts` (image i from seed i alone) and their final latents (see Rendered)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"generator '{self.spec.name}': {len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return Rendered([], None)
        return self.run(prompts, seeded_generators(seeds))

    def run(self, prompts: list[str], generators: list[torch.Generator]) -> Rendered:
        """One batched call over all prompts (the fast path; see scripts/bench_generate.py)."""
        catch = LatentCatcher()
        out = self.pipe(
            **self.sampling_kwargs(prompts, generators),
            output_type="pil",
            **self.call_kwargs(),
            **catch.call_kwargs(self.pipe),
        )
        # A safety checker blacks out a flagged image after decoding: its latents no longer stand for its
        # PNG, so that batch keeps none (training then encodes its PNGs).
        flagged = any(getattr(out, "nsfw_content_detected", None) or [])
        return Rendered(list(out.images), None if flagged else catch.take(len(prompts)))
