"""`python -m healthcheck probe` and `demo`: their arguments, the plan they make, one round or a watch.

paramiko, tenacity and boto3 are imported when a probe runs, not when the
parser is built, so the package's command line starts on a bare Python.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from healthcheck import contract
from healthcheck.arguments import bounded
from healthcheck.errors import Terminated, UsageError, interrupted_exit_status, signal_name
from healthcheck.probe import ec2
from healthcheck.probe.render import as_json, overall_status, report, watch_line
from healthcheck.probe.targets import parse_port
from healthcheck.probe.vitals import Thresholds
from healthcheck.status import Status

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

    from healthcheck.probe.prober import Job, ProbeSettings
    from healthcheck.probe.verdict import Result

DEFAULT_TIMEOUT = 10.0
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_PARALLEL = 128

DESCRIPTION = """\
Tell in seconds whether training hosts answer SSH, and why not.

Each TARGET goes through resolve, tcp, banner, auth and exec stages, each with
its own share of --timeout, and the first stage that fails names the verdict:
UNKNOWN_HOST, NOT_RUNNING, REFUSED, UNREACHABLE, HUNG (port open, sshd silent:
the frozen-host incident), NOT_SSH, HOSTKEY_UNKNOWN, HOSTKEY_MISMATCH, HOSTKEY_REVOKED,
AUTH_FAILED, SSH_ERROR, EXEC_HANG. A host that passes every stage is HEALTHY,
or DEGRADED when a vital is past its threshold.
"""

EPILOG = """\
targets:
  [user@]host[:port]   a host name or address ([addr]:port for IPv6)
  ALIAS                a Host from ~/.ssh/config (HostName, User, Port, IdentityFile)
  i-0123456789abcdef0  an EC2 instance, looked up with boto3 (public address, or --private)

exit status (Nagios): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN or bad input;
the most significant state over all targets. Ctrl-C exits 130 and SIGTERM 143,
after printing the results that had finished.
"""


# option, Thresholds field, upper bound, metavar, when the host is DEGRADED
THRESHOLD_OPTIONS = (
    ("--mem-available-min", "mem_available_min_percent", 100, "PERCENT", "below this much available memory"),
    ("--disk-max", "disk_used_max_percent", 100, "PERCENT", "above this disk use on / or the data mount"),
    ("--load-per-cpu-max", "load_per_cpu_max", 1000, "N", "above this 1-minute load per CPU"),
    ("--gpu-mem-max", "gpu_memory_max_percent", 100, "PERCENT", "above this GPU memory use"),
)


def _port(text: str) -> int:
    try:
        return parse_port(text, "-p/--port")
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """The probe and demo subcommands."""
    probe = commands.add_parser(
        "probe",
        help="check whether targets answer SSH, and diagnose why not",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument("targets", nargs="+", metavar="TARGET", help="what to probe (see targets below)")
    probe.add_argument("-p", "--port", type=_port, help="port, where the target gives none (default 22)")
    probe.add_argument("-l", "--user", help="user to log in as, where the target gives none")
    probe.add_argument(
        "-i",
        "--identity",
        action="append",
        default=[],
        metavar="FILE",
        help="private key to offer (repeatable); only these are offered",
    )
    probe.add_argument(
        "--known-hosts",
        metavar="FILE",
        help=f"default: {DEFAULT_KNOWN_HOSTS}; a FILE in a directory that does not exist is an error",
    )
    probe.add_argument(
        "--host-key-policy",
        choices=["strict", "accept-new"],
        default="accept-new",
        help="accept-new (default, as OpenSSH) records unknown host keys; a changed key is always CRITICAL",
    )
    probe.add_argument("-F", "--ssh-config", metavar="FILE", help="ssh config file (default: ~/.ssh/config)")
    probe.add_argument(
        "--timeout",
        type=bounded(float, 0.5, 3600, "--timeout"),
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="overall deadline per target; each stage gets its share (default: %(default)g)",
    )
    probe.add_argument("--json", action="store_true", help="print JSON (schema in the README)")
    probe.add_argument("--no-login", action="store_true", help="stop after the banner stage (no key needed)")
    probe.add_argument(
        "--watch",
        type=bounded(float, 1, 86400, "--watch"),
        metavar="SECONDS",
        help="probe every SECONDS and print one timestamped line per state change, until Ctrl-C or SIGTERM",
    )
    probe.add_argument(
        "--rounds",
        type=bounded(int, 1, 10**9, "--rounds"),
        metavar="N",
        help="with --watch, stop after N rounds",
    )
    probe.add_argument(
        "--parallel",
        type=bounded(int, 1, 1024, "--parallel"),
        default=DEFAULT_PARALLEL,
        metavar="N",
        help="targets probed at once (default: %(default)s)",
    )
    probe.add_argument("--private", action="store_true", help="for i- targets, use the private address")
    probe.add_argument("--region", help="AWS region for i- targets (default: from the AWS config)")
    probe.add_argument(
        "--data-mount",
        default=contract.DATA_MOUNT,
        metavar="PATH",
        help="data disk whose use is reported (default: %(default)s)",
    )
    defaults = Thresholds()
    for option, field, upper, metavar, meaning in THRESHOLD_OPTIONS:
        probe.add_argument(
            option,
            dest=field,
            type=bounded(float, 0, upper, option),
            default=getattr(defaults, field),
            metavar=metavar,
            help=f"DEGRADED {meaning} (default: %(default)g)",
        )

    probe.set_defaults(run=run_probe)
    demo = commands.add_parser(
        "demo",
        help="probe a throwaway local sshd, healthy and then frozen with SIGSTOP",
        description="Start a throwaway OpenSSH sshd on 127.0.0.1, probe it healthy, freeze it with "
        "SIGSTOP (the incident), probe it again, show the difference and clean up. Needs "
        "Debian's openssh-server; no cloud account.",
    )
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace, out: TextIO) -> int:
    from healthcheck.probe.demo import run_demo

    return run_demo(out)


def run_probe(args: argparse.Namespace, out: TextIO) -> int:
    if args.rounds is not None and args.watch is None:
        raise UsageError("--rounds counts --watch rounds: add --watch SECONDS, or drop --rounds")
    plan = Plan.from_args(args)
    if args.watch is None:
        from healthcheck.probe.prober import RoundInterrupted

        try:
            results = plan.run_round()
        except RoundInterrupted as interrupted:
            if interrupted.finished:
                print(as_json(interrupted.finished) if args.json else report(interrupted.finished), file=out)
            return _interrupted(
                interrupted.cause, f"{len(interrupted.finished)} of {len(plan.jobs)} targets finished", out
            )
        print(as_json(results) if args.json else report(results), file=out)
        return overall_status(results)
    return watch(plan, args.watch, args.rounds, args.json, out)


def _interrupted(cause: KeyboardInterrupt | Terminated, progress: str, out: TextIO) -> int:
    """The line that says the run was cut short, on stderr so that --json output stays parseable."""
    out.flush()
    print(f"healthcheck: interrupted by {signal_name(cause)}: {progress}", file=sys.stderr, flush=True)
    return interrupted_exit_status(cause)


class Plan:
    """Targets, keys and settings, checked once; each round asks EC2 again and probes everything."""

    def __init__(self, jobs: list[Job], settings: ProbeSettings, parallel: int, region: str | None) -> None:
        self.jobs = jobs
        self.settings = settings
        self.parallel = parallel
        self.region = region
        self._ec2_client: EC2Client | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        """Everything the arguments name, loaded and checked before any probe: bad input fails here."""
        from healthcheck.probe.prober import Job, ProbeSettings
        from healthcheck.probe.targets import TargetDefaults, load_ssh_config, parse_target

        ssh_config = load_ssh_config(args.ssh_config)
        defaults = TargetDefaults(user=args.user, port=args.port, identity_files=tuple(args.identity))
        targets = [parse_target(spec, defaults, ssh_config) for spec in args.targets]
        known_hosts = None
        jobs = [Job(target) for target in targets]
        if not args.no_login:
            from healthcheck.probe.credentials import HostKeyPolicy, KnownHosts, keys_for

            known_hosts = KnownHosts(
                args.known_hosts or DEFAULT_KNOWN_HOSTS,
                HostKeyPolicy(args.host_key_policy),
                create_directory=args.known_hosts is None,
            )
            jobs = [Job(target, keys_for(target, explicit=bool(args.identity))) for target in targets]
        settings = ProbeSettings(
            timeout=args.timeout,
            login=not args.no_login,
            known_hosts=known_hosts,
            thresholds=Thresholds(**{field: getattr(args, field) for _, field, *_ in THRESHOLD_OPTIONS}),
            data_mount=args.data_mount,
            private_address=args.private,
        )
        return cls(jobs, settings, args.parallel, args.region)

    def run_round(self) -> list[Result]:
        from healthcheck.probe.prober import probe_all

        return probe_all(self._with_ec2_lookups(), self.settings, self.parallel)

    def _with_ec2_lookups(self) -> list[Job]:
        """The jobs, with what EC2 says now about every `i-` target (one batch call a round)."""
        instance_ids = sorted({job.target.instance_id for job in self.jobs if job.target.instance_id})
        if not instance_ids:
            return self.jobs
        if self._ec2_client is None:
            self._ec2_client = ec2.make_client(self.region, self.settings.timeout)
        lookups = ec2.look_up(self._ec2_client, instance_ids)
        return [
            replace(job, lookup=lookups[job.target.instance_id]) if job.target.instance_id else job for job in self.jobs
        ]


def watch(
    plan: Plan,
    interval: float,
    rounds: int | None,
    as_json_lines: bool,
    out: TextIO,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Probe every `interval` seconds; print a line when a target's verdict changes.

    Ctrl-C or SIGTERM ends it at once, whether probing or sleeping: the lines
    of the probes that had finished, then the interruption on stderr.
    """
    from healthcheck.probe.prober import RoundInterrupted

    previous: dict[str, Result] = {}
    results: list[Result] = []
    completed = 0

    def show(results: list[Result]) -> None:
        now = datetime.now(timezone.utc)
        for result in results:
            before = previous.get(result.target)
            if before is None or before.verdict is not result.verdict:
                print(watch_line(now, result, before, as_json_lines), file=out, flush=True)
            previous[result.target] = result

    try:
        while rounds is None or completed < rounds:
            started = time.monotonic()
            results = plan.run_round()
            completed += 1  # before printing, so a signal during the print counts this round
            show(results)
            if rounds is None or completed < rounds:
                sleep(max(0.0, interval - (time.monotonic() - started)))
    except RoundInterrupted as interrupted:
        show(interrupted.finished)
        return _interrupted(interrupted.cause, f"{completed} rounds completed", out)
    except (KeyboardInterrupt, Terminated) as cause:
        return _interrupted(cause, f"{completed} rounds completed", out)
    return overall_status(results) if results else Status.UNKNOWN
