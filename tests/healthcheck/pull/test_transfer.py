"""The Fetcher's retries (tenacity, on top of botocore's): a client whose own retries are off, and GETs that fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import botocore.utils
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from healthcheck.aws import parse_timestamp
from healthcheck.pull.plan import Change, Download, RemoteObject
from healthcheck.pull.transfer import ATTEMPTS, SMALL_OBJECT_BYTES, Fetcher

from .conftest import BUCKET, INSTANCE_A, S3


def failing_gets(client: Any, key: str, failures: int) -> list[str]:
    """Make the first `failures` GETs of `key` fail as a lost network does; returns every GET's URL."""
    seen: list[str] = []

    def before_send(request: Any, **_: Any) -> None:
        seen.append(request.url)
        if request.url.endswith(key) and sum(url.endswith(key) for url in seen) <= failures:
            raise EndpointConnectionError(endpoint_url=request.url)

    client.meta.events.register("before-send.s3.GetObject", before_send)
    return seen


def client_and_downloads(s3: S3, keys: list[str]) -> tuple[Any, list[Download]]:
    """A client with botocore's own retries off, and the listed objects to download."""
    client = boto3.client("s3", endpoint_url=s3.endpoint, config=Config(retries={"total_max_attempts": 1}))
    listed = s3.client.list_objects_v2(Bucket=BUCKET)["Contents"]
    remote = {item["Key"]: RemoteObject(item["Key"], item["Size"], item["ETag"], 0.0) for item in listed}
    return client, [Download(remote[key], Change.NEW) for key in keys]


@pytest.mark.parametrize(("failures", "succeeds"), [(ATTEMPTS - 1, True), (ATTEMPTS, False)])
def test_transient_failures_are_retried_until_the_attempts_run_out(
    s3: S3, tmp_path: Path, failures: int, succeeds: bool
) -> None:
    flaky, steady = f"{INSTANCE_A}/flaky.bin", f"{INSTANCE_A}/steady.bin"
    s3.put(flaky, b"f" * 1000)
    s3.put(steady, b"s" * 1000)
    client, downloads = client_and_downloads(s3, [flaky, steady])
    seen = failing_gets(client, flaky, failures)

    outcomes = [
        outcome
        for outcome in Fetcher(client, BUCKET, tmp_path, parallel=2, on_bytes=lambda _: None).fetch(downloads)
        if outcome is not None
    ]

    errors = {outcome.download.remote.key: outcome.error for outcome in outcomes}
    assert errors[steady] is None
    assert sum(url.endswith(flaky) for url in seen) == min(failures + 1, ATTEMPTS)
    if succeeds:
        assert errors[flaky] is None
        assert (tmp_path / flaky).read_bytes() == b"f" * 1000
    else:
        assert errors[flaky] is not None and "Could not connect" in errors[flaky]
        assert not (tmp_path / flaky).exists()
    assert not list(tmp_path.rglob("*.part"))


def test_a_refusal_is_not_retried(s3: S3, tmp_path: Path) -> None:
    gone = f"{INSTANCE_A}/gone.bin"
    s3.put(gone, b"x")
    client, downloads = client_and_downloads(s3, [gone])
    s3.client.delete_object(Bucket=BUCKET, Key=gone)  # deleted between the listing and the download
    seen = failing_gets(client, gone, 0)

    outcomes = [
        outcome
        for outcome in Fetcher(client, BUCKET, tmp_path, parallel=1, on_bytes=lambda _: None).fetch(downloads)
        if outcome is not None
    ]

    assert len(seen) == 1
    assert outcomes[0].error is not None and "NoSuchKey" in outcomes[0].error


@pytest.mark.parametrize("value", ["2026-11-29T10:49:55.000Z", "2026-11-29T10:49:55Z", "Sun, 29 Nov 2026 10:49:55 GMT"])
def test_the_fast_timestamp_parser_agrees_with_botocores(value: str) -> None:
    assert parse_timestamp(value) == botocore.utils.parse_timestamp(value)


@pytest.mark.parametrize("size", [1000, SMALL_OBJECT_BYTES + 1], ids=["one-get", "transfer-manager"])
def test_an_object_rewritten_after_the_listing_is_not_mixed_into_the_old_one(s3: S3, tmp_path: Path, size: int) -> None:
    key = f"{INSTANCE_A}/checkpoint.pt"
    s3.put(key, b"a" * size)
    client, downloads = client_and_downloads(s3, [key])
    s3.put(key, b"b" * size)  # the instance pushed a new checkpoint between the listing and the download

    (outcome,) = [
        outcome
        for outcome in Fetcher(client, BUCKET, tmp_path, parallel=2, on_bytes=lambda _: None).fetch(downloads)
        if outcome is not None
    ]

    assert outcome.error == "the object changed while it was downloaded; pull again"
    assert not (tmp_path / key).exists()
    assert not list(tmp_path.rglob("*.part"))
