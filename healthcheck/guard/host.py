"""The guard's one edge: commands run with a timeout, files read, the clock. Injected everywhere, faked in tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from healthcheck import contract
from healthcheck.guard import readings, units

NVIDIA_SMI_TIMEOUT_S = 10.0
SYSTEMCTL_TIMEOUT_S = 30.0
TAIL_BYTES = 4096


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """One line for people: the command's own complaint, else its exit status."""
        text = (self.stderr or self.stdout).strip().splitlines()
        return text[-1] if text else f"exit status {self.returncode}"


Runner = Callable[[Sequence[str], float], Completed]


def run_command(argv: Sequence[str], timeout: float) -> Completed:
    """Run argv with a timeout; a missing program is 127 and a timeout 124, as the shell and timeout(1) say.

    The command runs in a process group of its own, and a timeout kills the whole group: a script's
    children (the push's aws, holding the push lock) must not outlive it.
    """
    try:
        process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",  # a command that prints another encoding must not end the guard
            start_new_session=True,
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: not found")
    except OSError as error:  # not executable, say: the shell's 126
        return Completed(126, "", f"{argv[0]}: {error.strerror or error}")
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return Completed(124, "", f"{argv[0]}: no answer within {timeout:g} s")
    return Completed(process.returncode, stdout, stderr)


def account_ids(user: str) -> tuple[int, int]:
    """A user's (uid, gid); KeyError when there is no such user."""
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


@dataclass
class Host:
    """The machine as the guard sees it. Every path and command goes through here."""

    run: Runner = run_command
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    cgroup_root: Path = Path("/sys/fs/cgroup")
    proc: Path = Path("/proc")
    log_dir: Path = Path(str(units.LOG_DIR))
    results_dir: Path = Path(contract.RESULTS_DIR)
    checkpoints_dir: Path = Path(contract.CHECKPOINTS_DIR)
    # The bundle writes it: on a machine without it, trainguard's setup never ran (a laptop, say).
    bundle_env: Path = Path(contract.BUNDLE_ENV_FILE)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Callable[[], str] = os.getcwd
    euid: Callable[[], int] = os.geteuid
    which: Callable[[str], str | None] = shutil.which
    account: Callable[[str], tuple[int, int]] = account_ids
    # worker -> highest memory seen, for kernels without memory.peak and for workers already gone
    peaks: dict[int, int] = field(default_factory=dict)

    def read(self, path: Path) -> str | None:
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def worker_folder(self, parent: Path, worker: int, user: str | None) -> Path:
        """A worker's own folder under `parent` (worker-N), made if missing and given to the user the worker runs
        as. Never through a link: a folder that is not one is refused (OSError), not followed."""
        folder = parent / f"{contract.WORKER_DIR_PREFIX}{worker}"
        parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        if not stat.S_ISDIR(folder.lstat().st_mode):
            raise NotADirectoryError(f"{folder} is not a folder")
        if user:
            os.lchown(folder, *self.account(user))
        return folder

    def pressure(self) -> readings.Pressure:
        text = self.read(self.proc / "pressure" / "memory")
        # A kernel without PSI (CONFIG_PSI off, or psi=0) reads as no pressure: the other checks still hold.
        return readings.parse_pressure(text) if text else readings.Pressure(0.0, 0.0)

    def meminfo(self) -> dict[str, int]:
        return readings.parse_meminfo(self.read(self.proc / "meminfo") or "")

    def cgroup_value(self, cgroup: str, name: str) -> int | None:
        text = self.read(self.cgroup_root / cgroup / name)
        return readings.parse_cgroup_bytes(text) if text is not None else None

    def slice_memory(self) -> tuple[int | None, int | None]:
        """The slice's (memory.current, memory.max); None where unreadable or unlimited."""
        return (
            self.cgroup_value(str(units.SLICE_CGROUP), "memory.current"),
            self.cgroup_value(str(units.SLICE_CGROUP), "memory.max"),
        )

    def worker_memory(self, worker: int) -> tuple[int | None, int | None]:
        """A worker's (memory now, peak): memory.peak where the kernel has it (5.19+), else the highest seen."""
        cgroup = str(units.unit_cgroup(worker))
        current = self.cgroup_value(cgroup, "memory.current")
        seen = [value for value in (current, self.cgroup_value(cgroup, "memory.peak"), self.peaks.get(worker)) if value]
        if seen:
            self.peaks[worker] = max(seen)
        return current, self.peaks.get(worker)

    def worker_pids(self, worker: int) -> list[int]:
        text = self.read(self.cgroup_root / units.unit_cgroup(worker) / "cgroup.procs") or ""
        return [int(pid) for pid in text.split() if pid.isdigit()]

    def gpus(self) -> list[readings.GpuMemory]:
        done = self.run(
            ["nvidia-smi", "--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits"],
            NVIDIA_SMI_TIMEOUT_S,
        )
        return readings.parse_gpu_memory(done.stdout) if done.ok else []

    def gpu_mib_by_pid(self) -> dict[int, int]:
        done = self.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            NVIDIA_SMI_TIMEOUT_S,
        )
        return readings.parse_compute_apps(done.stdout) if done.ok else {}

    def worker_gpu_mib(self, worker: int, by_pid: dict[int, int]) -> int:
        return sum(by_pid.get(pid, 0) for pid in self.worker_pids(worker))

    def unit_properties(self, unit: str, names: Sequence[str] = units.STATUS_PROPERTIES) -> dict[str, str]:
        done = self.run(units.show_argv(unit, names), SYSTEMCTL_TIMEOUT_S)
        return readings.parse_properties(done.stdout) if done.ok else {}

    def worker_units(self) -> list[str]:
        done = self.run(units.list_argv(), SYSTEMCTL_TIMEOUT_S)
        names = readings.parse_unit_list(done.stdout) if done.ok else []
        workers = sorted((index, name) for name in names if (index := units.worker_of(name)) is not None)
        return [name for _, name in workers]

    def last_log_line(self, worker: int) -> str:
        path = self.log_dir / f"worker-{worker}.log"
        try:
            with path.open("rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - TAIL_BYTES))
                tail = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line for line in tail.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""
