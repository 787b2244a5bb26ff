"""Listing the bucket: what is in a pull's scope, and how many requests that takes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from healthcheck.pull.source import Scope, list_scope, make_client

from .conftest import BUCKET, INSTANCE_A, INSTANCE_B

KEYS = (
    [f"{INSTANCE_A}/run/{number:04d}.json" for number in range(1_200)]
    + [f"{INSTANCE_B}/metrics.csv"]
    + [f"postmortem/{INSTANCE_A}/console.txt", f"postmortem/{INSTANCE_B}/decision.json"]
    + ["trainguard/bundle/0123abcd.tar.gz", "i-not-an-instance/file", f"{INSTANCE_A}"]
)


@pytest.fixture
def listed(aws_credentials: str) -> Iterator[tuple[Any, list[str]]]:
    """A client on moto's S3 with KEYS in the bucket, and the names of the S3 operations it sends."""
    with mock_aws():
        client = make_client(parallel=4)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": aws_credentials})
        for key in KEYS:
            client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        operations: list[str] = []
        client.meta.events.register("before-call.s3.*", lambda model, **_: operations.append(model.name))
        yield client, operations


def test_every_instance_is_one_listing_request_per_thousand_keys(listed: tuple[Any, list[str]]) -> None:
    client, operations = listed

    found = [item.key for item in list_scope(client, BUCKET, Scope())]

    assert found == sorted(key for key in KEYS if key.startswith((f"{INSTANCE_A}/", f"{INSTANCE_B}/")))
    # 1,203 keys in the bucket: two pages, and no request to find the instance prefixes first.
    assert operations == ["ListObjectsV2", "ListObjectsV2"]


def test_postmortems_join_the_scope_only_when_asked(listed: tuple[Any, list[str]]) -> None:
    client, _ = listed

    every = {item.key for item in list_scope(client, BUCKET, Scope(postmortem=True))}
    named = {item.key for item in list_scope(client, BUCKET, Scope((INSTANCE_B,), postmortem=True))}

    assert {f"postmortem/{INSTANCE_A}/console.txt", f"postmortem/{INSTANCE_B}/decision.json"} <= every
    assert not every & {"trainguard/bundle/0123abcd.tar.gz", "i-not-an-instance/file", INSTANCE_A}
    assert named == {f"{INSTANCE_B}/metrics.csv", f"postmortem/{INSTANCE_B}/decision.json"}
