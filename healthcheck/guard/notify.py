"""The guard: when memory kills a process, push results at once, count it, and email a person; keep the record of
the workers; push for the workers that ask.

    python3 -m healthcheck.guard.notify     (the trainguard-guard service)

It follows the journal for:
- systemd's "Failed with result" (MESSAGE_ID d9b373ed55a64feb8242e02dbe79a49c, field UNIT_RESULT) with
  result oom-kill: the kernel killed inside a unit, a training worker in the slice;
- earlyoom's "sending SIGTERM/SIGKILL to process ..." (earlyoom's kill.c), for a job outside the slice;
- the worker units' exits ("Deactivated successfully", process exits, results), for the workers' record
  (workers.py), which it keeps in the results folder.
For each kill it runs `trainguard-push --now` (when installed), publishes Trainguard/Guard WorkerOOMKills
(InstanceId) and publishes the email to the stack's topic, with AWS CLI v1 (the instance has no boto3 for its
python3). Between entries it samples the workers' memory, since a killed worker's cgroup (and its memory.peak)
is gone by the time the entry arrives. It keeps its place in the journal (GUARD_CURSOR_FILE), so a guard that
restarts handles what arrived meanwhile; workers' push requests are answered in a thread (push_requests.py).
Exit status: 3 for settings it cannot work with (no topic, no journalctl), which restarting cannot fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from healthcheck import contract
from healthcheck.guard import fit, units
from healthcheck.guard.host import Completed, Host, Runner, run_command
from healthcheck.guard.push_requests import PUSH_ARGUMENTS as REQUESTED_PUSH_ARGUMENTS
from healthcheck.guard.push_requests import PUSH_TIMEOUT_S as REQUESTED_PUSH_TIMEOUT_S
from healthcheck.guard.push_requests import PushServer
from healthcheck.guard.trainguard_worker import write_atomically
from healthcheck.guard.workers import UNIT_FAILURE_RESULT, UNIT_PROCESS_EXIT, UNIT_SUCCESS, WorkerBook, journal_time

EARLYOOM_UNIT = "earlyoom.service"
# earlyoom 1.6 to 1.8 all begin the kill line so; the fields after the name vary by version.
EARLYOOM_KILL = re.compile(r'sending (SIG\w+) to process (\d+) uid (\d+) "(.*)": .*?VmRSS (\d+) MiB')
# Not the canary's namespace ("Trainguard"): the instances may not publish there (infra.policies).
# A push already running holds the lock: wait for it briefly, bound the upload, and so the email
# goes out within PUSH_TIMEOUT_S + 2 x AWS_TIMEOUT_S of the kill whatever S3 does.
PUSH_ARGUMENTS = ("--now", "--wait", "20", "--timeout", "90")
PUSH_TIMEOUT_S = 120.0
AWS_TIMEOUT_S = 40.0
# SNS Publish: Subject under 100 characters, no line breaks (Amazon SNS API reference, Publish).
SUBJECT_MAX = 99
SAMPLE_INTERVAL_S = 5.0
DUPLICATE_WINDOW_S = 60.0
# After a restart the guard replays the journal from its cursor: a kill older than this is recorded, not emailed.
STALE_KILL_S = 3600.0


@dataclass(frozen=True)
class Kill:
    """One kill for memory: by the kernel inside a unit, or by earlyoom."""

    by: str  # "kernel" or "earlyoom"
    unit: str = ""
    worker: int | None = None
    process: str = ""
    pid: int | None = None
    signal: str = ""
    rss_mib: int | None = None

    @property
    def key(self) -> str:
        """Same kill, same key: earlyoom's SIGTERM then SIGKILL of one pid is one event."""
        return f"{self.by}:{self.unit}:{self.pid}"


def field_text(value: object) -> str | None:
    """A journal field as text. journalctl -o json gives a string; an array of byte values for a field that is
    not UTF-8 or holds control characters (a process name cut mid-character); an array of values for a field
    an entry has more than once (journalctl(1), --output=json)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(byte, int) and not isinstance(byte, bool) and 0 <= byte <= 255 for byte in value):
            return bytes(value).decode("utf-8", errors="replace")
        texts = [text for text in map(field_text, value) if text is not None]
        return "\n".join(texts) if texts else None
    return None


def entry_fields(entry: Mapping[str, object]) -> dict[str, str]:
    """Every field of a journal entry as text (fields of no readable form left out)."""
    fields = {}
    for name, value in entry.items():
        text = field_text(value)
        if text is not None:
            fields[name] = text
    return fields


def kill_from_journal(entry: Mapping[str, object]) -> Kill | None:
    """A journal entry (journalctl -o json) as a Kill, or None when it is not one (pure)."""
    fields = entry_fields(entry)
    if fields.get("MESSAGE_ID") == UNIT_FAILURE_RESULT and fields.get("UNIT_RESULT") == "oom-kill":
        unit = fields.get("UNIT", "")
        return Kill(by="kernel", unit=unit, worker=units.worker_of(unit))
    if fields.get("_SYSTEMD_UNIT") == EARLYOOM_UNIT:
        match = EARLYOOM_KILL.search(fields.get("MESSAGE", ""))
        if match:
            signal, pid, _uid, name, rss = match.groups()
            return Kill(by="earlyoom", process=name, pid=int(pid), signal=signal, rss_mib=int(rss))
    return None


def journal_argv(cursor: str | None = None) -> list[str]:
    """journalctl following the entries the guard acts on: from after `cursor` (where a previous guard stopped),
    else from now."""
    start = [f"--after-cursor={cursor}"] if cursor else ["--lines=0"]
    return [
        "journalctl",
        "--follow",
        *start,
        "--output=json",
        f"MESSAGE_ID={UNIT_FAILURE_RESULT}",
        f"MESSAGE_ID={UNIT_SUCCESS}",
        f"MESSAGE_ID={UNIT_PROCESS_EXIT}",
        "+",
        f"_SYSTEMD_UNIT={EARLYOOM_UNIT}",
    ]


class Cursor:
    """Where the guard is in the journal (its last entry's __CURSOR), kept in a file across restarts."""

    def __init__(self, path: Path, log: Callable[[str], None] = print) -> None:
        self.path, self.log = path, log
        self._failed = False

    def last(self) -> str | None:
        try:
            text = self.path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        # A cursor is printable ASCII without spaces ("s=...;i=...;b=..."); anything else is not one.
        return text if text and len(text) < 1024 and text.isascii() and text.isprintable() and " " not in text else None

    def save(self, cursor: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(str(self.path), (cursor + "\n").encode(), 0o600)
        except OSError as error:  # a read-only or full disk: the guard goes on, it just cannot resume after a restart
            if not self._failed:
                self._failed = True
                self.log(f"trainguard-guard: cannot keep the journal cursor in {self.path}: {error.strerror or error}")

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


@dataclass(frozen=True)
class Context:
    instance_id: str
    peaks: Mapping[int, int]
    slice_max: int | None
    running: Sequence[int]
    push: str


def message(kill: Kill, context: Context) -> tuple[str, str]:
    """The email's subject and body (pure)."""
    where = context.instance_id
    running = ", ".join(str(worker) for worker in context.running) or "none"
    limit = fit.human(context.slice_max) if context.slice_max else "unknown"
    if kill.by == "kernel":
        who = f"worker {kill.worker}" if kill.worker is not None else kill.unit
        peak = context.peaks.get(kill.worker) if kill.worker is not None else None
        subject = f"trainguard: {who} on {where} killed: out of memory"
        body = [
            f"The kernel killed {kill.unit} on {where}: it reached its memory limit (unit result oom-kill).",
            "",
            f"worker that died:  {who} ({kill.unit})",
            f"its peak memory:   {fit.human(peak) if peak else 'unknown (not sampled before it died)'}",
        ]
        log = str(units.log_path(kill.worker)) if kill.worker is not None else f"journalctl -u {kill.unit}"
    else:
        subject = f"trainguard: earlyoom on {where} killed {kill.process} (pid {kill.pid})"
        body = [
            f"earlyoom on {where} sent {kill.signal} to process {kill.pid} ({kill.process}), {kill.rss_mib} MiB"
            " resident: memory was nearly exhausted outside the training slice.",
            "",
            f"process that died: {kill.process} (pid {kill.pid})",
            f"its memory:        {kill.rss_mib} MiB",
        ]
        log = "journalctl -u earlyoom"
    body += [
        f"slice MemoryMax:   {limit} ({units.SLICE})",
        f"still running:     workers {running}",
        f"results:           {context.push}",
        "",
        f"Its log: {log}",
        "On the instance: trainguard launch --status. Start training inside the slice (trainguard launch, or",
        f"systemd-run --slice={units.SLICE} ...) so that only training is killed when memory runs out.",
    ]
    return subject[:SUBJECT_MAX], "\n".join(body) + "\n"


def region_of(topic_arn: str) -> str:
    """arn:aws:sns:REGION:ACCOUNT:NAME -> REGION."""
    parts = topic_arn.split(":")
    return parts[3] if len(parts) >= 6 and parts[2] == "sns" else ""


def metric_argv(instance_id: str, region: str) -> list[str]:
    return [
        "aws",
        "--region",
        region,
        "--cli-connect-timeout",
        "10",
        "--cli-read-timeout",
        "20",
        "cloudwatch",
        "put-metric-data",
        "--namespace",
        contract.GUARD_NAMESPACE,
        "--metric-name",
        contract.OOM_KILLS_METRIC,
        "--dimensions",
        f"{contract.INSTANCE_DIMENSION}={instance_id}",
        "--value",
        "1",
        "--unit",
        "Count",
    ]


def publish_argv(topic_arn: str, subject: str, body: str) -> list[str]:
    return [
        "aws",
        "--region",
        region_of(topic_arn),
        "--cli-connect-timeout",
        "10",
        "--cli-read-timeout",
        "20",
        "sns",
        "publish",
        "--topic-arn",
        topic_arn,
        "--subject",
        subject,
        "--message",
        body,
    ]


class Notifier:
    """Acts on kills: push, metric, email. Each step bounded by a timeout; a failed step never stops the next."""

    def __init__(
        self,
        host: Host,
        instance_id: str,
        topic_arn: str,
        which: Callable[[str], str | None] = shutil.which,
        log: Callable[[str], None] = print,
    ) -> None:
        self.host, self.instance_id, self.topic_arn = host, instance_id, topic_arn
        self.which, self.log = which, log
        self.seen: dict[str, float] = {}

    def running_workers(self) -> list[int]:
        """Workers whose cgroup exists (a unit's cgroup goes when its processes have gone)."""
        found = []
        for path in (self.host.cgroup_root / units.SLICE_CGROUP).glob(f"{units.UNIT_PREFIX}*.service"):
            worker = units.worker_of(path.name)
            if worker is not None:
                found.append(worker)
        return sorted(found)

    def sample(self) -> dict[int, tuple[int | None, int | None]]:
        """Each running worker's (peak, MemoryMax), its peak remembered for after it has gone."""
        present = {}
        for worker in self.running_workers():
            try:
                _, peak = self.host.worker_memory(worker)
                limit = self.host.cgroup_value(str(units.unit_cgroup(worker)), "memory.max")
            except ValueError:  # a file half gone with its cgroup, or in another form: next sample
                peak, limit = self.host.peaks.get(worker), None
            present[worker] = (peak, limit)
        return present

    def handle(self, kill: Kill) -> bool:
        """Act on one kill; False when it repeats one already handled within the last minute."""
        now = self.host.clock()
        if now - self.seen.get(kill.key, -DUPLICATE_WINDOW_S - 1) <= DUPLICATE_WINDOW_S:
            return False
        self.seen[kill.key] = now
        push = self._push()
        self._step("metric", metric_argv(self.instance_id, region_of(self.topic_arn)), AWS_TIMEOUT_S)
        _, slice_max = self.host.slice_memory()
        context = Context(self.instance_id, dict(self.host.peaks), slice_max, self.running_workers(), push)
        subject, body = message(kill, context)
        self.log(f"trainguard-guard: {subject}")
        self._step("email", publish_argv(self.topic_arn, subject, body), AWS_TIMEOUT_S)
        return True

    def _push(self) -> str:
        command = self.which(contract.PUSH_COMMAND)
        if not command:
            return f"not pushed ({contract.PUSH_COMMAND} is not installed; the 5-minute timer still runs)"
        done = self._step("push", [command, *PUSH_ARGUMENTS], PUSH_TIMEOUT_S)
        return "pushed to S3 at once" if done.ok else f"push failed ({done.why()}); the 5-minute timer still runs"

    def requested_push(self) -> Completed:
        """The push a worker asked for (push_requests.py), niced as the timer's push is: it must not slow sshd."""
        command = self.which(contract.PUSH_COMMAND)
        if not command:
            return Completed(127, "", f"{contract.PUSH_COMMAND} is not installed here")
        return self.host.run(["nice", "-n", "10", command, *REQUESTED_PUSH_ARGUMENTS], REQUESTED_PUSH_TIMEOUT_S)

    def _step(self, name: str, argv: Sequence[str], timeout: float) -> Completed:
        done = self.host.run(argv, timeout)
        self.log(f"trainguard-guard: {name}: {'ok' if done.ok else done.why()}")
        return done


def parse_entry(line: str) -> dict[str, object] | None:
    """One journalctl -o json line as an entry, or None for a line that is not one (nested past Python's
    recursion limit included)."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) else None


def follow(
    notifier: Notifier,
    lines: Callable[[float], Sequence[str] | None],
    book: WorkerBook | None = None,
    cursor: Cursor | None = None,
    wall: Callable[[], float] = time.time,
) -> int:
    """Feed journal lines to the notifier and the workers' record, sampling worker memory between them, keeping the
    cursor after each batch; ends when `lines` returns None. Returns how many entries it read."""
    read = 0
    while True:
        present = notifier.sample()
        if book is not None:
            book.sampled(present)
            book.save()
        batch = lines(SAMPLE_INTERVAL_S)
        if batch is None:
            return read
        entries = [entry for entry in map(parse_entry, batch) if entry is not None]
        read += len(entries)
        fields = [entry_fields(entry) for entry in entries]
        if book is not None:  # recorded first, so the kill's push carries the record of it
            for each in fields:
                book.journal(each)
            book.save()
        for entry, each in zip(entries, fields, strict=True):
            kill = kill_from_journal(entry)
            if kill is None:
                continue
            age = wall() - journal_time(each, wall())
            if age > STALE_KILL_S:
                notifier.log(f"trainguard-guard: not emailing a kill from {age / 3600:.1f} h ago: {kill}")
                continue
            notifier.handle(kill)
        cursors = [each["__CURSOR"] for each in fields if "__CURSOR" in each]
        if cursor is not None and cursors:
            cursor.save(cursors[-1])


def journal_lines(fd: int) -> Callable[[float], Sequence[str] | None]:
    """Complete lines read from a pipe within `timeout`: [] when none came, None at its end.

    It reads the descriptor itself: a buffered reader would keep the rest of a
    burst (three kills at once) in its buffer, where select() cannot see it.
    """
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    pending = b""

    def read(timeout: float) -> Sequence[str] | None:
        nonlocal pending
        if not selector.select(timeout):
            return []
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        *complete, pending = (pending + chunk).split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in complete]

    return read


def instance_id(environ: Mapping[str, str], run: Runner) -> str:
    if environ.get(contract.INSTANCE_ID_VARIABLE):
        return environ[contract.INSTANCE_ID_VARIABLE]
    done = run([contract.IMDS_HELPER, "meta-data/instance-id"], 20.0)
    return done.stdout.strip() if done.ok else "unknown-instance"


@dataclass(frozen=True)
class Places:
    """Where the guard keeps and finds things (tests put them in a temporary folder)."""

    workers_file: Path = Path(contract.WORKERS_STATE_FILE)
    cursor_file: Path = Path(contract.GUARD_CURSOR_FILE)
    push_requests: Path = Path(contract.PUSH_REQUEST_DIR)


def main(environ: Mapping[str, str] | None = None, places: Places = Places()) -> int:
    environ = os.environ if environ is None else environ
    topic_arn = environ.get(contract.TOPIC_ARN_VARIABLE, "")
    if not region_of(topic_arn):
        print(
            f"trainguard-guard: {contract.TOPIC_ARN_VARIABLE} {topic_arn!r} is not an SNS topic ARN: set it in"
            f" {contract.ENV_FILE} (arn:aws:sns:REGION:ACCOUNT:NAME)",
            file=sys.stderr,
        )
        return 3

    def log(line: str) -> None:
        print(line, flush=True)

    host = Host(run=run_command, clock=time.monotonic, cgroup_root=Path("/sys/fs/cgroup"))
    identity = instance_id(environ, run_command)
    notifier = Notifier(host, identity, topic_arn, log=log)
    book = WorkerBook(places.workers_file, identity, log=log)
    book.load()
    cursor = Cursor(places.cursor_file, log=log)
    resume = cursor.last()
    try:
        process = subprocess.Popen(journal_argv(resume), stdout=subprocess.PIPE, bufsize=0)
    except OSError as error:
        print(
            f"trainguard-guard: cannot run journalctl ({error.strerror or error}): no kill can be seen", file=sys.stderr
        )
        return 3
    assert process.stdout is not None
    pushes = PushServer(places.push_requests, notifier.requested_push, log)
    pushes.start()
    try:
        read = follow(notifier, journal_lines(process.stdout.fileno()), book, cursor)
    finally:
        pushes.stop()
        process.terminate()
        process.wait(timeout=10)
    if resume and read == 0:  # a cursor journalctl could not seek to: the restart begins from now instead
        cursor.forget()
    print("trainguard-guard: journalctl ended; systemd restarts this service", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
