"""Stages against misbehaving loopback peers: tricklers, HTTP, silence after the banner, resets, no route."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Run, Server

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
SLACK = 0.5


def trickle_banner(conn: socket.socket, _: int) -> None:
    """One byte a second: each byte would restart paramiko's banner timer."""
    for byte in BANNER:
        conn.sendall(bytes([byte]))
        time.sleep(1.0)


def test_trickled_banner_cannot_stretch_the_deadline(line_server, run_cli) -> None:
    server = line_server(trickle_banner)
    started = time.monotonic()

    run = run_cli("probe", "--json", "--timeout", "4", f"127.0.0.1:{server.port}")

    elapsed = time.monotonic() - started
    assert elapsed < 4 + SLACK, f"took {elapsed:.2f}s against a 4s deadline"
    assert (run.code, run.result["verdict"]) == (2, "HUNG")
    assert "stalled after" in run.result["summary"]


def banner_then_silence(conn: socket.socket, _: int) -> None:
    """Identifies itself, then never sends KEXINIT: a handshake that stalls inside paramiko."""
    conn.sendall(BANNER)
    time.sleep(30)


def test_handshake_that_stalls_after_the_banner_is_hung_within_the_deadline(line_server, run_cli) -> None:
    server = line_server(banner_then_silence)
    started = time.monotonic()

    run = run_cli("probe", "--json", "--timeout", "3", f"127.0.0.1:{server.port}")

    assert time.monotonic() - started < 3 + SLACK
    assert (run.code, run.result["verdict"]) == (2, "HUNG")
    assert run.result["stages"][-1]["name"] == "auth"


def http_server(conn: socket.socket, _: int) -> None:
    request = conn.recv(1024)
    if request:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_http_server_is_not_ssh(line_server, run_cli) -> None:
    server = line_server(http_server)

    run = run_cli("probe", "--json", "--no-login", f"127.0.0.1:{server.port}")

    assert (run.code, run.result["verdict"]) == (2, "NOT_SSH")
    assert "HTTP/1.1 400 Bad Request" in run.result["summary"]


def test_real_http_server_is_not_ssh(run_cli) -> None:
    import http.server
    import threading

    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        run = run_cli("probe", "--json", "--no-login", "--timeout", "3", f"127.0.0.1:{httpd.server_port}")
    finally:
        httpd.shutdown()
        httpd.server_close()

    assert (run.code, run.result["verdict"]) == (2, "NOT_SSH")


def reset_first_connection(conn: socket.socket, number: int) -> None:
    """The first connection is closed before a word, as sshd's MaxStartups does; the next one answers."""
    if number == 1:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return
    conn.sendall(BANNER)
    conn.recv(1024)


def test_reset_before_the_banner_is_retried_within_the_deadline(line_server, run_cli) -> None:
    server = line_server(reset_first_connection)

    run = run_cli("probe", "--json", "--no-login", "--timeout", "3", f"127.0.0.1:{server.port}")

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY")
    banner = run.result["stages"][-1]
    assert banner["name"] == "banner"
    assert "attempt 2" in banner["detail"]


def always_close(conn: socket.socket, _: int) -> None:
    return


def test_a_host_that_always_closes_is_retried_only_until_the_deadline(line_server, run_cli) -> None:
    server = line_server(always_close)
    started = time.monotonic()

    run = run_cli("probe", "--json", "--no-login", "--timeout", "2", f"127.0.0.1:{server.port}")

    assert time.monotonic() - started < 2 + SLACK
    assert (run.code, run.result["verdict"]) == (2, "REFUSED")
    assert "attempt" in run.result["stages"][-1]["detail"]


def test_silent_port_on_a_live_host_is_hung_with_a_full_queue(full_backlog: int, run_cli) -> None:
    """The port drops handshakes, the host's kernel answers on another port."""
    started = time.monotonic()

    run = run_cli("probe", "--json", "--no-login", "--timeout", "2", f"127.0.0.1:{full_backlog}")

    assert time.monotonic() - started < 2 + SLACK
    assert (run.code, run.result["verdict"]) == (2, "HUNG")
    assert "no answer" in run.result["summary"]
    assert "frozen sshd whose listen queue is full" in run.result["summary"]


@pytest.fixture
def empty_namespace() -> Iterator[str]:
    """A network namespace of our own whose loopback is down: no route to anywhere."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2")
    name = f"tg-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {created.stderr.strip()}")
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def test_no_route_is_unreachable(empty_namespace: str, run_module) -> None:
    started = time.monotonic()

    completed = run_module(
        "probe", "--no-login", "--timeout", "2", "127.0.0.1:22", wrapper=("ip", "netns", "exec", empty_namespace)
    )

    assert completed.returncode == 2, completed.stderr
    assert "UNREACHABLE" in completed.stdout
    assert "unreachable" in completed.stdout.lower()
    assert time.monotonic() - started < 10


def test_unresolvable_name_is_unknown_host(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver itself is replaced: a real lookup would send a DNS query off this machine.
    def no_such_name(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)

    run = run_cli("probe", "--json", "--no-login", "--timeout", "2", "training-box.example")

    assert (run.code, run.result["status"], run.result["verdict"]) == (3, "UNKNOWN", "UNKNOWN_HOST")
    assert "Name or service not known" in run.result["summary"]


def test_dns_that_never_answers_cannot_pass_the_resolve_deadline(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def hanging_resolver(*args: object, **kwargs: object) -> list[object]:
        time.sleep(30)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", hanging_resolver)
    started = time.monotonic()

    run = run_cli("probe", "--json", "--no-login", "--timeout", "2", "training-box.example")

    assert time.monotonic() - started < 2 * 0.25 + SLACK
    assert (run.code, run.result["verdict"]) == (3, "UNKNOWN_HOST")
    assert "timed out" in run.result["summary"]


def test_name_lookup_without_a_network_is_unknown_host(empty_namespace: str, run_module) -> None:
    """A real resolver failure: inside our empty namespace the DNS query cannot leave the machine."""
    completed = run_module(
        "probe",
        "--no-login",
        "--timeout",
        "3",
        "training-box.example",
        wrapper=("ip", "netns", "exec", empty_namespace),
    )

    assert completed.returncode == 3, completed.stderr
    assert "UNKNOWN_HOST" in completed.stdout


def test_a_reset_that_makes_tcp_nodelay_fail_is_a_reset_as_on_macos(
    server: Server, monkeypatch: pytest.MonkeyPatch, run_cli: Callable[..., Run]
) -> None:
    """Darwin answers setsockopt(TCP_NODELAY) with EINVAL when the peer has already reset the connection."""
    real = socket.socket.setsockopt

    def darwin(sock: socket.socket, level: int, option: int, value: object) -> None:
        if (level, option) == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
            raise OSError(errno.EINVAL, "Invalid argument")
        real(sock, level, option, value)  # type: ignore[call-overload]

    monkeypatch.setattr(socket.socket, "setsockopt", darwin)

    ran = run_cli("probe", "--json", "--no-login", "--timeout", "1", f"127.0.0.1:{server.port}")

    assert ran.result["verdict"] == "REFUSED"  # the host answered; never UNREACHABLE
    assert "reset" in ran.result["summary"]
