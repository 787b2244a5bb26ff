"""A results bucket in moto's server on 127.0.0.1, found by the CLI through AWS_ENDPOINT_URL, a CLI runner, and
destinations that behave as a user's may: case-folding (a Mac's), without locks (a network folder), small or
read-only (a tmpfs)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO = Path(__file__).resolve().parents[3]
BUCKET = "trainguard-results-test"
INSTANCE_A = "i-0123456789abcdef0"
INSTANCE_B = "i-0fedcba9876543210"


@dataclass
class S3:
    client: Any
    bucket: str
    endpoint: str

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def body(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())


@pytest.fixture
def s3(moto_server: str, aws_credentials: str) -> S3:
    client = boto3.client("s3", endpoint_url=moto_server, region_name=aws_credentials)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": aws_credentials})
    return S3(client, BUCKET, moto_server)


def pull_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "healthcheck", "pull", *arguments]


def run_pull(
    *arguments: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with this test's environment (credentials, endpoint)."""
    return subprocess.run(
        pull_command(*arguments),
        cwd=REPO,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def local_files(root: Path) -> dict[str, bytes]:
    """Every visible file under root, by path relative to it (the manifest and lock are hidden)."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def run_pull_in(cwd: Path, *arguments: str, timeout: float = 60, **popen: Any) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess started in `cwd`, with this test's environment."""
    return subprocess.run(
        pull_command(*arguments),
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **popen,
    )


@pytest.fixture
def folding_dest(tmp_path: Path) -> Iterator[Path]:
    """A folder that folds case and Unicode normalization as a Mac's APFS does (tests/support/foldfs.py)."""
    from tests.support.foldfs import mounted, unavailable

    if (why := unavailable()) is not None:
        pytest.skip(why)
    with mounted(tmp_path / "backing", tmp_path / "apfs-like") as mountpoint:
        yield mountpoint


@pytest.fixture
def unlockable_dest(tmp_path: Path) -> Iterator[Path]:
    """A folder whose files refuse flock(2) (EOPNOTSUPP), as a network folder without a lock manager does."""
    from tests.support.foldfs import mounted, unavailable

    if (why := unavailable()) is not None:
        pytest.skip(why)
    with mounted(tmp_path / "backing", tmp_path / "no-locks", refuse_flock=True) as mountpoint:
        yield mountpoint


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's notation: 1m) at `mountpoint`, for a disk that fills or turns read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
