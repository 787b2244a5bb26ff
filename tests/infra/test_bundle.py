"""The on-instance bundle: a deterministic archive, applied idempotently, delivered by State Manager."""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

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
        assert fetch_and_apply(version(packed)).split("; ")[3] in instance.inputs["userData"]


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
