"""What the user typed, turned into targets: `[user@]host[:port]`, ssh_config aliases, `i-...` ids.

Precedence follows OpenSSH: what the target itself says, then -l/-p, then
~/.ssh/config, then the defaults (the local user, or `ubuntu` for EC2
instances, the Deep Learning AMI's user; port 22).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healthcheck.errors import UsageError
from healthcheck.probe.ec2 import INSTANCE_ID

if TYPE_CHECKING:
    import paramiko

EC2_DEFAULT_USER = "ubuntu"
DEFAULT_SSH_CONFIG = "~/.ssh/config"


@dataclass(frozen=True)
class Target:
    """One host to probe, as the user named it; for an EC2 target, `host` is the instance id."""

    host: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    instance_id: str | None = None

    @property
    def label(self) -> str:
        """`user@host:port`, with IPv6 literals in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


@dataclass(frozen=True)
class TargetDefaults:
    """What -l, -p and -i say, applied where the target itself is silent."""

    user: str | None = None
    port: int | None = None
    identity_files: tuple[str, ...] = ()


def parse_port(text: str, where: str) -> int:
    """A TCP port number, or a UsageError naming where the bad value came from."""
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    raise UsageError(f"bad port {text!r} in {where}: use a number from 1 to 65535")


def load_ssh_config(path: str | None) -> paramiko.SSHConfig | None:
    """The user's ssh_config; a file named explicitly must exist, the default may not."""
    import paramiko

    chosen = Path(path or DEFAULT_SSH_CONFIG).expanduser()
    if not chosen.exists():
        if path is not None:
            raise UsageError(f"ssh config {path} does not exist: pass an existing file with -F")
        return None
    try:
        return paramiko.SSHConfig.from_path(str(chosen))
    except (OSError, UnicodeDecodeError, paramiko.SSHException) as error:
        raise UsageError(f"bad ssh config {chosen}: {error}; fix the file or pass another with -F") from None


def parse_target(spec: str, defaults: TargetDefaults, ssh_config: paramiko.SSHConfig | None) -> Target:
    """A Target from one command-line argument."""
    user, host, port = _split_spec(spec)
    settings = _lookup(ssh_config, host)
    if "proxyjump" in settings or "proxycommand" in settings:
        raise UsageError(
            f"{host} uses ProxyJump/ProxyCommand in ssh config, which the probe does not support yet: "
            "probe the jump host itself, or run the probe from it"
        )
    is_instance = INSTANCE_ID.match(host) is not None
    config_port = settings.get("port")
    return Target(
        host=host if is_instance else settings.get("hostname", host),
        port=port or defaults.port or (parse_port(config_port, f"ssh config Port for {host}") if config_port else 22),
        user=user or defaults.user or settings.get("user") or (EC2_DEFAULT_USER if is_instance else getpass.getuser()),
        identity_files=defaults.identity_files or tuple(settings.get("identityfile", ())),
        instance_id=host if is_instance else None,
    )


def _split_spec(spec: str) -> tuple[str | None, str, int | None]:
    user, at, rest = spec.rpartition("@")
    if at and not user:
        raise UsageError(f"empty user name in {spec!r}: write user@host or drop the @")
    port_text = None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise UsageError(f"bad target {spec!r}: write an IPv6 address as [addr] or [addr]:port")
        port_text = after[1:] if after else None
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host = rest
    if not host:
        raise UsageError(f"no host in target {spec!r}: write [user@]host[:port], an ssh config alias or i-...")
    port = parse_port(port_text, f"target {spec!r}") if port_text is not None else None
    return user or None, host, port


def _lookup(ssh_config: paramiko.SSHConfig | None, host: str) -> dict[str, Any]:
    if ssh_config is None:
        return {}
    import paramiko

    try:
        return dict(ssh_config.lookup(host))
    except paramiko.SSHException as error:
        raise UsageError(f"bad ssh config for {host}: {error}; fix the file or pass another with -F") from None
