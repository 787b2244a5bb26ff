"""The deployed stack's outputs (`pulumi stack output --json`), for the laptop's commands that find the stack.

Only where the Pulumi CLI is on PATH and answers in time, from a folder of the
Pulumi project with its stack selected; otherwise None, and the command asks
for what it needs instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from healthcheck.errors import UsageError

PULUMI_TIMEOUT_S = 60.0


def stack_outputs(instead: str, timeout: float = PULUMI_TIMEOUT_S) -> dict[str, Any] | None:
    """The selected stack's outputs, or None. `instead` says what to pass when Pulumi does not answer in time."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return None
    try:
        answered = subprocess.run(
            [pulumi, "stack", "output", "--json", "--non-interactive"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"`pulumi stack output` did not answer in {timeout:g} s: {instead}") from None
    if answered.returncode != 0:
        return None
    try:
        outputs = json.loads(answered.stdout)
    except ValueError:
        return None
    return outputs if isinstance(outputs, dict) else None
