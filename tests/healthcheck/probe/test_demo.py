"""make demo: the incident on a throwaway sshd, told apart by the probe, and nothing left behind."""

from __future__ import annotations

import io
from pathlib import Path

from healthcheck.probe.demo import run_demo


def test_demo_tells_a_live_host_from_a_frozen_one_and_cleans_up() -> None:
    out = io.StringIO()
    before = {p.name for p in Path("/tmp").glob("trainguard-sshd-*")}

    code = run_demo(out)

    text = out.getvalue()
    assert code == 0, text
    assert "HUNG" in text
    assert "-> HUNG" in text and "exit status  " in text
    assert "The throwaway sshd, its keys and its sessions are gone." in text
    assert {p.name for p in Path("/tmp").glob("trainguard-sshd-*")} == before
