"""The slice setup writes its drop-ins from /proc/meminfo."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    assert not list(units_dir.rglob(".*.tmp"))


def test_agents_are_counted_from_what_they_use_on_the_instance() -> None:
    total, lines = setup.system_memory_min([100 * setup.MIB, None])

    assert total == (50 + 112 + 200 + 64) * setup.MIB
    assert lines[2] == "amazon-cloudwatch-agent.service: 200 MiB (2 x 100 MiB)"


def test_unreadable_meminfo_is_one_line_and_exit_3(tmp_path: Path) -> None:
    assert (
        setup.main(["--root", str(tmp_path), "--meminfo", str(tmp_path / "missing")], FakeMachine(tmp_path).host()) == 3
    )


@pytest.fixture
def read_only_root(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system (a tmpfs mounted ro), as a root that fails during setup."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    root = tmp_path / "ro"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_a_read_only_root_is_one_line_and_exit_1(
    read_only_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = setup.main(
        ["--root", str(read_only_root), "--meminfo", str(SAMPLES / "proc-meminfo.debian12-24g.txt")],
        FakeMachine(tmp_path).host(),
    )

    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"trainguard-setup-slice: cannot write {read_only_root}/etc/systemd/system/")
    assert err.rstrip().endswith("Read-only file system")
    assert len(err.splitlines()) == 1
