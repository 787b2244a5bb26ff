"""The auto-reboot function reboots in time even when every evidence call hangs until its client gives up.

Real clock, real sockets: the function runs as Lambda would run it (its own clients, FUNCTION_LIMITS, a context
whose remaining time runs down with the clock) against moto's server, behind a loopback proxy that accepts the
console-output, snapshot, post-mortem and screenshot requests and never answers them, as a slow endpoint would.
Before, the evidence came first whatever it cost: with boto3's timeouts a hang cost 90 s a call, the reboot came
after the function's timeout, and Lambda's retry found the claim held and skipped: a frozen host stayed frozen.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from healthcheck import contract
from healthcheck.lambdas.auto_reboot import (
    CALLS_BEFORE_EVIDENCE,
    FUNCTION_LIMITS,
    TIMEOUT_S,
    calls_fit,
    handler,
)
from healthcheck.remediation.actions import RESERVED_CALLS, worst_call_s
from tests.healthcheck.lambdas.test_auto_reboot import lambda_action

REGION = "eu-west-1"
EVIDENCE = frozenset({"GetConsoleOutput", "CreateSnapshots", "GetConsoleScreenshot", "PutObject"})
# Requests a stalled handler holds before it lets go (the test's end releases them sooner).
STALL_LIMIT_S = 300


def operation(method: str, path: str, headers: Any, body: bytes) -> str:
    """The AWS operation a request is: EC2's query Action, a JSON protocol's target, or S3's PUT of an object."""
    if target := headers.get("X-Amz-Target"):
        return str(target).rsplit(".", 1)[-1]
    action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action")
    if action:
        return action[0]
    if method == "PUT" and path.count("/") >= 2:
        return "PutObject"
    return f"{method} {path}"


@dataclass
class StallingProxy:
    """A loopback HTTP proxy in front of moto's server: relays every request, but those it stalls it reads and
    never answers; notes when each operation passed."""

    upstream: str
    stalls: frozenset[str]
    passed: dict[str, list[float]] = field(default_factory=dict)
    stalled: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def start(self) -> ThreadingHTTPServer:
        proxy = self
        target = urllib.parse.urlsplit(self.upstream)

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = operation(self.command, self.path, self.headers, body)
                if name in proxy.stalls:
                    proxy.stalled.append(name)
                    proxy.release.wait(STALL_LIMIT_S)
                    self.close_connection = True
                    return
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                payload = answer.read()
                proxy.passed.setdefault(name, []).append(time.monotonic())
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "content-length", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return server


@pytest.fixture
def stalling(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[StallingProxy]:
    """Every AWS client the function makes goes through the proxy, which stalls the evidence calls."""
    proxy = StallingProxy(moto_server, EVIDENCE)
    server = proxy.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_REGION", REGION)
    try:
        yield proxy
    finally:
        proxy.release.set()
        server.shutdown()
        server.server_close()


@dataclass
class LambdaContext:
    """What Lambda gives the handler: its request id, its ARN, and the time left, running down with the clock."""

    seconds: float
    aws_request_id: str = "8f5c3c1e-request"
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:trainguard-auto-reboot"
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int((self.seconds - (time.monotonic() - self.started)) * 1000)


def managed_instance(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Callable[[], Any]]:
    """A managed instance with a data volume, the bucket and topic, made on moto directly (not through the
    proxy); the function's settings point at them. Returns the instance id and an EC2 client."""
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_server)
    instance = ec2.run_instances(
        ImageId="ami-0123456789abcdef0",
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "trainguard:managed", "Value": "true"}]}],
    )["Instances"][0]
    volume = ec2.create_volume(Size=200, AvailabilityZone=instance["Placement"]["AvailabilityZone"])
    ec2.attach_volume(VolumeId=volume["VolumeId"], InstanceId=instance["InstanceId"], Device="/dev/sdf")
    boto3.client("s3", region_name=REGION, endpoint_url=moto_server).create_bucket(
        Bucket="results", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    topic = boto3.client("sns", region_name=REGION, endpoint_url=moto_server).create_topic(Name="alerts")
    monkeypatch.setenv(contract.TOPIC_ARN_VARIABLE, topic["TopicArn"])
    monkeypatch.setenv(contract.BUCKET_VARIABLE, "results")
    monkeypatch.setenv(contract.BOOT_GRACE_SECONDS_VARIABLE, "0")
    return instance["InstanceId"], lambda: ec2


def invoke(event: dict[str, Any], context: LambdaContext) -> tuple[threading.Thread, list[dict[str, Any]]]:
    """The handler in a thread, as the Lambda runtime runs it; the caller waits at most the function's timeout."""
    answers: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(handler(event, context)), daemon=True)
    thread.start()
    thread.join(timeout=context.seconds)
    return thread, answers


@pytest.mark.parametrize(
    ("seconds", "taken"),
    [
        # The screenshot goes where the post-mortem could not: it is not taken.
        (TIMEOUT_S, ["console output", "snapshot", "post-mortem"]),
        # A late start (the calls before the evidence were slow): only what still leaves the reboot its time.
        (60, ["console output", "snapshot"]),
    ],
    ids=["a-whole-invocation", "sixty-seconds-left"],
)
def test_the_reboot_is_made_in_time_when_every_evidence_call_hangs(
    moto_server: str, stalling: StallingProxy, monkeypatch: pytest.MonkeyPatch, seconds: float, taken: list[str]
) -> None:
    instance_id, ec2 = managed_instance(moto_server, monkeypatch)
    context = LambdaContext(seconds)

    thread, answers = invoke(lambda_action(instance_id), context)

    assert not thread.is_alive(), f"still running at the function's {seconds}s timeout: Lambda would kill it"
    ((handled,),) = [answer["handled"] for answer in answers]
    assert handled["decision"] == "REBOOT"
    (rebooted_at,) = stalling.passed["RebootInstances"]
    # The reboot left time for its record (the loop protection), and the record was made.
    assert rebooted_at - context.started + worst_call_s(FUNCTION_LIMITS) <= seconds
    history = {t["Key"]: t["Value"] for t in ec2().describe_tags()["Tags"]}[contract.HISTORY_TAG_KEY]
    assert history.split(":")[1] == "R"
    # Each evidence step that ran hung until its client gave up; the others were not started.
    started = {"GetConsoleOutput": "console output", "CreateSnapshots": "snapshot", "PutObject": "post-mortem"}
    started["GetConsoleScreenshot"] = "screenshot"
    assert sorted({started[name] for name in stalling.stalled}) == sorted(taken)
    assert stalling.stalled.count("GetConsoleOutput") == FUNCTION_LIMITS.attempts


def test_the_function_timeout_holds_the_worst_case_before_the_evidence_and_the_recovery() -> None:
    """The calls the reboot cannot do without (the instance, the claim) at their worst, then the reboot and its
    record at theirs: all inside the timeout the stack gives the function."""
    assert worst_call_s(FUNCTION_LIMITS) == 2 * (2 + 5) + 1
    assert calls_fit(TIMEOUT_S, FUNCTION_LIMITS, CALLS_BEFORE_EVIDENCE + RESERVED_CALLS)
    assert not calls_fit(60, FUNCTION_LIMITS, CALLS_BEFORE_EVIDENCE + RESERVED_CALLS)
