"""The Makefile's own checks: the VM drill says in one line, and at once, where it cannot run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")


def make_vm_host(tmp_path: Path, system: str) -> subprocess.CompletedProcess[str]:
    """`make vm-host` with only a fake `uname` on PATH: no qemu, no apt-get."""
    if MAKE is None:
        pytest.skip("make is not installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "uname").write_text(f"#!/bin/sh\necho {system}\n")
    (fake / "uname").chmod(0o755)
    return subprocess.run(
        [MAKE, "--no-print-directory", "-C", str(REPO), "vm-host"],
        env={"PATH": str(fake)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_vm_drill_refuses_a_mac_in_one_line_and_names_the_aws_drill(tmp_path: Path) -> None:
    ran = make_vm_host(tmp_path, "Darwin")

    assert ran.returncode != 0
    assert ran.stdout == (
        "the VM drill runs on Linux (ideally with KVM); here, drill a deployed instance: trainguard drill i-...\n"
    )


def test_the_vm_drill_refuses_a_linux_without_qemu_or_apt_in_one_line(tmp_path: Path) -> None:
    ran = make_vm_host(tmp_path, "Linux")

    assert ran.returncode != 0
    assert ran.stdout.startswith("the VM drill needs qemu-system-x86_64, debootstrap and genisoimage")
    assert ran.stdout.count("\n") == 1
