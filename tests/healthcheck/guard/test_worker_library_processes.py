"""The worker library in real processes: a checkpoint killed mid-write, the push through the guard's folder or
trainguard-push, the worker's own Python 3.8, and a real cgroup v2 folder of this machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthcheck.guard import trainguard_worker as tg

LIBRARY = Path(tg.__file__)
SAMPLES = Path(__file__).parent / "samples"


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The library as the bundle installs it: trainguard_worker.py alone in its folder."""
    folder = tmp_path / "lib"
    folder.mkdir()
    shutil.copy(LIBRARY, folder / "trainguard_worker.py")
    return folder


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    return folder


def worker(installed: Path, body: str, python: str = sys.executable) -> subprocess.Popen[str]:
    """A worker process that imports the library from its installed folder only (no trainguard on its path)."""
    script = f"import sys\nsys.path.insert(0, {str(installed)!r})\nimport trainguard_worker as tg\n" + textwrap.dedent(
        body
    )
    return subprocess.Popen(
        [python, "-I", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=installed,
    )


def test_a_checkpoint_killed_while_written_leaves_the_previous_one_whole(installed: Path, results: Path) -> None:
    target = results / "model.pt"
    target.write_bytes(b"epoch 1 weights")
    process = worker(
        installed,
        f"""
        import time
        def write(path):
            with open(path, "wb") as handle:
                handle.write(b"epoch 2 " * 100000)
                handle.flush()
                print("half written", flush=True)
                time.sleep(60)
                handle.write(b"the rest")
        tg.checkpoint({str(target)!r}, write, push_now=False)
        """,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "half written\n"

    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    assert target.read_bytes() == b"epoch 1 weights"
    (left,) = results.glob(".model.pt.*.tmp")  # what the kill left: skipped by the push (*.tmp)
    assert left.name == f".model.pt.{process.pid}.tmp"

    # The next checkpoint replaces the file whole and removes what the killed writer left.
    tg.checkpoint(str(target), lambda path: Path(path).write_bytes(b"epoch 3 weights"), push_now=False)

    assert target.read_bytes() == b"epoch 3 weights"
    assert [path.name for path in results.iterdir()] == ["model.pt"]


def test_a_kill_during_the_push_keeps_the_new_checkpoint(installed: Path, tmp_path: Path) -> None:
    requests = tmp_path / "requests"
    requests.mkdir()
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    process = worker(
        installed,
        f"""
        tg.PUSH_REQUEST_DIR = {str(requests)!r}
        tg.checkpoint({str(target)!r}, lambda path: open(path, "wb").write(b"new"), timeout_s=60)
        """,
    )
    deadline = time.monotonic() + 20
    while not list(requests.glob("*.request")):  # renamed into place, now waiting for the guard's push
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)

    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    assert target.read_bytes() == b"new"


def test_a_writer_that_fails_leaves_nothing_behind(results: Path) -> None:
    target = results / "model.pt"
    target.write_bytes(b"old")

    def write(path: str) -> None:
        Path(path).write_bytes(b"part")
        raise RuntimeError("CUDA error")

    with pytest.raises(RuntimeError, match="CUDA error"):
        tg.checkpoint(str(target), write, push_now=False)
    assert target.read_bytes() == b"old"
    assert [path.name for path in results.iterdir()] == ["model.pt"]


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A stand-in for the guard: answers each push request in its folder with exit status 0."""
    folder = tmp_path / "push-requests"
    folder.mkdir(mode=0o1733)
    answered: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.wait(0.05):
            for request in folder.glob("*.request"):
                done = request.with_suffix(".done")
                done.write_text("0 trainguard-push: pushed /data/results to s3://bucket/i-0123456789abcdef0/\n")
                request.unlink()
                answered.append(request.stem)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield folder, answered
    stop.set()
    thread.join()


def test_the_push_is_asked_of_the_guard_and_its_answer_returned(guard: tuple[Path, list[str]]) -> None:
    folder, answered = guard

    result = tg.push(request_dir=str(folder), timeout_s=10)

    assert result == tg.PushResult(True, "trainguard-push: pushed /data/results to s3://bucket/i-0123456789abcdef0/")
    assert len(answered) == 1 and answered[0].startswith(f"push-{os.getpid()}-")


def test_a_guard_that_does_not_answer_is_a_failed_push_not_a_hang(tmp_path: Path) -> None:
    silent = tmp_path / "push-requests"
    silent.mkdir()
    started = time.monotonic()

    result = tg.push(request_dir=str(silent), timeout_s=1.0)

    assert not result.ok and "did not answer within 1 s" in result.message
    assert time.monotonic() - started < 5
    assert tg.push(request_dir=str(silent), wait=False) == tg.PushResult(True, "the guard will push")


def test_without_a_guard_it_runs_trainguard_push_itself(tmp_path: Path) -> None:
    script = tmp_path / "trainguard-push"
    script.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\necho "trainguard-push: pushed"\n')
    script.chmod(0o755)

    result = tg.push(request_dir=str(tmp_path / "no-guard"), command=str(script))

    assert result == tg.PushResult(True, "trainguard-push: pushed")
    assert (tmp_path / "args").read_text() == "--now\n"
    missing = tg.push(request_dir=str(tmp_path / "no-guard"), command=str(tmp_path / "absent"))
    assert missing == tg.PushResult(False, f"{tmp_path / 'absent'} is not installed here")


def find_python_38() -> str | None:
    """python3.8 on PATH, else one pyenv installed (found at import, before the tests' HOME is a temporary one)."""
    candidates = [shutil.which("python3.8")]
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(str(path) for path in Path(root).glob("versions/3.8*/bin/python3.8"))
    for candidate in filter(None, candidates):
        ran = subprocess.run([candidate, "-c", "print(1)"], capture_output=True, text=True, check=False)
        if ran.stdout.strip() == "1":
            return candidate
    return None


PYTHON38 = find_python_38()


def test_the_library_needs_nothing_newer_than_python_38() -> None:
    vermin = Path(sys.executable).parent / "vermin"
    checked = subprocess.run(
        [str(vermin), "-t=3.8-", "--violations", "--no-tips", str(LIBRARY)], capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_worker_on_python_38_reads_advises_and_checkpoints(installed: Path, tmp_path: Path) -> None:
    python = PYTHON38
    if python is None:
        pytest.skip("no Python 3.8 here (python3.8 on PATH or pyenv's): vermin still checks the library")
    tree = SAMPLES / "cgroup-v2-worker"
    process = worker(
        installed,
        f"""
        import json, os, sys
        reader = tg.Reader(proc={str(tree / "proc")!r}, mount={str(tree / "sys-fs-cgroup")!r},
                           path="/trainguard.slice/trainguard-training.slice/trainguard-worker-2.service")
        advisor = tg.BatchAdvisor(16, reader=reader, report_dir={str(tmp_path)!r}, environ={{}})
        sizes = [advisor.batch_size() for _ in range(3)]
        tg.checkpoint({str(tmp_path / "model.pt")!r}, lambda path: open(path, "w").write("w"), push_now=False)
        print(json.dumps({{"version": list(sys.version_info[:2]), "sizes": sizes, "fill": reader.read().fill}}))
        """,
        python=python,
    )
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    answer = json.loads(out)
    assert answer["version"] == [3, 8]
    assert answer["sizes"][0] == 16 and 0 < answer["fill"] < 1
    assert (tmp_path / "model.pt").read_text() == "w"


def cgroup2_mount() -> Path | None:
    found = tg.cgroup_v2_location(Path("/proc/self/cgroup").read_text(), Path("/proc/self/mountinfo").read_text())
    return Path(found[0]) if found else None


def test_a_worker_in_a_real_cgroup_v2_folder_reads_its_own_files(installed: Path) -> None:
    """A child cgroup of this machine's cgroup2 hierarchy, a worker moved into it: the library finds it from
    /proc/self and reads the files the kernel gives it there (memory.pressure always; the memory controller's
    files where that controller is on cgroup v2)."""
    mount = cgroup2_mount()
    if mount is None or os.geteuid() != 0 or not os.access(mount, os.W_OK):
        pytest.skip("needs root and a writable cgroup2 hierarchy")
    group = mount / f"trainguard-test-{os.getpid()}"
    group.mkdir()
    try:
        process = worker(
            installed,
            """
            import json, sys
            sys.stdin.readline()  # moved into the test's cgroup by now
            reader = tg.Reader()
            usage = reader.read()
            print(json.dumps({"cgroup": usage.cgroup, "current": usage.current, "pressure": usage.pressure.__dict__,
                              "levels": [level.name for level in usage.levels]}))
            """,
        )
        (group / "cgroup.procs").write_text(f"{process.pid}\n")
        out, err = process.communicate("go\n", timeout=60)
    finally:
        group.rmdir()

    assert process.returncode == 0, err
    answer = json.loads(out)
    assert answer["cgroup"] == str(group)
    assert set(answer["pressure"]) == {"some_avg10", "full_avg10"}
    has_memory = "memory" in (mount / "cgroup.subtree_control").read_text().split()
    assert (answer["current"] is not None) == has_memory
    assert answer["levels"][-1] == "machine"
