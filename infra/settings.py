"""The stack's settings: read from Pulumi config (namespace `trainguard`), validated before any resource.

KEYS is the one list of config keys: each key's type, default, bounds and the
fix a person is told, and its description. `validate` reads it; Pulumi.yaml's
config schema is `pulumi_config_schema()` of it (a test holds the file to it).

`validate` is pure: it takes the raw values Pulumi config holds (strings, or
lists for the list keys) and returns typed Settings, or raises ConfigError with
one line per bad key, each naming the key, the bad value and the fix.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from healthcheck.remediation.policy import DEFAULT_EVIDENCE_RETAIN_DAYS, MAX_EVIDENCE_RETAIN_DAYS
from infra.detection import MIN_HEARTBEAT_MINUTES, Detection, detection_problems

NAMESPACE = "trainguard"
SNAPSHOT_INTERVALS_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)  # what DLM's interval accepts
WORLD = ("0.0.0.0/0", "::/0")


class Kind(enum.Enum):
    """A config value's type, as Pulumi.yaml declares it."""

    LIST = "array"
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"


@dataclass(frozen=True)
class Key:
    """One config key: trainguard:<name>, read into Settings.<field>."""

    name: str
    field: str
    kind: Kind
    description: str
    fix: str  # what to do about a bad value
    required: bool = False
    pattern: str | None = None  # a string's (or each list item's) form, and
    problem: str = ""  # what a value not of that form is
    low: int | None = None
    high: int | None = None
    allowed: tuple[int, ...] = ()


KEYS: tuple[Key, ...] = (
    Key(
        "alertEmails",
        "alert_emails",
        Kind.LIST,
        "Addresses that get alarm emails (each must confirm the SNS subscription). Required.",
        "pulumi config set --path 'trainguard:alertEmails[0]' you@example.com",
        required=True,
        pattern=r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}",
        problem="not an email address",
    ),
    Key(
        "sshAllowedCidrs",
        "ssh_allowed_cidrs",
        Kind.LIST,
        "Address blocks allowed to reach SSH (port 22). 0.0.0.0/0 and ::/0 need allowWorldSsh. Required.",
        "pulumi config set --path 'trainguard:sshAllowedCidrs[0]' 203.0.113.7/32",
        required=True,
    ),
    Key(
        "allowWorldSsh",
        "allow_world_ssh",
        Kind.BOOLEAN,
        "Allow 0.0.0.0/0 or ::/0 in sshAllowedCidrs.",
        "pulumi config set trainguard:allowWorldSsh true (or false)",
    ),
    Key(
        "sshPublicKey",
        "ssh_public_key",
        Kind.STRING,
        "An OpenSSH public key to install for the ubuntu user. Set this or keyName.",
        "paste the one line of a .pub file",
        pattern=r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( .*)?",
        problem="not an OpenSSH public key",
    ),
    Key(
        "keyName",
        "key_name",
        Kind.STRING,
        "The name of an existing EC2 key pair. Set this or sshPublicKey.",
        "use the name shown by aws ec2 describe-key-pairs",
        pattern=r"[\x20-\x7e]{1,255}",
        problem="not a valid EC2 key pair name",
    ),
    Key(
        "instanceType",
        "instance_type",
        Kind.STRING,
        "EC2 instance type.",
        "use a type like g5.xlarge",
        pattern=r"[a-z][a-z0-9-]*\.[a-z0-9]+",
        problem="not an EC2 instance type",
    ),
    Key(
        "instanceCount",
        "instance_count",
        Kind.INTEGER,
        "How many identical instances (1 to 20); every per-instance resource is repeated.",
        "use 1 to 20 instances",
        low=1,
        high=20,
    ),
    Key(
        "amiId",
        "ami_id",
        Kind.STRING,
        "AMI to boot. Default, the current AWS Deep Learning AMI (Ubuntu 22.04) for the region.",
        "use an id like ami-0123456789abcdef0, or unset it for the Deep Learning AMI",
        pattern=r"ami-(?:[0-9a-f]{8}|[0-9a-f]{17})",
        problem="not an AMI id",
    ),
    Key(
        "rootVolumeGiB",
        "root_volume_gib",
        Kind.INTEGER,
        "Root volume size (encrypted gp3), GiB.",
        "use 30 to 16384 GiB",
        low=30,
        high=16384,
    ),
    Key(
        "dataVolumeGiB",
        "data_volume_gib",
        Kind.INTEGER,
        "/data volume size (encrypted gp3, kept when the instance goes), GiB.",
        "use 1 to 16384 GiB (gp3 limits)",
        low=1,
        high=16384,
    ),
    Key(
        "subnetId",
        "subnet_id",
        Kind.STRING,
        "Subnet for the instances, the SSH canary and its CloudWatch endpoint. Default, a default-VPC subnet in a "
        "zone that offers the instance type, the endpoint and Lambda in a VPC.",
        "use an id like subnet-0123456789abcdef0, or unset it for the default VPC",
        pattern=r"subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})",
        problem="not a subnet id",
    ),
    Key(
        "subnetReachesAws",
        "subnet_reaches_aws",
        Kind.BOOLEAN,
        "Set true when subnetId has no route to an internet or NAT gateway but still reaches S3, CloudWatch, SSM and "
        "SNS (VPC endpoints, a transit gateway, a proxy). Without it such a subnet is refused.",
        "pulumi config set trainguard:subnetReachesAws true (or false)",
    ),
    Key(
        "elasticIps",
        "elastic_ips",
        Kind.BOOLEAN,
        "An Elastic IP per instance, so its address survives a stop/start (attached, it costs what the automatic "
        "public address does).",
        "pulumi config set trainguard:elasticIps true (or false)",
    ),
    Key(
        "snapshotIntervalHours",
        "snapshot_interval_hours",
        Kind.INTEGER,
        "Hours between DLM snapshots of the data volumes; one of 1, 2, 3, 4, 6, 8, 12, 24.",
        "use one of 1, 2, 3, 4, 6, 8, 12, 24",
        low=1,
        high=24,
        allowed=SNAPSHOT_INTERVALS_HOURS,
        problem="not an interval DLM accepts",
    ),
    Key(
        "snapshotRetainCount",
        "snapshot_retain_count",
        Kind.INTEGER,
        "Snapshots kept per data volume (1 to 1000).",
        "use 1 to 1000",
        low=1,
        high=1000,
    ),
    Key(
        "evidenceRetainDays",
        "evidence_retain_days",
        Kind.INTEGER,
        f"Days a remediation's snapshots and post-mortem files are kept (1 to {MAX_EVIDENCE_RETAIN_DAYS}).",
        f"use 1 to {MAX_EVIDENCE_RETAIN_DAYS} days",
        low=1,
        high=MAX_EVIDENCE_RETAIN_DAYS,
    ),
    Key(
        "cpuAlarmPercent",
        "cpu_alarm_percent",
        Kind.INTEGER,
        "Email when CPU stays above this for 15 minutes.",
        "use a percentage, 1 to 100",
        low=1,
        high=100,
    ),
    Key(
        "memoryAlarmPercent",
        "memory_alarm_percent",
        Kind.INTEGER,
        "Email when memory use stays above this for 5 minutes.",
        "use a percentage, 1 to 99",
        low=1,
        high=99,
    ),
    Key(
        "diskAlarmPercent",
        "disk_alarm_percent",
        Kind.INTEGER,
        "Email when / or /data is fuller than this.",
        "use a percentage, 1 to 99",
        low=1,
        high=99,
    ),
    Key(
        "canaryIntervalSeconds",
        "canary_interval_seconds",
        Kind.INTEGER,
        "Seconds between SSH canary samples (10, 20, 30 or 60).",
        "use 10, 20, 30 or 60",
        low=10,
        high=60,
    ),
    Key(
        "sshUnresponsiveSeconds",
        "ssh_unresponsive_seconds",
        Kind.INTEGER,
        "Reboot when no SSH banner comes for this long (a multiple of the canary interval).",
        "use 20 to 3600 seconds",
        low=20,
        high=3600,
    ),
    Key(
        "heartbeatMissingMinutes",
        "heartbeat_missing_minutes",
        Kind.INTEGER,
        "Reboot when the CloudWatch agent has been silent this many minutes (3 to 60).",
        f"use {MIN_HEARTBEAT_MINUTES} to 60 minutes (fewer would reboot a host whose agent skipped a beat)",
        low=MIN_HEARTBEAT_MINUTES,
        high=60,
    ),
)


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
    subnet_reaches_aws: bool = False
    elastic_ips: bool = True
    snapshot_interval_hours: int = 1
    snapshot_retain_count: int = 24
    evidence_retain_days: int = DEFAULT_EVIDENCE_RETAIN_DAYS
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


# Each field's default; the list keys have none (they are required).
DEFAULTS: dict[str, Any] = {item.name: item.default for item in fields(Settings) if item.default is not MISSING}


class ConfigError(ValueError):
    """Every bad key at once, one line each: `trainguard:key = value: problem; fix`."""


Complaint = Callable[[str, Any, str, str], None]


def validate(raw: Mapping[str, Any]) -> Settings:
    """Typed settings from raw config values, or ConfigError naming every bad key."""
    errors: list[str] = []

    def bad(key: str, value: Any, problem: str, fix: str) -> None:
        errors.append(f"{NAMESPACE}:{key} = {value!r}: {problem}; {fix}")

    known = {key.name for key in KEYS}
    for name in sorted(set(raw) - known):
        bad(name, raw[name], "not a trainguard setting", "remove it or check its spelling (see Pulumi.yaml)")
    values = {key.field: _value(key, raw.get(key.name), bad) for key in KEYS}
    for cidr in values["ssh_allowed_cidrs"]:
        _check_cidr(cidr, values["allow_world_ssh"], bad)
    public_key, key_name = values["ssh_public_key"], values["key_name"]
    if public_key is None and key_name is None:
        bad(
            "sshPublicKey",
            None,
            "neither sshPublicKey nor keyName is set",
            'pulumi config set trainguard:sshPublicKey "$(cat ~/.ssh/id_ed25519.pub)", or set keyName',
        )
    elif public_key is not None and key_name is not None:
        bad("keyName", key_name, "both sshPublicKey and keyName are set", "keep one of them")
    settings = Settings(**values)
    if not errors:
        for key, value, problem, fix in detection_problems(settings.detection):
            bad(key, value, problem, fix)
    if errors:
        raise ConfigError("\n".join(errors))
    return settings


def _value(key: Key, value: Any, bad: Complaint) -> Any:
    """One key's typed value (its default where unset or bad, after saying why it is bad)."""
    default = DEFAULTS.get(key.field)  # None: optional, or required (a list)
    if key.kind is Kind.LIST:
        return tuple(_string_list(key, value, bad))
    if key.kind is Kind.BOOLEAN:
        return _boolean(key, value, default, bad)
    if key.kind is Kind.INTEGER:
        return _integer(key, value, default, bad)
    text = _optional(value)
    if text is not None and key.pattern is not None and not re.fullmatch(key.pattern, text):
        bad(key.name, text[:40], key.problem, key.fix)
    return text if text is not None else default


def _optional(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value).strip()


def _string_list(key: Key, value: Any, bad: Complaint) -> list[str]:
    if value is None:
        if key.required:
            bad(key.name, None, "required and not set", f"set it: {key.fix}")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        bad(key.name, value, "not a list of strings", f"set it as a list: {key.fix}")
        return []
    if not value and key.required:
        bad(key.name, value, "empty", f"add at least one: {key.fix}")
    items = [item.strip() for item in value]
    for item in items:
        if key.pattern is not None and not re.fullmatch(key.pattern, item):
            bad(key.name, item, key.problem, key.fix)
    return items


def _integer(key: Key, value: Any, default: Any, bad: Complaint) -> Any:
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        bad(key.name, value, "not a whole number", key.fix)
        return default
    if key.low is not None and key.high is not None and not key.low <= number <= key.high:
        bad(key.name, value, f"out of range {key.low}..{key.high}", key.fix)
        return default
    if key.allowed and number not in key.allowed:
        bad(key.name, number, key.problem, key.fix)
        return default
    return number


def _boolean(key: Key, value: Any, default: Any, bad: Complaint) -> Any:
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    bad(key.name, value, "not true or false", key.fix)
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


def pulumi_config_schema() -> dict[str, dict[str, Any]]:
    """Pulumi.yaml's `config:` section, as KEYS declares it: each key's type, default and description."""
    schema: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        entry: dict[str, Any] = {"type": key.kind.value}
        if key.kind is Kind.LIST:
            entry["items"] = {"type": "string"}
        if DEFAULTS.get(key.field) is not None:
            entry["default"] = DEFAULTS[key.field]
        entry["description"] = key.description
        schema[f"{NAMESPACE}:{key.name}"] = entry
    return schema
