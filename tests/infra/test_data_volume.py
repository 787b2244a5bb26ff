"""trainguard-mount-data against real loop devices, with the real blkid and mkfs: the data volume is formatted only
when blkid's low-level probe proves it blank, and anything else it finds is left byte for byte as it was.

Only mount and mountpoint are stubs (the fstab written here is the test's own, which mount would not read).
Loop devices need root and /dev/loop-control: without them the tests say so and skip.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.bundle import USERDATA_DIR
from tests.conftest import write_bundle_env

VOLUME_ID = "vol-0123456789abcdef0"
IMAGE_BYTES = 64 * 1024 * 1024
# Where ext4 keeps its superblock magic (0xEF53): the superblock at 1024, the magic 0x38 into it.
EXT4_MAGIC_OFFSET = 1024 + 0x38


@dataclass
class Volume:
    image: Path
    device: str

    def digest(self) -> str:
        return hashlib.sha256(self.image.read_bytes()).hexdigest()

    def probe(self, tag: str) -> str:
        return subprocess.run(
            ["blkid", "-p", "-s", tag, "-o", "value", self.device], capture_output=True, text=True, check=False
        ).stdout.strip()


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    """A blank 64 MiB volume: a sparse file on a loop device."""
    if shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None:
        pytest.skip("losetup and mkfs.ext4 are needed (util-linux, e2fsprogs)")
    image = tmp_path / "data.img"
    with image.open("wb") as file:
        file.truncate(IMAGE_BYTES)
    attached = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=False)
    if attached.returncode != 0:
        pytest.skip(f"no loop device here (losetup: {attached.stderr.strip()}); they need root and /dev/loop-control")
    device = attached.stdout.strip()
    try:
        yield Volume(image, device)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


@dataclass
class Mounted:
    run: subprocess.CompletedProcess[str]
    calls: str
    fstab: str


def mount_data(tmp_path: Path, device: str, blkid: str | None = None) -> Mounted:
    """trainguard-mount-data with `device` as the data volume; `blkid`: a stub's body instead of the real one."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    calls.write_text("")
    stubs = {"mount": f'echo "mount $*" >>{calls}', "mountpoint": "exit 1"}
    if blkid is not None:
        stubs["blkid"] = blkid
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    env_file, fstab = tmp_path / "env", tmp_path / "fstab"
    env_file.write_text(f"TRAINGUARD_DATA_VOLUME_ID={VOLUME_ID}\n")
    fstab.write_text("")
    data = tmp_path / "data"
    bundle_env = write_bundle_env(
        tmp_path / "bundle.env",
        TRAINGUARD_ENV_FILE=env_file,
        TRAINGUARD_DATA_MOUNT=data,
        TRAINGUARD_RESULTS_DIR=data / "results",
        TRAINGUARD_CHECKPOINTS_DIR=data / "checkpoints",
        TRAINGUARD_LOG_DIR=data / "results" / "logs",
    )
    script = (USERDATA_DIR / "trainguard-mount-data").read_text().replace("/etc/fstab", str(fstab))
    script = script.replace('for candidate in "$by_id"', f'for candidate in "{device}"')
    runner = tmp_path / "mount-data"
    runner.write_text(script)
    run = subprocess.run(
        ["sh", str(runner)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "TRAINGUARD_BUNDLE_ENV": str(bundle_env)},
    )
    return Mounted(run, calls.read_text(), fstab.read_text())


def _write(image: Path, offset: int, data: bytes) -> None:
    with image.open("r+b") as file:
        file.seek(offset)
        file.write(data)


def test_a_blank_volume_is_formatted_and_mounted_by_its_uuid(tmp_path: Path, volume: Volume) -> None:
    mounted = mount_data(tmp_path, volume.device)

    assert mounted.run.returncode == 0, mounted.run.stderr
    assert (volume.probe("TYPE"), volume.probe("LABEL")) == ("ext4", "trainguard-data")
    uuid = volume.probe("UUID")
    assert mounted.fstab == f"UUID={uuid} {tmp_path / 'data'} ext4 defaults,nofail,x-systemd.device-timeout=30s 0 2\n"
    assert mounted.calls == f"mount {tmp_path / 'data'}\n"


def test_a_volume_that_holds_a_filesystem_is_mounted_as_it_is(tmp_path: Path, volume: Volume) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-L", "results-from-before", volume.device], check=True)
    before = volume.digest()

    mounted = mount_data(tmp_path, volume.device)

    assert mounted.run.returncode == 0, mounted.run.stderr
    assert volume.digest() == before
    assert mounted.fstab.startswith(f"UUID={volume.probe('UUID')} {tmp_path / 'data'} ext4 ")


def test_an_ambiguous_volume_is_neither_formatted_nor_mounted(tmp_path: Path, volume: Volume) -> None:
    """Two signatures (swap, and an ext4 superblock's magic): blkid's plain lookup says "nothing found" (exit 2),
    which used to mean mkfs; the low-level probe says ambiguous (exit 8), and the bytes stay."""
    subprocess.run(["mkswap", "-q", volume.device], check=True, capture_output=True)
    _write(volume.image, EXT4_MAGIC_OFFSET, struct.pack("<H", 0xEF53))
    before = volume.digest()
    plain = subprocess.run(["blkid", "-c", "/dev/null", volume.device], capture_output=True, check=False)
    assert plain.returncode == 2  # what the script read as "blank" before

    mounted = mount_data(tmp_path, volume.device)

    assert mounted.run.returncode == 1
    assert "more than one signature (ambiguous, exit status 8)" in mounted.run.stderr
    assert "neither formatted nor mounted" in mounted.run.stderr
    assert volume.digest() == before
    assert (mounted.fstab, mounted.calls) == ("", "")


def test_a_volume_holding_swap_is_not_mounted_as_data(tmp_path: Path, volume: Volume) -> None:
    subprocess.run(["mkswap", "-q", volume.device], check=True, capture_output=True)
    before = volume.digest()

    mounted = mount_data(tmp_path, volume.device)

    assert mounted.run.returncode == 1
    assert "holds other that is not a filesystem (swap)" in mounted.run.stderr
    assert volume.digest() == before
    assert (mounted.fstab, mounted.calls) == ("", "")


def test_a_probe_that_fails_leaves_the_volume_alone(tmp_path: Path, volume: Volume) -> None:
    """blkid exits 4 when it cannot probe (an I/O error, a device it cannot open): not a reason to format."""
    before = volume.digest()

    mounted = mount_data(tmp_path, volume.device, blkid='echo "blkid: cannot read" >&2; exit 4')

    assert mounted.run.returncode == 1
    assert "could not probe it (exit status 4)" in mounted.run.stderr
    assert volume.digest() == before
    assert (mounted.fstab, mounted.calls) == ("", "")
