"""`trainguard probe --json` as schemas/probe.schema.json describes it: a healthy login, a frozen sshd, a refused
port, and the --watch lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from healthcheck.probe.verdict import Verdict
from tests.conftest import Run, Server

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "schemas" / "probe.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def watch_line_validator() -> Draft202012Validator:
    return Draft202012Validator({"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": "#/$defs/watch_line"})


def test_the_schema_is_itself_valid_and_names_every_verdict() -> None:
    Draft202012Validator.check_schema(SCHEMA)

    assert set(SCHEMA["$defs"]["verdict"]["enum"]) == {verdict.value for verdict in Verdict}


def test_a_healthy_frozen_and_refused_probe_match_the_schema(
    make_server: Callable[..., Server], run_cli: Callable[..., Run]
) -> None:
    healthy, frozen = make_server(), make_server()
    frozen.sshd.freeze()

    ran = run_cli(
        "probe", "--json", "--timeout", "2", *healthy.args(), healthy.target, f"127.0.0.1:{frozen.port}", "127.0.0.1:9"
    )

    document: dict[str, Any] = json.loads(ran.stdout)
    VALIDATOR.validate(document)
    assert [result["verdict"] for result in document["results"]][1:] == ["HUNG", "REFUSED"]
    assert document["results"][0]["vitals"]["mem_total_mib"] > 0  # the exec stage's vitals are in it


def test_watch_lines_match_the_schema(server: Server, run_cli: Callable[..., Run]) -> None:
    ran = run_cli("probe", "--json", "--watch", "1", "--rounds", "1", *server.args(), server.target)

    (line,) = ran.stdout.splitlines()
    watch_line_validator().validate(json.loads(line))


def test_the_schema_refuses_what_the_probe_never_prints() -> None:
    with pytest.raises(Exception, match="is not one of"):
        VALIDATOR.validate({"status": "FINE", "results": []})
