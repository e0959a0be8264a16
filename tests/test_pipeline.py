"""The whole pipeline end to end on tiny random models, then a second run that skips everything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from synrank.config import Config, validate
from synrank.eval_report import EvalReport
from synrank.shards import read_shard
from tests.fixtures.tiny_models import build_tiny_clip, build_tiny_sd

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

PROMPTS = [
    "a photo of a red circle",
    "a photo of two blue squares",
    "a photo of a star",
    "a photo of a green ring left of a yellow cross",
    "a photo of three triangles",
    "a photo of a purple star",
    "a photo of a white square",
    "a photo of four circles",
]


def tiny_config(root: Path) -> Config:
    models = root / "models"
    for name, seed in (("gen-a", 1), ("gen-b", 2)):
        build_tiny_sd(models / name, seed=seed, channels=(16, 32))
    build_tiny_clip(models / "clip", seed=3)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    out = root / "outputs"
    return validate(
        {
            "paths": {
                k: str(out / k) for k in ("prompts", "images", "scores", "rankings", "model", "eval", "metrics", "runs")
            },
            "sample": {"sources": [{"path": str(root / "prompts.txt")}], "eval_fraction": 0.25},
            "generate": {
                "generators": [
                    {"name": n, "path": str(models / n), "steps": 2, "height": 32, "width": 32}
                    for n in ("gen-a", "gen-b")
                ],
                "batch_size": 4,
                "shard_size": 4,
            },
            "score": {"rewards": [{"name": "clip", "arch": f"local-dir:{models / 'clip'}"}]},
            "train": {"steps": 3, "prompts_per_step": 2, "lora_rank": 2, "log_every": 1},
            "evaluate": {"images_per_prompt": 1, "grid_prompts": 2},
            "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "e2e"},
        }
    )


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, str]]:
    import synrank.codehash
    import synrank.stamp
    from flows.pipeline import pipeline_flow

    cfg = tiny_config(tmp_path_factory.mktemp("world"))
    with pytest.MonkeyPatch.context() as mp:
        # Freeze the code part of the stage fingerprints: an edit elsewhere in the tree while the
        # tests run must not count as a change of this pipeline's code.
        frozen = {s: synrank.stamp.code_hash(s) for s in (*synrank.codehash.STAGES, "ingest")}  # export, ingest too
        mp.setattr(synrank.stamp, "code_hash", frozen.__getitem__)
        yield cfg, pipeline_flow(cfg)


def test_stage_outputs(ran: tuple[Config, str]) -> None:
    cfg, _ = ran
    p = cfg.paths
    prompts = pd.read_parquet(p.resolve("prompts") / "prompts.parquet")
    assert sorted(prompts["prompt"]) == sorted(PROMPTS) and (prompts["split"] == "eval").sum() == 2
    manifest = pd.read_parquet(p.resolve("images") / "manifest.parquet")
    assert len(manifest) == 6 * 2  # 6 train prompts x 2 generators, one image each
    assert set(manifest.columns) >= {"image_id", "prompt_id", "model", "seed", "shard", "member"}
    # One seed per prompt, shared by both generators; shards of at most 4 images.
    assert (manifest.groupby("prompt_id")["seed"].nunique() == 1).all()
    assert manifest.groupby("shard").size().max() == 4
    scores = pd.read_parquet(p.resolve("scores") / "scores.parquet")
    assert len(scores) == 12 and np.isfinite(scores["score"]).all()
    cuts = json.loads((p.resolve("scores") / "_stage.json").read_text())["report"]["prompt_cuts"]
    assert cuts == {
        "clip": {
            "max_tokens": 75,
            "n_prompts": 6,
            "n_cut": 0,
            "tokens_cut": 0,
            "longest": max(len(t.split()) for t in prompts["prompt"][prompts["split"] == "train"]),
        }
    }
    ranked = pd.read_parquet(p.resolve("rankings") / "rankings.parquet")
    assert len(ranked) == 12 and set(ranked["phi"]) <= {0.0, 1.0}  # K = 2, one reward
    assert (ranked.groupby("prompt_id")["phi"].sum() <= 1.0).all()
    assert (p.resolve("model") / "pytorch_lora_weights.safetensors").exists()
    metrics = json.loads((p.resolve("metrics") / "evaluate.json").read_text())
    assert metrics["n_prompts"] == 2 and 0.0 <= metrics["winrate"]["clip"]["winrate"] <= 1.0
    assert "categories" not in metrics["winrate"]["clip"]  # text-file prompts have none (not a "NaN" one)


def test_generation_is_deterministic(ran: tuple[Config, str], tmp_path: Path) -> None:
    """The same plan rendered again gives byte-identical shards (PNG and latents) at the same batch size and
    thread count; at another batch size the PNGs are still identical at one intra-op thread (with two,
    torch's kernels block a batch of 3 and of 4 differently and a pixel can round the other way)."""
    import tarfile

    import pandas as pd
    import torch

    from synrank.cluster_config import ClusterConfig, FanOut
    from tasks.generate import render_plans

    cfg, _ = ran
    images = cfg.paths.resolve("images")
    spec = cfg.generate.generators[0]
    plans = {spec.name: (spec, pd.read_parquet(images / "plans" / f"{spec.name}.parquet"))}
    render_plans(plans, tmp_path / "same", cfg.generate.batch_size, "cpu", FanOut(), ClusterConfig())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, batch in (("one-4", cfg.generate.batch_size), ("one-3", 3)):
            render_plans(plans, tmp_path / name, batch, "cpu", FanOut(), ClusterConfig())
    finally:
        torch.set_num_threads(threads)
    first = sorted((images / "shards" / spec.name).glob("*.tar"))
    again = sorted((tmp_path / "same" / "shards" / spec.name).glob("*.tar"))
    four, three = (sorted((tmp_path / n / "shards" / spec.name).glob("*.tar")) for n in ("one-4", "one-3"))
    assert [f.name for f in first] == [f.name for f in again] == [f.name for f in three]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, again))

    def pngs(path: Path) -> list[bytes]:
        with tarfile.open(path) as tar:
            return [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")]

    assert all(pngs(a) == pngs(b) for a, b in zip(four, three))
    assert len(pngs(first[0])) == 4 and len(list(read_shard(str(first[0]), first[0].parent))) == 8  # + latents


def test_mlflow_parent_with_six_children(ran: tuple[Config, str]) -> None:
    cfg, parent_id = ran
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    parent = client.get_run(parent_id)
    assert parent.data.tags["dvc_data_version"] and parent.data.tags["git_commit"]
    experiment = client.get_experiment_by_name("e2e")
    # MLflow 3.17's UI ignores this tag (README, "Links"); MLflow's API and older UIs read it.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    exp = experiment.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    stages = {r.data.tags["synrank.stage"]: r for r in children}
    assert sorted(stages) == sorted(["sample", "generate", "score", "rank", "train", "evaluate"])
    for stage, run in stages.items():
        assert run.data.params and run.data.metrics, stage
        # Each stage run is named after and tagged with the Prefect flow run that did the work.
        flow_run = run.data.tags["prefect.flow_run_name"]
        assert run.info.run_name == f"{stage} · {flow_run}" and run.data.tags["prefect.flow_name"] == stage
        assert run.data.tags["mlflow.source.name"] == f"flows/{stage}.py"
    # The parent's row answers "did tuning help" without opening the evaluate run.
    evaluate_metrics = stages["evaluate"].data.metrics
    assert parent.data.metrics["winrate_clip"] == evaluate_metrics["winrate_clip"]
    assert not any("/" in k for k in parent.data.metrics if k.startswith("winrate_"))
    train = stages["train"]
    assert len(client.get_metric_history(train.info.run_id, "train/loss")) == 3
    version = client.get_model_version("synrank-gen-a", "1")
    assert version.run_id == train.info.run_id and version.tags["objective"] == "rankdpo"
    # The registered version is an MLflow pyfunc model: it loads and renders what the tuned folder renders.
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/synrank-gen-a/1")
    out = model.predict(pd.DataFrame({"prompt": ["a photo of a circle"], "seed": [3]}))
    assert list(out.columns) == ["prompt", "seed", "image"] and out["seed"].tolist() == [3]
    from models.generators import load_generator
    from synrank.models_io import tuned_spec
    from synrank.shards import png_bytes

    direct = load_generator(tuned_spec(cfg.paths.resolve("model"))[1], "cpu").render(["a photo of a circle"], [3])
    assert out["image"][0] == png_bytes(direct.images[0])
    curve = pd.read_csv(cfg.paths.resolve("model") / "train_curve.csv")  # what `dvc plots show` draws
    assert list(curve["step"]) == [1, 2, 3] and np.isfinite(curve["loss"]).all()
    # Base and tuned side by side in MLflow: one 192-px column per model, a row per grid prompt (2 per
    # category; the text-file prompts are one category), each image bordered by its verdict.
    evaluate = stages["evaluate"]
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    grid = mlflow.artifacts.load_image(f"runs:/{evaluate.info.run_id}/base_vs_tuned.png")
    line = 16 + 6  # the label font's size (192 // 12) plus spacing
    assert grid.size == (2 * 192, line + 2 * (line + 192 + line))


def test_second_run_skips_every_stage(ran: tuple[Config, str]) -> None:
    from flows.pipeline import pipeline_flow

    cfg, _ = ran
    stamps = {
        d: (cfg.paths.resolve(d) / "_stage.json").read_bytes()
        for d in ("prompts", "images", "scores", "rankings", "model", "eval")
    }
    parent_id = pipeline_flow(cfg)
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name("e2e").experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 6 and all(r.data.tags["synrank.up_to_date"] == "True" for r in children)
    assert all((cfg.paths.resolve(d) / "_stage.json").read_bytes() == b for d, b in stamps.items())


def test_cli_with_nothing_changed_makes_no_flow_or_mlflow_run(
    ran: tuple[Config, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`synrank pipeline` asks every stamp first: all current, it rewrites evaluate.json from the evaluate
    stamp and starts no flow (no Prefect server, no MLflow run); one stale stage, and the flow runs."""
    import cli.main
    from synrank.stamp import read_stamp, up_to_date

    cfg, _ = ran

    def no_flow(stage: str, _cfg: Config) -> None:
        raise AssertionError(f"flow {stage} started although nothing changed")

    monkeypatch.setattr(cli.main, "_run", no_flow)
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name("e2e").experiment_id
    n_runs = len(client.search_runs([exp]))
    metrics = cfg.paths.resolve("metrics") / "evaluate.json"
    metrics.unlink()
    assert cli.main._run_locked("pipeline", cfg) == 0
    assert json.loads(metrics.read_text()) == read_stamp(cfg.paths.resolve("eval"))["report"]
    assert "nothing changed since the last run" in capsys.readouterr().out
    assert len(client.search_runs([exp])) == n_runs
    # Another aggregation is a stale rank stage (and so is a file added to its folder): the flow must run.
    assert not up_to_date("rank", cfg.model_copy(update={"rank": cfg.rank.model_copy(update={"method": "zscore"})}))
    extra = cfg.paths.resolve("rankings") / "note.txt"
    extra.write_text("x")
    try:
        assert [s for s in ("sample", "generate", "score", "rank") if not up_to_date(s, cfg)] == ["rank"]
        with pytest.raises(AssertionError, match="flow pipeline started"):
            cli.main._run_locked("pipeline", cfg)
    finally:
        extra.unlink()
    assert up_to_date("rank", cfg)


def test_a_remote_train_must_leave_this_runs_model(ran: tuple[Config, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """After the train deployment's run (here a no-op stand-in), the pipeline locks the model folder and
    accepts it only if its stamp is this config's training: a model trained with other settings (another
    run's, or one on a machine that does not share the folders) is refused by name."""
    from contextlib import ExitStack
    from types import SimpleNamespace

    import synrank.subdeploy
    from flows.pipeline import train_remotely

    cfg, _ = ran
    sent: list[dict] = []
    monkeypatch.setattr(synrank.subdeploy, "run_remote", lambda dep, params, env: sent.append(params))
    dep = SimpleNamespace(name="train", work_pool_name="gpu")
    with ExitStack() as held:
        train_remotely(dep, cfg, "parent", held)  # the folder holds exactly this config's model
    assert Path(sent[0]["paths"].model).is_absolute() and sent[0]["cfg"] == cfg.train
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 99})})
    with ExitStack() as held, pytest.raises(synrank.subdeploy.StageRunFailed, match="does not hold this run's model"):
        train_remotely(dep, other, "parent", held)


def test_retrain_with_other_settings_then_evaluate_renders_only_the_new_tuned_model(
    ran: tuple[Config, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tuned model keeps its name (`<base>-tuned`) across retrains; its eval shards are keyed by its
    weights' content, so evaluate renders it again (and only it) and drops the old tuned images."""
    import tasks.generate
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow
    from synrank.config import flow_parameters

    cfg, _ = ran
    images = cfg.paths.resolve("eval") / "images"
    before = pd.read_parquet(images / "manifest.parquet")
    train_flow(cfg.train.model_copy(update={"steps": 4}), cfg.generate, cfg.paths, cfg.tracking)
    rendered: list[str] = []
    write_shard = tasks.generate.write_shard
    monkeypatch.setattr(tasks.generate, "write_shard", lambda loc, *a: rendered.append(loc) or write_shard(loc, *a))
    evaluate_flow(**flow_parameters("evaluate", cfg))
    after = pd.read_parquet(images / "manifest.parquet")
    tuned = after["model"] == "gen-a-tuned"
    assert sorted(rendered) == sorted(set(after[tuned]["shard"]))
    assert set(after[tuned]["shard"]).isdisjoint(before["shard"])
    assert list(after[~tuned]["shard"]) == list(before[before["model"] != "gen-a-tuned"]["shard"])
    on_disk = {p.relative_to(images).as_posix() for p in (images / "shards").rglob("*.tar")}
    assert on_disk == set(after["shard"])  # the previous tuned model's images are gone


def test_export_loads_with_datasets_and_matches_the_stage_outputs(ran: tuple[Config, str], tmp_path: Path) -> None:
    import io

    from datasets import load_dataset
    from PIL import Image

    from flows.export import export_flow
    from synrank.config import ExportConfig, flow_parameters

    cfg, _ = ran
    cfg = cfg.model_copy(
        update={
            "paths": cfg.paths.model_copy(update={"dataset": str(tmp_path / "dataset")}),
            "export": ExportConfig(rows_per_shard=5),
        }
    )
    out = Path(export_flow(**flow_parameters("export", cfg)))
    assert sorted(f.name for f in (out / "data").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    ds = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    manifest = pd.read_parquet(cfg.paths.resolve("images") / "manifest.parquet").set_index("image_id")
    ranked = pd.read_parquet(cfg.paths.resolve("rankings") / "rankings.parquet")
    scores = pd.read_parquet(cfg.paths.resolve("scores") / "scores.parquet").set_index("image_id")
    assert ds.num_rows == len(ranked) == 12 and ds["image_id"] == ranked["image_id"].tolist()
    assert ds["phi"] == ranked["phi"].tolist() and ds["tau"] == ranked["tau"].tolist()
    assert ds["score_clip"] == scores.loc[ds["image_id"], "score"].tolist()
    assert ds["prompt"] == manifest.loc[ds["image_id"], "prompt"].tolist()
    from synrank.shards import load_members

    row = manifest.loc[ds[3]["image_id"]]
    png = load_members(cfg.paths.resolve("images"), [(row["shard"], row["member"])])[0]
    assert isinstance(ds[3]["image"], Image.Image)
    assert np.array_equal(np.asarray(ds[3]["image"]), np.asarray(Image.open(io.BytesIO(png))))
    card = (out / "README.md").read_text()
    assert "- `gen-a`:" in card and "- `clip`: clipscore" in card and "Aggregation: `algorithm1`" in card


def test_an_export_ingested_again_gives_back_the_same_rankings(ran: tuple[Config, str], tmp_path: Path) -> None:
    from flows.export import export_flow
    from flows.ingest import ingest_flow
    from synrank.config import IngestConfig, flow_parameters

    cfg, _ = ran
    paths = cfg.paths.model_copy(update={"dataset": str(tmp_path / "dataset"), "ingested": str(tmp_path / "again")})
    cfg = cfg.model_copy(update={"paths": paths, "ingest": IngestConfig(source=str(tmp_path / "dataset"))})
    export_flow(**flow_parameters("export", cfg))
    again = Path(ingest_flow(**flow_parameters("ingest", cfg)))

    def by_image(path: Path) -> pd.DataFrame:
        return pd.read_parquet(path / "rankings.parquet").sort_values("image_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(by_image(again), by_image(cfg.paths.resolve("rankings")))
    manifest = pd.read_parquet(again / "manifest.parquet").set_index("image_id")
    original = pd.read_parquet(cfg.paths.resolve("images") / "manifest.parquet").set_index("image_id")
    assert (manifest["sha256"] == original.loc[manifest.index, "sha256"]).all()  # the same PNG bytes


def test_grid_marks_each_image_with_its_verdict_and_picks_prompts_per_category(ran: tuple[Config, str]) -> None:
    from tasks.evaluate import VERDICT_COLOURS, comparison_grid, grid_prompts

    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(6)], "category": ["a", "b", "a", "a", None, "b"]})
    assert grid_prompts(prompts, 2) == ["p0", "p2", "p1", "p5", "p4"]  # a, b, then the uncategorized
    cfg, _ = ran
    images = cfg.paths.resolve("eval") / "images"
    manifest = pd.read_parquet(images / "manifest.parquet")
    models, pids = list(dict.fromkeys(manifest["model"])), list(dict.fromkeys(manifest["prompt_id"]))[:2]
    verdicts = {(models[0], pids[0], 0): True, (models[1], pids[0], 0): False}
    grid = comparison_grid.fn(manifest, str(images), models, pids, verdicts)
    line = 16 + 6
    top = [line + line + r * (line + 192 + line) + 1 for r in range(2)]  # first pixel row of each image cell
    assert [grid.getpixel((c * 192 + 1, top[0])) for c in range(2)] == [VERDICT_COLOURS[True], VERDICT_COLOURS[False]]
    assert grid.getpixel((1, top[1])) == VERDICT_COLOURS[None]  # not judged


def test_the_pipeline_run_ends_with_its_result_table_and_line(ran: tuple[Config, str]) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from models.benchmark_table import benchmark_table

    cfg, _ = ran

    async def latest() -> object:
        async with get_client() as client:
            key = ArtifactFilter(key=ArtifactFilterKey(any_=["pipeline-result"]))
            return (await client.read_artifacts(artifact_filter=key, sort=ArtifactSort.CREATED_DESC, limit=1))[0]

    report = EvalReport.read(cfg.paths.resolve("metrics") / "evaluate.json")
    assert asyncio.run(latest()).data == benchmark_table(report)
