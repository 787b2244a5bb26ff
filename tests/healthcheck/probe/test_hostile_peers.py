"""Busy, resetting, frozen, garbling and over-chatty servers on loopback."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from healthcheck.probe.stages import MAX_LINE_BYTES, MAX_PRE_BANNER_LINES

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


# A busy sshd is REFUSED after retries, never NOT_SSH.


def test_fifty_parallel_probes_of_an_sshd_at_max_startups_are_never_not_ssh(make_server, run_cli) -> None:
    """sshd with MaxStartups 2 turns most of 50 simultaneous connections away with its refusal line."""
    server = make_server(max_startups="2")
    target = f"127.0.0.1:{server.port}"

    run = run_cli("probe", "--json", "--no-login", "--timeout", "10", "--parallel", "50", *[target] * 50)

    verdicts = [result["verdict"] for result in run.json["results"]]
    assert len(verdicts) == 50
    assert "NOT_SSH" not in verdicts, [r["summary"] for r in run.json["results"] if r["verdict"] == "NOT_SSH"]
    # Retrying with backoff gets every probe through once the crowd thins.
    assert set(verdicts) <= {"HEALTHY", "REFUSED"}
    retried = [r for r in run.json["results"] if "busy refusal" in r["stages"][-1]["detail"]]
    assert retried, "no probe was turned away: the test did not exercise MaxStartups"


@pytest.mark.parametrize("refusal", [b"Exceeded MaxStartups\r\n", b"Not allowed at this time\r\n"])
def test_sshd_that_always_refuses_is_refused_with_the_reason(line_server, run_cli, refusal: bytes) -> None:
    server = line_server(lambda conn, _: conn.sendall(refusal))

    run = run_cli("probe", "--json", "--no-login", "--timeout", "2", f"127.0.0.1:{server.port}")

    assert (run.code, run.result["verdict"]) == (2, "REFUSED")
    summary = run.result["summary"]
    assert "sshd is refusing new connections (MaxStartups: too many unauthenticated connections)" in summary
    assert refusal.strip().decode() in summary and "attempts" in summary


# Accept, then reset.


def accept_then_reset(conn: socket.socket, _: int) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_server_that_accepts_then_resets_is_refused_thirty_times_in_thirty(line_server, run_cli) -> None:
    server = line_server(accept_then_reset)
    target = f"127.0.0.1:{server.port}"

    # Each probe retries the resets until its deadline: a generous one keeps a loaded machine's slow accepts (a
    # connection waiting in the queue looks like a frozen sshd) from ending a probe before the first reset.
    run = run_cli("probe", "--json", "--no-login", "--timeout", "8", "--parallel", "30", *[target] * 30)

    verdicts = [result["verdict"] for result in run.json["results"]]
    assert verdicts == ["REFUSED"] * 30, [r["summary"] for r in run.json["results"] if r["verdict"] != "REFUSED"]
    assert all("reset" in result["summary"] for result in run.json["results"])


# A frozen sshd whose listen queue fills up.


def test_frozen_sshd_probed_140_times_in_a_row_is_hung_every_time(server, run_cli) -> None:
    """sshd's listen queue holds 129 connections (backlog 128); probes 130 to 140 find it full."""
    server.sshd.freeze()
    target = f"127.0.0.1:{server.port}"
    verdicts, summaries = [], []
    for _ in range(14):
        run = run_cli("probe", "--json", "--no-login", "--timeout", "0.6", "--parallel", "10", *[target] * 10)
        verdicts += [result["verdict"] for result in run.json["results"]]
        summaries += [result["summary"] for result in run.json["results"]]

    assert verdicts == ["HUNG"] * 140
    # The last ones met a full queue: silence on the port, a live kernel behind it.
    assert "frozen sshd whose listen queue is full" in summaries[-1]


# Lines before the identification, up to OpenSSH's limits.


@contextlib.contextmanager
def relay_with_prelude(sshd_port: int, prelude: bytes) -> Iterator[int]:
    """A loopback port that sends `prelude`, then relays to a real sshd (as RFC 4253 section 4.2 allows)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", sshd_port))
                # sshd sends its identification first; ours must follow the prelude.
                client.sendall(prelude)
                threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_thousand_lines_before_the_identification_still_log_in(server, run_cli) -> None:
    prelude = b"".join(b"notice %04d: authorised use only\r\n" % number for number in range(1000))
    with relay_with_prelude(server.port, prelude) as port:
        run = run_cli("probe", "--json", *server.args(f"{server.sshd.user}@127.0.0.1:{port}"))

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY"), run.result


def test_more_lines_than_openssh_accepts_is_not_ssh_and_says_why(line_server, run_cli) -> None:
    lines = b"hello\r\n" * (MAX_PRE_BANNER_LINES + 5)
    server = line_server(lambda conn, _: (conn.sendall(lines + BANNER), time.sleep(2)))

    run = run_cli("probe", "--json", "--no-login", "--timeout", "3", f"127.0.0.1:{server.port}")

    assert (run.code, run.result["verdict"]) == (2, "NOT_SSH")
    assert f"OpenSSH gives up after {MAX_PRE_BANNER_LINES}" in run.result["summary"]


def test_a_line_longer_than_openssh_accepts_is_not_ssh_and_says_why(line_server, run_cli) -> None:
    server = line_server(lambda conn, _: (conn.sendall(b"x" * (MAX_LINE_BYTES + 1)), time.sleep(2)))

    run = run_cli("probe", "--json", "--no-login", "--timeout", "3", f"127.0.0.1:{server.port}")

    assert (run.code, run.result["verdict"]) == (2, "NOT_SSH")
    assert f"longer than {MAX_LINE_BYTES} bytes" in run.result["summary"]
    assert "OpenSSH's limit" in run.result["summary"]


# paramiko's logging stays off stderr; the reason is in the detail.


def banner_then_garbage(conn: socket.socket, _: int) -> None:
    conn.sendall(BANNER)
    conn.recv(4096)
    conn.sendall(b"\x00\x00\x00\x07garbage" * 64)
    time.sleep(2)


def banner_then_close(conn: socket.socket, _: int) -> None:
    conn.sendall(BANNER)
    conn.recv(4096)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (banner_then_garbage, "Invalid packet blocking"),
        (banner_then_close, "closed the connection during key exchange"),
    ],
)
def test_key_exchange_failures_are_explained_in_the_detail_not_logged_on_stderr(
    line_server, run_module, tmp_path, handler, reason
) -> None:
    server = line_server(handler)
    key = tmp_path / "id_unused"
    from healthcheck.probe.sandbox import generate_key

    generate_key(key)

    completed = run_module(
        "probe",
        "--json",
        "--timeout",
        "3",
        "-i",
        str(key),
        "--known-hosts",
        str(tmp_path / "kh"),
        f"127.0.0.1:{server.port}",
    )

    assert completed.stderr == ""
    (result,) = json.loads(completed.stdout)["results"]
    assert result["verdict"] == "SSH_ERROR"
    assert reason in result["stages"][-1]["detail"]


# A banner cannot drive the user's terminal.


HOSTILE_BANNER = b"SSH-2.0-evil\x1b]0;pwned\x07\x1b[2J\x1b[H\r\n"


def test_escape_sequences_from_the_server_are_escaped_in_human_output(line_server, run_cli) -> None:
    server = line_server(lambda conn, _: (conn.sendall(HOSTILE_BANNER), time.sleep(1)))
    target = f"127.0.0.1:{server.port}"

    human = run_cli("probe", "--no-login", "--timeout", "2", target)
    as_json = run_cli("probe", "--json", "--no-login", "--timeout", "2", target)

    assert "\x1b" not in human.stdout and "\x07" not in human.stdout
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in human.stdout
    assert as_json.result["summary"].startswith("sshd answers (SSH-2.0-evil\x1b]0;pwned\x07")
    assert "\\u001b" in as_json.stdout


def test_watch_lines_escape_the_banner_too(line_server, run_cli) -> None:
    server = line_server(lambda conn, _: (conn.sendall(HOSTILE_BANNER), time.sleep(1)))

    run = run_cli("probe", "--watch", "1", "--rounds", "1", "--no-login", "--timeout", "2", f"127.0.0.1:{server.port}")

    assert "\x1b" not in run.stdout and "\\x1b" in run.stdout


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("loopback behaviour measured on Linux")


def test_a_retry_a_busy_machine_starts_too_late_keeps_the_resets_verdict(line_server, run_cli, monkeypatch) -> None:
    """On a loaded machine the last retry can begin with its deadline already spent; the resets before it are the
    answer (REFUSED), not "no time left to connect" (UNREACHABLE)."""
    from healthcheck.probe import prober
    from healthcheck.probe.stages import OutOfTime
    from healthcheck.probe.verdict import Verdict

    real_connect, calls = prober.connect, []

    def late_on_the_third(addresses, deadline):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise OutOfTime(Verdict.UNREACHABLE, "no time left to connect")
        return real_connect(addresses, deadline)

    monkeypatch.setattr(prober, "connect", late_on_the_third)
    server = line_server(accept_then_reset)

    run = run_cli("probe", "--json", "--no-login", "--timeout", "5", f"127.0.0.1:{server.port}")

    assert run.result["verdict"] == "REFUSED", run.result["summary"]
    assert "reset" in run.result["summary"] and "attempts)" in run.result["summary"]
