"""Bad input is one clear line and exit 3; ssh_config, regions and options as documented."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest


def _one_line_usage_error(run, *expected: str) -> None:  # type: ignore[no-untyped-def]
    assert run.code == 3, run
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainguard: error: "), run.stderr
    for text in expected:
        assert text in lines[0]


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any name lookup fails here, and is recorded: nothing may leave the machine."""
    asked: list[str] = []

    def refuse(host: object, *args: object, **kwargs: object) -> list[object]:
        asked.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return asked


@pytest.mark.parametrize("argv", [["127.0.0.1:\u00b2"], ["-p", "\u00b2", "127.0.0.1"], ["127.0.0.1:\u0663"]])
def test_a_unicode_digit_in_a_port_is_a_usage_error(run_cli, argv: list[str]) -> None:
    _one_line_usage_error(run_cli("probe", "--no-login", *argv), "bad port", "1 to 65535")


def test_an_invalid_region_name_is_a_usage_error(run_cli, aws_credentials) -> None:
    run = run_cli("probe", "--no-login", "--region", "eu west 1!", "i-0123456789abcdef0")

    _one_line_usage_error(run, "'eu west 1!' is not a valid AWS region name")


def test_a_300_character_host_name_is_refused_at_once_without_dns(run_cli, no_dns) -> None:
    name = ".".join(["a" * 59] * 5)  # 299 characters, every label valid
    started = time.monotonic()

    run = run_cli("probe", "--no-login", "--timeout", "20", name)

    assert time.monotonic() - started < 1.0
    _one_line_usage_error(run, "299 characters", "253")
    assert no_dns == []


def test_a_label_over_63_characters_is_refused(run_cli, no_dns) -> None:
    _one_line_usage_error(run_cli("probe", "--no-login", "a" * 64 + ".example.com"), "1 to 63")
    assert no_dns == []


@pytest.mark.parametrize("name", ["bad\nhost", "bad host", "evil\x1b[2J"])
def test_a_host_name_with_whitespace_or_control_characters_is_refused(run_cli, no_dns, name: str) -> None:
    run = run_cli("probe", "--no-login", name)

    _one_line_usage_error(run, "whitespace or control characters")
    assert no_dns == []


def test_rounds_without_watch_is_a_usage_error(run_cli) -> None:
    _one_line_usage_error(run_cli("probe", "--no-login", "--rounds", "2", "127.0.0.1"), "--rounds", "--watch")


def test_known_hosts_in_a_missing_directory_is_an_error_and_nothing_is_created(server, run_cli, tmp_path) -> None:
    missing = tmp_path / "no-such-dir"

    run = run_cli("probe", "-i", str(server.key), "--known-hosts", str(missing / "known_hosts"), server.target)

    _one_line_usage_error(run, "does not exist")
    assert not missing.exists()


def test_default_known_hosts_directory_is_created_as_openssh_does(server, run_cli, isolated_home: Path) -> None:
    run = run_cli("probe", "--json", "-i", str(server.key), "--load-per-cpu-max", "1000", server.target)

    assert run.result["verdict"] == "HEALTHY", run.result
    assert (isolated_home / ".ssh" / "known_hosts").read_text().startswith(f"[127.0.0.1]:{server.port} ")
    assert (isolated_home / ".ssh").stat().st_mode & 0o777 == 0o700


def test_ssh_config_include_is_honoured(server, run_cli, isolated_home: Path, no_dns) -> None:
    ssh_dir = isolated_home / ".ssh"
    (ssh_dir / "conf.d").mkdir(parents=True)
    (ssh_dir / "conf.d" / "training").write_text(f"Host box\n  HostName 127.0.0.1\n  Port {server.port}\n")
    (ssh_dir / "config").write_text("Include conf.d/*\n\nHost *\n  ServerAliveInterval 30\n")

    run = run_cli("probe", "--json", "--no-login", "box")

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY"), run.result
    assert no_dns == []


def test_an_include_loop_is_a_usage_error(run_cli, isolated_home: Path) -> None:
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(f"Include {ssh_dir / 'config'}\n")

    _one_line_usage_error(run_cli("probe", "--no-login", "127.0.0.1"), "Include nested deeper than 16")


def test_proxycommand_none_means_no_proxy(server, run_cli, isolated_home: Path) -> None:
    (isolated_home / ".ssh").mkdir()
    (isolated_home / ".ssh" / "config").write_text(
        f"Host box\n  HostName 127.0.0.1\n  Port {server.port}\n  ProxyCommand none\n"
    )

    run = run_cli("probe", "--json", "--no-login", "box")

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY"), run.result


def test_a_real_proxycommand_is_still_refused(run_cli, isolated_home: Path) -> None:
    (isolated_home / ".ssh").mkdir()
    (isolated_home / ".ssh" / "config").write_text("Host box\n  HostName 127.0.0.1\n  ProxyCommand nc %h %p\n")

    _one_line_usage_error(run_cli("probe", "--no-login", "box"), "ProxyJump/ProxyCommand")


def test_a_missing_region_message_names_both_variables(run_cli, aws_credentials, monkeypatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)

    run = run_cli("probe", "--no-login", "i-0123456789abcdef0")

    _one_line_usage_error(run, "AWS_REGION", "AWS_DEFAULT_REGION")
