"""DEST on the laptop: its lock, its manifest (written atomically), what is in it, and how it compares names.

Two pulls never write into one DEST at once (flock). Whether DEST tells
`Run.csv` from `run.csv`, or `café` in NFC from `café` in NFD, is found by
trying it in DEST itself: a Mac's APFS does not by default, a Linux disk does,
and a folder mounted from elsewhere may go either way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from stat import S_ISREG
from types import TracebackType

from healthcheck.errors import UsageError
from healthcheck.pull.plan import (
    MANIFEST_NAME,
    LocalFile,
    Manifest,
    NewerManifest,
    Recorded,
    dump_manifest,
    load_manifest,
)

LOCK_NAME = ".trainguard-pull.lock"
PROBE_PREFIX = ".trainguard-probe-"
# The hidden name a download is written to until it is complete: `.NAME.trainguard.part`.
PART_SUFFIX = ".trainguard.part"
NAME_MAX_BYTES = 255  # ext4, APFS and most others


def part_name(name: str) -> str:
    """The hidden name a file is written under until it is complete; a name too long to extend is hashed, so a
    key of 250 bytes (ext4 allows 255) still arrives."""
    hidden = f".{name}{PART_SUFFIX}"
    if len(hidden.encode()) <= NAME_MAX_BYTES:
        return hidden
    return f".{hashlib.sha256(name.encode()).hexdigest()[:32]}{PART_SUFFIX}"


def is_part_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(PART_SUFFIX)


class Destination:
    """The local mirror: DEST/<instance-id>/... for results, DEST/postmortem/<instance-id>/... for post-mortems."""

    def __init__(self, path: str) -> None:
        if not path:
            raise UsageError("DEST is empty: name a directory (it is created when missing), e.g. ~/results")
        self.root = Path(path).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"DEST {path!r} is not a directory: name a directory (it is created when missing)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create DEST {path!r}: {error.strerror}") from None
        self._lock_fd: int | None = None
        self._folds: tuple[bool, bool] | None = None  # (case-insensitive, normalization-insensitive)

    def __enter__(self) -> Destination:
        try:
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UsageError(f"cannot write into DEST {self.root}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UsageError(f"another pull is writing into {self.root}: wait for it, or pull elsewhere") from None
            # A network folder whose server has no lock manager (ENOTSUP, ENOLCK): two pulls could not be kept apart.
            raise UsageError(
                f"cannot lock DEST {self.root} ({error.strerror}): a network folder? pull into a folder on this "
                "machine's own disk"
            ) from None
        self._lock_fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def manifest(self) -> Manifest:
        """The manifest in DEST: none is an empty one; a damaged one is empty and says why; one that is not a
        file, or that a newer trainguard wrote, is bad input (rewriting it would lose what it holds)."""
        path = self.root / MANIFEST_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return Manifest()
        except OSError as error:
            raise UsageError(f"cannot read the manifest {path}: {error.strerror}: move it away") from None
        try:
            return load_manifest(data.decode("utf-8"))
        except UnicodeDecodeError:
            return Manifest(damaged="it is not UTF-8 text")
        except NewerManifest as newer:
            raise UsageError(
                f"the manifest {path} was written by a newer trainguard (version {newer.version}): upgrade "
                "trainguard, or pull into another directory"
            ) from None

    def save_manifest(self, entries: Mapping[str, Recorded], downloading: bool = False) -> None:
        """Write to a temporary name, then rename: a crash leaves the old manifest or the new one, never half. A
        write that fails (a full disk) leaves the old one and no temporary file; the OSError is the caller's."""
        final = self.root / MANIFEST_NAME
        temporary = final.with_name(f"{MANIFEST_NAME}.part")
        try:
            temporary.write_bytes(dump_manifest(entries, downloading).encode("utf-8"))
            os.replace(temporary, final)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise

    def local(self, path: str) -> LocalFile | None:
        """What is at `path` (relative to DEST), as DEST resolves the name; None when nothing is."""
        try:
            found = (self.root / path).stat()
        except OSError:
            return None
        return LocalFile(found.st_size, found.st_mtime, S_ISREG(found.st_mode))

    def fold(self, path: str) -> str:
        """`path` as DEST compares names: two paths with the same fold are one file here."""
        if self._folds is None:
            self._folds = self._probe()
        case_insensitive, form_insensitive = self._folds
        if form_insensitive:
            path = unicodedata.normalize("NFD", path)
        if case_insensitive:
            path = path.casefold()
            if form_insensitive:
                path = unicodedata.normalize("NFD", path)
        return path

    def _probe(self) -> tuple[bool, bool]:
        """Create a file named with `A` and a composed `é` in DEST, and look it up as `a` and as a decomposed `é`."""
        base = f"{PROBE_PREFIX}{secrets.token_hex(6)}-"
        created = self.root / f"{base}A\u00e9"
        try:
            os.close(os.open(created, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError:
            return True, True  # cannot tell: fold both ways, which at worst renames a twin that needed no new name
        try:
            return os.path.lexists(self.root / f"{base}a\u00e9"), os.path.lexists(self.root / f"{base}Ae\u0301")
        finally:
            created.unlink(missing_ok=True)

    def sweep_parts(self) -> None:
        """Remove the .part files a pull that was stopped mid-download left behind (kill -9, a stalled link)."""
        for folder, _, names in os.walk(self.root):
            for name in names:
                if is_part_name(name):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, name))
