"""trainguard launch against a fake systemd: canary first, the fit, the stagger, --status and --stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from healthcheck.cli import build_parser
from healthcheck.errors import Interrupted, Terminated, UsageError
from healthcheck.guard import launch
from healthcheck.status import Status
from tests.conftest import StringConsole

from .fakes import GIB, FakeMachine


def run(machine: FakeMachine, *argv: str, euid: int = 0, environ: dict[str, str] | None = None) -> tuple[int, str]:
    args = build_parser().parse_args(["launch", *argv])
    console = StringConsole()
    status = launch.run_launch(args, console, machine.host(environ=environ, euid=euid))
    return status, console.out


TRAIN = ("--", "python", "train.py", "--worker", "{worker}")


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path)


def test_all_workers_start_canary_first_then_staggered_each_with_its_memory_max(machine: FakeMachine) -> None:
    machine.on_tick = lambda m: m.set_worker_memory(0, 2 * GIB, peak=3 * GIB)

    status, out = run(machine, "--workers", "3", "--stagger", "60", "--canary-seconds", "120", *TRAIN)

    assert status == Status.OK, out
    started = machine.started()
    assert [command[1] for command in started] == [f"--unit=trainguard-worker-{n}.service" for n in range(3)]
    assert not any(part.startswith("--property=MemoryMax") for part in started[0])
    per_worker = 3 * GIB * 12 // 10 // 4096 * 4096 + 4096 * (3 * GIB * 12 // 10 % 4096 > 0)
    assert f"--property=MemoryMax={per_worker}" in started[1]
    assert started[2][-1] == "2"
    assert ["systemctl", "set-property", "--runtime", "trainguard-worker-0.service", f"MemoryMax={per_worker}"] in (
        machine.commands
    )
    assert "fit:    3 worker(s), limited by GPU memory (min(4, 3))" in out
    # worker 1 waited for the canary period, worker 2 for the stagger after worker 1
    assert machine.now >= 1000 + 120 + 60


def test_a_canary_that_dies_stops_everything_and_says_why(machine: FakeMachine) -> None:
    (machine.log_dir).mkdir()
    (machine.log_dir / "worker-0.log").write_text("epoch 1\nCUDA out of memory\n")

    def die_at_30s(m: FakeMachine) -> None:
        m.set_worker_memory(0, 6 * GIB, peak=7 * GIB)
        if m.now >= 1030:
            m.kill(0)

    machine.on_tick = die_at_30s

    status, out = run(machine, "--workers", "4", *TRAIN)

    assert status == Status.CRITICAL
    assert len(machine.started()) == 1
    assert "worker 0 died in the canary period after 30 s (failed, result oom-kill, exit status 9)" in out
    assert "peak memory 7.00 GiB" in out
    assert "Last log line: CUDA out of memory" in out


def test_fewer_fit_than_asked_is_refused_with_the_number_and_reason(machine: FakeMachine) -> None:
    machine.on_tick = lambda m: m.set_worker_memory(0, 5 * GIB, peak=5 * GIB)

    status, out = run(machine, "--workers", "4", "--canary-seconds", "20", *TRAIN)

    assert status == Status.CRITICAL
    assert len(machine.started()) == 1
    assert "refused: only 2 of 4 workers fit, limited by the slice's memory. Worker 0 (the canary) is stopped." in out
    assert "Run again with --workers 2, or add --fit" in out
    assert machine.units["trainguard-worker-0.service"]["ActiveState"] == "inactive"


def test_with_fit_only_what_fits_starts(machine: FakeMachine) -> None:
    machine.on_tick = lambda m: m.set_worker_memory(0, 5 * GIB, peak=5 * GIB)

    status, out = run(machine, "--workers", "4", "--canary-seconds", "20", "--stagger", "0", "--fit", *TRAIN)

    assert status == Status.WARNING
    assert len(machine.started()) == 2
    assert "--fit: starting 2 of 4 workers" in out


def test_the_next_start_waits_for_pressure_to_fall_and_says_so(machine: FakeMachine) -> None:
    def tick(m: FakeMachine) -> None:
        m.set_worker_memory(0, GIB, peak=GIB)
        m.set_pressure(40.0 if m.now < 1100 else 0.0, 2.0 if m.now < 1100 else 0.0)

    machine.on_tick = tick

    status, out = run(machine, "--workers", "2", "--canary-seconds", "10", "--stagger", "0", *TRAIN)

    assert status == Status.OK, out
    assert out.count("worker 1: waiting: memory pressure some 40.0% / full 2.0%") == 1
    assert machine.now >= 1100


def test_waiting_gives_up_after_max_wait_and_starts_nothing_more(machine: FakeMachine) -> None:
    machine.on_tick = lambda m: m.set_worker_memory(0, GIB, peak=GIB)
    machine.set_available(GIB // 2)

    status, out = run(machine, "--workers", "2", "--canary-seconds", "10", "--max-wait", "60", *TRAIN)

    assert status == Status.WARNING
    assert len(machine.started()) == 1
    assert "gave up after waiting 60 s (MemAvailable 512 MiB < 1.20 GiB" in out


def test_a_worker_that_dies_during_the_stagger_stops_later_starts(machine: FakeMachine) -> None:
    def tick(m: FakeMachine) -> None:
        m.set_worker_memory(0, GIB, peak=GIB)
        if m.now > 1100 and "trainguard-worker-1.service" in m.units:
            m.kill(1)

    machine.on_tick = tick

    status, out = run(machine, "--workers", "3", "--canary-seconds", "10", "--stagger", "200", *TRAIN)

    assert status == Status.WARNING
    assert len(machine.started()) == 2
    assert "worker 1 ended (failed, result oom-kill" in out


def test_bad_input_and_missing_setup_are_one_line_errors(machine: FakeMachine) -> None:
    with pytest.raises(UsageError, match="no training command"):
        run(machine, "--workers", "2")
    with pytest.raises(UsageError, match="--workers N is required"):
        run(machine, "--", "python", "train.py")
    with pytest.raises(UsageError, match="sudo"):
        run(machine, "--workers", "2", *TRAIN, euid=1000)
    machine.slice_max = "infinity"  # type: ignore[assignment]  # what systemctl shows for a slice never set up
    with pytest.raises(UsageError, match="has no MemoryMax \\(infinity\\)"):
        run(machine, "--workers", "2", *TRAIN)


def test_a_second_launch_while_workers_run_is_refused(machine: FakeMachine) -> None:
    machine.on_tick = lambda m: m.set_worker_memory(0, GIB, peak=GIB)
    run(machine, "--workers", "1", "--canary-seconds", "10", *TRAIN)

    with pytest.raises(UsageError, match=r"workers already running \(trainguard-worker-0\.service\)"):
        run(machine, "--workers", "1", *TRAIN)


def test_status_table_and_stop(machine: FakeMachine) -> None:
    machine.on_tick = lambda m: m.set_worker_memory(0, 2 * GIB, peak=3 * GIB)
    run(machine, "--workers", "2", "--canary-seconds", "60", "--stagger", "0", *TRAIN)
    machine.log_dir.joinpath("worker-1.log").write_text("step 10 loss 2.3\n")
    machine.kill(0)
    machine.write("trainguard.slice/trainguard-training.slice", "memory.current", str(3 * GIB))
    machine.now += 3600

    status, out = run(machine, "--status", euid=1000)

    assert status == Status.WARNING
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["0", "failed", "(oom-kill)"]
    assert lines[2].split()[:2] == ["1", "active"]
    assert "1h00m" in lines[2]
    assert lines[2].endswith("step 10 loss 2.3")
    assert lines[-1] == "trainguard-training.slice: 3.00 GiB of 15.00 GiB (20%)"

    status, out = run(machine, "--stop")

    assert status == Status.OK
    assert ["systemctl", "stop", "trainguard-worker-0.service", "trainguard-worker-1.service"] in machine.commands
    assert "worker 1: inactive" in out


@pytest.mark.parametrize("signal_raises", [KeyboardInterrupt, Terminated])
def test_ctrl_c_leaves_started_workers_running_and_says_how_to_stop_them(
    machine: FakeMachine, signal_raises: type[BaseException]
) -> None:
    def tick(m: FakeMachine) -> None:
        m.set_worker_memory(0, GIB, peak=GIB)
        if m.now > 1400:  # during the stagger before worker 2
            raise signal_raises

    machine.on_tick = tick

    with pytest.raises(Interrupted) as interrupted:
        run(machine, "--workers", "3", "--canary-seconds", "10", "--stagger", "300", *TRAIN)

    assert isinstance(interrupted.value.cause, signal_raises)
    assert interrupted.value.progress == "started workers (0, 1) keep running; stop them with: trainguard launch --stop"
    assert not any(command[:2] == ["systemctl", "stop"] for command in machine.commands)


def test_on_a_machine_trainguard_never_set_up_it_says_in_one_line_that_it_runs_on_the_instance(
    machine: FakeMachine,
) -> None:
    machine.bundle_env.unlink()  # a laptop

    for argv in (("--status",), ("--stop",), ("--workers", "2", *TRAIN)):
        with pytest.raises(UsageError, match=r"^trainguard launch runs on a training instance.*sudo trainguard launch"):
            run(machine, *argv)
    assert machine.commands == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--headroom", "nan"),
        ("--headroom", "inf"),
        ("--headroom", "-0.1"),
        ("--canary-seconds", "nan"),
        ("--canary-seconds", "inf"),
        ("--max-wait", "nan"),
        ("--max-wait", "inf"),
        ("--stagger", "nan"),
        ("--stagger", "1e300"),
        ("--stagger", "-5"),
        ("--workers", "0"),
        ("--workers", "1e9"),
        ("--batch-size", "0"),
    ],
)
def test_every_bound_is_checked_when_the_arguments_are_parsed(machine: FakeMachine, option: str, value: str) -> None:
    """nan once crashed after the canary with worker 0 left running, inf waited forever, 1e300 overflowed."""
    arguments = {"--workers": "2", option: value}

    with pytest.raises(UsageError, match=rf"^argument {option}: {option} must be"):
        run(machine, *(word for pair in arguments.items() for word in pair), *TRAIN)
    assert machine.commands == []


def test_a_slice_memory_max_of_zero_is_a_setup_to_redo_not_a_division_by_zero(machine: FakeMachine) -> None:
    machine.slice_max = 0

    with pytest.raises(UsageError, match=r"MemoryMax=0, which leaves training no memory: run trainguard-setup-slice"):
        run(machine, "--workers", "2", *TRAIN)
    assert machine.started() == []


@pytest.mark.parametrize(
    ("gpus", "apps"),
    [("[Unknown Error]\n", "[Unknown Error]\n"), ("garbage, 1, 2\n", "No devices were found\n"), ("", "4121, x\n")],
)
def test_unexpected_nvidia_smi_output_is_a_warning_and_gpu_memory_is_not_counted(
    machine: FakeMachine, gpus: str, apps: str
) -> None:
    machine.gpu_answer, machine.compute_apps_answer = gpus, apps
    machine.on_tick = lambda m: m.set_worker_memory(0, GIB, peak=GIB)
    console = StringConsole()

    status = launch.run_launch(
        build_parser().parse_args(["launch", "--workers", "2", "--canary-seconds", "10", "--stagger", "0", *TRAIN]),
        console,
        machine.host(),
    )

    assert status == Status.OK, console.out
    assert len(machine.started()) == 2
    assert console.err.count("trainguard: warning: nvidia-smi: not a") <= 1
    assert "GPU memory is not counted" in console.err or "GPU:    none found" in console.out


def test_a_deleted_working_directory_is_one_line(machine: FakeMachine) -> None:
    machine.working_directory = None

    with pytest.raises(UsageError, match=r"^the current folder no longer exists .*: cd into the training folder"):
        run(machine, "--workers", "2", *TRAIN)
    assert machine.started() == []


def test_without_systemctl_it_says_so_not_that_setup_has_not_run(machine: FakeMachine) -> None:
    machine.systemctl = None

    for argv in (("--status",), ("--stop",), ("--workers", "2", *TRAIN)):
        with pytest.raises(UsageError, match=r"^systemctl is not installed here: trainguard launch starts workers"):
            run(machine, *argv)


def test_a_crash_stops_the_workers_it_started(machine: FakeMachine) -> None:
    def crash(m: FakeMachine) -> None:
        m.set_worker_memory(0, GIB, peak=GIB)
        if m.now > 1020:
            raise RuntimeError("a bug")

    machine.on_tick = crash

    with pytest.raises(RuntimeError, match="a bug"):
        run(machine, "--workers", "2", "--canary-seconds", "60", *TRAIN)
    assert ["systemctl", "stop", "trainguard-worker-0.service"] in machine.commands


def test_a_pressure_file_in_an_unknown_format_stops_the_canary_and_is_one_line(machine: FakeMachine) -> None:
    def tick(m: FakeMachine) -> None:
        m.set_worker_memory(0, GIB, peak=GIB)
        (m.proc / "pressure" / "memory").write_text("some avg10=NaN\n")

    machine.on_tick = tick
    console = StringConsole()

    status = launch.run_launch(
        build_parser().parse_args(["launch", "--workers", "2", "--canary-seconds", "60", *TRAIN]),
        console,
        machine.host(),
    )

    assert status == Status.UNKNOWN
    assert console.err.startswith("trainguard: error: not a pressure file")
    assert console.err.rstrip().endswith("stopped the workers it had started (0)")
    assert ["systemctl", "stop", "trainguard-worker-0.service"] in machine.commands


def test_each_worker_is_given_its_budget_folders_and_the_library_in_its_environment(machine: FakeMachine) -> None:
    machine.on_tick = lambda m: m.set_worker_memory(0, 2 * GIB, peak=3 * GIB)
    machine.gpu_answer = "23028, 0\n23028, 0\n"  # two GPUs

    status, out = run(
        machine,
        *("--workers", "3", "--canary-seconds", "10", "--stagger", "0", "--batch-size", "16"),
        *("--", "python", "train.py", "--batch", "{batch}", "--worker", "{worker}"),
        environ={"PATH": "/usr/bin", "SUDO_USER": "ubuntu", "PYTHONPATH": "/home/ubuntu/lib"},
    )

    assert status == Status.OK, out
    canary, second = machine.started_environment(0), machine.started_environment(1)
    (per_worker,) = [part for part in machine.started()[1] if part.startswith("--property=MemoryMax=")]
    assert canary["TRAINGUARD_MEMORY_MAX"] == str(15 * GIB)  # the canary's limit at its start is the slice's
    assert second["TRAINGUARD_MEMORY_MAX"] == per_worker.rpartition("=")[2]
    assert {env["TRAINGUARD_WORKERS"] for env in (canary, second)} == {"3"}
    # Round the GPUs: workers 0 and 2 share GPU 0, worker 1 has GPU 1 to itself.
    assert (canary["TRAINGUARD_GPU"], canary["TRAINGUARD_GPU_MEMORY_MIB"]) == ("0", str(23028 // 2))
    assert (second["TRAINGUARD_GPU"], second["TRAINGUARD_GPU_MEMORY_MIB"]) == ("1", "23028")
    assert second["TRAINGUARD_WORKER_RESULTS_DIR"] == str(machine.results_dir / "worker-1")
    assert second["TRAINGUARD_WORKER_CHECKPOINTS_DIR"] == str(machine.checkpoints_dir / "worker-1")
    assert all((machine.results_dir / f"worker-{n}").is_dir() for n in range(3))
    assert second["PYTHONPATH"] == "/opt/trainguard/lib:/home/ubuntu/lib"
    assert second["TRAINGUARD_BATCH_SIZE"] == "16"
    assert machine.started()[1][-4:] == ["--batch", "16", "--worker", "1"]


def test_the_incidents_16_per_worker_is_shown_not_to_fit_and_the_largest_batch_that_does(
    machine: FakeMachine,
) -> None:
    """A g5.xlarge's slice, the canary at batch 16 peaking at 5.5 GiB of which 0.7 GiB is fixed (its library's
    report): 4 workers of 16 (64 in all) need 26 GiB; 7 per worker (28 in all) fit."""
    machine.slice_max = 15805476864
    report = machine.results_dir / "worker-0" / "trainguard-batch.json"

    def tick(m: FakeMachine) -> None:
        m.set_worker_memory(0, int(5.5 * GIB), peak=int(5.5 * GIB))
        report.write_text(json.dumps({"baseline_bytes": int(0.7 * GIB), "batch_at_peak": 16, "batch_size": 16}))

    machine.on_tick = tick

    status, out = run(machine, "--workers", "4", "--canary-seconds", "20", "--batch-size", "16", *TRAIN)

    assert status == Status.CRITICAL
    assert "batch:  per worker: slice MemoryMax 14.72 GiB / 4 worker(s) / (1 + 0.2) = 3.07 GiB" in out
    assert "= 7 (7 x 4 = 28 in all); 16 per worker (64 in all) does not fit" in out
    assert "Run again with --workers 2, or keep 4 workers with --batch-size 7, or add --fit" in out


def test_the_status_table_shows_each_workers_batch_from_its_report(machine: FakeMachine) -> None:
    machine.on_tick = lambda m: m.set_worker_memory(0, GIB, peak=GIB)
    run(machine, "--workers", "2", "--canary-seconds", "10", "--stagger", "0", *TRAIN)
    (machine.results_dir / "worker-1" / "trainguard-batch.json").write_text('{"batch_size": 12}')
    (machine.results_dir / "worker-0" / "trainguard-batch.json").write_text("[" * 100000)

    status, out = run(machine, "--status", euid=1000)

    assert status == Status.OK
    header, worker_0, worker_1 = out.splitlines()[:3]
    column = header.index("batch")
    assert header[column - 2 : column + 5] == "  batch"
    assert worker_0[column - 2 : column + 5].strip() == "-" and worker_1[column - 2 : column + 5].strip() == "12"
