"""DEST on the laptop: its manifest, written atomically, and a lock so two pulls never write into it at once."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from stat import S_ISREG
from types import TracebackType

from healthcheck.errors import UsageError
from healthcheck.pull.plan import MANIFEST_NAME, Recorded, dump_manifest, load_manifest

LOCK_NAME = ".trainguard-pull.lock"


class Destination:
    """The local mirror: DEST/<instance-id>/... for results, DEST/postmortem/<instance-id>/... for post-mortems."""

    def __init__(self, path: str) -> None:
        self.root = Path(path).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"DEST {path!r} is not a directory: name a directory (it is created when missing)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create DEST {path!r}: {error.strerror}") from None
        self._lock_fd: int | None = None

    def __enter__(self) -> Destination:
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"another pull is writing into {self.root}: wait for it, or pull elsewhere") from None
        self._lock_fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def manifest(self) -> dict[str, Recorded]:
        try:
            return load_manifest((self.root / MANIFEST_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def save_manifest(self, entries: Mapping[str, Recorded]) -> None:
        """Write to a temporary name, then rename: a crash leaves the old manifest or the new one, never half."""
        final = self.root / MANIFEST_NAME
        temporary = final.with_name(f"{MANIFEST_NAME}.part")
        temporary.write_text(dump_manifest(entries), encoding="utf-8")
        os.replace(temporary, final)

    def local_size(self, key: str) -> int | None:
        try:
            stat = (self.root / key).stat()
        except OSError:
            return None
        return stat.st_size if S_ISREG(stat.st_mode) else None
