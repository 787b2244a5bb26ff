"""Scenario 4 for real: the incident's 4 workers with the batch that got workers killed in scenario 2, through
`trainguard launch --batch-size 16` running examples/train_bend.py: they bend, none is killed, all 4 finish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drill import timeline
from drill.degrade import DegradePlan, run_degrade
from drill.image import Image
from drill.qemu import Accelerator
from drill.scenarios import write_results

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]


def test_workers_that_bend_all_finish_none_is_killed_and_sshd_answers_throughout(
    image: Image, accelerator: Accelerator, tmp_path: Path
) -> None:
    outcome = run_degrade(image, accelerator, DegradePlan())
    summary_path = write_results(tmp_path / "drill-results", {"degrade": outcome})
    story = timeline.render_timeline(outcome.events)

    (row,) = json.loads(summary_path.read_text())
    assert row["scenario"] == "degrade"
    assert row["workers_started"] == 4, story
    assert row["workers_finished"] == 4, story
    assert row["workers_killed"] == 0 and outcome.kills == [], story
    assert not row["freeze_seconds"], story
    assert row["worst_banner_latency_s"] is not None and row["worst_banner_latency_s"] < 2.0, story
    # What reached moto's S3: the guard's record, and each worker's result.json with the sizes it went through.
    assert row["results_intact"] is True, story
    sizes = row["batch_sizes"]
    assert sorted(sizes) == ["0", "1", "2", "3"], story
    assert all(worker_sizes[0] == 16 for worker_sizes in sizes.values()), story
    assert all(min(worker_sizes) < 16 for worker_sizes in sizes.values()), story  # each one bent
    assert (tmp_path / "drill-results" / "degrade" / "trainguard-workers.json").is_file()
    for key in ("time_to_hung_s", "detect_s", "reboot_call_s", "recover_s"):
        assert row[key] is None
