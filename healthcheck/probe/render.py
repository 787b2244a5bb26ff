"""Results as people and programs read them: a table, failure details, JSON, a watch timeline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from healthcheck.console import printable
from healthcheck.probe.verdict import Result
from healthcheck.status import Status, worst


def overall_status(results: Sequence[Result]) -> Status:
    return worst([result.status for result in results])


def table(results: Sequence[Result]) -> str:
    """One row per target."""
    header = ("TARGET", "STATUS", "VERDICT", "TIME", "SUMMARY")
    rows = [
        (printable(r.target), r.status.name, r.verdict.value, f"{r.duration_s:.2f}s", printable(r.summary))
        for r in results
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in [header, *rows]
    )


def details(results: Sequence[Result]) -> str:
    """What each failure means, what to do next, and how far each stage got."""
    blocks = []
    for result in results:
        if result.status is Status.OK:
            continue
        lines = [
            f"{printable(result.target)}: {result.verdict.value} ({result.status.name})",
            f"  What it means: {result.verdict.meaning}",
            f"  Next step:     {result.next_step}",
            "  Stages:",
        ]
        width = max(len(stage.name) for stage in result.stages) if result.stages else 0
        for stage in result.stages:
            mark = "ok  " if stage.ok else "FAIL"
            lines.append(f"    {stage.name.ljust(width)}  {mark}  {stage.seconds:6.3f}s  {printable(stage.detail)}")
        if result.ec2:
            lines.append(
                "  EC2:           {instance_id} {state}, system status {system_status}, "
                "instance status {instance_status}".format(**result.ec2)
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def report(results: Sequence[Result]) -> str:
    """The human-readable output: the table, then details for every target that is not OK."""
    failures = details(results)
    return table(results) + ("\n\nDetails\n\n" + failures if failures else "")


def as_json(results: Sequence[Result]) -> str:
    """Strict JSON (no NaN or Infinity, which jq rejects): the vitals parser never lets one through."""
    return json.dumps(
        {"status": overall_status(results).name, "results": [result.as_dict() for result in results]},
        indent=2,
        allow_nan=False,
    )


def watch_line(when: datetime, result: Result, previous: Result | None, as_json_line: bool) -> str:
    """One timeline entry for a target whose verdict changed (or was first seen)."""
    stamp = when.isoformat(timespec="seconds").replace("+00:00", "Z")
    if as_json_line:
        entry = {"time": stamp, "previous": previous.verdict.value if previous else None, **result.as_dict()}
        return json.dumps(entry, allow_nan=False)
    change = f"{previous.verdict.value} -> {result.verdict.value}" if previous else result.verdict.value
    return (
        f"{stamp}  {printable(result.target)}  {change} ({result.status.name}, {result.duration_s:.2f}s)  "
        + printable(result.summary)
    )
