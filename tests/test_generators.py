"""Generator backends, each on a tiny random pipeline of its own family (tests/fixtures/tiny_pipelines.py), loaded
through `load_generator` exactly as a published checkpoint would be.

Each family is built once per module, on first use, so `-k sdxl` builds and runs only SDXL.

Batch vs alone: the noise is the same (one torch.Generator per image), but CPU kernels reduce in a
batch-size-dependent order, so the float images differ in the last bits and a uint8 pixel can round the
other way. Measured over 4 seed pairs x 2 prompts per family (2-prompt batch vs alone): max |diff| is 0
in 34 of 40 comparisons and 1 in the other 6 (each family had at least one); a 16-prompt batch vs 16
single calls (scripts/bench_generate.py) is also within 1. Hence BATCH_TOLERANCE = 1 level of 255.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.generators import GENERATORS, load_generator
from models.generators.stable_cascade import prior_and_decoder
from models.prompt_fit import excerpt, fit_prompt
from synrank.config import ConfigError, GeneratorSpec, validate
from synrank.registry import import_all
from tests.fixtures.tiny_pipelines import BUILDERS, build_tiny_lora

import_all("models.generators")  # register every backend, as load_generator does

# diffusers' schedulers call np.array(tensor, copy=False) internally; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

BACKENDS = list(BUILDERS)
PROMPTS = ["a red cube", "a blue sphere left of a green cat"]
SEEDS = [11, 12]
SIZE = 32
BATCH_TOLERANCE = 1  # uint8 levels; measured 0 or 1 (see the module docstring)
REAL_IDS = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "pixart-sigma": "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
    "stable-cascade": "stabilityai/stable-cascade",
}


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Overrides conftest's autouse Prefect server for this module only: nothing here imports Prefect
    (generators are plain diffusers), and the server's start (~20 s on 2 cores) would be a third of the
    file's time. Other modules still get the real harness."""
    yield


def tiny_spec(backend: str, path: Path | str, **overrides: object) -> GeneratorSpec:
    fields = dict(
        name=f"tiny-{backend}", backend=backend, path=str(path), steps=2, guidance=5.0, height=SIZE, width=SIZE
    )
    return GeneratorSpec(**{**fields, **overrides})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    built: dict[str, Path] = {}

    def get(backend: str) -> Path:
        if backend not in built:
            built[backend] = BUILDERS[backend](tmp_path_factory.mktemp(f"tiny-{backend}"))
        return built[backend]

    return get


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make a backend's weight loading fail loudly, to prove an error came before it."""

    def forbid(backend: str) -> None:
        def load(self: object, source: str) -> None:
            raise AssertionError(f"{backend} started loading {source}")

        monkeypatch.setattr(GENERATORS.get(backend), "load", load)

    return forbid


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_generates_a_batch_where_each_image_depends_on_its_seed_only(
    backend: str, tiny: Callable[[str], Path]
) -> None:
    gen = load_generator(tiny_spec(backend, tiny(backend)))
    assert type(gen) is GENERATORS.get(backend)

    images = gen.generate(PROMPTS, SEEDS)
    assert len(images) == len(PROMPTS)
    assert all(isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (SIZE, SIZE) for im in images)
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))  # not a constant output

    alone = gen.generate(PROMPTS[1:], SEEDS[1:])[0]
    assert np.abs(pixels(alone) - pixels(images[1])).max() <= BATCH_TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_path_is_one_clear_error_before_loading(
    backend: str, tmp_path: Path, no_loading: Callable[[str], None]
) -> None:
    no_loading(backend)
    missing = tmp_path / "no-such-pipeline"
    with pytest.raises(FileNotFoundError, match="no-such-pipeline"):
        load_generator(tiny_spec(backend, missing))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sd15", "sdxl", "sd3"])  # UNet and transformer LoRA keys
def test_lora_is_loaded_on_top(backend: str, tiny: Callable[[str], Path], tmp_path: Path) -> None:
    base_dir = tiny(backend)
    lora_dir = build_tiny_lora(base_dir, tmp_path / "lora")
    base = load_generator(tiny_spec(backend, base_dir)).generate(PROMPTS[:1], SEEDS[:1])[0]
    tuned = load_generator(tiny_spec(backend, base_dir, lora=str(lora_dir))).generate(PROMPTS[:1], SEEDS[:1])[0]
    assert tuned.size == base.size
    assert not np.array_equal(pixels(tuned), pixels(base))


@pytest.mark.parametrize("backend", ["pixart-sigma", "stable-cascade"])
def test_lora_on_a_pipeline_without_lora_loader_is_refused_before_loading(
    backend: str, tmp_path: Path, no_loading: Callable[[str], None]
) -> None:
    no_loading(backend)
    (tmp_path / "model" / "prior").mkdir(parents=True)
    (tmp_path / "model" / "decoder").mkdir()
    (tmp_path / "lora").mkdir()
    with pytest.raises(ValueError, match="cannot load LoRA"):
        load_generator(tiny_spec(backend, tmp_path / "model", lora=str(tmp_path / "lora")))


def test_stable_cascade_finds_its_prior(tmp_path: Path) -> None:
    both = tmp_path / "both"
    (both / "prior").mkdir(parents=True)
    (both / "decoder").mkdir()
    assert prior_and_decoder(str(both), "x") == (str(both / "prior"), str(both / "decoder"))

    decoder = tmp_path / "cascade"
    decoder.mkdir()
    with pytest.raises(FileNotFoundError, match="cascade-prior"):  # the missing part is the one named
        prior_and_decoder(str(decoder), "x")
    (tmp_path / "cascade-prior").mkdir()
    assert prior_and_decoder(str(decoder), "x") == (str(tmp_path / "cascade-prior"), str(decoder))


def test_stable_cascade_preset_pairs_the_published_prior_and_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.generators import stable_cascade

    monkeypatch.setattr(stable_cascade, "resolve_model_path", lambda path, what: path)  # no hub, no cache
    preset = stable_cascade.PRESETS["stable-cascade"]
    assert prior_and_decoder(preset.path, "x") == ("stabilityai/stable-cascade-prior", "stabilityai/stable-cascade")


@pytest.mark.parametrize("backend", BACKENDS)
def test_presets_name_the_published_checkpoint(backend: str) -> None:
    presets = GENERATORS.get(backend).presets
    assert REAL_IDS[backend] in {p.path for p in presets.values()}
    for name, preset in presets.items():
        spec = GeneratorSpec(name="g", preset=name)
        assert (spec.backend, spec.path, spec.steps) == (backend, preset.path, preset.steps)
        assert spec.height % 64 == 0 and spec.width % 64 == 0


def test_a_preset_fills_the_model_card_and_a_set_field_wins() -> None:
    sdxl = GeneratorSpec(name="base", preset="sdxl")
    assert sdxl.model_dump(exclude={"name", "preset", "lora", "images_per_prompt", "allow_pickle"}) == {
        "backend": "sdxl",
        "path": "stabilityai/stable-diffusion-xl-base-1.0",
        "steps": 50,
        "guidance": 5.0,
        "height": 1024,
        "width": 1024,
        "dtype": "float16",
    }
    cheap = GeneratorSpec(name="sd3", preset="sd3-medium", steps=20, dtype="float32", path="/models/sd3m")
    assert (cheap.backend, cheap.path, cheap.steps, cheap.guidance, cheap.dtype) == (
        "sd3",
        "/models/sd3m",
        20,
        7.0,
        "float32",
    )
    assert GeneratorSpec.model_validate(cheap.model_dump()) == cheap  # a dumped entry reads back the same


def test_an_entry_without_a_preset_or_its_size_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        validate({"generate": {"generators": [{"name": "mine", "path": "zoo/shapes-sd-s", "steps": 10}]}})
    assert str(err.value).startswith(
        "bad value for 'generate.generators.0': Value error, generator 'mine' names no preset (sd15, sdxl, "
        "sd3-medium, pixart-sigma, stable-cascade) and no height, width: set a preset or every one of path, "
        "steps, height and width"
    )
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("backend, window", [("sd15", 77), ("sd3", 256)])
def test_long_prompts_are_cut_at_a_whole_word_and_counted(
    backend: str, window: int, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    """A prompt past the generator's text window is given as its longest whole-word prefix that fits
    (SD3: T5's 256 tokens, not CLIP's 77), and the stage's report counts it."""
    import pandas as pd

    from synrank.cluster_config import ClusterConfig, FanOut
    from synrank.shards import load_images
    from tasks.generate import plan_images, render_plans, truncation_report

    spec = tiny_spec(backend, tiny(backend))
    gen = load_generator(spec)
    tok, size = gen.text_window()
    assert size == window
    words = ("a red cube left of a blue sphere " * 60).split()
    budget = size - tok.num_special_tokens_to_add()
    n_tokens = [len(tok(" ".join(words[:k]), add_special_tokens=False)["input_ids"]) for k in range(len(words) + 1)]
    assert n_tokens[-1] > budget  # the prompt really is too long for this window
    keep = max(k for k in range(len(words) + 1) if n_tokens[k] <= budget)
    long = " ".join(words)
    prompts = pd.DataFrame({"prompt_id": ["short", "long"], "prompt": [PROMPTS[0], long]})
    plan = plan_images(prompts, spec.name, 1, 0, 8)
    render_plans({spec.name: (spec, plan)}, tmp_path, 2, "cpu", FanOut(), ClusterConfig())
    report = truncation_report(tmp_path)[spec.name]
    assert (report["n_prompts"], report["n_truncated"], report["max_tokens"]) == (2, 1, size)
    assert report["tokens_dropped"] == n_tokens[-1] - n_tokens[keep] and report["examples"] == [excerpt(long)]
    # Every encoder's cut: SD3's two CLIPs (77) still cut the T5-fitted text, and the report says by how much.
    fitted = {"max_tokens": size, "n_truncated": 1, "tokens_dropped": n_tokens[-1] - n_tokens[keep]}
    if backend == "sd15":
        assert report["encoders"] == {"tokenizer": fitted}
    else:
        clip = gen.pipe.tokenizer
        kept = len(clip(" ".join(words[:keep]), add_special_tokens=False)["input_ids"])
        cut = {
            "max_tokens": 77,
            "n_truncated": 1,
            "tokens_dropped": kept
            - len(clip(fit_prompt(" ".join(words[:keep]), clip, 77).texts[0], add_special_tokens=False)["input_ids"]),
        }
        assert report["encoders"] == {"tokenizer": cut, "tokenizer_2": cut, "tokenizer_3": fitted}
    manifest = pd.read_parquet(tmp_path / plan["piece"].iloc[0])
    row = manifest[manifest["prompt_id"] == "long"].iloc[0]
    assert row["prompt"] == long  # the manifest keeps the prompt as written
    made = load_images(tmp_path, [(row["shard"], row["member"])])[0]
    expected = gen.generate([" ".join(words[:keep])], [int(row["seed"])])[0]
    assert np.abs(pixels(made) - pixels(expected)).max() <= BATCH_TOLERANCE
