"""The vitals script's output, parsed, and the thresholds that make a host DEGRADED (pure)."""

from __future__ import annotations

import json
import subprocess

from healthcheck.probe.verdict import Stage, Verdict, conclude
from healthcheck.probe.vitals import Breach, Thresholds, advice, breaches, parse_vitals, vitals_script

OUTPUT = """\
@loadavg
7.50 6.00 5.00 3/1234 5678
@cpus
4
@meminfo
MemTotal:       65536000 kB
MemFree:         1000000 kB
MemAvailable:    3276800 kB
SwapTotal:       8192000 kB
SwapFree:        4096000 kB
@uptime
12345.67 40000.00
@df
Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/nvme0n1p1   101590008  94000000   7590008      93% /
/dev/nvme1n1     206293688  20629368 185664320      10% /data
@gpu
0, NVIDIA A10G, 22000, 23028, 100
1, NVIDIA A10G, [N/A], 23028, [N/A]
"""


def test_every_section_is_parsed() -> None:
    vitals = parse_vitals(OUTPUT)

    assert vitals["load_1m"] == 7.5
    assert vitals["cpus"] == 4
    assert vitals["load_per_cpu"] == 1.88
    assert vitals["mem_total_mib"] == 64000
    assert vitals["mem_available_percent"] == 5.0
    assert vitals["swap_used_mib"] == 4000
    assert vitals["uptime_s"] == 12345.67
    assert vitals["disks"] == {
        "/": {"used_percent": 92.5, "size_gib": 96.9},
        "/data": {"used_percent": 10.0, "size_gib": 196.7},
    }
    assert vitals["gpus"][0]["memory_used_percent"] == 95.5
    assert vitals["gpus"][1] == {
        "index": 1,
        "name": "NVIDIA A10G",
        "memory_used_mib": None,
        "memory_total_mib": 23028.0,
        "memory_used_percent": None,
        "utilization_percent": None,
    }


def test_every_threshold_past_is_named() -> None:
    assert breaches(parse_vitals(OUTPUT), Thresholds()) == (
        Breach("memory", "memory available 5.0% < 10%"),
        Breach("disk", "disk / 92.5% > 90%"),
        Breach("gpu", "GPU 0 memory 95.5% > 95%"),
    )


def test_the_advice_fits_the_vital_memory_first_and_load_alone_is_not_called_memory() -> None:
    load_only = advice((Breach("load", "load per CPU 3.00 > 2"),))
    memory_and_disk = advice((Breach("disk", "disk / 92.5% > 90%"), Breach("memory", "memory available 5.0% < 10%")))

    assert "overloaded" in load_only and "memory is fine" in load_only
    assert "swap" not in load_only and "running out" not in load_only
    assert memory_and_disk.startswith("Memory is running out") and "Free space on that disk" in memory_and_disk


def test_thresholds_can_be_overridden() -> None:
    relaxed = Thresholds(
        mem_available_min_percent=1, disk_used_max_percent=99, load_per_cpu_max=1, gpu_memory_max_percent=99
    )

    assert [breach.text for breach in breaches(parse_vitals(OUTPUT), relaxed)] == ["load per CPU 1.88 > 1"]


def test_data_path_on_the_root_filesystem_is_not_a_second_disk() -> None:
    df = "@df\nFilesystem 1024-blocks Used Available Capacity Mounted on\n" + "/dev/root 100 50 50 50% /\n" * 2

    assert parse_vitals(df)["disks"] == {"/": {"used_percent": 50.0, "size_gib": 0.0}}


def test_garbled_sections_are_left_out_not_fatal() -> None:
    vitals = parse_vitals("@loadavg\nnonsense\n@cpus\n8\n@meminfo\nMemTotal: x kB\n")

    assert vitals == {"cpus": 8}


def test_a_failed_gpu_query_is_reported_as_gpu_error() -> None:
    vitals = parse_vitals("@gpu\n@gpu-error exit status 124\n")

    assert vitals == {"gpu_error": "exit status 124"}


def test_degraded_when_past_a_threshold_else_healthy() -> None:
    stages = (Stage("exec", True, 0.1, "ok"),)

    degraded = conclude(
        target="t", stages=stages, failure=None, vitals=parse_vitals(OUTPUT), thresholds=Thresholds(), duration_s=1
    )
    healthy = conclude(
        target="t", stages=stages, failure=None, vitals={"cpus": 1}, thresholds=Thresholds(), duration_s=1
    )
    failed = conclude(
        target="t", stages=stages, failure=(Verdict.HUNG, "silent"), vitals={}, thresholds=Thresholds(), duration_s=1
    )

    assert (degraded.verdict, degraded.status.value) == (Verdict.DEGRADED, 1)
    assert (healthy.verdict, healthy.status.value) == (Verdict.HEALTHY, 0)
    assert (failed.verdict, failed.summary, failed.status.value) == (Verdict.HUNG, "silent", 2)


def test_the_script_runs_under_posix_sh_and_parses(tmp_path) -> None:
    """The real script, run by dash here, yields the vitals this machine has."""
    completed = subprocess.run(
        ["sh", "-s"], input=vitals_script(str(tmp_path), 2), capture_output=True, text=True, check=True
    )

    vitals = parse_vitals(completed.stdout)

    assert {"load_1m", "cpus", "mem_available_percent", "uptime_s", "disks"} <= vitals.keys()
    assert "/" in vitals["disks"]


def test_the_data_mount_is_shell_quoted() -> None:
    assert "'/mnt/my data;reboot'" in vitals_script("/mnt/my data;reboot", 2)


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def test_nan_and_infinity_vitals_become_null_and_the_json_stays_strict(make_server, run_cli, tmp_path) -> None:
    """A host whose /proc says "nan" cannot make the output unreadable to jq."""
    fake = tmp_path / "fake_vitals.sh"
    fake.write_text(
        "cat >/dev/null\n"
        "printf '@loadavg\\nnan inf -inf 1/100 4242\\n@cpus\\n2\\n@uptime\\ninf 12.0\\n"
        "@meminfo\\nMemTotal: 1000 kB\\nMemAvailable: 500 kB\\n'\n"
    )
    server = make_server(key_options=f'command="/bin/sh {fake}"')

    run = run_cli("probe", "--json", *server.args(server.target))

    document = json.loads(run.stdout, parse_constant=_reject_constant)
    (result,) = document["results"]
    assert result["verdict"] == "HEALTHY", result
    vitals = result["vitals"]
    assert vitals["load_1m"] is None and vitals["uptime_s"] is None
    assert "load_per_cpu" not in vitals
    assert vitals["mem_available_percent"] == 50.0
