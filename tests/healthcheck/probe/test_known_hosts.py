"""known_hosts read as OpenSSH reads it, and written safely by many processes at once."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

from healthcheck.probe.sandbox import generate_key
from tests.conftest import REPO


def _public_line(key: Path) -> tuple[str, str]:
    key_type, key_b64 = key.with_name(key.name + ".pub").read_text().split()[:2]
    return key_type, key_b64


def test_cert_authority_revoked_and_corrupt_lines_never_crash_and_warn_once_each(server, run_cli, tmp_path) -> None:
    other_type, other_b64 = _public_line(generate_key(tmp_path / "other"))
    truncated = base64.b64encode(base64.b64decode(other_b64)[:-7]).decode()
    server.known_hosts.write_text(
        "\n".join(
            [
                "# a comment, then a blank line",
                "",
                f"@cert-authority *.example.com {other_type} {other_b64}",
                f"@revoked old-host.example.com {other_type} {other_b64}",
                f"bad-base64.example.com {other_type} AAAA!!!not-base64",
                f"truncated.example.com {other_type} {truncated}",
                f"|1|not base64|xyz= {other_type} {other_b64}",
                "only-a-host-name",
                server.sshd.known_hosts_line(server.port),
            ]
        )
        + "\n"
    )

    run = run_cli("probe", "--json", *server.args(server.target))

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY"), run.result
    assert "matches known_hosts" in run.result["stages"][-2]["detail"]
    warnings = run.stderr.splitlines()
    assert [line.split(":")[3] for line in warnings] == ["5", "6", "7", "8"], warnings
    assert all(line.startswith("trainguard: warning: ") and "line ignored" in line for line in warnings)


def test_a_host_key_marked_revoked_is_critical_with_its_own_summary(server, run_cli) -> None:
    known = server.sshd.known_hosts_line(server.port)
    server.known_hosts.write_text(f"@revoked * {known.split(' ', 1)[1]}\n{known}\n")

    run = run_cli("probe", "--json", *server.args(server.target))

    assert (run.code, run.result["status"], run.result["verdict"]) == (2, "CRITICAL", "HOSTKEY_REVOKED")
    assert "marks @revoked" in run.result["summary"]


def test_accept_new_starts_a_new_line_when_the_file_lacks_a_final_newline(server, run_cli, tmp_path) -> None:
    other_type, other_b64 = _public_line(generate_key(tmp_path / "other"))
    server.known_hosts.write_text(f"other-host.example.com {other_type} {other_b64}")

    run = run_cli("probe", "--json", *server.args(server.target))

    assert run.result["verdict"] == "HEALTHY", run.result
    lines = server.known_hosts.read_text().splitlines()
    assert lines == [f"other-host.example.com {other_type} {other_b64}", server.sshd.known_hosts_line(server.port)]
    assert server.known_hosts.read_text().endswith("\n")


def test_processes_adding_the_same_new_hosts_at_once_write_each_line_once(make_server, tmp_path) -> None:
    server = make_server(ports=3)
    targets = [f"{server.sshd.user}@127.0.0.1:{port}" for port in server.sshd.ports]
    command = [sys.executable, "-m", "healthcheck", "probe", "--json", "--timeout", "20", *server.args(*targets)]

    # Frozen while the processes start, so that every one has read the (empty)
    # file before any of them can add a key: they all find the hosts new at once.
    server.sshd.freeze()
    processes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)
    ]
    time.sleep(4)
    server.sshd.thaw()
    outcomes = [process.communicate(timeout=120) for process in processes]

    assert [process.returncode for process in processes] == [0] * 6, outcomes
    lines = server.known_hosts.read_text().splitlines()
    assert sorted(lines) == sorted(server.sshd.known_hosts_line(port) for port in server.sshd.ports)


def test_hashed_names_and_wildcards_match_as_in_openssh(server, run_cli) -> None:
    """Our own parser must still read what ssh-keygen -H writes, and `*` patterns with `!` negation."""
    server.known_hosts.write_text(server.sshd.known_hosts_line(server.port) + "\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(server.known_hosts)], check=True, capture_output=True)
    assert server.known_hosts.read_text().startswith("|1|")

    hashed = run_cli("probe", "--json", "--host-key-policy", "strict", *server.args(server.target))

    key = server.sshd.known_hosts_line(server.port).split(" ", 1)[1]
    server.known_hosts.write_text(f"[127.0.0.*]:*,!other {key}\n")
    wildcard = run_cli("probe", "--json", "--host-key-policy", "strict", *server.args(server.target))
    server.known_hosts.write_text(f"[127.0.0.*]:*,![127.0.0.1]:{server.port} {key}\n")
    negated = run_cli("probe", "--json", "--host-key-policy", "strict", *server.args(server.target))

    assert hashed.result["verdict"] == "HEALTHY", hashed.result
    assert wildcard.result["verdict"] == "HEALTHY", wildcard.result
    assert negated.result["verdict"] == "HOSTKEY_UNKNOWN", negated.result
