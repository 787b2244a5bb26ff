"""The drill's Debian image, built with debootstrap from Debian's packages and cached by its inputs.

The cache lives outside the checkout (~/.cache/trainguard/vm/ unless
$TRAINGUARD_VM_CACHE says otherwise), in a folder named after a hash of the
recipe, so CI on the same machine reuses it and any change to the recipe
builds a new one. A build goes to a temporary folder that is renamed into place
only once complete, and a lock keeps two builds from racing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

# Debian's packages that the guest needs. libpam-systemd: without it a process
# started over SSH stays in ssh.service, and an OOM kill then stops sshd itself.
# locales: without it cloud-init's locale module fails and its status is
# "error". udev: /dev/disk/by-label for the /data mount. curl, and awscli
# below: the results push uses the AWS CLI, as the Deep Learning
# AMI has one.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "python3",
    "earlyoom",
    "locales",
    "linux-image-amd64",
    "e2fsprogs",
    "iproute2",
    "procps",
    "sudo",
    "curl",
    "ca-certificates",
    "zstd",  # initramfs-tools compresses with zstd when it can: a faster boot than gzip
)
# Installed by apt inside the chroot after debootstrap: debootstrap itself
# cannot resolve the virtual python3-cffi-backend-api-* that cloud-init's and
# awscli's python3-cryptography depend on.
LATE_PACKAGES = ("cloud-init", "awscli")

# Run in the chroot once the packages are in. The guest gets its network from
# systemd-networkd (DHCP from qemu's user network) and its /data from a disk
# labelled "data"; cloud-init reads only the NoCloud seed, never the network,
# and earlyoom stays off until the on-instance setup turns it on (scenario 1 is
# the unguarded host of the incident).
CONFIGURE = r"""
set -eu
cat >/etc/fstab <<'EOF'
/dev/vda / ext4 defaults,errors=remount-ro 0 1
LABEL=data /data ext4 defaults,nofail 0 2
EOF
mkdir -p /data
echo trainguard-drill >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 trainguard-drill\n' >/etc/hosts
cat >/etc/systemd/network/20-drill.network <<'EOF'
[Match]
Name=en* eth*
[Network]
DHCP=ipv4
EOF
systemctl enable systemd-networkd.service ssh.service
systemctl disable earlyoom.service
systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer
cat >/etc/cloud/cloud.cfg.d/90-trainguard-drill.cfg <<'EOF'
datasource_list: [NoCloud, None]
network: {config: disabled}
EOF
sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen && locale-gen >/dev/null
# cloud-init's default locale, already set: else it regenerates it at boot (90 s under emulation).
echo LANG=en_US.UTF-8 >/etc/default/locale
passwd -l root >/dev/null
rm -f /etc/ssh/ssh_host_*
apt-get clean
"""

# Mirror of Debian's packages; the only address the build reaches.
DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's content: its hash names the cache entry."""

    suite: str = "bookworm"
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = PACKAGES
    late_packages: tuple[str, ...] = LATE_PACKAGES
    configure: str = CONFIGURE
    size_gib: int = 3
    extra: dict[str, str] = field(default_factory=dict)

    def key(self) -> str:
        """A short hash of the recipe: any change to it builds another image."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    """A built image: a read-only raw root filesystem and the kernel and initrd to boot it."""

    folder: Path

    @property
    def root(self) -> Path:
        return self.folder / "root.raw"

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.img"

    @property
    def complete(self) -> bool:
        return all(path.is_file() for path in (self.root, self.kernel, self.initrd))


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says which step and what to install or fix."""


REQUIRED_TOOLS = ("debootstrap", "mkfs.ext4", "qemu-img", "chroot")


def cache_root() -> Path:
    configured = os.environ.get("TRAINGUARD_VM_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "trainguard" / "vm"


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def cached_image(recipe: Recipe, cache: Path | None = None) -> Image | None:
    """The image for this recipe if it is already built."""
    image = Image((cache or cache_root()) / f"debian-{recipe.suite}-{recipe.key()}")
    return image if image.complete else None


def ensure_image(recipe: Recipe, cache: Path | None = None, log: TextIO = sys.stderr) -> Image:
    """The cached image for this recipe, built first when there is none."""
    cache = cache or cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    image = Image(cache / f"debian-{recipe.suite}-{recipe.key()}")
    with _locked(cache / ".build.lock"):
        if image.complete:
            return image
        if os.geteuid() != 0:
            raise ImageBuildError("building the drill image needs root (debootstrap, chroot): run it as root")
        missing = missing_tools()
        if missing:
            raise ImageBuildError(f"missing {', '.join(missing)}: run `make vm-deps`")
        started = time.monotonic()
        print(f"drill: building the VM image {image.folder.name} (a few minutes, once)", file=log, flush=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{image.folder.name}.", dir=cache))
        try:
            _build(recipe, staging, log)
            staging.rename(image.folder)
        finally:
            _remove_unmounted(staging)
        print(f"drill: image built in {time.monotonic() - started:.0f}s", file=log, flush=True)
        for removed in remove_other_images(cache, keep=image):
            print(f"drill: removed {removed.name}, built from an earlier recipe", file=log, flush=True)
        return image


def remove_other_images(cache: Path, keep: Image) -> list[Path]:
    """Remove the images of other recipes once a new one is built: 3 GiB each, and a CI machine would keep
    one per change of recipe. A VM still running from one keeps its open file; only complete images go, so a
    build in progress elsewhere (a hidden staging folder) is left alone."""
    removed = []
    for folder in sorted(cache.glob("debian-*")):
        if folder != keep.folder and Image(folder).complete:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build(recipe: Recipe, staging: Path, log: TextIO) -> None:
    rootfs = staging / "rootfs"
    _step(
        "debootstrap",
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(rootfs),
            recipe.mirror,
        ],
        log,
    )
    with _chroot_mounts(rootfs):
        # No service starts inside the chroot during installation.
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
        _step(
            "apt-get install",
            ["chroot", str(rootfs), "apt-get", "install", "-y", "-q", "--no-install-recommends", *recipe.late_packages],
            log,
            env=env,
        )
        _step("configure", ["chroot", str(rootfs), "/bin/sh", "-c", recipe.configure], log, env=env)
        policy.unlink()
    boot = rootfs / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if not kernels or not initrds:
        raise ImageBuildError(f"no kernel or initrd in {boot}: is linux-image-amd64 in the package list?")
    shutil.copy2(kernels[-1], staging / "vmlinuz")
    shutil.copy2(initrds[-1], staging / "initrd.img")
    # A sparse raw file, filled from the folder: no loop device, no mount.
    _step(
        "mkfs.ext4",
        ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(staging / "root.raw"), f"{recipe.size_gib}G"],
        log,
    )
    _remove_unmounted(rootfs)


@contextlib.contextmanager
def _chroot_mounts(rootfs: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for kind, target in (("proc", "proc"), ("sysfs", "sys"), ("devtmpfs", "dev")):
            point = rootfs / target
            subprocess.run(["mount", "-t", kind, kind, str(point)], check=True)
            mounted.append(point)
        yield
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", "-l", str(point)], check=False)


def _remove_unmounted(folder: Path) -> None:
    """Remove a build folder, unless something is still mounted inside it (rm would reach the host's /dev)."""
    inside = str(folder.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        still = [line.split()[1] for line in mounts if line.split()[1].startswith(inside)]
    if still:
        raise ImageBuildError(f"left {folder} in place: {', '.join(still)} still mounted; unmount, then remove it")
    shutil.rmtree(folder, ignore_errors=True)


def _step(name: str, command: list[str], log: TextIO, env: dict[str, str] | None = None) -> None:
    print(f"drill: image: {name}", file=log, flush=True)
    # nice: other work on the machine (tests, other engineers) keeps some CPU.
    done = subprocess.run(["nice", "-n", "5", *command], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise ImageBuildError(f"{name} failed (exit {done.returncode}):\n" + "\n".join(tail))
