"""DVC experiments on a tiny synrank project, with real git, dvc and the `synrank` command (issue 26):
`dvc exp run --set-param` twice, `dvc exp show` and `dvc metrics diff` on the headline metrics, and
`dvc exp run --temp`, which runs every stage in DVC's copy of the repository: the copy's params.yaml and
outputs are the experiment's, the workspace stays byte-identical, and the runs land in the workspace's MLflow.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml

from tests.fixtures.tiny_models import build_tiny_clip, build_tiny_sd

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

BIN = Path(sys.executable).parent
PROMPTS = ["a red circle", "two blue squares", "a star", "a green ring", "three triangles", "a white square"]
# The stages of synrank's own dvc.yaml without the code deps (the package is not in this repository).
STAGES = {
    "sample": ("prompts.txt", "sample", ["outputs/prompts"]),
    "generate": ("outputs/prompts", "generate", ["outputs/images"]),
    "score": ("outputs/images", "score", ["outputs/scores"]),
    "rank": ("outputs/scores", None, ["outputs/rankings"]),
    "train": ("outputs/rankings", "train", ["outputs/model"]),
    "evaluate": ("outputs/model", "evaluate", ["outputs/eval"]),
}
GITIGNORE = "/mlflow/\n/.prefect/\n/.synrank/\n.synrank-locks/\n/metrics/*\n!/metrics/headline.json\n/.env.json\n"


def _dvc_yaml() -> dict[str, Any]:
    stages: dict[str, Any] = {}
    for name, (dep, section, outs) in STAGES.items():
        stage: dict[str, Any] = {
            "cmd": f"synrank {name}",
            "deps": [dep],
            "outs": [{o: {"persist": True}} for o in outs],
        }
        if section:
            stage["params"] = [section]
        stages[name] = stage
    stages["evaluate"]["outs"].append("metrics/evaluate.json")
    stages["evaluate"]["metrics"] = [{"metrics/headline.json": {"cache": False}}]
    return {"stages": stages}


def _params(models: Path) -> dict[str, Any]:
    gens = [{"name": n, "path": str(models / n), "steps": 2, "height": 32, "width": 32} for n in ("gen-a", "gen-b")]
    return {
        "sample": {"sources": [{"path": "prompts.txt"}], "eval_fraction": 0.34},
        "generate": {"generators": gens, "batch_size": 4, "shard_size": 4},
        "score": {"rewards": [{"name": "clip", "arch": f"local-dir:{models / 'clip'}"}]},
        "train": {"steps": 2, "prompts_per_step": 2, "lora_rank": 2, "log_every": 1},
        "evaluate": {"images_per_prompt": 1, "grid_prompts": 0},
        "tracking": {"experiment": "exps", "register_model": False},
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository with a tiny synrank project, reproduced once and committed."""
    from prefect.settings import PREFECT_API_URL

    root, models = tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("models")
    for name, seed in (("gen-a", 1), ("gen-b", 2)):
        build_tiny_sd(models / name, seed=seed, channels=(16, 32))
    build_tiny_clip(models / "clip", seed=3)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (root / "params.yaml").write_text(yaml.safe_dump(_params(models), sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump(_dvc_yaml(), sort_keys=False))
    (root / ".gitignore").write_text(GITIGNORE)
    # The stages talk to this session's Prefect server and, with no tracking URI anywhere, MLflow's
    # default store: the workspace's mlflow/mlflow.db.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "SYNRANK_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", PREFECT_API_URL=str(PREFECT_API_URL.value()))
    env.update(OMP_NUM_THREADS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t")
    env["GIT_COMMITTER_EMAIL"] = "t@x"
    (root / ".env.json").write_text(json.dumps(env))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "a"]):
        _run(root, *cmd)
    in_process(root, models)  # the six stages once, in this process: six `synrank` processes cost more
    _run(root, "dvc", "commit", "-f", "-q")  # dvc.lock records them; `dvc status` is clean
    assert json.loads(_run(root, "dvc", "status", "--json")) == {}
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "reproduced")
    return root


def in_process(root: Path, models: Path) -> None:
    """Every stage in this process, on the project's params with its folders absolute (this process's project
    is synrank's checkout) and the project's own MLflow store: what `dvc repro` would make."""
    from synrank.config import flow_parameters, validate

    raw = _params(models)
    raw["sample"]["sources"] = [{"path": str(root / "prompts.txt")}]
    raw["paths"] = {k: str(root / "outputs" / k) for k in ("prompts", "images", "scores", "rankings", "model", "eval")}
    raw["paths"]["metrics"] = str(root / "metrics")
    raw["tracking"]["tracking_uri"] = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    cfg = validate(raw)
    for stage in STAGES:
        flow = getattr(importlib.import_module(f"flows.{stage}"), f"{stage}_flow")
        flow(**flow_parameters(stage, cfg))


def _run(root: Path, *cmd: str) -> str:
    env = json.loads((root / ".env.json").read_text()) if (root / ".env.json").exists() else None
    tool = str(BIN / cmd[0]) if cmd[0] == "dvc" else cmd[0]
    done = subprocess.run([tool, *cmd[1:]], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _files(root: Path) -> dict[str, str]:
    """Every file of the workspace but git's, DVC's and MLflow's own stores, by content."""
    skip = (".git/", ".dvc/", "mlflow/")
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).as_posix().startswith(skip)
    }


def _exp_lock(root: Path, name: str) -> dict[str, Any]:
    """The dvc.lock an experiment committed (experiments are git refs under refs/exps)."""
    refs = _run(root, "git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").split("\n")
    sha = next(line.split()[0] for line in refs if line.endswith(f"/{name}"))
    return yaml.safe_load(_run(root, "git", "show", f"{sha}:dvc.lock"))


def _model_md5(lock: dict[str, Any]) -> str:
    return next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "outputs/model")


def _train_steps_in_mlflow(root: Path) -> list[str]:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("exps")
    runs = client.search_runs([exp.experiment_id], "tags.`synrank.stage` = 'train'")
    return sorted(r.data.params["train.steps"] for r in runs)


def test_a_temp_experiment_runs_on_its_copy_and_leaves_the_workspace_alone(project: Path) -> None:
    before = _files(project)
    _run(project, "dvc", "exp", "run", "--temp", "--set-param", "train.steps=3", "-n", "temp3")
    assert _files(project) == before  # params.yaml, dvc.lock, outputs/, metrics/: byte-identical
    lock = _exp_lock(project, "temp3")
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["steps"] == 3
    # The copy trained with its own params.yaml: another model than the workspace's 2-step one.
    workspace_lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert _model_md5(lock) != _model_md5(workspace_lock)
    # Its MLflow runs went to the workspace's store ($DVC_ROOT), not into the discarded copy.
    assert _train_steps_in_mlflow(project) == ["2", "3"]


def test_two_experiments_compare_in_exp_show_and_metrics_diff(project: Path) -> None:
    """temp3 (the test above, in DVC's copy) and steps4 (in the workspace): two values of train.steps."""
    if "temp3" not in _run(project, "dvc", "exp", "list", "--name-only"):
        _run(project, "dvc", "exp", "run", "--temp", "--set-param", "train.steps=3", "-n", "temp3")
    _run(project, "dvc", "exp", "run", "--set-param", "train.steps=4", "-n", "steps4")
    shown = json.loads(_run(project, "dvc", "exp", "show", "--json"))
    metrics = {exp["name"]: exp["data"]["metrics"]["metrics/headline.json"]["data"] for exp in _experiments(shown)}
    for name in ("temp3", "steps4"):
        assert set(metrics[name]["winrate"]["clip"]) == {"tuned_vs_base", "ci_lo", "ci_hi"}
    diff = _run(project, "dvc", "metrics", "diff", "--all", "temp3", "steps4", "--json")
    rows = json.loads(diff)["metrics/headline.json"]
    a, b = (metrics[n]["winrate"]["clip"]["tuned_vs_base"] for n in ("temp3", "steps4"))
    assert rows["winrate.clip.tuned_vs_base"] == {"old": a, "new": b, "diff": pytest.approx(b - a)}
    params = json.loads(_run(project, "dvc", "params", "diff", "--all", "temp3", "steps4", "--json"))
    assert params["params.yaml"]["train.steps"] == {"old": 3, "new": 4, "diff": 1}
    # `dvc exp apply` makes an experiment the workspace: its params and outputs, nothing stale.
    _run(project, "dvc", "exp", "apply", "temp3")
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["steps"] == 3
    assert json.loads(_run(project, "dvc", "status", "--json")) == {}


def _experiments(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The named experiments of `dvc exp show --json` (each baseline lists its experiments' revisions)."""
    found = []
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            found += [rev for rev in exp.get("revs", []) if rev.get("name")]
    return found
