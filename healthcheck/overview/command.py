"""`trainguard status`: is everything watched, is anything frozen or firing, are results leaving the instances.

The stack is found from `pulumi stack output --json` when run in the Pulumi project's folder with its stack
selected, else by name (--stack): its instances carry the tag trainguard:stack=<stack> and its alarms are named
trainguard-<stack>-...; the alarms' actions name its alert topic and auto-reboot function, whose settings name
the results bucket. Region and credentials as every trainguard command reads them.

--test-alarm sends a real alert email through the stack's topic (a short-lived alarm set to ALARM, then OK,
then deleted) and reboots, snapshots and spends nothing.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from healthcheck import aws, contract, watch
from healthcheck.arguments import add_watch_arguments, check_watch_arguments
from healthcheck.console import Console
from healthcheck.errors import UsageError
from healthcheck.overview.alert_trial import HOLD_S, send_trial_alert
from healthcheck.overview.facts import PARALLEL, Clients, Sources, gather
from healthcheck.overview.judge import Report, judge
from healthcheck.overview.render import write_json, write_text
from healthcheck.stack_outputs import stack_outputs
from healthcheck.status import Status

EPILOG = """\
exit status: 0 everything is watched; 1 a warning (an email nobody confirmed, an alarm without data, a
silent canary or agent, a push that stopped, a spent reboot budget, workers killed for memory, a stopped
instance, an address the security group drops, a port silent that nothing confirms frozen); 2 an instance
does not answer SSH (HUNG and the like), fails its status checks, or has an alarm firing; 3 could not check
(no stack named, no instance found, no credentials, EC2 unreachable). --test-alarm: 0 sent to confirmed
addresses only, 1 sent but an address has not confirmed (or the subscriptions could not be read), 3 could
not send. With --watch, the last round's.

region: --region, else the stack's (its outputs), else AWS_REGION or the AWS config.
"""
STACK_NAME_HINT = "pass --stack NAME (the Pulumi stack's name), or run in the Pulumi project's folder"
# With --stack, Pulumi is only a shortcut to the stack's outputs: waited for this long, then done without.
NAMED_PULUMI_TIMEOUT_S = 15.0
# Each AWS call: 5 s to connect, 10 s to read, two tries; the instances' threads share the connections.
LIMITS = aws.Limits(connect_s=5.0, read_s=10.0, attempts=2, pool=PARALLEL)


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    status = commands.add_parser(
        "status",
        help="show whether every instance is watched: emails, alarms, canary, agent, pushes, workers",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--stack", help="the stack's name (default: the selected Pulumi stack's)")
    status.add_argument("--region", help="AWS region (default: the stack's, else the AWS config)")
    status.add_argument("--bucket", help=f"the results bucket (default: the stack's, else ${contract.BUCKET_VARIABLE})")
    status.add_argument("--json", action="store_true", help="print one JSON object (schemas/status.schema.json)")
    add_watch_arguments(status, "the status again (with --json, one line each)")
    status.add_argument(
        "--test-alarm",
        action="store_true",
        help="send a test alert email through the stack's topic (reboots nothing, snapshots nothing)",
    )
    status.set_defaults(run=run_status)


@dataclass(frozen=True)
class Found:
    """The stack as found: where its pieces are, and the region to ask."""

    sources: Sources
    region: str | None


def find_stack(stack: str | None, region: str | None, bucket: str | None, outputs: dict[str, Any] | None) -> Found:
    """The stack from its outputs when they are the stack asked for, else from its name alone (pure)."""
    named = stack or (outputs or {}).get("stack")
    if not isinstance(named, str) or not named:
        raise UsageError(f"which stack? {STACK_NAME_HINT} with the stack selected")
    if outputs is None or outputs.get("stack") != named:
        return Found(Sources(stack=named, bucket=bucket), region)

    def text(key: str) -> str | None:
        value = outputs.get(key)
        return value if isinstance(value, str) and value else None

    ids = outputs.get("instance_ids")
    return Found(
        Sources(
            stack=named,
            bucket=bucket or text("bucket_name"),
            topic_arn=text("topic_arn"),
            bundle_version=text("bundle_version"),
            dlm_policy_id=text("dlm_policy_id"),
            function_name=text("auto_reboot_function_name"),
            instance_ids=tuple(iid for iid in ids if contract.is_instance_id(iid)) if isinstance(ids, list) else (),
        ),
        region or text("region"),
    )


def run_status(args: argparse.Namespace, console: Console) -> int:
    check_watch_arguments(args)
    if args.test_alarm and (args.watch is not None or args.json):
        raise UsageError("--test-alarm sends one test email: drop --watch and --json")
    # With a name, Pulumi is asked for that stack's outputs, and a Pulumi that does not answer is done without.
    if args.stack:
        outputs = stack_outputs(instead=None, stack=args.stack, timeout=NAMED_PULUMI_TIMEOUT_S)
    else:
        outputs = stack_outputs(instead="pass --stack NAME")
    found = find_stack(args.stack, args.region, args.bucket, outputs)
    purpose = f"to look at stack {found.sources.stack}"
    session = aws.new_session()
    clients = Clients(
        lambda service: aws.client(service, purpose=purpose, region=found.region, limits=LIMITS, session=session)
    )
    region = clients.ec2.meta.region_name
    sources = found.sources
    if sources.bucket is None and os.environ.get(contract.BUCKET_VARIABLE):
        sources = replace(sources, bucket=os.environ[contract.BUCKET_VARIABLE])

    def look() -> Report | str:
        """One round; AWS refusing the caller is bad input (it ends a watch), anything else one line that a
        watch outlives: no traceback, whatever answers (a proxy's HTML page, a half answer)."""
        try:
            with aws.refusals_as_usage(purpose):
                return judge(gather(sources, clients, region, datetime.now(timezone.utc)))
        except UsageError:
            raise
        except Exception as error:  # noqa: BLE001 (status never raises: see the module docstring)
            return f"could not list the instances of stack {sources.stack} in {region}: {error}"

    if args.test_alarm:
        return _test_alarm(look(), clients, console, purpose)

    def show(report: Report | str) -> Status:
        if isinstance(report, str):
            console.error(report)
            return Status.UNKNOWN
        if args.json:
            write_json(report, console.stdout)
        else:
            write_text(report, console.stdout, terminal=console.interactive)
        return report.level

    if args.watch is not None:
        return watch.every(args.watch, args.rounds, look, show)
    return show(look())


def _test_alarm(report: Report | str, clients: Clients, console: Console, purpose: str) -> int:
    """Send the test email after saying who will get it; a subscription nobody confirmed gets nothing."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(report, str):
        console.error(report)
        return Status.UNKNOWN
    facts = report.facts
    if facts.topic_arn is None:
        raise UsageError(
            f"no alert topic found for stack {facts.stack} in {facts.region}: is the stack deployed there "
            "(--stack, --region)?"
        )
    console.say(f"Sending a test alarm through {facts.topic_arn}: ALARM, then OK {HOLD_S:g} s later.")
    try:
        with aws.refusals_as_usage(f"{purpose} and send a test alarm (cloudwatch:PutMetricAlarm, SetAlarmState)"):
            trial = send_trial_alert(clients.cloudwatch, facts.stack, facts.topic_arn)
    except (BotoCoreError, ClientError) as error:
        console.error(f"could not send the test alarm: {error}")
        return Status.UNKNOWN
    console.say(f"Sent: {trial.alarm_name} went {' then '.join(trial.states)} and was deleted; nothing was rebooted.")
    if facts.subscriptions is None:
        console.warn("the topic's subscriptions could not be read: who gets the test email is unknown")
        return Status.WARNING
    confirmed = [subscription.endpoint for subscription in facts.subscriptions if subscription.confirmed]
    pending = [subscription.endpoint for subscription in facts.subscriptions if not subscription.confirmed]
    if confirmed:
        console.say(f"Look for 'ALARM: \"{trial.alarm_name}\"' and then 'OK: ...' at: {', '.join(confirmed)}.")
    for endpoint in pending:
        console.warn(
            f"{endpoint} has not confirmed its subscription, so it gets nothing: look in that inbox for "
            "'AWS Notification - Subscription Confirmation' and click its link, then run this again"
        )
    if not facts.subscriptions:
        console.warn(f"nobody is subscribed to {facts.topic_arn}: the test email went to no one")
    return Status.OK if confirmed and not pending else Status.WARNING
