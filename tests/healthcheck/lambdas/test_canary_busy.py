"""The canary's half of a busy sshd: one that turns connections away (MaxStartups) is alive."""

from __future__ import annotations

import socket
import time

import pytest

from healthcheck.lambdas.ssh_canary import Target, banner_sample


@pytest.mark.parametrize("refusal", [b"Exceeded MaxStartups\r\n", b"Not allowed at this time\r\n"])
def test_a_busy_sshd_counts_as_responsive(line_server, refusal: bytes) -> None:
    server = line_server(lambda conn, _: conn.sendall(refusal))

    sample = banner_sample(Target("i-0123456789abcdef0", "127.0.0.1", server.port), timeout=2.0)

    assert sample.responsive
    assert "refusing new connections" in sample.detail


def test_an_http_server_still_counts_as_unresponsive(line_server) -> None:
    def http(conn: socket.socket, _: int) -> None:
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(0.5)

    server = line_server(http)

    sample = banner_sample(Target("i-0123456789abcdef0", "127.0.0.1", server.port), timeout=2.0)

    assert not sample.responsive
    assert sample.detail.startswith("NOT_SSH")
