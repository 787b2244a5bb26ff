"""Every config rule: a bad value fails with its key, the value and the fix named."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import ConfigError, Settings, validate

MINIMAL: dict[str, Any] = {
    "alertEmails": ["oncall@example.com"],
    "sshAllowedCidrs": ["203.0.113.0/24"],
    "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBc2yqvUGjCG9Jt2k7Ic1aRzOWkDt9CVtGPpZS2lbE2C me@laptop",
}


def test_defaults_fill_everything_not_given() -> None:
    settings = validate(MINIMAL)

    assert settings == Settings(
        alert_emails=("oncall@example.com",),
        ssh_allowed_cidrs=("203.0.113.0/24",),
        ssh_public_key=MINIMAL["sshPublicKey"],
        instance_type="g5.xlarge",
        instance_count=1,
        root_volume_gib=100,
        data_volume_gib=200,
        snapshot_interval_hours=1,
        snapshot_retain_count=24,
        cpu_alarm_percent=95,
        memory_alarm_percent=90,
        disk_alarm_percent=90,
    )


def test_values_arrive_as_strings_and_are_typed() -> None:
    settings = validate(
        MINIMAL
        | {
            "instanceCount": "3",
            "snapshotIntervalHours": "6",
            "allowWorldSsh": "true",
            "sshAllowedCidrs": ["0.0.0.0/0"],
        }
    )

    assert (settings.instance_count, settings.snapshot_interval_hours, settings.allow_world_ssh) == (3, 6, True)


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        ({"alertEmails": None}, "alertEmails", "required and not set"),
        ({"alertEmails": []}, "alertEmails", "empty"),
        ({"alertEmails": ["not-an-address"]}, "alertEmails", "'not-an-address': not an email address"),
        ({"alertEmails": [3]}, "alertEmails", "not a list of strings"),
        ({"sshAllowedCidrs": None}, "sshAllowedCidrs", "required and not set"),
        ({"sshAllowedCidrs": ["10.0.0.300/8"]}, "sshAllowedCidrs", "not a CIDR"),
        ({"sshAllowedCidrs": ["203.0.113.7"]}, "sshAllowedCidrs", "write 203.0.113.7/32"),
        ({"sshAllowedCidrs": ["203.0.113.7/24"]}, "sshAllowedCidrs", "write 203.0.113.0/24"),
        ({"sshAllowedCidrs": ["0.0.0.0/0"]}, "sshAllowedCidrs", "opens SSH to the whole internet"),
        ({"sshAllowedCidrs": ["::/0"]}, "sshAllowedCidrs", "allowWorldSsh true"),
        ({"sshPublicKey": None}, "sshPublicKey", "neither sshPublicKey nor keyName"),
        ({"keyName": "laptop"}, "keyName", "both sshPublicKey and keyName"),
        ({"sshPublicKey": "ssh-dss AAAA"}, "sshPublicKey", "not an OpenSSH public key"),
        ({"instanceType": "G5 XL"}, "instanceType", "not an EC2 instance type"),
        ({"instanceCount": "0"}, "instanceCount", "out of range 1..20"),
        ({"instanceCount": "two"}, "instanceCount", "not a whole number"),
        ({"amiId": "ubuntu"}, "amiId", "not an AMI id"),
        ({"rootVolumeGiB": "10"}, "rootVolumeGiB", "out of range"),
        ({"dataVolumeGiB": "20000"}, "dataVolumeGiB", "out of range"),
        ({"subnetId": "default"}, "subnetId", "not a subnet id"),
        ({"snapshotIntervalHours": "5"}, "snapshotIntervalHours", "use one of 1, 2, 3, 4, 6, 8, 12, 24"),
        ({"snapshotIntervalHours": "48"}, "snapshotIntervalHours", "out of range"),
        ({"snapshotRetainCount": "0"}, "snapshotRetainCount", "out of range"),
        ({"cpuAlarmPercent": "101"}, "cpuAlarmPercent", "out of range"),
        ({"memoryAlarmPercent": "100"}, "memoryAlarmPercent", "out of range"),
        ({"diskAlarmPercent": "-1"}, "diskAlarmPercent", "out of range"),
        ({"allowWorldSsh": "yes"}, "allowWorldSsh", "not true or false"),
        ({"alarmEmail": "x@example.com"}, "alarmEmail", "not a trainguard setting"),
    ],
)
def test_each_bad_value_names_its_key_the_value_and_a_fix(change: dict[str, Any], key: str, fragment: str) -> None:
    raw = {k: v for k, v in (MINIMAL | change).items() if v is not None}

    with pytest.raises(ConfigError) as caught:
        validate(raw)

    (line,) = str(caught.value).splitlines()
    assert line.startswith(f"trainguard:{key} = ")
    assert fragment in line
    assert "; " in line  # the fix follows the problem


def test_every_bad_key_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        validate({"instanceCount": "0"})

    keys = {line.split(" = ")[0] for line in str(caught.value).splitlines()}
    assert keys == {
        "trainguard:alertEmails",
        "trainguard:sshAllowedCidrs",
        "trainguard:sshPublicKey",
        "trainguard:instanceCount",
    }
