"""The guard's record of the workers: running from their cgroups, how each ended from the journal, and when the
file is rewritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from healthcheck.guard import workers
from healthcheck.guard.workers import UNIT_FAILURE_RESULT, UNIT_PROCESS_EXIT, UNIT_SUCCESS, WorkerBook

GIB = 1024**3
T0 = 1_796_000_000.0  # 2026-11-29T...


class Clocks:
    def __init__(self) -> None:
        self.monotonic = 100.0
        self.wall = T0

    def tick(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def book(tmp_path: Path, clocks: Clocks) -> WorkerBook:
    (tmp_path / "results").mkdir()
    return WorkerBook(
        tmp_path / "results" / "trainguard-workers.json",
        "i-0123456789abcdef0",
        clock=lambda: clocks.monotonic,
        wall=lambda: clocks.wall,
        log=lambda line: None,
    )


def entry(message_id: str, worker: int, at: float, **fields: str) -> dict[str, str]:
    return {
        "MESSAGE_ID": message_id,
        "UNIT": f"trainguard-worker-{worker}.service",
        "__REALTIME_TIMESTAMP": str(int(at * 1e6)),
        **fields,
    }


def saved(book: WorkerBook) -> dict[int, dict[str, object]]:
    document = json.loads(book.path.read_text())
    assert document["version"] == 1 and document["instance_id"] == "i-0123456789abcdef0"
    return {item["worker"]: item for item in document["workers"]}


def test_running_exited_killed_for_memory_and_killed_by_a_signal(book: WorkerBook, clocks: Clocks) -> None:
    book.sampled({0: (GIB, 2 * GIB), 1: (GIB, 2 * GIB), 2: (GIB, 2 * GIB), 3: (GIB, 2 * GIB)})
    assert book.save()
    assert {item["state"] for item in saved(book).values()} == {"running"}

    clocks.tick(30)
    book.sampled({1: (3 * GIB // 2, 2 * GIB), 2: (GIB, 2 * GIB), 3: (GIB, 2 * GIB)})
    book.journal(entry(UNIT_SUCCESS, 0, clocks.wall))
    book.journal(entry(UNIT_PROCESS_EXIT, 1, clocks.wall, EXIT_CODE="killed", EXIT_STATUS="9"))
    book.journal(entry(UNIT_FAILURE_RESULT, 1, clocks.wall, UNIT_RESULT="oom-kill"))
    book.journal(entry(UNIT_PROCESS_EXIT, 2, clocks.wall, EXIT_CODE="exited", EXIT_STATUS="3"))
    book.journal(entry(UNIT_FAILURE_RESULT, 2, clocks.wall, UNIT_RESULT="exit-code"))
    book.journal(entry(UNIT_PROCESS_EXIT, 3, clocks.wall, EXIT_CODE="killed", EXIT_STATUS="15"))
    book.journal(entry(UNIT_FAILURE_RESULT, 3, clocks.wall, UNIT_RESULT="signal"))
    assert book.save()

    records = saved(book)
    assert (records[0]["state"], records[0]["exit_status"], records[0]["result"]) == ("exited", 0, "success")
    assert (records[1]["state"], records[1]["result"]) == ("oom_killed", "oom-kill")
    assert records[1]["memory_peak_bytes"] == 3 * GIB // 2 and records[1]["memory_max_bytes"] == 2 * GIB
    assert (records[2]["state"], records[2]["exit_status"]) == ("exited", 3)
    assert (records[3]["state"], records[3]["exit_status"]) == ("killed", 15)
    assert records[2]["since"] == workers.iso(clocks.wall)
    assert records[2]["results_dir"] == "/data/results/worker-2" and records[2]["results_prefix"] == "worker-2/"
    assert book.running() == []


def test_other_units_and_entries_change_nothing(book: WorkerBook) -> None:
    book.journal({"MESSAGE_ID": UNIT_SUCCESS, "UNIT": "apt-daily.service"})
    book.journal({"MESSAGE_ID": UNIT_SUCCESS})
    book.journal({"MESSAGE": "hello", "UNIT": "trainguard-worker-x.service"})

    assert book.records == {}
    assert not book.save()


def test_a_worker_that_vanished_without_a_word_is_ended_after_a_minute(book: WorkerBook, clocks: Clocks) -> None:
    book.sampled({0: (GIB, None)})
    clocks.tick(5)
    book.sampled({})
    assert book.records[0].state == "running"
    clocks.tick(workers.UNEXPLAINED_AFTER_S)
    book.sampled({})

    assert book.records[0].state == "ended" and book.records[0].exit_status is None


def test_a_new_run_of_the_same_index_replaces_the_record(book: WorkerBook, clocks: Clocks) -> None:
    book.sampled({0: (4 * GIB, None)})
    book.journal(entry(UNIT_FAILURE_RESULT, 0, clocks.wall, UNIT_RESULT="oom-kill"))
    clocks.tick(600)
    book.sampled({0: (GIB, None)})

    record = book.records[0]
    assert (record.state, record.memory_peak_bytes, record.result) == ("running", GIB, None)


def test_peaks_alone_rewrite_the_file_at_most_every_two_minutes(book: WorkerBook, clocks: Clocks) -> None:
    book.sampled({0: (GIB, None)})
    assert book.save()
    writes = 0
    for second in range(0, 600, 5):
        clocks.tick(5)
        book.sampled({0: (GIB + second * 1024, None)})
        writes += book.save()

    assert 4 <= writes <= 5  # 600 s / REWRITE_EVERY_S
    clocks.tick(1)
    book.journal(entry(UNIT_SUCCESS, 0, clocks.wall))
    assert book.save()  # a state change is written at once


def test_no_results_folder_no_file_and_said_once(tmp_path: Path) -> None:
    logged: list[str] = []
    book = WorkerBook(tmp_path / "absent" / "trainguard-workers.json", "i-0", log=logged.append)
    book.sampled({0: (GIB, None)})

    assert not book.save()
    book.journal(entry(UNIT_SUCCESS, 0, T0))
    assert not book.save()
    assert logged == [f"trainguard-guard: {tmp_path / 'absent'} does not exist: the workers' record is not written"]


@pytest.mark.parametrize(
    "text", ["[" * 100_000, "not json", '{"workers": 3}', '{"workers": [{"worker": 0}]}', "\udcff"]
)
def test_a_record_it_cannot_read_starts_afresh(book: WorkerBook, text: str) -> None:
    book.path.write_text(text, errors="surrogateescape")

    book.load()

    assert book.records == {}


def test_a_restarted_guard_keeps_what_the_file_says(book: WorkerBook, clocks: Clocks) -> None:
    book.sampled({0: (GIB, None)})
    book.journal(entry(UNIT_SUCCESS, 0, clocks.wall))
    book.save()

    again = WorkerBook(book.path, "i-0123456789abcdef0", log=lambda line: None)
    again.load()

    assert again.records == book.records


def test_the_cgroup_of_a_run_that_just_ended_is_not_a_new_run(book: WorkerBook, clocks: Clocks) -> None:
    book.sampled({0: (GIB, None)})
    book.journal(entry(UNIT_SUCCESS, 0, clocks.wall))
    clocks.tick(3)
    book.sampled({0: (GIB, None)})  # systemd has not removed it yet

    assert book.records[0].state == "exited"
