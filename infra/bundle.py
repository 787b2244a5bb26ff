"""The on-instance bundle: every file trainguard installs on an instance, as one versioned archive (pure).

The stack uploads the archive to the results bucket at BUNDLE_PREFIX/<version>.tar.gz.
The instance's user data (infra.user_data) only writes the per-instance
environment and runs `fetch_and_apply(version)` once at first boot. A State
Manager association runs the same command on the running instances whenever
the version changes, and trainguard-apply.service re-applies the installed
bundle at every boot. So a `pulumi up` that changes an agent config or a
script reaches running instances without a restart, and the user data (which
the stack never changes on a running instance) stays a short bootstrap.

The same inputs give the same bytes (fixed times, owners and order), so the
version (a content hash) changes only when a file does.

To install another file, add one line to FILES (a file in infra/userdata/) or
GENERATED (a pure function's output).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from healthcheck import contract
from infra.agent_config import agent_config
from infra.lambda_package import package_zip

USERDATA_DIR = Path(__file__).parent / "userdata"
AGENT_CONFIG_DIR = "/opt/aws/amazon-cloudwatch-agent/etc"
APPLY = "/usr/local/sbin/trainguard-apply"
BIN, SBIN, UNITS = "/usr/local/bin", "/usr/local/sbin", "/etc/systemd/system"
EXECUTABLE, READABLE = 0o755, 0o644
# Units cannot source bundle.env; their @NAME@ placeholders are filled in from it when the bundle is built.
PLACEHOLDER = re.compile(r"@(TRAINGUARD_[A-Z_]+)@")
UNIT_SUFFIXES = (".service", ".timer", ".slice")


@dataclass(frozen=True)
class BundleFile:
    """One file as installed: absolute path on the instance, mode, content."""

    path: str
    mode: int
    content: bytes


# (file in infra/userdata/, path on the instance, mode): one line per file.
FILES: tuple[tuple[str, str, int], ...] = (
    ("trainguard-apply", APPLY, EXECUTABLE),
    ("trainguard-apply.service", f"{UNITS}/trainguard-apply.service", READABLE),
    ("trainguard-imds", contract.IMDS_HELPER, EXECUTABLE),
    ("trainguard-mount-data", f"{SBIN}/trainguard-mount-data", EXECUTABLE),
    ("trainguard-install-agent", f"{SBIN}/trainguard-install-agent", EXECUTABLE),
    ("trainguard-record-boot", f"{SBIN}/trainguard-record-boot", EXECUTABLE),
    ("trainguard-push", f"{BIN}/{contract.PUSH_COMMAND}", EXECUTABLE),
    ("trainguard-push-results.service", f"{UNITS}/trainguard-push-results.service", READABLE),
    ("trainguard-push-results.timer", f"{UNITS}/trainguard-push-results.timer", READABLE),
    ("trainguard", f"{BIN}/trainguard", EXECUTABLE),
    ("trainguard-setup-slice", f"{SBIN}/trainguard-setup-slice", EXECUTABLE),
    ("trainguard.slice", f"{UNITS}/trainguard.slice", READABLE),
    ("trainguard-training.slice", f"{UNITS}/{contract.TRAINING_SLICE}", READABLE),
    ("trainguard-guard.service", f"{UNITS}/trainguard-guard.service", READABLE),
    ("trainguard-psi.service", f"{UNITS}/trainguard-psi.service", READABLE),
    ("earlyoom", "/etc/default/earlyoom", READABLE),
)


def _agent(gpu: bool) -> bytes:
    return (json.dumps(agent_config(gpu=gpu), indent=1) + "\n").encode()


def bundle_environment() -> bytes:
    """/etc/trainguard/bundle.env: the contract's on-instance values, as shell assignments."""
    return "".join(f"{name}={value}\n" for name, value in contract.instance_environment().items()).encode()


# (absolute path on the instance, mode, pure function giving the content): one line per file. Contents are
# bytes, so a generated archive (a zip of the healthcheck package, say) fits too, if it is deterministic.
GENERATED: tuple[tuple[str, int, Callable[[], bytes]], ...] = (
    (f"{AGENT_CONFIG_DIR}/trainguard-base.json", READABLE, lambda: _agent(gpu=False)),
    (f"{AGENT_CONFIG_DIR}/trainguard-gpu.json", READABLE, lambda: _agent(gpu=True)),
    (contract.BUNDLE_ENV_FILE, READABLE, bundle_environment),
    (contract.PACKAGE_ZIP, READABLE, package_zip),
    # The worker library, alone in the folder `trainguard launch` puts on each worker's PYTHONPATH.
    (
        f"{contract.WORKER_LIBRARY_DIR}/{contract.WORKER_LIBRARY_MODULE}.py",
        READABLE,
        (Path(contract.__file__).parent / "guard" / f"{contract.WORKER_LIBRARY_MODULE}.py").read_bytes,
    ),
)


def render(text: str) -> str:
    """A unit's text with its @TRAINGUARD_...@ placeholders filled in from bundle.env's values."""
    values = contract.instance_environment()

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"no value for the placeholder {match.group(0)}")
        return values[match.group(1)]

    return PLACEHOLDER.sub(value, text)


def _source(name: str) -> bytes:
    content = (USERDATA_DIR / name).read_bytes()
    return render(content.decode()).encode() if PurePosixPath(name).suffix in UNIT_SUFFIXES else content


def bundle_files() -> tuple[BundleFile, ...]:
    """Every file of the bundle, in path order."""
    files = [BundleFile(path, mode, _source(name)) for name, path, mode in FILES]
    files += [BundleFile(path, mode, make()) for path, mode, make in GENERATED]
    return tuple(sorted(files, key=lambda f: f.path))


def archive(files: tuple[BundleFile, ...]) -> bytes:
    """A tar.gz of the files, paths relative to /, owned by root, dated 0: the same files give the same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in sorted(files, key=lambda f: f.path):
            info = tarfile.TarInfo(file.path.lstrip("/"))
            info.size, info.mode, info.mtime = len(file.content), file.mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(file.content))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def version(packed: bytes) -> str:
    """The bundle's version: a hash of its bytes."""
    return hashlib.sha256(packed).hexdigest()[:16]


def object_key(bundle_version: str) -> str:
    """Where the bundle lives in the results bucket: not under an instance id, so no instance may write it."""
    return f"{contract.BUNDLE_PREFIX}/{bundle_version}.tar.gz"


# The longest one apply can take, from the bounds its scripts set (a test reads them there): earlyoom's install
# waits for the dpkg lock up to three times (install; update, install again), the data volume may take 600 s to
# appear, the agent's download (no new try after 300 s, 120 s a try) and its install (one more lock wait), the boot
# record (two tries of 5 s to connect and 10 s to read), and a minute for everything else (systemctl, mkfs).
DPKG_LOCK_WAIT_S = 300
APPLY_WORST_S = 3 * DPKG_LOCK_WAIT_S + 600 + (300 + 120) + DPKG_LOCK_WAIT_S + 2 * (5 + 10) + 60
# The bundle's download: five tries of 10 s to connect and 60 s to read.
FETCH_WORST_S = 5 * (10 + 60)
# State Manager's run: the download, a wait for an apply already running (cloud-init's, at first boot), and its
# own apply; it ends at once when that apply was of the same version. AWS-RunShellScript allows up to 172800 s.
ASSOCIATION_TIMEOUT_S = FETCH_WORST_S + 2 * APPLY_WORST_S


def fetch_and_apply(bundle_version: str) -> str:
    """The shell command that fetches a bundle version from the bucket and applies it.

    The user data runs it at first boot and State Manager on every new
    version, possibly at the same time: each downloads to a name of its own,
    and trainguard-apply lets one run at a time. A version already applied to
    the end is neither fetched nor applied again. It reads the bucket and
    region from the instance's env file; an instance whose env predates the
    region there asks the instance metadata for it.
    """
    installed, applied = contract.INSTALLED_BUNDLE, contract.APPLIED_VERSION_FILE
    return (
        f'set -eu; if [ "$(cat {applied} 2>/dev/null || true)" = {bundle_version} ]; then '
        f'echo "trainguard: bundle {bundle_version} already applied"; exit 0; fi; '
        f". {contract.ENV_FILE}; mkdir -p {PurePosixPath(installed).parent}; "
        f"new=$(mktemp {installed}.{bundle_version}.XXXXXX); "
        f"region=${{{contract.REGION_VARIABLE}:-$({contract.IMDS_HELPER} meta-data/placement/region || true)}}; "
        "AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=5 aws s3 cp --only-show-errors --cli-connect-timeout 10 "
        '--cli-read-timeout 60 ${region:+--region "$region"} '
        f'"s3://${contract.BUCKET_VARIABLE}/{object_key(bundle_version)}" "$new"; '
        f'tar -xzf "$new" -C / {APPLY.lstrip("/")}; '
        f'exec {APPLY} "$new"'
    )
