"""examples/train_bend.py runs as a worker would: the library from its installed folder, results in its folder.

That its batch bends under a real memory limit is shown in the VM drill's `degrade` scenario (a cgroup v2 memory
controller, which this machine's tests may not have)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from healthcheck.guard import trainguard_worker

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "train_bend.py"


def test_the_example_trains_checkpoints_and_reports_its_batch_sizes(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    shutil.copy(trainguard_worker.__file__, library / "trainguard_worker.py")
    results = tmp_path / "worker-0"
    environment = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(library),
        "TRAINGUARD_WORKER": "0",
        "TRAINGUARD_WORKER_RESULTS_DIR": str(results),
        "TRAINGUARD_BATCH_SIZE": "12",
    }

    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "20", "--step-seconds", "0.01", "--checkpoint-every", "10"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    result = json.loads((results / "result.json").read_text())
    assert result == {**result, "worker": 0, "steps": 20, "batch_sizes": [12], "finished": True}
    assert json.loads((results / "checkpoint.json").read_text())["step"] == 20
    assert json.loads((results / "trainguard-batch.json").read_text())["batch_size"] == 12
    assert not [path.name for path in results.iterdir() if path.name.endswith(".tmp")]
    assert done.stdout.splitlines()[-1].startswith("done: 20 steps, batch sizes [12]; push: ")
