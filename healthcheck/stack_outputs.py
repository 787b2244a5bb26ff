"""The deployed stack's outputs (`pulumi stack output --json`), for the laptop's commands that find the stack.

Only where the Pulumi CLI is on PATH and answers in time, from a folder of the
Pulumi project (the selected stack's, or the one named); otherwise None, and
the command asks for what it needs instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from healthcheck.errors import UsageError

PULUMI_TIMEOUT_S = 60.0


def stack_outputs(
    instead: str | None, *, stack: str | None = None, timeout: float = PULUMI_TIMEOUT_S
) -> dict[str, Any] | None:
    """The outputs of `stack` (default: the selected one), or None. A Pulumi that does not answer in time is bad
    input that says what to pass `instead`; with `instead` None, the caller can do without: None."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return None
    command = [pulumi, "stack", "output", "--json", "--non-interactive", *(["--stack", stack] if stack else [])]
    try:
        answered = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        if instead is None:
            return None
        raise UsageError(f"`pulumi stack output` did not answer in {timeout:g} s: {instead}") from None
    if answered.returncode != 0:
        return None
    try:
        outputs = json.loads(answered.stdout)
    except ValueError:
        return None
    return outputs if isinstance(outputs, dict) else None
