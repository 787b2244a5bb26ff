"""`trainguard pull --json` as schemas/pull.schema.json describes it: the real output of a clean round, a round
with files set aside and failed, --watch's lines, and a round that could not reach AWS."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from healthcheck.pull.plan import Aside

from .conftest import BUCKET, INSTANCE_A, REPO, S3, run_pull

SCHEMA = json.loads((REPO / "schemas" / "pull.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def lines_of(stdout: str) -> list[dict[str, Any]]:
    documents = [json.loads(line) for line in stdout.splitlines()]
    for document in documents:
        VALIDATOR.validate(document)
    return documents


def test_the_schema_is_itself_valid_and_names_every_reason_for_a_file_set_aside() -> None:
    Draft202012Validator.check_schema(SCHEMA)

    item = SCHEMA["$defs"]["round"]["properties"]["set_aside"]["items"]
    assert set(item["properties"]["reason"]["enum"]) == {reason.value for reason in Aside}


def test_a_round_with_files_set_aside_and_failed_matches_the_schema(s3: S3, tmp_path: Path) -> None:
    s3.put(f"{INSTANCE_A}/metrics.csv", b"theirs")
    s3.put(f"{INSTANCE_A}/{'t' * 300}", b"too long a name")
    s3.put(f"{INSTANCE_A}/plain.txt", b"plain")
    dest = tmp_path / "results"
    (dest / INSTANCE_A).mkdir(parents=True)
    (dest / INSTANCE_A / "metrics.csv").write_bytes(b"mine")

    first = run_pull("--bucket", BUCKET, "--json", str(dest))
    second = run_pull("--bucket", BUCKET, "--json", str(dest))

    assert first.returncode == 1, first.stderr
    (document,) = lines_of(first.stdout)
    assert document["exit_status"] == 1
    assert (document["new"], document["updated"], document["unchanged"]) == (2, 0, 0)
    assert document["set_aside"] == [
        {
            "key": f"{INSTANCE_A}/metrics.csv",
            "path": f"{INSTANCE_A}/metrics.from-bucket.csv",
            "reason": "yours",
            "beside": f"{INSTANCE_A}/metrics.csv",
        }
    ]
    assert [failure["key"] for failure in document["failed"]] == [f"{INSTANCE_A}/{'t' * 300}"]
    assert second.returncode == 1  # the name too long for the disk fails again
    (again,) = lines_of(second.stdout)
    assert (again["new"], again["unchanged"], again["set_aside"]) == (0, 2, [])


def test_watch_prints_one_line_per_round(s3: S3, tmp_path: Path) -> None:
    s3.put(f"{INSTANCE_A}/metrics.csv", b"1")

    watched = run_pull("--bucket", BUCKET, "--json", "--watch", "1", "--rounds", "2", str(tmp_path / "results"))

    assert watched.returncode == 0, watched.stderr
    first, second = lines_of(watched.stdout)
    assert (first["new"], second["new"], second["unchanged"]) == (1, 0, 1)


def test_a_round_that_cannot_reach_aws_matches_the_schema_and_exits_4(aws_credentials: str, tmp_path: Path) -> None:
    env = dict(os.environ, AWS_ENDPOINT_URL="http://127.0.0.1:9")

    pulled = run_pull("--bucket", BUCKET, "--json", str(tmp_path / "results"), env=env, timeout=120)

    assert pulled.returncode == 4
    (document,) = lines_of(pulled.stdout)
    assert document["exit_status"] == 4
    assert document["error"].startswith(f"could not list s3://{BUCKET}/")


def test_the_schema_refuses_what_the_pull_never_prints() -> None:
    with pytest.raises(Exception, match="is not valid under any of the given schemas"):
        VALIDATOR.validate({"time": "2026-12-01T00:00:00Z", "exit_status": 4, "new": 1})
