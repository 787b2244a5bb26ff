"""The worker library without processes: its readings of recorded cgroup v2 files and of this machine's, the
pressure level's hysteresis, the batch-size advisor, the budget and its names."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import pytest

from healthcheck import contract
from healthcheck.guard import trainguard_worker as tg
from infra.bundle import bundle_files

SAMPLES = Path(__file__).parent / "samples"
TREE = SAMPLES / "cgroup-v2-worker"
WORKER_PATH = "/trainguard.slice/trainguard-training.slice/trainguard-worker-2.service"
MIB = 1024**2


def test_its_names_are_the_contracts() -> None:
    """The library may import nothing of trainguard's: its copies of the contract's names must agree."""
    assert tg.WORKER_VARIABLE == contract.WORKER_VARIABLE
    assert tg.WORKER_COUNT_VARIABLE == contract.WORKER_COUNT_VARIABLE
    assert tg.MEMORY_MAX_VARIABLE == contract.WORKER_MEMORY_MAX_VARIABLE
    assert tg.GPU_VARIABLE == contract.WORKER_GPU_VARIABLE
    assert tg.GPU_MEMORY_VARIABLE == contract.WORKER_GPU_MEMORY_VARIABLE
    assert tg.RESULTS_VARIABLE == contract.WORKER_RESULTS_VARIABLE
    assert tg.CHECKPOINTS_VARIABLE == contract.WORKER_CHECKPOINTS_VARIABLE
    assert tg.BATCH_SIZE_VARIABLE == contract.WORKER_BATCH_SIZE_VARIABLE
    assert tg.BATCH_REPORT_NAME == contract.BATCH_REPORT_NAME
    assert tg.PUSH_REQUEST_DIR == contract.PUSH_REQUEST_DIR
    assert tg.PUSH_COMMAND == contract.PUSH_COMMAND
    assert tg.__name__.rpartition(".")[2] == contract.WORKER_LIBRARY_MODULE


def test_its_cgroup_is_found_under_the_cgroup2_mount() -> None:
    found = tg.cgroup_v2_location(
        (TREE / "proc-self-cgroup.txt").read_text(), (TREE / "proc-self-mountinfo.txt").read_text()
    )

    assert found == ("/sys/fs/cgroup", WORKER_PATH)


def test_a_hybrid_hierarchy_a_namespaced_root_and_an_escaped_mount_point() -> None:
    hybrid = "12:memory:/user.slice\n0::/user.slice/session-3.scope\n"
    mounts = (
        "31 22 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "32 22 0:28 / /sys/fs/cgroup/unified\\040v2 rw - cgroup2 cgroup2 rw\n"
    )
    assert tg.cgroup_v2_location(hybrid, mounts) == ("/sys/fs/cgroup/unified v2", "/user.slice/session-3.scope")
    # A container whose cgroup2 mount shows only its own subtree.
    inner = "40 30 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"
    assert tg.cgroup_v2_location("0::/docker/abc/train\n", inner) == ("/sys/fs/cgroup", "/train")
    assert tg.cgroup_v2_location("4:memory:/x\n", mounts) is None  # cgroup v1 only
    assert tg.cgroup_v2_location("0::/a\n", "28 1 254:1 / / rw - ext4 /dev/vda rw\n") is None


def recorded_reader(**changes: object) -> tg.Reader:
    return tg.Reader(proc=str(TREE / "proc"), mount=str(TREE / "sys-fs-cgroup"), path=WORKER_PATH, **changes)  # type: ignore[arg-type]


def test_a_workers_memory_from_recorded_cgroup_v2_files() -> None:
    usage = recorded_reader().read()

    worker = TREE / "sys-fs-cgroup" / WORKER_PATH.lstrip("/")
    assert usage.cgroup == str(worker)
    assert usage.current == int((worker / "memory.current").read_text())
    assert usage.limit == int((worker / "memory.max").read_text())
    assert usage.peak == int((worker / "memory.peak").read_text()) and not usage.peak_sampled
    stat = tg.parse_keyed((worker / "memory.stat").read_text())
    own, training_slice, outer_slice, machine = usage.levels
    assert own.in_use == usage.current - stat["inactive_file"]
    assert own.line == usage.limit  # memory.high is "max": the kill line is the only one
    assert training_slice.name.endswith("trainguard-training.slice")
    slice_high = int((worker.parent / "memory.high").read_text())
    assert training_slice.line == slice_high  # MemoryHigh is below MemoryMax: the kernel acts there first
    assert outer_slice.line is None  # trainguard.slice has no limit of its own
    meminfo = tg.parse_meminfo((TREE / "proc" / "meminfo").read_text())
    assert (machine.name, machine.line) == ("machine", meminfo["MemTotal"])
    assert machine.in_use == meminfo["MemTotal"] - meminfo["MemAvailable"]
    assert usage.pressure == tg.parse_pressure((worker / "memory.pressure").read_text())
    assert usage.high_events == tg.parse_keyed((worker / "memory.events").read_text())["high"]
    assert usage.fill == max(level.fill for level in usage.levels)
    assert usage.gpu is None  # nvidia-smi only when asked


def test_below_kernel_519_the_peak_is_the_highest_memory_current_read(tmp_path: Path) -> None:
    """No memory.peak before 5.19: the highest memory.current this reader saw stands in, and says so."""
    mount = tmp_path / "cgroup"
    folder = mount / "w.service"
    folder.mkdir(parents=True)
    (folder / "memory.max").write_text("max\n")
    reader = tg.Reader(proc=str(tmp_path / "no-proc"), mount=str(mount), path="/w.service")
    peaks = []
    for current in (100 * MIB, 300 * MIB, 200 * MIB):
        (folder / "memory.current").write_text(f"{current}\n")
        usage = reader.read()
        peaks.append((usage.peak, usage.peak_sampled))

    assert peaks == [(100 * MIB, True), (300 * MIB, True), (300 * MIB, True)]
    assert usage.levels[0].line is None and usage.fill == 0.0  # no limit anywhere, no meminfo: nothing to fill
    assert usage.pressure is None


def test_on_this_machine_the_real_files_are_read_where_it_has_them() -> None:
    """This machine's cgroup v2 (if any) and /proc: whatever the kernel offers parses, whatever it lacks is None."""
    reader = tg.Reader()
    usage = reader.read()

    meminfo = tg.parse_meminfo(Path("/proc/meminfo").read_text())
    assert usage.levels[-1].name == "machine" and usage.levels[-1].line == meminfo["MemTotal"]
    assert 0.0 < usage.levels[-1].fill < 1.0
    folders = reader.folders()
    own = Path(folders[0]) if folders else None
    assert usage.cgroup == (str(own) if own else None)
    has_memory = own is not None and (own / "memory.current").exists()
    assert (usage.current is not None) == has_memory
    if has_memory:
        assert usage.current and usage.current > 0 and usage.levels[0].name == str(own)
    if Path("/proc/pressure/memory").exists() or (own is not None and (own / "memory.pressure").exists()):
        assert usage.pressure is not None and usage.pressure.some_avg10 >= 0


def test_the_gpu_from_nvidia_smi_and_its_failures() -> None:
    answers: dict[str, tuple[int, str]] = {}

    def run(argv: object, timeout: float) -> tuple[int, str]:
        assert timeout > 0
        answers["argv"] = (0, " ".join(argv))  # type: ignore[arg-type]
        return answers["next"]

    reader = recorded_reader(gpu=3, run=run)
    answers["next"] = (0, (SAMPLES / "nvidia-smi-gpu-memory.csv").read_text())
    assert reader.read(gpu=True).gpu == tg.GpuMemory(23028, 10455)
    assert "--id=3" in answers["argv"][1]
    for failure in ((127, ""), (0, "[Unknown Error]\n"), (9, "NVIDIA-SMI has failed")):
        answers["next"] = failure
        assert reader.read(gpu=True).gpu is None


@pytest.mark.parametrize(
    ("previous", "fill", "some", "full", "throttled", "level"),
    [
        (tg.OK, 0.50, 0.0, 0.0, False, tg.OK),
        (tg.OK, 0.79, 0.0, 0.0, False, tg.OK),
        (tg.OK, 0.80, 0.0, 0.0, False, tg.HIGH),
        (tg.OK, 0.10, 25.0, 0.0, False, tg.HIGH),  # stalls on memory even though little is in use
        (tg.OK, 0.92, 0.0, 0.0, False, tg.CRITICAL),
        (tg.OK, 0.50, 0.0, 30.0, False, tg.CRITICAL),
        (tg.OK, 0.50, 0.0, 0.0, True, tg.CRITICAL),  # memory.high throttled it since the last reading
        # Hysteresis: a level ends only below its end thresholds.
        (tg.HIGH, 0.75, 0.0, 0.0, False, tg.HIGH),
        (tg.HIGH, 0.69, 0.0, 0.0, False, tg.OK),
        (tg.HIGH, 0.50, 15.0, 0.0, False, tg.HIGH),
        (tg.CRITICAL, 0.88, 0.0, 0.0, False, tg.CRITICAL),
        (tg.CRITICAL, 0.84, 0.0, 0.0, False, tg.HIGH),
        (tg.CRITICAL, 0.60, 0.0, 12.0, False, tg.CRITICAL),
        (tg.CRITICAL, 0.60, 0.0, 0.0, False, tg.OK),
    ],
)
def test_the_level_begins_at_one_threshold_and_ends_at_a_lower_one(
    previous: str, fill: float, some: float, full: float, throttled: bool, level: str
) -> None:
    assert tg.pressure_level(previous, fill, tg.Pressure(some, full), throttled) == level


def usage_at(in_use: int, line: int = 1000 * MIB, some: float = 0.0, high_events: int | None = 0) -> tg.Usage:
    own = tg.Level("w.service", in_use, line)
    return tg.Usage(
        cgroup="w.service",
        current=in_use,
        limit=line,
        high=None,
        peak=in_use,
        peak_sampled=False,
        levels=(own, tg.Level("machine", 4000 * MIB, 16000 * MIB)),
        pressure=tg.Pressure(some, 0.0),
        high_events=high_events,
    )


class Scripted:
    """A reader whose next reading the test sets: memory that follows the batch, fixed + per sample x batch."""

    def __init__(self, fixed: int, per_sample: int, line: int) -> None:
        self.fixed, self.per_sample, self.line = fixed, per_sample, line
        self.batch = 0
        self.reads = 0
        self.high_events = 0

    def read(self, gpu: bool = False) -> tg.Usage:
        self.reads += 1
        return usage_at(self.fixed + self.per_sample * self.batch, self.line, high_events=self.high_events)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def advisor_for(memory: Scripted, clock: Clock, batch: int = 16, **options: object) -> tg.BatchAdvisor:
    logged: list[str] = []
    advisor = tg.BatchAdvisor(
        batch,
        reader=memory,
        clock=clock,
        log=logged.append,
        report_dir="",
        environ={},
        **options,  # type: ignore[arg-type]
    )
    advisor.logged = logged  # type: ignore[attr-defined]
    return advisor


def train(advisor: tg.BatchAdvisor, memory: Scripted, clock: Clock, steps: int, step_s: float = 1.0) -> list[int]:
    """Steps of `step_s` each: the batch the advisor gives is what the memory follows. Returns the sizes used."""
    used = []
    for _ in range(steps):
        size = advisor.batch_size()
        memory.batch = size
        used.append(size)
        clock.now += step_s
    return used


def test_the_incidents_batch_shrinks_to_what_fits_and_stays_there() -> None:
    """16 per worker with 60 MiB per sample and a 1000 MiB limit reaches the kill line; the advisor halves at
    once and settles where the memory stays below the high threshold, without flapping."""
    memory, clock = Scripted(fixed=100 * MIB, per_sample=60 * MIB, line=1000 * MIB), Clock()
    advisor = advisor_for(memory, clock)

    used = train(advisor, memory, clock, steps=600)

    final = used[-1]
    assert used[0] == 16 and final < 16
    assert (100 + 60 * final) / 1000 < 0.80  # below where "high" begins
    assert all(size <= 16 for size in used)
    assert len(advisor.changes) <= 4, advisor.changes  # it settled: no flapping between sizes
    assert advisor.batch_sizes[0] == 16 and advisor.batch_sizes[-1] == final
    assert advisor.changes[0].level == tg.CRITICAL and advisor.changes[0].after == 8
    assert advisor.logged[0] == "trainguard_worker: batch size 16 -> 8 (critical: 106% of its memory line)"  # type: ignore[attr-defined]


def test_it_grows_back_slowly_once_pressure_has_stayed_low_and_not_to_a_size_that_was_too_big() -> None:
    memory, clock = Scripted(fixed=100 * MIB, per_sample=60 * MIB, line=1000 * MIB), Clock()
    advisor = advisor_for(memory, clock, grow_after_s=60.0)
    train(advisor, memory, clock, steps=30)  # shrunk under pressure
    shrunk = advisor.batch
    memory.line = 4000 * MIB  # the limit was raised (another worker ended): room for all 16 again

    used = train(advisor, memory, clock, steps=2000)

    growth = [change for change in advisor.changes if change.after > change.before]
    assert growth, advisor.changes
    before_growth = advisor.changes[advisor.changes.index(growth[0]) - 1]
    assert growth[0].at_s - before_growth.at_s >= 60  # waited grow_after_s of calm after the last shrink
    assert all(later.at_s - earlier.at_s >= 60 for earlier, later in itertools.pairwise(growth))
    assert all(change.after - change.before <= max(1, change.before // 8) for change in growth)  # slowly
    assert shrunk < used[-1] <= 16


def test_a_size_that_proved_too_big_is_not_tried_again_until_forgotten() -> None:
    memory, clock = Scripted(fixed=100 * MIB, per_sample=100 * MIB, line=1000 * MIB), Clock()
    advisor = advisor_for(memory, clock, batch=10, grow_after_s=10.0, forget_after_s=300.0)

    train(advisor, memory, clock, steps=200)

    tried = advisor.batch_sizes
    # 10 x 100 + 100 MiB is past the line: 10 is never given again within 300 s, nor a size over 70 % of the line.
    assert tried.count(10) == 1
    assert all(100 + 100 * size <= 0.92 * 1000 for size in tried[1:])


def test_throttling_by_memory_high_is_critical_at_once() -> None:
    memory, clock = Scripted(fixed=100 * MIB, per_sample=10 * MIB, line=1000 * MIB), Clock()
    advisor = advisor_for(memory, clock)
    train(advisor, memory, clock, steps=5)
    memory.high_events = 3  # the kernel throttled the cgroup between two readings

    train(advisor, memory, clock, steps=1)

    assert advisor.batch == 8
    assert advisor.changes[-1].why == "throttled by the kernel (memory.high)"


def test_a_caught_out_of_memory_error_halves_at_once_down_to_the_minimum() -> None:
    memory, clock = Scripted(fixed=0, per_sample=0, line=1000 * MIB), Clock()
    advisor = advisor_for(memory, clock, batch=5, minimum=2)

    assert [advisor.out_of_memory() for _ in range(3)] == [2, 2, 2]
    assert advisor.batch_sizes == [5, 2]


def test_between_readings_a_call_reads_nothing() -> None:
    memory, clock = Scripted(fixed=0, per_sample=0, line=1000 * MIB), Clock()
    advisor = advisor_for(memory, clock, interval_s=1.0)

    train(advisor, memory, clock, steps=100, step_s=0.01)

    assert memory.reads == 1


def test_bad_settings_are_refused() -> None:
    for options in ({"initial": 0}, {"initial": 4, "minimum": 5}, {"initial": 4, "interval_s": math.nan}):
        with pytest.raises(ValueError, match=r"must|needs"):
            tg.BatchAdvisor(environ={}, report_dir="", **options)
    with pytest.raises(ValueError, match="TRAINGUARD_BATCH_SIZE"):
        tg.BatchAdvisor(environ={}, report_dir="")
    assert tg.BatchAdvisor(environ={"TRAINGUARD_BATCH_SIZE": "12"}, report_dir="").batch == 12


def test_unreadable_memory_keeps_the_batch_and_says_so_once() -> None:
    class Broken:
        def read(self, gpu: bool = False) -> tg.Usage:
            raise tg.ReadingError("not a cgroup memory value: '12 kB'")

    logged: list[str] = []
    clock = Clock()
    advisor = tg.BatchAdvisor(8, reader=Broken(), clock=clock, log=logged.append, report_dir="", environ={})
    for _ in range(5):
        clock.now += 2
        assert advisor.batch_size() == 8

    assert logged == [
        "trainguard_worker: cannot read memory (not a cgroup memory value: '12 kB'); keeping batch size 8"
    ]


def test_the_report_in_the_results_folder_has_the_sizes_and_the_memory_per_sample(tmp_path: Path) -> None:
    memory, clock = Scripted(fixed=100 * MIB, per_sample=60 * MIB, line=1000 * MIB), Clock()
    advisor = tg.BatchAdvisor(
        16,
        reader=memory,
        clock=clock,
        log=lambda line: None,
        environ={"TRAINGUARD_WORKER": "2"},
        report_dir=str(tmp_path),
    )
    memory.batch = 0  # the first reading, before the first batch: the model alone
    advisor.batch_size()
    clock.now += 1
    train(advisor, memory, clock, steps=20)

    report = json.loads((tmp_path / "trainguard-batch.json").read_text())
    assert report["worker"] == 2
    assert report["batch_sizes"] == advisor.batch_sizes and report["batch_size"] == advisor.batch
    assert report["baseline_bytes"] == 100 * MIB
    assert report["per_sample_bytes"] == 60 * MIB
    assert report["changes"][0]["before"] == 16
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_the_budget_comes_from_the_launchers_environment() -> None:
    environ = {
        "TRAINGUARD_WORKER": "2",
        "TRAINGUARD_WORKERS": "4",
        "TRAINGUARD_MEMORY_MAX": "5033168896",
        "TRAINGUARD_GPU": "0",
        "TRAINGUARD_GPU_MEMORY_MIB": "5757",
        "TRAINGUARD_WORKER_RESULTS_DIR": "/data/results/worker-2",
        "TRAINGUARD_WORKER_CHECKPOINTS_DIR": "/data/checkpoints/worker-2",
        "TRAINGUARD_BATCH_SIZE": "16",
    }

    assert tg.budget(environ) == tg.Budget(
        2, 4, 5033168896, 0, 5757, "/data/results/worker-2", "/data/checkpoints/worker-2", 16
    )
    assert tg.budget({}) == tg.Budget()
    assert tg.budget({"TRAINGUARD_WORKER": "-1", "TRAINGUARD_MEMORY_MAX": "lots"}) == tg.Budget()


def test_a_call_costs_little() -> None:
    """What a training step pays: between readings a clock comparison; a reading, a dozen small files.

    Bounds far above what was measured (docs/on-the-instance.md has the figures), so a busy machine passes.
    """
    advisor = tg.BatchAdvisor(16, reader=recorded_reader(), environ={}, report_dir="", log=lambda line: None)
    advisor.batch_size()
    calls = 100_000
    started = time.perf_counter()
    for _ in range(calls):
        advisor.batch_size()
    between = (time.perf_counter() - started) / calls

    reader = recorded_reader()
    started = time.perf_counter()
    for _ in range(200):
        reader.read()
    reading = (time.perf_counter() - started) / 200

    assert between < 50e-6
    assert reading < 20e-3


def test_the_bundle_installs_it_alone_in_the_folder_the_launcher_puts_on_pythonpath() -> None:
    folder = contract.WORKER_LIBRARY_DIR + "/"
    installed = [file for file in bundle_files() if file.path.startswith(folder)]

    assert [(file.path, file.mode) for file in installed] == [(folder + "trainguard_worker.py", 0o644)]
    assert installed[0].content == Path(tg.__file__).read_bytes()
