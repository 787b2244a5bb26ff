"""The drill's VM tests: skipped, with the reason, where qemu or debootstrap cannot run; no stray qemu, ever."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from drill.image import Image, Recipe, cache_root, ensure_image, missing_tools
from drill.qemu import QEMU, VM_NAME, Accelerator, choose_accelerator

# Read before the autouse fixture points HOME at a temporary folder: the image
# cache is the machine's, shared by every run (CI on the same machine reuses it).
MACHINE_CACHE = cache_root()


def vm_unavailable() -> str | None:
    missing = [tool for tool in (QEMU, *missing_tools()) if shutil.which(tool) is None]
    if not (shutil.which("genisoimage") or shutil.which("xorriso")):
        missing.append("genisoimage")
    if missing:
        return f"the drill's VM needs {', '.join(sorted(set(missing)))}: run `make vm-deps`"
    if os.geteuid() != 0:
        return "building the drill's image needs root (debootstrap, chroot)"
    return None


@pytest.fixture(autouse=True)
def vm_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINGUARD_VM_CACHE", str(MACHINE_CACHE))


@pytest.fixture(autouse=True)
def no_stray_qemu() -> Iterator[None]:
    """None of this test's VMs outlives it: a qemu we started is our child until it is reaped.

    Only our own children count: other sessions on the machine may run drill VMs of their own.
    """
    yield
    ours = ["pgrep", "-P", str(os.getpid()), "-f", f"process={VM_NAME}"]
    strays = subprocess.run(ours, capture_output=True, text=True, check=False)
    assert strays.stdout == "", f"qemu processes left behind: {strays.stdout.split()}"


@pytest.fixture(scope="session")
def image() -> Image:
    reason = vm_unavailable()
    if reason:
        pytest.skip(reason)
    return ensure_image(Recipe(), MACHINE_CACHE)


@pytest.fixture(scope="session")
def accelerator(image: Image) -> Accelerator:
    return choose_accelerator(image)
