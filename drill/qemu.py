"""One drill VM under qemu: loopback-only networking, EBS-like disks, a serial log, a monitor, a hard time limit.

A `Vm` is a context manager. However the drill ends (normally, an exception,
Ctrl-C, SIGTERM, the time limit, or the drill process being killed) qemu goes
with it: the context manager kills it, an atexit hook and a SIGTERM handler
catch what unwinds past that, the kernel kills qemu when its parent dies
(PR_SET_PDEATHSIG), and every run leaves a pidfile that the next run sweeps.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import TextIO

from drill import relay
from drill.image import Image
from healthcheck.probe.sandbox import free_ports

QEMU = "qemu-system-x86_64"
# Marks our qemu processes, so the sweep never touches anyone else's.
VM_NAME = "trainguard-drill"
# qemu's user network: the guest's address and the one the host's services appear at.
GUEST_NETWORK = "10.0.2.0/24"
# A guest port nothing listens on: a reset from it proves the guest kernel is alive.
CLOSED_GUEST_PORT = 9


@dataclass(frozen=True)
class DiskThrottle:
    """qemu block throttling, so the guest's disks are as slow as an EBS volume (gp3's baseline: 3,000 IOPS).

    The default is ten times tighter than gp3's baseline, because the guest is
    also ten times slower than the instance under emulation; it is what made
    the freeze last minutes here, as it did on the instance.
    """

    iops_total: int = 300
    bps_total: int = 30 * 1024 * 1024

    def options(self) -> str:
        return f"throttling.iops-total={self.iops_total},throttling.bps-total={self.bps_total}"


@dataclass(frozen=True)
class GuestForward:
    """A guest address:port that qemu connects to a named service on host loopback (guestfwd)."""

    name: str
    guest_port: int
    host_port: int
    guest_address: str = "10.0.2.100"


@dataclass(frozen=True)
class VmSpec:
    """What to boot and how."""

    image: Image
    seed_iso: Path
    memory_mib: int = 1024
    cpus: int = 2
    data_disk_gib: int = 4
    throttle: DiskThrottle = field(default_factory=DiskThrottle)
    guest_forwards: tuple[GuestForward, ...] = ()
    time_limit_s: float = 900.0
    # mitigations=off: the guest runs nothing untrusted, and the mitigations cost much under emulation.
    kernel_args: str = "root=/dev/vda rw console=ttyS0 quiet mitigations=off cloud-init=enabled ds=nocloud"


@dataclass(frozen=True)
class Accelerator:
    """How qemu runs the guest, and why."""

    args: tuple[str, ...]
    description: str


TCG = Accelerator(("-accel", "tcg,thread=multi", "-cpu", "max"), "TCG emulation (KVM is unavailable here)")
KVM = Accelerator(("-accel", "kvm", "-cpu", "host"), "KVM")


def choose_accelerator(image: Image, probe_seconds: float = 20.0) -> Accelerator:
    """KVM when it really works, else TCG.

    /dev/kvm opening is not enough: in a nested VM qemu can abort (an MSR it
    cannot set) or hang in the kernel's decompressor. So boot the real kernel
    with no root and see whether it prints its banner on the serial line.
    """
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as error:
        return Accelerator(TCG.args, f"TCG emulation (/dev/kvm: {error.strerror})")
    try:
        probe = subprocess.run(
            [
                QEMU,
                *KVM.args,
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
                "-kernel",
                str(image.kernel),
                "-append",
                "console=ttyS0 panic=-1",
                "-serial",
                "stdio",
            ],
            capture_output=True,
            timeout=probe_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout or b""
    else:
        output = probe.stdout
    if b"Linux version" in output:
        return KVM
    return Accelerator(TCG.args, "TCG emulation (/dev/kvm opens, but a KVM guest did not boot)")


def relay_command(host_port: int) -> str:
    """What qemu runs per guest connection to a guestfwd address: the relay to 127.0.0.1:host_port (one per
    connection; a `tcp:` chardev would be one connection for the whole run)."""
    # By its file: the harness is not installed, and the relay needs nothing beside it.
    return f"{sys.executable} {Path(relay.__file__)} {host_port}"


def qemu_command(spec: VmSpec, run_dir: Path, accelerator: Accelerator, ssh_port: int, alive_port: int) -> list[str]:
    """The qemu command line (pure): every port bound to 127.0.0.1, the guest restricted to loopback services."""
    throttle = spec.throttle.options()
    netdev = [
        "user",
        "id=net0",
        "restrict=on",
        f"net={GUEST_NETWORK}",
        f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        f"hostfwd=tcp:127.0.0.1:{alive_port}-:{CLOSED_GUEST_PORT}",
        *(
            f"guestfwd=tcp:{forward.guest_address}:{forward.guest_port}-cmd:{relay_command(forward.host_port)}"
            for forward in spec.guest_forwards
        ),
    ]
    return [
        "nice",
        "-n",
        "5",
        QEMU,
        "-name",
        f"{VM_NAME},process={VM_NAME}",
        *accelerator.args,
        "-smp",
        str(spec.cpus),
        "-m",
        str(spec.memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-kernel",
        str(spec.image.kernel),
        "-initrd",
        str(spec.image.initrd),
        "-append",
        spec.kernel_args,
        "-drive",
        f"file={run_dir / 'root.qcow2'},if=none,id=root,format=qcow2,{throttle}",
        "-device",
        "virtio-blk-pci,drive=root",
        "-drive",
        f"file={run_dir / 'data.raw'},if=none,id=data,format=raw,{throttle}",
        "-device",
        "virtio-blk-pci,drive=data",
        "-drive",
        f"file={spec.seed_iso},if=none,id=seed,format=raw,readonly=on",
        "-device",
        "virtio-blk-pci,drive=seed",
        "-netdev",
        ",".join(netdev),
        "-device",
        "virtio-net-pci,netdev=net0",
        "-serial",
        f"file:{run_dir / 'console.log'}",
        "-monitor",
        f"unix:{run_dir / 'monitor.sock'},server=on,wait=off",
        "-pidfile",
        str(run_dir / "qemu.pid"),
    ]


def prepare_disks(spec: VmSpec, run_dir: Path) -> None:
    """A qcow2 overlay over the read-only base, and an empty ext4 /data disk that outlives guest resets."""
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(spec.image.root),
            str(run_dir / "root.qcow2"),
        ],
        check=True,
        capture_output=True,
    )
    data = run_dir / "data.raw"
    with data.open("wb") as handle:
        handle.truncate(spec.data_disk_gib * 1024**3)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "data", str(data)], check=True, capture_output=True)


class VmError(RuntimeError):
    """qemu could not start or died; the message says why, with the end of its output."""


_live: set[Vm] = set()
_live_lock = threading.Lock()


class Vm:
    """A running drill VM; use as a context manager."""

    def __init__(
        self,
        spec: VmSpec,
        run_dir: Path,
        accelerator: Accelerator,
        log: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.accelerator = accelerator
        self.ssh_port, self.alive_port = free_ports(2)
        self._log = log
        self._clock = clock
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: threading.Timer | None = None
        self.started_at = 0.0
        self.hit_time_limit = False

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def monitor_socket(self) -> Path:
        return self.run_dir / "monitor.sock"

    def elapsed(self) -> float:
        return self._clock() - self.started_at

    def __enter__(self) -> Vm:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.kill()

    def start(self) -> None:
        sweep_stale_vms(self.run_dir.parent)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        prepare_disks(self.spec, self.run_dir)
        (self.run_dir / "owner.pid").write_text(str(os.getpid()))
        command = qemu_command(self.spec, self.run_dir, self.accelerator, self.ssh_port, self.alive_port)
        print(f"drill: booting the VM with {self.accelerator.description}", file=self._log, flush=True)
        _install_signal_handlers()
        with _live_lock:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=(self.run_dir / "qemu.out").open("wb"),
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (only prctl, async-signal-safe)
                start_new_session=True,  # Ctrl-C reaches the drill, which then kills qemu itself
            )
            _live.add(self)
        self.started_at = self._clock()
        self._watchdog = threading.Timer(self.spec.time_limit_s, self._time_limit)
        self._watchdog.daemon = True
        self._watchdog.start()
        time.sleep(0.5)
        if self._process.poll() is not None:
            output = (self.run_dir / "qemu.out").read_text(errors="replace").strip()[-2000:]
            self.kill()
            raise VmError(f"qemu exited at once (status {self._process.returncode}): {output}")

    @property
    def pid(self) -> int | None:
        """qemu's pid (`nice` execs into qemu, so it is the child's)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def monitor(self, command: str, timeout: float = 5.0) -> str:
        """Send one human-monitor command (e.g. system_reset) and return its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.monitor_socket))
            received = _read_until(sock, b"(qemu) ")
            sock.sendall(command.encode() + b"\n")
            received = _read_until(sock, b"(qemu) ")
        return received.decode(errors="replace")

    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _time_limit(self) -> None:
        self.hit_time_limit = True
        print(f"drill: the VM passed its {self.spec.time_limit_s:.0f}s limit; killing it", file=self._log, flush=True)
        self.kill()

    def kill(self) -> None:
        """Kill qemu and wait for it; safe to call more than once, from any thread."""
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.cancel()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        with _live_lock:
            _live.discard(self)
        for name in ("qemu.pid", "owner.pid"):
            (self.run_dir / name).unlink(missing_ok=True)


def kill_all_vms() -> None:
    """Kill every VM this process started (atexit and signal handlers)."""
    with _live_lock:
        vms = list(_live)
    for vm in vms:
        vm.kill()


def sweep_stale_vms(runs_dir: Path) -> list[int]:
    """Kill qemu processes left by drill runs whose owner died; returns their pids.

    Only a process whose command line names that run's folder is killed, so a
    reused pid is never someone else's process.
    """
    killed = []
    for pidfile in runs_dir.glob("*/qemu.pid"):
        run_dir = pidfile.parent
        owner = _read_pid(run_dir / "owner.pid")
        if owner is not None and _alive(owner):
            continue
        pid = _read_pid(pidfile)
        if pid is not None and str(run_dir).encode() in _cmdline(pid):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        pidfile.unlink(missing_ok=True)
    return killed


def remove_run_dir(run_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete a run's disks, keeping the named files (the serial log, say)."""
    if not run_dir.exists():
        return
    for path in run_dir.iterdir():
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while not received.endswith(marker):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGKILL when the drill process dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


_handlers_installed = False


def _install_signal_handlers() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `with Vm(...)` kills its VM; atexit catches the rest."""
    global _handlers_installed  # noqa: PLW0603 (once per process)
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    atexit.register(kill_all_vms)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(number: int, frame: FrameType | None) -> None:
        kill_all_vms()
        if callable(previous):
            previous(number, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
