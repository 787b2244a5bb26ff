"""Immutable probe results and the pure function that concludes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthcheck.status import Status, Verdict
from healthcheck.vitals import Thresholds, Vitals, breaches, describe


@dataclass(frozen=True)
class Stage:
    """One stage as it ran: its name, whether it passed, how long it took and what it saw."""

    name: str
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass(frozen=True)
class Result:
    """Everything the probe learned about one target."""

    target: str
    verdict: Verdict
    summary: str
    duration_s: float
    stages: tuple[Stage, ...]
    vitals: Vitals
    ec2: dict[str, Any] | None = None

    @property
    def status(self) -> Status:
        return self.verdict.status

    def as_dict(self) -> dict[str, Any]:
        """The JSON form; its keys are a stable interface documented in the README."""
        return {
            "target": self.target,
            "status": self.status.name,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "duration_s": round(self.duration_s, 3),
            "stages": [stage.as_dict() for stage in self.stages],
            "vitals": self.vitals,
            "ec2": self.ec2,
        }


def conclude(
    *,
    target: str,
    stages: tuple[Stage, ...],
    failure: tuple[Verdict, str] | None,
    vitals: Vitals,
    thresholds: Thresholds,
    duration_s: float,
    ec2: dict[str, Any] | None = None,
) -> Result:
    """The verdict: the first failed stage's, else DEGRADED or HEALTHY by the vitals."""
    if failure is not None:
        verdict, summary = failure
    elif not any(stage.name == "exec" for stage in stages):
        verdict, summary = Verdict.HEALTHY, f"sshd answers ({stages[-1].detail}); login skipped"
    else:
        past = breaches(vitals, thresholds)
        verdict = Verdict.DEGRADED if past else Verdict.HEALTHY
        summary = "; ".join(past) if past else describe(vitals)
    return Result(
        target=target,
        verdict=verdict,
        summary=summary,
        duration_s=duration_s,
        stages=stages,
        vitals=vitals,
        ec2=ec2,
    )
