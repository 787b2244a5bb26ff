"""One probe per target: resolve -> tcp -> banner -> auth -> exec, inside one deadline.

Each stage gets its own deadline, a share of the overall budget counted from
when it starts and never past the overall deadline, so no stage can starve the
ones after it and a frozen host is called HUNG before the budget runs out.

    stage    share of --timeout   fails as
    resolve  0.25                 UNKNOWN_HOST (NOT_RUNNING for a stopped instance)
    tcp      0.50                 REFUSED, UNREACHABLE, HUNG (a silent port on a live host)
    banner   0.60                 HUNG, NOT_SSH, REFUSED (a busy sshd, resets)
    auth     0.80                 HOSTKEY_MISMATCH, HOSTKEY_REVOKED, HOSTKEY_UNKNOWN, AUTH_FAILED, HUNG
    exec     1.00 (what is left)  EXEC_HANG

A watchdog shuts the socket down when the overall deadline passes, which ends
any wait inside paramiko that has no timeout of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TypeVar

import tenacity

from healthcheck import contract
from healthcheck.errors import Terminated
from healthcheck.probe.deadline import Clock, Deadline
from healthcheck.probe.ec2 import Lookup
from healthcheck.probe.stages import (
    ConnectTimedOut,
    Identification,
    OutOfTime,
    SshdBusy,
    StageFailed,
    TransientFailure,
    abandon,
    connect,
    exchange_identification,
    resolve,
)
from healthcheck.probe.targets import Target
from healthcheck.probe.verdict import Result, Stage, Verdict, conclude
from healthcheck.probe.vitals import Thresholds, Vitals, parse_vitals, vitals_script

if TYPE_CHECKING:
    from healthcheck.probe.canary import CanaryView
    from healthcheck.probe.credentials import Keys, KnownHosts

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
# When the SSH port does not answer the TCP handshake, one connect to another
# port tells a host whose kernel is alive (any answer: a reset or an accept)
# from one that is down. A frozen sshd's full listen queue silences only its port.
KERNEL_CHECK_PORTS = (1, 2)
KERNEL_CHECK_SECONDS = 1.0
QUEUE_FULL = "consistent with a frozen sshd whose listen queue is full"

T = TypeVar("T")


@dataclass(frozen=True)
class ProbeSettings:
    """How to probe: the budget, whether to log in, with what, and what counts as degraded."""

    timeout: float = 10.0
    login: bool = True
    known_hosts: KnownHosts | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    data_mount: str = contract.DATA_MOUNT
    private_address: bool = False


@dataclass(frozen=True)
class Job:
    """One target to probe, with the keys to offer it and, for `i-` targets, what EC2 said."""

    target: Target
    keys: Keys | None = None  # None: no login
    lookup: Lookup | None = None


class RoundInterrupted(Exception):
    """Ctrl-C or SIGTERM while a round ran: the results that had finished, and the signal."""

    def __init__(self, finished: list[Result], cause: KeyboardInterrupt | Terminated) -> None:
        super().__init__(f"interrupted with {len(finished)} results finished")
        self.finished = finished
        self.cause = cause


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
        sock, identification = _handshake(timeline, addresses, lookup)
        if settings.login:
            watchdog = _start_watchdog(sock, overall)
            vitals = _login_and_exec(timeline, job, settings, host=host, sock=sock, identification=identification)
    except StageFailed as stage_failure:
        failure = (stage_failure.verdict, stage_failure.detail)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if sock is not None and failure:
            abandon(sock)
        elif sock is not None:
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
    """Probe every target concurrently, at most `parallel` at once; results keep the jobs' order.

    The probes run in daemon threads and the calling (main) thread only waits,
    so Ctrl-C or SIGTERM ends the round at once: RoundInterrupted carries what
    had finished, and nothing waits for the probes still in flight.
    """
    results: list[Result | None] = [None] * len(jobs)
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(jobs)):
        pending.put(index)
    finished = threading.Semaphore(0)
    stopping = threading.Event()

    def work() -> None:
        while not stopping.is_set():
            try:
                index = pending.get_nowait()
            except queue.Empty:
                return
            results[index] = probe(jobs[index], settings)
            finished.release()

    for _ in range(min(parallel, len(jobs))):
        threading.Thread(target=work, name="probe", daemon=True).start()
    try:
        for _ in jobs:
            finished.acquire()
    except (KeyboardInterrupt, Terminated) as cause:
        stopping.set()
        raise RoundInterrupted([result for result in results if result is not None], cause) from None
    return [result for result in results if result is not None]


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
    timeline: _Timeline, addresses: list[tuple[int, tuple[str, int]]], lookup: Lookup | None
) -> tuple[socket.socket, Identification]:
    """tcp then banner, retried with backoff on resets and busy refusals while time remains.

    HUNG and timeouts are never retried: waiting again inside the same budget
    would only hide the freeze. Only the last attempt's stages are reported,
    with the number of attempts in their detail and in the summary.
    """
    overall = timeline.overall
    first_stage = len(timeline.stages)
    attempts = itertools.count(1)
    causes: list[str] = []
    last: list[TransientFailure] = []

    def attempt() -> tuple[socket.socket, Identification]:
        number = next(attempts)
        previous = timeline.stages[first_stage:]
        del timeline.stages[first_stage:]
        note = f" (attempt {number}, after {_retry_causes(causes)})" if number > 1 else ""
        try:
            sock = timeline.run("tcp", lambda deadline: _connected(connect(addresses, deadline)), note=note)
        except ConnectTimedOut as timed_out:
            raise _explain_silent_port(timed_out, addresses, overall, lookup) from None
        except OutOfTime:
            if not last:
                raise
            # A retry that a busy machine started too late says nothing new: the last attempt's failure stands.
            timeline.stages[first_stage:] = previous
            raise last[-1] from None
        except TransientFailure as failure:
            causes.append("a reset")
            last.append(failure)
            raise

        def identify(deadline: Deadline) -> tuple[Identification, str]:
            identification = exchange_identification(sock, deadline)
            return identification, identification.server_id

        try:
            return sock, timeline.run("banner", identify, note=note)
        except StageFailed as failure:
            abandon(sock)
            if isinstance(failure, TransientFailure):
                causes.append("a busy refusal" if isinstance(failure, SshdBusy) else "a reset")
                last.append(failure)
            raise

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientFailure),
        wait=tenacity.wait_exponential(multiplier=0.05, max=1.0) + tenacity.wait_random(0, 0.05),
        stop=lambda state: overall.remaining() <= (state.upcoming_sleep or 0.0) + 0.1,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except TransientFailure as last:
        count = len(causes)
        raise StageFailed(last.verdict, last.detail + (f" ({count} attempts)" if count > 1 else "")) from None


def _retry_causes(causes: list[str]) -> str:
    return ", ".join(sorted(set(causes)))


def _connected(sock: socket.socket) -> tuple[socket.socket, str]:
    try:
        address, port = sock.getpeername()[:2]
    except OSError:
        # ENOTCONN: the peer reset the connection right after accepting it.
        abandon(sock)
        raise TransientFailure(Verdict.REFUSED, "connection reset by peer right after it was accepted") from None
    return sock, f"connected to {address} port {port}"


def _explain_silent_port(
    timed_out: ConnectTimedOut,
    addresses: list[tuple[int, tuple[str, int]]],
    overall: Deadline,
    lookup: Lookup | None,
) -> StageFailed:
    """A TCP handshake that timed out: HUNG when the host itself is known to be up, else UNREACHABLE.

    A frozen sshd stops accepting; once its listen queue is full (128
    connections, SSH_LISTEN_BACKLOG), the kernel drops new handshakes on its
    port, so "port open, no banner" turns into silence while the host is fine.
    """
    family, (address, port) = addresses[0]
    check_port = next(candidate for candidate in KERNEL_CHECK_PORTS if candidate != port)
    answer = _kernel_answer(family, address, check_port, min(KERNEL_CHECK_SECONDS, overall.remaining()))
    if answer is not None:
        return StageFailed(
            Verdict.HUNG,
            f"{timed_out.detail}, yet the host's kernel answers ({answer}): {QUEUE_FULL}",
        )
    instance = lookup.instance if lookup else None
    if instance and instance.state == "running" and (instance.system_status, instance.instance_status) == ("ok", "ok"):
        canary = lookup.canary() if lookup and lookup.canary else None
        return silent_running_instance(timed_out.detail, instance.instance_id, port, canary, datetime.now(timezone.utc))
    return timed_out


def silent_running_instance(
    detail: str, instance_id: str, port: int, canary: CanaryView | None, now: datetime
) -> StageFailed:
    """A port silent from here on an instance EC2 calls healthy, judged by what the stack's canary heard (pure).

    The canary samples sshd from inside the VPC: if it hears sshd, this address is what the security group
    drops, and nothing needs a reboot; if it hears nothing either, sshd is frozen and the auto-reboot is on it.
    """
    where = f"{detail}; the port is silent while EC2 reports {instance_id} running with its status checks passing"
    unconfirmed = (
        f"(or a security group or firewall dropping port {port}: the stack's SSH canary, which would tell, has "
        f"no recent sample of it; before rebooting, see that trainguard status shows its SSH alarm firing)"
    )
    if canary is None:
        return StageFailed(Verdict.HUNG, f"{where}: {QUEUE_FULL} {unconfirmed}")
    assert canary.latest_at is not None
    age = f"{max(0, int((now - canary.latest_at).total_seconds()))}s ago"
    if canary.heard_sshd(now):
        return StageFailed(
            Verdict.ADDRESS_NOT_ALLOWED,
            f"{where}, and the stack's SSH canary, inside the VPC, heard sshd answer {age}: the host is fine, and "
            "this address is not in trainguard:sshAllowedCidrs (its security group drops the packets)",
        )
    if canary.heard_nothing(now):
        alarm = ""
        if canary.alarm_state == "ALARM" and canary.alarm_since is not None:
            alarm = (
                f"; its SSH alarm has been in ALARM since {canary.alarm_since:%H:%M:%S} UTC, so the auto-reboot "
                "function is acting on it (within about two minutes of the freeze) and will email you"
            )
        elif canary.alarm_state is not None:
            alarm = f"; its SSH alarm is {canary.alarm_state}, and fires once enough samples fail"
        return StageFailed(
            Verdict.HUNG, f"{where}, and the stack's SSH canary heard no banner either ({age}): {QUEUE_FULL}{alarm}"
        )
    return StageFailed(Verdict.HUNG, f"{where}; the canary's newest sample is {age}: {QUEUE_FULL} {unconfirmed}")


def _kernel_answer(family: int, address: str, port: int, timeout: float) -> str | None:
    """How the host answered a TCP handshake on `port` within `timeout`, or None if it did not."""
    if timeout <= 0:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
    except ConnectionRefusedError:
        return f"port {port} refused a connection"
    except OSError:
        return None
    else:
        return f"port {port} accepted a connection"
    finally:
        abandon(sock)


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

    known_hosts, keys = settings.known_hosts, job.keys
    assert known_hosts is not None and keys is not None, "login needs known_hosts and keys"
    transport = timeline.run(
        "auth",
        lambda deadline: authenticate(
            sock,
            identification,
            host=host,
            port=job.target.port,
            user=job.target.user,
            keys=keys,
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
