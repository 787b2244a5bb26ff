"""`make test` (plain pytest) leaves the VM tests out; `-m vm` selects them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def collect(*extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/vm", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout


def test_plain_pytest_deselects_the_vm_tests_and_dash_m_vm_selects_them() -> None:
    default = collect()
    selected = collect("-m", "vm")

    assert "deselected" in default and "tests/vm/test_unguarded.py" not in default
    assert "tests/vm/test_unguarded.py::test_unguarded_workers_freeze_sshd_while_the_guest_kernel_answers" in selected
