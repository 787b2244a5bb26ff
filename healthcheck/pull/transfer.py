"""Downloads, each into a hidden `.part` file renamed when complete, pinned to the ETag the listing gave.

Files of the multipart threshold (8 MiB) or more go through boto3's transfer
manager (s3transfer), in ranged parts; smaller ones are one GetObject in the
download's own thread, which costs less CPU than the manager's hand-offs.
So an interrupted pull (Ctrl-C, a lost network, kill -9) never leaves a
truncated file under a real name; the next pull fetches that file again.
A file is renamed into place only if what is there is still what the plan
saw (nothing, or the pull's own copy): a file that appeared meanwhile stays.
Transient errors are retried with backoff (tenacity) on top of botocore's own
retries. Every thread is a daemon: Ctrl-C on a stalled link abandons the
requests in flight instead of waiting out their timeouts. s3transfer and
tenacity are imported only by this module, which a pull imports only when
there is something to download.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, IncompleteReadError, ReadTimeoutError
from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError
from s3transfer.futures import BaseExecutor
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from healthcheck.pull.dest import part_name
from healthcheck.pull.plan import Download, LocalFile
from healthcheck.threads import DaemonThreads

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from s3transfer.futures import TransferFuture

ATTEMPTS = 4
# Below the transfer manager's multipart threshold a file is one GetObject anyway: made here, in the job's
# own thread, it skips the manager's hand-offs between threads, which cost more CPU than the request.
SMALL_OBJECT_BYTES = TransferConfig().multipart_threshold
CHUNK_BYTES = 256 * 1024
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling"})


def part_path(final: Path) -> Path:
    """The hidden name a download is written to before it is complete (a pull never mirrors *.part keys)."""
    return final.with_name(part_name(final.name))


@dataclass(frozen=True)
class Fetched:
    download: Download
    error: str | None = None


class LandingTaken(Exception):
    """Something other than what the plan saw is now where a download was to land: it is left as it is."""


def is_transient(error: BaseException) -> bool:
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code", "") in _TRANSIENT_CODES
    return isinstance(error, ConnectionError | IncompleteReadError | ReadTimeoutError | RetriesExceededError)


def describe(error: BaseException) -> str:
    """One line for the user about why a file failed."""
    if isinstance(error, S3DownloadFailedError) and isinstance(error.__context__, ClientError):
        return describe(error.__context__)  # s3transfer's wrapping of S3's answer, e.g. PreconditionFailed
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412"):
            return "the object changed while it was downloaded; pull again"
        return f"S3 said {code}: {error.response.get('Error', {}).get('Message', '')}".rstrip(": ")
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error) or type(error).__name__


class _KnownObject(BaseSubscriber):
    """Gives the transfer manager the listed size and ETag (no HEAD request; ranged GETs pinned to that ETag)
    and reports bytes as they arrive, taking them back when an attempt fails."""

    def __init__(self, size: int, etag: str, on_bytes: Callable[[int], None]) -> None:
        self._size = size
        self._etag = etag
        self._on_bytes = on_bytes
        self.received = 0

    def on_queued(self, future: TransferFuture, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)

    def on_progress(self, future: TransferFuture, bytes_transferred: int, **kwargs: Any) -> None:
        self.received += bytes_transferred
        self._on_bytes(bytes_transferred)


class Fetcher:
    """Downloads files into DEST concurrently; when interrupted, stops at once and removes every `.part` file."""

    def __init__(
        self, client: S3Client, bucket: str, dest: Path, parallel: int, on_bytes: Callable[[int], None]
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._dest = dest
        self._parallel = parallel
        self._on_bytes = on_bytes
        self._stopping = threading.Event()
        self._in_flight: set[Path] = set()
        self._in_flight_lock = threading.Lock()

    def fetch(self, downloads: Sequence[Download], tick: float = 5.0) -> Generator[Fetched | None, None, None]:
        """Yield each file's outcome as it ends, and None every `tick` seconds while files are in flight.

        Closing the iterator early (Ctrl-C in the caller) or an interrupt while
        waiting drops what has not started, abandons what is in flight (its
        threads are daemons, blocked perhaps on a dead link) and removes its
        `.part` files.
        """
        jobs = DaemonThreads(self._parallel, name="pull")
        config = TransferConfig(max_request_concurrency=self._parallel)
        manager = TransferManager(self._client, config, executor_cls=cast(type[BaseExecutor], DaemonThreads))
        try:
            pending = {jobs.submit(self._fetch_one, manager, item) for item in downloads}
            while pending:
                done, pending = wait(pending, timeout=tick, return_when=FIRST_COMPLETED)
                if not done:
                    yield None
                for future in done:
                    yield future.result()
        except BaseException:
            self._stopping.set()
            jobs.shutdown(wait=False, cancel_futures=True)
            with self._in_flight_lock:
                for part in self._in_flight:
                    part.unlink(missing_ok=True)
            raise
        jobs.shutdown()
        manager.shutdown()

    def _fetch_one(self, manager: TransferManager, download: Download) -> Fetched:
        remote = download.remote
        final = self._dest / download.target
        part = part_path(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with self._in_flight_lock:
                self._in_flight.add(part)
            for attempt in Retrying(
                stop=stop_after_attempt(ATTEMPTS),
                wait=wait_exponential(multiplier=0.5, max=8) + wait_random(0, 0.5),
                retry=retry_if_exception(lambda error: is_transient(error) and not self._stopping.is_set()),
                sleep=self._pause,
                reraise=True,
            ):
                with attempt:
                    self._download_into(manager, part, download)
            os.utime(part, (remote.modified, remote.modified))
            _check_landing(final, download)
            os.replace(part, final)
            return Fetched(download)
        except LandingTaken as taken:
            return Fetched(download, str(taken))
        except (BotoCoreError, ClientError, RetriesExceededError, S3DownloadFailedError, OSError) as error:
            return Fetched(download, describe(error))
        finally:
            with contextlib.suppress(OSError):  # a name too long for DEST fails above, and here again
                part.unlink(missing_ok=True)
            with self._in_flight_lock:
                self._in_flight.discard(part)

    def _pause(self, seconds: float) -> None:
        """tenacity's backoff, cut short when the pull is interrupted."""
        self._stopping.wait(seconds)

    def _download_into(self, manager: TransferManager, part: Path, download: Download) -> None:
        if self._stopping.is_set():
            raise InterruptedError("the pull was interrupted")
        if download.remote.size < SMALL_OBJECT_BYTES:
            self._get_into(part, download)
            return
        known = _KnownObject(download.remote.size, download.remote.etag, self._on_bytes)
        try:
            with part.open("wb") as sink:
                manager.download(self._bucket, download.remote.key, sink, subscribers=[known]).result()
        except BaseException:
            self._on_bytes(-known.received)
            raise

    def _get_into(self, part: Path, download: Download) -> None:
        """One GetObject, pinned to the listed ETag, streamed into the .part file."""
        received = 0
        try:
            answer = self._client.get_object(Bucket=self._bucket, Key=download.remote.key, IfMatch=download.remote.etag)
            with part.open("wb") as sink:
                for chunk in answer["Body"].iter_chunks(CHUNK_BYTES):
                    sink.write(chunk)
                    received += len(chunk)
                    self._on_bytes(len(chunk))
        except BaseException:
            self._on_bytes(-received)
            raise


def _check_landing(final: Path, download: Download) -> None:
    """Refuse to rename over anything but what the plan saw there: nothing, or the pull's own copy."""
    try:
        found = final.lstat()  # a symbolic link of the user's is theirs, wherever it points
    except FileNotFoundError:
        return
    replaces = download.replaces
    here = LocalFile(found.st_size, found.st_mtime, S_ISREG(found.st_mode))
    if replaces is None or not here.is_copy(replaces.size, replaces.modified):
        raise LandingTaken(f"a file appeared at {download.target} while the pull ran; it was left as it is: pull again")
