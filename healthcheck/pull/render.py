"""What a pull shows: a rich progress bar on a terminal, plain lines on a pipe, one summary line at the end.

rich is imported only when the output is a terminal.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TextIO

from healthcheck.pull.plan import PullPlan

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from healthcheck.pull.transfer import Fetched


@dataclass(frozen=True)
class RoundResult:
    """One pull: what it found and did (immutable, as nagiosplugin's results)."""

    new: int
    updated: int
    unchanged: int
    bytes: int
    seconds: float
    failed: tuple[tuple[str, str], ...] = ()  # (key, why)
    skipped: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.new or self.updated or self.failed)


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def summary_line(result: RoundResult) -> str:
    line = (
        f"{result.new} new, {result.updated} updated, {result.unchanged} unchanged, "
        f"{human_bytes(result.bytes)} in {result.seconds:.1f} s"
    )
    if result.skipped:
        line += f", {result.skipped} skipped (not files to mirror)"
    if result.failed:
        line += f", {len(result.failed)} FAILED"
    return line


def failure_lines(failed: Sequence[tuple[str, str]]) -> list[str]:
    return [f"  failed: {key}: {why}" for key, why in failed]


def watch_line(at: datetime, result: RoundResult) -> str:
    return f"{at.strftime('%Y-%m-%dT%H:%M:%SZ')} {summary_line(result)}"


def plan_lines(plan: PullPlan) -> list[str]:
    """--dry-run: what a pull would download."""
    return [f"would download ({download.change.value}): {download.remote.key}" for download in plan.downloads]


class Reporter(Protocol):
    def begin(self, plan: PullPlan) -> None: ...
    def add_bytes(self, count: int) -> None: ...  # called from transfer threads
    def fetched(self, outcome: Fetched) -> None: ...
    def end(self) -> None: ...


class Quiet:
    """--watch: nothing per file; the watch prints one line per round."""

    def begin(self, plan: PullPlan) -> None:
        pass

    def add_bytes(self, count: int) -> None:
        pass

    def fetched(self, outcome: Fetched) -> None:
        pass

    def end(self) -> None:
        pass


class PlainLines(Quiet):
    """A pipe: one line per downloaded file, as it lands."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def fetched(self, outcome: Fetched) -> None:
        if outcome.error is None:
            print(f"{outcome.download.change.value}: {outcome.download.remote.key}", file=self._out, flush=True)


class ProgressBar:
    """A terminal: files, bytes, rate and time left, redrawn in place."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress: Progress = Progress(
            TextColumn("{task.fields[files]}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=out),
            transient=True,
        )
        self._task: TaskID | None = None
        self._files_total = 0
        self._files_done = 0
        self._lock = threading.Lock()

    def begin(self, plan: PullPlan) -> None:
        self._files_total = len(plan.downloads)
        self._task = self._progress.add_task("pull", total=plan.bytes_to_download, files=self._files_text())
        self._progress.start()

    def add_bytes(self, count: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, count)

    def fetched(self, outcome: Fetched) -> None:
        with self._lock:
            self._files_done += 1
        if self._task is not None:
            self._progress.update(self._task, files=self._files_text())

    def end(self) -> None:
        self._progress.stop()

    def _files_text(self) -> str:
        return f"{self._files_done}/{self._files_total} files"
