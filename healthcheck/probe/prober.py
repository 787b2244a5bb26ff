"""One probe per target: resolve -> tcp -> banner -> auth -> exec, inside one deadline.

Each stage gets its own deadline, a share of the overall budget counted from
when it starts and never past the overall deadline, so no stage can starve the
ones after it and a frozen host is called HUNG before the budget runs out.

    stage    share of --timeout   fails as
    resolve  0.25                 UNKNOWN_HOST (NOT_RUNNING for a stopped instance)
    tcp      0.50                 REFUSED, UNREACHABLE
    banner   0.60                 HUNG, NOT_SSH
    auth     0.80                 HOSTKEY_MISMATCH, HOSTKEY_UNKNOWN, AUTH_FAILED, HUNG
    exec     1.00 (what is left)  EXEC_HANG

A watchdog shuts the socket down when the overall deadline passes, which ends
any wait inside paramiko that has no timeout of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import tenacity

from healthcheck.probe.deadline import Clock, Deadline
from healthcheck.probe.ec2 import Lookup
from healthcheck.probe.stages import (
    Identification,
    StageFailed,
    TransientFailure,
    connect,
    exchange_identification,
    resolve,
)
from healthcheck.probe.targets import Target
from healthcheck.probe.verdict import Result, Stage, Verdict, conclude
from healthcheck.probe.vitals import Thresholds, Vitals, parse_vitals, vitals_script

if TYPE_CHECKING:
    import paramiko

    from healthcheck.probe.credentials import KnownHosts

STAGE_SHARES = {"resolve": 0.25, "tcp": 0.5, "banner": 0.6, "auth": 0.8, "exec": 1.0}
# What a stage that runs out of time, or dies once the watchdog has fired, means.
TIMEOUT_VERDICTS = {
    "resolve": Verdict.UNKNOWN_HOST,
    "tcp": Verdict.UNREACHABLE,
    "banner": Verdict.HUNG,
    "auth": Verdict.HUNG,
    "exec": Verdict.EXEC_HANG,
}
# nvidia-smi gets this share of the exec stage, so a wedged GPU is not a hung host.
GPU_QUERY_SHARE = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class ProbeSettings:
    """How to probe: the budget, whether to log in, with what, and what counts as degraded."""

    timeout: float = 10.0
    login: bool = True
    known_hosts: KnownHosts | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    data_mount: str = "/data"
    private_address: bool = False


@dataclass(frozen=True)
class Job:
    """One target to probe, with the keys to offer it and, for `i-` targets, what EC2 said."""

    target: Target
    keys: tuple[paramiko.PKey, ...] = ()
    lookup: Lookup | None = None


class _Timeline:
    """Runs stages under their deadlines and records each one as it ends."""

    def __init__(self, overall: Deadline, clock: Clock) -> None:
        self.overall = overall
        self.clock = clock
        self.stages: list[Stage] = []

    def run(
        self, name: str, step: Callable[[Deadline], tuple[T, str]], *, extra_seconds: float = 0.0, note: str = ""
    ) -> T:
        """Run one stage; `note` is appended to its detail (the retry count), `extra_seconds` to its time."""
        deadline = self.overall.stage(STAGE_SHARES[name])
        started = self.clock()
        try:
            value, detail = step(deadline)
        except StageFailed as failure:
            self._record(name, False, started, extra_seconds, failure.detail + note)
            raise
        except Exception as error:  # a probe reports, it never crashes
            verdict = TIMEOUT_VERDICTS[name] if deadline.expired else Verdict.PROBE_ERROR
            detail = f"{type(error).__name__}: {error}"
            self._record(name, False, started, extra_seconds, detail + note)
            raise StageFailed(verdict, detail) from error
        self._record(name, True, started, extra_seconds, detail + note)
        return value

    def _record(self, name: str, ok: bool, started: float, extra_seconds: float, detail: str) -> None:
        self.stages.append(Stage(name, ok, self.clock() - started + extra_seconds, detail))


def probe(job: Job, settings: ProbeSettings, clock: Clock = time.monotonic) -> Result:
    """Probe one target; never raises, never outlives settings.timeout by more than a stage's cleanup."""
    target, lookup = job.target, job.lookup
    started = clock()
    overall = Deadline(settings.timeout, clock)
    timeline = _Timeline(overall, clock)
    vitals: Vitals = {}
    failure: tuple[Verdict, str] | None = None
    sock: socket.socket | None = None
    watchdog: threading.Timer | None = None
    try:
        host, addresses = timeline.run(
            "resolve",
            lambda deadline: _resolve(target, settings, lookup, deadline),
            extra_seconds=lookup.seconds if lookup else 0.0,
        )
        sock, identification = _handshake(timeline, addresses)
        if settings.login:
            watchdog = _start_watchdog(sock, overall)
            vitals = _login_and_exec(timeline, job, settings, host=host, sock=sock, identification=identification)
    except StageFailed as stage_failure:
        failure = (stage_failure.verdict, stage_failure.detail)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if sock is not None:
            sock.close()
    return conclude(
        target=target.label,
        stages=tuple(timeline.stages),
        failure=failure,
        vitals=vitals,
        thresholds=settings.thresholds,
        duration_s=clock() - started,
        ec2=lookup.instance.report(settings.private_address) if lookup and lookup.instance else None,
    )


def probe_all(jobs: list[Job], settings: ProbeSettings, parallel: int) -> list[Result]:
    """Probe every target concurrently in a bounded pool; results keep the jobs' order."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(parallel, len(jobs)), thread_name_prefix="probe") as pool:
        return list(pool.map(lambda job: probe(job, settings), jobs))


def _resolve(
    target: Target, settings: ProbeSettings, lookup: Lookup | None, deadline: Deadline
) -> tuple[tuple[str, list[tuple[int, tuple[str, int]]]], str]:
    """The host to connect to (an instance's address, for `i-` targets) and its socket addresses."""
    host, detail = target.host, ""
    if lookup is not None:
        instance = lookup.instance
        if instance is None:
            raise StageFailed(Verdict.UNKNOWN_HOST, lookup.failure or f"{target.host}: EC2 lookup failed")
        if instance.state != "running":
            raise StageFailed(Verdict.NOT_RUNNING, f"{instance.instance_id} is {instance.state}")
        address = instance.address(settings.private_address)
        if address is None:
            kind = "private" if settings.private_address else "public"
            hint = "" if settings.private_address else "; from inside its VPC, pass --private"
            raise StageFailed(Verdict.UNKNOWN_HOST, f"{instance.instance_id} has no {kind} address{hint}")
        host = address
        detail = (
            f"{instance.instance_id} running; status checks: system {instance.system_status}, "
            f"instance {instance.instance_status}; "
        )
    addresses = resolve(host, target.port, deadline)
    return (host, addresses), detail + ", ".join(sorted({sockaddr[0] for _, sockaddr in addresses}))


def _handshake(
    timeline: _Timeline, addresses: list[tuple[int, tuple[str, int]]]
) -> tuple[socket.socket, Identification]:
    """tcp then banner, retried with backoff on transient resets while time remains.

    HUNG and timeouts are never retried: waiting again inside the same budget
    would only hide the freeze. Only the last attempt's stages are reported,
    with the number of attempts in their detail.
    """
    overall = timeline.overall
    first_stage = len(timeline.stages)
    attempts = itertools.count(1)

    def attempt() -> tuple[socket.socket, Identification]:
        number = next(attempts)
        del timeline.stages[first_stage:]
        note = f" (attempt {number}, after a reset)" if number > 1 else ""
        sock = timeline.run("tcp", lambda deadline: _connected(connect(addresses, deadline)), note=note)

        def identify(deadline: Deadline) -> tuple[Identification, str]:
            identification = exchange_identification(sock, deadline)
            return identification, identification.server_id

        try:
            return sock, timeline.run("banner", identify, note=note)
        except StageFailed:
            sock.close()
            raise

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientFailure),
        wait=tenacity.wait_exponential(multiplier=0.05, max=1.0) + tenacity.wait_random(0, 0.05),
        stop=lambda state: overall.remaining() <= (state.upcoming_sleep or 0.0) + 0.1,
        reraise=True,
    )
    return retrying(attempt)


def _connected(sock: socket.socket) -> tuple[socket.socket, str]:
    address, port = sock.getpeername()[:2]
    return sock, f"connected to {address} port {port}"


def _start_watchdog(sock: socket.socket, overall: Deadline) -> threading.Timer:
    def expire() -> None:
        # Already closed means nothing is left to unblock.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(overall.remaining(), expire)
    watchdog.daemon = True
    watchdog.start()
    return watchdog


def _login_and_exec(
    timeline: _Timeline,
    job: Job,
    settings: ProbeSettings,
    *,
    host: str,
    sock: socket.socket,
    identification: Identification,
) -> Vitals:
    from healthcheck.probe.session import authenticate, run_script

    known_hosts = settings.known_hosts
    assert known_hosts is not None, "login needs known_hosts"
    transport = timeline.run(
        "auth",
        lambda deadline: authenticate(
            sock,
            identification,
            host=host,
            port=job.target.port,
            user=job.target.user,
            keys=list(job.keys),
            known_hosts=known_hosts,
            deadline=deadline,
        ),
    )
    try:

        def exec_vitals(deadline: Deadline) -> tuple[Vitals, str]:
            gpu_seconds = max(1, int(deadline.remaining() * GPU_QUERY_SHARE))
            output = run_script(transport, vitals_script(settings.data_mount, gpu_seconds), deadline)
            return parse_vitals(output), f"vitals command finished, {len(output)} bytes of output"

        return timeline.run("exec", exec_vitals)
    finally:
        transport.close()
