"""The drill's figures from recorded samples: freeze windows, time to HUNG, worst banner, kills, summary."""

from __future__ import annotations

import pytest

from drill import timeline
from drill.timeline import BANNER_OK, Kill, ProbeRun, Sample


def ok(at: float, latency: float = 0.2) -> Sample:
    return Sample(at_s=at, kernel_alive=True, banner=BANNER_OK, banner_s=latency)


def silent(at: float, waited: float = 5.0) -> Sample:
    return Sample(at_s=at, kernel_alive=True, banner="HUNG", banner_s=waited)


def booting(at: float) -> Sample:
    return Sample(at_s=at, kernel_alive=True, banner="REFUSED", banner_s=0.01)


def dead(at: float) -> Sample:
    return Sample(at_s=at, kernel_alive=False, banner="HUNG", banner_s=5.0)


def test_boot_before_the_first_banner_is_not_a_freeze() -> None:
    samples = [booting(t) for t in range(30)] + [ok(30.0), ok(31.0)]

    assert timeline.freeze_windows(samples) == []
    assert timeline.freeze_seconds(samples) == 0.0
    assert timeline.first_banner_s(samples) == pytest.approx(30.2)


def test_the_longest_silent_run_with_the_kernel_alive_is_the_freeze() -> None:
    # A 12 s freeze, a recovery, then a 30 s freeze ended by a banner at 90.
    samples = [ok(0.0), *(silent(t) for t in range(10, 22, 6)), ok(22.0)]
    samples += [silent(t) for t in range(60, 90, 6)] + [ok(90.0, latency=3.5)]

    windows = timeline.freeze_windows(samples)

    assert [(w.start_s, w.end_s, w.open_at_end) for w in windows] == [(10, 22.0, False), (60, 90.0, False)]
    assert timeline.freeze_seconds(samples) == 30.0
    assert timeline.worst_banner_latency_s(samples) == 3.5


def test_a_slow_boot_before_the_pressure_is_not_the_freeze() -> None:
    # cloud-init keeps sshd busy for 25 s after its first banner; the workers start at 100.
    samples = [ok(0.0), *(silent(t) for t in range(5, 30, 5)), ok(30.0), ok(100.0), silent(110.0), ok(120.0)]

    assert timeline.freeze_seconds(samples) == 25.0
    assert timeline.freeze_seconds(samples, after_s=100.0) == 10.0


def test_a_freeze_still_on_at_the_end_counts_until_the_last_wait_ended() -> None:
    samples = [ok(0.0), silent(100.0), silent(105.0)]

    (window,) = timeline.freeze_windows(samples)

    assert window.open_at_end
    assert timeline.freeze_seconds(samples) == 10.0


def test_a_dead_guest_kernel_is_not_the_incident_and_breaks_the_window() -> None:
    samples = [ok(0.0), silent(10.0), dead(15.0), silent(20.0), ok(25.0)]

    assert timeline.freeze_seconds(samples) == 5.0


def test_the_longest_silence_counts_the_kernel_checks_that_missed() -> None:
    samples = [ok(0.0), silent(10.0), dead(15.0), silent(20.0), silent(25.0), ok(30.0), silent(40.0), ok(45.0)]

    window, alive = timeline.longest_silence(samples) or (None, None)

    assert window is not None and (window.start_s, window.end_s, window.open_at_end) == (10.0, 30.0, False)
    assert alive == 0.75
    assert timeline.longest_silence(samples, after_s=50.0) is None


def test_no_banner_ever_means_no_freeze_figure() -> None:
    assert timeline.freeze_seconds([booting(0.0), silent(5.0)]) is None
    assert timeline.worst_banner_latency_s([silent(5.0)]) is None


def test_worst_banner_latency_counts_only_from_the_pressure_on() -> None:
    samples = [ok(10.0, latency=9.0), ok(50.0, latency=1.6), ok(51.0, latency=0.4)]

    assert timeline.worst_banner_latency_s(samples, after_s=40.0) == 1.6


def test_time_to_hung_is_the_first_hung_verdict_after_the_pressure_began() -> None:
    runs = [
        ProbeRun(5.0, 5.5, "HUNG"),  # a boot-time answer does not count
        ProbeRun(100.0, 100.4, "HEALTHY"),
        ProbeRun(150.0, 156.1, "HUNG"),
        ProbeRun(140.0, 153.0, "HUNG"),
    ]

    assert timeline.time_to_hung_s(runs, since_s=90.0) == 63.0
    assert timeline.time_to_hung_s(runs[:2], since_s=90.0) is None


CONSOLE = """\
[   12.000000] systemd[1]: Started ssh.service
[  131.517362] Out of memory: Killed process 412 (systemd-journal) total-vm:41156kB, anon-rss:1024kB
[  150.100000] Out of memory: Killed process 1203 (drill-worker-2) total-vm:380000kB, anon-rss:350000kB
[  170.2] Memory cgroup out of memory: Killed process 1301 (drill-worker-0) total-vm:1kB
Killed process 77 (dbus-daemon) total-vm:1kB
"""


def test_kills_are_read_from_the_serial_console() -> None:
    kills = timeline.parse_kills(CONSOLE)

    assert kills == [
        Kill(131.517362, 412, "systemd-journal", in_cgroup=False),
        Kill(150.1, 1203, "drill-worker-2", in_cgroup=False),
        Kill(170.2, 1301, "drill-worker-0", in_cgroup=True),
        Kill(None, 77, "dbus-daemon", in_cgroup=False),
    ]
    assert [kill.worker for kill in kills] == [False, True, True, False]


def test_the_summary_has_every_key_of_the_issue_with_null_where_it_does_not_apply() -> None:
    row = timeline.summary("unguarded", freeze=290.0, hung=72.5, workers_started=4, workers_killed=1)

    assert list(row) == list(timeline.SUMMARY_KEYS)
    assert row["detect_s"] is None and row["results_intact"] is None
    with pytest.raises(ValueError, match="unknown scenario"):
        timeline.summary("chaos")


def test_the_table_shows_a_dash_for_null() -> None:
    text = timeline.render_table([timeline.summary("unguarded", freeze=12.5, results_intact=False)])

    header, row = text.splitlines()
    assert header.split()[:2] == ["scenario", "freeze_seconds"]
    assert row.split()[:3] == ["unguarded", "12.5", "-"]
    assert row.split()[-2:] == ["no", "-"]


def test_the_degrade_row_has_the_workers_finished_and_each_workers_batch_sizes() -> None:
    row = timeline.summary(
        "degrade",
        freeze=0.0,
        worst_banner=0.9,
        workers_started=4,
        workers_finished=4,
        workers_killed=0,
        batch_sizes={"1": [16, 12, 9], "0": [16, 12], "10": [16], "2": [16, 8, 9]},
    )
    table = timeline.render_table([timeline.summary("guarded", workers_finished=0), row])

    assert row["workers_finished"] == 4 and list(row) == list(timeline.SUMMARY_KEYS)
    header, guarded, degrade = table.splitlines()
    assert "workers_finished" in header.split() and header.split()[-1] == "batch_sizes"
    assert degrade.endswith("16>12, 16>12>9, 16>8>9, 16")  # in worker order
    assert guarded.split()[-1] == "-"


def test_a_table_of_no_scenario_is_its_header() -> None:
    """Every scenario failed: the table still prints (its header), and the failures are said after it."""
    assert timeline.render_table([]).split() == list(timeline.SUMMARY_KEYS)
