"""trainguard launch against a fake systemd: canary first, the fit, the stagger, --status and --stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthcheck.cli import build_parser
from healthcheck.errors import Interrupted, Terminated, UsageError
from healthcheck.guard import launch
from healthcheck.status import Status
from tests.conftest import StringConsole

from .fakes import GIB, FakeMachine


def run(machine: FakeMachine, *argv: str, euid: int = 0) -> tuple[int, str]:
    args = build_parser().parse_args(["launch", *argv])
    console = StringConsole()
    status = launch.run_launch(args, console, machine.host(euid=euid))
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
