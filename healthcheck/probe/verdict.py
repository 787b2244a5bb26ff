"""The probe's verdicts and what each means; immutable results, and the pure function that concludes them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from healthcheck.probe.vitals import Breach, Thresholds, Vitals, advice, breaches, describe
from healthcheck.status import Status


class Verdict(enum.Enum):
    """What the probe concluded about one target, with its Nagios state and advice."""

    status: Status
    meaning: str
    next_step: str

    def __new__(cls, value: str, status: Status, meaning: str, next_step: str) -> Verdict:
        member = object.__new__(cls)
        member._value_ = value
        member.status = status
        member.meaning = meaning
        member.next_step = next_step
        return member

    HEALTHY = (
        "HEALTHY",
        Status.OK,
        "SSH answers, login works and the vitals are within thresholds.",
        "Nothing to do.",
    )
    DEGRADED = (
        "DEGRADED",
        Status.WARNING,
        "SSH works, but a vital is past its threshold. Memory running out is how the incident's freeze began.",
        "What to do depends on the vital: the result's next step names it.",
    )
    UNKNOWN_HOST = (
        "UNKNOWN_HOST",
        Status.UNKNOWN,
        "The name could not be resolved to an address.",
        "Check the host name, your DNS, or the instance id and region.",
    )
    NOT_RUNNING = (
        "NOT_RUNNING",
        Status.CRITICAL,
        "The EC2 instance is not in the running state, so nothing can answer SSH.",
        "Start it (aws ec2 start-instances --instance-ids ID) or find out who stopped it (CloudTrail).",
    )
    REFUSED = (
        "REFUSED",
        Status.CRITICAL,
        "The host answered but refused the connection: nothing listens on the port, or "
        "sshd turned the connection away.",
        "Check that sshd runs and listens on this port (systemctl status ssh) and that the port is right.",
    )
    UNREACHABLE = (
        "UNREACHABLE",
        Status.CRITICAL,
        "No answer to the TCP connection, or no route to the host: the host is down, "
        "its kernel is frozen, or a firewall drops the packets.",
        "Check the instance state and status checks, the security group and the route; "
        "for an EC2 instance: trainguard probe i-INSTANCE.",
    )
    HUNG = (
        "HUNG",
        Status.CRITICAL,
        "The kernel accepted the TCP connection but sshd never answered: the machine "
        "is alive below userspace and frozen above it. This is the incident's "
        "signature; the likely cause is memory exhaustion (OOM thrashing) or a "
        "userspace freeze.",
        "Do not wait for it to recover. On a trainguard instance the auto-reboot function snapshots it, keeps "
        "its console and reboots it within about two minutes of the freeze, and emails you: trainguard status "
        "shows its alarm. To do it now: trainguard reboot INSTANCE_ID. Afterwards, the evidence: "
        "trainguard pull DEST --postmortem.",
    )
    ADDRESS_NOT_ALLOWED = (
        "ADDRESS_NOT_ALLOWED",
        Status.UNKNOWN,
        "The host answers SSH inside its VPC (the stack's canary hears it), but not from here: the instance's "
        "security group does not admit this address. Nothing is wrong with the host.",
        "Do not reboot it. Add this address to the stack's SSH ranges, then deploy: pulumi config set --path "
        "'trainguard:sshAllowedCidrs[N]' \"$(curl -s https://checkip.amazonaws.com)/32\" && pulumi up "
        "(N: the next free index).",
    )
    NOT_SSH = (
        "NOT_SSH",
        Status.CRITICAL,
        "Something other than an SSH server answered on this port.",
        "Check the port number; another service may have taken the SSH port.",
    )
    HOSTKEY_UNKNOWN = (
        "HOSTKEY_UNKNOWN",
        Status.UNKNOWN,
        "The host's key is not in known_hosts and --host-key-policy strict forbids trusting it on first use.",
        "Verify the key out of band and add it to known_hosts, or probe once with --host-key-policy accept-new.",
    )
    HOSTKEY_MISMATCH = (
        "HOSTKEY_MISMATCH",
        Status.CRITICAL,
        "The host key differs from the one in known_hosts: the host was rebuilt, or "
        "someone is intercepting the connection.",
        "Find out why the key changed before trusting it; if the host was rebuilt, "
        "remove the old key (ssh-keygen -R HOST) and probe again.",
    )
    HOSTKEY_REVOKED = (
        "HOSTKEY_REVOKED",
        Status.CRITICAL,
        "The host offered a key that known_hosts marks @revoked: it must never be trusted again.",
        "Do not log in. Find out why the host still has a revoked key (a stale image, or an "
        "impostor) and give it a new one.",
    )
    AUTH_FAILED = (
        "AUTH_FAILED",
        Status.CRITICAL,
        "sshd answers, but rejected every key offered: the host is up, you cannot log in.",
        "Check the user name and the key (-l, -i), and the host's authorized_keys.",
    )
    NO_KEY = (
        "NO_KEY",
        Status.UNKNOWN,
        "sshd answers, but the probe had no key it could offer, so login was not tried: this says nothing "
        "about the host's login.",
        "Load the key into your agent (macOS: ssh-add --apple-use-keychain ~/.ssh/id_ed25519; elsewhere: "
        "ssh-add), name your agent with IdentityAgent in ~/.ssh/config, or pass -i FILE; --no-login skips the login.",
    )
    SSH_ERROR = (
        "SSH_ERROR",
        Status.CRITICAL,
        "sshd answered but the SSH handshake failed (no common algorithm or a protocol error).",
        "Try ssh -vvv to the same target to see where the handshake breaks.",
    )
    EXEC_HANG = (
        "EXEC_HANG",
        Status.CRITICAL,
        "Login worked, but one small command did not finish in time: the host is "
        "freezing, typically from memory pressure or a stalled disk.",
        "Act now while a session still opens: trainguard launch --status on the instance shows each worker's "
        "memory; stop the largest (trainguard launch --stop), or snapshot and reboot it: trainguard reboot "
        "INSTANCE_ID.",
    )
    PROBE_ERROR = (
        "PROBE_ERROR",
        Status.UNKNOWN,
        "The probe itself failed in a way it does not understand; this says nothing about the host.",
        "Run again with --json and report the stage detail as a trainguard bug.",
    )


@dataclass(frozen=True)
class Stage:
    """One stage as it ran: its name, whether it passed, how long it took and what it saw."""

    name: str
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass(frozen=True)
class Result:
    """Everything the probe learned about one target."""

    target: str
    verdict: Verdict
    summary: str
    duration_s: float
    stages: tuple[Stage, ...]
    vitals: Vitals
    ec2: dict[str, Any] | None = None
    next_step: str = ""  # what to do: the verdict's advice, or, for DEGRADED, the advice for the vitals past

    @property
    def status(self) -> Status:
        return self.verdict.status

    def as_dict(self) -> dict[str, Any]:
        """The JSON form; its keys are a stable interface documented in the README."""
        return {
            "target": self.target,
            "status": self.status.name,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "duration_s": round(self.duration_s, 3),
            "stages": [stage.as_dict() for stage in self.stages],
            "vitals": self.vitals,
            "ec2": self.ec2,
            "next_step": self.next_step,
        }


def conclude(
    *,
    target: str,
    stages: tuple[Stage, ...],
    failure: tuple[Verdict, str] | None,
    vitals: Vitals,
    thresholds: Thresholds,
    duration_s: float,
    ec2: dict[str, Any] | None = None,
) -> Result:
    """The verdict: the first failed stage's, else DEGRADED or HEALTHY by the vitals."""
    past: tuple[Breach, ...] = ()
    if failure is not None:
        verdict, summary = failure
    elif not any(stage.name == "exec" for stage in stages):
        verdict, summary = Verdict.HEALTHY, f"sshd answers ({stages[-1].detail}); login skipped"
    else:
        past = breaches(vitals, thresholds)
        verdict = Verdict.DEGRADED if past else Verdict.HEALTHY
        summary = "; ".join(breach.text for breach in past) if past else describe(vitals)
    return Result(
        target=target,
        verdict=verdict,
        summary=summary,
        duration_s=duration_s,
        stages=stages,
        vitals=vitals,
        ec2=ec2,
        next_step=advice(past) if past else verdict.next_step,
    )
