"""Which keys a login offers, as OpenSSH picks them: IdentityAgent (a real ssh-agent on its own socket, a real
sshd), and a key that needs its passphrase told apart from keys the host rejected."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healthcheck.probe.credentials import agent_socket
from tests.conftest import Run, Server

# ssh_config(5): IdentityAgent overrides SSH_AUTH_SOCK; none disables the agent; SSH_AUTH_SOCK and $NAME read a
# variable; anything else is a path, with ~ and ${NAME} expanded.
ENVIRON = {"SSH_AUTH_SOCK": "/run/user/1000/ssh-agent.sock", "AGENT": "/tmp/op.sock", "HOME": "/Users/me"}


@pytest.mark.parametrize(
    ("identity_agent", "socket"),
    [
        (None, "/run/user/1000/ssh-agent.sock"),
        ("SSH_AUTH_SOCK", "/run/user/1000/ssh-agent.sock"),
        ("none", None),
        ("NONE", None),
        ("$AGENT", "/tmp/op.sock"),
        ("$UNSET", None),
        ("${AGENT}.2", "/tmp/op.sock.2"),
        ("~/Library/Group Containers/2BUA8C4S2C.com.1password/t/agent.sock", None),
    ],
)
def test_the_agent_socket_is_read_as_openssh_reads_identity_agent(
    identity_agent: str | None, socket: str | None
) -> None:
    found = agent_socket(identity_agent, ENVIRON)

    if identity_agent is not None and identity_agent.startswith("~"):
        assert found == str(Path(identity_agent).expanduser())
    else:
        assert found == socket


@pytest.fixture
def agent(tmp_path: Path, server: Server) -> Iterator[Path]:
    """A real ssh-agent listening on a socket of its own, holding the sshd's client key (which nothing else
    offers: the key file is outside ~/.ssh and no -i names it)."""
    socket = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.05)
        subprocess.run(
            ["ssh-add", "-q", str(server.key)],
            env={**os.environ, "SSH_AUTH_SOCK": str(socket)},
            check=True,
            capture_output=True,
        )
        yield socket
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def ssh_config(home: Path, server: Server, *lines: str) -> None:
    (home / ".ssh").mkdir(exist_ok=True)
    (home / ".ssh" / "config").write_text(
        f"Host box\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.sshd.user}\n"
        + "".join(f"  {line}\n" for line in lines)
    )


def probe_box(run_cli: Callable[..., Run], server: Server) -> Run:
    return run_cli("probe", "--json", "--known-hosts", str(server.known_hosts), "--load-per-cpu-max", "1000", "box")


def test_a_key_held_by_the_agent_identity_agent_names_logs_in_without_ssh_auth_sock(
    agent: Path, server: Server, isolated_home: Path, run_cli: Callable[..., Run]
) -> None:
    ssh_config(isolated_home, server, f"IdentityAgent {agent}")

    ran = probe_box(run_cli, server)

    assert ran.result["verdict"] in ("HEALTHY", "DEGRADED"), ran.result["summary"]
    assert "logged in as" in ran.result["stages"][3]["detail"]


def test_identity_agent_may_name_a_variable(
    agent: Path, server: Server, isolated_home: Path, run_cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSWORD_MANAGER_AGENT", str(agent))
    ssh_config(isolated_home, server, "IdentityAgent $PASSWORD_MANAGER_AGENT")

    assert probe_box(run_cli, server).result["verdict"] in ("HEALTHY", "DEGRADED")


def test_identity_agent_none_offers_no_agent_key_even_with_ssh_auth_sock_set(
    agent: Path, server: Server, isolated_home: Path, run_cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
    ssh_config(isolated_home, server, "IdentityAgent none")

    ran = probe_box(run_cli, server)

    assert (ran.code, ran.result["verdict"]) == (3, "NO_KEY")


def test_a_key_that_needs_its_passphrase_is_named_and_not_called_rejected(
    server: Server, isolated_home: Path, run_cli: Callable[..., Run]
) -> None:
    key = isolated_home / ".ssh" / "id_ed25519"
    key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(key)], check=True)
    ssh_config(isolated_home, server)

    ran = run_cli("probe", "--known-hosts", str(server.known_hosts), "box")

    assert ran.code == 3  # UNKNOWN: nothing was offered, so the host's login was not tested
    assert "NO_KEY" in ran.stdout
    assert "no key could be offered: ~/.ssh/id_ed25519 needs its passphrase" in ran.stdout
    assert "ssh-add --apple-use-keychain" in ran.stdout
    assert "rejected" not in ran.stdout
