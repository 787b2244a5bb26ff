"""`trainguard pull` into a folder that folds names as a Mac's APFS does (a FUSE passthrough, tests/support/foldfs.py):
keys that differ only in case or Unicode form all arrive, under names the summary tells, and stay put."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from .conftest import BUCKET, INSTANCE_A, S3, run_pull

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
TWINS = {
    f"{INSTANCE_A}/metrics/Run.csv": b"epoch,loss\n1,0.5\n",
    f"{INSTANCE_A}/metrics/run.csv": b"epoch,accuracy\n1,0.91\n2,0.93\n",
    f"{INSTANCE_A}/{NFC}.txt": b"composed",
    f"{INSTANCE_A}/{NFD}.txt": b"decomposed, longer",
    f"{INSTANCE_A}/plain.txt": b"no twin",
}


def every_file(root: Path) -> dict[str, bytes]:
    """Every visible file under root, as the folder lists it."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def test_the_folder_is_case_and_normalization_insensitive_as_apfs(folding_dest: Path) -> None:
    (folding_dest / "Run.csv").write_text("one")
    (folding_dest / f"{NFC}.txt").write_text("two")

    assert (folding_dest / "RUN.CSV").read_text() == "one"
    assert (folding_dest / f"{NFD}.txt").read_text() == "two"
    assert sorted(path.name for path in folding_dest.iterdir()) == sorted(["Run.csv", f"{NFC}.txt"])


def test_twins_both_arrive_under_names_the_summary_tells_and_the_next_pull_is_a_no_op(
    s3: S3, folding_dest: Path
) -> None:
    for key, body in TWINS.items():
        s3.put(key, body)

    first = run_pull("--bucket", BUCKET, str(folding_dest))
    second = run_pull("--bucket", BUCKET, str(folding_dest))

    arrived = every_file(folding_dest)
    # Every object's bytes are in the folder, each in a file of its own.
    assert sorted(arrived.values()) == sorted(TWINS.values())
    # The first of each pair in code-point order keeps its name ("R" before "r", a plain "e" before "é");
    # the other's name says it is a twin.
    first_of_pairs = [f"{INSTANCE_A}/metrics/Run.csv", f"{INSTANCE_A}/{NFD}.txt"]
    for key in first_of_pairs:
        assert arrived[key] == TWINS[key]
    twins = {name: body for name, body in arrived.items() if ".twin-" in name}
    assert sorted(twins.values()) == sorted([TWINS[f"{INSTANCE_A}/metrics/run.csv"], TWINS[f"{INSTANCE_A}/{NFC}.txt"]])
    assert first.returncode == 1, first.stderr  # a result under another name needs the user's eyes
    assert "5 new, 0 updated, 0 unchanged" in first.stdout
    for name in twins:
        assert f"-> {name} (this folder does not tell its name from " in first.stdout
    # Nothing flips back and forth: the second pull finds everything where the first put it.
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1].startswith("0 new, 0 updated, 5 unchanged, 0 B")
    assert every_file(folding_dest) == arrived


def test_a_twin_that_changes_in_the_bucket_is_updated_under_its_twin_name(s3: S3, folding_dest: Path) -> None:
    for key, body in TWINS.items():
        s3.put(key, body)
    assert run_pull("--bucket", BUCKET, str(folding_dest)).returncode == 1
    (twin,) = [path for path in (folding_dest / INSTANCE_A / "metrics").iterdir() if ".twin-" in path.name]
    s3.put(f"{INSTANCE_A}/metrics/run.csv", b"epoch,accuracy\n1,0.91\n2,0.93\n3,0.95\n")

    again = run_pull("--bucket", BUCKET, str(folding_dest))

    assert "0 new, 1 updated, 4 unchanged" in again.stdout, again.stderr
    assert twin.read_bytes() == b"epoch,accuracy\n1,0.91\n2,0.93\n3,0.95\n"
    assert (folding_dest / INSTANCE_A / "metrics" / "Run.csv").read_bytes() == TWINS[f"{INSTANCE_A}/metrics/Run.csv"]


def test_a_folder_that_refuses_locks_is_one_line_and_exit_3(s3: S3, unlockable_dest: Path) -> None:
    s3.put(f"{INSTANCE_A}/plain.txt", b"x")

    pulled = run_pull("--bucket", BUCKET, str(unlockable_dest))

    assert pulled.returncode == 3
    assert pulled.stderr == (
        f"trainguard: error: cannot lock DEST {unlockable_dest} (Operation not supported): a network folder? "
        "pull into a folder on this machine's own disk\n"
    )
