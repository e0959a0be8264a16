"""Plugins (issue 29): a reward kind, an objective and a benchmark are each one new file in their registry's
folder; the config's types, the Prefect form's choices and the registries all take it from there. And the
train stage's code is only what training imports: editing a reward leaves train current (stamp and DVC)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synrank.config import CODE_ROOT
from synrank.plugins import PLUGIN_FOLDERS, plugin_names
from synrank.registry import import_all

pytestmark = pytest.mark.slow  # subprocesses in a copy of the code

CODE = ("cli", "flows", "tasks", "models", "synrank")

TOY_REWARD = '''"""Toy reward: the mean brightness of the image."""
import numpy as np
from models.rewards.registry import REWARDS


@REWARDS.register("toy-brightness")
class Brightness:
    def __init__(self, spec, device="cpu"):
        self.spec = spec

    def score(self, images, prompts):
        return np.array([np.asarray(i.convert("L"), dtype=np.float64).mean() / 255 for i in images])
'''
TOY_OBJECTIVE = '''"""Toy objective: every ordered pair by phi, weight 1."""
from models.objectives.core import OBJECTIVES, Objective, valid_pairs


def all_pairs(phi, tau, mask):
    return ((phi[:, :, None] > phi[:, None, :]) & valid_pairs(mask)).to(phi.dtype)


OBJECTIVES.register("toy-pairs")(Objective(pairs=all_pairs))
'''
TOY_BENCHMARK = '''"""Toy benchmark: an image passes if it is not black."""
import numpy as np
from models.benchmarks.registries import BENCHMARKS


@BENCHMARKS.register("toy-bright")
class Bright:
    name, tasks = "toy-bright", ("bright",)

    def weights(self):
        return []

    def applies(self, meta):
        return True

    def judge(self, image, meta):
        return "bright", bool(np.asarray(image).max() > 0)

    def summarize(self, results, prompts=None):
        return {"accuracy": float(np.mean([p for _, p in results]))}
'''
# Run inside the copy: the config, the registries and the train form, as a user's command would see them.
PROBE = """
import json, sys
import torch
from PIL import Image
from synrank.config import load_config
from models.validate import validate_config
from models.rewards import load_reward
from models.objectives import OBJECTIVES, objective_loss
from models.benchmarks import load_benchmark
from cli.deploy import form_schema
from flows.train import train_flow
cfg = load_config(overrides=["score.rewards.0.kind=toy-brightness", "train.objective=toy-pairs",
                             "evaluate.benchmarks=[geneval-shapes, toy-bright]"])
validate_config(cfg, "train", weights=False)
img = [Image.new("RGB", (4, 4), (255, 255, 255)), Image.new("RGB", (4, 4))]
phi, tau, mask = torch.tensor([[1.0, 0.5, 0.0]]), torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.bool)
loss, w = objective_loss(OBJECTIVES.get("toy-pairs"), torch.zeros(1, 3), torch.zeros(1, 3), phi, tau, mask, 1.0)
bench = load_benchmark("toy-bright")
form = form_schema(train_flow.parameters.model_dump(), "train", cfg)
print(json.dumps({
    "reward": load_reward(cfg.score.rewards[0]).score(img, ["a", "b"]).tolist(),
    "pairs": int(w.sum()), "loss": float(loss),
    "bench": bench.summarize([bench.judge(i, {}) for i in img]),
    "objective_choices": form["definitions"]["TrainConfig"]["properties"]["objective"]["enum"],
}))
"""


@pytest.fixture(scope="module")
def copy_with_toys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synrank's code and params.yaml in a temporary folder, plus the three toy plugin files."""
    root = tmp_path_factory.mktemp("checkout")
    for name in CODE:
        shutil.copytree(CODE_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CODE_ROOT / "params.yaml", root / "params.yaml")
    (root / "models/rewards/toy_brightness.py").write_text(TOY_REWARD)
    (root / "models/objectives/toy_pairs.py").write_text(TOY_OBJECTIVE)
    (root / "models/benchmarks/toy_bright.py").write_text(TOY_BENCHMARK)
    return root


def _python(root: Path, code: str) -> str:
    env = {"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_names_read_from_the_files_equal_the_registries() -> None:
    from models.benchmarks import benchmark_names
    from models.generators import GENERATORS
    from models.objectives import OBJECTIVES
    from models.rewards import REWARDS

    for package in ("models.generators", "models.rewards", "models.benchmarks"):
        import_all(package)
    filled = {
        "objective": OBJECTIVES.names(),
        "generator backend": GENERATORS.names(),
        "reward kind": REWARDS.names(),
        "benchmark": benchmark_names(),
    }
    assert set(filled) == set(PLUGIN_FOLDERS)
    assert {k: list(plugin_names(k)) for k in filled} == filled


def test_a_reward_an_objective_and_a_benchmark_are_one_file_each(copy_with_toys: Path) -> None:
    got = json.loads(_python(copy_with_toys, PROBE))
    assert got["reward"] == [1.0, 0.0]  # white, black
    assert got["pairs"] == 3  # (1 > 0.5), (1 > 0), (0.5 > 0): the toy's own weights reached the shared loss
    assert got["loss"] == pytest.approx(3 * 0.6931471805599453)  # s = 0: each pair -log sigmoid(0)
    assert got["bench"] == {"accuracy": 0.5}
    assert "toy-pairs" in got["objective_choices"] and "rankdpo" in got["objective_choices"]
    refused = _python(
        copy_with_toys,
        "from synrank.config import load_config, ConfigError\n"
        "try:\n    load_config(overrides=['train.objective=toy-pair'])\nexcept ConfigError as e:\n    print(e)",
    )
    assert refused.startswith("bad value for 'train.objective': 'toy-pair' is not a registered objective; allowed: ")
    assert "toy-pairs" in refused


def _deps(stage: str) -> list[str]:
    return yaml.safe_load((CODE_ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]


def _dvc(root: Path, *args: str) -> str:
    dvc = str(Path(sys.executable).with_name("dvc"))
    out = subprocess.run([dvc, *args], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_editing_a_reward_leaves_train_current(copy_with_toys: Path) -> None:
    """The train stage's stamp (its code id) and `dvc status train` (its deps, those of dvc.yaml) stay
    current when a reward file changes; the score stage, which runs rewards, goes stale in both."""
    root = copy_with_toys
    code_ids = "from synrank.codehash import stage_code_id\nprint(stage_code_id('train'), stage_code_id('score'))"
    stages = {
        s: {"cmd": f"echo {s} > {s}.out", "deps": [d for d in _deps(s) if d.split("/")[0] in CODE]}
        for s in ("train", "score")
    }
    for s in stages:
        stages[s]["outs"] = [f"{s}.out"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "repro", "-q")
    before = _python(root, code_ids).split()
    reward = root / "models/rewards/clipscore.py"
    reward.write_text(reward.read_text() + "# an edit\n")
    after = _python(root, code_ids).split()
    assert after[0] == before[0] and after[1] != before[1]
    status = json.loads(_dvc(root, "status", "--json"))
    assert "train" not in status and "score" in status
