"""The SSH canary against real sshd on loopback, publishing to moto CloudWatch."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from healthcheck import contract
from healthcheck.lambdas import ssh_canary
from healthcheck.lambdas.ssh_canary import Canary, Sample, Target, first_slot, handler, parse_event

REGION = "eu-west-1"
INTERVAL = 2.0  # seconds between samples here; a sample must be decided within half of it


class LambdaContext:
    """The one method of the Lambda context object the canary uses."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._ends - time.monotonic()) * 1000)


class FakeTime:
    """A wall clock, a monotonic clock and a sleep that only advance each other: no real waiting."""

    def __init__(self, wall: float) -> None:
        self.now = wall
        self.slept: list[float] = []

    def wall(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FixedContext:
    def __init__(self, clock: FakeTime, seconds: float) -> None:
        self._ends = clock.now + seconds
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        return int((self._ends - self._clock.now) * 1000)


def aligned_wall() -> Callable[[], float]:
    """A wall clock that starts exactly on a slot boundary, so the first round runs at once."""
    origin, base = math.floor(time.time() / INTERVAL) * INTERVAL, time.monotonic()
    return lambda: origin + (time.monotonic() - base)


@pytest.fixture
def cloudwatch(aws_credentials: str) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """moto CloudWatch, and every PutMetricData request as the client sent it."""
    with mock_aws():
        client = boto3.client("cloudwatch", region_name=REGION)
        sent: list[dict[str, Any]] = []
        client.meta.events.register(
            "provide-client-params.cloudwatch.PutMetricData", lambda params, **_: sent.append(params)
        )
        yield client, sent


def _values(client: Any, metric: str, instance_id: str) -> list[float]:
    stats = client.get_metric_statistics(
        Namespace="Trainguard",
        MetricName=metric,
        Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
        StartTime=time.time() - 3600,
        EndTime=time.time() + 60,
        Period=1,
        Statistics=["Minimum", "Maximum", "SampleCount"],
    )["Datapoints"]
    return sorted(point["Maximum"] for point in stats)


def _target(instance_id: str, port: int) -> dict[str, Any]:
    return {"instance_id": instance_id, "address": "127.0.0.1", "port": port}


def test_healthy_sshd_is_1_and_a_frozen_one_is_0(cloudwatch, make_server) -> None:
    client, _ = cloudwatch
    healthy, frozen = make_server(), make_server()
    frozen.sshd.freeze()
    event = {"targets": [_target("i-0000000000000000a", healthy.port), _target("i-0000000000000000b", frozen.port)]}
    event["samples"] = 2
    started = time.monotonic()

    summary = handler(event, LambdaContext(30), canary=Canary(client, interval=INTERVAL, wall=aligned_wall()))

    assert summary["rounds"] == [{"i-0000000000000000a": True, "i-0000000000000000b": False}] * 2
    assert _values(client, "SSHResponsive", "i-0000000000000000a") == [1.0, 1.0]
    assert _values(client, "SSHResponsive", "i-0000000000000000b") == [0.0, 0.0]
    # Two rounds on slots 0 and 2 s, each decided within half the interval.
    assert time.monotonic() - started < INTERVAL + INTERVAL / 2 + 1.0


def test_a_trickled_banner_is_0_within_the_deadline(cloudwatch, line_server) -> None:
    client, _ = cloudwatch

    def trickle(conn: socket.socket, _: int) -> None:
        for byte in b"SSH-2.0-OpenSSH_9.2\r\n":
            conn.sendall(bytes([byte]))
            time.sleep(0.5)

    server = line_server(trickle)
    event = {"targets": [_target("i-0000000000000000c", server.port)], "samples": 1}
    started = time.monotonic()

    summary = handler(event, LambdaContext(30), canary=Canary(client, interval=INTERVAL, wall=aligned_wall()))

    assert summary["rounds"] == [{"i-0000000000000000c": False}]
    assert time.monotonic() - started < INTERVAL / 2 + 0.5


def test_a_connect_timeout_on_a_full_accept_queue_is_unresponsive(cloudwatch, full_backlog: int) -> None:
    client, _ = cloudwatch
    event = {"targets": [_target("i-0000000000000000f", full_backlog)], "samples": 1}
    started = time.monotonic()

    summary = handler(event, LambdaContext(30), canary=Canary(client, interval=INTERVAL, wall=aligned_wall()))

    assert summary["rounds"] == [{"i-0000000000000000f": False}]
    assert _values(client, "SSHResponsive", "i-0000000000000000f") == [0.0]
    assert time.monotonic() - started < INTERVAL / 2 + 0.5


def test_samples_stop_when_the_lambda_runs_short_of_time(cloudwatch, make_server) -> None:
    client, _ = cloudwatch
    server = make_server()
    event = {"targets": [_target("i-0000000000000000d", server.port)], "samples": 6}
    context = LambdaContext(7.5)
    started = time.monotonic()

    summary = handler(event, context, canary=Canary(client, interval=INTERVAL, wall=aligned_wall()))

    # Rounds start at 0, 2, 4 s; a round at 6 s would need 1 s to probe and 2 s in reserve, past 7.5 s.
    assert len(summary["rounds"]) == 3
    assert time.monotonic() - started < 7.5
    assert context.get_remaining_time_in_millis() > 0


def test_metrics_are_high_resolution_and_dimensioned_by_instance_only(cloudwatch, make_server) -> None:
    client, sent = cloudwatch
    server = make_server()
    event = {"targets": [_target("i-0000000000000000e", server.port)], "samples": 1}

    handler(event, LambdaContext(30), canary=Canary(client, interval=INTERVAL, wall=aligned_wall()))

    (request,) = sent
    assert request["Namespace"] == "Trainguard"
    (datum,) = request["MetricData"]
    assert datum["MetricName"] == "SSHResponsive"
    assert datum["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0000000000000000e"}]
    assert (datum["StorageResolution"], datum["Value"]) == (1, 1.0)
    listed = client.list_metrics(Namespace="Trainguard")["Metrics"]
    assert {m["MetricName"] for m in listed} == {"SSHResponsive"}


def _fake_sampler(unresponsive_rounds: set[int]) -> tuple[Callable[[Target, float, Callable[[], float]], Sample], list]:
    """A sampler that answers without a network: unresponsive in the given rounds (counted per call)."""
    calls: list[Target] = []

    def sample(target: Target, timeout: float, clock: Callable[[], float]) -> Sample:
        calls.append(target)
        return Sample(target.instance_id, len(calls) - 1 not in unresponsive_rounds, 0.01, "fake")

    return sample, calls


@pytest.mark.parametrize(("started_at", "first"), [(1007.3, 1010.0), (1000.4, 1000.0), (1009.99, 1010.0)])
def test_samples_land_on_fixed_ten_second_slots_however_late_the_invocation_starts(
    cloudwatch, started_at: float, first: float
) -> None:
    """EventBridge starts each minute's invocation at an uneven second; every datapoint still fills its own slot."""
    client, sent = cloudwatch
    clock = FakeTime(started_at)
    sample, _ = _fake_sampler(set())
    canary = Canary(client, interval=10, wall=clock.wall, monotonic=clock.wall, sleep=clock.sleep, sample=sample)

    rounds = canary.run([Target("i-1", "127.0.0.1")], 6, FixedContext(clock, 75).get_remaining_time_in_millis)

    assert len(rounds) == 6
    stamps = [datum["Timestamp"] for request in sent for datum in request["MetricData"]]
    assert stamps == [datetime.fromtimestamp(first + 10 * k, timezone.utc) for k in range(6)]
    assert first_slot(started_at, 10) == first


def test_unresponsive_rounds_are_published_at_once_and_healthy_ones_together(cloudwatch) -> None:
    client, sent = cloudwatch
    clock = FakeTime(1000.0)
    sample, _ = _fake_sampler({2})
    canary = Canary(client, interval=10, wall=clock.wall, monotonic=clock.wall, sleep=clock.sleep, sample=sample)

    canary.run([Target("i-1", "127.0.0.1")], 6, FixedContext(clock, 75).get_remaining_time_in_millis)

    # Rounds 0 and 1 wait for round 2's zero, which goes at once; rounds 3 to 5 go together at the end.
    assert [[d["Value"] for d in request["MetricData"]] for request in sent] == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]


def test_the_function_publishes_through_the_vpc_endpoint_it_is_given(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the VPC the public endpoint is unreachable: every sample must go to the endpoint it is given."""
    # Anything not sent to the given endpoint goes to a loopback port where nothing listens, and fails.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TRAINGUARD_MONITORING_ENDPOINT", moto_server)
    # A short interval, so the test does not wait for a 10 s slot; the function accepts only the listed ones.
    monkeypatch.setattr(ssh_canary, "INTERVALS_S", (int(INTERVAL), *ssh_canary.INTERVALS_S))
    monkeypatch.setenv("TRAINGUARD_CANARY_INTERVAL_SECONDS", str(int(INTERVAL)))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    event = {"targets": [_target("i-0123456789abcdef0", port)], "samples": 1}

    summary = handler(event, LambdaContext(30))

    assert summary["rounds"] == [{"i-0123456789abcdef0": False}]
    published = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_server)
    assert _values(published, contract.SSH_RESPONSIVE_METRIC, "i-0123456789abcdef0") == [0.0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRAINGUARD_CANARY_INTERVAL_SECONDS", "-10"),
        ("TRAINGUARD_CANARY_INTERVAL_SECONDS", "0.001"),
        ("TRAINGUARD_CANARY_INTERVAL_SECONDS", "10.5"),
        ("TRAINGUARD_CANARY_INTERVAL_SECONDS", "nan"),
        ("TRAINGUARD_CANARY_INTERVAL_SECONDS", "1e400"),
        ("TRAINGUARD_SSH_PORT", "0"),
        ("TRAINGUARD_SSH_PORT", "99999"),
        ("TRAINGUARD_SSH_PORT", "ssh"),
    ],
)
def test_a_misconfigured_canary_publishes_nothing_and_fails_loudly(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, caplog, variable: str, value: str
) -> None:
    """An interval of 0.001 s would time out every probe and report healthy hosts silent (false reboots): the
    canary publishes nothing, and raises, so its Errors alarm emails a person."""
    monkeypatch.setenv(variable, value)
    cloudwatch = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_server)
    event = {"targets": [GOOD], "samples": 1}

    with pytest.raises(ssh_canary.CanaryConfigError) as caught, caplog.at_level(logging.ERROR):
        handler(event, LambdaContext(30))

    assert str(caught.value).startswith(f"{variable}={value!r}: expected ")
    assert "trainguard.canary.misconfigured" in caplog.text
    assert cloudwatch.list_metrics(Namespace="Trainguard")["Metrics"] == []


def test_no_targets_publishes_nothing(cloudwatch) -> None:
    client, sent = cloudwatch

    summary = handler({"targets": []}, LambdaContext(30), canary=Canary(client, interval=INTERVAL))

    assert summary == {"targets": 0, "rounds": []}
    assert sent == []


GOOD = {"instance_id": "i-0000000000000000a", "address": "127.0.0.1", "port": 22}


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"targets": None}, "targets is null, not a list"),
        ({"targets": [GOOD, {}]}, "targets[1] left out: instance_id is null"),
        ({"targets": [GOOD, None]}, "targets[1] left out: null is not an object"),
        ({"targets": [GOOD, GOOD | {"port": "ssh"}]}, 'port is "ssh", not a port number'),
        ({"targets": [GOOD, GOOD | {"port": 70000}]}, "port is 70000, not a port number"),
        ({"targets": [GOOD, GOOD | {"port": True}]}, "port is true, not a port number"),
        ({"targets": [GOOD, GOOD | {"address": 10}]}, "address is 10, not a host name or address"),
        ({"targets": [GOOD, GOOD | {"address": "a\nb"}]}, "not a host name or address"),
        ({"targets": [GOOD], "samples": "six"}, 'samples is "six", not a whole number 1 to 60: using 6'),
        ({"targets": [GOOD], "samples": 10**9}, "not a whole number 1 to 60"),
        ([GOOD], "the event is a list, not an object"),
    ],
)
def test_a_malformed_event_is_logged_and_the_valid_targets_are_sampled(
    cloudwatch, caplog, event: Any, problem: str
) -> None:
    client, _ = cloudwatch
    clock = FakeTime(1000.0)
    sample, calls = _fake_sampler(set())
    canary = Canary(client, interval=10, wall=clock.wall, monotonic=clock.wall, sleep=clock.sleep, sample=sample)

    with caplog.at_level(logging.WARNING, logger="trainguard.ssh_canary"):
        summary = handler(event, FixedContext(clock, 75), canary=canary)

    logged = [json.loads(r.getMessage())["problem"] for r in caplog.records if r.levelno == logging.WARNING]
    assert any(problem in line for line in logged), logged
    valid = isinstance(event, dict) and isinstance(event.get("targets"), list)
    assert summary["targets"] == (1 if valid else 0)
    assert {t.instance_id for t in calls} <= {GOOD["instance_id"]}


def test_parse_event_keeps_defaults_for_a_well_formed_event() -> None:
    assert parse_event({"targets": [GOOD]}, 22, 6) == ([Target("i-0000000000000000a", "127.0.0.1", 22)], 6, [])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
TARGET = st.fixed_dictionaries(
    {},
    optional={
        "instance_id": JSON | st.text(max_size=20),
        "address": JSON | st.just("127.0.0.1"),
        "port": JSON | st.integers(-5, 70000),
    },
)
EVENT = JSON | st.fixed_dictionaries(
    {}, optional={"targets": JSON | st.lists(TARGET | JSON, max_size=5), "samples": JSON | st.integers(-3, 100)}
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=EVENT)
def test_no_event_makes_the_handler_raise(cloudwatch, event: Any) -> None:
    """Fuzzed: any JSON the schedule or a person could send. The sampler is fake, so nothing leaves the process."""
    client, _ = cloudwatch
    clock = FakeTime(1000.0)
    sample, calls = _fake_sampler(set())
    canary = Canary(client, interval=10, wall=clock.wall, monotonic=clock.wall, sleep=clock.sleep, sample=sample)

    summary = handler(event, FixedContext(clock, 75), canary=canary)

    assert len(calls) == summary["targets"] * len(summary["rounds"])
    assert all(isinstance(t.address, str) and 1 <= t.port <= 65535 for t in calls)
    assert len(summary["rounds"]) <= ssh_canary.MAX_SAMPLES
