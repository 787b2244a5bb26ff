"""`make demo`: the incident in thirty seconds, on a throwaway sshd, with no cloud account."""

from __future__ import annotations

from typing import TextIO

from healthcheck.cli import build_parser
from healthcheck.probe.command import Plan
from healthcheck.probe.render import report
from healthcheck.probe.sandbox import ThrowawaySshd
from healthcheck.probe.verdict import Result, Verdict

DEMO_TIMEOUT = 5


def run_demo(out: TextIO) -> int:
    """Probe a real sshd, freeze it with SIGSTOP, probe again; 0 if the probe told live from frozen."""
    with ThrowawaySshd(ports=1) as sshd:
        key = sshd.add_client_key("id_demo")
        target = f"{sshd.user}@127.0.0.1:{sshd.ports[0]}"
        argv = [
            "probe",
            "--timeout",
            str(DEMO_TIMEOUT),
            "-i",
            str(key),
            "--known-hosts",
            str(sshd.workdir / "known_hosts"),
            target,
        ]
        plan = Plan.from_args(build_parser().parse_args(argv))
        command = "python -m healthcheck " + " ".join(argv)

        print(f"A throwaway OpenSSH sshd is listening on {target}.\n\n$ {command}\n", file=out)
        healthy = plan.run_round()[0]
        print(report([healthy]), file=out)

        sshd.freeze()
        print(
            f"\nNow sshd is frozen with SIGSTOP (pid {sshd.process.pid if sshd.process else '?'}): the kernel "
            "still accepts TCP connections on the port, but nothing answers, as on the frozen "
            f"training host.\n\n$ {command}\n",
            file=out,
        )
        frozen = plan.run_round()[0]
        print(report([frozen]), file=out)
        print("\n" + _difference(healthy, frozen), file=out)
    print("\nThe throwaway sshd, its keys and its sessions are gone.", file=out)
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
