"""engine: ray (issue 13): generate and score fanned out as one Prefect task per shard on a Ray cluster write the
same bytes as engine: local, survive a SIGKILLed worker and a removed node, and a task that fails for good
fails the flow clearly without leaving a "Running" task run, after which a rerun renders only its shard.

Every test runs Ray on this machine with fake GPUs (Ray schedules by the declared count). Skipped without the
`ray` extra (`uv sync --extra ray`; .ci/run installs it)."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray's import: nodes keep 127.0.0.1
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as synrank.ray_engine does (under `make test`'s uv run)

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("prefect_ray", reason="the ray extra is not installed: `uv sync --extra ray` (.ci/run does)")

import ray  # noqa: E402

from synrank.cluster_config import ClusterConfig  # noqa: E402
from synrank.config import (  # noqa: E402
    ROOT,
    GenerateConfig,
    GeneratorSpec,
    Paths,
    RewardSpec,
    ScoreConfig,
    TrackingConfig,  # noqa: E402
)
from synrank.fingerprint import tree_files  # noqa: E402
from tests.fixtures.tiny_models import build_tiny_clip, build_tiny_sd  # noqa: E402

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

N_SHARDS = 6  # 6 prompts x 2 images, 2 per shard


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prompts, a tiny SD pipeline and a tiny CLIP reward, and the local engine's images and scores (`local/`)."""
    root = tmp_path_factory.mktemp("ray")
    build_tiny_sd(root / "model", seed=4, channels=(16, 32))
    build_tiny_clip(root / "clip", seed=3)
    (root / "prompts").mkdir()
    texts = [f"a photo of {i} red circles" for i in range(6)]
    pd.DataFrame(
        {"prompt_id": [f"p{i}" for i in range(6)], "prompt": texts, "split": "train", "category": ""}
    ).to_parquet(root / "prompts" / "prompts.parquet")
    render(root, "local", "local", score=True)
    return root


def configs(root: Path, engine: str, **fan: object) -> tuple[GenerateConfig, ScoreConfig]:
    gen = GenerateConfig(
        generators=[GeneratorSpec(name="g", path=str(root / "model"), steps=2, height=32, width=32)],
        images_per_prompt=2,
        batch_size=2,
        shard_size=2,
        engine=engine,
        gpus_per_task=1,
        **fan,
    )
    score = ScoreConfig(
        rewards=[RewardSpec(name="clip", arch=f"local-dir:{root / 'clip'}")],
        batch_size=4,
        engine=engine,
        gpus_per_task=0.5,
        **fan,
    )  # two reward tasks share a GPU
    return gen, score


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch at one intra-op thread, as a Ray worker has (OMP_NUM_THREADS = its one CPU): the same kernels, the
    same bytes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def render(
    root: Path, name: str, engine: str, cluster: ClusterConfig = ClusterConfig(), score: bool = False, **fan: object
) -> None:
    """generate (and score) on `engine` into root/name, as the stages call them (without their MLflow runs)."""
    from tasks.generate import generate_all
    from tasks.score import score_all

    gen, rewards = configs(root, engine, **fan)
    images = root / name / "images"
    with one_thread():
        generate_all(
            gen.generators,
            pd.read_parquet(root / "prompts" / "prompts.parquet"),
            images,
            gen.images_per_prompt,
            gen.seed,
            gen.shard_size,
            gen.batch_size,
            "cpu",
            fan=gen,
            cluster=cluster,
        )
        if score:
            score_all(
                rewards.rewards,
                str(images / "manifest.parquet"),
                str(images),
                str(root / name / "scores"),
                rewards.batch_size,
                "cpu",
                fan=rewards,
                cluster=cluster,
            )


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in tree_files(folder, exclude=["_stage.json"])}


def assert_same(root: Path, name: str, what: tuple[str, ...] = ("images",)) -> None:
    for part in what:
        local, other = files(root / "local" / part), files(root / name / part)
        assert local.keys() == other.keys(), sorted(local.keys() ^ other.keys())
        assert [k for k in local if local[k] != other[k]] == []
    assert len(list((root / name / "images" / "shards" / "g").glob("*.tar"))) == N_SHARDS


def task_runs(**filters: object) -> list:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_task_runs(**filters)


def test_a_temporary_local_ray_offers_the_declared_gpus_and_refuses_what_no_node_has() -> None:
    from synrank import ray_engine

    assert not ray.is_initialized()
    with ray_engine.task_runner(ClusterConfig(num_cpus=1, num_gpus=2)):
        assert ray.cluster_resources()["GPU"] == 2
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        options = ray_engine.task_options(ScoreConfig(engine="ray"), ClusterConfig())
        assert (options["num_gpus"], options["max_calls"], options["max_retries"]) == (1.0, 0, 3)
        assert options["runtime_env"]["env_vars"]["PREFECT_API_URL"].startswith("http://127.0.0.1:")
        with pytest.raises(
            ray_engine.RayEngineError,
            match=r"no node of the Ray cluster offers what each task "
            r"needs \(CPU 1, GPU 3\); its nodes have: CPU 1, GPU 2\. Set gpus_per_task: 0",
        ):
            ray_engine.task_options(GenerateConfig(engine="ray", gpus_per_task=3), ClusterConfig())
    assert not ray.is_initialized()  # the runner owned it and stopped it


@pytest.fixture(scope="class")
def faulty_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray (2 CPUs, 2 fake GPUs) whose workers run tests/ray_hooks.arm; yields its control folder."""
    control = tmp_path_factory.mktemp("faults")
    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        runtime_env={
            "worker_process_setup_hook": "tests.ray_hooks.arm",
            "env_vars": {"SYNRANK_RAY_FAULTS": str(control), "PYTHONPATH": str(ROOT)},
        },
    )
    try:
        yield control
    finally:
        ray.shutdown()


class TestOnOneRay:
    """One Ray for these tests: its workers (and their loaded pipelines) serve them all."""

    def test_generate_and_score_write_the_local_engines_bytes(self, world: Path, faulty_ray: Path) -> None:
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

        render(world, "ray", "ray", score=True)
        assert_same(world, "ray", ("images", "scores"))
        names = [f"generate[g/{n:05d}]" for n in range(N_SHARDS)] + [f"score[clip/g/{n:05d}]" for n in range(N_SHARDS)]
        runs = task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=names)))
        assert {t.name for t in runs} == set(names)  # a task run per shard, named after its model and shard

    def test_a_worker_killed_after_publishing_its_tar_is_retried(self, world: Path, faulty_ray: Path) -> None:
        (faulty_ray / "mode").write_text("kill-after-publish")
        render(world, "killed", "ray")
        assert (faulty_ray / "killed").exists()  # the kill happened, and Ray ran the task again
        assert_same(world, "killed")

    def test_without_retries_the_flow_fails_clearly_and_a_rerun_renders_only_that_shard(
        self, world: Path, faulty_ray: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        import tasks.generate
        from flows.generate import generate_flow

        (faulty_ray / "killed").unlink(missing_ok=True)
        (faulty_ray / "mode").write_text("kill-after-publish")
        gen, _ = configs(world, "ray", max_retries=0)
        paths = Paths(prompts=str(world / "prompts"), images=str(world / "no-retry" / "images"))
        tracking = TrackingConfig(tracking_uri=f"sqlite:///{world / 'mlflow.db'}", experiment="ray")
        with one_thread():
            state = generate_flow(gen, paths=paths, tracking=tracking, return_state=True)
        assert state.is_failed()
        assert f"generate: 1 of {N_SHARDS} tasks failed (g/" in (state.message or ""), state.message
        assert f"the other {N_SHARDS - 1} are written and a rerun does only these" in (state.message or "")
        runs = task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        assert [t.name for t in runs if t.state_type.value == "RUNNING"] == []
        assert sum(t.state_type.value == "CRASHED" for t in runs) == 1
        assert len(list((world / "no-retry" / "images" / "shards" / "g").glob("*.parquet"))) == N_SHARDS - 1
        written: list[str] = []
        publish = tasks.generate.write_shard
        monkeypatch.setattr(tasks.generate, "write_shard", lambda *a, **k: written.append(a[0]) or publish(*a, **k))
        render(world, "no-retry", "local")
        assert len(written) == 1
        assert_same(world, "no-retry")


def test_a_gpu_node_removed_mid_shard_loses_nothing_and_the_cpu_head_runs_no_task(world: Path, tmp_path: Path) -> None:
    """ray.cluster_utils.Cluster: a CPU-only head and two 1-GPU nodes; the node of the first shard is removed
    while that shard renders."""
    from ray.cluster_utils import Cluster

    control = tmp_path / "control"
    control.mkdir()
    (control / "mode").write_text("stall-first")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    head_id, gpu_ids = cluster.head_node.node_id, {n.node_id for n in gpu_nodes}
    ray.init(
        address=cluster.address,
        runtime_env={
            "worker_process_setup_hook": "tests.ray_hooks.arm",
            "env_vars": {"SYNRANK_RAY_FAULTS": str(control), "PYTHONPATH": str(ROOT)},
        },
    )
    removed: list[str] = []

    def remove_the_stalled_node() -> None:
        deadline = time.time() + 600
        while time.time() < deadline and not (control / "stalled").exists():
            time.sleep(0.5)
        time.sleep(0.5)
        node_id = (control / "stalled").read_text().strip() if (control / "stalled").exists() else ""
        for node in gpu_nodes:
            if node.node_id == node_id:
                cluster.remove_node(node)
                removed.append(node_id)

    remover = threading.Thread(target=remove_the_stalled_node, daemon=True)
    remover.start()
    try:
        render(world, "node-loss", "ray")
        remover.join(timeout=60)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(removed) == 1
    ran_on = set((control / "nodes").read_text().split())
    assert ran_on <= gpu_ids and head_id not in ran_on
    assert len(ran_on) == 2  # the shard of the removed node was rendered again on the other
    assert_same(world, "node-loss", ("images",))
