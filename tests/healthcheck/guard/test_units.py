"""The exact command lines systemd is given."""

from __future__ import annotations

from pathlib import PurePosixPath

from healthcheck.guard import units


def test_worker_command_line() -> None:
    spec = units.WorkerSpec(
        worker=2,
        command=("python", "train.py", "--worker", "{worker}", "--out=/data/w{worker}", "{other}"),
        working_directory="/home/ubuntu/project",
        path="/opt/conda/bin:/usr/bin",
        memory_max=5033168896,
        user="ubuntu",
    )

    assert units.systemd_run_argv(spec) == [
        "systemd-run",
        "--unit=trainguard-worker-2.service",
        "--slice=trainguard-training.slice",
        "--description=trainguard training worker 2",
        "--working-directory=/home/ubuntu/project",
        "--property=Nice=10",
        "--property=IOSchedulingClass=best-effort",
        "--property=IOSchedulingPriority=7",
        "--property=StandardOutput=append:/data/results/logs/worker-2.log",
        "--property=StandardError=append:/data/results/logs/worker-2.log",
        "--setenv=PATH=/opt/conda/bin:/usr/bin",
        "--setenv=TRAINGUARD_WORKER=2",
        "--property=MemoryMax=5033168896",
        "--uid=ubuntu",
        "--",
        "python",
        "train.py",
        "--worker",
        "2",
        "--out=/data/w2",
        "{other}",
    ]


def test_the_canary_has_no_limit_of_its_own_and_root_runs_as_root() -> None:
    argv = units.systemd_run_argv(units.WorkerSpec(0, ("sleep", "1"), "/", "/usr/bin", log_dir=PurePosixPath("/l")))

    assert not any(part.startswith(("--property=MemoryMax", "--uid")) for part in argv)
    assert "--property=StandardOutput=append:/l/worker-0.log" in argv


def test_unit_names_and_paths() -> None:
    assert units.worker_of("trainguard-worker-12.service") == 12
    assert units.worker_of("trainguard-worker-x.service") is None
    assert units.worker_of("ssh.service") is None
    assert str(units.unit_cgroup(1)) == "trainguard.slice/trainguard-training.slice/trainguard-worker-1.service"
    assert units.limit_argv(0, 4096) == [
        "systemctl",
        "set-property",
        "--runtime",
        "trainguard-worker-0.service",
        "MemoryMax=4096",
    ]
