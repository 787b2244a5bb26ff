"""What the user typed, turned into targets: `[user@]host[:port]`, ssh_config aliases, `i-...` ids.

Precedence follows OpenSSH: what the target itself says, then -l/-p, then
~/.ssh/config, then the defaults (the local user, or `ubuntu` for EC2
instances, the Deep Learning AMI's user; port 22).
"""

from __future__ import annotations

import getpass
import glob
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healthcheck.contract import is_instance_id
from healthcheck.errors import UsageError

if TYPE_CHECKING:
    import paramiko

EC2_DEFAULT_USER = "ubuntu"
MAX_INCLUDE_DEPTH = 16
MAX_HOST_NAME = 253
MAX_LABEL = 63
DEFAULT_SSH_CONFIG = "~/.ssh/config"


@dataclass(frozen=True)
class Target:
    """One host to probe, as the user named it; for an EC2 target, `host` is the instance id."""

    host: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    instance_id: str | None = None
    identity_agent: str | None = None  # ssh_config's IdentityAgent, as written; None: SSH_AUTH_SOCK

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
    # ASCII digits only: "²".isdigit() is true, and int("²") raises.
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    raise UsageError(f"bad port {text!r} in {where}: use a number from 1 to 65535")


def load_ssh_config(path: str | None) -> paramiko.SSHConfig | None:
    """The user's ssh_config with its Includes; a file named explicitly must exist, the default may not."""
    import paramiko

    chosen = Path(path or DEFAULT_SSH_CONFIG).expanduser()
    if not chosen.exists():
        if path is not None:
            raise UsageError(f"ssh config {path} does not exist: pass an existing file with -F")
        return None
    try:
        return paramiko.SSHConfig.from_text(_with_includes(chosen, depth=0))
    except (OSError, UnicodeDecodeError, paramiko.SSHException) as error:
        raise UsageError(f"bad ssh config {chosen}: {error}; fix the file or pass another with -F") from None


def _with_includes(path: Path, depth: int) -> str:
    """The file's text with each Include replaced by the files it names, as ssh_config(5) describes.

    paramiko does not read Include. Relative names are under ~/.ssh; globs
    expand in sorted order; a pattern that matches nothing is no error. Like
    ssh (READCONF_MAX_DEPTH), we stop at 16 levels, which also ends loops.
    """
    if depth > MAX_INCLUDE_DEPTH:
        raise UsageError(f"ssh config Include nested deeper than {MAX_INCLUDE_DEPTH} at {path}: is there a loop?")
    lines = []
    for line in path.read_text().splitlines():
        words = line.strip().replace("=", " ", 1).split()
        if not words or words[0].lower() != "include":
            lines.append(line)
            continue
        for pattern in words[1:]:
            expanded = Path(pattern).expanduser()
            if not expanded.is_absolute():
                expanded = Path("~/.ssh").expanduser() / expanded
            for included in sorted(glob.glob(str(expanded))):
                if Path(included).is_file():
                    lines.append(_with_includes(Path(included), depth + 1))
    return "\n".join(lines)


def check_host_name(host: str, where: str) -> None:
    """Reject at once a name no resolver would take, rather than wait for DNS to say so.

    RFC 1035 section 2.3.4 (and RFC 1123 section 2.1): a name is at most 253
    characters written out, each dot-separated label 1 to 63. Whitespace and
    control characters are never part of a name.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return
    fix = "check the host name"
    if any(char.isspace() or not char.isprintable() for char in host):
        raise UsageError(f"bad host name {host!r} in {where}: it contains whitespace or control characters; {fix}")
    if len(host.rstrip(".")) > MAX_HOST_NAME:
        raise UsageError(
            f"bad host name in {where}: {len(host)} characters, more than the {MAX_HOST_NAME} DNS allows; {fix}"
        )
    if any(not 1 <= len(label) <= MAX_LABEL for label in host.rstrip(".").split(".")):
        raise UsageError(
            f"bad host name {host!r} in {where}: each dot-separated part must be 1 to {MAX_LABEL} characters; {fix}"
        )


def parse_target(spec: str, defaults: TargetDefaults, ssh_config: paramiko.SSHConfig | None) -> Target:
    """A Target from one command-line argument."""
    user, host, port = _split_spec(spec)
    settings = _lookup(ssh_config, host)
    # "none" switches a proxy off (ssh_config(5)); paramiko reads ProxyCommand none as None.
    proxies = [settings.get(option) for option in ("proxyjump", "proxycommand")]
    if any(proxy is not None and str(proxy).lower() != "none" for proxy in proxies):
        raise UsageError(
            f"{host} uses ProxyJump/ProxyCommand in ssh config, which the probe does not support yet: "
            "probe the jump host itself, or run the probe from it"
        )
    is_instance = is_instance_id(host)
    config_port = settings.get("port")
    address = host if is_instance else settings.get("hostname", host)
    check_host_name(address, f"target {spec!r}")
    return Target(
        host=address,
        port=port or defaults.port or (parse_port(config_port, f"ssh config Port for {host}") if config_port else 22),
        user=user or defaults.user or settings.get("user") or (EC2_DEFAULT_USER if is_instance else getpass.getuser()),
        identity_files=defaults.identity_files or tuple(settings.get("identityfile", ())),
        instance_id=host if is_instance else None,
        identity_agent=settings.get("identityagent"),
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
