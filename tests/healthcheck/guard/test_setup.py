"""The slice setup writes its drop-ins from /proc/meminfo."""

from __future__ import annotations

from pathlib import Path

from healthcheck.guard import setup

from .fakes import FakeMachine

SAMPLES = Path(__file__).parent / "samples"


def test_drop_ins_from_this_machines_meminfo(tmp_path: Path, capsys: object) -> None:
    machine = FakeMachine(tmp_path)

    assert (
        setup.main(
            ["--root", str(tmp_path), "--meminfo", str(SAMPLES / "proc-meminfo.debian12-24g.txt")], machine.host()
        )
        == 0
    )

    units_dir = tmp_path / "etc/systemd/system"
    slice_conf = (units_dir / "trainguard-training.slice.d/50-memory.conf").read_text()
    ram = 24684096 * 1024
    memory_max = (ram - round(ram * 0.08 + 0.5)) // 4096 * 4096
    assert f"MemoryMax={memory_max}\n" in slice_conf
    assert "MemoryHigh=" in slice_conf
    assert (units_dir / "system.slice.d/50-trainguard.conf").read_text().endswith("MemoryMin=304087040\n")
    assert not list(units_dir.rglob(".*.partial"))


def test_agents_are_counted_from_what_they_use_on_the_instance() -> None:
    total, lines = setup.system_memory_min([100 * setup.MIB, None])

    assert total == (50 + 112 + 200 + 64) * setup.MIB
    assert lines[2] == "amazon-cloudwatch-agent.service: 200 MiB (2 x 100 MiB)"


def test_unreadable_meminfo_is_one_line_and_exit_3(tmp_path: Path) -> None:
    assert (
        setup.main(["--root", str(tmp_path), "--meminfo", str(tmp_path / "missing")], FakeMachine(tmp_path).host()) == 3
    )
