"""`trainguard pull` against what a hostile bucket, a user's own files and a failing disk give it, through the real
CLI against moto's S3 server: nothing of the user's is lost, and each case is one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from healthcheck.pull.plan import MANIFEST_NAME

from .conftest import BUCKET, INSTANCE_A, INSTANCE_B, REPO, S3, local_files, pull_command, run_pull, run_pull_in, tmpfs

RESULTS = {
    f"{INSTANCE_A}/metrics.csv": b"epoch,loss\n1,0.5\n",
    f"{INSTANCE_A}/checkpoints/epoch-1.pt": b"weights" * 1000,
    f"{INSTANCE_B}/log.txt": b"hello\n",
}


def fill(s3: S3, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put(key, body)


def one_line_without_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr


# --- Nothing of the user's is overwritten ------------------------------------------------------------------------


def test_a_file_of_the_users_where_a_result_belongs_stays_and_the_result_lands_beside_it(
    s3: S3, tmp_path: Path
) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    mine = dest / INSTANCE_A / "metrics.csv"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own notes, not the instance's\n")

    pulled = run_pull("--bucket", BUCKET, str(dest))
    again = run_pull("--bucket", BUCKET, str(dest))

    assert mine.read_bytes() == b"my own notes, not the instance's\n"
    beside = dest / INSTANCE_A / "metrics.from-bucket.csv"
    assert beside.read_bytes() == RESULTS[f"{INSTANCE_A}/metrics.csv"]
    assert pulled.returncode == 1, pulled.stderr  # the user should look
    assert (
        f"  set aside: {INSTANCE_A}/metrics.csv -> {INSTANCE_A}/metrics.from-bucket.csv "
        f"(a file of yours is at {INSTANCE_A}/metrics.csv)"
    ) in pulled.stdout.splitlines()
    assert "3 new, 0 updated, 0 unchanged" in pulled.stdout
    assert "1 set aside" in pulled.stdout
    # Told once: the next pull finds the result where it put it.
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("0 new, 0 updated, 3 unchanged, 0 B")


def test_a_pulled_file_edited_here_is_kept_and_a_newer_one_from_the_bucket_lands_beside_it(
    s3: S3, tmp_path: Path
) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    assert run_pull("--bucket", BUCKET, str(dest)).returncode == 0
    edited = dest / INSTANCE_A / "metrics.csv"
    edited.write_bytes(b"epoch,loss\n1,0.5\n# my remark\n")

    unchanged_in_bucket = run_pull("--bucket", BUCKET, str(dest))
    s3.put(f"{INSTANCE_A}/metrics.csv", b"epoch,loss\n1,0.5\n2,0.4\n")
    changed_in_bucket = run_pull("--bucket", BUCKET, str(dest))

    # The bucket's copy had not changed: the edit is left alone, and said to be.
    assert unchanged_in_bucket.returncode == 0, unchanged_in_bucket.stderr
    assert "2 unchanged" in unchanged_in_bucket.stdout
    assert "1 changed here and kept" in unchanged_in_bucket.stdout
    # Both changed: the user's edit stays, the bucket's new version lands beside it.
    assert changed_in_bucket.returncode == 1
    assert edited.read_bytes() == b"epoch,loss\n1,0.5\n# my remark\n"
    assert (dest / INSTANCE_A / "metrics.from-bucket.csv").read_bytes() == b"epoch,loss\n1,0.5\n2,0.4\n"
    assert "0 new, 1 updated, 2 unchanged" in changed_in_bucket.stdout


def test_a_same_size_edit_here_is_told_by_its_time_and_kept(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    assert run_pull("--bucket", BUCKET, str(dest)).returncode == 0
    edited = dest / INSTANCE_A / "metrics.csv"
    edited.write_bytes(b"epoch,loss\n1,0.6\n")  # the same size as the pulled copy
    s3.put(f"{INSTANCE_A}/metrics.csv", b"epoch,loss\n1,0.4\n")

    again = run_pull("--bucket", BUCKET, str(dest))

    assert again.returncode == 1
    assert edited.read_bytes() == b"epoch,loss\n1,0.6\n"
    assert (dest / INSTANCE_A / "metrics.from-bucket.csv").read_bytes() == b"epoch,loss\n1,0.4\n"


def test_a_lost_manifest_fetches_nothing_again_and_overwrites_nothing(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    assert run_pull("--bucket", BUCKET, str(dest)).returncode == 0
    (dest / MANIFEST_NAME).unlink()
    inode = (dest / INSTANCE_A / "metrics.csv").stat().st_ino

    again = run_pull("--bucket", BUCKET, str(dest))

    # The files here are the pull's copies (their size and time say so): recorded again, not fetched.
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("0 new, 0 updated, 3 unchanged, 0 B")
    assert (dest / INSTANCE_A / "metrics.csv").stat().st_ino == inode
    assert set(json.loads((dest / MANIFEST_NAME).read_text())["objects"]) == set(RESULTS)


# --- Hostile keys ------------------------------------------------------------------------------------------------


def test_a_long_key_arrives_and_a_key_too_long_for_the_disk_fails_alone(s3: S3, tmp_path: Path) -> None:
    long_name = "l" * 250  # ext4 allows 255 bytes: its .part name would not fit
    too_long = "t" * 300
    fill(s3, RESULTS | {f"{INSTANCE_A}/{long_name}": b"long", f"{INSTANCE_A}/{too_long}": b"too long"})
    dest = tmp_path / "results"

    pulled = run_pull("--bucket", BUCKET, str(dest))

    assert pulled.returncode == 1
    assert "Traceback" not in pulled.stderr
    assert local_files(dest) == RESULTS | {f"{INSTANCE_A}/{long_name}": b"long"}
    assert f"  failed: {INSTANCE_A}/{too_long}: File name too long: " in pulled.stdout
    assert "4 new, 0 updated, 0 unchanged" in pulled.stdout


def test_keys_are_printed_escaped_never_raw(s3: S3, tmp_path: Path) -> None:
    """A key can hold ESC (retitle, clear or rewrite the terminal) or CR (overwrite the line that tells of it)."""
    evil = f"{INSTANCE_A}/evil\x1b]0;pwned\x07\x1b[2J.txt"
    sneaky = f"{INSTANCE_A}/ok.txt\rfailed: nothing"
    fill(s3, {evil: b"e", sneaky: b"s"})

    pulled = run_pull("--bucket", BUCKET, str(tmp_path / "results"))

    assert pulled.returncode == 0, pulled.stderr
    assert "\x1b" not in pulled.stdout
    assert "\r" not in pulled.stdout
    assert "new: i-0123456789abcdef0/evil\\x1b]0;pwned\\x07\\x1b[2J.txt" in pulled.stdout.splitlines()
    assert "new: i-0123456789abcdef0/ok.txt\\rfailed: nothing" in pulled.stdout.splitlines()


def test_an_empty_dest_is_bad_input_and_writes_nothing_into_the_current_directory(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    here = tmp_path / "cwd"
    here.mkdir()

    pulled = run_pull_in(here, "--bucket", BUCKET, "")

    assert pulled.returncode == 3
    assert pulled.stderr == (
        "trainguard: error: DEST is empty: name a directory (it is created when missing), e.g. ~/results\n"
    )
    assert list(here.iterdir()) == []


def test_an_orphan_part_of_a_killed_pull_goes_with_the_next_pull_although_its_object_is_gone(
    s3: S3, tmp_path: Path
) -> None:
    big_key = f"{INSTANCE_A}/checkpoints/big.pt"
    fill(s3, {big_key: os.urandom(64 * 1024 * 1024)})
    dest = tmp_path / "results"
    pulling = subprocess.Popen(
        pull_command("--bucket", BUCKET, "--parallel", "1", str(dest)),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(path.stat().st_size > 0 for path in dest.rglob("*.part")) and time.monotonic() < deadline:
            assert pulling.poll() is None
            time.sleep(0.005)
        pulling.send_signal(signal.SIGKILL)
        pulling.wait(timeout=30)
    finally:
        pulling.kill()
    assert list(dest.rglob("*.part")), "kill -9 left no .part file to sweep"
    s3.client.delete_object(Bucket=BUCKET, Key=big_key)

    again = run_pull("--bucket", BUCKET, str(dest))

    assert again.returncode == 0, again.stderr
    assert list(dest.rglob("*.part")) == []


# --- DEST: its manifest, its disk, its limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (b"\xff\xfe not UTF-8", "it is not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "it is nested too deep to be a manifest"),
        (b'{"version": 2, "objects": {"i-0123456789abcdef0/metrics.csv": {"size": 1e400, "etag": "x"}}}', "entry"),
        (b'{"version": 2, "objects": {"i-0123456789abcdef0/x": {"size": 1, "etag": "x", "modified": 1e400}}}', "entry"),
        (b'{"version": 2, "objects": {"../../etc/passwd": {"size": 1, "etag": "x"}}}', "entry"),
        (b"{}", "it has no version"),
    ],
    ids=["not-utf8", "nested-100000", "size-1e400", "time-1e400", "path-outside", "no-version"],
)
def test_a_damaged_manifest_is_told_and_replaced_and_nothing_is_fetched_again(
    s3: S3, tmp_path: Path, damage: bytes, why: str
) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    assert run_pull("--bucket", BUCKET, str(dest)).returncode == 0
    (dest / MANIFEST_NAME).write_bytes(damage)

    again = run_pull("--bucket", BUCKET, str(dest))
    third = run_pull("--bucket", BUCKET, str(dest))

    assert again.returncode == 0, again.stderr
    one_line_without_traceback(again.stderr)
    assert again.stderr.startswith(f"trainguard: warning: the manifest in {dest} cannot be read (")
    assert why in again.stderr
    assert again.stdout.splitlines()[-1].startswith("0 new, 0 updated, 3 unchanged, 0 B")
    assert set(json.loads((dest / MANIFEST_NAME).read_text())["objects"]) == set(RESULTS)
    assert third.stderr == ""


def test_a_manifest_that_is_a_directory_is_one_line_and_exit_3(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    (dest / MANIFEST_NAME).mkdir(parents=True)

    pulled = run_pull("--bucket", BUCKET, str(dest))

    assert pulled.returncode == 3
    assert pulled.stderr == (
        f"trainguard: error: cannot read the manifest {dest / MANIFEST_NAME}: Is a directory: move it away\n"
    )


def test_a_manifest_from_a_newer_trainguard_is_refused_and_left_as_it_is(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    dest = tmp_path / "results"
    dest.mkdir()
    newer = json.dumps({"version": 3, "objects": {}, "what version 3 records": "something"})
    (dest / MANIFEST_NAME).write_text(newer)

    pulled = run_pull("--bucket", BUCKET, str(dest))

    assert pulled.returncode == 3
    assert pulled.stderr == (
        f"trainguard: error: the manifest {dest / MANIFEST_NAME} was written by a newer trainguard (version 3): "
        "upgrade trainguard, or pull into another directory\n"
    )
    assert (dest / MANIFEST_NAME).read_text() == newer
    assert local_files(dest) == {}


def test_a_full_disk_fails_each_file_alone_and_leaves_no_part_file(s3: S3, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as dest:
        # a is the disk's size: it cannot arrive, and b, which fits, still does.
        fill(
            s3, {f"{INSTANCE_A}/a-as-big-as-the-disk.bin": os.urandom(1024 * 1024), f"{INSTANCE_A}/b.bin": b"b" * 5000}
        )

        pulled = run_pull("--bucket", BUCKET, "--parallel", "1", str(dest))
        arrived = local_files(dest)
        hidden = sorted(path.name for path in dest.rglob(".*"))

    assert pulled.returncode == 1
    assert "Traceback" not in pulled.stderr
    assert f"  failed: {INSTANCE_A}/a-as-big-as-the-disk.bin: No space left on device" in pulled.stdout.splitlines()
    assert arrived == {f"{INSTANCE_A}/b.bin": b"b" * 5000}
    assert hidden == [".trainguard-pull.json", ".trainguard-pull.lock"]  # no .part file, no temporary manifest


def test_a_disk_too_full_for_the_manifest_fetches_nothing_and_says_so(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    with tmpfs(tmp_path / "small", "1m") as dest:
        (dest / "my-big-file").write_bytes(b"m" * 1024 * 1024)  # the user's file takes the whole disk

        pulled = run_pull("--bucket", BUCKET, str(dest))
        left = sorted(path.name for path in dest.rglob("*"))

    assert pulled.returncode == 1
    assert "Traceback" not in pulled.stderr
    assert pulled.stdout.splitlines()[-1] == (
        "  the manifest could not be saved (No space left on device): the next pull looks at the files again"
    )
    assert left == [".trainguard-pull.lock", "my-big-file"]


def test_a_read_only_dest_is_one_line_and_exit_3(s3: S3, tmp_path: Path) -> None:
    fill(s3, RESULTS)
    with tmpfs(tmp_path / "ro", "1m") as dest:
        (dest / "old-results").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(dest)], check=True)

        pulled = run_pull("--bucket", BUCKET, str(dest))

    assert pulled.returncode == 3
    assert pulled.stderr == f"trainguard: error: cannot write into DEST {dest}: Read-only file system\n"


def test_parallel_is_capped_by_the_open_file_limit_and_says_so(s3: S3, tmp_path: Path) -> None:
    fill(s3, {f"{INSTANCE_A}/file-{number:03d}.bin": os.urandom(2000) for number in range(300)})
    dest = tmp_path / "results"

    def low_limit() -> None:  # as macOS's default soft limit, 256, and lower
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    pulled = subprocess.run(
        pull_command("--bucket", BUCKET, "--parallel", "256", str(dest)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=low_limit,
    )

    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stderr == (
        "trainguard: warning: pulling 22 files at once, not 256: the open-file limit is 100 (raise it with ulimit -n)\n"
    )
    assert len(local_files(dest)) == 300


# --- Exit status: could not reach AWS (4) apart from bad input (3) ----------------------------------------------


def test_help_documents_the_exit_statuses() -> None:
    helped = subprocess.run(pull_command("--help"), cwd=REPO, capture_output=True, text=True, check=True, timeout=60)

    text = " ".join(helped.stdout.split())
    assert "3 bad input" in text
    assert "4 could not reach AWS (the network, throttling, S3 answering 5xx)" in text


def test_a_bucket_that_cannot_be_reached_exits_4_not_3(aws_credentials: str, tmp_path: Path) -> None:
    # A port on loopback nothing listens on: every connection is refused, as with the network down.
    env = dict(os.environ, AWS_ENDPOINT_URL="http://127.0.0.1:9")

    pulled = subprocess.run(
        pull_command("--bucket", BUCKET, str(tmp_path / "results")),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert pulled.returncode == 4
    one_line_without_traceback(pulled.stderr)
    assert pulled.stderr.startswith(f"trainguard: error: could not list s3://{BUCKET}/: Could not connect")


def answering(status: int, code: str) -> type[BaseHTTPRequestHandler]:
    """An S3 endpoint that answers every request with one error."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"<Error><Code>{code}</Code><Message>as asked</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    return Answer


@pytest.fixture
def s3_answering(request: pytest.FixtureRequest) -> Iterator[str]:
    """An endpoint on 127.0.0.1 that answers (status, code) to everything; returns its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), answering(*request.param))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("s3_answering", "status", "message"),
    [
        ((503, "SlowDown"), 4, "could not list s3://"),
        ((500, "InternalError"), 4, "could not list s3://"),
        ((400, "InvalidArgument"), 3, "S3 refused to list s3://"),
    ],
    indirect=["s3_answering"],
    ids=["throttled-4", "5xx-4", "4xx-3"],
)
def test_throttling_and_5xx_exit_4_and_a_refusal_exits_3(
    aws_credentials: str, s3_answering: str, tmp_path: Path, status: int, message: str
) -> None:
    env = dict(os.environ, AWS_ENDPOINT_URL=s3_answering)

    pulled = run_pull("--bucket", BUCKET, str(tmp_path / "results"), env=env, timeout=120)

    assert pulled.returncode == status
    one_line_without_traceback(pulled.stderr)
    assert pulled.stderr.startswith(f"trainguard: error: {message}")
