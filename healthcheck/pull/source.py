"""Where a pull reads from: the bucket (option, environment, or the Pulumi stack) and its instance prefixes.

Instance results live under `<instance-id>/`, post-mortems under
`postmortem/<instance-id>/`; other prefixes (the stack's `trainguard/` bundle)
are not results and are never pulled.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from healthcheck import aws
from healthcheck.contract import BUCKET_VARIABLE, POSTMORTEM_PREFIX, PUSH_RECORD_NAME, is_instance_id
from healthcheck.errors import UsageError
from healthcheck.pull.plan import RemoteObject
from healthcheck.stack_outputs import stack_outputs

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef

# General purpose bucket names: 3-63 characters, lowercase letters, digits, dots and hyphens, beginning
# and ending with a letter or digit, no two adjacent dots
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
BUCKET_NAME = re.compile(r"^(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


# S3's answers that mean "not now" rather than "not this": worth another round, as a 5xx is.
_BUSY_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestLimitExceeded"})


class SourceUnavailable(Exception):
    """AWS could not be reached to list the bucket (the network, throttling, S3 answering 5xx): worth another
    round, and its own exit status, apart from bad input's 3."""

    exit_status = 4


@dataclass(frozen=True)
class Scope:
    """Which prefixes a pull mirrors: every instance, or the ones named; post-mortems too when asked."""

    instances: tuple[str, ...] = ()
    postmortem: bool = False


def check_bucket(name: str, origin: str) -> str:
    if not BUCKET_NAME.match(name):
        raise UsageError(
            f"{name!r} (from {origin}) is not an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens"
        )
    return name


def resolve_bucket(
    option: str | None, environ: Mapping[str, str], stack_bucket: Callable[[], str | None]
) -> tuple[str, str]:
    """The bucket and where it came from: --bucket, else $TRAINGUARD_BUCKET, else the Pulumi stack."""
    if option:
        return check_bucket(option, "--bucket"), "--bucket"
    if environ.get(BUCKET_VARIABLE):
        return check_bucket(environ[BUCKET_VARIABLE], BUCKET_VARIABLE), BUCKET_VARIABLE
    from_stack = stack_bucket()
    if from_stack:
        return check_bucket(from_stack, "the Pulumi stack"), "the Pulumi stack"
    raise UsageError(
        f"no bucket: pass --bucket, set {BUCKET_VARIABLE}, or run in the Pulumi project with its stack selected"
    )


def pulumi_stack_bucket() -> str | None:
    """The stack's `bucket_name` output, when the Pulumi CLI is on PATH and answers in time; else None."""
    bucket = (stack_outputs(instead=f"pass --bucket or set {BUCKET_VARIABLE}") or {}).get("bucket_name")
    return bucket if isinstance(bucket, str) else None


def list_scope(client: S3Client, bucket: str, scope: Scope) -> list[RemoteObject]:
    """Every object under the scope's prefixes: in key order, or prefix by prefix for named instances.

    Named instances are listed prefix by prefix, their results first, then
    their post-mortems. Every instance is one listing
    of the whole bucket, filtered here: one request per 1,000 keys, with no
    request first to find the instance prefixes.
    """
    if scope.instances:
        prefixes = [f"{instance}/" for instance in scope.instances]
        if scope.postmortem:
            prefixes += [f"{POSTMORTEM_PREFIX}{instance}/" for instance in scope.instances]
        listed = [found for prefix in prefixes for found in _list_objects(client, bucket, prefix)]
    else:
        listed = [found for found in _list_objects(client, bucket, "") if _is_in_scope(found.key, scope.postmortem)]
    return [found for found in listed if _is_result(found.key)]


def _is_in_scope(key: str, postmortem: bool) -> bool:
    """`<instance-id>/...`, and `postmortem/<instance-id>/...` when post-mortems are asked for."""
    if postmortem and key.startswith(POSTMORTEM_PREFIX):
        key = key[len(POSTMORTEM_PREFIX) :]
    instance, slash, _ = key.partition("/")
    return bool(slash) and is_instance_id(instance)


def _is_result(key: str) -> bool:
    """Anything but the push's own record (`<instance-id>/trainguard-push.json`): it changes with every push and
    is no result, so a pull that found nothing new stays a no-op."""
    return key.partition("/")[2] != PUSH_RECORD_NAME


def _list_objects(client: S3Client, bucket: str, prefix: str) -> list[RemoteObject]:
    return [
        RemoteObject(key=item["Key"], size=item["Size"], etag=item["ETag"], modified=item["LastModified"].timestamp())
        for page in _pages(client, bucket, prefix)
        for item in page.get("Contents", [])
    ]


def _pages(client: S3Client, bucket: str, prefix: str) -> list[ListObjectsV2OutputTypeDef]:
    """Every page of ListObjectsV2, with S3's refusals turned into one line for the user."""
    from botocore.exceptions import BotoCoreError, ClientError

    paginator = client.get_paginator("list_objects_v2")
    try:
        with aws.refusals_as_usage(f"to list s3://{bucket}/{prefix}"):
            return list(paginator.paginate(Bucket=bucket, Prefix=prefix))
    except ClientError as error:
        code = aws.error_code(error)
        if code == "NoSuchBucket":
            raise UsageError(f"bucket {bucket!r} does not exist: check --bucket or {BUCKET_VARIABLE}") from None
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _BUSY_CODES or status >= 500:
            raise SourceUnavailable(f"could not list s3://{bucket}/{prefix}: {error}") from None
        raise UsageError(f"S3 refused to list s3://{bucket}/{prefix}: {error}") from None
    except BotoCoreError as error:  # no connection, a timeout, a reset: the network
        raise SourceUnavailable(f"could not list s3://{bucket}/{prefix}: {error}") from None


def make_client(parallel: int, region: str | None = None) -> S3Client:
    """An S3 client with bounded calls and a connection for every concurrent request.

    botocore retries throttling and 5xx itself, tenacity what is left. Listing may run beside the downloads,
    hence one more connection than the transfers use.
    """
    limits = aws.Limits(connect_s=10, read_s=60, attempts=5, pool=parallel + 1)
    return cast("S3Client", aws.client("s3", purpose="to read the results bucket", region=region, limits=limits))
