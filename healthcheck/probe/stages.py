"""The network stages that need no SSH library: resolve, tcp and banner.

Standard library only, so that the SSH canary Lambda can run exactly this code.
Each stage takes the deadline it must finish by and either returns its product
or raises StageFailed with the verdict its failure means.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from healthcheck import __version__
from healthcheck.probe.deadline import Deadline
from healthcheck.probe.verdict import Verdict

# Sent first, as OpenSSH does: a server that waits for the client to speak
# (an HTTP server, say) then answers and shows what it is.
CLIENT_ID = f"SSH-2.0-trainguard_healthcheck_{__version__}"
# RFC 4253 section 4.2 lets a server send other lines before its identification.
# OpenSSH's client (kex.c, kex_exchange_identification; limits in ssh.h) accepts
# at most SSH_MAX_PRE_BANNER_LINES = 1024 such lines, each, like the
# identification itself, at most SSH_MAX_BANNER_LEN = 8192 bytes. We accept
# what OpenSSH accepts, and nothing more: past that, ssh would fail too.
MAX_PRE_BANNER_LINES = 1024
MAX_LINE_BYTES = 8192
# What sshd writes before closing a connection it will not serve (sshd.c,
# drop_connection): "Exceeded MaxStartups" up to OpenSSH 9.7, "Not allowed at
# this time" since 9.8, for MaxStartups and PerSourcePenalties alike.
SSHD_REFUSALS = (b"Exceeded MaxStartups", b"Not allowed at this time")
BUSY = "sshd is refusing new connections (MaxStartups: too many unauthenticated connections)"
# close() with SO_LINGER 0 sends a reset instead of a FIN: nothing lingers in
# TIME_WAIT, and a frozen sshd that thaws finds a dead connection, not a client
# to fork a child for.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class StageFailed(Exception):
    """A stage failed in a way that decides the verdict."""

    def __init__(self, verdict: Verdict, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail


class TransientFailure(StageFailed):
    """A failure worth retrying inside the deadline (a reset during the handshake)."""


class SshdBusy(TransientFailure):
    """sshd said it refuses new connections for now (MaxStartups, penalties): alive, busy, worth retrying."""

    def __init__(self, line: str) -> None:
        super().__init__(Verdict.REFUSED, f"{BUSY}: it sent {line!r}")


class ConnectTimedOut(StageFailed):
    """No answer at all to the TCP handshake: a host that is down, a firewall, or a full listen queue."""


class OutOfTime(StageFailed):
    """The deadline passed before a connection could even be tried (a retry that started too late)."""


@dataclass(frozen=True)
class Identification:
    """The server's SSH identification line, and every byte read from it on (for the SSH library)."""

    server_id: str
    received: bytes
    prelude_lines: int = 0


def resolve(host: str, port: int, deadline: Deadline) -> list[tuple[int, tuple[str, int]]]:
    """Addresses for host:port as (family, sockaddr), IPv4 and IPv6 alike.

    getaddrinfo cannot be interrupted, so it runs in a daemon thread that is
    abandoned, not waited for, when the deadline passes.
    """
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [(family, (host, port))]

    outcome: list[object] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as error:
            # UnicodeError: the IDNA codec refuses the name (a label over 63 characters).
            outcome.append(error)
        done.set()

    threading.Thread(target=lookup, name="resolve", daemon=True).start()
    if not done.wait(deadline.remaining()):
        raise StageFailed(Verdict.UNKNOWN_HOST, f"DNS lookup of {host} timed out")
    answer = outcome[0]
    if isinstance(answer, (OSError, UnicodeError)):
        reason = answer.strerror if isinstance(answer, socket.gaierror) else str(answer)
        raise StageFailed(Verdict.UNKNOWN_HOST, f"cannot resolve {host}: {reason}")
    assert isinstance(answer, list)
    return [(family, sockaddr[:2]) for family, _, _, _, sockaddr in answer]


def connect(addresses: list[tuple[int, tuple[str, int]]], deadline: Deadline) -> socket.socket:
    """A TCP connection to the first address that accepts one before the deadline.

    "Refused" and "reset" both mean the host answered: REFUSED, and a reset is
    worth retrying (a server that accepts and resets at once may be restarting).
    """
    failure: StageFailed = (
        OutOfTime(Verdict.UNREACHABLE, "no time left to connect")
        if addresses
        else StageFailed(Verdict.UNREACHABLE, "no address to connect to")
    )
    for family, sockaddr in addresses:
        if deadline.expired:
            break
        where = f"{sockaddr[0]} port {sockaddr[1]}"
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(deadline.remaining())
        try:
            sock.connect(sockaddr)
            _no_delay(sock)
        except ConnectionRefusedError:
            failure = StageFailed(Verdict.REFUSED, f"{where}: connection refused")
        except (ConnectionResetError, ConnectionAbortedError):
            failure = TransientFailure(Verdict.REFUSED, f"{where}: connection reset by peer")
        except TimeoutError:
            failure = ConnectTimedOut(Verdict.UNREACHABLE, f"{where}: no answer within {deadline.budget:.1f}s")
        except OSError as error:
            if error.errno == errno.ENOTCONN:
                # The reset arrived between the handshake and our first look at the socket.
                failure = TransientFailure(Verdict.REFUSED, f"{where}: connection reset by peer")
            else:
                no_route = error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
                reason = "no route to host" if no_route else (error.strerror or str(error))
                failure = StageFailed(Verdict.UNREACHABLE, f"{where}: {reason}")
        else:
            return sock
        abandon(sock)
    raise failure


def _no_delay(sock: socket.socket) -> None:
    """TCP_NODELAY on a connected socket. A peer that reset the connection already makes it fail: ENOTCONN on
    Linux, EINVAL on macOS (Darwin), both a reset."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as error:
        if error.errno in (errno.ENOTCONN, errno.EINVAL):
            raise ConnectionResetError(error.errno, "connection reset by peer") from None
        raise


def abandon(sock: socket.socket) -> None:
    """Close with a reset: the peer's side of the connection is gone at once, not left queued or lingering."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    sock.close()


def exchange_identification(sock: socket.socket, deadline: Deadline) -> Identification:
    """Send our SSH identification, then read the server's before the deadline.

    Every recv gets only the time left until the stage's deadline, so a server
    that trickles its banner cannot keep us past it (paramiko's own banner read
    restarts its timer on every byte).
    """
    try:
        sock.settimeout(deadline.remaining() or 0.001)
        sock.sendall(f"{CLIENT_ID}\r\n".encode())
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as error:
        raise TransientFailure(Verdict.REFUSED, f"connection reset before identification: {error}") from error
    except TimeoutError:
        raise _silence(b"", deadline) from None
    except OSError as error:
        if error.errno == errno.ENOTCONN:
            raise TransientFailure(Verdict.REFUSED, "connection reset before identification") from error
        raise StageFailed(Verdict.HUNG, f"could not send our identification: {error}") from error

    reader = _IdentificationReader()
    while True:
        identification = reader.identification()
        if identification is not None:
            return identification
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _silence(reader.received, deadline)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise _silence(reader.received, deadline) from None
        except (ConnectionResetError, ConnectionAbortedError) as error:
            reader.refusal()
            raise TransientFailure(Verdict.REFUSED, f"connection reset before identification: {error}") from error
        except OSError as error:
            if error.errno == errno.ENOTCONN:
                raise TransientFailure(Verdict.REFUSED, "connection reset before identification") from error
            raise
        if not chunk:
            reader.refusal()
            if reader.received:
                raise StageFailed(Verdict.NOT_SSH, f"closed after sending {_first_line(reader.received)!r}")
            raise TransientFailure(
                Verdict.REFUSED,
                "connection closed before any identification (sshd MaxStartups, TCP wrappers or a proxy in front)",
            )
        reader.feed(chunk)


class _IdentificationReader:
    """Scans what the server sent, line by line and only once, for its identification."""

    def __init__(self) -> None:
        self.received = bytearray()
        self._line_start = 0
        self._lines = 0

    def feed(self, chunk: bytes) -> None:
        self.received += chunk

    def identification(self) -> Identification | None:
        """The identification if its line is complete; raises if the data cannot be SSH."""
        while (end := self.received.find(b"\n", self._line_start)) != -1:
            line_start, self._line_start = self._line_start, end + 1
            line = bytes(self.received[line_start:end].rstrip(b"\r"))
            self._check_line_length(len(line))
            if line.startswith(b"SSH-"):
                text = line.decode("ascii", errors="replace")
                protocol = text.split("-", 2)[1]
                if protocol not in ("2.0", "1.99"):
                    raise StageFailed(Verdict.NOT_SSH, f"speaks SSH protocol {protocol} only: {text!r}")
                return Identification(text, bytes(self.received[line_start:]), self._lines)
            if b"\0" in line:
                raise StageFailed(Verdict.NOT_SSH, f"sent {_first_line(self.received)!r}")
            self._busy_if_refusal(line)
            self._lines += 1
            if self._lines >= MAX_PRE_BANNER_LINES:
                raise StageFailed(
                    Verdict.NOT_SSH,
                    f"sent {MAX_PRE_BANNER_LINES} lines and no SSH identification "
                    f"(OpenSSH gives up after {MAX_PRE_BANNER_LINES}); the first: {_first_line(self.received)!r}",
                )
        self._check_line_length(len(self.received) - self._line_start)
        return None

    def refusal(self) -> None:
        """At a close or reset: if what arrived is sshd's refusal, say so (even without its newline)."""
        self._busy_if_refusal(bytes(self.received.split(b"\n", 1)[0].rstrip(b"\r")))

    def _check_line_length(self, length: int) -> None:
        if length > MAX_LINE_BYTES:
            raise StageFailed(
                Verdict.NOT_SSH,
                f"sent a line longer than {MAX_LINE_BYTES} bytes before any SSH identification "
                f"(OpenSSH's limit for a banner line): {_first_line(self.received)!r}",
            )

    @staticmethod
    def _busy_if_refusal(line: bytes) -> None:
        if line.startswith(SSHD_REFUSALS):
            raise SshdBusy(line[:80].decode("ascii", errors="replace"))


@dataclass(frozen=True)
class BannerCheck:
    """One look at sshd's identification: what it sent, or the verdict its silence or refusal means."""

    server_id: str | None  # the identification line, when it came
    verdict: Verdict | None  # why it did not come, when it did not
    busy: bool  # sshd turned the connection away (MaxStartups): alive, but no identification
    seconds: float
    detail: str

    @property
    def alive(self) -> bool:
        """sshd answered: with its identification, or to say it is busy."""
        return self.server_id is not None or self.busy


def check_banner(host: str, port: int, timeout: float, clock: Callable[[], float] = time.monotonic) -> BannerCheck:
    """Connect and read sshd's identification within `timeout`: the probe's resolve, tcp and banner stages.

    The SSH canary, the drills and `trainguard status` all look at sshd this way.
    """
    started = clock()
    deadline = Deadline(timeout, clock)
    try:
        sock = connect(resolve(host, port, deadline), deadline)
        try:
            identification = exchange_identification(sock, deadline)
        finally:
            abandon(sock)
    except StageFailed as failure:
        busy = isinstance(failure, SshdBusy)
        return BannerCheck(None, failure.verdict, busy, clock() - started, failure.detail)
    return BannerCheck(identification.server_id, None, False, clock() - started, identification.server_id)


def _silence(received: bytes | bytearray, deadline: Deadline) -> StageFailed:
    """What running out of time means, given what arrived before it."""
    waited = f"{deadline.budget:.1f}s"
    if not received:
        return StageFailed(Verdict.HUNG, f"port open, but sshd sent nothing in {waited}: userspace frozen?")
    if b"SSH-".startswith(received[:4]) and b"\n" not in received:
        return StageFailed(
            Verdict.HUNG,
            f"identification stalled after {len(received)} bytes ({_first_line(received)!r}) within {waited}",
        )
    return StageFailed(Verdict.NOT_SSH, f"sent {_first_line(received)!r} and no SSH identification")


def _first_line(received: bytes | bytearray) -> str:
    return bytes(received).split(b"\n", 1)[0].rstrip(b"\r")[:80].decode("ascii", errors="replace")
