"""`python -m healthcheck pull DEST`: the instances' results from the bucket to the laptop, incrementally.

boto3, tenacity and rich are imported when a pull runs, not when the parser
is built, so the package's command line starts on a bare Python.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from healthcheck import contract, watch
from healthcheck.arguments import bounded, instance_id
from healthcheck.console import Console
from healthcheck.errors import UsageError
from healthcheck.pull.dest import Destination
from healthcheck.pull.plan import Change, PullPlan, Recorded, plan
from healthcheck.pull.render import (
    PlainLines,
    ProgressBar,
    Quiet,
    Reporter,
    RoundResult,
    failure_lines,
    human_bytes,
    plan_lines,
    summary_line,
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
    from mypy_boto3_s3 import S3Client

DEFAULT_PARALLEL = 16
# How often the manifest is saved while files arrive, so a killed pull does not fetch them all again.
MANIFEST_SAVE_SECONDS = 5.0

DESCRIPTION = f"""\
Copy the instances' results from the results bucket to DEST, incrementally.

Files land in DEST/<instance-id>/..., as they were in the instance's
{contract.RESULTS_DIR} (post-mortems in DEST/{contract.POSTMORTEM_PREFIX}<instance-id>/...). A manifest
in DEST records each file's size and ETag, so a second pull downloads only
what changed. Each file is written to a hidden .part file and renamed only
when complete; nothing local is ever deleted.
"""

EPILOG = f"""\
bucket: --bucket, else ${contract.BUCKET_VARIABLE}, else the stack's bucket_name output
(`pulumi stack output --json`, when the Pulumi CLI is on PATH).

exit status: 0 done, 1 some files failed (listed), 3 bad input, no credentials,
or the bucket could not be listed; 130 Ctrl-C, 143 SIGTERM, 129 a closed
terminal (what is in flight is dropped, its .part files removed, and the
manifest saved).
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
        "--parallel",
        type=bounded(int, 1, 256, "--parallel"),
        default=DEFAULT_PARALLEL,
        metavar="N",
        help="concurrent requests (default: %(default)s)",
    )
    pull.set_defaults(run=run_pull)


def run_pull(args: argparse.Namespace, console: Console) -> int:
    if args.rounds is not None and args.watch is None:
        raise UsageError("--rounds counts --watch rounds: add --watch SECONDS, or drop --rounds")
    # An instance named twice is listed once (twice, its files would race for the same .part file).
    scope = Scope(tuple(dict.fromkeys(args.instance)), args.postmortem)
    bucket, _ = resolve_bucket(args.bucket, os.environ, pulumi_stack_bucket)
    destination = Destination(args.dest)
    client = make_client(args.parallel, args.region)
    puller = Puller(client, bucket, scope, destination, args.parallel)
    with destination, _unlisted_as_usage_error():
        if args.dry_run:
            return _dry_run(puller, console)
        if args.watch is not None:
            rounds = Rounds(puller, console)
            return watch.every(args.watch, args.rounds, rounds.pull, rounds.report)
        result = puller.pull(_reporter_for(console.stdout))
        console.say(summary_line(result))
        for line in failure_lines(result.failed):
            console.say(line)
        return Status.WARNING if result.failed else Status.OK


class Puller:
    """One pull: list the scope, diff against the manifest, download what changed, record it."""

    def __init__(self, client: S3Client, bucket: str, scope: Scope, destination: Destination, parallel: int) -> None:
        self.client = client
        self.bucket = bucket
        self.scope = scope
        self.destination = destination
        self.parallel = parallel

    def survey(self) -> tuple[dict[str, Recorded], PullPlan]:
        manifest = self.destination.manifest()
        remote = list_scope(self.client, self.bucket, self.scope)
        return manifest, plan(remote, manifest, self.destination.local_size)

    def pull(self, reporter: Reporter) -> RoundResult:
        started = time.monotonic()
        manifest, todo = self.survey()
        if not todo.downloads:
            return RoundResult(
                new=0,
                updated=0,
                unchanged=len(todo.unchanged),
                bytes=0,
                seconds=time.monotonic() - started,
                skipped=len(todo.skipped),
            )
        from healthcheck.pull.transfer import Fetcher

        entries = dict(manifest)
        counts = {Change.NEW: 0, Change.UPDATED: 0}
        received = 0
        failed: list[tuple[str, str]] = []
        fetcher = Fetcher(self.client, self.bucket, self.destination.root, self.parallel, reporter.add_bytes)
        reporter.begin(todo)
        saved_at = time.monotonic()
        try:
            with contextlib.closing(fetcher.fetch(todo.downloads)) as outcomes:
                for outcome in outcomes:
                    if outcome is not None:
                        reporter.fetched(outcome)
                        remote = outcome.download.remote
                        if outcome.error is None:
                            entries[remote.key] = Recorded(remote.size, remote.etag)
                            counts[outcome.download.change] += 1
                            received += remote.size
                        else:
                            failed.append((remote.key, outcome.error))
                    if time.monotonic() - saved_at > MANIFEST_SAVE_SECONDS:
                        self.destination.save_manifest(entries)
                        saved_at = time.monotonic()
        finally:
            # The manifest first: after a hangup the terminal is gone, and writing to it fails.
            if entries != manifest:
                self.destination.save_manifest(entries)
            with contextlib.suppress(OSError):
                reporter.end()
        return RoundResult(
            new=counts[Change.NEW],
            updated=counts[Change.UPDATED],
            unchanged=len(todo.unchanged),
            bytes=received,
            seconds=time.monotonic() - started,
            failed=tuple(sorted(failed)),
            skipped=len(todo.skipped),
        )


def _dry_run(puller: Puller, console: Console) -> int:
    _, todo = puller.survey()
    for line in plan_lines(todo):
        console.say(line)
    new = sum(1 for download in todo.downloads if download.change is Change.NEW)
    console.say(
        f"would pull {new} new, {len(todo.downloads) - new} updated ({human_bytes(todo.bytes_to_download)}); "
        f"{len(todo.unchanged)} unchanged"
    )
    return Status.OK


class Rounds:
    """--watch: a line for the first round and for each round that changed something.

    A round that cannot list the bucket (network, throttling) is reported and the watch goes on; bad input or
    missing credentials end it (exit 3).
    """

    def __init__(self, puller: Puller, console: Console) -> None:
        self.puller = puller
        self.console = console
        self.reported = 0

    def pull(self) -> RoundResult | SourceUnavailable:
        try:
            return self.puller.pull(Quiet())
        except SourceUnavailable as error:
            return error

    def report(self, outcome: RoundResult | SourceUnavailable) -> Status:
        now = datetime.now(timezone.utc)
        first, self.reported = self.reported == 0, self.reported + 1
        if isinstance(outcome, SourceUnavailable):
            self.console.say(f"{now.strftime('%Y-%m-%dT%H:%M:%SZ')} {outcome}")
            return Status.WARNING
        if first or outcome.changed:
            self.console.say(watch_line(now, outcome))
            for line in failure_lines(outcome.failed):
                self.console.say(line)
        return Status.WARNING if outcome.failed else Status.OK


def _reporter_for(out: TextIO) -> Reporter:
    return ProgressBar(out) if out.isatty() else PlainLines(out)


@contextlib.contextmanager
def _unlisted_as_usage_error() -> Iterator[None]:
    """Outside --watch, a bucket that cannot be listed ends the pull with one line (exit 3)."""
    try:
        yield
    except SourceUnavailable as error:
        raise UsageError(str(error)) from None
