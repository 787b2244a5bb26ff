"""Workers' push requests: the guard's folder, its answers, and a worker's push() answered by a real server."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from healthcheck.guard import push_requests, trainguard_worker
from healthcheck.guard.host import Completed
from healthcheck.guard.push_requests import PushServer


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "push-requests"
    push_requests.prepare(path)
    return path


def test_the_folder_lets_anyone_ask_and_no_one_list(folder: Path) -> None:
    mode = stat.S_IMODE(folder.stat().st_mode)

    assert mode == 0o1733
    push_requests.prepare(folder)  # again, as a restarted guard does


def test_a_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "push-requests").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(PermissionError, match="is not a folder of this user's"):
        push_requests.prepare(tmp_path / "push-requests")


def test_only_regular_files_of_the_request_pattern_are_requests(folder: Path, tmp_path: Path) -> None:
    (folder / "push-12-345.request").write_text("")
    (folder / "push-13-1.request").symlink_to(tmp_path)
    (folder / "evil name.request").write_text("")
    (folder / "push-1-2.done").write_text("0 old")

    assert push_requests.pending(folder) == ["push-12-345"]


def test_an_answer_is_never_written_through_a_link_someone_planted(folder: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (folder / "push-7-1.request").write_text("")
    (folder / "push-7-1.done").symlink_to(victim)

    push_requests.answer(folder, ["push-7-1"], Completed(0, "trainguard-push: pushed\n", ""))

    assert victim.read_text() == "precious"
    assert (folder / "push-7-1.done").read_text() == "0 trainguard-push: pushed\n"
    assert not (folder / "push-7-1.request").exists()


def test_one_push_answers_every_waiting_request_and_old_answers_go(folder: Path) -> None:
    for name in ("push-1-1", "push-2-1", "push-3-1"):
        (folder / f"{name}.request").write_text("")
    old = folder / "push-9-9.done"
    old.write_text("0 long ago")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    pushes: list[int] = []
    logged: list[str] = []
    server = PushServer(folder, lambda: pushes.append(1) or Completed(1, "", "S3 said no"), logged.append)

    assert server.serve_once() == 3

    assert pushes == [1]
    assert {path.name for path in folder.iterdir()} == {"push-1-1.done", "push-2-1.done", "push-3-1.done"}
    assert (folder / "push-2-1.done").read_text() == "1 S3 said no\n"
    assert logged == ["trainguard-guard: push for 3 worker request(s): S3 said no"]


def test_a_workers_push_is_answered_by_the_guards_server(folder: Path) -> None:
    server = PushServer(
        folder, lambda: Completed(0, "trainguard-push: pushed /data/results\n", ""), lambda line: None, poll_s=0.05
    )
    assert server.start()
    try:
        result = trainguard_worker.push(request_dir=str(folder), timeout_s=10)
    finally:
        server.stop()

    assert result == trainguard_worker.PushResult(True, "trainguard-push: pushed /data/results")
