"""The guard's record of the training workers, kept as /data/results/trainguard-workers.json (pushed with the
results, so `trainguard status` reads it from the bucket).

For each worker index, its latest run: running (its cgroup exists), exited (with its exit status), oom_killed
(the kernel killed it for memory: systemd's result oom-kill), killed (by another signal), failed (any other
systemd result, a timeout say) or ended (its cgroup went and the journal said nothing of how, within a minute);
since when, its memory peak and limit, and its own results folder. docs/on-the-instance.md lists the fields.

What changes a record: the guard's 5-second sample of the workers' cgroups (running, peaks) and three kinds of
systemd journal entry about a worker unit (systemd's sd-messages.h): a process exit (EXIT_CODE, EXIT_STATUS),
"Deactivated successfully" and "Failed with result" (UNIT_RESULT). The file is rewritten at once when a state
changes, and otherwise at most every REWRITE_EVERY_S when only peaks moved: the push holds back a file written in
its last 30 s, so one rewritten more often would never leave the instance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from healthcheck import contract
from healthcheck.guard import units
from healthcheck.guard.trainguard_worker import write_atomically

UNIT_FAILURE_RESULT = "d9b373ed55a64feb8242e02dbe79a49c"  # SD_MESSAGE_UNIT_FAILURE_RESULT: "Failed with result"
UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"  # SD_MESSAGE_UNIT_SUCCESS: "Deactivated successfully"
UNIT_PROCESS_EXIT = "98e322203f7a4ed290d09fe03c09fe15"  # SD_MESSAGE_UNIT_PROCESS_EXIT: EXIT_CODE, EXIT_STATUS
VERSION = 1
REWRITE_EVERY_S = 120.0
# A worker whose cgroup went without a journal entry within this long is recorded as ended, how unknown.
UNEXPLAINED_AFTER_S = 60.0
# systemd removes a unit's cgroup as it logs its end; a sample taken in between still sees the cgroup. For this
# long after a worker ended, its cgroup is that one, not a new run of the same index.
LINGER_S = 15.0
STATES = ("running", "exited", "oom_killed", "killed", "failed", "ended")


@dataclass(frozen=True)
class WorkerRecord:
    worker: int
    unit: str
    state: str
    since: str  # when it entered this state, ISO 8601 UTC
    exit_status: int | None = None  # its exit status, or the signal's number when killed
    result: str | None = None  # systemd's result: success, exit-code, oom-kill, signal, timeout, ...
    memory_peak_bytes: int | None = None
    memory_max_bytes: int | None = None
    results_dir: str = ""  # on the instance
    results_prefix: str = ""  # under s3://<bucket>/<instance-id>/


def iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def new_record(worker: int, state: str, at: float) -> WorkerRecord:
    folder = f"{contract.WORKER_DIR_PREFIX}{worker}"
    return WorkerRecord(
        worker=worker,
        unit=units.unit_name(worker),
        state=state,
        since=iso(at),
        results_dir=contract.worker_results_dir(worker),
        results_prefix=f"{folder}/",
    )


def journal_time(entry: Mapping[str, object], default: float) -> float:
    """An entry's __REALTIME_TIMESTAMP (microseconds since the epoch, as a string), in seconds."""
    value = entry.get("__REALTIME_TIMESTAMP")
    return int(value) / 1e6 if isinstance(value, str) and value.isdigit() else default


class WorkerBook:
    """The records, what changes them, and when the file is rewritten."""

    def __init__(
        self,
        path: Path,
        instance_id: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        log: Callable[[str], None] = print,
    ) -> None:
        self.path, self.instance_id = path, instance_id
        self.clock, self.wall, self.log = clock, wall, log
        self.records: dict[int, WorkerRecord] = {}
        self._exits: dict[int, tuple[str, int | None]] = {}  # worker -> (EXIT_CODE, EXIT_STATUS) not yet final
        self._gone_since: dict[int, float] = {}
        self._ended_at: dict[int, float] = {}
        self._state_changed = False
        self._peaks_changed = False
        self._written_at = -REWRITE_EVERY_S
        self._said: set[str] = set()

    def load(self) -> None:
        """The records of an earlier guard (a restart keeps what it knew); a file it cannot read starts afresh."""
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError, RecursionError):
            return
        workers = document.get("workers") if isinstance(document, dict) else None
        for item in workers if isinstance(workers, list) else []:
            try:
                record = WorkerRecord(**item)
            except TypeError:
                continue
            if isinstance(record.worker, int) and record.state in STATES:
                self.records[record.worker] = record

    def sampled(self, present: Mapping[int, tuple[int | None, int | None]]) -> None:
        """The workers whose cgroup exists now, each with (peak, MemoryMax)."""
        now = self.wall()
        for worker, (peak, limit) in present.items():
            self._gone_since.pop(worker, None)
            record = self.records.get(worker)
            if record is not None and self.clock() - self._ended_at.get(worker, -LINGER_S) < LINGER_S:
                continue  # the cgroup of the run that just ended, not yet removed
            if record is None or record.state != "running":
                record = new_record(worker, "running", now)
                self._exits.pop(worker, None)
                self._state_changed = True
            updated = replace(
                record,
                memory_peak_bytes=max(filter(None, (peak, record.memory_peak_bytes)), default=None),
                memory_max_bytes=limit if limit is not None else record.memory_max_bytes,
            )
            if updated != record:
                self._peaks_changed = True
            self.records[worker] = updated
        for worker, record in self.records.items():
            if record.state == "running" and worker not in present:
                gone = self._gone_since.setdefault(worker, self.clock())
                if self.clock() - gone >= UNEXPLAINED_AFTER_S:
                    self._finish(worker, "ended", now, None, None)

    def journal(self, entry: Mapping[str, object]) -> None:
        """A journal entry (journalctl -o json, fields as text): the worker units' exits and results."""
        unit = entry.get("UNIT")
        worker = units.worker_of(unit) if isinstance(unit, str) else None
        if worker is None:
            return
        at = journal_time(entry, self.wall())
        message_id = entry.get("MESSAGE_ID")
        if message_id == UNIT_PROCESS_EXIT:
            code, status = entry.get("EXIT_CODE"), entry.get("EXIT_STATUS")
            number = int(status) if isinstance(status, str) and status.isdigit() else None
            self._exits[worker] = (code if isinstance(code, str) else "", number)
        elif message_id == UNIT_SUCCESS:
            self._finish(worker, "exited", at, 0, "success")
        elif message_id == UNIT_FAILURE_RESULT:
            result = entry.get("UNIT_RESULT")
            result = result if isinstance(result, str) else "unknown"
            code, status = self._exits.pop(worker, ("", None))
            if result == "oom-kill":
                state = "oom_killed"
            elif code == "exited":
                state = "exited"
            elif code in ("killed", "dumped") or result in ("signal", "core-dump"):
                state = "killed"
            else:
                state = "failed"
            self._finish(worker, state, at, status, result)

    def _finish(self, worker: int, state: str, at: float, status: int | None, result: str | None) -> None:
        record = self.records.get(worker) or new_record(worker, state, at)
        self.records[worker] = replace(record, state=state, since=iso(at), exit_status=status, result=result)
        self._gone_since.pop(worker, None)
        self._ended_at[worker] = self.clock()
        self._state_changed = True

    def document(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "instance_id": self.instance_id,
            "updated": iso(self.wall()),
            "workers": [asdict(self.records[worker]) for worker in sorted(self.records)],
        }

    def save(self) -> bool:
        """Rewrite the file when a state changed, or peaks moved and REWRITE_EVERY_S has passed; True if written.

        Nothing is written where the results folder does not exist (no data volume yet): the push has nothing
        to carry, and the guard makes no folder that the volume's mount would hide.
        """
        due = self._state_changed or (self._peaks_changed and self.clock() - self._written_at >= REWRITE_EVERY_S)
        if not due or not self.records:
            return False
        if not self.path.parent.is_dir():
            self._say_once(f"{self.path.parent} does not exist: the workers' record is not written")
            return False
        try:
            write_atomically(str(self.path), (json.dumps(self.document(), indent=1) + "\n").encode())
        except OSError as error:
            self._say_once(f"cannot write {self.path}: {error.strerror or error}")
            return False
        self._state_changed = self._peaks_changed = False
        self._written_at = self.clock()
        return True

    def running(self) -> list[int]:
        return sorted(worker for worker, record in self.records.items() if record.state == "running")

    def _say_once(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self.log(f"trainguard-guard: {text}")


def present_workers(cgroups: Iterable[Path]) -> list[int]:
    """The worker indexes of the trainguard-worker-N.service cgroup folders given."""
    found = [units.worker_of(path.name) for path in cgroups]
    return sorted(worker for worker in found if worker is not None)
