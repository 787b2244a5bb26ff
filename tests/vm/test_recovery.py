"""Scenario 3 for real: the freeze again, detected by the stack's rule on the canary's own samples, the
auto-reboot handler resets the VM through moto, sshd answers, and the results come back byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drill import timeline
from drill.image import Image
from drill.qemu import Accelerator
from drill.recovery import RecoveryPlan, detection_budget_s, run_recovery
from drill.scenarios import write_results

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]


def test_a_frozen_guest_is_detected_rebooted_and_its_results_come_back_intact(
    image: Image, accelerator: Accelerator, tmp_path: Path
) -> None:
    outcome = run_recovery(image, accelerator, RecoveryPlan())
    summary_path = write_results(tmp_path / "drill-results", {"recovery": outcome})
    story = timeline.render_timeline(outcome.events)

    (row,) = json.loads(summary_path.read_text())
    assert row["scenario"] == "recovery"
    assert row["workers_started"] == 4
    # A real freeze first: the guest kernel answered while sshd did not.
    assert row["freeze_seconds"] >= 30, story
    # The stack's rule fired on the canary's samples and the handler's reboot call followed it; the rule
    # computed here has no CloudWatch evaluation delay, so it must come well within the budget.
    assert 0 < row["detect_s"] <= row["reboot_call_s"] <= detection_budget_s(), story
    # The handler kept the console and emailed a person.
    assert any("post-mortem kept in moto's S3: postmortem/" in text for _, text in outcome.events), story
    assert any("moto's SNS received the handler's email" in text for _, text in outcome.events), story
    # The VM came back, the probe logged in, and the results were intact on /data and as pulled.
    assert row["recover_s"] is not None and row["recover_s"] > 0, story
    assert row["results_intact"] is True, story
    assert row["time_to_hung_s"] is None and row["worst_banner_latency_s"] is None
