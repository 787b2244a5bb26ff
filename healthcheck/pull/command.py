"""`trainguard pull DEST`: the instances' results from the bucket to the laptop, incrementally.

boto3, tenacity and rich are imported when a pull runs, not when the parser
is built, so the package's command line starts on a bare Python.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from healthcheck import contract, watch
from healthcheck.arguments import bounded, capped_by_open_files, instance_id, open_files_limit
from healthcheck.console import Console
from healthcheck.errors import UsageError
from healthcheck.pull.dest import Destination
from healthcheck.pull.plan import Change, Download, Manifest, PullPlan, Recorded, plan
from healthcheck.pull.render import (
    PlainLines,
    ProgressBar,
    Quiet,
    Reporter,
    RoundResult,
    as_json,
    detail_lines,
    human_bytes,
    plan_lines,
    summary_line,
    timestamp,
    unreachable_json,
    watch_line,
)
from healthcheck.pull.source import (
    Scope,
    SourceUnavailable,
    list_scope,
    make_client,
    pulumi_stack_bucket,
    resolve_bucket,
)
from healthcheck.status import Status

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_s3 import S3Client

    from healthcheck.pull.transfer import Fetched

DEFAULT_PARALLEL = 16
# What one concurrent download holds open: its own connection, a connection of the transfer manager's (for a
# large file's ranged parts), and its .part file. macOS's default open-file limit is 256.
FILES_PER_DOWNLOAD = 3
# How often the manifest is saved while files arrive, so a killed pull does not fetch them all again.
MANIFEST_SAVE_SECONDS = 5.0

DESCRIPTION = f"""\
Copy the instances' results from the results bucket to DEST, incrementally.

Files land in DEST/<instance-id>/..., as they were in the instance's
{contract.RESULTS_DIR} (post-mortems in DEST/{contract.POSTMORTEM_PREFIX}<instance-id>/...). A manifest
in DEST records each file's size and ETag, so a second pull downloads only
what changed. Each file is written to a hidden .part file and renamed only
when complete. Nothing local is ever deleted or overwritten: a file of yours
where a result belongs stays, and the result lands beside it as
NAME.from-bucket.EXT; on a disk that does not tell Run.csv from run.csv (a
Mac's, by default), the second lands as NAME.twin-HASH.EXT. The summary names
each one.
"""

EPILOG = f"""\
bucket: --bucket, else ${contract.BUCKET_VARIABLE}, else the stack's bucket_name output
(`pulumi stack output --json`, when the Pulumi CLI is on PATH).

exit status: 0 done; 1 something needs your eyes: files failed or were set
aside (listed), or the manifest could not be saved; 3 bad input (no bucket, no
credentials, AWS refused them, DEST unusable); {SourceUnavailable.exit_status} could not reach AWS (the
network, throttling, S3 answering 5xx); 130 Ctrl-C, 143 SIGTERM, 129 a closed
terminal (what is in flight is dropped, its .part files removed, and the
manifest saved). With --watch, the last round's.
"""


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    pull = commands.add_parser(
        "pull",
        help="copy the instances' results from the bucket to this machine, incrementally",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pull.add_argument("dest", metavar="DEST", help="local directory (created when missing)")
    pull.add_argument("--bucket", help="the results bucket (default: $TRAINGUARD_BUCKET, else the Pulumi stack)")
    pull.add_argument(
        "--instance",
        type=instance_id,
        action="append",
        default=[],
        metavar="i-...",
        help="only this instance (repeatable; default: every instance in the bucket)",
    )
    pull.add_argument(
        "--postmortem",
        action="store_true",
        help=f"also fetch {contract.POSTMORTEM_PREFIX}<instance-id>/: console output, screenshot and reboot decision",
    )
    pull.add_argument(
        "--watch",
        type=bounded(float, 1, 86400, "--watch"),
        metavar="SECONDS",
        help="pull again every SECONDS, with one line for the first round and each round that changed something, "
        "until Ctrl-C",
    )
    pull.add_argument(
        "--rounds", type=bounded(int, 1, 10**9, "--rounds"), metavar="N", help="with --watch, stop after N rounds"
    )
    pull.add_argument("--region", help="the bucket's AWS region (default: from the AWS config)")
    pull.add_argument("--dry-run", action="store_true", help="list what would be downloaded; download nothing")
    pull.add_argument(
        "--json",
        action="store_true",
        help="print each round as one line of JSON (schemas/pull.schema.json) instead of text",
    )
    pull.add_argument(
        "--parallel",
        type=bounded(int, 1, 256, "--parallel"),
        default=DEFAULT_PARALLEL,
        metavar="N",
        help="concurrent requests (default: %(default)s; fewer when the open-file limit, ulimit -n, is low)",
    )
    pull.set_defaults(run=run_pull)


def run_pull(args: argparse.Namespace, console: Console) -> int:
    if args.rounds is not None and args.watch is None:
        raise UsageError("--rounds counts --watch rounds: add --watch SECONDS, or drop --rounds")
    if args.dry_run and (args.json or args.watch is not None):
        raise UsageError("--dry-run lists once what a pull would do: drop --json and --watch, or --dry-run")
    limit = open_files_limit()
    parallel = capped_by_open_files(args.parallel, FILES_PER_DOWNLOAD, limit)
    if parallel < args.parallel:
        console.warn(
            f"pulling {parallel} files at once, not {args.parallel}: the open-file limit is {limit} "
            "(raise it with ulimit -n)"
        )
    # An instance named twice is listed once (twice, its files would race for the same .part file).
    scope = Scope(tuple(dict.fromkeys(args.instance)), args.postmortem)
    bucket, _ = resolve_bucket(args.bucket, os.environ, pulumi_stack_bucket)
    destination = Destination(args.dest)
    client = make_client(parallel, args.region)
    puller = Puller(client, bucket, scope, destination, parallel, console.warn)
    with destination:
        if args.watch is not None:
            rounds = Rounds(puller, console, args.json)
            status = watch.every(args.watch, args.rounds, rounds.pull, rounds.report)
            return SourceUnavailable.exit_status if rounds.unreachable else status
        try:
            if args.dry_run:
                return _dry_run(puller, console)
            result = puller.pull(Quiet() if args.json else _reporter_for(console.stdout))
        except SourceUnavailable as error:
            console.error(str(error))
            if args.json:
                console.say(unreachable_json(_now(), str(error), error.exit_status))
            return error.exit_status
        if args.json:
            console.say(as_json(_now(), result))
        else:
            console.say(summary_line(result))
            for line in detail_lines(result):
                console.say(line)
        return Status.WARNING if result.needs_eyes else Status.OK


class Puller:
    """One pull: list the scope, plan against the manifest and DEST, download what changed, record it."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        scope: Scope,
        destination: Destination,
        parallel: int,
        warn: Callable[[str], None],
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.scope = scope
        self.destination = destination
        self.parallel = parallel
        self.warn = warn

    def survey(self) -> tuple[Manifest, PullPlan]:
        """The manifest and the plan; a damaged manifest is told (the round's save replaces it)."""
        manifest = self.destination.manifest()
        if manifest.damaged:
            self.warn(
                f"the manifest in {self.destination.root} cannot be read ({manifest.damaged}): starting afresh; "
                "files here that are the bucket's are kept, not fetched again"
            )
        remote = list_scope(self.client, self.bucket, self.scope)
        return manifest, plan(remote, manifest.entries, self.destination.local, self.destination.fold)

    def pull(self, reporter: Reporter) -> RoundResult:
        started = time.monotonic()
        manifest, todo = self.survey()
        if manifest.interrupted:
            self.destination.sweep_parts()
        tally = _Tally(todo, {**manifest.entries, **dict(todo.adopted)})
        if not todo.downloads:
            if tally.entries != manifest.entries or manifest.interrupted or manifest.damaged:
                tally.save(self.destination, downloading=False)
            return tally.result(started)
        # Recorded before the first .part file exists: if this pull is killed, the next one sweeps its leftovers.
        if not tally.save(self.destination, downloading=True):
            return tally.result(started)  # nothing can be recorded (a full disk), so nothing is fetched
        from healthcheck.pull.transfer import Fetcher

        fetcher = Fetcher(self.client, self.bucket, self.destination.root, self.parallel, reporter.add_bytes)
        reporter.begin(todo)
        saved_at = time.monotonic()
        finished = False
        try:
            with contextlib.closing(fetcher.fetch(todo.downloads)) as outcomes:
                for outcome in outcomes:
                    if outcome is not None:
                        reporter.fetched(outcome)
                        tally.add(outcome)
                    if time.monotonic() - saved_at > MANIFEST_SAVE_SECONDS:
                        tally.save(self.destination, downloading=True)
                        saved_at = time.monotonic()
            finished = True
        finally:
            # The manifest first: after a hangup the terminal is gone, and writing to it fails. Interrupted, the
            # downloads in flight were abandoned, and may yet leave a .part file: the next pull sweeps them.
            tally.save(self.destination, downloading=not finished)
            with contextlib.suppress(OSError):
                reporter.end()
        return tally.result(started)


class _Tally:
    """What a round has done so far, and the manifest entries it has to record."""

    def __init__(self, todo: PullPlan, entries: dict[str, Recorded]) -> None:
        self.todo = todo
        self.entries = entries
        self.counts = {Change.NEW: 0, Change.UPDATED: 0}
        self.received = 0
        self.failed: list[tuple[str, str]] = list(todo.refused)
        self.set_aside: list[Download] = []
        self.manifest_error = ""

    def add(self, outcome: Fetched) -> None:
        download = outcome.download
        if outcome.error is not None:
            self.failed.append((download.remote.key, outcome.error))
            return
        self.entries[download.remote.key] = download.recorded()
        self.counts[download.change] += 1
        self.received += download.remote.size
        if download.aside is not None:
            self.set_aside.append(download)

    def save(self, destination: Destination, downloading: bool) -> bool:
        try:
            destination.save_manifest(self.entries, downloading)
        except OSError as error:
            self.manifest_error = error.strerror or str(error)
            return False
        self.manifest_error = ""
        return True

    def result(self, started: float) -> RoundResult:
        return RoundResult(
            new=self.counts[Change.NEW],
            updated=self.counts[Change.UPDATED],
            unchanged=len(self.todo.unchanged),
            bytes=self.received,
            seconds=time.monotonic() - started,
            failed=tuple(sorted(self.failed)),
            skipped=len(self.todo.skipped),
            kept=len(self.todo.kept),
            set_aside=tuple(sorted(self.set_aside, key=lambda download: download.remote.key)),
            manifest_error=self.manifest_error,
        )


def _dry_run(puller: Puller, console: Console) -> int:
    _, todo = puller.survey()
    for line in plan_lines(todo):
        console.say(line)
    new = sum(1 for download in todo.downloads if download.change is Change.NEW)
    aside = sum(1 for download in todo.downloads if download.aside is not None)
    console.say(
        f"would pull {new} new, {len(todo.downloads) - new} updated ({human_bytes(todo.bytes_to_download)}); "
        f"{len(todo.unchanged)} unchanged" + (f"; {aside} set aside" if aside else "")
    )
    return Status.OK


class Rounds:
    """--watch: a line for the first round and for each round that changed something (with --json, a line for
    every round).

    A round that cannot reach AWS (network, throttling) is reported and the watch goes on; bad input or
    missing credentials end it (exit 3).
    """

    def __init__(self, puller: Puller, console: Console, as_json: bool) -> None:
        self.puller = puller
        self.console = console
        self.as_json = as_json
        self.reported = 0
        self.unreachable = False  # the last round could not reach AWS

    def pull(self) -> RoundResult | SourceUnavailable:
        try:
            return self.puller.pull(Quiet())
        except SourceUnavailable as error:
            return error

    def report(self, outcome: RoundResult | SourceUnavailable) -> Status:
        now = _now()
        first, self.reported = self.reported == 0, self.reported + 1
        self.unreachable = isinstance(outcome, SourceUnavailable)
        if isinstance(outcome, SourceUnavailable):
            if self.as_json:
                self.console.say(unreachable_json(now, str(outcome), outcome.exit_status))
            else:
                self.console.say(f"{timestamp(now)} {outcome}")
            return Status.WARNING
        if self.as_json:
            self.console.say(as_json(now, outcome))
        elif first or outcome.changed:
            self.console.say(watch_line(now, outcome))
            for line in detail_lines(outcome):
                self.console.say(line)
        return Status.WARNING if outcome.needs_eyes else Status.OK


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _reporter_for(out: TextIO) -> Reporter:
    return ProgressBar(out) if out.isatty() else PlainLines(out)
