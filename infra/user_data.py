"""The instance's user data: a short cloud-init bootstrap, built by pure functions.

It writes what differs per instance (/etc/trainguard/env) and, once, at first
boot, fetches and applies the on-instance bundle (infra.bundle), which holds
every script, unit and config. The stack never changes the user data of a
running instance (the provider would stop and start it): later changes reach
running instances as new bundle versions, through State Manager.
"""

from __future__ import annotations

import yaml

from healthcheck import contract
from infra.aws_rules import MAX_USER_DATA_BYTES
from infra.bundle import fetch_and_apply


def environment(bucket: str, data_volume_id: str, region: str, topic_arn: str) -> str:
    """/etc/trainguard/env: the per-instance values the scripts read (the topic is the guard's, for emails)."""
    values = {
        contract.BUCKET_VARIABLE: bucket,
        contract.DATA_VOLUME_ID_VARIABLE: data_volume_id,
        contract.REGION_VARIABLE: region,
        contract.TOPIC_ARN_VARIABLE: topic_arn,
    }
    return "".join(f"{name}={value}\n" for name, value in values.items())


def cloud_config(
    bucket: str, data_volume_id: str, region: str, bundle_version: str, topic_arn: str
) -> dict[str, object]:
    """The cloud-config document: the environment file, then the bundle's first apply."""
    return {
        "write_files": [
            {
                "path": contract.ENV_FILE,
                "permissions": "0644",
                "content": environment(bucket, data_volume_id, region, topic_arn),
            }
        ],
        "runcmd": [["sh", "-c", fetch_and_apply(bundle_version)]],
    }


class _ReadableDumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks, so the user data reads like the files it carries."""


def _literal_blocks(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_ReadableDumper.add_representer(str, _literal_blocks)


def user_data(bucket: str, data_volume_id: str, region: str, bundle_version: str, topic_arn: str) -> str:
    """The user data string for one instance."""
    document = cloud_config(bucket, data_volume_id, region, bundle_version, topic_arn)
    text = "#cloud-config\n" + yaml.dump(document, Dumper=_ReadableDumper, sort_keys=False, width=120)
    if len(text.encode()) > MAX_USER_DATA_BYTES:
        raise ValueError(f"user data is {len(text.encode())} bytes; EC2 accepts at most {MAX_USER_DATA_BYTES}")
    return text
