"""Publish memory pressure (PSI some/full avg10) every 10 s through the CloudWatch agent's StatsD input.

    python3 -m healthcheck.guard.psi [--address 127.0.0.1:8125] [--interval 10]

Why StatsD and not EMF: the agent already publishes this instance's metrics
with the InstanceId dimension (append_dimensions) and needs only a "statsd"
section with a 10 s collection interval (under 60 s is high resolution); EMF
would go through CloudWatch Logs, a log group, logs permissions and ingestion
cost. The agent has no PSI input of its own. One UDP datagram per gauge, the
StatsD line format "name:value|g" (CloudWatch agent docs, "Retrieve custom
metrics with StatsD"); UDP never blocks this loop when the agent is down.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import time
from collections.abc import Callable, Sequence

from healthcheck import contract
from healthcheck.arguments import bounded
from healthcheck.guard.host import Host
from healthcheck.guard.readings import Pressure, parse_pressure

DEFAULT_ADDRESS = ("127.0.0.1", 8125)
INTERVAL_S = 10.0
# The agent config's metrics.metrics_collected.statsd section this publisher needs (for infra/agent_config.py):
# collected and aggregated every 10 s, so published at high resolution (under 60 s).
AGENT_STATSD_SECTION = {
    "service_address": f"{DEFAULT_ADDRESS[0]}:{DEFAULT_ADDRESS[1]}",
    "metrics_collection_interval": int(INTERVAL_S),
    "metrics_aggregation_interval": int(INTERVAL_S),
}


def statsd_datagrams(pressure: Pressure) -> list[bytes]:
    """The gauges as StatsD lines, one datagram each (pure)."""
    return [
        f"{contract.PRESSURE_SOME_METRIC}:{pressure.some_avg10:.2f}|g".encode(),
        f"{contract.PRESSURE_FULL_METRIC}:{pressure.full_avg10:.2f}|g".encode(),
    ]


def publish_forever(
    host: Host,
    address: tuple[str, int],
    interval: float = INTERVAL_S,
    rounds: int | None = None,
    send: Callable[[bytes, tuple[str, int]], object] | None = None,
) -> None:
    """Every `interval` seconds on the monotonic clock (no drift), send the current pressure."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sender = send or sock.sendto
        next_at = host.clock()
        done = 0
        while rounds is None or done < rounds:
            text = host.read(host.proc / "pressure" / "memory")
            if text is None:  # no PSI in this kernel: publish nothing rather than a reassuring zero
                print(f"trainguard-psi: cannot read {host.proc / 'pressure' / 'memory'}", file=sys.stderr)
            for datagram in statsd_datagrams(parse_pressure(text)) if text else []:
                try:
                    sender(datagram, address)
                except OSError as error:  # the agent not listening yet (ECONNREFUSED from an earlier datagram)
                    print(f"trainguard-psi: send to {address[0]}:{address[1]} failed: {error}", file=sys.stderr)
            done += 1
            next_at += interval
            host.sleep(max(0.0, next_at - host.clock()))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT with a port from 1 to 65535")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainguard-psi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", type=_address, default=DEFAULT_ADDRESS, help="StatsD HOST:PORT")
    parser.add_argument(
        "--interval",
        type=bounded(float, 1, 3600, "--interval"),
        default=INTERVAL_S,
        help="seconds between publications (10; 1 to 3600: PSI's avg10 moves every 2 s)",
    )
    parser.add_argument(
        "--rounds", type=bounded(int, 1, 10**9, "--rounds"), help="stop after N rounds (default: forever)"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C when run by hand
        publish_forever(Host(clock=time.monotonic), args.address, args.interval, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
