"""What the drill puts in the guest and how it talks to it: keys, the memory workers, SSH commands.

The host logs in with OpenSSH's client, a key made for this run, and the
guest's host key, which the drill generated and handed to cloud-init, so it
is checked strictly.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drill.seed import Access, GuestFile
from drill.timeline import WORKER_PREFIX
from healthcheck.probe.sandbox import generate_key

USER = "ubuntu"  # the Deep Learning AMI's user, which the probe assumes too
WORKER_PATH = "/opt/trainguard-drill/worker.py"
# A training-like worker: its memory grows by STEP MiB a second up to LIMIT
# MiB, every page touched each second as tensors are, while it streams a file
# to /data as a training job writes checkpoints and logs.
WORKER = f'''\
import os, sys, time
index, step, limit = int(sys.argv[1]), int(sys.argv[2]) << 20, int(sys.argv[3]) << 20
with open("/proc/self/comm", "w") as comm:
    comm.write("{WORKER_PREFIX}%d" % index)
held = []
block = os.urandom(1 << 20)
pages = len(range(0, step, 4096))
with open("/data/drill/worker-%d.bin" % index, "wb") as out:
    while True:
        started = time.monotonic()
        if len(held) * step < limit:
            held.append(bytearray(step))
        for chunk in held:
            chunk[::4096] = bytes([int(started) % 256]) * pages
        out.write(block)
        out.flush()
        if out.tell() > 256 << 20:
            out.seek(0)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
'''
SETUP_COMMANDS = ["install -d -m 1777 /data/drill"]
BOOT_FINISHED = "/var/lib/cloud/instance/boot-finished"


@dataclass(frozen=True)
class Keys:
    """This run's login key and the guest's host key, as files on the host."""

    login: Path
    host: Path

    @classmethod
    def generate(cls, folder: Path) -> Keys:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(generate_key(folder / "login"), generate_key(folder / "host_ed25519", "trainguard-drill-host"))

    def access(self) -> Access:
        return Access(
            user=USER,
            authorized_key=self.login.with_suffix(".pub").read_text().strip(),
            host_key_private=self.host.read_text(),
            host_key_public=self.host.with_suffix(".pub").read_text().strip(),
        )

    def known_hosts(self, port: int) -> Path:
        """A known_hosts file that pins the guest's host key at its forwarded port."""
        path = self.login.parent / f"known_hosts-{port}"
        path.write_text(f"[127.0.0.1]:{port} {self.host.with_suffix('.pub').read_text().strip()}\n")
        return path


def guest_files() -> dict[str, GuestFile]:
    return {WORKER_PATH: GuestFile(WORKER.encode(), "0755")}


def worker_start_command(count: int, step_mib: int = 4, limit_mib: int = 350) -> str:
    """Start `count` workers together, outside any slice, each printing its pid (the incident's launch)."""
    return (
        f"for i in $(seq 0 {count - 1}); do "
        f"nohup python3 {WORKER_PATH} $i {step_mib} {limit_mib} >/dev/null 2>&1 </dev/null & echo $!; done"
    )


class GuestShell:
    """Commands in the guest over SSH, each bounded by a timeout.

    Each command is a login of its own, unless `multiplexed`: then the commands share one connection (OpenSSH's
    ControlMaster), as a person's open session would, and a look every few seconds costs the guest no new key
    exchange, which under emulation takes sshd a second of CPU; close() ends that connection.
    """

    def __init__(self, keys: Keys, port: int, multiplexed: bool = False) -> None:
        self._control = keys.login.parent / f"control-{port}" if multiplexed else None
        sharing = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control}", "-o", "ControlPersist=yes"]
        self._base = [
            "ssh",
            "-F",
            "none",
            "-p",
            str(port),
            "-i",
            str(keys.login),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={keys.known_hosts(port)}",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            *(sharing if self._control else []),
            f"{USER}@127.0.0.1",
        ]

    def close(self) -> None:
        """End the shared connection, if there is one (its master process would otherwise outlive the drill)."""
        if self._control is not None and self._control.exists():
            subprocess.run(
                [*self._base[:-1], "-O", "exit", self._base[-1]], capture_output=True, timeout=30, check=False
            )

    def run(self, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([*self._base, command], capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([*self._base, command], 124, "", f"timed out after {timeout:.0f}s")

    def wait_for_boot(
        self, deadline_s: float, elapsed: Callable[[], float], running: Callable[[], bool], every: float = 3.0
    ) -> bool:
        """Wait until cloud-init has finished (its boot-finished file; `status --wait` can return early)."""
        while elapsed() < deadline_s and running():
            if self.run(f"test -f {BOOT_FINISHED}", timeout=20).returncode == 0:
                return True
            time.sleep(every)
        return False
