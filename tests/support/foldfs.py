"""A FUSE passthrough folder that folds names as a Mac's APFS does: names keep the case and the Unicode form they
were created with, and every lookup ignores both (`run.csv` finds `Run.csv`; `café` in NFD finds it in NFC).

This kernel has neither vfat nor ext4's casefold, and a Mac's destination folder is case-insensitive by default:
the pull's tests mount this over a plain folder to meet it on a real file system, through the kernel. With
`--refuse-flock`, flock(2) on its files fails with EOPNOTSUPP, as on a network folder without a lock manager.

    python -m tests.support.foldfs BACKING MOUNTPOINT [--refuse-flock]

serves in the foreground until unmounted (`fusermount -u MOUNTPOINT`). It needs root, /dev/fuse and libfuse2
(fusepy); `mounted()` starts and stops it, and `unavailable()` says why it cannot run here.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MOUNT_WAIT_S = 15.0


def fold(name: str) -> str:
    """What APFS compares: the name without case (full Unicode case folding) in one normalization form."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def unavailable() -> str | None:
    """Why the folder cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting the case-folding FUSE folder needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if shutil.which("fusermount") is None:
        return "no fusermount (Debian's fuse package)"
    try:
        import fuse  # type: ignore[import-untyped]  # noqa: F401  (fusepy finds libfuse2 when imported)
    except (ImportError, OSError) as error:
        return f"fusepy or libfuse2 is missing: {error}"
    return None


@contextlib.contextmanager
def mounted(backing: Path, mountpoint: Path, *, refuse_flock: bool = False) -> Iterator[Path]:
    """The folder mounted at `mountpoint` over `backing` for the duration; returns the mountpoint."""
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.support.foldfs", str(backing), str(mountpoint)]
    serving = subprocess.Popen(
        [*command, *(["--refuse-flock"] if refuse_flock else [])],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + MOUNT_WAIT_S
        while not os.path.ismount(mountpoint):
            if serving.poll() is not None or time.monotonic() > deadline:
                serving.kill()
                raise RuntimeError(f"the FUSE folder did not mount: {serving.communicate()[1]}")
            time.sleep(0.05)
        yield mountpoint
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], check=False, capture_output=True, timeout=30)
        try:
            serving.wait(timeout=MOUNT_WAIT_S)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.wait()


def _operations_class() -> type:
    """fusepy's Operations, subclassed here so that importing this module never needs libfuse."""
    from fuse import FuseOSError, Operations

    class FoldingPassthrough(Operations):  # type: ignore[misc]
        """Every call on `path` goes to the backing folder's entry whose name folds to the same name."""

        use_ns = True

        def __init__(self, backing: str) -> None:
            self.backing = backing

        def _real(self, path: str) -> str:
            """The backing path of `path`: each part as it exists (in any case or form), else as given."""
            real = self.backing
            for part in [part for part in path.split("/") if part]:
                candidate = os.path.join(real, part)
                if not os.path.lexists(candidate) and os.path.isdir(real):
                    wanted = fold(part)
                    candidate = next(
                        (os.path.join(real, name) for name in sorted(os.listdir(real)) if fold(name) == wanted),
                        candidate,
                    )
                real = candidate
            return real

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            found = os.lstat(self._real(path))
            names = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")
            times = {name: getattr(found, f"{name}_ns") for name in ("st_atime", "st_mtime", "st_ctime")}
            return {name: getattr(found, name) for name in names} | times

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def access(self, path: str, amode: int) -> None:
            if not os.access(self._real(path), amode):
                raise FuseOSError(errno.EACCES)

        def mkdir(self, path: str, mode: int) -> None:
            os.mkdir(self._real(path), mode)

        def rmdir(self, path: str) -> None:
            os.rmdir(self._real(path))

        def unlink(self, path: str) -> None:
            os.unlink(self._real(path))

        def create(self, path: str, mode: int, fi: object = None) -> int:
            return os.open(self._real(path), os.O_RDWR | os.O_CREAT, mode)

        def open(self, path: str, flags: int) -> int:
            return os.open(self._real(path), flags)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            os.truncate(self._real(path) if fh is None else fh, length)

        def flush(self, path: str, fh: int) -> None:
            pass

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            os.fsync(fh)

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

        def rename(self, old: str, new: str) -> None:
            """As APFS: a rename over a name that differs only in case or form replaces that entry, and the
            entry then carries the new name as given."""
            source, target = self._real(old), self._real(new)
            wanted = os.path.join(os.path.dirname(target), os.path.basename(new))
            os.replace(source, target)
            if target != wanted:
                os.rename(target, wanted)

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
            if times is None:
                os.utime(self._real(path))
            else:
                os.utime(self._real(path), ns=times)

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(self._real(path), mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(self._real(path), uid, gid)

        def statfs(self, path: str) -> dict[str, int]:
            found = os.statvfs(self._real(path))
            names = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_frsize")
            return {name: getattr(found, name) for name in names} | {"f_namemax": 255}

        def flock(self, path: str | None, fh: int, operation: int) -> None:
            """Only wired in with --refuse-flock (see _serve); else the kernel locks locally, as on a local disk."""
            raise FuseOSError(errno.EOPNOTSUPP)

    return FoldingPassthrough


def _serve(backing: str, mountpoint: str, refuse_flock: bool) -> None:
    import fuse

    operations = _operations_class()(backing)
    if refuse_flock:
        # fusepy's table of operations stops before libfuse 2.9's flock; with flock in the table, libfuse asks the
        # kernel to send flock(2) to this process instead of locking locally.
        class WithFlock(ctypes.Structure):
            _fields_ = [
                *fuse.fuse_operations._fields_,
                ("poll", ctypes.c_void_p),
                ("write_buf", ctypes.c_void_p),
                ("read_buf", ctypes.c_void_p),
                (
                    "flock",
                    ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(fuse.fuse_file_info), ctypes.c_int),
                ),
            ]

        class FuseWithFlock(fuse.FUSE):  # type: ignore[misc]
            def flock(self, path: bytes | None, fip: Any, operation: int) -> Any:
                return self.operations("flock", self._decode_optional_path(path), fip.contents.fh, operation)

        fuse.fuse_operations = WithFlock
        serve: type = FuseWithFlock
    else:
        serve = fuse.FUSE
    # No kernel caching of names or attributes: every lookup asks this process, which folds it.
    serve(
        operations,
        mountpoint,
        foreground=True,
        nothreads=True,
        fsname="foldfs",
        entry_timeout=0,
        attr_timeout=0,
        negative_timeout=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="foldfs", description=__doc__)
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--refuse-flock", action="store_true")
    args = parser.parse_args()
    _serve(os.path.abspath(args.backing), args.mountpoint, args.refuse_flock)


if __name__ == "__main__":
    main()
