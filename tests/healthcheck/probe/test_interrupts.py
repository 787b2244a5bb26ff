"""Ctrl-C and SIGTERM end a probe or a watch at once, with what finished and no traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# The issue asks for about half a second; the margin is for a loaded 2-core machine.
EXIT_WITHIN_S = 1.5


def _start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "healthcheck", "probe", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_queued(port: int, timeout: float = 30.0) -> None:
    """Until a connection waits in the accept queue of the (frozen) listener on `port`: the probe is mid-round.

    For a listening socket, /proc/net/tcp's rx_queue is its accept queue's length.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, queues = int(fields[1].split(":")[1], 16), fields[3], fields[4]
            if local_port == port and state == "0A" and int(queues.split(":")[1], 16) > 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"no probe connection reached port {port} within {timeout}s")


def _interrupt(process: subprocess.Popen[str], signum: int) -> tuple[float, str, str]:
    """Send `signum`; return how long the process took to exit, and its output."""
    sent = time.monotonic()
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    return time.monotonic() - sent, stdout, stderr


@pytest.mark.parametrize(
    ("signum", "status", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_signal_ends_a_probe_at_once_and_prints_what_finished(make_server, signum, status, name) -> None:
    live, frozen = make_server(), make_server()
    frozen.sshd.freeze()
    process = _start("--no-login", "--timeout", "30", f"127.0.0.1:{live.port}", f"127.0.0.1:{frozen.port}")
    _wait_until_queued(frozen.port)
    time.sleep(0.5)  # the live target answers in milliseconds; the frozen one would take 18 s

    seconds, stdout, stderr = _interrupt(process, signum)

    assert seconds < EXIT_WITHIN_S, f"took {seconds:.2f}s to exit"
    assert process.returncode == status
    assert f"127.0.0.1:{live.port}" in stdout and "HEALTHY" in stdout
    assert f"127.0.0.1:{frozen.port}" not in stdout
    assert f"interrupted by {name}" in stderr and "1 of 2 targets finished" in stderr
    assert "Traceback" not in stderr


def test_ctrl_c_ends_a_watch_at_once(make_server) -> None:
    frozen = make_server()
    frozen.sshd.freeze()
    process = _start("--watch", "60", "--json", "--no-login", "--timeout", "30", f"127.0.0.1:{frozen.port}")
    _wait_until_queued(frozen.port)

    seconds, stdout, stderr = _interrupt(process, signal.SIGINT)

    assert seconds < EXIT_WITHIN_S, f"took {seconds:.2f}s to exit"
    assert process.returncode == 130
    assert stdout == ""
    assert "interrupted by SIGINT (Ctrl-C): 0 rounds completed" in stderr
    assert "Traceback" not in stderr


def test_sigterm_ends_a_watch_while_it_sleeps(server) -> None:
    process = _start("--watch", "60", "--no-login", "--timeout", "5", server.target)
    assert process.stdout is not None
    first = process.stdout.readline()  # the first round has finished; now it sleeps

    seconds, _, stderr = _interrupt(process, signal.SIGTERM)

    assert "HEALTHY" in first
    assert seconds < EXIT_WITHIN_S, f"took {seconds:.2f}s to exit"
    assert process.returncode == 143
    assert "interrupted by SIGTERM: 1 rounds completed" in stderr
    assert "Traceback" not in stderr
