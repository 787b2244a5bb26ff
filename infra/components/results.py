"""ResultsBucket: where results go so they outlive the machine. Private, versioned, encrypted, TLS only.

Old versions expire after NONCURRENT_VERSION_DAYS, and a remediation's post-mortem files (postmortem/) after the
stack's evidenceRetainDays, so neither piles up.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from healthcheck import contract
from infra.policies import tls_only_bucket

NONCURRENT_VERSION_DAYS = 30


class ResultsBucket(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, *, evidence_retain_days: int, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainguard:results:ResultsBucket", name, None, opts)
        # Results must survive `pulumi destroy`: the bucket is left behind, not emptied, and so is
        # everything that protects it (private, TLS only, encrypted, old versions expiring), or a kept
        # bucket would be left open and pile up old versions for ever.
        child = pulumi.ResourceOptions(parent=self, retain_on_delete=True)

        bucket = aws.s3.Bucket(f"{name}-bucket", bucket_prefix="trainguard-results-", opts=child)
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-noncurrent-versions",
                    "status": "Enabled",
                    # Every object; an empty filter block is deprecated by the provider.
                    "filter": {"prefix": ""},
                    "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_VERSION_DAYS},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
                },
                {
                    # A remediation's console, decision and screenshot, kept as long as its snapshots.
                    "id": "expire-postmortems",
                    "status": "Enabled",
                    "filter": {"prefix": contract.POSTMORTEM_PREFIX},
                    "expiration": {"days": evidence_retain_days},
                },
            ],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket(arn))),
            opts=child,
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket_name": bucket.bucket, "bucket_arn": bucket.arn})
