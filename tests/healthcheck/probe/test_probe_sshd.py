"""The probe against real OpenSSH sshd on 127.0.0.1: each verdict the incident needs told apart."""

from __future__ import annotations

import json
import re
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

from healthcheck.probe.sandbox import free_ports, generate_key

REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 3.0
# Time the probe may take past --timeout: closing sockets and joining threads.
SLACK = 0.5


def test_healthy_host_reports_vitals_and_records_its_host_key(server, run_cli) -> None:
    run = run_cli("probe", "--json", *server.args(server.target))

    assert run.code == 0, run.stdout
    result = run.result
    assert (result["status"], result["verdict"]) == ("OK", "HEALTHY")
    assert [stage["name"] for stage in result["stages"]] == ["resolve", "tcp", "banner", "auth", "exec"]
    assert all(stage["ok"] for stage in result["stages"])
    vitals = result["vitals"]
    assert vitals["cpus"] >= 1
    assert 0 < vitals["mem_available_percent"] <= 100
    assert vitals["mem_total_mib"] > 0
    assert "/" in vitals["disks"]
    assert vitals["uptime_s"] > 0
    assert vitals["load_per_cpu"] >= 0
    assert "swap_used_mib" in vitals
    assert f"[127.0.0.1]:{server.port} ssh-ed25519 " in server.known_hosts.read_text()


def test_sigstopped_sshd_is_hung_within_the_deadline(server, run_cli) -> None:
    server.sshd.freeze()
    started = time.monotonic()

    run = run_cli("probe", "--json", "--timeout", str(TIMEOUT), *server.args(server.target))

    assert time.monotonic() - started < TIMEOUT + SLACK
    assert run.code == 2
    assert run.result["verdict"] == "HUNG"
    stages = {stage["name"]: stage["ok"] for stage in run.result["stages"]}
    assert stages == {"resolve": True, "tcp": True, "banner": False}


def test_hung_report_says_plainly_what_happened_and_what_to_do(server, run_cli) -> None:
    server.sshd.freeze()

    run = run_cli("probe", "--timeout", "2", *server.args(server.target))

    assert run.code == 2
    assert "HUNG" in run.stdout
    assert "kernel accepted the TCP connection but sshd never answered" in run.stdout
    assert "memory exhaustion" in run.stdout
    assert "reboot" in run.stdout


def test_closed_port_is_refused(run_cli, tmp_path: Path) -> None:
    (port,) = free_ports(1)

    run = run_cli("probe", "--json", "--no-login", f"127.0.0.1:{port}")

    assert (run.code, run.result["verdict"]) == (2, "REFUSED")
    assert run.result["stages"][-1]["name"] == "tcp"


def test_wrong_key_is_auth_failed(server, run_cli, tmp_path: Path) -> None:
    stranger = generate_key(tmp_path / "id_stranger")  # a real key, authorized nowhere

    run = run_cli("probe", "--json", "-i", str(stranger), "--known-hosts", str(server.known_hosts), server.target)

    assert (run.code, run.result["verdict"]) == (2, "AUTH_FAILED")
    assert run.result["stages"][-1]["name"] == "auth"


def test_changed_host_key_is_a_mismatch_even_under_accept_new(server, run_cli) -> None:
    assert run_cli("probe", *server.args(server.target)).code == 0
    server.sshd.rotate_host_key()

    run = run_cli("probe", "--json", "--host-key-policy", "accept-new", *server.args(server.target))

    assert (run.code, run.result["status"], run.result["verdict"]) == (2, "CRITICAL", "HOSTKEY_MISMATCH")
    assert "SHA256:" in run.result["summary"]


def test_unknown_host_key_under_strict_policy_is_not_trusted(server, run_cli) -> None:
    run = run_cli("probe", "--json", "--host-key-policy", "strict", *server.args(server.target))

    assert (run.code, run.result["verdict"]) == (3, "HOSTKEY_UNKNOWN")
    assert not server.known_hosts.exists()


def test_known_host_key_under_strict_policy_is_accepted(server, run_cli) -> None:
    server.known_hosts.write_text(server.sshd.known_hosts_line(server.port) + "\n")

    run = run_cli("probe", "--json", "--host-key-policy", "strict", *server.args(server.target))

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY")


def test_command_that_never_finishes_is_exec_hang(make_server, run_cli) -> None:
    server = make_server(key_options='command="sleep 600"')
    started = time.monotonic()

    run = run_cli("probe", "--json", "--timeout", str(TIMEOUT), *server.args(server.target))

    assert time.monotonic() - started < TIMEOUT + SLACK
    assert (run.code, run.result["verdict"]) == (2, "EXEC_HANG")
    assert run.result["stages"][-1]["name"] == "exec"


def test_no_login_needs_no_key_and_stops_after_the_banner(server, run_cli) -> None:
    run = run_cli("probe", "--json", "--no-login", server.target)

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY")
    assert [stage["name"] for stage in run.result["stages"]] == ["resolve", "tcp", "banner"]
    assert "OpenSSH" in run.result["summary"]
    assert run.result["vitals"] == {}


def test_vital_past_a_threshold_is_degraded_warning(server, run_cli) -> None:
    run = run_cli("probe", "--json", "--disk-max", "0", *server.args(server.target))

    assert (run.code, run.result["status"], run.result["verdict"]) == (1, "WARNING", "DEGRADED")
    assert "disk / " in run.result["summary"]


def _fake_nvidia_smi(directory: Path, body: str) -> str:
    directory.mkdir()
    script = directory / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return f'environment="PATH={directory}:/usr/local/bin:/usr/bin:/bin"'


def test_gpu_vitals_come_from_nvidia_smi_and_full_gpu_memory_is_degraded(make_server, run_cli, tmp_path) -> None:
    options = _fake_nvidia_smi(tmp_path / "bin", 'echo "0, NVIDIA H200, 140000, 143771, 97"')
    server = make_server(extra_config="PermitUserEnvironment yes\n", key_options=options)

    run = run_cli("probe", "--json", *server.args(server.target))

    (gpu,) = run.result["vitals"]["gpus"]
    assert gpu == {
        "index": 0,
        "name": "NVIDIA H200",
        "memory_used_mib": 140000.0,
        "memory_total_mib": 143771.0,
        "memory_used_percent": 97.4,
        "utilization_percent": 97.0,
    }
    assert (run.code, run.result["verdict"]) == (1, "DEGRADED")
    assert "GPU 0 memory 97.4% > 95%" in run.result["summary"]


def test_wedged_nvidia_smi_is_a_gpu_error_not_a_hung_host(make_server, run_cli, tmp_path) -> None:
    options = _fake_nvidia_smi(tmp_path / "bin", "exec sleep 600")
    server = make_server(extra_config="PermitUserEnvironment yes\n", key_options=options)

    run = run_cli("probe", "--json", "--timeout", "4", *server.args(server.target))

    assert (run.code, run.result["verdict"]) == (0, "HEALTHY")
    assert "exit status 124" in run.result["vitals"]["gpu_error"]


def test_many_frozen_targets_take_one_deadline_not_the_sum(make_server, run_cli) -> None:
    server = make_server(ports=12)
    server.sshd.freeze()
    targets = [f"127.0.0.1:{port}" for port in server.sshd.ports]
    started = time.monotonic()

    run = run_cli("probe", "--json", "--timeout", "2", *server.args(*targets))

    assert time.monotonic() - started < 2 + SLACK
    assert [result["verdict"] for result in run.json["results"]] == ["HUNG"] * 12
    assert [result["target"].rsplit(":", 1)[1] for result in run.json["results"]] == [
        str(port) for port in server.sshd.ports
    ]


def test_worst_state_over_all_targets_is_the_exit_status(make_server, run_cli) -> None:
    healthy, frozen = make_server(), make_server()
    frozen.sshd.freeze()
    targets = healthy.args(healthy.target, frozen.target)

    # strict first: the accept-new run then records the healthy host's key.
    unknown = run_cli("probe", "--json", "--timeout", "2", "--host-key-policy", "strict", *targets)
    critical = run_cli("probe", "--json", "--timeout", "2", *targets)

    assert (critical.code, critical.json["status"]) == (2, "CRITICAL")
    assert [r["verdict"] for r in critical.json["results"]] == ["HEALTHY", "HUNG"]
    # UNKNOWN outranks CRITICAL, as in nagiosplugin.
    assert (unknown.code, unknown.json["status"]) == (3, "UNKNOWN")
    assert [r["verdict"] for r in unknown.json["results"]] == ["HOSTKEY_UNKNOWN", "HUNG"]


def test_watch_prints_one_line_per_state_change(server) -> None:
    command = [sys.executable, "-m", "healthcheck", "probe", "--watch", "1", "--rounds", "4", "--timeout", "1.5"]
    watcher = subprocess.Popen([*command, *server.args(server.target)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert watcher.stdout is not None
    first = watcher.stdout.readline()
    server.sshd.freeze()

    rest, _ = watcher.communicate(timeout=30)

    lines = [first, *rest.splitlines()]
    assert len(lines) == 2, lines
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  \S+  HEALTHY \(OK", lines[0])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  \S+  HEALTHY -> HUNG \(CRITICAL", lines[1])
    assert watcher.returncode == 2


def test_parallel_probes_are_capped_by_the_open_file_limit_as_on_a_macs_default(server) -> None:
    """macOS's default limit is 256 open files; --parallel 1024 must not run out of them."""
    limit = 64

    def small_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    ran = subprocess.run(
        [sys.executable, "-m", "healthcheck", "probe", "--json", "--no-login", "--parallel", "1024"]
        + [f"127.0.0.1:{server.port}"] * 80,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        preexec_fn=small_limit,
        check=False,
    )

    verdicts = {result["verdict"] for result in json.loads(ran.stdout)["results"]}
    assert verdicts == {"HEALTHY"}, ran.stdout[-2000:]
    assert "probing 16 targets at once, not 1024: the open-file limit is 64 (raise it with ulimit -n)" in ran.stderr
