"""The stages that need an SSH library: auth (key exchange, host key, login) and exec.

paramiko takes over a connection whose identification exchange the banner
stage already did, so its banner read (whose timer restarts on every byte)
never waits on the network. Every wait below is bounded by the stage's
deadline; paramiko calls that have no timeout of their own (exec_command,
recv_exit_status) are avoided or covered by the probe's watchdog, which shuts
the socket down at the overall deadline.
"""

from __future__ import annotations

import logging
import socket
import threading

import paramiko

from healthcheck.probe.credentials import Keys, KnownHosts
from healthcheck.probe.deadline import Deadline
from healthcheck.probe.stages import CLIENT_ID, Identification, StageFailed
from healthcheck.probe.verdict import Verdict

# paramiko logs its failures ("Exception (client): Invalid packet blocking" and
# a traceback); with no handler, Python's last resort prints them on stderr.
# The probe reports the same reason in the stage's detail instead.
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False


class ReplaySocket:
    """A connected socket whose SSH identification exchange already happened.

    It hands paramiko the bytes the banner stage read, then the live stream,
    and swallows paramiko's copy of the client identification we already sent.
    """

    def __init__(self, sock: socket.socket, identification: Identification) -> None:
        self._sock = sock
        self._replay = identification.received
        self._sent_identification = f"{CLIENT_ID}\r\n".encode()

    def recv(self, size: int) -> bytes:
        if self._replay:
            chunk, self._replay = self._replay[:size], self._replay[size:]
            return chunk
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        if self._sent_identification:
            already_sent, self._sent_identification = self._sent_identification, b""
            if data == already_sent:
                return len(data)
        return self._sock.send(data)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._sock.close()

    @property
    def _closed(self) -> bool:
        # paramiko's Transport.stop_thread polls this private socket attribute.
        return self._sock.fileno() == -1


def authenticate(
    sock: socket.socket,
    identification: Identification,
    *,
    host: str,
    port: int,
    user: str,
    keys: Keys,
    known_hosts: KnownHosts,
    deadline: Deadline,
) -> tuple[paramiko.Transport, str]:
    """Key exchange, host key check and public-key login; returns the transport and a detail line."""
    transport = paramiko.Transport(ReplaySocket(sock, identification))  # type: ignore[arg-type]
    transport.local_version = CLIENT_ID
    options = transport.get_security_options()
    options.key_types = known_hosts.preferred_algorithms(host, port, tuple(options.key_types))

    # Closing on failure stops paramiko's thread now, not when the socket is closed.
    try:
        negotiated = threading.Event()
        transport.start_client(event=negotiated)
        if not negotiated.wait(deadline.remaining()):
            raise StageFailed(Verdict.HUNG, f"key exchange did not finish within {deadline.budget:.1f}s")
        if not transport.is_active():
            raise StageFailed(Verdict.SSH_ERROR, f"key exchange failed: {_reason(transport.get_exception())}")

        server_key = transport.get_remote_server_key()
        trust = known_hosts.check(host, port, server_key)

        if not keys.offered:
            why = "; ".join(keys.unusable) or "none found in ~/.ssh, none named by -i, and no agent holds one"
            raise StageFailed(Verdict.NO_KEY, f"no key could be offered: {why}")
        rejected: list[str] = []
        for key in keys.offered:
            transport.auth_timeout = deadline.remaining()
            try:
                transport.auth_publickey(user, key)
            except paramiko.BadAuthenticationType as error:
                allowed = ", ".join(error.allowed_types)
                raise StageFailed(Verdict.AUTH_FAILED, f"{user} may not use a key (allowed: {allowed})") from None
            except paramiko.AuthenticationException as error:
                if deadline.expired:
                    raise StageFailed(Verdict.HUNG, f"login did not finish within {deadline.budget:.1f}s") from None
                rejected.append(f"{key.get_name()} {key.fingerprint} ({error})")
                continue
            except (paramiko.SSHException, EOFError, OSError) as error:
                raise StageFailed(Verdict.SSH_ERROR, f"connection lost during login: {error}") from None
            return transport, f"{trust}; logged in as {user} with {key.get_name()} {key.fingerprint}"
        raise StageFailed(Verdict.AUTH_FAILED, f"{user}@ rejected " + "; ".join(rejected))
    except BaseException:
        transport.close()
        raise


def _reason(error: BaseException | None) -> str:
    """Why paramiko's transport stopped, in words even when its exception has none (an EOFError)."""
    text = str(error) if error is not None else ""
    if not text or isinstance(error, EOFError):
        return "the server closed the connection during key exchange"
    return text


def run_script(transport: paramiko.Transport, script: str, deadline: Deadline) -> str:
    """Feed `script` to `sh -s` and return its output, all before the deadline."""
    hang = StageFailed(
        Verdict.EXEC_HANG, f"logged in, but the vitals command did not finish within {deadline.budget:.1f}s"
    )
    try:
        channel = transport.open_session(timeout=deadline.remaining())
        channel.settimeout(deadline.remaining())
        # exec_command waits for the server's reply without a timeout; the
        # probe's watchdog closes the socket at the deadline to end that wait.
        channel.exec_command("/bin/sh -s")
        channel.sendall(script.encode())
        channel.shutdown_write()
        output = b""
        while chunk := _recv(channel, deadline):
            output += chunk
        # recv_exit_status() ignores timeouts; wait on its event instead.
        finished = channel.status_event.wait(deadline.remaining())
    except TimeoutError:
        raise hang from None
    except (paramiko.SSHException, EOFError, OSError) as error:
        if deadline.expired:
            raise hang from None
        raise StageFailed(Verdict.SSH_ERROR, f"session failed: {error}") from None
    # The watchdog ends a hung session by closing it, which also looks like an end.
    if not finished or deadline.expired:
        raise hang
    return output.decode("utf-8", errors="replace")


def _recv(channel: paramiko.Channel, deadline: Deadline) -> bytes:
    remaining = deadline.remaining()
    if remaining <= 0:
        raise TimeoutError
    channel.settimeout(remaining)
    return channel.recv(65536)
