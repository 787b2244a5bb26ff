"""The network stages that need no SSH library: resolve, tcp and banner.

Standard library only, so that the SSH canary Lambda can run exactly this code.
Each stage takes the deadline it must finish by and either returns its product
or raises StageFailed with the verdict its failure means.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from dataclasses import dataclass

from healthcheck import __version__
from healthcheck.probe.deadline import Deadline
from healthcheck.probe.verdict import Verdict

# Sent first, as OpenSSH does: a server that waits for the client to speak
# (an HTTP server, say) then answers and shows what it is.
CLIENT_ID = f"SSH-2.0-trainguard_healthcheck_{__version__}"
# RFC 4253 section 4.2: an identification line is at most 255 bytes.
MAX_LINE = 255
# Lines a server may send before its identification; more than this is not SSH.
MAX_PRELUDE_BYTES = 8192


class StageFailed(Exception):
    """A stage failed in a way that decides the verdict."""

    def __init__(self, verdict: Verdict, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail


class TransientFailure(StageFailed):
    """A failure worth retrying inside the deadline (a reset during the handshake)."""


@dataclass(frozen=True)
class Identification:
    """The server's SSH identification line and every byte read to find it."""

    server_id: str
    received: bytes


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
        except OSError as error:
            outcome.append(error)
        done.set()

    threading.Thread(target=lookup, name=f"resolve-{host}", daemon=True).start()
    if not done.wait(deadline.remaining()):
        raise StageFailed(Verdict.UNKNOWN_HOST, f"DNS lookup of {host} timed out")
    answer = outcome[0]
    if isinstance(answer, OSError):
        reason = answer.strerror if isinstance(answer, socket.gaierror) else str(answer)
        raise StageFailed(Verdict.UNKNOWN_HOST, f"cannot resolve {host}: {reason}")
    assert isinstance(answer, list)
    return [(family, sockaddr[:2]) for family, _, _, _, sockaddr in answer]


def connect(addresses: list[tuple[int, tuple[str, int]]], deadline: Deadline) -> socket.socket:
    """A TCP connection to the first address that accepts one before the deadline."""
    failure = StageFailed(Verdict.UNREACHABLE, "no address to connect to")
    for family, sockaddr in addresses:
        if deadline.expired:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(deadline.remaining())
        try:
            sock.connect(sockaddr)
        except ConnectionRefusedError:
            failure = StageFailed(Verdict.REFUSED, f"{sockaddr[0]} port {sockaddr[1]}: connection refused")
        except TimeoutError:
            failure = StageFailed(
                Verdict.UNREACHABLE,
                f"{sockaddr[0]} port {sockaddr[1]}: no answer within {deadline.budget:.1f}s",
            )
        except OSError as error:
            no_route = error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
            reason = "no route to host" if no_route else (error.strerror or str(error))
            failure = StageFailed(Verdict.UNREACHABLE, f"{sockaddr[0]} port {sockaddr[1]}: {reason}")
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        sock.close()
    raise failure


def exchange_identification(sock: socket.socket, deadline: Deadline) -> Identification:
    """Send our SSH identification, then read the server's before the deadline.

    Every recv gets only the time left until the stage's deadline, so a server
    that trickles its banner cannot keep us past it (paramiko's own banner read
    restarts its timer on every byte).
    """
    try:
        sock.settimeout(deadline.remaining() or 0.001)
        sock.sendall(f"{CLIENT_ID}\r\n".encode())
    except (ConnectionResetError, BrokenPipeError) as error:
        raise TransientFailure(Verdict.REFUSED, f"connection reset before identification: {error}") from error
    except OSError as error:
        raise StageFailed(Verdict.HUNG, f"could not send our identification: {error}") from error

    received = b""
    while True:
        identification = _find_identification(received)
        if identification is not None:
            return Identification(identification, received)
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _silence(received, deadline)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            raise _silence(received, deadline) from None
        except (ConnectionResetError, ConnectionAbortedError) as error:
            raise TransientFailure(Verdict.REFUSED, f"connection reset before identification: {error}") from error
        if not chunk:
            if received:
                raise StageFailed(Verdict.NOT_SSH, f"closed after sending {_first_line(received)!r}")
            raise TransientFailure(
                Verdict.REFUSED,
                "connection closed before any identification (sshd MaxStartups, TCP wrappers or a proxy in front)",
            )
        received += chunk


def _find_identification(received: bytes) -> str | None:
    """The identification line if it is complete; raises if the data cannot be SSH."""
    lines = received.split(b"\n")
    complete, partial = lines[:-1], lines[-1]
    for raw in complete:
        line = raw.rstrip(b"\r")
        if line.startswith(b"SSH-"):
            text = line.decode("ascii", errors="replace")
            protocol = text.split("-", 2)[1]
            if protocol not in ("2.0", "1.99"):
                raise StageFailed(Verdict.NOT_SSH, f"speaks SSH protocol {protocol} only: {text!r}")
            return text
        if len(line) > MAX_LINE or b"\0" in line:
            raise StageFailed(Verdict.NOT_SSH, f"sent {_first_line(received)!r}")
    if len(received) > MAX_PRELUDE_BYTES or len(partial) > MAX_LINE:
        raise StageFailed(Verdict.NOT_SSH, f"sent {_first_line(received)!r}")
    return None


def _silence(received: bytes, deadline: Deadline) -> StageFailed:
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


def _first_line(received: bytes) -> str:
    return received.split(b"\n", 1)[0].rstrip(b"\r")[:80].decode("ascii", errors="replace")
