"""Talking to AWS the same way everywhere: bounded clients, one region rule, one wording for what goes wrong.

Every command and both Lambdas make their clients here: each call has an
explicit connect and read timeout and a bounded number of attempts
(botocore's standard retry mode), so no AWS call waits for ever. A setup
that cannot work (no credentials, no region, an invalid region, a broken
profile or endpoint) and AWS refusing the caller are bad input, told in one
line that names what the credentials were for; anything else (the network,
throttling, a 5xx) is left to the caller, which knows whether to go on.

botocore is imported only when a client is made: a probe of a plain host
never pays for it, and boto3 (with s3transfer) is never needed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healthcheck.errors import UsageError

# AWS's answers that mean the caller's identity or rights are wrong, across the services trainguard calls.
REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
    }
)
CREDENTIALS_REMEDY = (
    "run `aws configure` or `aws sso login`, or set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
)


@dataclass(frozen=True)
class Limits:
    """How long one AWS call may take: connect and read timeouts, total attempts, and connections kept."""

    connect_s: float = 10.0
    read_s: float = 30.0
    attempts: int = 3
    pool: int = 10


COMMAND_LIMITS = Limits()


def region_of(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """--region, else AWS_REGION (which the AWS SDKs and CLI v2 read first), else None: botocore then reads
    AWS_DEFAULT_REGION or the AWS config."""
    return explicit or environ.get("AWS_REGION") or None


def no_credentials(purpose: str) -> UsageError:
    """The one way every command says it found no AWS credentials, naming what it needed them for."""
    return UsageError(f"no AWS credentials {purpose}: {CREDENTIALS_REMEDY}")


def no_region(purpose: str) -> UsageError:
    """The one way every command says it found no AWS region."""
    return UsageError(f"no AWS region {purpose}: pass --region, or set AWS_REGION or AWS_DEFAULT_REGION")


def error_code(error: BaseException) -> str:
    """The code of an AWS error answer (a botocore ClientError), else ''."""
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, Mapping) else ""


def client(
    service: str,
    *,
    purpose: str,
    region: str | None = None,
    limits: Limits = COMMAND_LIMITS,
    endpoint_url: str | None = None,
    session: Any = None,
) -> Any:
    """A client whose every call is bounded by `limits`; a setup that cannot work is bad input naming `purpose`
    (an infinitive: "to look up i-0123..."). Clients made from one `session` (new_session()) share what botocore
    loaded for the first: a command that needs several makes them faster."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, InvalidRegionError, NoRegionError

    chosen = region_of(region)
    config = Config(
        connect_timeout=limits.connect_s,
        read_timeout=limits.read_s,
        # total_max_attempts counts the first try; botocore's max_attempts would count only the retries after it.
        retries={"total_max_attempts": limits.attempts, "mode": "standard"},
        max_pool_connections=limits.pool,
    )
    try:
        session = session or new_session()
        made = session.create_client(service, region_name=chosen, endpoint_url=endpoint_url, config=config)
        if session.get_credentials() is None:
            raise no_credentials(purpose)
    except NoRegionError:
        raise no_region(purpose) from None
    except InvalidRegionError:
        named = chosen or session.get_config_variable("region")
        raise UsageError(
            f"{named!r} is not a valid AWS region name: pass one like eu-west-1 with --region, AWS_REGION "
            "or AWS_DEFAULT_REGION"
        ) from None
    # A profile that does not exist, a malformed endpoint URL, a credential_process that cannot run.
    except (BotoCoreError, ValueError, OSError) as error:
        raise UsageError(f"the AWS configuration cannot be used {purpose}: {error}") from None
    return made


def new_session() -> Any:
    """A botocore session whose clients parse timestamps fast."""
    import botocore.session

    session = botocore.session.Session()
    # A listing of 1,000 objects spends most of its parsing in dateutil, one LastModified at a time; the AWS
    # CLI swaps the parser the same way (awscli/customizations/scalarparse.py).
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return session


@contextlib.contextmanager
def refusals_as_usage(purpose: str) -> Iterator[None]:
    """Inside: missing credentials or region, and AWS refusing the caller, become one line of bad input."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    try:
        yield
    except NoCredentialsError:
        raise no_credentials(purpose) from None
    except NoRegionError:
        raise no_region(purpose) from None
    except ClientError as error:
        if error_code(error) in REFUSED_CODES:
            raise UsageError(
                f"AWS refused {purpose} ({error_code(error)}): check your credentials and their rights"
            ) from None
        raise


def parse_timestamp(value: str) -> datetime:
    """AWS's ISO timestamps (2026-11-29T10:49:55.000Z) by the standard library; anything else as botocore would."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        import botocore.utils

        return botocore.utils.parse_timestamp(value)
