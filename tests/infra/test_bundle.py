"""The on-instance bundle: a deterministic archive, applied idempotently, delivered by State Manager."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from healthcheck import contract
from infra.agent_config import agent_config
from infra.bundle import (
    FILES,
    GENERATED,
    USERDATA_DIR,
    BundleFile,
    archive,
    bundle_files,
    fetch_and_apply,
    object_key,
    render,
    version,
)

INSTANCE = "aws:ec2/instance:Instance"
ASSOCIATION = "aws:ssm/association:Association"


def test_the_same_files_give_the_same_bytes_and_a_change_gives_a_new_version() -> None:
    files = bundle_files()
    changed = (*files[:-1], BundleFile(files[-1].path, files[-1].mode, files[-1].content + b"\n"))

    assert archive(files) == archive(bundle_files())
    assert version(archive(changed)) != version(archive(files))
    assert object_key(version(archive(files))) == f"trainguard/bundle/{version(archive(files))}.tar.gz"


def test_the_archive_holds_every_file_owned_by_root_with_its_mode_and_no_timestamps() -> None:
    packed = archive(bundle_files())

    assert packed[4:8] == b"\x00\x00\x00\x00"  # the gzip header's MTIME field
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        configs = {
            name: json.loads(tar.extractfile(members[name]).read())  # type: ignore[union-attr]
            for name in ("opt/aws/amazon-cloudwatch-agent/etc/trainguard-base.json",)
        }
    assert set(members) == {f.path.lstrip("/") for f in bundle_files()}
    assert all((m.uid, m.gid, m.mtime, m.isfile()) == (0, 0, 0, True) for m in members.values())
    assert members["usr/local/sbin/trainguard-apply"].mode == 0o755
    assert members["etc/systemd/system/trainguard-push-results.timer"].mode == 0o644
    assert configs["opt/aws/amazon-cloudwatch-agent/etc/trainguard-base.json"] == agent_config(False)


SHELL_SCRIPTS = [file for file in bundle_files() if file.content.startswith(b"#!/bin/sh")]


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda file: file.path.rsplit("/", 1)[-1])
def test_every_shell_script_passes_shellcheck(script: BundleFile, tmp_path: Path) -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (make system-deps installs it)")
    path = tmp_path / script.path.rsplit("/", 1)[-1]
    path.write_bytes(script.content)

    checked = subprocess.run(
        ["shellcheck", "--shell=sh", "--severity=style", str(path)], capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, checked.stdout


def test_the_instances_files_take_the_contracts_values_from_bundle_env_alone() -> None:
    """bundle.env holds the contract's on-instance values; the scripts source it and the units are filled in
    from it, so no script or unit spells a contract path out itself."""
    files = {file.path: file for file in bundle_files()}
    written = dict(line.split("=", 1) for line in files[contract.BUNDLE_ENV_FILE].content.decode().splitlines())

    assert written == contract.instance_environment()
    assert shlex.split(files[contract.BUNDLE_ENV_FILE].content.decode(), comments=True)  # valid shell words
    for script in SHELL_SCRIPTS:
        code = "\n".join(line for line in script.content.decode().splitlines() if not line.lstrip().startswith("#"))
        spelled = [value for value in written.values() if value in code.replace(contract.BUNDLE_ENV_FILE, "")]
        assert not spelled, f"{script.path} spells out {spelled}: read them from bundle.env"
    for name, path, _ in FILES:
        text = files[path].content.decode()
        assert "@TRAINGUARD_" not in text, f"{name} has a placeholder bundle.env does not fill"


def test_a_placeholder_bundle_env_does_not_fill_is_refused() -> None:
    with pytest.raises(KeyError, match="@TRAINGUARD_NO_SUCH_VALUE@"):
        render("ExecStart=@TRAINGUARD_NO_SUCH_VALUE@")


def test_every_file_in_userdata_is_in_the_table_and_nothing_else() -> None:
    assert sorted(name for name, _, _ in FILES) == sorted(p.name for p in USERDATA_DIR.iterdir())
    assert len({path for path, _, _ in GENERATED}) == len(GENERATED)


def _apply(root: Path, archive_path: Path | None) -> subprocess.CompletedProcess[str]:
    args = ["sh", str(USERDATA_DIR / "trainguard-apply")] + ([str(archive_path)] if archive_path else [])
    return subprocess.run(
        args, capture_output=True, text=True, check=False, env={**os.environ, "TRAINGUARD_ROOT": str(root)}
    )


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mode & 0o777, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and "apply.lock" not in p.name
    }


def test_apply_installs_every_file_and_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    fetched = tmp_path / "bundle.tar.gz.0123"
    fetched.write_bytes(archive(bundle_files()))

    first = _apply(root, fetched)
    once = _tree(root)
    again = _apply(root, None)  # at the next boot: the installed bundle, once more

    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert _tree(root) == once
    for file in bundle_files():
        assert once[file.path.lstrip("/")] == (file.mode, file.content)
    assert not fetched.exists()  # kept once, as the installed bundle
    assert "services not started" in first.stdout


def test_a_new_version_replaces_the_old_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old, new = tmp_path / "old.tar.gz", tmp_path / "new.tar.gz"
    files = bundle_files()
    old.write_bytes(archive(files))
    earlyoom = next(f for f in files if f.path == "/etc/default/earlyoom")
    new_bytes = archive((*[f for f in files if f is not earlyoom], BundleFile(earlyoom.path, earlyoom.mode, b"X=2\n")))
    new.write_bytes(new_bytes)

    assert _apply(root, old).returncode == 0
    assert _apply(root, new).returncode == 0

    assert (root / "etc/default/earlyoom").read_bytes() == b"X=2\n"
    assert (root / "var/lib/trainguard/bundle.tar.gz").read_bytes() == new_bytes


def test_fetch_and_apply_is_valid_shell_that_names_the_version_and_region() -> None:
    command = fetch_and_apply("0123456789abcdef")

    assert subprocess.run(["sh", "-n", "-c", command], check=False).returncode == 0
    # The region from the env file, else (an env written before it held one) from the instance metadata.
    assert "region=${TRAINGUARD_REGION:-$(/usr/local/sbin/trainguard-imds meta-data/placement/region" in command
    assert '${region:+--region "$region"}' in command
    # The user data's and State Manager's first applies may run at once: each downloads to its own name.
    assert "new=$(mktemp /var/lib/trainguard/bundle.tar.gz.0123456789abcdef.XXXXXX)" in command
    assert '"s3://$TRAINGUARD_BUCKET/trainguard/bundle/0123456789abcdef.tar.gz"' in command
    assert command.endswith('exec /usr/local/sbin/trainguard-apply "$new"')


def test_the_stack_uploads_the_bundle_and_state_manager_applies_each_version(deploy, make_settings) -> None:
    deployment = deploy(make_settings(instance_count=2))
    packed = archive(bundle_files())
    (upload,) = deployment.of_type("aws:s3/bucketObjectv2:BucketObjectv2")
    associations = deployment.of_type(ASSOCIATION)

    assert upload.inputs["key"] == f"trainguard/bundle/{version(packed)}.tar.gz"
    assert base64.b64decode(upload.inputs["contentBase64"]) == packed
    assert upload.inputs["bucket"] == deployment.outputs["bucket_name"]
    assert sorted(a.inputs["targets"][0]["values"][0] for a in associations) == sorted(
        deployment.outputs["instance_ids"]
    )
    for association in associations:
        assert association.inputs["name"] == "AWS-RunShellScript"
        assert association.inputs["targets"][0]["key"] == "InstanceIds"
        assert association.inputs["parameters"]["commands"] == fetch_and_apply(version(packed))
    for instance in deployment.of_type(INSTANCE):
        # The first boot runs the same command as State Manager.
        assert yaml.safe_load(instance.inputs["userData"])["runcmd"] == [["sh", "-c", fetch_and_apply(version(packed))]]


def test_instances_read_only_the_bundle_prefix(deploy) -> None:
    document = json.loads(deploy().named("trainguard-node-0-bundle").inputs["policy"])

    (statement,) = document["Statement"]
    assert (statement["Action"], statement["Resource"]) == (
        "s3:GetObject",
        "arn:aws:s3:::trainguard-results-20261129/trainguard/bundle/*",
    )


def test_a_new_ami_or_new_user_data_never_touches_a_running_instance(deploy) -> None:
    deployment = deploy()
    options = deployment.mocks.options["trainguard-node-0-instance"]

    assert set(options.ignore_changes or []) >= {"ami", "userData"}
    assert deployment.named("trainguard-bundle-" + version(archive(bundle_files()))).typ.startswith("aws:s3/")


def test_an_archive_already_applied_to_the_end_is_not_applied_again(tmp_path: Path) -> None:
    """State Manager's first run waits for cloud-init's apply of the same version, then has nothing to do."""
    root = tmp_path / "root"
    packed = archive(bundle_files())
    first, again, newer = (tmp_path / name for name in ("first.tar.gz", "again.tar.gz", "newer.tar.gz"))
    first.write_bytes(packed)
    assert _apply(root, first).returncode == 0
    # What an apply on an instance writes once its last step succeeded (an apply under a test root starts nothing).
    (root / contract.APPLIED_VERSION_FILE.lstrip("/")).write_text(version(packed) + "\n")
    (root / "etc/default/earlyoom").write_text("changed by hand, and kept: the apply did not run\n")
    again.write_bytes(packed)
    newer.write_bytes(archive((*bundle_files()[:-1], BundleFile("/etc/trainguard/extra", 0o644, b"x\n"))))

    skipped = _apply(root, again)
    untouched = (root / "etc/default/earlyoom").read_text()
    applied = _apply(root, newer)

    assert skipped.returncode == 0
    assert skipped.stdout == f"trainguard: bundle {version(packed)} already applied; nothing to do\n"
    assert untouched == "changed by hand, and kept: the apply did not run\n"
    assert not again.exists()
    assert applied.returncode == 0 and "installed" in applied.stdout
    assert (root / "etc/trainguard/extra").read_bytes() == b"x\n"


def test_state_manager_fetches_nothing_when_the_version_is_already_applied(tmp_path: Path) -> None:
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.write_text("")
    (bin_dir / "aws").write_text(f'#!/bin/sh\necho "aws $*" >>{calls}\n')
    (bin_dir / "aws").chmod(0o755)
    applied, env = tmp_path / "applied-version", tmp_path / "env"
    env.write_text("TRAINGUARD_BUCKET=b\nTRAINGUARD_REGION=eu-west-1\n")
    command = (
        fetch_and_apply("0123456789abcdef")
        .replace(contract.APPLIED_VERSION_FILE, str(applied))
        .replace(contract.ENV_FILE, str(env))
        .replace(str(Path(contract.INSTALLED_BUNDLE).parent), str(tmp_path))
    )

    def run() -> subprocess.CompletedProcess[str]:
        environment = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False, env=environment)

    applied.write_text("0123456789abcdef\n")
    same = run()
    applied.write_text("fedcba9876543210\n")
    other = run()

    assert (same.returncode, same.stdout) == (0, "trainguard: bundle 0123456789abcdef already applied\n")
    assert calls.read_text().count("aws s3 cp") == 1  # only for the other version
    assert other.returncode != 0  # the stub fetched nothing to unpack


def test_state_managers_timeout_covers_the_worst_apply_the_scripts_allow() -> None:
    """Every bound the apply's steps set, read from the scripts: a run cut short by State Manager is not retried."""
    from infra.bundle import APPLY_WORST_S, ASSOCIATION_TIMEOUT_S, DPKG_LOCK_WAIT_S, FETCH_WORST_S

    scripts = {name: (USERDATA_DIR / name).read_text() for name, _, _ in FILES}
    lock_waits = re.findall(
        r"DPkg::Lock::Timeout=(\d+)", scripts["trainguard-apply"] + scripts["trainguard-install-agent"]
    )
    # earlyoom: install, and on failure update and install again; the agent: one install
    assert scripts["trainguard-apply"].count("apt_install") == 3 and len(lock_waits) == 3
    assert {int(wait) for wait in lock_waits} == {DPKG_LOCK_WAIT_S}
    assert '"$waited" -ge 600' in scripts["trainguard-mount-data"]
    assert "--max-time 120 --retry 5 --retry-max-time 300" in scripts["trainguard-install-agent"]
    assert "AWS_MAX_ATTEMPTS=2" in scripts["trainguard-record-boot"]
    assert "--cli-connect-timeout 5 --cli-read-timeout 10" in scripts["trainguard-record-boot"]
    assert APPLY_WORST_S == 3 * DPKG_LOCK_WAIT_S + 600 + 300 + 120 + DPKG_LOCK_WAIT_S + 2 * (5 + 10) + 60
    assert "AWS_MAX_ATTEMPTS=5" in fetch_and_apply("0") and "--cli-connect-timeout 10 --cli-read-timeout 60" in (
        fetch_and_apply("0")
    )
    assert FETCH_WORST_S == 5 * (10 + 60)
    # a wait for an apply already running, then its own
    assert ASSOCIATION_TIMEOUT_S == FETCH_WORST_S + 2 * APPLY_WORST_S
    unit = scripts["trainguard-apply.service"]
    (timeout,) = re.findall(r"^TimeoutStartSec=(\d+)min$", unit, re.MULTILINE)
    assert int(timeout) * 60 >= APPLY_WORST_S


def test_the_association_waits_as_long_as_an_apply_can_take(deploy) -> None:
    from infra.bundle import ASSOCIATION_TIMEOUT_S

    (association,) = deploy().of_type(ASSOCIATION)

    assert association.inputs["parameters"]["executionTimeout"] == str(ASSOCIATION_TIMEOUT_S)
