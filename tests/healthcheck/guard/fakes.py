"""A fake systemd, cgroup tree and nvidia-smi behind the guard's Host: the launcher's I/O edge, recorded."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from healthcheck.guard import units
from healthcheck.guard.host import Completed, Host

GIB = 1024**3


class FakeMachine:
    """Answers the commands the guard runs, from a dict of units, and keeps cgroup files under a tmp dir."""

    def __init__(self, root: Path, slice_max: int = 15 * GIB, gpu: bool = True) -> None:
        self.cgroup_root = root / "cgroup"
        self.proc = root / "proc"
        self.log_dir = root / "logs"
        self.results_dir = root / "results"
        self.checkpoints_dir = root / "checkpoints"
        self.systemctl: str | None = "/usr/bin/systemctl"
        self.working_directory: str | None = "/home/ubuntu/project"  # None: deleted under the shell
        self.gpu_answer = "23028, 10455\n"
        self.compute_apps_answer: str | None = None  # None: each worker's pid with 5120 MiB
        self.bundle_env = root / "bundle.env"  # the bundle is installed: this is a trainguard instance
        self.bundle_env.write_text("")
        (self.proc / "pressure").mkdir(parents=True)
        self.set_pressure(0.0, 0.0)
        self.set_available(12 * GIB)
        self.slice_max = slice_max
        self.gpu = gpu
        self.units: dict[str, dict[str, str]] = {}
        self.commands: list[list[str]] = []
        self.now = 1000.0
        self.on_tick: Callable[[FakeMachine], None] = lambda machine: None
        self.write(units.SLICE_CGROUP, "memory.max", str(slice_max))
        self.write(units.SLICE_CGROUP, "memory.current", "0")

    def write(self, cgroup: object, name: str, text: str) -> None:
        directory = self.cgroup_root / str(cgroup)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text + "\n")

    def set_pressure(self, some: float, full: float) -> None:
        (self.proc / "pressure" / "memory").write_text(
            f"some avg10={some:.2f} avg60=0.00 avg300=0.00 total=1\n"
            f"full avg10={full:.2f} avg60=0.00 avg300=0.00 total=1\n"
        )

    def set_available(self, available: int) -> None:
        (self.proc / "meminfo").write_text(f"MemTotal: {16 * GIB // 1024} kB\nMemAvailable: {available // 1024} kB\n")

    def set_worker_memory(self, worker: int, current: int, peak: int | None = None) -> None:
        self.write(units.unit_cgroup(worker), "memory.current", str(current))
        if peak is not None:
            self.write(units.unit_cgroup(worker), "memory.peak", str(peak))

    def kill(self, worker: int, result: str = "oom-kill") -> None:
        self.units[units.unit_name(worker)].update(ActiveState="failed", Result=result, ExecMainStatus="9")

    def started(self) -> list[list[str]]:
        return [command for command in self.commands if command[0] == "systemd-run"]

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds
        self.on_tick(self)

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        assert timeout > 0
        argv = list(argv)
        self.commands.append(argv)
        if argv[0] == "systemctl" and self.systemctl is None:
            return Completed(127, "", "systemctl: not found")
        if argv[0] == "systemd-run":
            unit = argv[1].removeprefix("--unit=")
            worker = units.worker_of(unit)
            assert worker is not None
            self.units[unit] = {
                "ActiveState": "active",
                "SubState": "running",
                "Result": "success",
                "MainPID": str(4121 + worker),
                "ExecMainStatus": "0",
                "ActiveEnterTimestampMonotonic": str(int(self.now * 1e6)),
            }
            self.write(units.unit_cgroup(worker), "cgroup.procs", str(4121 + worker))
            self.write(units.unit_cgroup(worker), "memory.current", str(GIB // 2))
            return Completed(0, "", f"Running as unit: {unit}\n")
        if argv[:2] == ["systemctl", "show"]:
            unit = argv[-1]
            if unit == units.SLICE:
                return Completed(0, f"MemoryMax={self.slice_max}\n", "")
            wanted = argv[2].removeprefix("--property=").split(",")
            properties = self.units.get(unit, {"ActiveState": "inactive", "Result": "success"})
            return Completed(0, "".join(f"{name}={properties.get(name, '')}\n" for name in wanted), "")
        if argv[:2] == ["systemctl", "list-units"]:
            lines = io.StringIO()
            for unit, properties in self.units.items():
                print(f"{unit} loaded {properties['ActiveState']} running worker", file=lines)
            return Completed(0, lines.getvalue(), "")
        if argv[:2] == ["systemctl", "stop"]:
            for unit in argv[2:]:
                self.units[unit].update(ActiveState="inactive", SubState="dead")
            return Completed(0, "", "")
        if argv[:2] in (["systemctl", "set-property"], ["systemctl", "reset-failed"]):
            return Completed(0, "", "")
        if argv[0] == "nvidia-smi":
            if not self.gpu:
                return Completed(127, "", "nvidia-smi: not found")
            if argv[1].startswith("--query-gpu"):
                return Completed(0, self.gpu_answer, "")
            if self.compute_apps_answer is not None:
                return Completed(0, self.compute_apps_answer, "")
            return Completed(0, "".join(f"{4121 + units.worker_of(u)}, 5120\n" for u in self.units), "")  # type: ignore[operator]
        raise AssertionError(f"unexpected command {argv}")

    def host(self, environ: dict[str, str] | None = None, euid: int = 0) -> Host:
        return Host(
            run=self.run,
            clock=lambda: self.now,
            sleep=self.sleep,
            cgroup_root=self.cgroup_root,
            proc=self.proc,
            log_dir=self.log_dir,
            results_dir=self.results_dir,
            checkpoints_dir=self.checkpoints_dir,
            bundle_env=self.bundle_env,
            environ=environ if environ is not None else {"PATH": "/usr/bin", "SUDO_USER": "ubuntu"},
            cwd=self.cwd,
            euid=lambda: euid,
            which=lambda name: self.systemctl if name == "systemctl" else None,
            account=lambda user: (os.getuid(), os.getgid()),
        )

    def cwd(self) -> str:
        if self.working_directory is None:
            raise FileNotFoundError(2, "No such file or directory")
        return self.working_directory

    def started_environment(self, worker: int) -> dict[str, str]:
        """The --setenv variables worker N was started with."""
        (command,) = [argv for argv in self.started() if argv[1] == f"--unit={units.unit_name(worker)}"]
        pairs = [
            part.removeprefix("--setenv=") for part in command[: command.index("--")] if part.startswith("--setenv=")
        ]
        return dict(pair.split("=", 1) for pair in pairs)
