"""The VM harness without a VM: the qemu command line, the seed, the image key, the sampler, the stale-VM sweep."""

from __future__ import annotations

import email
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drill import observe, qemu, seed
from drill.image import Image, Recipe, remove_other_images
from drill.qemu import TCG, GuestForward, VmSpec
from drill.scenarios import ScenarioFailed, kept_on_failure
from drill.timeline import BANNER_OK
from tests.conftest import Server


def spec(tmp_path: Path, **changes: object) -> VmSpec:
    return VmSpec(image=Image(tmp_path / "image"), seed_iso=tmp_path / "seed.iso", **changes)  # type: ignore[arg-type]


def test_the_guest_network_is_restricted_and_every_host_port_is_loopback(tmp_path: Path) -> None:
    forwards = (GuestForward("s3", guest_port=80, host_port=45001),)
    command = qemu.qemu_command(spec(tmp_path, guest_forwards=forwards), tmp_path, TCG, 42022, 42009)

    netdev = command[command.index("-netdev") + 1].split(",")
    assert "restrict=on" in netdev
    assert "hostfwd=tcp:127.0.0.1:42022-:22" in netdev
    assert f"hostfwd=tcp:127.0.0.1:42009-:{qemu.CLOSED_GUEST_PORT}" in netdev
    assert f"guestfwd=tcp:10.0.2.100:80-cmd:{qemu.relay_command(45001)}" in netdev
    for rule in netdev:
        if rule.startswith(("hostfwd=", "guestfwd=")):
            host_side = rule.split("-", 1)[0 if rule.startswith("hostfwd=") else 1]
            # A guestfwd's relay connects only to 127.0.0.1 (tests/healthcheck/drill/test_local_aws.py).
            assert "127.0.0.1:" in host_side or host_side == f"cmd:{qemu.relay_command(45001)}", rule


def test_disks_are_throttled_like_ebs_and_the_seed_is_read_only(tmp_path: Path) -> None:
    command = qemu.qemu_command(spec(tmp_path), tmp_path, TCG, 1, 2)

    drives = [command[i + 1] for i, word in enumerate(command) if word == "-drive"]
    root, data, seed_drive = drives
    for drive in (root, data):
        assert "throttling.iops-total=300" in drive
        assert "throttling.bps-total=" in drive
    assert "root.qcow2" in root and "data.raw" in data
    assert "readonly=on" in seed_drive
    assert command[:3] == ["nice", "-n", "5"]
    assert f"file:{tmp_path / 'console.log'}" in command
    assert any(word.startswith("unix:") and "server=on" in word for word in command)
    assert "tcg,thread=multi" in command and "max" in command


def test_the_image_key_follows_every_build_input() -> None:
    base = Recipe()

    assert base.key() == Recipe().key()
    assert Recipe(packages=(*base.packages, "strace")).key() != base.key()
    assert Recipe(configure=base.configure + "\ntrue\n").key() != base.key()
    assert Recipe(suite="trixie").key() != base.key()


def test_a_new_image_removes_the_images_of_earlier_recipes_and_nothing_else(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def built(name: str) -> Path:
        folder = cache / name
        folder.mkdir(parents=True)
        for file in ("root.raw", "vmlinuz", "initrd.img"):
            (folder / file).write_bytes(b"")
        return folder

    old, new = built("debian-bookworm-0000000000000000"), built("debian-bookworm-1111111111111111")
    staging = cache / ".debian-bookworm-2222222222222222.x1y2"
    staging.mkdir()
    (cache / "runs").mkdir()

    removed = remove_other_images(cache, keep=Image(new))

    assert removed == [old]
    assert sorted(path.name for path in cache.iterdir()) == sorted([new.name, staging.name, "runs"])


def test_the_seed_carries_the_stack_user_data_and_the_drills_part() -> None:
    access = seed.Access("ubuntu", "ssh-ed25519 AAAA login", "PRIVATE", "ssh-ed25519 AAAA host")
    drill = seed.drill_cloud_config(access, {"/opt/x.py": seed.GuestFile(b"print(1)\n", "0755")}, ["echo hi"])
    document = email.message_from_string(seed.user_data(drill, "#!/bin/sh\necho bootstrap\n"))

    parts = [part for part in document.walk() if not part.is_multipart()]
    assert [part.get_content_type() for part in parts] == ["text/x-shellscript", "text/cloud-config"]
    config = json.loads(parts[1].get_payload(decode=True).decode().split("\n", 1)[1])
    assert config["merge_how"] == seed.MERGE_HOW
    assert config["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA login"]
    assert config["ssh_keys"]["ed25519_private"] == "PRIVATE"
    assert config["write_files"][0]["path"] == "/opt/x.py" and config["write_files"][0]["permissions"] == "0755"
    assert config["runcmd"] == ["echo hi"]
    with pytest.raises(ValueError, match="must start with"):
        seed.user_data(drill, "just text")


@pytest.mark.skipif(not (Path("/usr/bin/genisoimage").exists()), reason="genisoimage not installed (make vm-deps)")
def test_the_seed_iso_is_a_cidata_volume(tmp_path: Path) -> None:
    iso = seed.write_seed_iso(tmp_path / "seed.iso", "#cloud-config\n{}\n", "drill-1")

    header = iso.read_bytes()[32768 : 32768 + 2048]
    assert header[1:6] == b"CD001"
    assert header[40:72].decode().strip() == "cidata"


def test_kernel_alive_tells_a_reset_from_silence() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: the kernel answers with a reset
    with socket.socket() as listening:  # accepts in the backlog, never answers: no reset, no close
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        started = time.monotonic()
        assert observe.kernel_alive(port)
        assert not observe.kernel_alive(listening.getsockname()[1], timeout=0.5)
        assert time.monotonic() - started < 5


def test_the_sampler_sees_the_freeze_of_a_real_sshd(server: Server) -> None:
    started = time.monotonic()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    alive_port = closed.getsockname()[1]
    closed.close()
    with observe.Sampler(server.port, alive_port, lambda: time.monotonic() - started, banner_timeout=1.5) as sampler:
        _wait(lambda: len(sampler.samples) >= 2)
        server.sshd.freeze()
        try:
            _wait(lambda: any(s.banner == "HUNG" for s in sampler.samples))
        finally:
            server.sshd.thaw()
        _wait(lambda: sampler.samples[-1].banner == BANNER_OK)
    samples = list(sampler.samples)

    assert samples[0].banner == BANNER_OK and samples[0].kernel_alive
    hung = [s for s in samples if s.banner == "HUNG"]
    assert all(s.silent and s.banner_s >= 1.4 for s in hung)
    starts = [s.at_s for s in samples]
    # One sample at a time: none starts before the previous one has finished.
    assert all(b >= a + s.banner_s - 0.05 for a, b, s in zip(starts, starts[1:], samples, strict=False))


def _wait(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_the_sweep_kills_a_vm_whose_drill_died_and_nothing_else(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    orphan_dir, other_dir = runs / "orphan", runs / "other"
    orphaned = _fake_qemu(orphan_dir, owner=_dead_pid())
    # A live process whose pid file points at a folder its command line does not name (a reused pid).
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other_dir.mkdir(parents=True)
    (other_dir / "qemu.pid").write_text(str(unrelated.pid))
    (other_dir / "owner.pid").write_text(str(_dead_pid()))
    try:
        killed = qemu.sweep_stale_vms(runs)

        assert killed == [orphaned.pid]
        assert orphaned.wait(timeout=10) == -signal.SIGKILL
        assert unrelated.poll() is None
    finally:
        for process in (orphaned, unrelated):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_sweep_leaves_a_vm_whose_drill_is_alive(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    process = _fake_qemu(runs / "mine", owner=os.getppid())
    try:
        assert qemu.sweep_stale_vms(runs) == []
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def _fake_qemu(run_dir: Path, owner: int) -> subprocess.Popen[bytes]:
    run_dir.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(60)", str(run_dir)])
    (run_dir / "qemu.pid").write_text(str(process.pid))
    (run_dir / "owner.pid").write_text(str(owner))
    return process


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _a_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / "vm").mkdir(parents=True)
    for name in ("vm/console.log", "vm/disk.qcow2", "seed.iso", "keys"):
        (run_dir / name).write_text(name)
    return run_dir


def test_a_scenario_that_ends_well_leaves_no_run_folder(tmp_path: Path) -> None:
    run_dir = _a_run(tmp_path)

    with kept_on_failure(run_dir):
        pass

    assert not run_dir.exists()


@pytest.mark.parametrize("error", [ScenarioFailed("sshd never answered"), KeyError("a bug")], ids=["failed", "bug"])
def test_a_scenario_that_fails_keeps_only_the_guests_console(tmp_path: Path, error: Exception) -> None:
    run_dir = _a_run(tmp_path)

    with pytest.raises(type(error)) as raised, kept_on_failure(run_dir):
        raise error

    assert sorted(str(path.relative_to(run_dir)) for path in run_dir.rglob("*")) == ["vm", "vm/console.log"]
    if isinstance(error, ScenarioFailed):
        assert str(raised.value) == f"sshd never answered; the guest's console: {run_dir / 'vm' / 'console.log'}"
