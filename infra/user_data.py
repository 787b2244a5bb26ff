"""The instance's cloud-init user data, built by pure functions from the readable files in userdata/.

The scripts and units are static files (shellcheck checks them as they are);
what differs per instance travels in /etc/trainguard/env.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from infra.agent_config import DATA_MOUNT, agent_config

USERDATA_DIR = Path(__file__).parent / "userdata"
SCRIPTS = ("trainguard-imds", "trainguard-mount-data", "trainguard-install-agent", "trainguard-push-results")
UNITS = ("trainguard-push-results.service", "trainguard-push-results.timer")
AGENT_CONFIG_DIR = "/opt/aws/amazon-cloudwatch-agent/etc"
# EC2 refuses user data over 16 KiB.
MAX_USER_DATA_BYTES = 16384


def environment(bucket: str, data_volume_id: str) -> str:
    """/etc/trainguard/env: the per-instance values the scripts read."""
    return (
        f"TRAINGUARD_BUCKET={bucket}\nTRAINGUARD_DATA_VOLUME_ID={data_volume_id}\nTRAINGUARD_DATA_MOUNT={DATA_MOUNT}\n"
    )


def cloud_config(bucket: str, data_volume_id: str) -> dict[str, object]:
    """The cloud-config document: files to write, then the commands that use them."""
    files: list[dict[str, str]] = [
        {"path": "/etc/trainguard/env", "permissions": "0644", "content": environment(bucket, data_volume_id)}
    ]
    files += [{"path": f"/usr/local/sbin/{name}", "permissions": "0755", "content": _read(name)} for name in SCRIPTS]
    files += [{"path": f"/etc/systemd/system/{name}", "permissions": "0644", "content": _read(name)} for name in UNITS]
    files += [
        {
            "path": f"{AGENT_CONFIG_DIR}/trainguard-{variant}.json",
            "permissions": "0644",
            "content": json.dumps(agent_config(gpu=variant == "gpu"), indent=1) + "\n",
        }
        for variant in ("base", "gpu")
    ]
    return {
        "write_files": files,
        "runcmd": [
            ["/usr/local/sbin/trainguard-mount-data"],
            ["/usr/local/sbin/trainguard-install-agent"],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "trainguard-push-results.timer"],
        ],
    }


class _ReadableDumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks, so the user data reads like the files it carries."""


def _literal_blocks(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_ReadableDumper.add_representer(str, _literal_blocks)


def user_data(bucket: str, data_volume_id: str) -> str:
    """The user data string for one instance."""
    document = yaml.dump(cloud_config(bucket, data_volume_id), Dumper=_ReadableDumper, sort_keys=False, width=120)
    text = "#cloud-config\n" + document
    if len(text.encode()) > MAX_USER_DATA_BYTES:
        raise ValueError(f"user data is {len(text.encode())} bytes; EC2 accepts at most {MAX_USER_DATA_BYTES}")
    return text


def _read(name: str) -> str:
    return (USERDATA_DIR / name).read_text()
