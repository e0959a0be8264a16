"""Bytes at a location that is either local or in S3, so the image shards can live in either.

A location is one of
    `outputs/images/shard-0000.tar`   relative: resolved against a root folder (the project root)
    `/data/images/shard-0000.tar`     absolute local path
    `s3://bucket/key`                 an object in S3 (or an S3-compatible server such as SeaweedFS)

Writes are all-or-nothing in both cases, so a reader or a resumed run never sees half a shard: a local
file is written under a temporary name in the same folder and renamed over the final name (a rename
within one filesystem is atomic); an S3 object is sent in one PutObject, which S3 only makes visible once
the whole body has arrived.

The S3 client is boto3's, configured the usual way (credentials, AWS_PROFILE, ...). boto3 reads
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL itself (botocore >= 1.31; checked with the pinned 1.43), so a
local server is chosen with the environment alone and no endpoint is passed here.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from synrank import atomic

# boto3 clients are generated at runtime; without the (uninstalled) boto3-stubs there is no static type.
S3Client = Any

S3_SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"
# The environment that decides which client s3_client() builds; part of its cache key, so a test (or a
# second local server) that changes it gets a matching client instead of a stale cached one.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "403", "Forbidden"}


def is_s3(location: str) -> bool:
    """Whether `location` is an S3 object (`s3://...`) rather than a local path."""
    return location.startswith(S3_SCHEME)


def split_s3(location: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ("bucket", "a/b"); a location without a bucket or a key is an error."""
    bucket, _, key = location[len(S3_SCHEME) :].partition("/")
    if not is_s3(location) or not bucket or not key:
        raise ValueError(f"not an S3 object location (s3://bucket/key): {location!r}")
    return bucket, key


def local_path(location: str, root: Path) -> Path:
    """A local location as a path: absolute as given, relative ones under `root`."""
    if is_s3(location):
        raise ValueError(f"{location!r} is an S3 location, not a local path")
    path = Path(location)
    return path if path.is_absolute() else root / path


def join(base: str, *parts: str) -> str:
    """`base` with `parts` appended by '/', for local and S3 locations alike.

    Parts are always relative to `base`: their leading and trailing slashes are dropped (os.path.join
    would let an absolute part replace the base, which for a key built from data is a surprise, not a
    feature), and empty parts are skipped.
    """
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    if not tail:
        return base
    if not base:
        return tail
    return f"{base.rstrip('/')}/{tail}"  # base "/" gives "/tail"


@functools.lru_cache(maxsize=4)
def _client_for(env: tuple[str | None, ...]) -> S3Client:
    del env  # only the cache key: boto3 reads the same variables itself
    # A fresh session per client: boto3's module-level default session is not thread-safe to create.
    session = boto3.session.Session()
    # Without any configured region botocore signs S3 for us-east-1 anyway; naming it keeps the
    # signature region explicit and the same for every S3-compatible server.
    region = session.region_name or DEFAULT_REGION
    config = BotoConfig(retries={"mode": "standard", "max_attempts": 5})
    return session.client("s3", region_name=region, config=config)


def s3_client() -> S3Client:
    """The shared S3 client for the current AWS_* environment (built once, then cached)."""
    return _client_for(tuple(os.environ.get(name) for name in _CLIENT_ENV))


def _s3_error(err: Exception, action: str, location: str) -> OSError:
    """A boto error as the OSError a local file would give, with the location in its message."""
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            what = "bucket does not exist" if code == "NoSuchBucket" else "no such object"
            return FileNotFoundError(f"cannot {action} {location!r}: {what}")
        if code in _DENIED_CODES:
            return PermissionError(f"cannot {action} {location!r}: access denied (or the bucket does not exist)")
    return OSError(f"cannot {action} {location!r}: {err}")


def write_bytes(location: str, data: bytes, root: Path) -> None:
    """Write `data` to `location` so that it appears whole or not at all: one PutObject, or locally
    synrank.atomic.write_bytes (a temporary beside it, fsynced and renamed). Errors as OSError."""
    if is_s3(location):
        bucket, key = split_s3(location)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError) as err:
            raise _s3_error(err, "write", location) from err
        return
    atomic.write_bytes(local_path(location, root), data)


def read_bytes(location: str, root: Path) -> bytes:
    """The whole content of `location` (relative local ones under `root`). FileNotFoundError naming the location
    when it is missing, PermissionError when S3 refuses, OSError for other S3 failures."""
    if is_s3(location):
        bucket, key = split_s3(location)
        try:
            response = s3_client().get_object(Bucket=bucket, Key=key)
            return response["Body"].read()
        except (ClientError, BotoCoreError) as err:
            raise _s3_error(err, "read", location) from err
    path = local_path(location, root)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        # The resolved path alone hides which root a relative location was taken against.
        raise FileNotFoundError(f"cannot read {location!r}: no such file ({path})") from None


def exists(location: str, root: Path) -> bool:
    """Whether the file or object is there; a missing bucket counts as missing, a refused one raises."""
    if is_s3(location):
        bucket, key = split_s3(location)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code", "")) in _MISSING_CODES:
                return False
            raise _s3_error(err, "check", location) from err
        except BotoCoreError as err:
            raise _s3_error(err, "check", location) from err
    return local_path(location, root).exists()
