"""The notifier: journal entries -> kills, the email text, and the aws/push commands run for real (fakes on PATH)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from healthcheck.guard import notify
from healthcheck.guard.host import Host, run_command
from healthcheck.guard.workers import WorkerBook

from .fakes import GIB, FakeMachine

TOPIC = "arn:aws:sns:eu-west-1:123456789012:trainguard-alerts"
KERNEL_OOM = {
    "MESSAGE_ID": notify.UNIT_FAILURE_RESULT,
    "UNIT": "trainguard-worker-2.service",
    "UNIT_RESULT": "oom-kill",
    "MESSAGE": "trainguard-worker-2.service: Failed with result 'oom-kill'.",
}
EARLYOOM_17 = {
    "_SYSTEMD_UNIT": "earlyoom.service",
    "MESSAGE": 'sending SIGTERM to process 5123 uid 1000 "python3": oom_score 901, oom_score_adj 0, VmRSS 13020 MiB,'
    ' cmdline "python3 train.py"',
}
EARLYOOM_16 = {
    "_SYSTEMD_UNIT": "earlyoom.service",
    "MESSAGE": 'sending SIGKILL to process 5123 uid 1000 "python3": badness 901, VmRSS 13020 MiB',
}


def test_journal_entries_that_are_kills() -> None:
    assert notify.kill_from_journal(KERNEL_OOM) == notify.Kill(
        by="kernel", unit="trainguard-worker-2.service", worker=2
    )
    for entry in (EARLYOOM_17, EARLYOOM_16):
        kill = notify.kill_from_journal(entry)
        assert kill is not None
        assert (kill.process, kill.pid, kill.rss_mib) == ("python3", 5123, 13020)
    assert notify.kill_from_journal({**KERNEL_OOM, "UNIT_RESULT": "exit-code"}) is None
    assert notify.kill_from_journal({"_SYSTEMD_UNIT": "earlyoom.service", "MESSAGE": "mem avail: 40%"}) is None
    assert notify.kill_from_journal({**EARLYOOM_16, "_SYSTEMD_UNIT": "evil.service"}) is None


def test_the_email_names_the_worker_its_peak_the_limit_and_who_still_runs() -> None:
    context = notify.Context("i-0123456789abcdef0", {2: 6 * GIB}, 15 * GIB, [0, 1, 3], "pushed to S3 at once")
    kill = notify.kill_from_journal(KERNEL_OOM)
    assert kill is not None

    subject, body = notify.message(kill, context)

    assert subject == "trainguard: worker 2 on i-0123456789abcdef0 killed: out of memory"
    assert "its peak memory:   6.00 GiB" in body
    assert "slice MemoryMax:   15.00 GiB (trainguard-training.slice)" in body
    assert "still running:     workers 0, 1, 3" in body
    assert "Its log: /data/results/logs/worker-2.log" in body


def test_a_subject_never_exceeds_what_sns_accepts() -> None:
    kill = notify.Kill(by="earlyoom", process="p" * 200, pid=1, signal="SIGTERM", rss_mib=1)
    subject, _ = notify.message(kill, notify.Context("i-0", {}, None, [], "x"))

    assert len(subject) < 100
    assert "\n" not in subject


def fake_command(directory: Path, name: str, record: Path, exit_status: int = 0) -> None:
    """An executable that appends its argv (as JSON) to `record`."""
    script = directory / name
    script.write_text(
        "#!/bin/sh\n"
        f"python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\" >> {record}\n"
        f"exit {exit_status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def recorded(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_a_kill_pushes_then_counts_then_emails_with_real_commands(tmp_path: Path, fake_bin: Path) -> None:
    machine = FakeMachine(tmp_path)
    fake_command(fake_bin, "trainguard-push", tmp_path / "push.log")
    fake_command(fake_bin, "aws", tmp_path / "aws.log")
    machine.set_worker_memory(2, 5 * GIB, peak=6 * GIB)
    machine.set_worker_memory(0, GIB)
    host = Host(run=run_command, clock=lambda: 0.0, cgroup_root=machine.cgroup_root)
    notifier = notify.Notifier(host, "i-0123456789abcdef0", TOPIC, log=lambda line: None)
    notifier.sample()  # the guard samples between journal entries: worker 2's peak is known before it dies
    for path in (
        machine.cgroup_root / "trainguard.slice/trainguard-training.slice/trainguard-worker-2.service"
    ).iterdir():
        path.unlink()
    (machine.cgroup_root / "trainguard.slice/trainguard-training.slice/trainguard-worker-2.service").rmdir()

    notify.follow(notifier, iter_lines([json.dumps(KERNEL_OOM), json.dumps(KERNEL_OOM)]))

    assert recorded(tmp_path / "push.log") == [list(notify.PUSH_ARGUMENTS)]
    metric, email = recorded(tmp_path / "aws.log")
    assert metric[:2] == ["--region", "eu-west-1"]
    assert metric[metric.index("put-metric-data") :] == [
        "put-metric-data",
        "--namespace",
        "Trainguard/Guard",
        "--metric-name",
        "WorkerOOMKills",
        "--dimensions",
        "InstanceId=i-0123456789abcdef0",
        "--value",
        "1",
        "--unit",
        "Count",
    ]
    assert email[email.index("sns") : email.index("--subject")] == ["sns", "publish", "--topic-arn", TOPIC]
    body = email[email.index("--message") + 1]
    assert "its peak memory:   6.00 GiB" in body
    assert "still running:     workers 0" in body
    assert "results:           pushed to S3 at once" in body


def iter_lines(lines: list[str]):  # type: ignore[no-untyped-def]
    batches = iter([lines])

    def read(timeout: float) -> list[str] | None:
        assert timeout > 0
        return next(batches, None)

    return read


def test_garbage_in_the_journal_is_skipped(tmp_path: Path) -> None:
    handled: list[notify.Kill] = []
    notifier = notify.Notifier(FakeMachine(tmp_path).host(), "i-0", TOPIC, log=lambda line: None)
    notifier.handle = handled.append  # type: ignore[method-assign, assignment]

    notify.follow(notifier, iter_lines(["not json", "[1, 2]", '{"MESSAGE": ["binary"]}', json.dumps(KERNEL_OOM)]))

    assert [kill.worker for kill in handled] == [2]


def test_failures_of_each_step_are_logged_and_the_next_step_still_runs(tmp_path: Path, fake_bin: Path) -> None:
    machine = FakeMachine(tmp_path)
    fake_command(fake_bin, "aws", tmp_path / "aws.log", exit_status=255)
    logged: list[str] = []
    host = Host(run=run_command, clock=lambda: 0.0, cgroup_root=machine.cgroup_root)
    notifier = notify.Notifier(host, "i-0", TOPIC, which=lambda name: None, log=logged.append)

    notifier.handle(notify.Kill(by="earlyoom", process="python3", pid=7, signal="SIGTERM", rss_mib=900))

    assert len(recorded(tmp_path / "aws.log")) == 2  # the metric failed; the email was still tried
    assert "trainguard-guard: metric: exit status 255" in logged
    assert any("trainguard-push is not installed" in line for line in recorded(tmp_path / "aws.log")[1])


def test_a_hung_aws_cli_is_cut_off_by_the_timeout(tmp_path: Path, fake_bin: Path) -> None:
    (fake_bin / "aws").write_text("#!/bin/sh\nexec sleep 30\n")
    (fake_bin / "aws").chmod(0o755)

    done = run_command(["aws", "sns", "publish"], timeout=0.5)

    assert done.returncode == 124
    assert "no answer within 0.5 s" in done.why()


def test_the_service_refuses_to_start_without_a_topic(capsys: pytest.CaptureFixture[str]) -> None:
    assert notify.main({"TRAINGUARD_TOPIC_ARN": "not-an-arn"}) == 3
    assert "is not an SNS topic ARN" in capsys.readouterr().err


def test_a_burst_of_journal_lines_is_read_whole_from_a_real_pipe() -> None:
    """Three kills at once arrive in one read: none may wait in a buffer that select() cannot see."""
    reader, writer = os.pipe()
    try:
        read = notify.journal_lines(reader)
        os.write(writer, b'{"kill": 1}\n{"kill": 2}\n{"kill": 3}\n{"kill": 4, "half')

        first = read(1.0)
        nothing_more = read(0.2)
        os.write(writer, b'": true}\n')
        rest = read(1.0)
        os.close(writer)
        writer = -1
        end = read(1.0)
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)

    assert first == ['{"kill": 1}', '{"kill": 2}', '{"kill": 3}']
    assert nothing_more == []
    assert rest == ['{"kill": 4, "half": true}']
    assert end is None


def test_a_command_that_times_out_is_killed_with_its_children(tmp_path: Path) -> None:
    """The push's aws holds the push lock: a timed-out push must not leave it running."""
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "slow"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! >{pidfile}\nwait\n")
    script.chmod(0o755)

    done = run_command([str(script)], 0.5)

    assert done.returncode == 124
    child = int(pidfile.read_text())
    for _ in range(50):
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the timed-out command's child {child} still runs")


def test_a_journal_line_nested_100000_deep_is_skipped_and_the_next_kill_still_handled(tmp_path: Path) -> None:
    handled: list[notify.Kill] = []
    notifier = notify.Notifier(FakeMachine(tmp_path).host(), "i-0", TOPIC, log=lambda line: None)
    notifier.handle = handled.append  # type: ignore[method-assign, assignment]

    notify.follow(notifier, iter_lines(["[" * 100_000, '{"a":' * 100_000, json.dumps(KERNEL_OOM)]))

    assert [kill.worker for kill in handled] == [2]


def test_earlyooms_message_as_a_byte_array_is_still_a_kill() -> None:
    """journalctl -o json gives a field that is not UTF-8 (a process name cut mid-character) as its bytes."""
    text = 'sending SIGKILL to process 5123 uid 1000 "trainer-\xc3": badness 901, VmRSS 13020 MiB'.encode("latin-1")
    entry = {"_SYSTEMD_UNIT": "earlyoom.service", "MESSAGE": list(text)}

    kill = notify.kill_from_journal(entry)

    assert kill is not None
    assert (kill.pid, kill.rss_mib, kill.signal) == (5123, 13020, "SIGKILL")
    assert kill.process == "trainer-\ufffd"
    # A field an entry has twice comes as an array of its values.
    twice = {**EARLYOOM_16, "MESSAGE": ["earlyoom v1.7", EARLYOOM_16["MESSAGE"]]}
    assert notify.kill_from_journal(twice) == notify.kill_from_journal(EARLYOOM_16)
    assert notify.kill_from_journal({"_SYSTEMD_UNIT": "earlyoom.service", "MESSAGE": [1, "x", None]}) is None


def test_a_push_that_prints_another_encoding_does_not_stop_the_email(tmp_path: Path, fake_bin: Path) -> None:
    (fake_bin / "trainguard-push").write_bytes(b"#!/bin/sh\nprintf '\\377\\376 pushed caf\\351\\n'\nexit 0\n")
    (fake_bin / "trainguard-push").chmod(0o755)
    fake_command(fake_bin, "aws", tmp_path / "aws.log")
    host = Host(run=run_command, clock=lambda: 0.0, cgroup_root=FakeMachine(tmp_path).cgroup_root)
    notifier = notify.Notifier(host, "i-0123456789abcdef0", TOPIC, log=lambda line: None)

    assert notifier.handle(notify.kill_from_journal(KERNEL_OOM))  # type: ignore[arg-type]

    _metric, email = recorded(tmp_path / "aws.log")
    assert "results:           pushed to S3 at once" in email[email.index("--message") + 1]


def journalctl_script(fake_bin: Path, record: Path, entries: list[dict[str, object]]) -> None:
    """A journalctl that records its arguments and prints `entries` as JSON lines, then ends."""
    lines = "".join(json.dumps(entry) + "\n" for entry in entries)
    (fake_bin / "journalctl").write_text(f"#!/bin/sh\necho \"$*\" >> {record}\ncat <<'EOF'\n{lines}EOF\n")
    (fake_bin / "journalctl").chmod(0o755)


GUARD_ENVIRONMENT = {"TRAINGUARD_TOPIC_ARN": TOPIC, "TRAINGUARD_INSTANCE_ID": "i-0123456789abcdef0"}


def test_a_restarted_guard_resumes_after_the_last_entry_it_read(tmp_path: Path, fake_bin: Path) -> None:
    """A kill the guard had not finished with when it stopped is handled by the next guard, not lost."""
    fake_command(fake_bin, "aws", tmp_path / "aws.log")
    places = notify.Places(
        workers_file=tmp_path / "results" / "trainguard-workers.json",
        cursor_file=tmp_path / "state" / "guard.cursor",
        push_requests=tmp_path / "run" / "push-requests",
    )
    first = [{**KERNEL_OOM, "UNIT": "other.service", "UNIT_RESULT": "exit-code", "__CURSOR": "s=1;i=1"}]
    journalctl_script(fake_bin, tmp_path / "journalctl.log", first)

    assert notify.main(GUARD_ENVIRONMENT, places) == 1
    assert (tmp_path / "state" / "guard.cursor").read_text() == "s=1;i=1\n"

    journalctl_script(fake_bin, tmp_path / "journalctl.log", [{**KERNEL_OOM, "__CURSOR": "s=1;i=2"}])
    assert notify.main(GUARD_ENVIRONMENT, places) == 1

    first_call, second_call = (tmp_path / "journalctl.log").read_text().splitlines()
    assert "--lines=0" in first_call.split()
    assert "--after-cursor=s=1;i=1" in second_call.split()
    assert len(recorded(tmp_path / "aws.log")) == 2  # the second guard counted and emailed the kill
    assert (tmp_path / "state" / "guard.cursor").read_text() == "s=1;i=2\n"


def test_a_cursor_journalctl_cannot_seek_to_is_forgotten_so_the_restart_begins_from_now(
    tmp_path: Path, fake_bin: Path
) -> None:
    places = notify.Places(tmp_path / "w.json", tmp_path / "guard.cursor", tmp_path / "requests")
    places.cursor_file.write_text("s=gone;i=1\n")
    journalctl_script(fake_bin, tmp_path / "journalctl.log", [])

    assert notify.main(GUARD_ENVIRONMENT, places) == 1
    assert not places.cursor_file.exists()


def test_without_journalctl_the_guard_says_so_in_one_line_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    places = notify.Places(tmp_path / "w.json", tmp_path / "guard.cursor", tmp_path / "requests")

    assert notify.main(GUARD_ENVIRONMENT, places) == 3
    err = capsys.readouterr().err
    assert err.startswith("trainguard-guard: cannot run journalctl (No such file or directory)")
    assert len(err.strip().splitlines()) == 1


def test_a_workers_push_request_runs_the_push_niced_outside_the_worker(tmp_path: Path, fake_bin: Path) -> None:
    """The guard runs it in its own cgroup, at nice 10 as the timer's push: it must not slow sshd."""
    (fake_bin / "trainguard-push").write_text(f'#!/bin/sh\necho "$(nice) $*" > {tmp_path / "push.log"}\n')
    (fake_bin / "trainguard-push").chmod(0o755)
    host = Host(run=run_command, clock=lambda: 0.0, cgroup_root=FakeMachine(tmp_path).cgroup_root)
    notifier = notify.Notifier(host, "i-0", TOPIC, log=lambda line: None)

    done = notifier.requested_push()

    assert done.ok
    assert (tmp_path / "push.log").read_text() == f"{os.nice(0) + 10} --now --wait 200 --timeout 600\n"
    missing = notify.Notifier(host, "i-0", TOPIC, which=lambda name: None, log=lambda line: None).requested_push()
    assert (missing.returncode, missing.why()) == (127, "trainguard-push is not installed here")


def test_the_kills_push_carries_the_workers_record_of_that_kill(tmp_path: Path, fake_bin: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    record = results / "trainguard-workers.json"
    (fake_bin / "trainguard-push").write_text(f"#!/bin/sh\ncp {record} {tmp_path / 'pushed.json'}\n")
    (fake_bin / "trainguard-push").chmod(0o755)
    fake_command(fake_bin, "aws", tmp_path / "aws.log")
    machine = FakeMachine(tmp_path)
    host = Host(run=run_command, clock=lambda: 0.0, cgroup_root=machine.cgroup_root)
    notifier = notify.Notifier(host, "i-0123456789abcdef0", TOPIC, log=lambda line: None)
    book = WorkerBook(record, "i-0123456789abcdef0", log=lambda line: None)

    notify.follow(notifier, iter_lines([json.dumps(KERNEL_OOM)]), book)

    pushed = json.loads((tmp_path / "pushed.json").read_text())
    assert [(item["worker"], item["state"]) for item in pushed["workers"]] == [(2, "oom_killed")]
