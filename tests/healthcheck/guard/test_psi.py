"""The PSI publisher's wire format, received on a real UDP socket on loopback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import jsonschema
import pytest

from healthcheck.guard import psi
from healthcheck.guard.host import Host
from healthcheck.guard.readings import Pressure


def test_statsd_gauges_arrive_every_interval_on_loopback(tmp_path: Path) -> None:
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "memory").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=99\nfull avg10=4.25 avg60=1.00 avg300=0.10 total=42\n"
    )
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds + 0.25  # each round also costs a little time: the schedule must not drift

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        host = Host(clock=lambda: now[0], sleep=sleep, proc=tmp_path)

        psi.publish_forever(host, receiver.getsockname(), interval=10.0, rounds=3)

        received = [receiver.recv(1500) for _ in range(6)]

    assert (
        received
        == [
            b"trainguard_memory_pressure_some_avg10:12.50|g",
            b"trainguard_memory_pressure_full_avg10:4.25|g",
        ]
        * 3
    )
    assert slept == [10.0, 9.75, 9.75]


def test_the_agent_not_listening_does_not_stop_the_publisher(tmp_path: Path) -> None:
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "memory").write_text("some avg10=1.00\nfull avg10=0.00\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        address = closed.getsockname()
    host = Host(clock=lambda: 0.0, sleep=lambda seconds: None, proc=tmp_path)

    psi.publish_forever(host, address, rounds=3)  # ICMP port unreachable -> ECONNREFUSED on later sends: logged


def test_a_kernel_without_psi_publishes_nothing_rather_than_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[bytes] = []
    host = Host(clock=lambda: 0.0, sleep=lambda seconds: None, proc=tmp_path)

    psi.publish_forever(host, ("127.0.0.1", 9), rounds=2, send=lambda datagram, address: sent.append(datagram))

    assert sent == []
    assert "cannot read" in capsys.readouterr().err


def test_datagrams_are_plain_statsd_gauges() -> None:
    assert psi.statsd_datagrams(Pressure(0.0, 100.0)) == [
        b"trainguard_memory_pressure_some_avg10:0.00|g",
        b"trainguard_memory_pressure_full_avg10:100.00|g",
    ]


def test_the_agent_section_it_needs_is_valid_for_the_agents_schema() -> None:
    schema = json.loads((Path(__file__).parents[2] / "data" / "cloudwatch-agent-config.schema.json").read_text())
    config = {"metrics": {"metrics_collected": {"statsd": psi.AGENT_STATSD_SECTION}}}

    jsonschema.validate(config, schema)
    assert psi.AGENT_STATSD_SECTION["metrics_collection_interval"] < 60  # high resolution


@pytest.mark.parametrize(
    "argv",
    [
        ["--address", "127.0.0.1:99999"],
        ["--address", "127.0.0.1:0"],
        ["--interval", "-1"],
        ["--interval", "nan"],
        ["--interval", "0"],
        ["--rounds", "0"],
    ],
)
def test_a_port_or_interval_out_of_range_is_refused_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A port of 99999 once ended in OverflowError at the first send; a negative or NaN interval spun a busy loop."""
    with pytest.raises(SystemExit) as exited:
        psi.main([*argv, "--rounds", "1"] if argv[0] != "--rounds" else argv)

    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("trainguard-psi: error: argument")
