"""The pure decisions of a pull: what to download, what a key may become locally, the manifest, the bucket."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from healthcheck.errors import UsageError
from healthcheck.pull.plan import (
    Aside,
    Change,
    LocalFile,
    Manifest,
    NewerManifest,
    Recorded,
    RemoteObject,
    dump_manifest,
    load_manifest,
    plan,
    tagged,
    twin_path,
    unsafe_key_reason,
)
from healthcheck.pull.render import RoundResult, summary_line
from healthcheck.pull.source import pulumi_stack_bucket, resolve_bucket

from .conftest import BUCKET, INSTANCE_A, REPO, S3, pull_command


def remote(key: str, size: int = 10, etag: str = '"e1"', modified: float = 1000.0) -> RemoteObject:
    return RemoteObject(key=key, size=size, etag=etag, modified=modified)


def copy(size: int = 10, modified: float = 1000.0) -> LocalFile:
    """A file as a pull leaves it: the object's size and time."""
    return LocalFile(size, modified)


def edited(size: int = 10) -> LocalFile:
    """A file written here: a time of its own, to the nanosecond."""
    return LocalFile(size, 1_765_000_000.123456)


def test_plan_compares_size_and_etag_with_the_manifest_and_the_local_copy() -> None:
    manifest = {
        "i-1/same": Recorded(10, '"e1"', 1000.0),
        "i-1/new-etag": Recorded(10, '"e0"', 900.0),
        "i-1/deleted-here": Recorded(10, '"e1"', 1000.0),
    }
    local = {"i-1/same": copy(), "i-1/new-etag": copy(modified=900.0)}
    objects = [remote(key) for key in [*manifest, "i-1/not-in-manifest"]]

    decided = plan(objects, manifest, local.get)

    assert [item.key for item in decided.unchanged] == ["i-1/same"]
    assert {d.remote.key: d.change for d in decided.downloads} == {
        "i-1/new-etag": Change.UPDATED,
        "i-1/deleted-here": Change.NEW,
        "i-1/not-in-manifest": Change.NEW,
    }
    assert decided.bytes_to_download == 30


def test_a_copy_edited_here_is_kept_and_a_changed_object_goes_beside_it() -> None:
    manifest = {"i-1/kept": Recorded(10, '"e1"', 1000.0), "i-1/both": Recorded(10, '"e0"', 900.0)}
    local = {"i-1/kept": edited(size=12), "i-1/both": edited()}

    decided = plan([remote("i-1/kept"), remote("i-1/both")], manifest, local.get)

    assert decided.kept == ("i-1/kept",)
    (beside,) = decided.downloads
    assert (beside.remote.key, beside.target, beside.aside, beside.change) == (
        "i-1/both",
        "i-1/both.from-bucket",
        Aside.YOURS,
        Change.UPDATED,
    )


def test_a_file_not_in_the_manifest_is_the_users_unless_it_is_the_object() -> None:
    local = {"i-1/mine.csv": edited(), "i-1/pulled-before.csv": copy(), "i-1/dir": LocalFile(4096, 1000.0, False)}
    objects = [remote("i-1/mine.csv"), remote("i-1/pulled-before.csv"), remote("i-1/dir")]

    decided = plan(objects, {}, local.get)

    assert [(d.remote.key, d.target, d.beside) for d in decided.downloads] == [
        ("i-1/mine.csv", "i-1/mine.from-bucket.csv", "i-1/mine.csv"),
        ("i-1/dir", "i-1/dir.from-bucket", "i-1/dir"),
    ]
    # A file with the object's size and time is the pull's own copy (a manifest lost, say): recorded, not fetched.
    assert decided.adopted == (("i-1/pulled-before.csv", Recorded(10, '"e1"', 1000.0)),)
    assert [item.key for item in decided.unchanged] == ["i-1/pulled-before.csv"]


def test_a_time_that_a_coarse_disk_rounded_is_still_the_pulls_copy() -> None:
    manifest = {"i-1/fat": Recorded(10, '"e0"', 1001.0)}

    decided = plan([remote("i-1/fat")], manifest, {"i-1/fat": copy(modified=1002.0)}.get)

    assert [d.change for d in decided.downloads] == [Change.UPDATED]


def test_twins_keep_code_point_order_whatever_the_listing_order_and_later_pulls_keep_their_places() -> None:
    def casefold(path: str) -> str:
        return path.casefold()

    keys = ["i-1/run.csv", "i-1/Run.csv", "i-1/RUN.csv"]

    first = plan([remote(key) for key in keys], {}, {}.get, casefold)

    targets = {d.remote.key: d.target for d in first.downloads}
    assert targets["i-1/RUN.csv"] == "i-1/RUN.csv"  # "RUN" < "Run" < "run"
    assert targets["i-1/Run.csv"] == twin_path("i-1/Run.csv")
    assert targets["i-1/run.csv"] == twin_path("i-1/run.csv")
    assert {d.beside for d in first.downloads if d.aside is Aside.TWIN} == {"i-1/RUN.csv"}
    assert len({casefold(target) for target in targets.values()}) == 3
    # The next pull, with one more twin that sorts first: nothing already placed moves.
    manifest = {d.remote.key: d.recorded() for d in first.downloads}
    here = {casefold(d.target): copy() for d in first.downloads}
    second = plan(
        [remote(key) for key in ["i-1/RUN.CSV", *keys]], manifest, lambda path: here.get(casefold(path)), casefold
    )
    assert sorted(item.key for item in second.unchanged) == sorted(keys)
    assert [(d.remote.key, d.target) for d in second.downloads] == [("i-1/RUN.CSV", twin_path("i-1/RUN.CSV"))]


def test_twin_names_follow_from_the_key_alone_and_keep_the_extension() -> None:
    assert twin_path("i-1/metrics/run.csv").startswith("i-1/metrics/run.twin-")
    assert twin_path("i-1/metrics/run.csv").endswith(".csv")
    assert twin_path("i-1/metrics/run.csv") != twin_path("i-1/metrics/Run.csv")
    assert tagged("i-1/.hidden", "from-bucket") == "i-1/.hidden.from-bucket"
    assert tagged("i-1/README", "from-bucket") == "i-1/README.from-bucket"
    assert tagged("i-1/model.tar.gz", "from-bucket") == "i-1/model.tar.from-bucket.gz"


@pytest.mark.parametrize(
    "key", ["i-1/../../etc/passwd", "i-1/./x", "i-1//x", "i-1/dir/", "i-1/a\\b", "i-1/model.pt.tmp", "i-1/x.part"]
)
def test_keys_that_are_not_plain_relative_files_are_skipped(key: str) -> None:
    decided = plan([remote(key)], {}, lambda _: None)

    assert unsafe_key_reason(key) is not None
    assert decided.skipped == (key,)
    assert decided.downloads == ()


def test_the_manifest_survives_a_round_trip_and_a_damaged_one_means_start_afresh() -> None:
    entries = {
        "i-1/a": Recorded(3, '"x"', 1000.0),
        "i-1/b": Recorded(0, '"y"', 1000.0, "i-1/b.twin-0011aabb", Aside.TWIN),
    }

    assert load_manifest(dump_manifest(entries)) == Manifest(entries)
    assert load_manifest(dump_manifest(entries, downloading=True)).interrupted
    assert load_manifest('{"version": 1, "objects": {"i-1/a": {"size": 3, "etag": "x"}}}').entries == {
        "i-1/a": Recorded(3, "x")
    }
    for damaged in ("", "{", "[]", "[" * 100_000, '{"version": "2"}', '{"version": 2, "objects": {"k": {}}}'):
        assert load_manifest(damaged).damaged
        assert load_manifest(damaged).entries == {}
    with pytest.raises(NewerManifest):
        load_manifest('{"version": 3, "objects": {}}')


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
