"""The cloud-init NoCloud seed: user data (the drill's own part plus any other), as a `cidata` ISO.

`user_data()` is pure: it joins the drill's cloud-config (the login user and
its key, the SSH host key the host verifies, extra files) with the stack's
real user data (a bootstrap script or cloud-config, given as text) into one
MIME multipart document, which cloud-init runs part by part. The drill's part
merges by appending, so it adds to the other part's lists instead of
replacing them.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

# cloud-init's merge rule for the drill's part: lists append, dicts merge.
MERGE_HOW = "dict(recurse_array,no_replace)+list(append)"


@dataclass(frozen=True)
class GuestFile:
    """A file cloud-init writes in the guest before the user data's commands run."""

    content: bytes
    permissions: str = "0644"
    owner: str = "root:root"


@dataclass(frozen=True)
class Access:
    """How the host logs in and verifies the guest: the user's public key and the guest's host key pair."""

    user: str
    authorized_key: str
    host_key_private: str
    host_key_public: str


def drill_cloud_config(access: Access, files: Mapping[str, GuestFile], commands: list[str]) -> str:
    """The drill's cloud-config part (JSON is valid YAML, and needs no YAML library)."""
    config: dict[str, object] = {
        "merge_how": MERGE_HOW,
        "users": [
            {
                "name": access.user,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [access.authorized_key],
            }
        ],
        # Our own host key, so the host checks it strictly, and the boot skips
        # generating keys (12 s under emulation).
        "ssh_keys": {"ed25519_private": access.host_key_private, "ed25519_public": access.host_key_public},
        "ssh_pwauth": False,
        "write_files": [
            {
                "path": path,
                "encoding": "b64",
                "content": base64.b64encode(spec.content).decode(),
                "permissions": spec.permissions,
                "owner": spec.owner,
            }
            for path, spec in sorted(files.items())
        ],
        "runcmd": commands,
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def user_data(drill_part: str, stack_user_data: str | None = None) -> str:
    """One multipart document: the stack's user data first (when given), then the drill's part."""
    document = MIMEMultipart()
    for text in (stack_user_data, drill_part):
        if text is not None:
            document.attach(MIMEText(text, _content_type(text), "utf-8"))
    return document.as_string()


def _content_type(text: str) -> str:
    first = text.lstrip().split("\n", 1)[0]
    if first.startswith("#cloud-config"):
        return "cloud-config"
    if first.startswith("#!"):
        return "x-shellscript"
    raise ValueError(f"user data must start with #cloud-config or #!, not {first[:40]!r}")


def write_seed_iso(destination: Path, user_data_text: str, instance_id: str) -> Path:
    """A NoCloud `cidata` ISO holding user-data and meta-data (genisoimage or xorriso)."""
    staging = destination.with_suffix(".d")
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "user-data").write_text(user_data_text)
    (staging / "meta-data").write_text(f"instance-id: {instance_id}\nlocal-hostname: trainguard-drill\n")
    tool = shutil.which("genisoimage") or shutil.which("xorriso")
    if tool is None:
        raise FileNotFoundError("neither genisoimage nor xorriso is installed: run `make vm-deps`")
    prefix = [tool] if tool.endswith("genisoimage") else [tool, "-as", "mkisofs"]
    subprocess.run(
        [*prefix, "-quiet", "-output", str(destination), "-volid", "cidata", "-joliet", "-rock", str(staging)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(staging)
    return destination
