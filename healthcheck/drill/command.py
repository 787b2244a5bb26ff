"""`trainguard drill i-...`: freeze sshd on a deployed instance and watch trainguard recover it.

The drill runs only on an instance with the managed tag and an SSH alarm, and
asks first unless --yes. It stops sshd's listener with SIGSTOP through SSM Run
Command; a timer on the instance sends SIGCONT after --thaw-after seconds
whatever happens. It then prints, as they happen, the canary's samples, the
alarm's state changes, the auto-reboot function's decision, the instance's
state and SSH answering again, and compares them with the detection budget.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from typing import Any

from healthcheck import aws
from healthcheck.arguments import bounded, instance_id
from healthcheck.console import Console
from healthcheck.drill.aws import (
    DEFAULT_BUDGET_S,
    DEFAULT_THAW_AFTER_S,
    MAX_THAW_AFTER_S,
    AwsDrill,
    DrillRefused,
    Observations,
    figures,
    judge,
)
from healthcheck.errors import Interrupted, Terminated, UsageError
from healthcheck.probe.stages import check_banner
from healthcheck.remediation.policy import RemediationConfigError, managed_tag
from healthcheck.status import Status

SSH_CHECK_TIMEOUT_S = 5.0


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    drill = commands.add_parser(
        "drill",
        help="freeze sshd on a deployed instance (SIGSTOP via SSM) and time trainguard's detection and recovery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 recovered within the budget, 2 not detected or recovered in time, 3 bad input or "
        "refused; interrupted (Ctrl-C 130, SIGTERM 143, a closed terminal 129), it thaws sshd at once. The VM "
        "version of the drill, with no AWS account: make drill",
    )
    drill.add_argument("instance_id", type=instance_id, metavar="INSTANCE_ID", help="the instance, i-...")
    drill.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    drill.add_argument(
        "--budget",
        type=bounded(int, 1, 3600, "--budget"),
        default=DEFAULT_BUDGET_S,
        metavar="SECONDS",
        help="the stack's detection_budget_seconds.userspace_freeze (`pulumi stack output detection_budget_seconds`;"
        " default %(default)s, the default settings')",
    )
    drill.add_argument(
        "--thaw-after",
        type=bounded(int, 60, MAX_THAW_AFTER_S, "--thaw-after"),
        default=DEFAULT_THAW_AFTER_S,
        metavar="SECONDS",
        help="the instance thaws sshd itself after this long, whatever happens (default %(default)s)",
    )
    drill.add_argument("--private", action="store_true", help="check SSH at the private address")
    drill.add_argument("--region", help="AWS region (default: from the AWS config)")
    drill.set_defaults(run=run_drill)


def run_drill(args: argparse.Namespace, console: Console, drill: AwsDrill | None = None) -> int:
    purpose = f"to drill on {args.instance_id}"
    drill = drill or _drill(args, purpose)
    try:
        with aws.refusals_as_usage(purpose):
            alarm_name, address = drill.preflight()
    except DrillRefused as refused:
        raise UsageError(f"refused: {refused}") from None
    console.say(f"{args.instance_id}: SSH alarm {alarm_name}; SSH checked at {address}:22")
    question = (
        f"Freeze sshd on {args.instance_id} (it stays frozen until trainguard reboots it, or {args.thaw_after}s)?"
    )
    if not args.yes and not console.confirm(question, f"pass --yes to freeze sshd on {args.instance_id}"):
        console.say("Nothing done.")
        return Status.WARNING
    try:
        with aws.refusals_as_usage(purpose):
            freeze_at = drill.freeze(args.thaw_after)
    except DrillRefused as refused:
        raise UsageError(str(refused)) from None
    console.say(f"sshd frozen at {freeze_at:%H:%M:%S} UTC; the instance thaws it by itself in {args.thaw_after}s")
    seen = Observations(freeze_at)
    try:
        drill.watch(
            seen,
            alarm_name,
            address,
            until=freeze_at + timedelta(seconds=args.thaw_after + 120),
            on_event=lambda at, text: console.say(f"  {at:+7.0f}s  {text}"),
        )
    except (KeyboardInterrupt, Terminated) as cause:
        drill.thaw()
        raise Interrupted(cause, "asked the instance to thaw sshd now") from None
    recovered, lines = judge(figures(seen), args.budget)
    console.say("\n".join(lines))
    return Status.OK if recovered else Status.CRITICAL


def _drill(args: argparse.Namespace, purpose: str) -> AwsDrill:
    try:
        tag = managed_tag(os.environ)
    except RemediationConfigError as error:
        raise UsageError(f"{error}; fix or unset the variable") from None
    ec2, ssm, cloudwatch = (
        aws.client(name, purpose=purpose, region=args.region) for name in ("ec2", "ssm", "cloudwatch")
    )

    def ssh_answers(address: str) -> bool:
        return check_banner(address, 22, SSH_CHECK_TIMEOUT_S).alive

    return AwsDrill(ec2, ssm, cloudwatch, args.instance_id, tag, ssh_answers=ssh_answers, private_address=args.private)
