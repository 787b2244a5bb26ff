"""trainguard-push (infra/userdata/trainguard-push), the instance's half: shellcheck, then the real script with
AWS CLI v1 from PyPI against moto's server on loopback, and a pull of what it pushed.

The instance metadata service is a fake trainguard-imds beside a copy of the script: the real one would ask
169.254.169.254, which tests never reach.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from healthcheck import contract
from infra.bundle import USERDATA_DIR
from tests.conftest import write_bundle_env

from .conftest import BUCKET, INSTANCE_A, S3, local_files, run_pull

SCRIPT = USERDATA_DIR / "trainguard-push"
AWS_V1 = Path(sys.executable).parent / "aws"


@pytest.fixture
def instance(tmp_path: Path, s3: S3) -> Path:
    """A copy of the script with a fake metadata helper beside it, and an empty /data/results; returns /data."""
    bin_dir = tmp_path / "sbin"
    bin_dir.mkdir()
    shutil.copy(SCRIPT, bin_dir / "trainguard-push")
    imds = bin_dir / "fake-imds"
    imds.write_text(
        "#!/bin/sh\n"
        f'case $1 in meta-data/instance-id) echo {INSTANCE_A} ;; meta-data/placement/region) echo "$FAKE_REGION" ;;'
        " *) exit 22 ;; esac\n"
    )
    imds.chmod(0o755)
    data = tmp_path / "data"
    (data / "results").mkdir(parents=True)
    write_bundle_env(
        data / "bundle.env",
        TRAINGUARD_ENV_FILE=data / "env",
        TRAINGUARD_RESULTS_DIR=data / "results",
        TRAINGUARD_IMDS=imds,
    )
    return data


def push(data: Path, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRAINGUARD_")}
    env |= {
        # AWS CLI v1 from PyPI (the test extras) comes first, as the Deep Learning AMI's does.
        "PATH": f"{AWS_V1.parent}:/usr/bin:/bin",
        "TRAINGUARD_BUNDLE_ENV": str(data / "bundle.env"),
        "FAKE_REGION": os.environ["AWS_DEFAULT_REGION"],
        # Not under systemd, unless a test says so: then the push moves itself into system.slice first.
        "TRAINGUARD_SYSTEMD_DIR": str(data / "no-systemd"),
    } | environment
    return subprocess.run(
        [str(data.parent / "sbin" / "trainguard-push"), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write(path: Path, body: bytes, age: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))


RECORD = f"{INSTANCE_A}/{contract.PUSH_RECORD_NAME}"


def remote_keys(s3: S3) -> set[str]:
    """The results pushed: every key but the push's own record."""
    listed = s3.client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {item["Key"] for item in listed} - {RECORD}


def push_record(s3: S3) -> dict[str, object] | None:
    try:
        body = s3.client.get_object(Bucket=BUCKET, Key=RECORD)["Body"].read()
    except s3.client.exceptions.NoSuchKey:
        return None
    return json.loads(body)  # type: ignore[no-any-return]


def test_the_aws_cli_is_version_1_as_on_the_deep_learning_ami() -> None:
    version = subprocess.run([str(AWS_V1), "--version"], capture_output=True, text=True, check=True)

    assert (version.stdout + version.stderr).startswith("aws-cli/1.")


def test_push_holds_back_files_being_written_until_now_and_the_pull_gets_what_was_pushed(
    s3: S3, instance: Path, tmp_path: Path
) -> None:
    results = instance / "results"
    settled = {"metrics.csv": b"epoch,loss\n1,0.5\n", "checkpoints/epoch-1.pt": os.urandom(100_000)}
    for name, body in settled.items():
        write(results / name, body, age=120)
    write(results / "checkpoints/epoch-2.pt.tmp", b"half a checkpoint", age=120)
    write(results / "download.part", b"half a file", age=120)
    write(results / "log [rank *0?].txt", b"still being written")  # glob characters in a recent file's name
    (instance / "env").write_text(f"TRAINGUARD_BUCKET={BUCKET}\n")

    first = push(instance)
    after_first = remote_keys(s3)
    second = push(instance, "--now")

    assert first.returncode == 0, first.stderr
    assert after_first == {f"{INSTANCE_A}/{name}" for name in settled}
    assert "1 file(s) modified in the last 30s wait for the next push" in first.stdout
    assert second.returncode == 0, second.stderr
    assert remote_keys(s3) == after_first | {f"{INSTANCE_A}/log [rank *0?].txt"}
    pulled = run_pull("--bucket", BUCKET, str(tmp_path / "laptop"))
    assert pulled.returncode == 0, pulled.stderr
    assert local_files(tmp_path / "laptop") == {f"{INSTANCE_A}/{name}": body for name, body in settled.items()} | {
        f"{INSTANCE_A}/log [rank *0?].txt": b"still being written"
    }


def test_a_push_waits_for_the_one_running_and_gives_up_after_wait(s3: S3, instance: Path) -> None:
    write(instance / "results" / "metrics.csv", b"1", age=120)
    settings = {"TRAINGUARD_BUCKET": BUCKET}
    held = os.open(instance / "results", os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running push holds
        gave_up = push(instance, "--wait", "1", **settings)
        env = (
            os.environ
            | settings
            | {"PATH": f"{AWS_V1.parent}:/usr/bin:/bin", "TRAINGUARD_BUNDLE_ENV": str(instance / "bundle.env")}
        )
        waiting = subprocess.Popen(
            [str(instance.parent / "sbin" / "trainguard-push"), "--wait", "60"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        assert waiting.poll() is None, "the second push did not wait for the first"
        assert remote_keys(s3) == set()
    finally:
        os.close(held)
    _, errors = waiting.communicate(timeout=60)

    assert gave_up.returncode == 1
    assert gave_up.stderr == "trainguard-push: another push held the lock for 1s; try again later (or --wait longer)\n"
    assert waiting.returncode == 0, errors
    assert remote_keys(s3) == {f"{INSTANCE_A}/metrics.csv"}


def test_a_push_that_ends_well_writes_its_record_last_which_status_reads(s3: S3, instance: Path) -> None:
    write(instance / "results" / "metrics.csv", b"1", age=120)
    write(instance / "results" / "now.csv", b"2")
    before = datetime.now(timezone.utc).replace(microsecond=0)

    pushed = push(instance, TRAINGUARD_BUCKET=BUCKET)

    assert pushed.returncode == 0, pushed.stderr
    record = push_record(s3)
    assert record is not None and record["held_back"] == 1
    assert before <= datetime.fromisoformat(str(record["pushed"]).replace("Z", "+00:00")) <= datetime.now(timezone.utc)


def test_a_results_file_with_the_records_name_is_told_and_kept_out(s3: S3, instance: Path) -> None:
    write(instance / "results" / contract.PUSH_RECORD_NAME, b"mine", age=120)
    write(instance / "results" / "metrics.csv", b"1", age=120)

    pushed = push(instance, TRAINGUARD_BUCKET=BUCKET)

    assert pushed.returncode == 0, pushed.stderr
    assert f"{contract.PUSH_RECORD_NAME} is not pushed: trainguard keeps that name; rename it" in pushed.stderr
    assert remote_keys(s3) == {f"{INSTANCE_A}/metrics.csv"}
    assert push_record(s3) is not None


def test_a_failed_upload_exits_1_with_a_clear_line(s3: S3, instance: Path) -> None:
    write(instance / "results" / "metrics.csv", b"1", age=120)

    failed = push(instance, TRAINGUARD_BUCKET="no-such-bucket-here")

    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == (
        f"trainguard-push: could not push {instance}/results to s3://no-such-bucket-here/{INSTANCE_A}/ "
        "(aws s3 sync failed; see above)"
    )


def test_the_region_comes_from_the_metadata_service_when_unset(s3: S3, instance: Path, tmp_path: Path) -> None:
    write(instance / "results" / "metrics.csv", b"1", age=120)
    # A shim in front of the AWS CLI records the region it is given.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "aws").write_text(f'#!/bin/sh\necho "$AWS_DEFAULT_REGION" >> {tmp_path}/regions\nexec {AWS_V1} "$@"\n')
    (shim / "aws").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in ("AWS_DEFAULT_REGION", "AWS_REGION")}

    pushed = subprocess.run(
        [str(instance.parent / "sbin" / "trainguard-push")],
        env=env
        | {
            "PATH": f"{shim}:{AWS_V1.parent}:/usr/bin:/bin",
            "TRAINGUARD_BUCKET": BUCKET,
            "TRAINGUARD_BUNDLE_ENV": str(instance / "bundle.env"),
            "FAKE_REGION": "eu-west-1",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert pushed.returncode == 0, pushed.stderr
    assert set((tmp_path / "regions").read_text().splitlines()) == {"eu-west-1"}  # the sync, then the record
    assert remote_keys(s3) == {f"{INSTANCE_A}/metrics.csv"}


@pytest.mark.parametrize(
    ("environment", "arguments", "message"),
    [
        ({}, [], "no bucket: set TRAINGUARD_BUCKET"),
        ({"TRAINGUARD_BUCKET": BUCKET, "TRAINGUARD_INSTANCE_ID": "i-../x"}, [], "is not one like i-0123456789abcdef0"),
        ({"TRAINGUARD_BUCKET": BUCKET, "TRAINGUARD_INSTANCE_ID": "i-0"}, [], "is not one like i-0123456789abcdef0"),
        (
            {"TRAINGUARD_BUCKET": BUCKET, "TRAINGUARD_INSTANCE_ID": "i-0123456789abcdef00"},
            [],
            "is not one like i-0123456789abcdef0",
        ),
        ({"TRAINGUARD_BUCKET": "my bucket"}, [], "'my bucket' is not an S3 bucket name"),
        ({"TRAINGUARD_BUCKET": "ab"}, [], "'ab' is not an S3 bucket name"),
        ({"TRAINGUARD_BUCKET": "x" * 64}, [], "is not an S3 bucket name"),
        ({"TRAINGUARD_BUCKET": "two..dots"}, [], "'two..dots' is not an S3 bucket name"),
        ({"TRAINGUARD_BUCKET": BUCKET}, ["--wait", "soon"], "--wait needs whole seconds from 0 to 86400"),
        # A number flock cannot hold failed at once, blaming a lock that was free.
        ({"TRAINGUARD_BUCKET": BUCKET}, ["--wait", "1e20"], "--wait needs whole seconds from 0 to 86400"),
        ({"TRAINGUARD_BUCKET": BUCKET}, ["--wait", "1" + "0" * 20], "--wait needs whole seconds from 0 to 86400"),
        # `timeout 0` turns the timeout off.
        ({"TRAINGUARD_BUCKET": BUCKET}, ["--timeout", "0"], "--timeout needs whole seconds from 1 to 86400"),
        ({"TRAINGUARD_BUCKET": BUCKET}, ["--timeout", "86401"], "--timeout needs whole seconds from 1 to 86400"),
        ({"TRAINGUARD_BUCKET": BUCKET}, ["--later"], "unknown argument --later"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    s3: S3, instance: Path, environment: dict[str, str], arguments: list[str], message: str
) -> None:
    refused = push(instance, *arguments, **environment)

    assert refused.returncode == 2
    assert message in refused.stderr
    assert len(refused.stderr.splitlines()) == 1


FAKE_SYSTEMD_RUN = """#!/bin/sh
# Records its arguments, then runs the command with the --setenv variables, as systemd-run would in its unit.
printf '%s\\n' "$@" >"$RECORD"
while [ $# -gt 0 ]; do
  case $1 in
    --setenv=*) export "${1#--setenv=}" ;;
    -p) shift ;;
    -*) ;;
    *) break ;;
  esac
  shift
done
exec "$@"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the move into system.slice is for root's pushes")
def test_a_root_push_from_a_training_script_moves_itself_into_system_slice(
    s3: S3, instance: Path, tmp_path: Path
) -> None:
    """A training script's push must not share training's memory pressure: it runs as a system.slice unit."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "systemd-run").write_text(FAKE_SYSTEMD_RUN)
    (fake_bin / "systemd-run").chmod(0o755)
    (tmp_path / "systemd").mkdir()
    record = tmp_path / "systemd-run.args"
    write(instance / "results" / "metrics.csv", b"epoch,loss\n1,0.5\n", age=120)
    (instance / "env").write_text(f"TRAINGUARD_BUCKET={BUCKET}\n")

    pushed = push(
        instance,
        "--now",
        PATH=f"{fake_bin}:{AWS_V1.parent}:/usr/bin:/bin",
        TRAINGUARD_SYSTEMD_DIR=str(tmp_path / "systemd"),
        TRAINGUARD_INSTANCE_ID=INSTANCE_A,
        RECORD=str(record),
    )

    assert pushed.returncode == 0, pushed.stderr
    arguments = record.read_text().splitlines()
    assert {"--wait", "--pipe", "--slice=system.slice", "MemoryMin=256M"} <= set(arguments)
    # The caller's settings travel into the unit, and the unit's push does not move again.
    assert f"--setenv=TRAINGUARD_INSTANCE_ID={INSTANCE_A}" in arguments
    assert "--setenv=TRAINGUARD_PUSH_IN_SLICE=1" in arguments
    assert remote_keys(s3) == {f"{INSTANCE_A}/metrics.csv"}


# --- Hostile names and numbers of files -------------------------------------------------------------------------


def test_a_recent_file_named_with_a_leading_dash_waits_alone(s3: S3, instance: Path) -> None:
    """The CLI read `--exclude -x.csv` as an option: every push failed while such a file was being written."""
    results = instance / "results"
    write(results / "metrics.csv", b"1", age=120)
    write(results / "-settled.csv", b"2", age=120)
    write(results / "-x.csv", b"being written")

    pushed = push(instance, TRAINGUARD_BUCKET=BUCKET)
    now = push(instance, "--now", TRAINGUARD_BUCKET=BUCKET)

    assert pushed.returncode == 0, pushed.stderr
    assert "1 file(s) modified in the last 30s wait" in pushed.stdout
    assert now.returncode == 0, now.stderr
    assert remote_keys(s3) == {f"{INSTANCE_A}/metrics.csv", f"{INSTANCE_A}/-settled.csv", f"{INSTANCE_A}/-x.csv"}


def test_a_recent_file_with_a_newline_in_its_name_holds_back_itself_not_others(s3: S3, instance: Path) -> None:
    results = instance / "results"
    write(results / "a", b"settled a", age=120)
    write(results / "b", b"settled b", age=120)
    write(results / "a\nb", b"being written")

    pushed = push(instance, TRAINGUARD_BUCKET=BUCKET)

    assert pushed.returncode == 0, pushed.stderr
    assert "1 file(s) modified in the last 30s wait" in pushed.stdout
    assert remote_keys(s3) == {f"{INSTANCE_A}/a", f"{INSTANCE_A}/b"}


def test_a_name_that_is_not_utf8_is_told_and_the_rest_is_pushed(s3: S3, instance: Path) -> None:
    results = instance / "results"
    write(results / "metrics.csv", b"1", age=120)
    write(Path(os.fsdecode(bytes(results) + b"/bad\xffname.csv")), b"latin-1 name", age=120)

    pushed = push(instance, TRAINGUARD_BUCKET=BUCKET)

    assert pushed.returncode == 0, pushed.stderr
    assert remote_keys(s3) == {f"{INSTANCE_A}/metrics.csv"}
    assert pushed.stderr == (
        "trainguard-push: not pushed, as their names are not UTF-8 (S3 keys must be): rename them\n  bad\\377name.csv\n"
    )


def seconds_to_push(instance: Path) -> float:
    started = time.monotonic()
    pushed = push(instance, TRAINGUARD_BUCKET=BUCKET)
    assert pushed.returncode == 0, pushed.stderr
    return time.monotonic() - started


def test_thousands_of_recent_files_cost_the_push_no_more_than_a_few_processes(s3: S3, instance: Path) -> None:
    """The exclude list forked once per recent file and grew quadratically: 3,000 recent files took 28 s."""
    results = instance / "results"
    write(results / "metrics.csv", b"1", age=120)
    baseline = seconds_to_push(instance)
    for number in range(3_000):
        write(results / "shards" / f"shard-{number:05d}.bin", b"x")

    with_recent = seconds_to_push(instance)

    assert with_recent - baseline < 10.0, f"3,000 recent files added {with_recent - baseline:.1f} s"
    assert remote_keys(s3) == {f"{INSTANCE_A}/metrics.csv"}


def test_hundreds_of_long_recent_paths_fit_in_no_argument_list(s3: S3, instance: Path) -> None:
    """700 recent files 3,400 bytes deep made an exclude list past the kernel's limit: "Argument list too long"."""
    results = instance / "results"
    write(results / "metrics.csv", b"1", age=120)
    deep = results.joinpath(*(f"{level:02d}" + "d" * 198 for level in range(16)))
    for number in range(700):
        write(deep / (f"{number:03d}" + "f" * 197), b"x")

    pushed = push(instance, TRAINGUARD_BUCKET=BUCKET)

    assert pushed.returncode == 0, pushed.stderr
    assert "700 file(s) modified in the last 30s wait" in pushed.stdout
    assert remote_keys(s3) == {f"{INSTANCE_A}/metrics.csv"}
