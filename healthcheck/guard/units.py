"""Worker units: names, cgroup paths and the exact systemd-run / systemctl command lines (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from healthcheck import contract

SLICE = contract.TRAINING_SLICE
# systemd nests slices by the dashes in their names: trainguard-training.slice lives in trainguard.slice
# (systemd.slice(5)), so its cgroup is /sys/fs/cgroup/trainguard.slice/trainguard-training.slice.
SLICE_CGROUP = PurePosixPath("trainguard.slice") / SLICE
UNIT_PREFIX = contract.WORKER_UNIT_PREFIX
UNIT_PATTERN = f"{UNIT_PREFIX}*.service"
LOG_DIR = PurePosixPath(contract.WORKER_LOG_DIR)
WORKER_PLACEHOLDER = "{worker}"
BATCH_PLACEHOLDER = "{batch}"
NICE = 10
IO_PRIORITY = 7  # best-effort class, lowest priority (ioprio 0..7, 7 lowest: ionice(1))
SYSTEMD_RUN_TIMEOUT_S = 30.0


def unit_name(worker: int) -> str:
    return f"{UNIT_PREFIX}{worker}.service"


def worker_of(unit: str) -> int | None:
    """The worker index of a trainguard-worker-N.service, else None."""
    if not (unit.startswith(UNIT_PREFIX) and unit.endswith(".service")):
        return None
    index = unit[len(UNIT_PREFIX) : -len(".service")]
    return int(index) if index.isdigit() else None


def unit_cgroup(worker: int) -> PurePosixPath:
    return SLICE_CGROUP / unit_name(worker)


def log_path(worker: int, log_dir: PurePosixPath = LOG_DIR) -> PurePosixPath:
    return log_dir / f"worker-{worker}.log"


def worker_command(command: Sequence[str], worker: int, batch_size: int | None = None) -> list[str]:
    """The training command with every "{worker}" replaced by the index and, with --batch-size, every "{batch}"
    by the batch size (nothing else is interpreted)."""
    parts = [part.replace(WORKER_PLACEHOLDER, str(worker)) for part in command]
    if batch_size is not None:
        parts = [part.replace(BATCH_PLACEHOLDER, str(batch_size)) for part in parts]
    return parts


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker's transient unit is started with."""

    worker: int
    command: tuple[str, ...]
    working_directory: str
    path: str
    memory_max: int | None = None  # None: only the slice bounds it (the canary, before its peak is known)
    user: str | None = None
    log_dir: PurePosixPath = LOG_DIR
    environment: tuple[tuple[str, str], ...] = ()  # its budget (worker_environment), as NAME=value
    batch_size: int | None = None  # what {batch} becomes


@dataclass(frozen=True)
class Share:
    """What one worker is given: the workers' count, its MemoryMax, its GPU and that GPU's memory per worker."""

    workers: int
    memory_max: int
    gpu: int | None = None
    gpu_memory_mib: int | None = None


def gpu_shares(workers: int, gpu_total_mib: Sequence[int]) -> list[tuple[int, int] | None]:
    """Each worker's (GPU, MiB of it): workers go round the GPUs in turn and share each GPU's memory evenly."""
    shares: list[tuple[int, int] | None] = []
    for worker in range(workers):
        if not gpu_total_mib:
            shares.append(None)
            continue
        gpu = worker % len(gpu_total_mib)
        on_this_gpu = len(range(gpu, workers, len(gpu_total_mib)))
        shares.append((gpu, gpu_total_mib[gpu] // on_this_gpu))
    return shares


def worker_environment(
    worker: int,
    share: Share,
    results_dir: PurePosixPath,
    checkpoints_dir: PurePosixPath,
    batch_size: int | None,
    python_path: str,
) -> tuple[tuple[str, str], ...]:
    """A worker's budget as environment variables (docs/on-the-instance.md), and the worker library on its
    PYTHONPATH, before any PYTHONPATH it had."""
    folder = f"{contract.WORKER_DIR_PREFIX}{worker}"
    pairs = [
        (contract.WORKER_COUNT_VARIABLE, str(share.workers)),
        (contract.WORKER_MEMORY_MAX_VARIABLE, str(share.memory_max)),
        (contract.WORKER_RESULTS_VARIABLE, str(results_dir / folder)),
        (contract.WORKER_CHECKPOINTS_VARIABLE, str(checkpoints_dir / folder)),
        ("PYTHONPATH", ":".join(filter(None, [contract.WORKER_LIBRARY_DIR, python_path]))),
    ]
    if share.gpu is not None and share.gpu_memory_mib is not None:
        pairs += [
            (contract.WORKER_GPU_VARIABLE, str(share.gpu)),
            (contract.WORKER_GPU_MEMORY_VARIABLE, str(share.gpu_memory_mib)),
        ]
    if batch_size is not None:
        pairs.append((contract.WORKER_BATCH_SIZE_VARIABLE, str(batch_size)))
    return tuple(pairs)


def systemd_run_argv(spec: WorkerSpec) -> list[str]:
    """The exact systemd-run command line for one worker.

    Options and properties: systemd-run(1), systemd.exec(5) (Nice, IOScheduling*, StandardOutput=append:),
    systemd.resource-control(5) (MemoryMax).
    """
    log = log_path(spec.worker, spec.log_dir)
    argv = [
        "systemd-run",
        f"--unit={unit_name(spec.worker)}",
        f"--slice={SLICE}",
        f"--description=trainguard training worker {spec.worker}",
        f"--working-directory={spec.working_directory}",
        f"--property=Nice={NICE}",
        "--property=IOSchedulingClass=best-effort",
        f"--property=IOSchedulingPriority={IO_PRIORITY}",
        f"--property=StandardOutput=append:{log}",
        f"--property=StandardError=append:{log}",
        f"--setenv=PATH={spec.path}",
        f"--setenv={contract.WORKER_VARIABLE}={spec.worker}",
        *(f"--setenv={name}={value}" for name, value in spec.environment),
    ]
    if spec.memory_max is not None:
        argv.append(f"--property=MemoryMax={spec.memory_max}")
    if spec.user:
        argv.append(f"--uid={spec.user}")
    return [*argv, "--", *worker_command(spec.command, spec.worker, spec.batch_size)]


def limit_argv(worker: int, memory_max: int) -> list[str]:
    """Give a running worker (the canary, after its period) its own MemoryMax, for this boot only."""
    return ["systemctl", "set-property", "--runtime", unit_name(worker), f"MemoryMax={memory_max}"]


STATUS_PROPERTIES = ("ActiveState", "SubState", "Result", "MainPID", "ExecMainStatus", "ActiveEnterTimestampMonotonic")


def show_argv(unit: str, names: Sequence[str] = STATUS_PROPERTIES) -> list[str]:
    return ["systemctl", "show", f"--property={','.join(names)}", unit]


def list_argv() -> list[str]:
    return ["systemctl", "list-units", "--all", "--plain", "--no-legend", "--full", UNIT_PATTERN]


def stop_argv(units: Sequence[str]) -> list[str]:
    return ["systemctl", "stop", *units]


def reset_failed_argv(units: Sequence[str]) -> list[str]:
    """Forget finished workers, so their names can be used again by the next launch."""
    return ["systemctl", "reset-failed", *units]
