"""What `trainguard status` shows: a table read at a glance and what needs attention, or one JSON object
(schemas/status.schema.json).

Text from AWS (names, tags, alarm reasons, keys) is whatever someone wrote there: it is escaped as the probe
escapes what a server sends, and never read as rich markup.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any, TextIO

from healthcheck.console import printable
from healthcheck.overview.judge import INSTANCE_TOPICS, Check, InstanceReport, Report
from healthcheck.status import Status

SCHEMA_VERSION = 1
STYLES = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "bold red", Status.UNKNOWN: "magenta"}
# A pipe gets lines this wide, so a table in a log or an email is not cut to 80 columns.
PIPE_WIDTH = 160
# A Name tag is cut to an instance id's width, so it never widens the table.
NAME_WIDTH = 19


def document(report: Report) -> dict[str, Any]:
    """The JSON object, as schemas/status.schema.json describes it."""
    facts = report.facts
    return {
        "version": SCHEMA_VERSION,
        "stack": facts.stack,
        "region": facts.region,
        "time": _iso(facts.at),
        "status": report.level.name,
        "stack_checks": [_check(check) for check in report.stack_checks],
        "instances": [_instance(instance) for instance in report.instances],
    }


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check(check: Check) -> dict[str, Any]:
    return {"topic": check.topic, "level": check.level.name, "summary": check.summary, "details": list(check.details)}


def _instance(instance: InstanceReport) -> dict[str, Any]:
    facts = instance.facts
    results = facts.results
    return {
        "instance_id": facts.instance_id,
        "name": facts.name,
        "state": facts.state,
        "public_ip": facts.public_ip,
        "private_ip": facts.private_ip,
        "status": instance.level.name,
        "checks": [_check(check) for check in instance.checks],
        "last_push": _iso(results.last_push_at) if results and results.last_push_at else None,
        "newest_result": _iso(results.newest_at) if results and results.newest_at else None,
        "workers": [asdict(record) for record in (results.workers or ())] if results else [],
    }


def write_json(report: Report, out: TextIO) -> None:
    print(json.dumps(document(report)), file=out, flush=True)


def write_text(report: Report, out: TextIO, *, terminal: bool) -> None:
    """The header, the stack's checks, one table row per instance, then every detail worth a person's eyes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(
        file=out,
        width=None if terminal else PIPE_WIDTH,
        force_terminal=terminal,
        no_color=not terminal,
        highlight=False,
        emoji=False,
        markup=False,
    )
    facts = report.facts
    console.print(
        Text.assemble(
            (f"trainguard status: stack {printable(facts.stack)} in {facts.region}, {_iso(facts.at)}: ", ""),
            (report.level.name, STYLES[report.level]),
        )
    )
    for check in report.stack_checks:
        console.print(Text.assemble(f"  {check.topic}: ", (printable(check.summary), STYLES[check.level])))
    if report.instances:
        table = Table(show_edge=False, pad_edge=False, header_style="bold")
        table.add_column("instance", no_wrap=True)
        for column in INSTANCE_TOPICS:
            table.add_column(column, overflow="fold")
        for instance in report.instances:
            cells = [Text(_instance_label(instance), style=STYLES[instance.level])]
            for topic in INSTANCE_TOPICS:
                found = instance.check(topic)
                cells.append(Text(printable(found.summary), STYLES[found.level]) if found else Text("-", "dim"))
            table.add_row(*cells)
        console.print(table)
    for about, check in _needs_attention(report):
        for detail in check.details:
            console.print(
                Text.assemble((f"{check.level.name:<8}", STYLES[check.level]), f" {about}: {printable(detail)}")
            )
    for instance in report.instances:
        workers = instance.check("workers")
        if workers and workers.details:
            console.print(f"{instance.facts.instance_id} workers:")
            for detail in workers.details:
                console.print(f"  {printable(detail)}")


def _instance_label(instance: InstanceReport) -> str:
    """The id, and its Name tag below it."""
    name = f"\n{printable(instance.facts.name)[:NAME_WIDTH]}" if instance.facts.name else ""
    return f"{instance.facts.instance_id}{name}"


def _needs_attention(report: Report) -> list[tuple[str, Check]]:
    """Every check that has more to say than its cell (the workers have their own lines), the worst first."""
    found = [(report.facts.stack, check) for check in report.stack_checks]
    found += [(instance.facts.instance_id, check) for instance in report.instances for check in instance.checks]
    said = [(about, check) for about, check in found if check.details and check.topic != "workers"]
    return sorted(said, key=lambda pair: -pair[1].level)
