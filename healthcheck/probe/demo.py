"""`make demo`: the incident in thirty seconds, on a throwaway sshd, with no cloud account."""

from __future__ import annotations

import shlex
from pathlib import Path

from healthcheck.console import Console
from healthcheck.probe.plan import Plan, Request
from healthcheck.probe.render import report
from healthcheck.probe.sandbox import ThrowawaySshd
from healthcheck.probe.verdict import Result, Verdict

DEMO_TIMEOUT = 5


def run_demo(console: Console, sandbox_parent: Path | None = None) -> int:
    """Probe a real sshd, freeze it with SIGSTOP, probe again; 0 if the probe told live from frozen.

    The throwaway sshd's keys and config live in a new folder under `sandbox_parent` (default: the system's
    temporary folder), removed at the end.
    """
    with ThrowawaySshd(ports=1, parent=sandbox_parent) as sshd:
        key = sshd.add_client_key("id_demo")
        target = f"{sshd.user}@127.0.0.1:{sshd.ports[0]}"
        known_hosts = sshd.workdir / "known_hosts"
        plan = Plan.make(
            Request(targets=(target,), identities=(str(key),), known_hosts=str(known_hosts), timeout=DEMO_TIMEOUT)
        )
        argv = ["probe", "--timeout", str(DEMO_TIMEOUT), "-i", str(key), "--known-hosts", str(known_hosts), target]
        command = "trainguard " + shlex.join(argv)

        console.say(f"A throwaway OpenSSH sshd is listening on {target}.\n\n$ {command}\n")
        healthy = plan.run_round()[0]
        console.say(report([healthy]))

        sshd.freeze()
        console.say(
            f"\nNow sshd is frozen with SIGSTOP (pid {sshd.process.pid if sshd.process else '?'}): the kernel "
            "still accepts TCP connections on the port, but nothing answers, as on the frozen "
            f"training host.\n\n$ {command}\n"
        )
        frozen = plan.run_round()[0]
        console.say(report([frozen]))
        console.say("\n" + _difference(healthy, frozen))
    console.say("\nThe throwaway sshd, its keys and its sessions are gone.")
    # DEGRADED still means sshd answered and a login worked; it happens when this machine itself is busy.
    answered = healthy.verdict in (Verdict.HEALTHY, Verdict.DEGRADED)
    return 0 if answered and frozen.verdict is Verdict.HUNG else 1


def _difference(before: Result, after: Result) -> str:
    lines = ["What changed:"]
    lines.append(f"  verdict      {before.verdict.value} -> {after.verdict.value}")
    lines.append(
        f"  exit status  {before.status.value} ({before.status.name}) -> {after.status.value} ({after.status.name})"
    )
    lines.append(f"  probe time   {before.duration_s:.2f}s -> {after.duration_s:.2f}s (deadline {DEMO_TIMEOUT}s)")
    stages_after = {stage.name: stage for stage in after.stages}
    for stage in before.stages:
        later = stages_after.get(stage.name)
        state = "not reached" if later is None else ("ok" if later.ok else f"FAILED: {later.detail}")
        lines.append(f"  {stage.name:<11}  ok -> {state}")
    return "\n".join(lines)
