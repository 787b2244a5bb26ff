"""`trainguard status` through the real command line, against a stack deployed on moto's server and real sshd on
loopback addresses: a watched stack, an email nobody confirmed, alarms without data, a frozen instance, a push
that stopped, no stack, no credentials, and twenty instances in seconds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from moto.cloudwatch.models import CloudWatchBackend

from healthcheck import contract
from healthcheck.probe.sandbox import ThrowawaySshd
from tests.conftest import Run
from tests.healthcheck.overview.conftest import EMAIL, REGION, STACK, Deployed

REPO = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "schemas" / "status.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture
def sshd_on(tmp_path: Path) -> Iterator[Callable[..., ThrowawaySshd]]:
    """A real sshd that also listens on port 22 of the given loopback addresses (up to 15: sshd's limit is 16
    listening sockets), as the instances' sshd would."""
    if os.geteuid() != 0:
        pytest.skip("listening on port 22 needs root")
    started: list[ThrowawaySshd] = []

    def start(*addresses: str) -> ThrowawaySshd:
        listen = "".join(f"ListenAddress {address}:22\n" for address in addresses)
        sshd = ThrowawaySshd(extra_config=listen, parent=tmp_path).start()
        started.append(sshd)
        return sshd

    yield start
    for sshd in started:
        sshd.close()


def status(run_cli: Callable[..., Run], *argv: str) -> Run:
    return run_cli("status", "--stack", STACK, *argv)


def checks(instance: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["topic"]: check for check in instance["checks"]}


def test_a_watched_stack_is_ok_in_a_table_that_names_every_instance(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    instance_id = deployed.launch("127.0.0.21")
    deployed.watched(instance_id)

    ran = status(run_cli)

    assert ran.code == 0, ran.stdout
    assert f"stack {STACK} in {REGION}" in ran.stdout and ": OK" in ran.stdout.splitlines()[0]
    assert f"{EMAIL} confirmed" in ran.stdout
    row = next(line for line in ran.stdout.splitlines() if instance_id in line)
    assert "running" in row and "answers" in row and "9 OK" in row


def test_the_json_names_each_check_and_matches_the_schema(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    instance_id = deployed.launch("127.0.0.21")
    worker = {
        "worker": 0,
        "unit": "trainguard-worker-0.service",
        "state": "oom_killed",
        "since": "2026-12-07T09:58:00Z",
    }
    deployed.watched(instance_id, workers=[worker])

    ran = status(run_cli, "--json")

    VALIDATOR.validate(ran.json)
    (instance,) = ran.json["instances"]
    assert instance["instance_id"] == instance_id and instance["status"] == "OK"
    found = checks(instance)
    assert {"ec2", "ssh", "alarms", "canary", "agent", "guard", "reboots", "push", "workers"} <= set(found)
    assert found["workers"]["summary"] == "1 oom-killed"
    assert found["workers"]["details"][0].startswith("worker-0: oom_killed since 2026-12-07T09:58:00Z")
    assert found["reboots"]["summary"] == "0/3"  # the function's own settings
    assert instance["workers"][0]["state"] == "oom_killed"


def test_an_email_nobody_confirmed_is_a_warning_that_says_where_to_click(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    deployed.watched(deployed.launch("127.0.0.21"))
    deployed.subscription_pending(EMAIL)

    ran = status(run_cli)

    assert ran.code == 1
    assert f"{EMAIL} PENDING" in ran.stdout
    assert "look in that inbox for 'AWS Notification - Subscription Confirmation'" in ran.stdout


def test_alarms_without_data_say_that_nothing_is_watching(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    deployed.launch("127.0.0.21")  # just deployed: no canary sample, no agent report, alarms without data

    ran = status(run_cli, "--json")

    assert ran.code == 1
    found = checks(ran.json["instances"][0])
    assert found["alarms"]["level"] == "WARNING" and found["alarms"]["summary"] == "9 no data, 0 OK"
    assert "memory: not watching: no data for CWAgent/mem_used_percent" in found["alarms"]["details"]
    assert found["canary"]["level"] == found["agent"]["level"] == "WARNING"


def test_a_frozen_instance_with_its_alarm_firing_is_critical(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21").freeze()
    instance_id = deployed.launch("127.0.0.21")
    deployed.watched(instance_id)
    deployed.canary(instance_id, 0.0)
    deployed.set_alarm(instance_id, contract.SSH_ALARM_KEY, "ALARM", "6 of 8 datapoints were less than 1")

    started = time.monotonic()
    ran = status(run_cli, "--json")

    assert time.monotonic() - started < 15
    assert ran.code == 2
    found = checks(ran.json["instances"][0])
    assert (found["ssh"]["level"], found["ssh"]["summary"]) == ("CRITICAL", "HUNG")
    assert found["alarms"]["summary"] == "1 ALARM, 8 OK"
    assert "ssh-unresponsive in ALARM since" in found["alarms"]["details"][0]
    assert "6 of 8 datapoints" in found["alarms"]["details"][0]


def test_a_push_that_stopped_is_a_warning(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    deployed.watched(deployed.launch("127.0.0.21"), push_minutes_ago=40)

    ran = status(run_cli, "--json")

    assert ran.code == 1
    push = checks(ran.json["instances"][0])["push"]
    assert (push["level"], push["summary"]) == ("WARNING", "40 min ago")
    assert "results since then exist only on the instance" in push["details"][0]


def test_a_stack_with_no_instance_cannot_be_checked(deployed: Deployed, run_cli: Callable[..., Run]) -> None:
    ran = run_cli("status", "--stack", "nosuch")

    assert ran.code == 3
    assert "no instance tagged trainguard:stack=nosuch in eu-west-1" in ran.stdout


def test_without_a_stack_name_or_pulumi_it_asks_which_stack(
    deployed: Deployed, run_cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no pulumi

    ran = run_cli("status")

    assert ran.code == 3
    assert ran.stderr.startswith("trainguard: error: which stack? pass --stack NAME")
    assert ran.stderr.count("\n") == 1


def test_twenty_instances_take_seconds_and_two_metrics_calls(
    deployed: Deployed,
    sshd_on: Callable[..., ThrowawaySshd],
    run_cli: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    addresses = [f"127.0.0.{30 + index}" for index in range(20)]
    sshd_on(*addresses[:10])
    sshd_on(*addresses[10:])
    for address in addresses:
        deployed.watched(deployed.launch(address))
    metric_calls = []
    original = CloudWatchBackend.get_metric_data
    monkeypatch.setattr(
        CloudWatchBackend,
        "get_metric_data",
        lambda backend, *args, **kwargs: metric_calls.append(1) or original(backend, *args, **kwargs),
    )

    started = time.monotonic()
    ran = status(run_cli, "--json")
    took = time.monotonic() - started

    assert ran.code == 0, [
        check for instance in ran.json["instances"] for check in instance["checks"] if check["level"] != "OK"
    ]
    assert len(ran.json["instances"]) == 20
    assert len(metric_calls) == 2  # the last 30 minutes' 40 queries, and the kills' 20 over 6 hours
    assert took < 10, f"{took:.1f} s"


def test_watch_prints_one_json_line_a_round(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    deployed.watched(deployed.launch("127.0.0.21"))

    ran = status(run_cli, "--json", "--watch", "1", "--rounds", "2")

    lines = ran.stdout.splitlines()
    assert len(lines) == 2 and ran.code == 0
    for line in lines:
        VALIDATOR.validate(json.loads(line))


def test_workers_records_of_the_wrong_shape_are_left_out_not_raised(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    instance_id = deployed.launch("127.0.0.21")
    good = {"worker": 1, "unit": "trainguard-worker-1.service", "state": "exited", "since": "2026-12-07T09:00:00Z"}
    wrong = [
        {**good, "worker": "zero"},
        {**good, "results_prefix": 5},
        {**good, "state": 7},
        {**good, "memory_peak_bytes": "lots"},
        {**good, "since": {"a": 1}},
        {**good, "worker": True},
        {"state": "running"},
        7,
    ]
    deployed.watched(instance_id, workers=[*wrong, good])

    ran = status(run_cli, "--json")

    assert ran.code == 0, ran.stdout
    VALIDATOR.validate(ran.json)
    workers = checks(ran.json["instances"][0])["workers"]
    assert workers["summary"] == "1 exited"
    assert [worker["worker"] for worker in ran.json["instances"][0]["workers"]] == [1]


def test_a_workers_record_that_is_no_json_is_said_not_raised(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    instance_id = deployed.launch("127.0.0.21")
    deployed.watched(instance_id)
    deployed.s3.put_object(Bucket=deployed.bucket, Key=f"{instance_id}/{contract.WORKERS_STATE_NAME}", Body=b"\x00[{")

    ran = status(run_cli, "--json")

    assert ran.code == 0
    workers = checks(ran.json["instances"][0])["workers"]
    assert (workers["summary"], workers["details"]) == ("no record", ["worker-0: newest result 2 min ago"])


def test_another_stack_whose_name_starts_alike_lends_it_nothing(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    """trainguard-dev-2-... alarms also start with trainguard-dev-: their topic is not dev's."""
    sshd_on("127.0.0.21")
    other_topic = deployed.sns.create_topic(Name="trainguard-dev-2-alerts")["TopicArn"]
    deployed.sns.subscribe(TopicArn=other_topic, Protocol="email", Endpoint="someone-else@example.com")
    other = deployed.ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)["Instances"][0]
    deployed.cloudwatch.put_metric_alarm(
        AlarmName=contract.instance_alarm_name("dev-2", other["InstanceId"], contract.SSH_ALARM_KEY),
        Namespace=contract.CANARY_NAMESPACE,
        MetricName=contract.SSH_RESPONSIVE_METRIC,
        Statistic="Minimum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="LessThanThreshold",
        AlarmActions=[other_topic],
    )
    deployed.watched(deployed.launch("127.0.0.21"))

    ran = status(run_cli, "--json")

    email = next(check for check in ran.json["stack_checks"] if check["topic"] == "email")
    assert "someone-else@example.com" not in email["summary"] and EMAIL in email["summary"]


def test_the_stacks_outputs_name_its_pieces_and_region_and_an_id_ec2_lost_is_a_warning(
    deployed: Deployed,
    sshd_on: Callable[..., ThrowawaySshd],
    run_cli: Callable[..., Run],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sshd_on("127.0.0.21")
    instance_id = deployed.launch("127.0.0.21")
    deployed.watched(instance_id)
    outputs = {
        "stack": STACK,
        "region": REGION,
        "instance_ids": [instance_id, "i-0fedcba9876543210"],
        "bucket_name": deployed.bucket,
        "topic_arn": deployed.topic_arn,
        "auto_reboot_function_name": deployed.function_arn.rsplit(":", 1)[-1],
        "bundle_version": "0123456789abcdef",
    }
    (tmp_path / "pulumi").write_text(f"#!/bin/sh\necho '{json.dumps(outputs)}'\n")
    (tmp_path / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # the stack's region wins over the environment's
    deployed.applied(instance_id, "fedcba9876543210")

    ran = run_cli("status", "--json")

    assert ran.code == 1, ran.stdout
    assert ran.json["region"] == REGION
    (gone,) = [check for check in ran.json["stack_checks"] if check["topic"] == "instances"]
    assert "i-0fedcba9876543210, which EC2 no longer knows" in gone["details"][0]
    bundle = checks(ran.json["instances"][0])["bundle"]
    assert (bundle["level"], bundle["summary"]) == ("WARNING", "fedcba9876543210 (stack: 0123456789abcdef)")


def test_another_tools_association_on_the_instance_is_not_the_bundles(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], run_cli: Callable[..., Run]
) -> None:
    sshd_on("127.0.0.21")
    instance_id = deployed.launch("127.0.0.21")
    deployed.watched(instance_id)
    deployed.applied(instance_id, "0123456789abcdef")
    deployed.state_manager.applied(instance_id, "patch-baseline", "ffffffffffffffff", "Failed")

    ran = status(run_cli, "--json")

    bundle = checks(ran.json["instances"][0])["bundle"]
    assert (bundle["level"], bundle["summary"]) == ("OK", "0123456789abcdef Success")


def test_an_endpoint_that_answers_html_is_one_line_not_a_traceback(
    deployed: Deployed, line_server: Callable[..., Any], run_cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"

    def proxy_error(conn: socket.socket, number: int) -> None:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nConnection: close\r\n"
            + f"Content-Length: {len(page)}\r\n\r\n".encode()
            + page
        )

    proxy = line_server(proxy_error)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")

    ran = status(run_cli)

    assert ran.code == 3
    assert ran.stderr.startswith("trainguard: error: could not list the instances of stack dev in eu-west-1: ")
    assert ran.stderr.count("\n") == 1


def test_ctrl_c_while_an_instances_reads_hang_ends_status_at_once(
    deployed: Deployed, sshd_on: Callable[..., ThrowawaySshd], line_server: Callable[..., Any]
) -> None:
    sshd_on("127.0.0.21")
    deployed.watched(deployed.launch("127.0.0.21"))
    silent = line_server(lambda conn, number: time.sleep(60))  # State Manager's endpoint accepts, never answers
    environment = os.environ | {"AWS_ENDPOINT_URL_SSM": f"http://127.0.0.1:{silent.port}"}
    running = subprocess.Popen(
        [sys.executable, "-m", "healthcheck", "status", "--stack", STACK],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)  # past the calls that need no thread, into the instance's own
        assert running.poll() is None, running.communicate()
        running.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = running.communicate(timeout=30)
        took = time.monotonic() - interrupted
    finally:
        running.kill()

    assert running.returncode == 130, stderr
    assert took < 2, f"{took:.1f} s"
