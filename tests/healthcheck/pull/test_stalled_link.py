"""Ctrl-C (or SIGTERM) ends a pull within a second or two on a link that went dead mid-download, keeps what was
complete, and exits as a shell expects: a loopback proxy between the pull and moto's S3 server stops relaying."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthcheck.pull.transfer import SMALL_OBJECT_BYTES
from tests.support.stall_proxy import StallingProxy

from .conftest import BUCKET, INSTANCE_A, REPO, S3, local_files, pull_command, run_pull

SETTLE_S = 0.5  # how long the .part file must stop growing before the link counts as dead
BUDGET_S = 2.0  # "within a second or two"


@pytest.fixture
def proxy(s3: S3) -> Iterator[StallingProxy]:
    relay = StallingProxy(int(s3.endpoint.rsplit(":", 1)[1]))
    try:
        yield relay
    finally:
        relay.close()


def wait_until_stuck(part: Path, pulling: subprocess.Popen[str], proxy: StallingProxy) -> int:
    """Wait until the link is dead and the .part file has stopped growing; return its size."""
    deadline = time.monotonic() + 60
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        assert pulling.poll() is None, pulling.communicate()
        now_size = part.stat().st_size if part.exists() else -1
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif proxy.stalled and size >= 0 and time.monotonic() - since > SETTLE_S:
            return size
        time.sleep(0.02)
    raise AssertionError(f"the download never stalled: {part} is {size} bytes")


@pytest.mark.parametrize(
    ("big_size", "stop"),
    [
        (SMALL_OBJECT_BYTES - 1, signal.SIGINT),
        (48 * 1024 * 1024, signal.SIGINT),
        (48 * 1024 * 1024, signal.SIGTERM),
    ],
    ids=["one-get-ctrl-c", "transfer-manager-ctrl-c", "transfer-manager-sigterm"],
)
def test_a_signal_on_a_dead_link_ends_the_pull_at_once_and_keeps_what_was_complete(
    s3: S3, proxy: StallingProxy, tmp_path: Path, big_size: int, stop: signal.Signals
) -> None:
    small = {f"{INSTANCE_A}/a-{number}.txt": f"result {number}\n".encode() for number in range(5)}
    # Listed last and fetched one at a time (--parallel 1): the small files are complete when it starts. With two
    # at a time a small file could still be in flight when the link dies, and so rightly not kept.
    big_key = f"{INSTANCE_A}/zz/big.pt"
    objects = small | {big_key: os.urandom(big_size)}
    for key, body in objects.items():
        s3.put(key, body)
    dest = tmp_path / "results"
    # The listing and the small files pass; the link dies a megabyte into the big file.
    proxy.stall_after(1024 * 1024)
    pulling = subprocess.Popen(
        pull_command("--bucket", BUCKET, "--parallel", "1", str(dest)),
        cwd=REPO,
        env=dict(os.environ, AWS_ENDPOINT_URL=proxy.endpoint),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stuck_at = wait_until_stuck(dest / INSTANCE_A / "zz" / ".big.pt.trainguard.part", pulling, proxy)
        sent = time.monotonic()
        pulling.send_signal(stop)
        _, errors = pulling.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        pulling.kill()

    assert 0 <= stuck_at < big_size
    assert pulling.returncode == 128 + stop, errors
    assert took < BUDGET_S, f"the pull took {took:.1f} s to stop"
    assert "Traceback" not in errors
    # What was complete stays, and is recorded; the big file is nowhere under its real name.
    assert local_files(dest) == small
    again = run_pull("--bucket", BUCKET, str(dest))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("1 new, 0 updated, 5 unchanged")
    assert local_files(dest) == objects
    assert list(dest.rglob("*.part")) == []
