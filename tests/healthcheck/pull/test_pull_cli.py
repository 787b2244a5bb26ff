"""`trainguard pull` as a subprocess against moto's S3 server on loopback."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from healthcheck.pull.dest import Destination

from .conftest import BUCKET, INSTANCE_A, INSTANCE_B, REPO, S3, local_files, pull_command, run_pull

RESULTS = {
    f"{INSTANCE_A}/metrics.csv": b"epoch,loss\n1,0.5\n",
    f"{INSTANCE_A}/checkpoints/epoch-1.pt": os.urandom(300_000),
    f"{INSTANCE_B}/log.txt": b"hello\n",
    f"{INSTANCE_B}/done.flag": b"",
}
NOT_RESULTS = {
    "trainguard/bundle-1.tar.gz": b"the stack's bundle",
    f"postmortem/{INSTANCE_A}/2026-11-29T10:00:00Z/console.txt": b"kernel: Out of memory",
    "notes/readme.txt": b"not an instance",
}


def fill(s3: S3, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put(key, body)


def test_first_pull_mirrors_every_instance_and_nothing_else(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS | NOT_RESULTS)
    dest = tmp_path / "results"

    pulled = run_pull("--bucket", BUCKET, str(dest))

    assert pulled.returncode == 0, pulled.stderr
    assert local_files(dest) == RESULTS
    assert "4 new, 0 updated, 0 unchanged" in pulled.stdout
    assert not list(dest.rglob("*.part"))
    # The local copy carries the object's time, so `ls -lt` shows when the instance produced it.
    modified = s3.client.head_object(Bucket=BUCKET, Key=f"{INSTANCE_B}/log.txt")["LastModified"].timestamp()
    assert (dest / INSTANCE_B / "log.txt").stat().st_mtime == pytest.approx(modified, abs=1)


def test_second_pull_downloads_nothing(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    assert run_pull("--bucket", BUCKET, str(dest)).returncode == 0
    inode = (dest / INSTANCE_A / "metrics.csv").stat().st_ino

    again = run_pull("--bucket", BUCKET, str(dest))

    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("0 new, 0 updated, 4 unchanged, 0 B")
    # Nothing was rewritten: a download would rename a new file (a new inode) into place.
    assert (dest / INSTANCE_A / "metrics.csv").stat().st_ino == inode


def test_a_changed_file_of_the_same_size_is_fetched(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    assert run_pull("--bucket", BUCKET, str(dest)).returncode == 0
    local = dest / INSTANCE_A / "metrics.csv"
    s3.put(f"{INSTANCE_A}/metrics.csv", b"epoch,loss\n1,0.4\n")  # the same size: only the ETag tells

    again = run_pull("--bucket", BUCKET, str(dest))

    assert again.returncode == 0, again.stderr
    assert "0 new, 1 updated, 3 unchanged" in again.stdout
    assert local.read_bytes() == b"epoch,loss\n1,0.4\n"


def test_a_deleted_local_copy_is_fetched_again_and_nothing_local_is_deleted(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    assert run_pull("--bucket", BUCKET, str(dest)).returncode == 0
    (dest / INSTANCE_B / "log.txt").unlink()
    (dest / INSTANCE_A / "my-notes.txt").write_text("mine")
    s3.client.delete_object(Bucket=BUCKET, Key=f"{INSTANCE_A}/metrics.csv")

    again = run_pull("--bucket", BUCKET, str(dest))

    assert again.returncode == 0, again.stderr
    assert "1 new, 0 updated, 2 unchanged" in again.stdout
    assert (dest / INSTANCE_B / "log.txt").read_bytes() == RESULTS[f"{INSTANCE_B}/log.txt"]
    assert (dest / INSTANCE_A / "my-notes.txt").read_text() == "mine"
    assert (dest / INSTANCE_A / "metrics.csv").exists()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_an_interrupted_pull_leaves_no_partial_file_and_the_next_run_completes(
    s3: S3, tmp_path: Path, stop: signal.Signals
) -> None:
    if stop == signal.SIGHUP and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        pytest.skip("the tests run under nohup: the pull inherits SIGHUP ignored, and keeps it so on purpose")
    big_key = f"{INSTANCE_A}/checkpoints/big.pt"
    objects = RESULTS | {big_key: os.urandom(96 * 1024 * 1024)}
    fill(s3, objects)
    dest = tmp_path / "results"
    part = dest / INSTANCE_A / "checkpoints" / ".big.pt.trainguard.part"
    pulling = subprocess.Popen(
        # One request at a time, so the big file is still arriving when the signal lands.
        pull_command("--bucket", BUCKET, "--parallel", "1", str(dest)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group: pytest's own Ctrl-C handling is not involved.
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
            assert pulling.poll() is None, pulling.communicate()
            time.sleep(0.005)
        assert part.exists(), "the big file never started to arrive"
        pulling.send_signal(stop)
        _, stderr = pulling.communicate(timeout=60)
    finally:
        pulling.kill()

    # Stopped as a shell reports it: 128 + the signal's number (kill -9 kills the interpreter itself).
    assert pulling.returncode == (-stop if stop == signal.SIGKILL else 128 + stop), stderr

    # Interrupted indeed: the big file is not there under its real name, and nothing truncated is.
    assert not (dest / big_key).exists()
    for key, body in local_files(dest).items():
        assert body == objects[key], f"{key} is not the object"
    if stop != signal.SIGKILL:
        # A clean stop removes its .part files; a kill -9 leaves a hidden one, which the next run replaces.
        assert not list(dest.rglob("*.part"))
    again = run_pull("--bucket", BUCKET, str(dest))

    assert again.returncode == 0, again.stderr
    assert local_files(dest) == objects
    assert not list(dest.rglob("*.part"))


def test_a_pull_whose_terminal_closes_keeps_what_it_fetched_and_exits_129(s3: S3, tmp_path: Path) -> None:
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        pytest.skip("the tests run under nohup: the pull inherits SIGHUP ignored, and keeps it so on purpose")
    # Listed last, so the other files are complete when it starts to arrive.
    big_key = f"{INSTANCE_B}/zz/big.pt"
    objects = RESULTS | {big_key: os.urandom(96 * 1024 * 1024)}
    fill(s3, objects)
    dest = tmp_path / "results"
    part = dest / INSTANCE_B / "zz" / ".big.pt.trainguard.part"
    controller, terminal = pty.openpty()
    pulling = subprocess.Popen(
        pull_command("--bucket", BUCKET, "--parallel", "1", str(dest)),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=os.environ | {"COLUMNS": "100", "TERM": "xterm"},
        start_new_session=True,
    )
    os.close(terminal)
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
            assert pulling.poll() is None
            # Drain the progress bar, so the pull never waits on a full terminal.
            if select.select([controller], [], [], 0.005)[0]:
                os.read(controller, 65536)
        assert part.exists(), "the big file never started to arrive"
        # The terminal goes away (writing to it now fails), and the hangup follows, as when a laptop's
        # terminal window is closed.
        os.close(controller)
        pulling.send_signal(signal.SIGHUP)
        assert pulling.wait(timeout=60) == 128 + signal.SIGHUP
    finally:
        pulling.kill()

    assert not list(dest.rglob("*.part"))
    assert set(Destination(str(dest)).manifest().entries) == set(RESULTS)
    assert local_files(dest) == RESULTS


def test_a_pull_started_under_nohup_survives_a_hangup(s3: S3, tmp_path: Path) -> None:
    big_key = f"{INSTANCE_A}/checkpoints/big.pt"
    objects = RESULTS | {big_key: os.urandom(48 * 1024 * 1024)}
    fill(s3, objects)
    dest = tmp_path / "results"
    part = dest / INSTANCE_A / "checkpoints" / ".big.pt.trainguard.part"
    pulling = subprocess.Popen(
        ["nohup", *pull_command("--bucket", BUCKET, "--parallel", "1", str(dest))],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not part.exists() and time.monotonic() < deadline and pulling.poll() is None:
            time.sleep(0.005)
        pulling.send_signal(signal.SIGHUP)
        _, errors = pulling.communicate(timeout=60)
    finally:
        pulling.kill()

    assert pulling.returncode == 0, errors
    assert local_files(dest) == objects


def test_instance_limits_the_scope_and_postmortem_adds_its_files(s3: S3, tmp_path: Path) -> None:
    postmortem_b = {f"postmortem/{INSTANCE_B}/2026-11-29T10:05:00Z/decision.json": b"{}"}
    fill(s3, RESULTS | NOT_RESULTS | postmortem_b)
    only_b = tmp_path / "only-b"
    both = tmp_path / "both"

    pulled_b = run_pull("--bucket", BUCKET, "--instance", INSTANCE_B, "--postmortem", str(only_b))
    pulled_all = run_pull("--bucket", BUCKET, "--postmortem", str(both))

    assert pulled_b.returncode == 0, pulled_b.stderr
    assert (
        local_files(only_b) == {key: body for key, body in RESULTS.items() if key.startswith(INSTANCE_B)} | postmortem_b
    )
    assert pulled_all.returncode == 0, pulled_all.stderr
    postmortem_a = {key: body for key, body in NOT_RESULTS.items() if key.startswith("postmortem/")}
    assert local_files(both) == RESULTS | postmortem_a | postmortem_b


def test_a_folder_where_a_file_belongs_stays_and_the_file_lands_beside_it(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    (dest / INSTANCE_B / "log.txt").mkdir(parents=True)  # a directory where the file should go

    pulled = run_pull("--bucket", BUCKET, str(dest))

    assert pulled.returncode == 1
    assert f"  set aside: {INSTANCE_B}/log.txt -> {INSTANCE_B}/log.from-bucket.txt (a file of yours is at " in (
        pulled.stdout
    )
    assert "4 new, 0 updated, 0 unchanged" in pulled.stdout
    assert (dest / INSTANCE_B / "log.txt").is_dir()
    assert (dest / INSTANCE_B / "log.from-bucket.txt").read_bytes() == RESULTS[f"{INSTANCE_B}/log.txt"]


def test_watch_prints_a_line_for_the_first_round_and_for_a_round_that_changed_something(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    watching = subprocess.Popen(
        pull_command("--bucket", BUCKET, "--watch", "2", "--rounds", "3", str(dest)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watching.stdout is not None
        first = watching.stdout.readline()
        s3.put(f"{INSTANCE_A}/checkpoints/epoch-2.pt", b"next epoch")
        rest, errors = watching.communicate(timeout=60)
    finally:
        watching.kill()

    assert watching.returncode == 0, errors
    assert "4 new, 0 updated, 0 unchanged" in first
    # Round 2 brings the new file; round 3 changes nothing and prints nothing.
    assert len(rest.splitlines()) == 1
    assert "1 new, 0 updated, 4 unchanged" in rest
    assert (dest / INSTANCE_A / "checkpoints" / "epoch-2.pt").read_bytes() == b"next epoch"


def test_dry_run_lists_what_would_be_downloaded_and_downloads_nothing(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"

    planned = run_pull("--bucket", BUCKET, "--dry-run", str(dest))

    assert planned.returncode == 0, planned.stderr
    assert f"would download (new): {INSTANCE_B}/log.txt" in planned.stdout
    assert "would pull 4 new, 0 updated" in planned.stdout
    assert local_files(dest) == {}


def test_the_bucket_comes_from_the_environment_then_from_the_pulumi_stack(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(s3, RESULTS)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    pulumi = fake_bin / "pulumi"
    pulumi.write_text(f"#!/bin/sh\necho '{json.dumps({'bucket_name': BUCKET, 'instance_id': INSTANCE_A})}'\n")
    pulumi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")

    from_stack = run_pull(str(tmp_path / "a"))
    monkeypatch.setenv("TRAINGUARD_BUCKET", "no-such-bucket-here")
    from_environment = run_pull(str(tmp_path / "b"))

    assert from_stack.returncode == 0, from_stack.stderr
    assert local_files(tmp_path / "a") == RESULTS
    # The environment wins over the stack: it names a bucket that does not exist.
    assert from_environment.returncode == 3
    assert from_environment.stderr == (
        "trainguard: error: bucket 'no-such-bucket-here' does not exist: check --bucket or TRAINGUARD_BUCKET\n"
    )


def test_no_bucket_is_one_line_and_exit_3(aws_credentials: str, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "TRAINGUARD_BUCKET"}
    env["PATH"] = str(tmp_path)  # no pulumi either

    pulled = run_pull(str(tmp_path / "results"), env=env)

    assert pulled.returncode == 3
    assert pulled.stderr == (
        "trainguard: error: no bucket: pass --bucket, set TRAINGUARD_BUCKET, "
        "or run in the Pulumi project with its stack selected\n"
    )


def test_no_credentials_is_one_line_and_exit_3(tmp_path: Path) -> None:
    # The autouse isolated_home fixture removed every credential and disabled the metadata service.
    pulled = run_pull("--bucket", BUCKET, str(tmp_path / "results"))

    assert pulled.returncode == 3
    assert pulled.stderr.startswith("trainguard: error: no AWS credentials to read the results bucket: ")
    assert len(pulled.stderr.splitlines()) == 1


def test_a_profile_that_does_not_exist_is_one_line_and_exit_3(tmp_path: Path) -> None:
    env = dict(os.environ, AWS_PROFILE="no-such-profile")

    pulled = run_pull("--bucket", BUCKET, str(tmp_path / "results"), env=env)

    assert pulled.returncode == 3
    assert pulled.stderr.startswith(
        "trainguard: error: the AWS configuration cannot be used to read the results bucket: "
    )
    assert "no-such-profile" in pulled.stderr
    assert len(pulled.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--bucket", "Not_A_Bucket"], "is not an S3 bucket name"),
        (["--bucket", BUCKET, "--instance", "i-nothex"], "is not an instance id"),
        (["--bucket", BUCKET, "--watch", "0"], "--watch must be between 1 and 86400"),
        (["--bucket", BUCKET, "--dry-run", "--watch", "5"], "--dry-run lists once what a pull would do"),
    ],
)
def test_bad_input_is_one_line_and_exit_3(
    aws_credentials: str, tmp_path: Path, arguments: list[str], message: str
) -> None:
    pulled = run_pull(*arguments, str(tmp_path / "results"))

    assert pulled.returncode == 3
    assert message in pulled.stderr
    assert len(pulled.stderr.splitlines()) == 1


def test_a_second_pull_into_the_same_directory_is_refused(s3: S3, tmp_path: Path) -> None:
    dest = tmp_path / "results"
    with Destination(str(dest)):
        pulled = run_pull("--bucket", BUCKET, str(dest))

    assert pulled.returncode == 3
    assert "another pull is writing into" in pulled.stderr


def test_dest_that_is_a_file_is_bad_input(s3: S3, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")

    pulled = run_pull("--bucket", BUCKET, str(tmp_path / "file"))

    assert pulled.returncode == 3
    assert "is not a directory" in pulled.stderr
