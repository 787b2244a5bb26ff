"""make demo: the incident on a throwaway sshd, told apart by the probe, and nothing left behind."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from healthcheck.console import Console
from healthcheck.probe.demo import run_demo

pytestmark = pytest.mark.integration  # a real sshd


def test_demo_tells_a_live_host_from_a_frozen_one_and_cleans_up(tmp_path: Path) -> None:
    out = io.StringIO()
    sandboxes = tmp_path / "sandboxes"
    sandboxes.mkdir()

    code = run_demo(Console(stdout=out, stderr=io.StringIO()), sandbox_parent=sandboxes)

    text = out.getvalue()
    assert code == 0, text
    assert "HUNG" in text
    assert "-> HUNG" in text and "exit status  " in text
    assert "The throwaway sshd, its keys and its sessions are gone." in text
    assert str(sandboxes) in text  # the demo's sshd lived here...
    assert list(sandboxes.iterdir()) == []  # ...and left nothing behind
