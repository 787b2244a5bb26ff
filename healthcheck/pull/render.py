"""What a pull shows: a rich progress bar on a terminal, plain lines on a pipe, one summary line at the end, and
what needs the user's eyes; or, with --json, one JSON object per round (schemas/pull.schema.json).

Keys come from the bucket, so anyone who can write there chooses them: each is
shown escaped, as the probe shows what a server sends (an ESC or a CR in a key
must not rewrite the user's terminal). rich is imported only when the output is
a terminal.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TextIO

from healthcheck.console import printable
from healthcheck.pull.plan import Aside, Download, PullPlan

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
    kept: int = 0  # local copies changed here while the bucket's did not: left as they are
    set_aside: tuple[Download, ...] = ()  # downloads that landed away from their key's own path
    manifest_error: str = ""  # why the manifest could not be saved

    @property
    def changed(self) -> bool:
        return bool(self.new or self.updated or self.needs_eyes)

    @property
    def needs_eyes(self) -> bool:
        """Something the user should look at: a file that failed, one set aside, a manifest not saved (exit 1)."""
        return bool(self.failed or self.set_aside or self.manifest_error)


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
    if result.kept:
        line += f", {result.kept} changed here and kept"
    if result.set_aside:
        line += f", {len(result.set_aside)} set aside"
    if result.skipped:
        line += f", {result.skipped} skipped (not files to mirror)"
    if result.failed:
        line += f", {len(result.failed)} FAILED"
    return line


def why_aside(download: Download) -> str:
    if download.aside is Aside.TWIN:
        other = f"{printable(download.beside)}'s" if download.beside else "another key's"
        return f"this folder does not tell its name from {other}"
    return f"a file of yours is at {printable(download.beside) if download.beside else 'its own name'}"


def detail_lines(result: RoundResult) -> list[str]:
    """What needs the user's eyes: each file set aside and why, each failure and why, a manifest not saved."""
    lines = [
        f"  set aside: {printable(item.remote.key)} -> {printable(item.target)} ({why_aside(item)})"
        for item in result.set_aside
    ]
    lines += [f"  failed: {printable(key)}: {printable(why)}" for key, why in result.failed]
    if result.manifest_error:
        lines.append(
            f"  the manifest could not be saved ({result.manifest_error}): the next pull looks at the files again"
        )
    return lines


def timestamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def watch_line(at: datetime, result: RoundResult) -> str:
    return f"{timestamp(at)} {summary_line(result)}"


def as_json(at: datetime, result: RoundResult) -> str:
    """One round for programs, on one line (schemas/pull.schema.json, $defs/round)."""
    return json.dumps(
        {
            "time": timestamp(at),
            "exit_status": 1 if result.needs_eyes else 0,
            "new": result.new,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "kept": result.kept,
            "skipped": result.skipped,
            "bytes": result.bytes,
            "seconds": round(result.seconds, 3),
            "set_aside": [
                {
                    "key": item.remote.key,
                    "path": item.target,
                    "reason": (item.aside or Aside.YOURS).value,
                    "beside": item.beside or None,
                }
                for item in result.set_aside
            ],
            "failed": [{"key": key, "reason": why} for key, why in result.failed],
            "manifest_error": result.manifest_error or None,
        }
    )


def unreachable_json(at: datetime, message: str, exit_status: int) -> str:
    """A round that could not list the bucket, for programs (schemas/pull.schema.json, $defs/unreachable)."""
    return json.dumps({"time": timestamp(at), "exit_status": exit_status, "error": message})


def plan_lines(plan: PullPlan) -> list[str]:
    """--dry-run: what a pull would download, and what it could not place."""
    lines = []
    for download in plan.downloads:
        line = f"would download ({download.change.value}): {printable(download.remote.key)}"
        if download.aside is not None:
            line += f" -> {printable(download.target)} ({why_aside(download)})"
        lines.append(line)
    lines += [f"would fail: {printable(key)}: {printable(why)}" for key, why in plan.refused]
    return lines


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
            download = outcome.download
            line = f"{download.change.value}: {printable(download.remote.key)}"
            if download.aside is not None:
                line += f" -> {printable(download.target)}"
            print(line, file=self._out, flush=True)


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
