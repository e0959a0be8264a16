"""`models.validate`: every bad registry key, dangling name, duplicate name or too-small group is refused
by the CLI with exit code 2 and one line naming the key, the value and what is allowed, before Prefect,
a model or a file is touched; the flows refuse the same configs before any compute. Also the rwr
weights, which made `rank.method: zscore` with `train.objective: rwr` unsafe until phi was shifted."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cli.main
from models.validate import load_checked_config, validate_config
from synrank.config import Config, ConfigError, load_config, validate

OBJECTIVES = "dpo, gpo, gpo-phi, rankdpo, rwr, sft, sudo"
GENERATORS = "shapes-sd-xs, shapes-sd-s, shapes-sd-m, shapes-sd-l"
REWARDS = "clip-p4, clip-p8, clip-norel, detector"
ONE_GENERATOR = "generate.generators=[{name: a, path: zoo/shapes-sd-s, steps: 10, height: 32, width: 32}]"
ONE_IMAGE = "generate.images_per_prompt=1"

# (stage, overrides, the key named, the value and what is allowed, all as the line prints them)
BAD = [
    ("train", ["train.objective=rankdop"], "train.objective", "'rankdop'", OBJECTIVES),
    ("online", ["online.objective=gpoo"], "online.objective", "'gpoo'", OBJECTIVES),
    ("study", ["study.arms.1.objective=sftt"], "study.arms.1.objective", "'sftt'", OBJECTIVES),
    (
        "generate",
        ["generate.generators.2.backend=sd5"],
        "generate.generators.2.backend",
        "'sd5'",
        "diffusers, pixart-sigma, sd15, sd3, sdxl, stable-cascade",
    ),
    ("score", ["score.rewards.0.kind=clip"], "score.rewards.0.kind", "'clip'", "aesthetic, clipscore, hpsv2"),
    (
        "evaluate",
        ["evaluate.benchmarks=[geneval-shapes, parti]"],
        "evaluate.benchmarks.1",
        "'parti'",
        "dpg-bench, geneval, geneval-owlv2, geneval-shapes, t2i-compbench",
    ),
    (
        "study",
        ["study.benchmark=t2i-bench"],
        "study.benchmark",
        "'t2i-bench'",
        "dpg-bench, geneval, geneval-owlv2, geneval-shapes, t2i-compbench",
    ),
    # No hub: GenEval's and T2I-CompBench's scorer weights are absent here, and validation names them.
    (
        "evaluate",
        ["evaluate.benchmarks=[geneval-shapes, geneval]"],
        "evaluate.benchmarks.1",
        "'geneval'",
        "GenEval detector (Mask2Former) 'facebook/mask2former-swin-small-coco-instance' (set "
        "SYNRANK_GENEVAL_MASK2FORMER",
    ),
    (
        "study",
        ["study.benchmark=t2i-compbench"],
        "study.benchmark",
        "'t2i-compbench'",
        "T2I-CompBench BLIP-VQA 'Salesforce/blip-vqa-base' (set SYNRANK_T2I_BLIP",
    ),
    (
        "online",
        ["evaluate.benchmarks=[]"],
        "evaluate.benchmarks",
        "[]",
        "dpg-bench, geneval, geneval-owlv2, geneval-shapes, t2i-compbench",
    ),
    ("train", ["train.base=nope"], "train.base", "'nope'", GENERATORS),
    ("generate", ["generate.generators=[]"], "generate.generators", "[]", "`synrank generate` needs at least one"),
    ("online", ["train.base=nope"], "train.base", "'nope'", GENERATORS),  # was a bare StopIteration
    ("rank", ["rank.rewards=[clip-p4, hps]"], "rank.rewards.1", "'hps'", REWARDS),
    ("study", ["study.arms.2.rewards=[clip-p9]"], "study.arms.2.rewards.0", "'clip-p9'", REWARDS),
    (
        "study",
        ["study.reference=rank-dpo"],
        "study.reference",
        "'rank-dpo'",
        "base, sft, dpo-1reward, dpo, rankdpo, gpo, sudo",
    ),
    ("study", ["study.arms.1.objective="], "study.arms", "exactly one arm must be the untrained base", "base, sft"),
    ("generate", ["generate.generators.3.name=shapes-sd-s"], "generate.generators.3.name", "'shapes-sd-s'", "unique"),
    ("score", ["score.rewards.3.name=clip-p8"], "score.rewards.3.name", "'clip-p8'", "unique"),
    ("study", ["study.arms.3.name=sft"], "study.arms.3.name", "'sft'", "unique"),
    (
        "train",
        [ONE_GENERATOR, ONE_IMAGE, "train.base=a"],
        "train.objective",
        "'rankdpo'",
        "K = 1 image(s) per prompt over 1 generator(s)",
    ),
    (
        "study",
        [ONE_GENERATOR, ONE_IMAGE, "train.base=a", "train.objective=sft"],
        "study.arms.2.objective",
        "'dpo'",
        "allowed: rwr, sft, sudo",
    ),
]


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any flow run, model load or Prefect environment change fails the test."""
    import models.benchmarks
    import models.generators
    import models.rewards

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("reached a flow run or a model load")

    monkeypatch.setattr(cli.main, "_run", forbidden)
    for module, name in (
        (models.generators, "load_generator"),
        (models.rewards, "load_reward"),
        (models.benchmarks, "load_benchmark"),
    ):
        monkeypatch.setattr(module, name, forbidden)


@pytest.mark.parametrize("stage, overrides, key, value, allowed", BAD)
def test_cli_refuses_bad_values_before_any_work(
    stage: str,
    overrides: list[str],
    key: str,
    value: str,
    allowed: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_run: None,
) -> None:
    outs = ["prompts", "images", "scores", "rankings", "model", "eval", "metrics"]
    args = [
        stage,
        *(a for k in outs for a in ("--set", f"paths.{k}={tmp_path / k}")),
        "--set",
        f"study.out={tmp_path / 'study'}",
    ]
    for o in overrides:
        args += ["--set", o]
    modules, environ, t0 = set(sys.modules), dict(os.environ), time.monotonic()
    code = cli.main.main(args)
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("synrank: invalid config: ")
    assert f"'{key}'" in err and value in err and allowed in err, err
    assert elapsed < 60  # the registries' imports (torch), no model: a few seconds even on a busy machine
    assert not {m for m in set(sys.modules) - modules if m.split(".")[0] in ("flows", "diffusers", "prefect")}
    assert dict(os.environ) == environ  # PREFECT_HOME etc. are only set for a run that goes ahead
    assert list(tmp_path.iterdir()) == []


def _data(*edits: tuple[str, str, object]) -> dict:
    data = load_config().model_dump(mode="json")
    for section, key, value in edits:
        data[section][key] = value
    return data


@pytest.mark.parametrize(
    "module, edit, key",
    [
        ("flows.pipeline", ("rank", "rewards", ["hps"]), "rank.rewards.0"),
        ("flows.online", ("train", "base", "nope"), "train.base"),
        ("flows.study", ("study", "reference", "nope"), "study.reference"),
    ],
)
def test_flows_refuse_a_bad_config_before_any_compute(
    module: str, edit: tuple[str, str, object], key: str, tmp_path: Path
) -> None:
    """What a Prefect-triggered run gets: the flow body's first line refuses it (the config passed
    pydantic, so only validate_config can catch it); nothing is written."""
    import importlib

    data = _data(
        edit,
        ("paths", "data", str(tmp_path / "data")),
        *(("paths", k, str(tmp_path / k)) for k in ("prompts", "images", "model", "metrics")),
    )
    data["study"]["out"] = str(tmp_path / "study")
    data["tracking"]["tracking_uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = validate(data)
    name = module.split(".")[1]
    flow = getattr(importlib.import_module(module), f"{name}_flow")
    with pytest.raises(ConfigError, match=f"bad value for '{key}'"):
        flow.fn(cfg)
    assert list(tmp_path.iterdir()) == []


def test_the_committed_params_and_their_variants_pass() -> None:
    validate_config(load_config())
    for overrides in (
        ["train.base="],
        ["train.objective=rwr", "rank.method=zscore"],
        [
            ONE_GENERATOR,
            ONE_IMAGE,
            "train.base=a",
            "train.objective=sft",
            "study.arms=[{name: base}, {name: sft, objective: sft}, {name: sudo, objective: sudo}]",
            "study.reference=sft",
        ],
        [ONE_GENERATOR, "train.base=a", "generate.images_per_prompt=2"],
    ):
        assert isinstance(load_checked_config(overrides=overrides), Config)


# --- rwr: weights in [0, 1] summing to 1 per group, whatever the rank method ---


def _rwr(phi: list[list[float]], mask: list[list[bool]] | None = None) -> torch.Tensor:
    from models.objectives import OBJECTIVES

    p = torch.tensor(phi, dtype=torch.float64)
    m = torch.ones_like(p, dtype=torch.bool) if mask is None else torch.tensor(mask)
    return OBJECTIVES.get("rwr").sft(p, torch.ones_like(p), m)


def test_rwr_weights_by_hand() -> None:
    # Shifted by the minimum: (0.2, 0.5, 0.8) -> (0, 0.3, 0.6) -> (0, 1/3, 2/3).
    assert torch.allclose(_rwr([[0.2, 0.5, 0.8]]), torch.tensor([[0.0, 1 / 3, 2 / 3]], dtype=torch.float64))
    # The minimum is over valid images only: the padding slot's 0 neither shifts nor gets weight.
    w = _rwr([[0.6, 0.4, 0.5, 0.0]], [[True, True, True, False]])
    assert torch.allclose(w, torch.tensor([[2 / 3, 0.0, 1 / 3, 0.0]], dtype=torch.float64))
    # All equal (every image ties, any level): no preference, zero weights, not NaN.
    for level in (0.0, 0.5, -0.3):
        assert torch.equal(_rwr([[level] * 3]), torch.zeros(1, 3, dtype=torch.float64))
    # Two groups are independent; a lone valid image has nothing to be preferred over.
    w = _rwr([[1.0, 0.0], [0.3, 0.9]], [[True, False], [True, True]])
    assert torch.equal(w, torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64))


def test_rwr_with_zscore_phi_is_bounded() -> None:
    """The issue's smallest failing input: one prompt, 4 images, 2 rewards, ranked with zscore. Its phi
    sums to 0, so the unshifted shares were about +-1e7."""
    from models.ranking import zscore

    rewards = np.array([[0.3, 1.2], [0.1, -0.4], [0.9, 0.5], [-0.2, 0.0]])
    phi = zscore(rewards)
    assert math.isclose(phi.sum(), 0.0, abs_tol=1e-12)
    shifted = phi - phi.min()
    w = _rwr([phi.tolist()])[0]
    assert torch.allclose(w, torch.tensor(shifted / shifted.sum()))
    assert (w >= 0).all() and (w <= 1).all() and math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)
    assert int(w.argmax()) == 2 and float(w[3]) == 0.0  # the best image (by mean z) most, the worst none


def test_study_and_online_sections_are_checked_only_for_their_commands() -> None:
    """Another reward list is a valid pipeline even though the default study arms name other rewards; a plugin
    name is a type, so a typo in any section is refused by every command (where it is written)."""
    overrides = ["score.rewards=[{name: det, kind: shapes-detector}]"]
    for command in ("sample", "score", "pipeline", "train"):
        assert isinstance(load_checked_config(overrides=overrides, command=command), Config)
    with pytest.raises(ConfigError, match="bad value for 'study.arms.2.rewards.0': 'clip-p8'"):
        load_checked_config(overrides=overrides, command="study")
    for command in ("sample", "online"):
        with pytest.raises(ConfigError, match="^bad value for 'online.objective': 'nope' is not a registered objec"):
            load_checked_config(overrides=[*overrides, "online.objective=nope"], command=command)


def test_a_stage_run_before_its_inputs_exist_says_which_command_makes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    args = [
        "train",
        *(
            a
            for k in ("prompts", "images", "scores", "rankings", "model", "eval", "metrics")
            for a in ("--set", f"paths.{k}={tmp_path / k}")
        ),
    ]
    assert cli.main.main(args) == 2
    err = capsys.readouterr().err
    assert (
        err == f"synrank: '{tmp_path / 'rankings' / 'rankings.parquet'}' does not exist: run `synrank rank` "
        "(or `synrank pipeline`) first\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_engine_ray_without_the_extra_is_refused_for_the_commands_that_run_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "prefect_ray" else real(name, *a))
    for command, key in (("generate", "generate.engine"), ("pipeline", "generate.engine"), ("score", "score.engine")):
        with pytest.raises(
            ConfigError,
            match=rf"^bad value for '{key}': 'ray' needs the ray extra, which is not "
            r"installed here: `python3 -m uv sync --frozen --inexact --extra ray`",
        ):
            load_checked_config(overrides=[f"{key}=ray"], command=command)
    load_checked_config(overrides=["score.engine=ray"], command="rank")  # rank never scores
    with pytest.raises(ConfigError, match=r"^bad value for 'generate.gpus_per_task': .*a whole number of GPUs"):
        load_config(overrides=["generate.gpus_per_task=0.5"])
    assert load_config(overrides=["score.gpus_per_task=0.25"]).score.gpus_per_task == 0.25


def test_where_shards_run_is_not_part_of_any_stage_fingerprint() -> None:
    """Engine settings change where the work runs, not a byte of it: no stage reruns when they change (the
    stages hash their sections, never `cluster`)."""
    from synrank.config import flow_parameters
    from synrank.stamp import fingerprint

    plain = load_config()
    moved = load_config(
        overrides=[
            "generate.engine=ray",
            "generate.gpus_per_task=2",
            "score.shards_per_task=4",
            "score.resources={a100: 1}",
            "cluster.address=10.0.0.1:6379",
        ]
    )
    for stage in ("generate", "score", "train", "evaluate"):
        a, b = (
            fingerprint(stage, {k: v for k, v in flow_parameters(stage, c).items() if k != "cluster"}, [], None)
            for c in (plain, moved)
        )
        assert a == b, stage
    seeded = load_config(overrides=["generate.seed=1"])
    assert fingerprint("generate", seeded.generate, [], None) != fingerprint("generate", plain.generate, [], None)


def test_each_command_checks_only_the_sections_it_reads() -> None:
    """`synrank generate` never trains: a generator list without train.base generates; train refuses it. A
    plugin name is a type: a reward kind typo stops `synrank train` too, where the file is read."""
    no_base = ["generate.generators=[{name: a, path: zoo/shapes-sd-s, steps: 10, height: 32, width: 32}]"]
    assert isinstance(load_checked_config(overrides=no_base, command="generate"), Config)
    with pytest.raises(ConfigError) as err:
        load_checked_config(overrides=no_base, command="train")
    assert str(err.value) == (
        "bad value for 'train.base': 'shapes-sd-s' is not a generator in generate.generators (or empty = the "
        "first); allowed: a"
    )
    bad_kind = ["score.rewards=[{name: r, kind: nope}]", "rank.rewards=[]"]
    for command in ("train", "rank"):
        with pytest.raises(ConfigError, match=r"^bad value for 'score.rewards.0.kind': 'nope' is not a reward kind"):
            load_checked_config(overrides=bad_kind, command=command)


def test_a_deployment_is_checked_for_its_own_sections_only() -> None:
    """The trimmed-rewards smoke config deploys the train deployment; with the study deployment selected too,
    deploy refuses before deploying anything, naming that deployment."""
    from cli.deploy import check_deployments

    cfg = load_config(overrides=["score.rewards=[{name: det, kind: shapes-detector}]"])
    check_deployments(cfg, ["sample", "generate", "score", "rank", "train", "evaluate", "export", "pipeline"])
    with pytest.raises(ConfigError) as err:
        check_deployments(cfg, ["train", "study"])
    assert str(err.value) == (
        "deployment 'study': bad value for 'study.arms.2.rewards.0': 'clip-p8' is not a reward in score.rewards; "
        "allowed: det"
    )
