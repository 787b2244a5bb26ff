"""The host side of the drill: a gentle 1 Hz sampler and the real probe command, run against the VM.

The banner sample reuses the probe's own tcp and banner stages. Samples are
taken one at a time (never overlapping), because abandoned connections pile
up in sshd's MaxStartups while it stalls, and it then refuses the next ones.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from drill.timeline import BANNER_OK, ProbeRun, Sample
from healthcheck.probe.stages import check_banner

LOOPBACK = "127.0.0.1"
# A reset from the guest's closed port arrives in milliseconds when its kernel
# is alive and the host idle; under emulation on a loaded host, with the guest
# thrashing, we measured over a second at times, so allow 3.
KERNEL_ALIVE_TIMEOUT_S = 3.0


def kernel_alive(port: int, timeout: float = KERNEL_ALIVE_TIMEOUT_S) -> bool:
    """Whether the guest kernel answered a connection to a closed guest port with a reset.

    qemu accepts the connection on the host whatever the guest's state; it
    closes it only once the guest kernel has refused it.
    """
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(1) == b""
    except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return True  # a reset, whether it comes at connect (no qemu in between) or after
    except OSError:
        return False


def banner(address: str, port: int, timeout: float, clock: Callable[[], float] = time.monotonic) -> tuple[str, float]:
    """(BANNER_OK or the verdict of the failure, seconds taken), with the probe's own stages (an IP address)."""
    check = check_banner(address, port, timeout, clock)
    return (
        BANNER_OK if check.server_id is not None else str(check.verdict.name if check.verdict else "")
    ), check.seconds


class Sampler:
    """Samples the VM about once a second in a thread, until stopped."""

    def __init__(
        self,
        ssh_port: int,
        alive_port: int,
        elapsed: Callable[[], float],
        banner_timeout: float = 5.0,
        interval: float = 1.0,
        on_sample: Callable[[Sample], None] | None = None,
    ) -> None:
        self.samples: list[Sample] = []
        self._ssh_port = ssh_port
        self._alive_port = alive_port
        self._elapsed = elapsed
        self._banner_timeout = banner_timeout
        self._interval = interval
        self._on_sample = on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._banner_timeout + KERNEL_ALIVE_TIMEOUT_S + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            at = self._elapsed()
            alive = kernel_alive(self._alive_port)
            verdict, took = banner(LOOPBACK, self._ssh_port, self._banner_timeout)
            sample = Sample(at_s=round(at, 2), kernel_alive=alive, banner=verdict, banner_s=round(took, 3))
            self.samples.append(sample)
            if self._on_sample is not None:
                self._on_sample(sample)
            self._stop.wait(max(0.0, at + self._interval - self._elapsed()))


class ProbeLoop:
    """Runs `trainguard probe --no-login` back to back in a thread, recording each verdict."""

    def __init__(
        self,
        target: str,
        elapsed: Callable[[], float],
        timeout: float = 10.0,
        pause: float = 2.0,
        python: str = sys.executable,
        cwd: Path | None = None,
    ) -> None:
        self.runs: list[ProbeRun] = []
        self._target = target
        self._elapsed = elapsed
        self._timeout = timeout
        self._pause = pause
        self._python = python
        self._cwd = cwd
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-probe", daemon=True)

    def __enter__(self) -> ProbeLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout + 30)

    def _loop(self) -> None:
        command = [
            self._python,
            "-m",
            "healthcheck",
            "probe",
            "--no-login",
            "--json",
            "--timeout",
            str(self._timeout),
            self._target,
        ]
        while not self._stop.is_set():
            started = self._elapsed()
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self._timeout + 30, check=False, cwd=self._cwd
            )
            self.runs.append(ProbeRun(round(started, 2), round(self._elapsed(), 2), probe_answer(done.stdout)[0]))
            self._stop.wait(self._pause)


def probe_answer(output: str) -> tuple[str, str]:
    """The verdict and summary of `trainguard probe --json`'s one target; PROBE_ERROR when unreadable."""
    try:
        result = json.loads(output)["results"][0]
        return str(result["verdict"]), str(result["summary"])
    except (ValueError, KeyError, IndexError, TypeError):
        return "PROBE_ERROR", ""
