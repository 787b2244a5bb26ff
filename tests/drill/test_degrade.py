"""Scenario 4's reading of what it follows over SSH and reads from moto's S3, without a VM."""

from __future__ import annotations

import json

from drill import degrade, guarded
from drill.degrade import DegradePlan, parse_round

RECORD = {
    "version": 1,
    "instance_id": "i-0d711100000000001",
    "workers": [
        {"worker": 0, "state": "exited", "exit_status": 0},
        {"worker": 1, "state": "running", "exit_status": None},
        {"worker": 2, "state": "oom_killed", "exit_status": 9},
        {"worker": 3, "state": "exited", "exit_status": 1},
    ],
}


def test_one_rounds_output_is_the_launchers_log_the_guards_record_and_each_workers_report() -> None:
    output = (
        "worker 0: started as trainguard-worker-0.service\n==> launcher\n"
        + json.dumps(RECORD)
        + "\n==> /data/results/worker-0/trainguard-batch.json\n"
        + json.dumps({"batch_sizes": [16, 12, 9], "level": "ok"})
        + "\n==> /data/results/worker-11/trainguard-batch.json\n"
        + '{"batch_sizes": [16]}'
        + "\n==> /data/results/worker-2/trainguard-batch.json\n{half written"
    )

    found = parse_round(output)
    records, reports = found.records, found.reports

    assert found.launch_log == "worker 0: started as trainguard-worker-0.service\n"
    assert sorted(records) == [0, 1, 2, 3]
    assert reports == {0: {"batch_sizes": [16, 12, 9], "level": "ok"}, 11: {"batch_sizes": [16]}}
    assert guarded.finished(records) == 1  # exited with status 0
    assert guarded.killed(records) == 1
    assert parse_round("") == degrade.Round("", {}, {})


def test_the_launch_runs_the_repositorys_example_with_the_batch_as_its_placeholder() -> None:
    plan = DegradePlan()
    command = guarded.launch_command(plan, degrade.example_command(plan), f" --batch-size {plan.batch}")

    assert "sudo trainguard launch --workers 4 --fit --canary-seconds 20 --stagger 5 --batch-size 16 --" in command
    assert f"python3 {degrade.EXAMPLE_PATH} --batch {{batch}} --steps {plan.steps}" in command
    assert degrade.EXAMPLE.is_file() and degrade.EXAMPLE.name == "train_bend.py"
