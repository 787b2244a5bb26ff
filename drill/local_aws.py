"""The drill's stand-in for the stack's AWS side: moto's server on 127.0.0.1, seen by the guest through a guestfwd.

`LocalAws` starts moto's ThreadedMotoServer, creates what the stack would
(the results bucket holding the bundle, the guard's topic with an SQS inbox
that captures its emails) and reads back what the guest sent. The guest's
setup is the stack's own: `stack_user_data()` is infra.user_data's
cloud-config with the bucket, region, topic and bundle version of this run.

Two things differ from an instance, each for a stated reason:
- the guest has no IMDS, so /etc/trainguard/env also names the instance
  (TRAINGUARD_INSTANCE_ID, which the guard and the results push read first);
- Debian bookworm's AWS CLI is 2.9, and AWS_ENDPOINT_URL arrived only in AWS
  CLI 2.13 / 1.29 (aws-cli CHANGELOG, as cited in localstack/awscli-local#76),
  so the drill installs an `aws` in /usr/local/bin (before /usr/bin on every
  PATH, systemd's included) that adds --endpoint-url for moto and test keys.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from drill.qemu import GuestForward
from drill.seed import GuestFile
from healthcheck import contract
from infra import bundle
from infra.user_data import cloud_config

REGION = "eu-west-1"
BUCKET = "trainguard-drill-results"
TOPIC = "trainguard-drill-alerts"
# The instance the VM stands for (any id in EC2's form; moto's own when scenario 3 creates one).
INSTANCE_ID = "i-0d711100000000001"
# The address and port the guest calls moto at; qemu's guestfwd relays them to moto on host loopback.
GUEST_ADDRESS, GUEST_PORT = "10.0.2.100", 80
AWS_WRAPPER_PATH = "/usr/local/bin/aws"
TEST_KEY = "testing"  # moto accepts any credentials; the drill's are these


def aws_wrapper(endpoint: str) -> str:
    """The guest's `aws`: Debian's AWS CLI, pointed at moto (no AWS_ENDPOINT_URL before AWS CLI 2.13)."""
    return (
        "#!/bin/sh\n"
        "# The drill's AWS CLI: every call goes to moto on the drill's host, with moto's test keys.\n"
        f"export AWS_ACCESS_KEY_ID={TEST_KEY} AWS_SECRET_ACCESS_KEY={TEST_KEY}\n"
        f'exec /usr/bin/aws --endpoint-url {endpoint} "$@"\n'
    )


def guest_aws_files() -> dict[str, GuestFile]:
    return {AWS_WRAPPER_PATH: GuestFile(aws_wrapper(f"http://{GUEST_ADDRESS}:{GUEST_PORT}").encode(), "0755")}


def stack_user_data(bucket: str, region: str, bundle_version: str, topic_arn: str, instance_id: str) -> str:
    """The stack's user data for this VM: no data volume id (the VM's /data disk is mounted by its label)."""
    import yaml

    document = cloud_config(bucket, "", region, bundle_version, topic_arn)
    write_files: list[dict[str, str]] = document["write_files"]  # type: ignore[assignment]
    (env,) = write_files
    env["content"] += f"{contract.INSTANCE_ID_VARIABLE}={instance_id}\n"
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False, width=120)


@dataclass(frozen=True)
class Bundle:
    version: str
    key: str
    size: int


class LocalAws:
    """moto's server on 127.0.0.1 with the stack's bucket, bundle and topic; a context manager."""

    def __init__(self, region: str = REGION) -> None:
        self.region = region
        self.endpoint = ""
        self.topic_arn = ""
        self._server: Any = None
        self._queue_url = ""

    def __enter__(self) -> LocalAws:
        from moto.server import ThreadedMotoServer

        # moto's web server logs every request; the drill's output is its timeline.
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # and its traces of what moto lacks
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto's state lives in this process, shared by every server it starts: begin empty.
        reset = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(reset, timeout=30).close()
        self.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": self.region})
        sns, sqs = self.client("sns"), self.client("sqs")
        self.topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
        self._queue_url = sqs.create_queue(QueueName="drill-inbox")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])["Attributes"]
        sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=attributes["QueueArn"])
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.stop()

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def forward(self) -> GuestForward:
        return GuestForward("moto", guest_port=GUEST_PORT, host_port=self.port, guest_address=GUEST_ADDRESS)

    def environment(self) -> dict[str, str]:
        """The environment of a host process that calls moto (the pull): its endpoint, test keys and region,
        and nothing of the user's own AWS setup (a profile, an endpoint) that could lead it off loopback."""
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        return inherited | {
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": TEST_KEY,
            "AWS_SECRET_ACCESS_KEY": TEST_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(  # type: ignore[call-overload]  # the service is chosen at run time
            service,
            region_name=self.region,
            endpoint_url=self.endpoint,
            aws_access_key_id=TEST_KEY,
            aws_secret_access_key=TEST_KEY,
        )

    def publish_bundle(self) -> Bundle:
        """The stack's bundle, uploaded where the user data fetches it."""
        packed = bundle.archive(bundle.bundle_files())
        version = bundle.version(packed)
        key = bundle.object_key(version)
        self.client("s3").put_object(Bucket=BUCKET, Key=key, Body=packed)
        return Bundle(version, key, len(packed))

    def user_data(self, bundle: Bundle, instance_id: str = INSTANCE_ID) -> str:
        return stack_user_data(BUCKET, self.region, bundle.version, self.topic_arn, instance_id)

    def object(self, key: str) -> bytes | None:
        try:
            body: bytes = self.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except self.client("s3").exceptions.NoSuchKey:
            return None
        return body

    def emails(self, wait_s: float = 1.0, until_first: bool = False) -> list[tuple[str, str]]:
        """The topic's emails, as (subject, message), from its SQS inbox: those that come within wait_s, or
        (until_first) those there once the first has come."""
        sqs = self.client("sqs")
        found: list[tuple[str, str]] = []
        deadline = time.monotonic() + wait_s
        while True:
            received = sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in received.get("Messages", []):
                envelope = json.loads(message["Body"])
                found.append((envelope.get("Subject", ""), envelope.get("Message", "")))
                sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
            if not received.get("Messages") and (time.monotonic() >= deadline or (until_first and found)):
                return found
