"""Who we are (private keys) and whom we trust (known_hosts), loaded before any probe runs.

Loading happens up front so that a missing key or an unreadable known_hosts
file is bad input, reported in one line, rather than a failure per target.
"""

from __future__ import annotations

import base64
import binascii
import enum
import fcntl
import functools
import hashlib
import hmac
import os
import re
import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import paramiko
import paramiko.agent

from healthcheck.console import PROGRAM
from healthcheck.errors import UsageError
from healthcheck.probe.stages import StageFailed
from healthcheck.probe.targets import Target
from healthcheck.probe.verdict import Verdict

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
# An agent answers locally in milliseconds; one that does not within this long is treated as absent.
AGENT_TIMEOUT_S = 5.0

# known_hosts names RSA keys "ssh-rsa"; the algorithms that verify them are these.
_ALGORITHMS_FOR_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


class HostKeyPolicy(enum.Enum):
    STRICT = "strict"
    ACCEPT_NEW = "accept-new"


class EncryptedKey(UsageError):
    """A key that needs a passphrase, which a probe cannot ask for."""


@functools.cache
def load_identity(path: str) -> paramiko.PKey:
    """One private key, or a UsageError that says why it cannot be used."""
    expanded = Path(path).expanduser()
    try:
        return paramiko.PKey.from_path(expanded)
    except FileNotFoundError:
        raise UsageError(f"identity file {path} does not exist: pass an existing private key with -i") from None
    except PermissionError:
        raise UsageError(f"identity file {path} is not readable: fix its permissions or run as its owner") from None
    except IsADirectoryError:
        raise UsageError(f"identity file {path} is a directory: pass the private key file itself") from None
    except (paramiko.PasswordRequiredException, TypeError) as error:
        # cryptography reports OpenSSH-format keys with a passphrase as a TypeError.
        if isinstance(error, TypeError) and "password" not in str(error):
            raise UsageError(f"identity file {path} is not a usable private key ({error})") from None
        raise EncryptedKey(
            f"identity file {path} is encrypted: load it into ssh-agent (ssh-add {path}) and omit -i"
        ) from None
    except (paramiko.SSHException, paramiko.pkey.UnknownKeyType, ValueError) as error:
        raise UsageError(f"identity file {path} is not a usable private key ({error})") from None


@dataclass(frozen=True)
class Keys:
    """The keys a target is offered, and the keys that could not be (each with why), for a login that fails."""

    offered: tuple[paramiko.PKey, ...]
    unusable: tuple[str, ...] = ()


def keys_for(target: Target, explicit: bool, environ: Mapping[str, str] = os.environ) -> Keys:
    """The keys to offer a target, as ssh picks them.

    With -i (`explicit`), exactly those files, each of which must load. Otherwise
    the target's IdentityFile entries, or ssh's default ~/.ssh/id_* files, that
    exist and are not encrypted (an agent holds those), then the agent's keys:
    the agent the target's IdentityAgent names, else SSH_AUTH_SOCK's.
    """
    if explicit:
        return Keys(tuple(load_identity(path) for path in target.identity_files))
    keys: list[paramiko.PKey] = []
    unusable: list[str] = []
    for path in target.identity_files or DEFAULT_IDENTITIES:
        if not Path(path).expanduser().is_file():
            continue
        try:
            keys.append(load_identity(path))
        except EncryptedKey:
            unusable.append(f"{path} needs its passphrase")
    socket_path = agent_socket(target.identity_agent, environ)
    return Keys(tuple(keys) + (agent_keys(socket_path) if socket_path else ()), tuple(unusable))


def agent_socket(identity_agent: str | None, environ: Mapping[str, str]) -> str | None:
    """The agent's socket, as OpenSSH reads IdentityAgent (ssh_config(5)): `none` is no agent, `SSH_AUTH_SOCK` or
    `$NAME` a variable's value, anything else a path (with ~ and ${NAME} expanded); unset, SSH_AUTH_SOCK."""
    if identity_agent is None or identity_agent == "SSH_AUTH_SOCK":
        return environ.get("SSH_AUTH_SOCK") or None
    if identity_agent.lower() == "none":
        return None
    if identity_agent.startswith("$") and not identity_agent.startswith("${"):
        return environ.get(identity_agent[1:]) or None
    expanded = re.sub(r"\$\{(\w+)\}", lambda match: environ.get(match.group(1), ""), identity_agent)
    return str(Path(expanded).expanduser())


class _SocketAgent(paramiko.agent.AgentSSH):
    """An agent on a socket of our choosing (paramiko's Agent reads SSH_AUTH_SOCK only), shared by concurrent
    probes: one request at a time on its one connection."""

    def __init__(self, connection: socket.socket) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._connect(connection)  # type: ignore[attr-defined]  # not in the stubs

    def _send_message(self, msg: object) -> tuple[int, paramiko.Message]:
        with self._lock:
            return super()._send_message(msg)  # type: ignore[misc,no-any-return]  # not in the stubs


@functools.cache
def agent_keys(socket_path: str) -> tuple[paramiko.PKey, ...]:
    """The keys the agent at `socket_path` holds; none when nothing answers there (as ssh: no agent, no keys)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(AGENT_TIMEOUT_S)
    try:
        connection.connect(socket_path)
        return tuple(_SocketAgent(connection).get_keys())
    except (OSError, paramiko.SSHException):
        connection.close()
        return ()


def host_key_id(host: str, port: int) -> str:
    """The name a host's key is filed under in known_hosts, as OpenSSH writes it."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class HostKeyEntry:
    """One usable known_hosts line: its marker (None, @revoked or @cert-authority), host patterns and key."""

    marker: str | None
    patterns: tuple[str, ...]
    key: paramiko.PKey

    def matches(self, name: str) -> bool:
        """Whether the line names `name`, as OpenSSH matches it: hashes, wildcards, `!` negation."""
        matched = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _pattern_matches(pattern.removeprefix("!"), name):
                if negated:
                    return False
                matched = True
        return matched


def parse_known_hosts(text: bytes, source: str, warn: Callable[[str], None]) -> list[HostKeyEntry]:
    """The usable lines of a known_hosts file (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT).

    As OpenSSH does, a corrupt line (bad base64, a truncated key, a bad |1|
    hash) is skipped, and `warn` is told once; a key type the SSH library does
    not know is skipped quietly, since OpenSSH may well use it.
    """
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.decode("utf-8", errors="replace").strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = _parse_line(line)
        except _CorruptLine as corrupt:
            warn(f"{source}:{number}: {corrupt}; line ignored")
            continue
        if entry is not None:
            entries.append(entry)
    return entries


class _CorruptLine(Exception):
    pass


def _parse_line(line: str) -> HostKeyEntry | None:
    fields = line.split()
    marker = None
    if fields[0].startswith("@"):
        marker = fields.pop(0)
        if marker not in (REVOKED, CERT_AUTHORITY):
            raise _CorruptLine(f"unknown marker {marker!r}")
    if len(fields) < 3:
        raise _CorruptLine("expected host names, a key type and a key")
    hosts, key_type, key_b64 = fields[:3]
    patterns = tuple(hosts.split(","))
    for pattern in patterns:
        if pattern.startswith(HASHED) and _hashed(pattern) is None:
            raise _CorruptLine("bad hashed host name")
    try:
        blob = base64.b64decode(key_b64, validate=True)
    except binascii.Error:
        raise _CorruptLine(f"bad base64 in the {key_type} key") from None
    try:
        key = paramiko.PKey.from_type_string(key_type, blob)
    except paramiko.pkey.UnknownKeyType:
        return None
    except _MALFORMED_KEY as error:
        raise _CorruptLine(f"bad {key_type} key ({type(error).__name__})") from None
    # paramiko pads a truncated blob with zeros and loads a different key;
    # OpenSSH rejects a blob that does not encode exactly one key.
    if key.asbytes() != blob:
        raise _CorruptLine(f"truncated or malformed {key_type} key")
    return HostKeyEntry(marker, patterns, key)


# What paramiko and the libraries under it raise for a malformed key blob.
_MALFORMED_KEY = (paramiko.SSHException, ValueError, TypeError, IndexError, OSError, struct.error)


HASHED = "|1|"
REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


def _hashed(pattern: str) -> tuple[bytes, bytes] | None:
    """Salt and HMAC-SHA1 of a hashed host name (|1|salt|hash), or None if it is malformed."""
    parts = pattern[len(HASHED) :].split("|")
    if len(parts) != 2:
        return None
    try:
        salt, digest = (base64.b64decode(part, validate=True) for part in parts)
    except binascii.Error:
        return None
    return (salt, digest) if len(digest) == hashlib.sha1().digest_size else None


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith(HASHED):
        salt_digest = _hashed(pattern)
        if salt_digest is None:
            return False
        salt, digest = salt_digest
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    # Only * and ? are wildcards; "[host]:port" brackets are literal.
    expression = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(expression, name, flags=re.IGNORECASE) is not None


def _warn_on_stderr(message: str) -> None:
    print(f"{PROGRAM}: warning: {message}", file=sys.stderr)


class KnownHosts:
    """An OpenSSH known_hosts file, shared by concurrent probes and processes; new keys are appended."""

    def __init__(
        self,
        path: str,
        policy: HostKeyPolicy,
        *,
        create_directory: bool = False,
        warn: Callable[[str], None] = _warn_on_stderr,
    ) -> None:
        self.path = Path(path).expanduser()
        self.policy = policy
        self._create_directory = create_directory
        self._lock = threading.Lock()
        if not create_directory and not self.path.parent.is_dir():
            raise UsageError(
                f"known_hosts file {path}: directory {self.path.parent} does not exist: "
                "create it, or pass --known-hosts in an existing directory"
            )
        try:
            text = self.path.read_bytes() if self.path.exists() else b""
        except OSError as error:
            raise UsageError(
                f"known_hosts file {path} cannot be read ({error}): fix it or pass --known-hosts"
            ) from None
        self._entries = parse_known_hosts(text, str(self.path), warn)

    def _known(self, name: str, marker: str | None = None) -> list[paramiko.PKey]:
        return [entry.key for entry in self._entries if entry.marker == marker and entry.matches(name)]

    def preferred_algorithms(self, host: str, port: int, offered: tuple[str, ...]) -> tuple[str, ...]:
        """The client's host-key algorithms, those we already hold a key for first.

        Without this, a host known by its RSA key could show its ed25519 key and
        look changed; OpenSSH orders its algorithms the same way.
        """
        with self._lock:
            known_types = list(dict.fromkeys(key.get_name() for key in self._known(host_key_id(host, port))))
        first = [alg for key_type in known_types for alg in _ALGORITHMS_FOR_KEY_TYPE.get(key_type, (key_type,))]
        preferred = [alg for alg in first if alg in offered]
        return tuple(preferred + [alg for alg in offered if alg not in preferred])

    def check(self, host: str, port: int, key: paramiko.PKey) -> str:
        """Accept a known key, record a new one under accept-new, refuse anything else.

        Returns what happened, for the auth stage's detail.
        """
        name = host_key_id(host, port)
        with self._lock:
            if any(revoked == key for revoked in self._known(name, REVOKED)):
                raise StageFailed(
                    Verdict.HOSTKEY_REVOKED,
                    f"{name} offered {key.get_name()} {key.fingerprint}, which {self.path} marks @revoked",
                )
            known = self._known(name)
            if known:
                if any(stored == key for stored in known):
                    return f"host key {key.fingerprint} matches known_hosts"
                expected = ", ".join(sorted({stored.fingerprint for stored in known}))
                raise StageFailed(
                    Verdict.HOSTKEY_MISMATCH,
                    f"{name} offered {key.get_name()} {key.fingerprint}; known_hosts ({self.path}) holds {expected}",
                )
            if self.policy is HostKeyPolicy.STRICT:
                raise StageFailed(
                    Verdict.HOSTKEY_UNKNOWN,
                    f"{name} is not in {self.path} ({key.get_name()} {key.fingerprint})",
                )
            self._entries.append(HostKeyEntry(None, (name,), key))
            try:
                added = self._append(name, key)
            except OSError as error:
                # As OpenSSH does: trust it for this run and say it was not saved.
                return f"new host key {key.fingerprint} trusted, but not saved to {self.path}: {error}"
            if not added:
                return f"new host key {key.fingerprint} trusted; another process had just added it to {self.path}"
            return f"new host key {key.fingerprint} added to {self.path}"

    def _append(self, name: str, key: paramiko.PKey) -> bool:
        """Append `name key` unless the file already holds it; False if it did.

        An exclusive flock makes concurrent probes, in this process or others,
        take turns: each reads the file afresh under the lock, so none adds a
        line another just wrote, and a file without a final newline gets one first.
        """
        if self._create_directory:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.path.open("a+b") as known_hosts:
            fcntl.flock(known_hosts, fcntl.LOCK_EX)
            known_hosts.seek(0)
            text = known_hosts.read()
            current = parse_known_hosts(text, str(self.path), lambda _: None)
            if any(entry.marker is None and entry.matches(name) and entry.key == key for entry in current):
                return False
            separator = b"\n" if text and not text.endswith(b"\n") else b""
            known_hosts.write(separator + f"{name} {key.get_name()} {key.get_base64()}\n".encode())
            known_hosts.flush()
        return True
