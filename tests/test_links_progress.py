"""Prefect and MLflow linked both ways, progress in the Prefect log, and the parent run's headline
metrics: each checked against a real (throwaway) Prefect API and a local MLflow store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

from flows.pipeline import headline_metrics
from synrank import tracking
from synrank.progress import progress

pytestmark = pytest.mark.slow  # flow runs against a Prefect server


@pytest.fixture
def tracking_uri() -> Iterator[None]:
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


def test_headline_metrics_keep_the_overall_the_paired_difference_and_the_winrates() -> None:
    metrics = {
        "geneval-shapes/base/overall": 0.2,
        "geneval-shapes/tuned/overall_ci_low": 0.19,
        "geneval-shapes/tuned_minus_base": 0.01,
        "geneval-shapes/tuned_minus_base_ci_high": 0.02,
        "geneval-shapes/probe/novel_binding/tuned_minus_base": 0.5,
        "geneval-shapes/base/probe/novel_binding": 0.1,
        "geneval-shapes/tuned/counting": 0.3,
        "winrate_clip": 0.6,
        "winrate_clip_ci_low": 0.55,
        "winrate_clip/counting": 0.7,
        "seconds": 12.0,
    }
    assert headline_metrics(metrics) == {
        "geneval-shapes/base/overall": 0.2,
        "geneval-shapes/tuned/overall_ci_low": 0.19,
        "geneval-shapes/tuned_minus_base": 0.01,
        "geneval-shapes/tuned_minus_base_ci_high": 0.02,
        "winrate_clip": 0.6,
        "winrate_clip_ci_low": 0.55,
    }


def test_run_url_only_for_a_tracking_server(tracking_uri: None) -> None:
    mlflow.set_tracking_uri("http://127.0.0.1:5000/")
    assert (
        tracking.run_url("abc", "7") == "http://127.0.0.1:5000/#/experiments/7/runs/abc?workflowType=machine_learning"
    )
    mlflow.set_tracking_uri("sqlite:////tmp/x.db")
    assert tracking.run_url("abc", "7") is None


def test_run_identity_names_the_mlflow_run_after_the_prefect_flow_run(tracking_uri: None) -> None:
    outside = tracking.run_identity("train")
    assert outside == {"run_name": "train", "tags": {"synrank.stage": "train", "mlflow.source.name": "flows/train.py"}}

    @flow(name="train")
    def inside() -> tuple[dict, str, str]:
        from prefect.runtime import flow_run

        mlflow.set_tracking_uri("http://127.0.0.1:5999")  # a server URL: the link artifact is made (no request)
        tracking.link_from_prefect("train", "0123456789abcdef", "3")
        return tracking.run_identity("train"), str(flow_run.id), str(flow_run.name)

    ident, run_id, run_name = inside()
    assert ident["run_name"] == f"train · {run_name}"
    assert ident["tags"]["prefect.flow_run_id"] == run_id and ident["tags"]["prefect.flow_name"] == "train"

    async def link() -> tuple[list, list]:
        async with get_client() as client:
            key = ArtifactFilterKey(any_=["mlflow-train"])
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=key))
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            return arts, logs

    APILogHandler().flush()  # logs reach the API in batches
    arts, logs = asyncio.run(link())
    mine = [a for a in arts if str(a.flow_run_id) == run_id]
    assert len(mine) == 1 and mine[0].type == "markdown"  # Prefect stores a link artifact as markdown
    assert "http://127.0.0.1:5999/#/experiments/3/runs/0123456789abcdef?workflowType=machine_learning" in mine[0].data
    assert any(
        "MLflow run of train: http://127.0.0.1:5999/#/experiments/3/runs/0123456789abcdef" in lg.message for lg in logs
    )


def test_progress_reports_to_the_flow_run_log_and_a_progress_artifact() -> None:
    assert list(progress(iter(range(3)), "outside", total=3)) == [0, 1, 2]  # no Prefect run: tqdm only

    @flow(name="progress-demo")
    def loop() -> tuple[list[int], str]:
        from prefect.runtime import flow_run

        return list(progress(range(4), "render demo", unit="shards", every=3600)), str(flow_run.id)

    items, run_id = loop()
    assert items == [0, 1, 2, 3]

    async def read() -> tuple[list, list]:
        async with get_client() as client:
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["progress-render-demo"]))
            )
            return logs, arts

    APILogHandler().flush()
    logs, arts = asyncio.run(read())
    lines = [lg.message for lg in logs if lg.message.startswith("render demo")]
    # The first item reports (nothing reported yet), then the hour-long throttle holds until the end.
    assert lines == ["render demo: 1/4 shards (25%)", "render demo: 4/4 shards (100%)"]
    mine = [a for a in arts if str(a.flow_run_id) == run_id]
    assert len(mine) == 1 and mine[0].type == "progress" and float(mine[0].data) == 100.0


@pytest.mark.parametrize("register", [True, False])
def test_a_tuned_model_is_registered_only_when_tracking_register_model_says_so(
    tmp_path: Path, register: bool, tracking_uri: None
) -> None:
    """tracking.register_model on: a new version of synrank-<base> with its tags; off (smoke runs): the model is
    logged to the run all the same and the registry stays empty."""
    from tasks.train import log_tuned_model

    model = tmp_path / "model"
    model.mkdir()
    (model / "tuned.json").write_text("{}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # Its own experiment (not one an earlier test left active in another store), artifacts in tmp_path (a
    # sqlite store's default artifact root is ./mlruns, in the checkout).
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("register", (tmp_path / "artifacts").as_uri()))
    with mlflow.start_run() as run:
        uri, version = log_tuned_model(model, "synrank-a" if register else "", {"steps": "3"})
    client = mlflow.MlflowClient()
    assert client.get_logged_model(uri.split("/")[-1]).source_run_id == run.info.run_id
    assert version == ("1" if register else "")
    if register:
        (only,) = client.search_model_versions("name = 'synrank-a'")
        assert (str(only.version), only.tags) == ("1", {"steps": "3"})
    else:
        assert client.search_registered_models() == []


def test_the_prefect_link_is_a_markdown_link_in_the_run_description() -> None:
    url = "http://127.0.0.1:4200/runs/flow-run/abc"
    assert tracking.flow_run_tags("abc", "brave-otter", "train", url) == {
        "prefect.flow_run_id": "abc",
        "prefect.flow_run_name": "brave-otter",
        "prefect.flow_name": "train",
        "prefect.flow_run_url": url,
        "mlflow.note.content": f"Prefect flow run [train / brave-otter]({url})",
    }
    assert "mlflow.note.content" not in tracking.flow_run_tags("abc", "brave-otter", "train", None)
