"""Every VM dies with the drill: on an error inside `with Vm(...)`, at its time limit, and by the stale-run sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from drill.image import Image
from drill.qemu import Accelerator, Vm, VmSpec
from drill.seed import write_seed_iso

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]


def spec(image: Image, tmp_path: Path, limit: float = 600.0) -> VmSpec:
    seed = write_seed_iso(tmp_path / "seed.iso", "#cloud-config\n{}\n", "lifecycle")
    return VmSpec(image=image, seed_iso=seed, memory_mib=256, data_disk_gib=1, time_limit_s=limit)


def test_an_error_inside_the_block_kills_the_vm(image: Image, accelerator: Accelerator, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), Vm(spec(image, tmp_path), tmp_path / "run", accelerator) as vm:
        pid = vm.pid
        assert vm.running
        # The monitor answers on its unix socket (scenario 3 resets the guest through it).
        assert "VM status: running" in vm.monitor("info status")
        raise RuntimeError("boom")

    assert not vm.running
    assert not Path(f"/proc/{pid}").exists()


def test_the_time_limit_kills_the_vm(image: Image, accelerator: Accelerator, tmp_path: Path) -> None:
    with Vm(spec(image, tmp_path, limit=3.0), tmp_path / "run", accelerator) as vm:
        deadline = time.monotonic() + 30
        while vm.running and time.monotonic() < deadline:
            time.sleep(0.2)

        assert not vm.running and vm.hit_time_limit


def test_a_killed_drill_takes_its_vm_with_it(image: Image, accelerator: Accelerator, tmp_path: Path) -> None:
    """SIGKILL to the drill process gives no chance to clean up: PR_SET_PDEATHSIG still takes qemu down."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from drill.image import Image
        from drill.qemu import Accelerator, Vm, VmSpec
        spec = VmSpec(image=Image(Path({str(image.folder)!r})), seed_iso=Path({str(tmp_path / "seed.iso")!r}),
                      memory_mib=256, data_disk_gib=1)
        vm = Vm(spec, Path({str(tmp_path / "run")!r}), Accelerator({accelerator.args!r}, "test"))
        vm.start()
        print(vm.pid, flush=True)
        time.sleep(600)
        """
    )
    write_seed_iso(tmp_path / "seed.iso", "#cloud-config\n{}\n", "lifecycle")
    drill = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert drill.stdout is not None
    pid = int(drill.stdout.readline())
    assert Path(f"/proc/{pid}").exists()

    os.kill(drill.pid, signal.SIGKILL)
    drill.wait()

    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists()
