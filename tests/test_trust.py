"""Issue 28's cases: content ids that survive no change, images that cannot vanish, names that cannot escape,
reports that stay small. Each test failed on the main before the fix."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from synrank.config import GenerateConfig, Paths, SampleConfig, TrackingConfig
from tests.fixtures.tiny_models import build_tiny_sd


def overwrite_in_place(target: Path, source: Path) -> None:
    """What `tar -x` over an existing file does: the same inode gets the new bytes, the old mtime is set back."""
    before = target.stat()
    data = source.read_bytes()
    assert len(data) == before.st_size  # the same size, so only the content differs
    with target.open("r+b") as f:
        f.write(data)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def generated(tmp_path: Path, n_prompts: int, shard_size: int) -> tuple[Callable[[], None], Path]:
    """A tiny generator (tmp_path/model) over `n_prompts` prompts, 2 images each, generated once; returns the
    generate stage's rerun and the images folder."""
    from flows.generate import generate_flow
    from flows.sample import sample_flow

    build_tiny_sd(tmp_path / "model", seed=4, channels=(16, 32))
    (tmp_path / "p.txt").write_text("".join(f"a photo of {i} red circles\n" for i in range(n_prompts)))
    paths = Paths(prompts=str(tmp_path / "prompts"), images=str(tmp_path / "images"))
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="trust")
    sample_flow(SampleConfig(sources=[{"path": str(tmp_path / "p.txt")}], eval_fraction=0.0), paths, tracking)
    spec = {"name": "g", "path": str(tmp_path / "model"), "steps": 1, "height": 32, "width": 32}
    cfg = GenerateConfig(generators=[spec], images_per_prompt=2, batch_size=6, shard_size=shard_size)

    def rerun() -> None:
        generate_flow(cfg, paths=paths, tracking=tracking)

    rerun()
    return rerun, tmp_path / "images"


@pytest.mark.slow
def test_weights_replaced_in_place_with_the_old_size_and_mtime_rerender_every_image(tmp_path: Path) -> None:
    rerun, images = generated(tmp_path, n_prompts=3, shard_size=3)
    build_tiny_sd(tmp_path / "other", seed=5, channels=(16, 32))  # same shapes, other weights
    before = pd.read_parquet(images / "manifest.parquet").set_index("image_id")["sha256"]
    for part in ("unet", "text_encoder"):
        for f in (tmp_path / "model" / part).glob("*.safetensors"):
            overwrite_in_place(f, tmp_path / "other" / part / f.name)
    rerun()
    after = pd.read_parquet(images / "manifest.parquet").set_index("image_id")["sha256"]
    assert len(after) == 6 and not (after.reindex(before.index) == before).any()  # all 6 rendered again


@pytest.mark.slow
def test_a_1_mib_prompt_leaves_a_small_stamp_and_report(tmp_path: Path) -> None:
    from flows.generate import generate_flow
    from flows.sample import sample_flow
    from models.prompt_fit import excerpt

    huge = "a red circle " * (2**20 // 13)
    (tmp_path / "p.txt").write_text(huge + "\na blue square\n")
    build_tiny_sd(tmp_path / "model", seed=4, channels=(16, 32))
    paths = Paths(prompts=str(tmp_path / "prompts"), images=str(tmp_path / "images"))
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="trust")
    sample = SampleConfig(sources=[{"path": str(tmp_path / "p.txt")}], eval_fraction=0.0, max_prompt_chars=2**21)
    sample_flow(sample, paths, tracking)
    spec = {"name": "g", "path": str(tmp_path / "model"), "steps": 1, "height": 32, "width": 32}
    generate_flow(GenerateConfig(generators=[spec], batch_size=2, shard_size=2), paths=paths, tracking=tracking)
    stamp, report = tmp_path / "images" / "_stage.json", tmp_path / "images" / "prompt_fit" / "g.json"
    assert stamp.stat().st_size < 10_000 and report.stat().st_size < 10_000
    assert excerpt(huge.strip()) in report.read_text() and f"({len(huge.strip())} characters)" in report.read_text()


def test_fusing_a_tuned_model_refuses_a_pickled_lora(tmp_path: Path) -> None:
    import json

    import pytest
    import torch

    from models.generators.base import PickleWeightsError
    from tasks.online import fuse_tuned

    build_tiny_sd(tmp_path / "base", seed=4, channels=(16, 32))
    model = tmp_path / "model"
    model.mkdir()
    torch.save({"w": torch.zeros(1)}, model / "pytorch_lora_weights.bin")
    base = {"name": "g", "path": str(tmp_path / "base"), "steps": 2, "height": 32, "width": 32}
    (model / "tuned.json").write_text(json.dumps({"base": base, "kind": "lora"}))
    with pytest.raises(PickleWeightsError, match=r"generator 'g-tuned': '.*pytorch_lora_weights.bin' is a pickle"):
        fuse_tuned.fn(str(model), str(tmp_path / "fused"))


def test_a_task_run_prefect_has_not_recorded_yet_never_hides_the_failed_shard(monkeypatch) -> None:
    """mark_crashed reads the failed unit's task run back; Prefect records task runs asynchronously, so the
    read may 404 (PrefectHQ/prefect#15153). The failure report must still name the shard and its error."""
    import prefect
    import pytest
    from prefect.exceptions import ObjectNotFound

    from synrank import fanout

    class NotYet:
        reads = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read_task_run(self, task_run_id):
            NotYet.reads += 1
            raise ObjectNotFound(http_exc=Exception("404"))

    class Failed:
        task_run_id = "00000000-0000-0000-0000-000000000000"

        def result(self):
            raise RuntimeError("CUDA out of memory in shard 3")

    monkeypatch.setattr(prefect, "get_client", lambda sync_client=True: NotYet())
    monkeypatch.setattr(fanout.time, "sleep", lambda s: None)
    engine = fanout.Engine("local", runner=None)
    future = Failed()
    engine.pending[future] = "score[clip/g/00003]"
    monkeypatch.setattr(fanout, "as_completed", lambda futures: iter(list(futures)))
    collector = fanout.Collector(engine, on_result=lambda name, value: None, desc="score")
    with pytest.raises(fanout.ShardTasksFailed) as err:
        collector.finish()
    assert NotYet.reads == 5  # read again while Prefect catches up, then given up on quietly
    assert "1 of 1 tasks failed (score[clip/g/00003])" in str(err.value)
    assert "First error, score[clip/g/00003]: RuntimeError: CUDA out of memory in shard 3" in str(err.value)


def test_names_that_would_escape_their_folder_exit_2_before_compute(capsys) -> None:
    import cli.main

    for name in ("../x", "a/b", "n" * 241):
        entry = f"generate.generators=[{{name: '{name}', path: zoo/shapes-sd-s, steps: 2, height: 32, width: 32}}]"
        assert cli.main.main(["generate", "--set", entry]) == 2
        err = capsys.readouterr().err
        assert err.startswith("synrank: invalid config: bad value for 'generate.generators.0.name': Value error, a ")
        assert "one path segment of letters, digits" in err and err.count("\n") == 1


@pytest.mark.slow
def test_odd_categories_log_to_mlflow_and_a_failed_logging_leaves_no_stamp(tmp_path: Path, monkeypatch) -> None:
    import mlflow
    import pytest
    from mlflow.utils.validation import _validate_metric_name

    from synrank import stage as stage_mod
    from synrank.stage import STAMP, stage_run
    from synrank.tracking import metric_key

    odd = ["winrate_clip-p4/a/", "winrate_clip-p4/a//b", "winrate_clip-p4/" + "c" * 240, "acc/Food & Drink"]
    for name in odd:
        _validate_metric_name(metric_key(name))  # raises for a name MLflow refuses
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="trust")
    out = tmp_path / "out"
    with stage_run("rank", SampleConfig(), [], out=out, tracking_cfg=tracking) as st:
        st.log(**{name: 0.5 for name in odd})
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(st.run_id)
    assert len(run.data.metrics) == len(odd) + 1  # and "seconds"
    assert st.report["metric_names"]["winrate_clip-p4/a/"] == "winrate_clip-p4/a/_"
    assert (out / STAMP).is_file()

    def refused(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("Invalid value")

    monkeypatch.setattr(stage_mod.mlflow, "log_metrics", refused)
    other = tmp_path / "other"
    with pytest.raises(mlflow.exceptions.MlflowException):
        with stage_run("rank", SampleConfig(seed=1), [], out=other, tracking_cfg=tracking) as st:
            st.log(x=1.0)
    assert not (other / STAMP).exists()  # a rerun does the work again


def test_a_missing_prompt_file_model_or_category_less_benchmark_file_exits_2_in_one_line(
    tmp_path: Path, capsys
) -> None:
    import cli.main

    (tmp_path / "new_objects.txt").write_text("a red car\n")  # a T2I-CompBench file that names no category
    cases = [
        (["sample", "--set", f"sample.sources=[{{path: {tmp_path / 'nope.txt'}}}]"], "sample.sources.0.path: '"),
        (
            ["sample", "--set", f"sample.sources=[{{path: {tmp_path / 'new_objects.txt'}, format: t2i-compbench}}]"],
            "not a T2I-CompBench prompt file",
        ),
        (
            [
                "generate",
                "--set",
                f"generate.generators=[{{name: g, path: {tmp_path / 'no-model'}, steps: 2, height: 32, width: 32}}]",
            ],
            "generate.generators.0.path (generator 'g'): model path",
        ),  # fmt: skip
    ]
    for argv, says in cases:
        assert cli.main.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("synrank: ") and says in err and err.count("\n") == 1, err


def test_a_truncated_or_disguised_weights_file_is_named_with_its_generator_and_component(tmp_path: Path) -> None:
    import pytest
    import torch

    from models.generators import load_generator
    from models.generators.base import WeightsFileError
    from synrank.config import GeneratorSpec

    model = build_tiny_sd(tmp_path / "model", seed=4, channels=(16, 32))
    spec = GeneratorSpec(name="g", path=str(model), steps=2, height=32, width=32)
    encoder = next((Path(model) / "text_encoder").glob("*.safetensors"))
    data = encoder.read_bytes()
    encoder.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(WeightsFileError) as err:
        load_generator(spec)
    assert str(err.value).startswith(f"generator 'g': component 'text_encoder': '{encoder}' is not a readable")
    assert "\n" not in str(err.value)
    torch.save({"w": torch.zeros(2)}, encoder)  # a pickle under the .safetensors name
    with pytest.raises(WeightsFileError, match=r"component 'text_encoder': .* is a pickle \(torch.save\), not safe"):
        load_generator(spec)


@pytest.mark.slow
def test_a_flipped_or_truncated_shard_is_rendered_again_and_score_names_it(tmp_path: Path) -> None:
    import pytest

    from synrank.shards import ShardUnreadable, load_images

    rerun, images = generated(tmp_path, n_prompts=2, shard_size=2)
    manifest = pd.read_parquet(images / "manifest.parquet")
    first, second = sorted(manifest["shard"].unique())
    good = {s: (images / s).read_bytes() for s in (first, second)}
    data = bytearray(good[first])
    data[1200] ^= 0xFF  # a flipped byte inside the first PNG
    (images / first).write_bytes(bytes(data))
    (images / second).write_bytes(good[second][:700])  # truncated
    row = manifest[manifest["shard"] == second].iloc[0]
    with pytest.raises(ShardUnreadable, match=rf"^shard '{second}' cannot be read .* `synrank generate` checks"):
        load_images(images, [(row["shard"], row["member"])])  # what the score stage reads
    rerun()
    assert {s: (images / s).read_bytes() for s in (first, second)} == good  # both rendered again, the same bytes
    stamp = pd.read_json(images / "_stage.json", typ="series")
    assert stamp["metrics"]["shards_repaired"] == 2 and len(stamp["report"]["shards_repaired"]) == 2
