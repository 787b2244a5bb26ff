"""`trainguard probe` and `demo`: their arguments, the plan they make, one round or a watch.

paramiko, tenacity and boto3 are imported when a probe runs, not when the
parser is built, so the package's command line starts on a bare Python.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from healthcheck import contract, watch
from healthcheck.arguments import (
    add_watch_arguments,
    bounded,
    capped_by_open_files,
    check_watch_arguments,
    open_files_limit,
)
from healthcheck.console import Console
from healthcheck.errors import Interrupted, UsageError
from healthcheck.probe.plan import DEFAULT_KNOWN_HOSTS, DEFAULT_PARALLEL, DEFAULT_TIMEOUT, Plan, Request
from healthcheck.probe.render import as_json, overall_status, report, watch_line
from healthcheck.probe.targets import parse_port
from healthcheck.probe.vitals import Thresholds
from healthcheck.status import Status

if TYPE_CHECKING:
    from healthcheck.probe.verdict import Result

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


# A probe holds its connection, and briefly a second descriptor (a DNS lookup, known_hosts).
FILES_PER_PROBE = 2
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
    add_watch_arguments(probe, "one timestamped line per state change")
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


def _run_demo(args: argparse.Namespace, console: Console) -> int:
    from healthcheck.probe.demo import run_demo

    return run_demo(console)


def request_from(args: argparse.Namespace) -> Request:
    return Request(
        targets=tuple(args.targets),
        user=args.user,
        port=args.port,
        identities=tuple(args.identity),
        known_hosts=args.known_hosts,
        host_key_policy=args.host_key_policy,
        ssh_config=args.ssh_config,
        timeout=args.timeout,
        login=not args.no_login,
        thresholds=Thresholds(**{field: getattr(args, field) for _, field, *_ in THRESHOLD_OPTIONS}),
        data_mount=args.data_mount,
        private_address=args.private,
        parallel=args.parallel,
        region=args.region,
    )


def run_probe(args: argparse.Namespace, console: Console) -> int:
    check_watch_arguments(args)
    parallel = capped_by_open_files(args.parallel, FILES_PER_PROBE, open_files_limit())
    if parallel < args.parallel:
        console.warn(
            f"probing {parallel} targets at once, not {args.parallel}: the open-file limit is "
            f"{open_files_limit()} (raise it with ulimit -n)"
        )
    plan = Plan.make(replace(request_from(args), parallel=parallel))
    if args.watch is not None:
        timeline = Timeline(plan, args.json, console)
        return watch.every(args.watch, args.rounds, timeline.probe, timeline.show)
    from healthcheck.probe.prober import RoundInterrupted

    try:
        results = plan.run_round()
    except RoundInterrupted as interrupted:
        if interrupted.finished:
            console.say(as_json(interrupted.finished) if args.json else report(interrupted.finished))
        progress = f"{len(interrupted.finished)} of {len(plan.jobs)} targets finished"
        raise Interrupted(interrupted.cause, progress) from None
    console.say(as_json(results) if args.json else report(results))
    return overall_status(results)


class Timeline:
    """--watch: one timestamped line for every target whose verdict changed (or was first seen) in a round."""

    def __init__(self, plan: Plan, as_json_lines: bool, console: Console) -> None:
        self.plan = plan
        self.as_json_lines = as_json_lines
        self.console = console
        self.previous: dict[str, Result] = {}

    def probe(self) -> list[Result]:
        """Probe everything once; Ctrl-C or SIGTERM mid-round still shows the targets that had finished."""
        from healthcheck.probe.prober import RoundInterrupted

        try:
            return self.plan.run_round()
        except RoundInterrupted as interrupted:
            self.show(interrupted.finished)
            raise interrupted.cause from None

    def show(self, results: list[Result]) -> Status:
        now = datetime.now(timezone.utc)
        for result in results:
            before = self.previous.get(result.target)
            if before is None or before.verdict is not result.verdict:
                self.console.say(watch_line(now, result, before, self.as_json_lines))
            self.previous[result.target] = result
        return overall_status(results)
