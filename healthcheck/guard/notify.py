"""The guard's notifier: when memory kills a process, push results at once, count it, and email a person.

    python3 -m healthcheck.guard.notify     (the trainguard-guard service)

It follows the journal for two kinds of entry:
- systemd's "Failed with result" (MESSAGE_ID d9b373ed55a64feb8242e02dbe79a49c, field UNIT_RESULT) with
  result oom-kill: the kernel killed inside a unit, a training worker in the slice;
- earlyoom's "sending SIGTERM/SIGKILL to process ..." (earlyoom's kill.c), for a job outside the slice.
For each it runs `trainguard-push --now` (when installed), publishes Trainguard/Guard WorkerOOMKills (InstanceId)
and publishes the email to the stack's topic, with AWS CLI v1 (the instance has no boto3 for its python3).
Between entries it samples the workers' memory, since a killed worker's cgroup (and its memory.peak) is gone
by the time the entry arrives.
"""

from __future__ import annotations

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

UNIT_FAILURE_RESULT = "d9b373ed55a64feb8242e02dbe79a49c"  # systemd's SD_MESSAGE_UNIT_FAILURE_RESULT
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


def kill_from_journal(entry: Mapping[str, object]) -> Kill | None:
    """A journal entry (journalctl -o json) as a Kill, or None when it is not one (pure)."""
    message = entry.get("MESSAGE")
    if entry.get("MESSAGE_ID") == UNIT_FAILURE_RESULT and entry.get("UNIT_RESULT") == "oom-kill":
        unit = str(entry.get("UNIT", ""))
        return Kill(by="kernel", unit=unit, worker=units.worker_of(unit))
    if entry.get("_SYSTEMD_UNIT") == EARLYOOM_UNIT and isinstance(message, str):
        match = EARLYOOM_KILL.search(message)
        if match:
            signal, pid, _uid, name, rss = match.groups()
            return Kill(by="earlyoom", process=name, pid=int(pid), signal=signal, rss_mib=int(rss))
    return None


def journal_argv() -> list[str]:
    return [
        "journalctl",
        "--follow",
        "--lines=0",
        "--output=json",
        f"MESSAGE_ID={UNIT_FAILURE_RESULT}",
        "+",
        f"_SYSTEMD_UNIT={EARLYOOM_UNIT}",
    ]


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

    def sample(self) -> None:
        for worker in self.running_workers():
            self.host.worker_memory(worker)

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

    def _step(self, name: str, argv: Sequence[str], timeout: float) -> Completed:
        done = self.host.run(argv, timeout)
        self.log(f"trainguard-guard: {name}: {'ok' if done.ok else done.why()}")
        return done


def follow(notifier: Notifier, lines: Callable[[float], Sequence[str] | None]) -> None:
    """Feed journal lines to the notifier, sampling worker memory between them; ends when `lines` returns None."""
    while True:
        notifier.sample()
        batch = lines(SAMPLE_INTERVAL_S)
        if batch is None:
            return
        for line in batch:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            kill = kill_from_journal(entry) if isinstance(entry, dict) else None
            if kill is not None:
                notifier.handle(kill)


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


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    topic_arn = environ.get(contract.TOPIC_ARN_VARIABLE, "")
    if not region_of(topic_arn):
        print(
            f"trainguard-guard: {contract.TOPIC_ARN_VARIABLE} {topic_arn!r} is not an SNS topic ARN: set it in"
            f" {contract.ENV_FILE} (arn:aws:sns:REGION:ACCOUNT:NAME)",
            file=sys.stderr,
        )
        return 3
    host = Host(run=run_command, clock=time.monotonic, cgroup_root=Path("/sys/fs/cgroup"))
    notifier = Notifier(host, instance_id(environ, run_command), topic_arn, log=lambda line: print(line, flush=True))
    process = subprocess.Popen(journal_argv(), stdout=subprocess.PIPE, bufsize=0)
    assert process.stdout is not None
    try:
        follow(notifier, journal_lines(process.stdout.fileno()))
    finally:
        process.terminate()
    print("trainguard-guard: journalctl ended; systemd restarts this service", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
