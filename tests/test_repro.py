"""`synrank repro`: dvc repro's stages share one Prefect API, and a repro with nothing to do starts none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import synrank.repro
from synrank.atomic import write_json
from synrank.config import Config, validate
from synrank.fingerprint import STAMP
from synrank.stamp import fingerprint, output_id, sample_identity

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

CFG = Config()

# A one-stage DVC project whose stage writes the Prefect API it was given (or '-' for none) to api.txt.
DVC_YAML = """stages:
  probe:
    cmd: {python} -c "import os; open('api.txt', 'w').write(os.environ.get('PREFECT_API_URL', '-'))"
    deps: [input.txt]
    outs: [api.txt]
"""


class RecordingServer:
    """Stands in for synrank.repro.temporary_server: records its start and stop, serves nothing."""

    events: list[str] = []

    def __init__(self, timeout: int) -> None:
        self.api_url = "http://127.0.0.1:8999/api"
        self.events.append(f"start {timeout}")

    def stop(self) -> None:
        self.events.append("stop")


@pytest.fixture
def dvc_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    subprocess.run([Path(sys.executable).with_name("dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    (tmp_path / "input.txt").write_text("1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(synrank.repro, "temporary_server", RecordingServer)
    RecordingServer.events = []
    return tmp_path


def test_stages_share_one_server_only_when_one_must_run(dvc_project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
    assert synrank.repro.stale_stages([], env) == ["probe"]
    assert synrank.repro.run_repro([], env, CFG) == 0
    # The stage ran against the one server, started with the configured timeout and stopped after dvc.
    assert (dvc_project / "api.txt").read_text() == "http://127.0.0.1:8999/api"
    assert RecordingServer.events == ["start 90", "stop"]
    assert synrank.repro.stale_stages([], env) == []
    assert synrank.repro.run_repro([], env, CFG) == 0  # nothing to do: no server
    assert RecordingServer.events == ["start 90", "stop"]
    # With a server of the user's (make up) the stage uses it and none is started.
    (dvc_project / "input.txt").write_text("2")
    assert synrank.repro.run_repro([], {**env, "PREFECT_API_URL": "http://127.0.0.1:4200/api"}, CFG) == 0
    assert (dvc_project / "api.txt").read_text() == "http://127.0.0.1:4200/api"
    assert RecordingServer.events == ["start 90", "stop"]


def test_an_unknown_target_is_named_before_any_server_starts(dvc_project: Path) -> None:
    with pytest.raises(RuntimeError, match="dvc status nosuchstage` failed: .*nosuchstage"):
        synrank.repro.run_repro(["nosuchstage"], dict(os.environ, PREFECT_API_URL=""), CFG)
    assert RecordingServer.events == []


def test_a_stale_lock_entry_over_a_current_stamp_needs_no_server(tmp_path: Path) -> None:
    """After `make run` dvc.lock is stale but the stamps are current: those stages return before Prefect."""
    (tmp_path / "p.txt").write_text("a red circle\n")
    out = tmp_path / "prompts"
    cfg = validate({"paths": {"prompts": str(out)}, "sample": {"sources": [{"path": str(tmp_path / "p.txt")}]}})
    out.mkdir()
    (out / "prompts.parquet").write_bytes(b"made by the sample stage")
    fp = fingerprint("sample", **sample_identity(cfg.sample, cfg.paths))
    write_json(out / STAMP, {"stage": "sample", "fingerprint": fp, "outputs": output_id(out)})
    assert not synrank.repro.will_compute(["sample"], cfg)
    assert synrank.repro.will_compute(["sample", "data.dvc"], cfg)  # not a synrank stage: it runs
    assert synrank.repro.will_compute(["generate"], cfg)  # no stamp at all
    (tmp_path / "p.txt").write_text("a blue square\n")  # an edited source: the stamp no longer vouches
    assert synrank.repro.will_compute(["sample"], cfg)


def test_a_stage_with_nothing_to_do_leaves_dvc_status_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run lock lives beside the output folder (synrank.runlock), so a `synrank sample` that finds its
    stamp current changes nothing DVC tracks; before, the lock inside outputs/prompts made it "modified"."""
    from cli.main import main
    from synrank.config import params_yaml
    from tests.test_pipeline import tiny_config

    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("stages:\n  sample:\n    cmd: synrank sample\n    outs: [outputs/prompts]\n")
    params = tmp_path / "params.yaml"
    params.write_text(params_yaml(tiny_config(tmp_path)))
    monkeypatch.chdir(tmp_path)

    def dvc_status() -> str:
        return subprocess.run([dvc, "status", "--json"], capture_output=True, text=True, check=True).stdout.strip()

    assert main(["sample", "--params", str(params)]) == 0
    subprocess.run([dvc, "commit", "-f", "-q", "sample"], check=True)
    assert dvc_status() == "{}"
    assert main(["sample", "--params", str(params)]) == 0  # up to date: nothing runs
    assert dvc_status() == "{}"
    assert (tmp_path / "outputs" / ".synrank-locks" / "prompts.lock").exists()
