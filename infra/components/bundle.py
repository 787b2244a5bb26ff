"""InstanceBundle: the on-instance bundle (infra.bundle), uploaded to the results bucket under its version.

The instances fetch it at first boot (their user data), and each instance's
State Manager association (TrainingInstance) applies a new version when one is
published. Old versions stay in the bucket: an instance that boots from an old
user data still finds the one its bootstrap names, then gets the current one.
"""

from __future__ import annotations

import base64

import pulumi
import pulumi_aws as aws

from infra.bundle import archive, bundle_files, object_key, version


class InstanceBundle(pulumi.ComponentResource):
    version: str
    upload: aws.s3.BucketObjectv2

    def __init__(self, name: str, *, bucket_name: pulumi.Output[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainguard:compute:InstanceBundle", name, None, opts)
        packed = archive(bundle_files())
        self.version = version(packed)
        self.upload = aws.s3.BucketObjectv2(
            f"{name}-{self.version}",
            bucket=bucket_name,
            key=object_key(self.version),
            content_base64=base64.b64encode(packed).decode(),
            content_type="application/gzip",
            # Kept when a newer version replaces it, for instances whose user data names it.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.register_outputs({"version": self.version, "key": self.upload.key})
