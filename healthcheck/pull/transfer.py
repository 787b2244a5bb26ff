"""Downloads, each into a hidden `.part` file renamed when complete, pinned to the ETag the listing gave.

Files of the multipart threshold (8 MiB) or more go through boto3's transfer
manager (s3transfer), in ranged parts; smaller ones are one GetObject in the
download's own thread, which costs less CPU than the manager's hand-offs.
So an interrupted pull (Ctrl-C, a lost network, kill -9) never leaves a
truncated file under a real name; the next pull fetches that file again.
Transient errors are retried with backoff (tenacity) on top of botocore's own
retries. s3transfer and tenacity are imported only by this module, which a
pull imports only when there is something to download.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, IncompleteReadError, ReadTimeoutError
from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from healthcheck.pull.plan import Download

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
    return final.with_name(f".{final.name}.part")


@dataclass(frozen=True)
class Fetched:
    download: Download
    error: str | None = None


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
    """Downloads files into DEST concurrently; stops cleanly, removing every `.part` file, when interrupted."""

    def __init__(
        self, client: S3Client, bucket: str, dest: Path, parallel: int, on_bytes: Callable[[int], None]
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._dest = dest
        self._parallel = parallel
        self._on_bytes = on_bytes
        self._stopping = threading.Event()

    def fetch(self, downloads: Sequence[Download], tick: float = 5.0) -> Generator[Fetched | None, None, None]:
        """Yield each file's outcome as it ends, and None every `tick` seconds while files are in flight.

        Closing the iterator early (Ctrl-C in the caller) or an interrupt while
        waiting cancels what is in flight and removes its `.part` files.
        """
        jobs = ThreadPoolExecutor(max_workers=self._parallel, thread_name_prefix="pull")
        try:
            # Leaving the manager's context on an exception cancels what is in flight (its shutdown(cancel=True)
            # passes its arguments in the wrong order in s3transfer 0.19, and fails).
            with TransferManager(self._client, TransferConfig(max_request_concurrency=self._parallel)) as manager:
                try:
                    pending = {jobs.submit(self._fetch_one, manager, item) for item in downloads}
                    while pending:
                        done, pending = wait(pending, timeout=tick, return_when=FIRST_COMPLETED)
                        if not done:
                            yield None
                        for future in done:
                            yield future.result()
                except BaseException:
                    # Jobs not started are dropped; each job in flight removes its own .part file.
                    self._stopping.set()
                    jobs.shutdown(wait=False, cancel_futures=True)
                    raise
        finally:
            jobs.shutdown(wait=True)

    def _fetch_one(self, manager: TransferManager, download: Download) -> Fetched:
        remote = download.remote
        final = self._dest / remote.key
        part = part_path(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
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
            os.replace(part, final)
            return Fetched(download)
        except (BotoCoreError, ClientError, RetriesExceededError, S3DownloadFailedError, OSError) as error:
            return Fetched(download, describe(error))
        finally:
            part.unlink(missing_ok=True)

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
