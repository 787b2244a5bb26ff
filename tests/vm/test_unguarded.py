"""Scenario 1 for real, shortened: 4 workers outside any slice freeze sshd in a 1 GiB VM while its kernel lives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drill import timeline
from drill.image import Image
from drill.qemu import Accelerator
from drill.scenarios import UnguardedPlan, run_unguarded, write_results

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

FREEZE_GOAL_S = 30.0


def test_unguarded_workers_freeze_sshd_while_the_guest_kernel_answers(
    image: Image, accelerator: Accelerator, tmp_path: Path
) -> None:
    outcome = run_unguarded(image, accelerator, UnguardedPlan(freeze_goal_s=FREEZE_GOAL_S, watch_s=300.0))
    summary_path = write_results(tmp_path / "drill-results", {"unguarded": outcome})

    (row,) = json.loads(summary_path.read_text())
    assert list(row) == list(timeline.SUMMARY_KEYS)
    assert row["scenario"] == "unguarded"
    assert row["workers_started"] == 4
    # The incident's signature: the guest kernel answered throughout the freeze, sshd did not.
    assert row["freeze_seconds"] >= FREEZE_GOAL_S, timeline.render_timeline(outcome.events)
    longest = max(timeline.freeze_windows(outcome.samples), key=lambda window: window.seconds)
    inside = [s for s in outcome.samples if longest.start_s <= s.at_s < longest.end_s]
    assert inside and all(s.kernel_alive and s.banner != timeline.BANNER_OK for s in inside)
    # The real probe said so, as a person running it would have seen.
    assert row["time_to_hung_s"] is not None
    # The guest ran the drill's NoCloud seed (the serial console is kept as evidence).
    assert "DataSourceNoCloud" in (tmp_path / "drill-results" / "unguarded" / "console.log").read_text()
    for key in ("detect_s", "reboot_call_s", "recover_s", "results_intact"):
        assert row[key] is None
