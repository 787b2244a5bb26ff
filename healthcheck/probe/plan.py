"""What a probe run will do, checked before any probe: targets, keys, known_hosts and settings.

A Request is what the user asked for (the command line, or the demo); a Plan
is the same loaded and checked, so bad input fails here, in one line, and
not once per target. Each round asks EC2 again about the `i-` targets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from healthcheck import contract
from healthcheck.errors import UsageError
from healthcheck.probe import ec2
from healthcheck.probe.vitals import Thresholds

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

    from healthcheck.probe.canary import CanaryView
    from healthcheck.probe.prober import Job, ProbeSettings
    from healthcheck.probe.verdict import Result

DEFAULT_TIMEOUT = 10.0
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_PARALLEL = 128


@dataclass(frozen=True)
class Request:
    """What to probe and how, as the user said it."""

    targets: tuple[str, ...]
    user: str | None = None
    port: int | None = None
    identities: tuple[str, ...] = ()  # -i: only these keys are offered
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts, whose directory is made if missing
    host_key_policy: str = "accept-new"
    ssh_config: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    login: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)
    data_mount: str = contract.DATA_MOUNT
    private_address: bool = False
    parallel: int = DEFAULT_PARALLEL
    region: str | None = None


class Plan:
    """Targets, keys and settings, checked once; each round asks EC2 again and probes everything."""

    def __init__(self, jobs: list[Job], settings: ProbeSettings, parallel: int, region: str | None) -> None:
        self.jobs = jobs
        self.settings = settings
        self.parallel = parallel
        self.region = region
        self._ec2_client: EC2Client | None = None
        self._cloudwatch: Any = None

    @classmethod
    def make(cls, request: Request) -> Plan:
        """Everything the request names, loaded and checked before any probe: bad input fails here."""
        from healthcheck.probe.prober import Job, ProbeSettings
        from healthcheck.probe.targets import TargetDefaults, load_ssh_config, parse_target

        ssh_config = load_ssh_config(request.ssh_config)
        defaults = TargetDefaults(user=request.user, port=request.port, identity_files=request.identities)
        targets = [parse_target(spec, defaults, ssh_config) for spec in request.targets]
        known_hosts = None
        jobs = [Job(target) for target in targets]
        if request.login:
            from healthcheck.probe.credentials import HostKeyPolicy, KnownHosts, keys_for

            known_hosts = KnownHosts(
                request.known_hosts or DEFAULT_KNOWN_HOSTS,
                HostKeyPolicy(request.host_key_policy),
                create_directory=request.known_hosts is None,
            )
            jobs = [Job(target, keys_for(target, explicit=bool(request.identities))) for target in targets]
        settings = ProbeSettings(
            timeout=request.timeout,
            login=request.login,
            known_hosts=known_hosts,
            thresholds=request.thresholds,
            data_mount=request.data_mount,
            private_address=request.private_address,
        )
        return cls(jobs, settings, request.parallel, request.region)

    def run_round(self) -> list[Result]:
        from healthcheck.probe.prober import probe_all

        return probe_all(self._with_ec2_lookups(), self.settings, self.parallel)

    def _with_ec2_lookups(self) -> list[Job]:
        """The jobs, with what EC2 says now about every `i-` target (one batch call a round)."""
        instance_ids = sorted({job.target.instance_id for job in self.jobs if job.target.instance_id})
        if not instance_ids:
            return self.jobs
        if self._ec2_client is None:
            self._ec2_client = ec2.make_client(self.region, self.settings.timeout, instance_ids)
        lookups = {
            instance_id: replace(lookup, canary=functools.partial(self._canary_view, instance_id))
            for instance_id, lookup in ec2.look_up(self._ec2_client, instance_ids).items()
        }
        return [
            replace(job, lookup=lookups[job.target.instance_id]) if job.target.instance_id else job for job in self.jobs
        ]

    def _canary_view(self, instance_id: str) -> CanaryView | None:
        """What the stack's canary heard from the instance, or None when it cannot be asked (no canary data, no
        rights to read CloudWatch, AWS unreachable): the probe then judges without it."""
        from botocore.exceptions import BotoCoreError, ClientError

        from healthcheck.probe.canary import canary_client, read_canary

        try:
            if self._cloudwatch is None:
                # A quarter of the budget: the port's silence has already cost half of it.
                self._cloudwatch = canary_client(self.region, self.settings.timeout / 4)
            view = read_canary(self._cloudwatch, [instance_id], datetime.now(timezone.utc))[instance_id]
        except (BotoCoreError, ClientError, UsageError):
            return None
        return view if view.latest_at is not None else None
