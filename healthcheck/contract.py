"""The names every trainguard runtime must agree on, in one place.

The laptop's commands, the Lambdas, the guard on the instance, the Pulumi
program and the drill all import what they share from here: metric
namespaces and names, tag keys, environment variables, on-instance paths,
bucket prefixes and alarm names. The instance's shell scripts and systemd
units read the same values from /etc/trainguard/bundle.env, which the bundle
writes from `instance_environment()` below, and the units have them filled
in when the bundle is built.

Standard library only, Python 3.10: the instances and the Lambdas import it too.
"""

from __future__ import annotations

import re
from typing import TypeGuard

# --- CloudWatch -----------------------------------------------------------------------------------------------
# The SSH canary's metric; the instances may not publish in this namespace (infra.policies), so the
# auto-reboot function can trust it to spare a host that still answers SSH.
CANARY_NAMESPACE = "Trainguard"
SSH_RESPONSIVE_METRIC = "SSHResponsive"
# The guard on the instance counts the workers memory killed.
GUARD_NAMESPACE = "Trainguard/Guard"
OOM_KILLS_METRIC = "WorkerOOMKills"
# The CloudWatch agent's namespace and the metrics trainguard configures it to send.
AGENT_NAMESPACE = "CWAgent"
MEMORY_METRIC = "mem_used_percent"
DISK_METRIC = "disk_used_percent"
# Memory pressure (PSI avg10), sent by trainguard-psi through the agent's StatsD input.
PRESSURE_SOME_METRIC = "trainguard_memory_pressure_some_avg10"
PRESSURE_FULL_METRIC = "trainguard_memory_pressure_full_avg10"
INSTANCE_DIMENSION = "InstanceId"

# --- Tags -----------------------------------------------------------------------------------------------------
# What marks an instance (and its volumes) as trainguard's: the auto-reboot function touches nothing else.
MANAGED_TAG_KEY = "trainguard:managed"
MANAGED_TAG_VALUE = "true"
# DLM snapshots the volumes that carry this tag.
SNAPSHOT_TAG_KEY = "trainguard:snapshot"
SNAPSHOT_TAG_VALUE = "true"
# The remediation history, on the instance itself (healthcheck.remediation.policy).
HISTORY_TAG_KEY = "trainguard:remediations"
# What a remediation's snapshots carry.
SNAPSHOT_ALARM_TAG_KEY = "trainguard:alarm"
SNAPSHOT_REASON_TAG_KEY = "trainguard:reason"
SNAPSHOT_INSTANCE_TAG_KEY = "trainguard:instance"
SNAPSHOT_SOURCE_TAG_KEY = "trainguard:source"
# A remediation's snapshots: their source, and the day they are deleted (the auto-reboot function's daily sweep;
# remove the tag to keep one).
REMEDIATION_SNAPSHOT_SOURCE = "remediation"
SNAPSHOT_EXPIRES_TAG_KEY = "trainguard:expires"
# Every instance names the stack that made it (`trainguard status` finds them by it).
STACK_TAG_KEY = "trainguard:stack"
# When the instance last booted (epoch seconds), written by the instance itself at each boot: a reboot from
# inside (sudo reboot, a panic) leaves LaunchTime alone, and the auto-reboot function's boot grace counts from it.
BOOT_TAG_KEY = "trainguard:booted"

# --- Environment variables ------------------------------------------------------------------------------------
# Per instance, in /etc/trainguard/env (infra.user_data), and for the laptop's commands and the Lambdas.
BUCKET_VARIABLE = "TRAINGUARD_BUCKET"
TOPIC_ARN_VARIABLE = "TRAINGUARD_TOPIC_ARN"
REGION_VARIABLE = "TRAINGUARD_REGION"
DATA_VOLUME_ID_VARIABLE = "TRAINGUARD_DATA_VOLUME_ID"
INSTANCE_ID_VARIABLE = "TRAINGUARD_INSTANCE_ID"
# The auto-reboot function's settings (healthcheck.remediation.policy.RemediationSettings).
MANAGED_TAG_VARIABLE = "TRAINGUARD_MANAGED_TAG"
MAX_REBOOTS_VARIABLE = "TRAINGUARD_MAX_REBOOTS"
REBOOT_WINDOW_HOURS_VARIABLE = "TRAINGUARD_REBOOT_WINDOW_HOURS"
BOOT_GRACE_SECONDS_VARIABLE = "TRAINGUARD_BOOT_GRACE_SECONDS"
RELOOK_GROUP_VARIABLE = "TRAINGUARD_RELOOK_GROUP"
RELOOK_ROLE_ARN_VARIABLE = "TRAINGUARD_RELOOK_ROLE_ARN"
# How long a remediation's snapshots and post-mortem files are kept.
EVIDENCE_RETAIN_DAYS_VARIABLE = "TRAINGUARD_EVIDENCE_RETAIN_DAYS"
# The SSH canary's settings.
CANARY_INTERVAL_VARIABLE = "TRAINGUARD_CANARY_INTERVAL_SECONDS"
SSH_PORT_VARIABLE = "TRAINGUARD_SSH_PORT"
MONITORING_ENDPOINT_VARIABLE = "TRAINGUARD_MONITORING_ENDPOINT"
# What `trainguard launch` tells each worker: its index and the workers' count, its unit's MemoryMax in bytes,
# its GPU and that GPU's memory share (MiB), its own results and checkpoints folders, and --batch-size. The worker
# library (healthcheck/guard/trainguard_worker.py, standalone) spells them too; a test checks they agree.
WORKER_VARIABLE = "TRAINGUARD_WORKER"
WORKER_COUNT_VARIABLE = "TRAINGUARD_WORKERS"
WORKER_MEMORY_MAX_VARIABLE = "TRAINGUARD_MEMORY_MAX"
WORKER_GPU_VARIABLE = "TRAINGUARD_GPU"
WORKER_GPU_MEMORY_VARIABLE = "TRAINGUARD_GPU_MEMORY_MIB"
WORKER_RESULTS_VARIABLE = "TRAINGUARD_WORKER_RESULTS_DIR"
WORKER_CHECKPOINTS_VARIABLE = "TRAINGUARD_WORKER_CHECKPOINTS_DIR"
WORKER_BATCH_SIZE_VARIABLE = "TRAINGUARD_BATCH_SIZE"

# --- On the instance ------------------------------------------------------------------------------------------
ENV_FILE = "/etc/trainguard/env"  # per instance, written by the user data
BUNDLE_ENV_FILE = "/etc/trainguard/bundle.env"  # the values below, written by the bundle
DATA_MOUNT = "/data"
RESULTS_DIR = f"{DATA_MOUNT}/results"  # pushed to s3://<bucket>/<instance-id>/
CHECKPOINTS_DIR = f"{DATA_MOUNT}/checkpoints"
WORKER_LOG_DIR = f"{RESULTS_DIR}/logs"
PACKAGE_ZIP = "/opt/trainguard/healthcheck.zip"  # this package, on the system python3's path
INSTALLED_BUNDLE = "/var/lib/trainguard/bundle.tar.gz"
# The version of the last bundle applied to the end (a State Manager run of the same version then does nothing).
APPLIED_VERSION_FILE = "/var/lib/trainguard/applied-version"
IMDS_HELPER = "/usr/local/sbin/trainguard-imds"
PUSH_COMMAND = "trainguard-push"
TRAINING_SLICE = "trainguard-training.slice"
WORKER_UNIT_PREFIX = "trainguard-worker-"
# Each worker's own folders: RESULTS_DIR/worker-N/ (so s3://<bucket>/<instance-id>/worker-N/) and
# CHECKPOINTS_DIR/worker-N/.
WORKER_DIR_PREFIX = "worker-"
# The worker library, on each worker's PYTHONPATH: a folder that holds nothing else, so it shadows nothing.
WORKER_LIBRARY_DIR = "/opt/trainguard/lib"
WORKER_LIBRARY_MODULE = "trainguard_worker"
# The guard's record of the workers (docs/on-the-instance.md lists its fields), pushed with the results:
# s3://<bucket>/<instance-id>/trainguard-workers.json.
WORKERS_STATE_NAME = "trainguard-workers.json"
WORKERS_STATE_FILE = f"{RESULTS_DIR}/{WORKERS_STATE_NAME}"
# A worker's batch-size report, in its results folder: s3://<bucket>/<instance-id>/worker-N/trainguard-batch.json.
BATCH_REPORT_NAME = "trainguard-batch.json"
# Where a worker asks the guard to push for it (outside the worker's memory limit), and where the guard keeps
# its place in the journal across restarts.
PUSH_REQUEST_DIR = "/run/trainguard/push-requests"
GUARD_CURSOR_FILE = "/var/lib/trainguard/guard.cursor"

# --- The results bucket ---------------------------------------------------------------------------------------
# Results under <instance-id>/, remediation evidence under postmortem/<instance-id>/, the bundle under its own.
POSTMORTEM_PREFIX = "postmortem/"
BUNDLE_PREFIX = "trainguard/bundle"
BUNDLE_ASSOCIATION_INFIX = "-bundle-"
# Each push that ends well writes this small record last, so `trainguard status` tells a push that stopped from
# results that stopped changing: s3://<bucket>/<instance-id>/trainguard-push.json.
PUSH_RECORD_NAME = "trainguard-push.json"

# --- Alarms and claims ----------------------------------------------------------------------------------------
ALARM_NAME_PREFIX = "trainguard-"
SSH_ALARM_KEY = "ssh-unresponsive"
HEARTBEAT_ALARM_KEY = "agent-heartbeat"
# The stack's own alarms: the canary function failing, and `trainguard status --test-alarm`'s short-lived one.
CANARY_ERRORS_ALARM_KEY = "ssh-canary-errors"
TEST_ALARM_KEY = "test-alarm"
# One-remediation claims in SSM Parameter Store; the function's role may write nothing else there.
CLAIM_PATH = "/trainguard/claims"

# EC2 instance ids: i- and 8 (older) or 17 hexadecimal digits, nothing before or after.
INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")


def is_instance_id(text: object) -> TypeGuard[str]:
    """Whether `text` is an instance id, whole: `"i-0123456789abcdef0\\n"` is not."""
    return isinstance(text, str) and INSTANCE_ID.fullmatch(text) is not None


def stack_alarm_prefix(stack: str) -> str:
    """What every alarm of one stack's instances is named with first: trainguard-<stack>-."""
    return f"{ALARM_NAME_PREFIX}{stack}-"


def stack_alarm_name(stack: str, key: str) -> str:
    """trainguard-<stack>-<alarm key>, for an alarm about the stack rather than one instance."""
    return f"{stack_alarm_prefix(stack)}{key}"


def instance_alarm_name(stack: str, instance_id: str, key: str) -> str:
    """trainguard-<stack>-<instance id>-<alarm key>."""
    return f"{stack_alarm_prefix(stack)}{instance_id}-{key}"


def alarm_key(alarm_name: str) -> str | None:
    """The alarm key of an instance alarm's name (what follows the instance id), or None."""
    match = re.search(rf"-({INSTANCE_ID.pattern})-([a-z0-9-]+)$", alarm_name)
    return match.group(2) if match else None


def bundle_association_name(name: str, stack: str) -> str:
    """The State Manager association that applies the bundle to one instance: <name>-bundle-<stack> (at most 128
    characters), so `trainguard status` tells the stack's association from any other on the instance."""
    return f"{name}{BUNDLE_ASSOCIATION_INFIX}{stack}"[:128]


def worker_results_dir(worker: int) -> str:
    """A worker's own results folder on the instance: /data/results/worker-N."""
    return f"{RESULTS_DIR}/{WORKER_DIR_PREFIX}{worker}"


def worker_checkpoints_dir(worker: int) -> str:
    """A worker's own checkpoints folder: /data/checkpoints/worker-N (on the data volume, snapshotted, not pushed)."""
    return f"{CHECKPOINTS_DIR}/{WORKER_DIR_PREFIX}{worker}"


def instance_environment() -> dict[str, str]:
    """What /etc/trainguard/bundle.env holds: the on-instance values the shell scripts and units read."""
    return {
        "TRAINGUARD_ENV_FILE": ENV_FILE,
        "TRAINGUARD_DATA_MOUNT": DATA_MOUNT,
        "TRAINGUARD_RESULTS_DIR": RESULTS_DIR,
        "TRAINGUARD_CHECKPOINTS_DIR": CHECKPOINTS_DIR,
        "TRAINGUARD_LOG_DIR": WORKER_LOG_DIR,
        "TRAINGUARD_ZIP": PACKAGE_ZIP,
        "TRAINGUARD_INSTALLED_BUNDLE": INSTALLED_BUNDLE,
        "TRAINGUARD_APPLIED_VERSION": APPLIED_VERSION_FILE,
        "TRAINGUARD_BOOT_TAG": BOOT_TAG_KEY,
        "TRAINGUARD_IMDS": IMDS_HELPER,
        "TRAINGUARD_TRAINING_SLICE": TRAINING_SLICE,
        "TRAINGUARD_PUSH_RECORD": PUSH_RECORD_NAME,
    }
