"""Every reusable result is keyed by the content that produced it (issue 10): changing one input redoes
exactly the work it affects, an unchanged rerun redoes nothing, and nothing stale survives."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import tasks.generate
import tasks.score
from synrank.config import GeneratorSpec, Paths, RewardSpec, SampleConfig, TrackingConfig
from tasks.generate import generate_all
from tasks.score import score_all
from tests.fixtures.tiny_models import build_tiny_clip, build_tiny_sd

PROMPTS = ["a red circle", "a blue square", "two green stars", "a white ring"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for name, seed in (("a", 1), ("b", 2)):
        build_tiny_sd(root / name, seed=seed, channels=(16, 32))
    build_tiny_clip(root / "clip", seed=3)
    return root


class Counter:
    """Counts calls of a module function (and still runs it)."""

    def __init__(self, mp: pytest.MonkeyPatch, module: object, name: str) -> None:
        self.calls: list[tuple] = []
        original = getattr(module, name)

        def wrapped(*args, **kwargs):
            self.calls.append(args)
            return original(*args, **kwargs)

        mp.setattr(module, name, wrapped)


def _prompts(texts: list[str]) -> pd.DataFrame:
    from synrank.prompts import prompt_id

    return pd.DataFrame({"prompt_id": [prompt_id(t) for t in texts], "prompt": texts})


def _specs(models: Path, steps_b: int = 2) -> list[GeneratorSpec]:
    return [
        GeneratorSpec(name="a", path=str(models / "a"), steps=2, height=32, width=32),
        GeneratorSpec(name="b", path=str(models / "b"), steps=steps_b, height=32, width=32),
    ]


def _generate(
    out: Path, specs: list[GeneratorSpec], texts: list[str], mp: pytest.MonkeyPatch, seed: int = 0, k: int = 1
) -> tuple[pd.DataFrame, int, list[str]]:
    """(manifest, stale files removed, the shards rendered by this call)."""
    with mp.context() as m:
        rendered = Counter(m, tasks.generate, "write_shard")
        made = generate_all(specs, _prompts(texts), out, k, seed, 1, 4, "cpu")
        manifest, stale = made.manifest, made.stale_removed
    return manifest, stale, [c[0] for c in rendered.calls]


def _shards(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in (out / "shards").rglob("*.tar")}


@pytest.mark.slow
def test_generation_reruns_exactly_what_changed(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "images"
    manifest, stale, rendered = _generate(out, _specs(models), PROMPTS, monkeypatch)
    assert len(rendered) == 8 and stale == 0  # 4 prompts x 2 generators, one image per shard
    # Unchanged: nothing rendered, nothing removed, the same manifest bytes.
    before = (out / "manifest.parquet").read_bytes()
    _, stale, rendered = _generate(out, _specs(models), PROMPTS, monkeypatch)
    assert rendered == [] and stale == 0 and (out / "manifest.parquet").read_bytes() == before
    # One prompt edited in place: its shard in each generator, nothing else; the old two removed.
    edited = PROMPTS[:3] + ["a black ring"]
    manifest, stale, rendered = _generate(out, _specs(models), edited, monkeypatch)
    assert sorted(manifest[manifest["prompt"] == "a black ring"]["shard"]) == sorted(rendered)
    assert len(rendered) == 2 and stale == 4  # two tars and their two manifest pieces
    assert "a white ring" not in set(manifest["prompt"]) and _shards(out) == set(manifest["shard"])
    # A generator's steps: only its shards.
    manifest, _, rendered = _generate(out, _specs(models, steps_b=3), edited, monkeypatch)
    assert len(rendered) == 4 and all(s.startswith("shards/b/") for s in rendered)
    # The seed, or images per prompt: everything.
    _, _, rendered = _generate(out, _specs(models, steps_b=3), edited, monkeypatch, seed=1)
    assert len(rendered) == 8
    manifest, _, rendered = _generate(out, _specs(models, steps_b=3), edited, monkeypatch, seed=1, k=2)
    # Every row moves to another shard except each generator's first (prompt 0, image 0), whose
    # content is unchanged and so is not rendered again.
    assert len(manifest) == 16 and len(rendered) == 14 and _shards(out) == set(manifest["shard"])


@pytest.mark.slow
def test_new_weights_under_the_same_name_regenerate(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    local = tmp_path / "models"
    shutil.copytree(models, local)
    out = tmp_path / "images"
    first, _, _ = _generate(out, _specs(local), PROMPTS[:2], monkeypatch)
    build_tiny_sd(local / "b", seed=7, channels=(16, 32))  # retrained under the same name and path
    second, stale, rendered = _generate(out, _specs(local), PROMPTS[:2], monkeypatch)
    assert len(rendered) == 2 and all(s.startswith("shards/b/") for s in rendered) and stale == 4
    a_rows = first["model"] == "a"
    assert list(second[a_rows]["shard"]) == list(first[a_rows]["shard"])
    assert set(second[~a_rows]["shard"]).isdisjoint(first[~a_rows]["shard"])
    assert list(second[~a_rows]["sha256"]) != list(first[~a_rows]["sha256"])  # and the images did change


@pytest.mark.slow
def test_scores_are_keyed_by_reward_weights_and_image_content(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from synrank.fingerprint import reward_id

    local = tmp_path / "models"
    shutil.copytree(models, local)
    images, scores = tmp_path / "images", tmp_path / "scores"
    _generate(images, _specs(local), PROMPTS[:2], monkeypatch)
    spec = RewardSpec(name="clip", arch=f"local-dir:{local / 'clip'}")

    def score() -> tuple[pd.DataFrame, int]:
        with monkeypatch.context() as m:
            scored = Counter(m, tasks.score, "score_shard")
            table, _ = score_all([spec], str(images / "manifest.parquet"), str(images), str(scores), 4, "cpu")
        assert pd.read_parquet(scores / "clip.parquet").equals(table)
        return table, len(scored.calls)

    first, n = score()
    assert n == 4 and len(first) == 4
    again, n = score()
    assert n == 0 and again.equals(first)
    # New images of one generator (new weights): only its two shards are scored again.
    build_tiny_sd(local / "b", seed=9, channels=(16, 32))
    _generate(images, _specs(local), PROMPTS[:2], monkeypatch)
    after, n = score()
    assert n == 2
    a_rows = after["image_id"].str.startswith("a-")
    assert after[a_rows].equals(first[a_rows]) and not after[~a_rows]["score"].equals(first[~a_rows]["score"])
    # New reward weights under the same name and spec: everything scored again.
    old_id = reward_id(spec)
    build_tiny_clip(local / "clip", seed=11)
    assert reward_id(spec) != old_id
    _, n = score()
    assert n == 4
    removed = tasks.score.remove_stale_scores(scores, pd.read_parquet(images / "manifest.parquet"), [spec])
    assert removed == 6 and len(list((scores / "cache" / "clip").glob("*.parquet"))) == 4


@pytest.mark.slow
def test_changed_prompt_file_never_meets_old_images(models: Path, tmp_path: Path) -> None:
    """The reported case: sample a.txt, generate, sample b.txt, generate into the same folder."""
    from flows.generate import generate_flow
    from flows.sample import sample_flow
    from synrank.config import GenerateConfig

    paths = Paths(prompts=str(tmp_path / "prompts"), images=str(tmp_path / "images"))
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="content")
    gen = GenerateConfig(generators=[_specs(models)[0]], batch_size=2)
    for name, text in (("a.txt", "a red circle"), ("b.txt", "a blue square")):
        (tmp_path / name).write_text(text + "\n")
        sample_flow(SampleConfig(sources=[{"path": str(tmp_path / name), "split": "train"}]), paths, tracking)
        generate_flow(gen, paths=paths, tracking=tracking)
        manifest = pd.read_parquet(tmp_path / "images" / "manifest.parquet")
        assert list(manifest["prompt"]) == [text]
    assert len(list((tmp_path / "images" / "shards").rglob("*.tar"))) == 1


def test_dvc_deps_are_each_stages_import_closure() -> None:
    """dvc.yaml's code deps and synrank's own stamps hash the same files (`python -m synrank.codehash
    --write` regenerates them); editing models/prompt_fit.py makes generate and evaluate stale in both."""
    import yaml

    from synrank.codehash import PACKAGES, STAGES, stage_files
    from synrank.config import ROOT

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in STAGES:
        code = [d for d in stages[stage]["deps"] if d.split("/")[0] in PACKAGES]
        assert code == stage_files(stage), f"dvc.yaml deps of '{stage}': run python -m synrank.codehash --write"
    assert "models/prompt_fit.py" in stage_files("generate") and "models/prompt_fit.py" in stage_files("evaluate")
    assert "models/trainer.py" in stage_files("train") and "models/trainer.py" not in stage_files("sample")
    assert not any(
        f.startswith("models/shapes_zoo/")
        and f != "models/shapes_zoo/__init__.py"
        and "detector" not in f
        and "prompt_parser" not in f
        for f in stage_files("score")
    )


def test_code_id_follows_imports_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import synrank.codehash as ch

    files = {
        "flows/__init__.py": "",
        "flows/s.py": "from tasks.s import f\n",
        "tasks/__init__.py": "",
        "tasks/s.py": "def f():\n    from models import reg\n    reg.import_all('models.plugins')\n",
        "models/__init__.py": "",
        "models/reg.py": "",
        "models/plugins/__init__.py": "",
        "models/plugins/one.py": "from . import two\n",
        "models/plugins/two.py": "",
        "models/unused.py": "x = 1\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(ch, "CODE_ROOT", tmp_path)
    ch.direct_imports.cache_clear()
    names = [p.relative_to(tmp_path).as_posix() for p in ch.closure(["flows.s"])]
    assert names == sorted(set(files) - {"models/unused.py"})
    before = ch.stage_code_id("s")
    (tmp_path / "models/unused.py").write_text("x = 2  # a comment in code the stage never runs\n")
    ch.direct_imports.cache_clear()
    assert ch.stage_code_id("s") == before
    (tmp_path / "models/plugins/two.py").write_text("y = 1\n")
    ch.direct_imports.cache_clear()
    assert ch.stage_code_id("s") != before
    ch.direct_imports.cache_clear()
