"""The user's path through the two UIs, for real: `make up`'s services (synrank.services, a cpu and a
gpu pool), the pipeline deployment triggered through the API on a tiny world, then headless Chromium
(Debian's package, driven by Playwright for Python; no browser download) submits a custom run of the
train deployment with a changed step count in the Prefect UI, and follows the run's link artifact to
its MLflow run, which must show that step count.

- test_pipeline_deployment_trains_on_the_gpu_pool: the pipeline run hands its train stage to the train
  deployment (synrank.subdeploy); that run sits on the gpu pool, nested under the pipeline in Prefect and
  under the pipeline's run in MLflow. Needs no browser.
- test_a_custom_train_run_from_the_prefect_ui_links_to_its_mlflow_run: skipped, with the reason, where
  Chromium or Playwright is missing (`.ci/run` installs Chromium). Screenshots go to screenshots/
  (ignored by git).
Both start servers (a few minutes on 2 cores): marked `integration`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from synrank.config import ROOT, TrackingConfig, params_yaml
from tests.test_pipeline import tiny_config
from tests.test_services import Services, get_json, needs_tools, running_services, wait_for

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = ROOT / "screenshots"
PIPELINE_TIMEOUT = 900  # seconds: every stage of the tiny world through two workers on a busy 2-core box
STEPS = 4  # the tiny world's train.steps is 3: the browser changes it to this


DVC_TRAIN = """stages:
  train:
    cmd: synrank train
    deps: [outputs/rankings, outputs/images]
    params: [train]
    outs: [outputs/model]
"""


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run([Path(sys.executable).with_name("dvc"), *args], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed: {done.stdout}{done.stderr}"
    return done.stdout


def _contents(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def _workspace(world: Services) -> tuple[dict[str, Any], dict[str, str]]:
    """`dvc status` of the world's project and its model folder's files by content."""
    return json.loads(_dvc(world.out.parent, "status", "--json")), _contents(world.out / "model")


def _playwright_missing() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (it is in the dev group: uv sync)"
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install chromium; .ci/run does it)"
    return ""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("browser")
    cfg = tiny_config(tmp)
    cfg.tracking = TrackingConfig(experiment="browser-test", tracking_uri="")  # "" = the workers' server
    params = tmp / "params.yaml"
    params.write_text(params_yaml(cfg))
    # A DVC project whose train stage is the workspace's model folder (what `dvc status` watches).
    _dvc(tmp, "init", "--no-scm", "-q")
    (tmp / "dvc.yaml").write_text(DVC_TRAIN)
    with running_services(tmp, params, ["pipeline", "train"], pools="cpu gpu") as svc:
        yield svc


def _client(svc: Services) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class Session:
        def __enter__(self) -> Any:
            self.settings = temporary_settings(updates={PREFECT_API_URL: f"{svc.prefect_url}/api"})
            self.settings.__enter__()
            self.client = get_client(sync_client=True).__enter__()
            return self.client

        def __exit__(self, *exc: object) -> None:
            self.client.__exit__(*exc)
            self.settings.__exit__(*exc)

    return Session()


def _mlflow_runs(svc: Services, experiment: str = "browser-test") -> list[dict]:
    exp = get_json(f"{svc.mlflow_url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")
    found = get_json(
        f"{svc.mlflow_url}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 100},
    )
    return found.get("runs", [])


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.fixture(scope="module")
def pipeline_run(world: Services) -> Any:
    """The pipeline deployment, run once with its defaults (the UI's Quick run)."""
    with _client(world) as client:
        dep = client.read_deployment_by_name("pipeline/pipeline")
        return wait_for(client, client.create_flow_run_from_deployment(dep.id), world, timeout=PIPELINE_TIMEOUT)


@pytest.mark.integration
@needs_tools
def test_pipeline_deployment_trains_on_the_gpu_pool(world: Services, pipeline_run: Any) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter

    with _client(world) as client:
        train_dep = client.read_deployment_by_name("train/train")
        assert train_dep.work_pool_name == "gpu"
        trains = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[train_dep.id])),
            flow_run_filter=FlowRunFilter(),
        )
        trains = [r for r in trains if r.parent_task_run_id is not None]  # the pipeline's, not the UI's
        assert len(trains) == 1 and trains[0].state.is_completed()
        assert trains[0].work_pool_name == "gpu" and trains[0].parent_task_run_id is not None  # a sub-flow run
        parent_task = client.read_task_run(trains[0].parent_task_run_id)
        assert parent_task.flow_run_id == pipeline_run.id  # nested under the pipeline in the Prefect UI
    runs = {_tags(r).get("prefect.flow_run_id"): r for r in _mlflow_runs(world)}
    pipeline_mlflow, train_mlflow = runs[str(pipeline_run.id)], runs[str(trains[0].id)]
    assert _tags(train_mlflow)["mlflow.parentRunId"] == pipeline_mlflow["info"]["run_id"]
    # The gpu worker's process ran the training (MLflow's "View run" line for it is in that worker's log).
    train_id = train_mlflow["info"]["run_id"]
    assert train_id in (world.run_dir / "worker-gpu.log").read_text()
    assert train_id not in (world.run_dir / "worker-cpu.log").read_text()


SUBMIT_ATTEMPTS = 3  # clicks on Submit while the server answers 503 (see _submit_custom_run)


def _submit_custom_run(page: Any, deployment_id: Any) -> UUID:
    """Click the custom run form's Submit and return the id of the flow run the UI created.

    Waits on the UI's own POST to /deployments/<id>/create_flow_run (the page stays on .../run until it
    answers, then goes to the deployment's page), so a slow server only makes this slower; a form that
    posts nothing or a refused post fails here with the page's text and a screenshot, not later.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    posted = re.compile(rf"/deployments/{deployment_id}/create_flow_run$")
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        try:
            with page.expect_response(lambda r: bool(posted.search(r.url)), timeout=180_000) as answer:
                page.get_by_role("button", name="Submit").click()
        except PlaywrightTimeout as err:
            page.screenshot(path=SCREENSHOTS / "1-submit-posted-nothing.png", full_page=True)
            raise AssertionError(
                f"the Prefect UI posted no flow run in 180 s; the page says: {page.inner_text('body')}"
            ) from err
        response = answer.value
        # 503 is the Prefect server's "retry me" (a SQLite write that met another one; its transaction rolled
        # back, no run was made): Prefect's own client retries it, the UI shows an error and stays on the
        # form, so a user clicks Submit again, as here. Anything else is a refusal.
        if response.status != 503 or attempt == SUBMIT_ATTEMPTS:
            break
        page.screenshot(path=SCREENSHOTS / f"1-submit-503-{attempt}.png", full_page=True)
        page.wait_for_timeout(2_000)
    assert response.ok, f"the Prefect API refused the UI's flow run: {response.status} {response.text()}"
    page.wait_for_url(re.compile(rf"/deployments/deployment/{deployment_id}([?#].*)?$"), timeout=60_000)
    return UUID(response.json()["id"])


@pytest.mark.integration
@needs_tools
@pytest.mark.skipif(bool(_playwright_missing()), reason=_playwright_missing() or "n/a")
def test_a_custom_train_run_from_the_prefect_ui_links_to_its_mlflow_run(world: Services, pipeline_run: Any) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    _dvc(world.out.parent, "commit", "-f", "-q", "train")  # dvc.lock records the pipeline's model
    assert (workspace := _workspace(world))[0] == {}  # dvc status: clean
    with _client(world) as client:
        train_dep = client.read_deployment_by_name("train/train")
        before = {r.id for r in client.read_flow_runs()}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            # The deployment's custom run form: only the train section, its fields typed, defaults deployed.
            page.goto(f"{world.prefect_url}/deployments/deployment/{train_dep.id}/run", wait_until="networkidle")
            steps = (
                page.locator("label", has_text=re.compile(r"^Steps\b"))
                .locator("xpath=ancestor::*[.//input][1]")
                .locator("input")
                .first
            )
            assert steps.input_value() == "3"
            steps.fill(str(STEPS))
            page.screenshot(path=SCREENSHOTS / "1-train-custom-run.png", full_page=True)
            created = _submit_custom_run(page, train_dep.id)
            with _client(world) as client:
                new = [r for r in client.read_flow_runs() if r.id not in before]
                assert [r.id for r in new] == [created] and new[0].deployment_id == train_dep.id, new
                run = wait_for(client, new[0], world, timeout=PIPELINE_TIMEOUT)
            assert run.parameters["cfg"]["steps"] == STEPS

            # The run's page, Artifacts tab, the mlflow-train card: its link opens the MLflow run; follow it.
            page.goto(f"{world.prefect_url}/runs/flow-run/{run.id}", wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.locator("a[href^='/artifacts/artifact/']", has_text="mlflow-train").first.click()
            link = page.locator(f"a[href^='{world.mlflow_url}']:visible").first
            link.wait_for(timeout=30_000)
            page.screenshot(path=SCREENSHOTS / "2-link-artifact.png", full_page=True)
            href = link.get_attribute("href")
            if link.get_attribute("target") == "_blank":
                with page.context.expect_page() as opened:
                    link.click()
                page = opened.value
            else:
                link.click()
            page.wait_for_url(f"{world.mlflow_url}/**", timeout=30_000)
            row = page.locator("tr, [role=row]", has=page.get_by_text("train.steps", exact=True)).first
            row.wait_for(timeout=60_000)
            page.screenshot(path=SCREENSHOTS / "3-mlflow-run.png", full_page=True)
            assert str(STEPS) in row.inner_text().split(), row.inner_text()
        finally:
            browser.close()
    run_id = href.split("/runs/")[1].split("/")[0].split("?")[0]
    logged = get_json(f"{world.mlflow_url}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    assert {p["key"]: p["value"] for p in logged["data"]["params"]}["train.steps"] == str(STEPS)
    assert _tags(logged)["prefect.flow_run_id"] == str(run.id)
    assert run.parameters["cfg"] == {**train_dep.parameters["cfg"], "steps": STEPS}  # the other fields kept
    # Other steps than params.yaml's: an experiment, in its own folder; the workspace's model is untouched.
    assert (world.out / "runs" / run.name / "model" / "tuned.json").is_file()
    assert _workspace(world) == workspace


@pytest.mark.integration
@needs_tools
def test_the_train_deployment_with_two_processes_is_one_run_everywhere(world: Services, pipeline_run: Any) -> None:
    """The train form's `processes` set to 2: the gpu worker's flow run launches the two ranks itself, and the
    run is still one Prefect flow run, one MLflow run (what accelerate really ran: 2 processes), one new
    registry version, and the model folder holds what a one-process run's holds (no file from the second
    rank, no work folder left, no stray mlflow.db in the worker's folder)."""
    files = sorted(p.name for p in (world.out / "model").iterdir())  # the pipeline's one-process model
    with _client(world) as client:
        dep = client.read_deployment_by_name("train/train")
        before = {r.id for r in client.read_flow_runs()}
        cfg = {**dep.parameters["cfg"], "processes": 2, "steps": 2}
        run = wait_for(client, client.create_flow_run_from_deployment(dep.id, parameters={"cfg": cfg}), world)
        assert [r.id for r in client.read_flow_runs() if r.id not in before] == [run.id]
    logged = [r for r in _mlflow_runs(world) if _tags(r).get("prefect.flow_run_id") == str(run.id)]
    assert len(logged) == 1
    params = {p["key"]: p["value"] for p in logged[0]["data"]["params"]}
    assert (params["train.processes"], params["effective_processes"], params["train.steps"]) == ("2", "2", "2")
    versions = get_json(f"{world.mlflow_url}/api/2.0/mlflow/model-versions/search?max_results=100")
    mine = [v for v in versions["model_versions"] if v.get("run_id") == logged[0]["info"]["run_id"]]
    assert len(mine) == 1
    model = world.out / "runs" / run.name / "model"  # other settings than deployed: the run's own folder
    assert sorted(p.name for p in model.iterdir()) == files
    assert not list(model.parent.glob(f".{model.name}-work/*")) and not (ROOT / "mlflow.db").exists()


@pytest.mark.integration
@needs_tools
@pytest.mark.skipif(bool(_playwright_missing()), reason=_playwright_missing() or "n/a")
def test_the_pipeline_form_is_short_and_mlflow_opens_on_the_training_runs(world: Services, pipeline_run: Any) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    with _client(world) as client:
        dep = client.read_deployment_by_name("pipeline/pipeline")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            # The pipeline's custom run form: the fields a run changes, the rest deployed (cli.deploy).
            page.goto(f"{world.prefect_url}/deployments/deployment/{dep.id}/run", wait_until="networkidle")
            page.locator("label", has_text=re.compile(r"^Steps\b")).first.wait_for(timeout=60_000)
            page.screenshot(path=SCREENSHOTS / "4-pipeline-form.png", full_page=True)
            # Every label the page shows: the run's name, the section titles and the 20 fields of PIPELINE_FORM.
            labels = [t.strip() for t in page.locator("label:visible").all_inner_texts() if t.strip()]
            assert 20 <= len(labels) <= 40, labels
            # MLflow from its home page: the sidebar's switch flipped to "Model training" once (the README's
            # one step; MLflow 3.17 saves it in the browser), then the experiment's link opens its training
            # runs, on this visit and on a later one.
            page.goto(f"{world.mlflow_url}/")  # MLflow's UI polls: never network-idle
            page.get_by_text("Model training", exact=True).first.click()
            for visit in ("first", "later"):
                page.goto(f"{world.mlflow_url}/")
                page.get_by_role("link", name="browser-test").first.click()
                page.wait_for_url(re.compile(r".*#/experiments/\d+.*"), timeout=60_000)
                page.get_by_text(re.compile(r"^pipeline · ")).first.wait_for(timeout=60_000)
                page.screenshot(path=SCREENSHOTS / f"5-mlflow-from-home-{visit}.png", full_page=True)
            assert "traces" not in page.url.lower(), page.url
        finally:
            browser.close()
