"""A results bucket in moto's server on 127.0.0.1, found by the CLI through AWS_ENDPOINT_URL, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
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
