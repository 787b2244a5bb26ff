"""Pushes that workers ask the guard for, so that the push runs outside the worker's memory limit.

A worker's trainguard_worker.push() makes push-<pid>-<n>.request in /run/trainguard/push-requests; the guard
runs `trainguard-push --now` in its own cgroup (system.slice: the AWS CLI's 50 MiB never count against the
worker, whose limit might kill it for them) and answers with push-<pid>-<n>.done: the push's exit status, a space,
its last line. Requests that arrive while a push runs are answered by the next one.

The folder belongs to root, mode 1733: any user may make a file in it, none may list it or remove another's. The
guard reads no request's content, only names of its own pattern, and writes each answer as a new file renamed
into place, never through a link a user put there.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from healthcheck.guard.host import Completed
from healthcheck.guard.trainguard_worker import write_atomically

REQUEST = re.compile(r"^(push-\d{1,10}-\d{1,20})\.request$")
ANSWER = re.compile(r"^push-\d{1,10}-\d{1,20}\.done$")
FOLDER_MODE = 0o1733
ANSWER_KEPT_S = 600.0  # a worker reads its answer within its wait; older answers go
MAX_PER_ROUND = 1000  # a flood of requests is answered a thousand at a time, by one push each
POLL_S = 1.0
# A checkpoint's push may carry a large file, and may wait for the timer's push to finish (trainguard-push's own
# default wait): longer than the kill's push, which an email waits for.
PUSH_ARGUMENTS = ("--now", "--wait", "200", "--timeout", "600")
PUSH_TIMEOUT_S = 900.0


def prepare(folder: Path) -> None:
    """Make the requests folder (root's, 1733), or check the one there is ours; OSError when it is not."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PermissionError(f"{folder} is not a folder of this user's: not taking push requests there")
    os.chmod(folder, FOLDER_MODE)


def pending(folder: Path) -> list[str]:
    """The names (without .request) of the requests waiting: regular files of the request pattern only."""
    names = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = REQUEST.match(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                names.append(match.group(1))
                if len(names) >= MAX_PER_ROUND:
                    break
    return sorted(names)


def answer(folder: Path, names: list[str], done: Completed) -> None:
    """Answer each request with the push's exit status and last line, then remove it."""
    said = done.why() if not done.ok else ((done.stdout or done.stderr).strip().splitlines() or ["pushed"])[-1]
    content = f"{done.returncode} {said}\n".encode()
    for name in names:
        with contextlib.suppress(OSError):
            write_atomically(str(folder / f"{name}.done"), content)
        with contextlib.suppress(OSError):
            (folder / f"{name}.request").unlink()


def sweep(folder: Path, now: float) -> None:
    """Remove answers older than ANSWER_KEPT_S (their workers have stopped waiting)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if ANSWER.match(entry.name) and now - entry.stat(follow_symlinks=False).st_mtime > ANSWER_KEPT_S:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


class PushServer:
    """Answers push requests in a thread of its own, so a long push never delays the guard's kill handling."""

    def __init__(
        self,
        folder: Path,
        push: Callable[[], Completed],
        log: Callable[[str], None],
        poll_s: float = POLL_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.folder, self.push, self.log, self.poll_s, self.wall = folder, push, log, poll_s, wall
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="push-requests", daemon=True)

    def start(self) -> bool:
        """Prepare the folder and start answering; False (and why, in the log) when the folder cannot be used."""
        try:
            prepare(self.folder)
        except OSError as error:
            self.log(f"trainguard-guard: push requests: {error}; workers' pushes run in their own memory")
            return False
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def serve_once(self) -> int:
        """Answer what is waiting with one push; how many requests it answered."""
        names = pending(self.folder)
        if names:
            done = self.push()
            answer(self.folder, names, done)
            self.log(f"trainguard-guard: push for {len(names)} worker request(s): {'ok' if done.ok else done.why()}")
        sweep(self.folder, self.wall())
        return len(names)

    def _serve(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.serve_once()
