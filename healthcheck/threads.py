"""Worker threads that never hold the process: Ctrl-C ends a command at once, whatever its threads wait on."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class DaemonThreads(Executor):
    """A thread pool, with the interface concurrent.futures and s3transfer expect, whose threads never keep the
    process alive. ThreadPoolExecutor's threads are joined when the interpreter exits, so one read stalled on a
    dead link would hold a Ctrl-C'd command for its whole timeout (60 s, times botocore's attempts)."""

    def __init__(self, max_workers: int | None = None, name: str = "worker") -> None:
        self._max_workers = max_workers or 1
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None]
        self._work = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return future

    def _serve(self) -> None:
        while (job := self._work.get()) is not None:
            future, fn, args, kwargs = job
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:  # noqa: BLE001 (result() raises it in the caller, as ThreadPoolExecutor's)
                    future.set_exception(error)
                else:
                    future.set_result(result)
            del job, future, fn, args, kwargs
            self._idle.release()
        self._work.put(None)  # pass the stop on to the next thread

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                with contextlib.suppress(queue.Empty):
                    while True:
                        job = self._work.get_nowait()
                        if job is not None:
                            job[0].cancel()
            self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
