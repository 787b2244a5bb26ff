"""The pure decisions of a pull: what to download, what a key may become locally, the manifest, the bucket."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from healthcheck.errors import UsageError
from healthcheck.pull.plan import Change, Recorded, RemoteObject, dump_manifest, load_manifest, plan, unsafe_key_reason
from healthcheck.pull.render import RoundResult, summary_line
from healthcheck.pull.source import pulumi_stack_bucket, resolve_bucket

from .conftest import BUCKET, INSTANCE_A, REPO, S3, pull_command


def remote(key: str, size: int = 10, etag: str = '"e1"') -> RemoteObject:
    return RemoteObject(key=key, size=size, etag=etag, modified=0.0)


def test_plan_compares_size_and_etag_with_the_manifest_and_the_local_size() -> None:
    manifest = {
        "i-1/same": Recorded(10, '"e1"'),
        "i-1/new-etag": Recorded(10, '"e0"'),
        "i-1/truncated-here": Recorded(10, '"e1"'),
        "i-1/deleted-here": Recorded(10, '"e1"'),
    }
    local = {"i-1/same": 10, "i-1/new-etag": 10, "i-1/truncated-here": 4, "i-1/not-in-manifest": 10}
    objects = [remote(key) for key in [*manifest, "i-1/not-in-manifest"]]

    decided = plan(objects, manifest, local.get)

    assert [item.key for item in decided.unchanged] == ["i-1/same"]
    assert {d.remote.key: d.change for d in decided.downloads} == {
        "i-1/new-etag": Change.UPDATED,
        "i-1/truncated-here": Change.UPDATED,
        "i-1/deleted-here": Change.NEW,
        "i-1/not-in-manifest": Change.NEW,
    }
    assert decided.bytes_to_download == 40


@pytest.mark.parametrize(
    "key", ["i-1/../../etc/passwd", "i-1/./x", "i-1//x", "i-1/dir/", "i-1/a\\b", "i-1/model.pt.tmp", "i-1/x.part"]
)
def test_keys_that_are_not_plain_relative_files_are_skipped(key: str) -> None:
    decided = plan([remote(key)], {}, lambda _: None)

    assert unsafe_key_reason(key) is not None
    assert decided.skipped == (key,)
    assert decided.downloads == ()


def test_the_manifest_survives_a_round_trip_and_a_damaged_one_means_fetch_everything() -> None:
    entries = {"i-1/a": Recorded(3, '"x"'), "i-1/b": Recorded(0, '"y"')}

    assert load_manifest(dump_manifest(entries)) == entries
    for damaged in ("", "{", "[]", '{"version": 99, "objects": {}}', '{"version": 1, "objects": {"k": {}}}'):
        assert load_manifest(damaged) == {}


def test_summary_line_counts_everything_and_flags_failures() -> None:
    result = RoundResult(new=2, updated=1, unchanged=997, bytes=12_345_678, seconds=1.25, failed=(("k", "why"),))

    assert summary_line(result) == "2 new, 1 updated, 997 unchanged, 12.3 MB in 1.2 s, 1 FAILED"


@pytest.mark.parametrize(
    ("option", "environment", "stack", "expected"),
    [
        ("from-option", {"TRAINGUARD_BUCKET": "from-env"}, "from-stack", "from-option"),
        (None, {"TRAINGUARD_BUCKET": "from-env"}, "from-stack", "from-env"),
        (None, {}, "from-stack", "from-stack"),
    ],
)
def test_bucket_order_option_environment_stack(
    option: str | None, environment: dict[str, str], stack: str, expected: str
) -> None:
    assert resolve_bucket(option, environment, lambda: stack)[0] == expected


@pytest.mark.parametrize("name", ["ab", "Upper-case", "under_score", "-starts-with-hyphen", "two..dots", "x" * 64])
def test_a_name_that_is_no_bucket_name_is_bad_input(name: str) -> None:
    with pytest.raises(UsageError, match="is not an S3 bucket name"):
        resolve_bucket(name, {}, lambda: None)


def test_a_pulumi_that_hangs_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = tmp_path / "pulumi"
    pulumi.write_text("#!/bin/sh\nexec /bin/sleep 30\n")
    pulumi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(UsageError, match=r"did not answer in 0\.5 s"):
        pulumi_stack_bucket(timeout=0.5)


def test_a_pulumi_without_a_stack_gives_no_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = tmp_path / "pulumi"
    pulumi.write_text("#!/bin/sh\necho 'error: no stack selected' >&2\nexit 255\n")
    pulumi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))

    assert pulumi_stack_bucket() is None


def test_on_a_terminal_a_progress_bar_then_the_summary(s3: S3, tmp_path: Path) -> None:
    s3.put(f"{INSTANCE_A}/a.bin", os.urandom(50_000))
    controller, terminal = pty.openpty()
    try:
        pulling = subprocess.Popen(
            pull_command("--bucket", BUCKET, str(tmp_path / "results")),
            cwd=REPO,
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=os.environ | {"COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the pull is done
                break
            if not chunk:
                break
            shown += chunk
        assert pulling.wait(timeout=60) == 0
    finally:
        os.close(controller)

    text = shown.decode(errors="replace")
    assert "1 new, 0 updated, 0 unchanged" in text
    assert "new: " not in text  # per-file lines are for pipes
    assert "\x1b[" in text  # rich drew (and cleared) the bar
