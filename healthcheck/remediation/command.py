"""`trainguard reboot i-...`: the auto-reboot function's decision and sequence, from a laptop.

The managed-tag, running-state, boot-grace, duplicate and claim rules apply as
they do in the Lambda; --force lifts the reboot budget only. Unlike the Lambda,
it does not schedule a look again.
"""

from __future__ import annotations

import argparse
import getpass
import os
from dataclasses import replace
from typing import Any

from healthcheck import aws, contract
from healthcheck.arguments import instance_id
from healthcheck.console import Console
from healthcheck.errors import UsageError
from healthcheck.remediation.actions import Clients, InstanceNotFound, Remediator
from healthcheck.remediation.policy import RemediationConfigError, RemediationSettings, Verdict
from healthcheck.remediation.report import Outcome, Step
from healthcheck.status import Status

RECOVERY_STEPS = ("reboot", "stop")


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    reboot = commands.add_parser(
        "reboot",
        help="snapshot, keep the console and reboot an instance, as the auto-reboot function does",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 recovered (or would, with --dry-run), 1 skipped or a side step failed, "
        "2 gave up or the reboot failed, 3 bad input",
    )
    reboot.add_argument("instance_id", type=instance_id, metavar="INSTANCE_ID", help="the instance, i-...")
    reboot.add_argument("--reason", default="manual reboot", help="why, for the email and the snapshot tags")
    reboot.add_argument("--dry-run", action="store_true", help="decide and show the plan; change nothing")
    reboot.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reboot.add_argument("--force", action="store_true", help="lift the reboot budget (the other rules still apply)")
    reboot.add_argument("--region", help="AWS region (default: from the AWS config)")
    reboot.add_argument("--bucket", help=f"bucket for the post-mortem (default: ${contract.BUCKET_VARIABLE})")
    reboot.add_argument("--topic-arn", help=f"SNS topic for the email (default: ${contract.TOPIC_ARN_VARIABLE})")
    reboot.set_defaults(run=run_reboot)


def run_reboot(args: argparse.Namespace, console: Console) -> int:
    try:
        settings = RemediationSettings.from_environment(os.environ)
    except RemediationConfigError as error:
        raise UsageError(f"{error}; fix or unset the variable") from None
    settings = replace(
        settings,
        bucket=args.bucket or settings.bucket,
        topic_arn=args.topic_arn or settings.topic_arn,
        region=args.region or settings.region,
    )

    def show(step: Step) -> None:
        console.say(f"  {step.name:<15} {step.status:<7} {step.detail}")

    remediator = Remediator(settings, Clients(region=args.region), on_step=show)

    def remediate(dry_run: bool) -> Outcome:
        try:
            with aws.refusals_as_usage(f"to reboot {args.instance_id}"):
                return remediator.remediate(
                    args.instance_id, args.reason, requested_by=getpass.getuser(), force=args.force, dry_run=dry_run
                )
        except InstanceNotFound as error:
            raise UsageError(f"unknown instance id {error}: check the id and the region (--region)") from None

    plan = remediate(dry_run=True)
    console.say(f"{args.instance_id}: {plan.decision.verdict.value}: {plan.decision.reason}")
    if not plan.decision.verdict.acts and plan.decision.verdict is not Verdict.GIVE_UP:
        return Status.WARNING
    if args.dry_run:
        console.say(_plan_text(plan, settings))
        return Status.OK if plan.decision.verdict.acts else Status.CRITICAL
    action = f"{plan.decision.verdict.value} {args.instance_id}"
    if not args.yes and not console.confirm(f"{action}?", f"pass --yes to {action}"):
        console.say("Nothing done.")
        return Status.WARNING
    return _exit_status(remediate(dry_run=False))


def _plan_text(plan: Outcome, settings: RemediationSettings) -> str:
    if plan.decision.verdict is Verdict.GIVE_UP:
        return "Would record the decision and email a person (pass --force to reboot anyway)."
    recovery = "force-stop, then start when stopped" if plan.decision.verdict is Verdict.STOP_START else "reboot"
    where = (
        f"s3://{settings.bucket}/{contract.POSTMORTEM_PREFIX}{plan.instance_id}/"
        if settings.bucket
        else "nowhere (no bucket)"
    )
    email = settings.topic_arn or "nobody (no topic)"
    return (
        f"Would: keep the console output in {where}; snapshot every EBS volume (kept "
        f"{settings.evidence_retention.days} days); {recovery}; record it in the instance's tags; email {email}."
    )


def _exit_status(outcome: Outcome) -> int:
    if outcome.decision.verdict is Verdict.GIVE_UP:
        return Status.CRITICAL
    if not outcome.decision.verdict.acts:
        return Status.WARNING
    failed = {step.name for step in outcome.steps if not step.ok}
    if failed & set(RECOVERY_STEPS):
        return Status.CRITICAL
    return Status.WARNING if failed else Status.OK
