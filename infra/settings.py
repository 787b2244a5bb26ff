"""The stack's settings: read from Pulumi config (namespace `trainguard`), validated before any resource.

`validate` is pure: it takes the raw values Pulumi config holds (strings, or
lists for the list keys) and returns typed Settings, or raises ConfigError with
one line per bad key, each naming the key, the bad value and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from infra.detection import MIN_HEARTBEAT_MINUTES, Detection, detection_problems

NAMESPACE = "trainguard"
SNAPSHOT_INTERVALS_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)  # what DLM's interval accepts
WORLD = ("0.0.0.0/0", "::/0")
LIST_KEYS = ("alertEmails", "sshAllowedCidrs")
SCALAR_KEYS = (
    "sshPublicKey",
    "keyName",
    "instanceType",
    "instanceCount",
    "amiId",
    "rootVolumeGiB",
    "dataVolumeGiB",
    "subnetId",
    "snapshotIntervalHours",
    "snapshotRetainCount",
    "cpuAlarmPercent",
    "memoryAlarmPercent",
    "diskAlarmPercent",
    "allowWorldSsh",
    "canaryIntervalSeconds",
    "sshUnresponsiveSeconds",
    "heartbeatMissingMinutes",
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( .*)?$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_AMI = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_SUBNET = re.compile(r"^subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_KEY_NAME = re.compile(r"^[\x20-\x7e]{1,255}$")


@dataclass(frozen=True)
class Settings:
    alert_emails: tuple[str, ...]
    ssh_allowed_cidrs: tuple[str, ...]
    ssh_public_key: str | None = None
    key_name: str | None = None
    instance_type: str = "g5.xlarge"
    instance_count: int = 1
    ami_id: str | None = None
    root_volume_gib: int = 100
    data_volume_gib: int = 200
    subnet_id: str | None = None
    snapshot_interval_hours: int = 1
    snapshot_retain_count: int = 24
    cpu_alarm_percent: int = 95
    memory_alarm_percent: int = 90
    disk_alarm_percent: int = 90
    allow_world_ssh: bool = False
    canary_interval_seconds: int = 10
    ssh_unresponsive_seconds: int = 60
    heartbeat_missing_minutes: int = 3

    @property
    def detection(self) -> Detection:
        return Detection(self.canary_interval_seconds, self.ssh_unresponsive_seconds, self.heartbeat_missing_minutes)


class ConfigError(ValueError):
    """Every bad key at once, one line each: `trainguard:key = value: problem; fix`."""


def validate(raw: Mapping[str, Any]) -> Settings:
    """Typed settings from raw config values, or ConfigError naming every bad key."""
    errors: list[str] = []

    def bad(key: str, value: Any, problem: str, fix: str) -> None:
        errors.append(f"{NAMESPACE}:{key} = {value!r}: {problem}; {fix}")

    defaults = Settings(alert_emails=(), ssh_allowed_cidrs=())
    unknown = sorted(set(raw) - set(LIST_KEYS) - set(SCALAR_KEYS))
    for key in unknown:
        bad(key, raw[key], "not a trainguard setting", "remove it or check its spelling (see Pulumi.yaml)")

    emails = _string_list(
        raw, "alertEmails", bad, "pulumi config set --path 'trainguard:alertEmails[0]' you@example.com"
    )
    for email in emails:
        if not _EMAIL.match(email):
            bad("alertEmails", email, "not an email address", "give addresses like oncall@example.com")

    allow_world = _boolean(raw, "allowWorldSsh", defaults.allow_world_ssh, bad)
    cidrs = _string_list(
        raw, "sshAllowedCidrs", bad, "pulumi config set --path 'trainguard:sshAllowedCidrs[0]' 203.0.113.7/32"
    )
    for cidr in cidrs:
        _check_cidr(cidr, allow_world, bad)

    public_key = _optional(raw, "sshPublicKey")
    key_name = _optional(raw, "keyName")
    if public_key is None and key_name is None:
        bad(
            "sshPublicKey",
            None,
            "neither sshPublicKey nor keyName is set",
            'pulumi config set trainguard:sshPublicKey "$(cat ~/.ssh/id_ed25519.pub)", or set keyName',
        )
    elif public_key is not None and key_name is not None:
        bad("keyName", key_name, "both sshPublicKey and keyName are set", "keep one of them")
    if public_key is not None and not _PUBLIC_KEY.match(public_key):
        bad("sshPublicKey", public_key[:40], "not an OpenSSH public key", "paste the one line of a .pub file")
    if key_name is not None and not _KEY_NAME.match(key_name):
        bad("keyName", key_name, "not a valid EC2 key pair name", "use the name shown by aws ec2 describe-key-pairs")

    instance_type = _optional(raw, "instanceType") or defaults.instance_type
    if not _INSTANCE_TYPE.match(instance_type):
        bad("instanceType", instance_type, "not an EC2 instance type", "use a type like g5.xlarge")
    ami_id = _optional(raw, "amiId")
    if ami_id is not None and not _AMI.match(ami_id):
        bad(
            "amiId",
            ami_id,
            "not an AMI id",
            "use an id like ami-0123456789abcdef0, or unset it for the Deep Learning AMI",
        )
    subnet_id = _optional(raw, "subnetId")
    if subnet_id is not None and not _SUBNET.match(subnet_id):
        bad(
            "subnetId",
            subnet_id,
            "not a subnet id",
            "use an id like subnet-0123456789abcdef0, or unset it for the default VPC",
        )

    def integer(key: str, default: int, low: int, high: int, fix: str) -> int:
        return _integer(raw, key, default=default, low=low, high=high, fix=fix, bad=bad)

    interval = integer(
        "snapshotIntervalHours", defaults.snapshot_interval_hours, 1, 24, "use one of 1, 2, 3, 4, 6, 8, 12, 24"
    )
    if interval not in SNAPSHOT_INTERVALS_HOURS:
        bad("snapshotIntervalHours", interval, "not an interval DLM accepts", "use one of 1, 2, 3, 4, 6, 8, 12, 24")

    settings = Settings(
        alert_emails=tuple(emails),
        ssh_allowed_cidrs=tuple(cidrs),
        ssh_public_key=public_key,
        key_name=key_name,
        instance_type=instance_type,
        instance_count=integer("instanceCount", defaults.instance_count, 1, 20, "use 1 to 20 instances"),
        ami_id=ami_id,
        root_volume_gib=integer("rootVolumeGiB", defaults.root_volume_gib, 30, 16384, "use 30 to 16384 GiB"),
        data_volume_gib=integer("dataVolumeGiB", defaults.data_volume_gib, 1, 16384, "use 1 to 16384 GiB (gp3 limits)"),
        subnet_id=subnet_id,
        snapshot_interval_hours=interval,
        snapshot_retain_count=integer("snapshotRetainCount", defaults.snapshot_retain_count, 1, 1000, "use 1 to 1000"),
        cpu_alarm_percent=integer("cpuAlarmPercent", defaults.cpu_alarm_percent, 1, 100, "use a percentage, 1 to 100"),
        memory_alarm_percent=integer(
            "memoryAlarmPercent", defaults.memory_alarm_percent, 1, 99, "use a percentage, 1 to 99"
        ),
        disk_alarm_percent=integer("diskAlarmPercent", defaults.disk_alarm_percent, 1, 99, "use a percentage, 1 to 99"),
        allow_world_ssh=allow_world,
        canary_interval_seconds=integer(
            "canaryIntervalSeconds", defaults.canary_interval_seconds, 10, 60, "use 10, 20, 30 or 60"
        ),
        ssh_unresponsive_seconds=integer(
            "sshUnresponsiveSeconds", defaults.ssh_unresponsive_seconds, 20, 3600, "use 20 to 3600 seconds"
        ),
        heartbeat_missing_minutes=integer(
            "heartbeatMissingMinutes",
            defaults.heartbeat_missing_minutes,
            MIN_HEARTBEAT_MINUTES,
            60,
            f"use {MIN_HEARTBEAT_MINUTES} to 60 minutes (fewer would reboot a host whose agent skipped a beat)",
        ),
    )
    if not errors:
        for key, value, problem, fix in detection_problems(settings.detection):
            bad(key, value, problem, fix)
    if errors:
        raise ConfigError("\n".join(errors))
    return settings


Complaint = Callable[[str, Any, str, str], None]


def _optional(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value).strip()


def _string_list(raw: Mapping[str, Any], key: str, bad: Complaint, how: str) -> list[str]:
    value = raw.get(key)
    if value is None:
        bad(key, None, "required and not set", f"set it: {how}")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        bad(key, value, "not a list of strings", f"set it as a list: {how}")
        return []
    if not value:
        bad(key, value, "empty", f"add at least one: {how}")
    return [item.strip() for item in value]


def _integer(raw: Mapping[str, Any], key: str, *, default: int, low: int, high: int, fix: str, bad: Complaint) -> int:
    value = raw.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        bad(key, value, "not a whole number", fix)
        return default
    if not low <= number <= high:
        bad(key, value, f"out of range {low}..{high}", fix)
        return default
    return number


def _boolean(raw: Mapping[str, Any], key: str, default: bool, bad: Complaint) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    bad(key, value, "not true or false", f"pulumi config set trainguard:{key} true (or false)")
    return default


def _check_cidr(cidr: str, allow_world: bool, bad: Complaint) -> None:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        bad("sshAllowedCidrs", cidr, "not a CIDR", "write an address block like 203.0.113.7/32")
        return
    if "/" not in cidr or str(network) != cidr:
        bad("sshAllowedCidrs", cidr, "not a network address with a prefix", f"write {network}")
    elif cidr in WORLD and not allow_world:
        bad(
            "sshAllowedCidrs",
            cidr,
            "opens SSH to the whole internet",
            "list your own address blocks, or set trainguard:allowWorldSsh true if you really mean it",
        )
