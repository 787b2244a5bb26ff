"""Who we are (private keys) and whom we trust (known_hosts), loaded before any probe runs.

Loading happens up front so that a missing key or an unreadable known_hosts
file is bad input, reported in one line, rather than a failure per target.
"""

from __future__ import annotations

import enum
import functools
import os
import threading
from pathlib import Path

import paramiko

from healthcheck.errors import UsageError
from healthcheck.probe.stages import StageFailed
from healthcheck.probe.targets import Target
from healthcheck.probe.verdict import Verdict

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")

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


def keys_for(target: Target, explicit: bool) -> tuple[paramiko.PKey, ...]:
    """The keys to offer a target, as ssh picks them.

    With -i (`explicit`), exactly those files, each of which must load. Otherwise
    the target's IdentityFile entries, or ssh's default ~/.ssh/id_* files, that
    exist and are not encrypted (ssh-agent holds those), then the agent's keys.
    """
    if explicit:
        return tuple(load_identity(path) for path in target.identity_files)
    keys = []
    for path in target.identity_files or DEFAULT_IDENTITIES:
        if not Path(path).expanduser().is_file():
            continue
        try:
            keys.append(load_identity(path))
        except EncryptedKey:
            continue
    return tuple(keys) + _agent_keys()


@functools.cache
def _agent_keys() -> tuple[paramiko.PKey, ...]:
    if not os.environ.get("SSH_AUTH_SOCK"):
        return ()
    return tuple(paramiko.Agent().get_keys())


def host_key_id(host: str, port: int) -> str:
    """The name a host's key is filed under in known_hosts, as OpenSSH writes it."""
    return host if port == 22 else f"[{host}]:{port}"


class KnownHosts:
    """An OpenSSH known_hosts file, shared by concurrent probes; new keys are appended."""

    def __init__(self, path: str, policy: HostKeyPolicy) -> None:
        self.path = Path(path).expanduser()
        self.policy = policy
        self._keys = paramiko.HostKeys()
        self._lock = threading.Lock()
        try:
            if self.path.exists():
                self._keys.load(str(self.path))
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(
                f"known_hosts file {path} cannot be read ({error}): fix it or pass --known-hosts"
            ) from None

    def preferred_algorithms(self, host: str, port: int, offered: tuple[str, ...]) -> tuple[str, ...]:
        """The client's host-key algorithms, those we already hold a key for first.

        Without this, a host known by its RSA key could show its ed25519 key and
        look changed; OpenSSH orders its algorithms the same way.
        """
        with self._lock:
            known = self._keys.lookup(host_key_id(host, port))
            known_types = list(known.keys()) if known else []
        first = [alg for key_type in known_types for alg in _ALGORITHMS_FOR_KEY_TYPE.get(key_type, (key_type,))]
        preferred = [alg for alg in first if alg in offered]
        return tuple(preferred + [alg for alg in offered if alg not in preferred])

    def check(self, host: str, port: int, key: paramiko.PKey) -> str:
        """Accept a known key, record a new one under accept-new, refuse anything else.

        Returns what happened, for the auth stage's detail.
        """
        name = host_key_id(host, port)
        with self._lock:
            known = self._keys.lookup(name)
            if known:
                if known.get(key.get_name()) == key:
                    return f"host key {key.fingerprint} matches known_hosts"
                expected = ", ".join(sorted(stored.fingerprint for stored in known.values()))
                raise StageFailed(
                    Verdict.HOSTKEY_MISMATCH,
                    f"{name} offered {key.get_name()} {key.fingerprint}; known_hosts ({self.path}) holds {expected}",
                )
            if self.policy is HostKeyPolicy.STRICT:
                raise StageFailed(
                    Verdict.HOSTKEY_UNKNOWN,
                    f"{name} is not in {self.path} ({key.get_name()} {key.fingerprint})",
                )
            self._keys.add(name, key.get_name(), key)
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with self.path.open("a") as known_hosts:
                    known_hosts.write(f"{name} {key.get_name()} {key.get_base64()}\n")
            except OSError as error:
                # As OpenSSH does: trust it for this run and say it was not saved.
                return f"new host key {key.fingerprint} trusted, but not saved to {self.path}: {error}"
            return f"new host key {key.fingerprint} added to {self.path}"
