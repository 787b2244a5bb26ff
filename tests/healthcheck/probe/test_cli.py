"""The command line's contract: bad input is one line and exit 3, JSON keys are stable, --help is honest."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from healthcheck.probe.verdict import Verdict

RESULT_KEYS = {"target", "status", "verdict", "summary", "duration_s", "stages", "vitals", "ec2", "next_step"}
STAGE_KEYS = {"name", "ok", "seconds", "detail"}


def _bad_input_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    garbage = tmp_path / "garbage_key"
    garbage.write_text("this is not a key\n")
    encrypted = tmp_path / "encrypted_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(encrypted)], check=True)
    bad_config = tmp_path / "bad_config"
    bad_config.write_text("Host trainer\n  Port\n")
    return {
        "port option zero": (["-p", "0", "host"], "bad port '0'"),
        "port in target": (["host:99999"], "bad port '99999'"),
        "port not a number": (["-p", "ssh", "host"], "bad port 'ssh'"),
        "missing key": (["-i", str(tmp_path / "absent"), "127.0.0.1"], "does not exist"),
        "key is a directory": (["-i", str(tmp_path), "127.0.0.1"], "is a directory"),
        "key is garbage": (["-i", str(garbage), "127.0.0.1"], "not a usable private key"),
        "key is encrypted": (["-i", str(encrypted), "127.0.0.1"], "is encrypted: load it into ssh-agent"),
        "bad ssh config": (["-F", str(bad_config), "trainer"], "bad ssh config"),
        "missing ssh config": (["-F", str(tmp_path / "absent"), "trainer"], "does not exist"),
        "bad timeout": (["--timeout", "soon", "127.0.0.1"], "--timeout must be a number"),
        "timeout out of range": (["--timeout", "0", "127.0.0.1"], "--timeout must be between"),
        "no target": ([], "required: TARGET"),
        "no AWS region": (["i-0123456789abcdef0"], "no AWS region"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "port option zero",
        "port in target",
        "port not a number",
        "missing key",
        "key is a directory",
        "key is garbage",
        "key is encrypted",
        "bad ssh config",
        "missing ssh config",
        "bad timeout",
        "timeout out of range",
        "no target",
        "no AWS region",
    ],
)
def test_bad_input_is_one_line_and_exit_3(case: str, tmp_path: Path, run_module, monkeypatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    argv, message = _bad_input_cases(tmp_path)[case]

    completed = run_module("probe", *argv)

    assert completed.returncode == 3
    assert completed.stdout == ""
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert completed.stderr.startswith("trainguard: error: ")
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_is_bad_input(tmp_path: Path, run_cli) -> None:
    key = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key.chmod(0)

    run = run_cli("probe", "-i", str(key), "127.0.0.1")

    assert (run.code, run.stdout) == (3, "")
    assert "is not readable" in run.stderr


def test_missing_aws_credentials_is_bad_input(run_module, monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")

    completed = run_module("probe", "--no-login", "i-0123456789abcdef0")

    assert completed.returncode == 3
    assert completed.stderr.count("\n") == 1
    assert "no AWS credentials to look up i-0123456789abcdef0" in completed.stderr


def test_json_schema_is_stable(server, run_cli) -> None:
    server.sshd.freeze()
    healthy_server_args = server.args("--timeout", "2", server.target)

    run = run_cli("probe", "--json", *healthy_server_args)

    document = run.json
    assert set(document) == {"status", "results"}
    result = document["results"][0]
    assert set(result) == RESULT_KEYS
    assert result["target"] == server.target
    assert result["status"] in {"OK", "WARNING", "CRITICAL", "UNKNOWN"}
    assert result["verdict"] in {verdict.value for verdict in Verdict}
    assert isinstance(result["summary"], str) and "\n" not in result["summary"]
    assert isinstance(result["duration_s"], float)
    assert result["vitals"] == {} and result["ec2"] is None
    for stage in result["stages"]:
        assert set(stage) == STAGE_KEYS
        assert isinstance(stage["ok"], bool) and isinstance(stage["seconds"], float)


def test_help_names_every_fixed_option(run_module) -> None:
    completed = run_module("probe", "--help")

    assert completed.returncode == 0
    for option in (
        "-p",
        "--port",
        "-l",
        "--user",
        "-i",
        "--identity",
        "--known-hosts",
        "--timeout",
        "--json",
        "--no-login",
        "--watch",
        "--host-key-policy",
    ):
        assert option in completed.stdout
