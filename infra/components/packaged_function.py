"""PackagedFunction: a Lambda that runs one handler of the healthcheck package, with its log group and role.

Both trainguard functions are built this way: Python 3.12 on arm64, the zip
holding the package's own modules only, logs kept for a set time, and a role
whose one inline policy the caller writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import pulumi
import pulumi_aws as aws

from infra.lambda_package import ARCHITECTURE, LAMBDA_LEAVES_OUT, RUNTIME, package_files
from infra.policies import assume_role

# Receives the function's log group ARN, returns the role policy's JSON.
PolicyFor = Callable[[pulumi.Output[str]], pulumi.Output[str]]


class PackagedFunction(pulumi.ComponentResource):
    function: aws.lambda_.Function
    role_policy: aws.iam.RolePolicy  # what the function may do: whatever invokes it on destroy must outlive it

    def __init__(
        self,
        name: str,
        *,
        handler: str,
        description: str,
        timeout_s: int,
        memory_mb: int,
        log_retention_days: int,
        policy: PolicyFor,
        environment: Mapping[str, pulumi.Input[str]],
        vpc: aws.lambda_.FunctionVpcConfigArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainguard:lambda:PackagedFunction", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        logs = aws.cloudwatch.LogGroup(f"{name}-logs", retention_in_days=log_retention_days, opts=child)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(assume_role("lambda.amazonaws.com")),
            description=description,
            opts=child,
        )
        self.role_policy = aws.iam.RolePolicy(f"{name}-role-policy", role=role.id, policy=policy(logs.arn), opts=child)
        self.function = aws.lambda_.Function(
            f"{name}-function",
            description=description,
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=handler,
            timeout=timeout_s,
            memory_size=memory_mb,
            role=role.arn,
            code=pulumi.AssetArchive(
                {path: pulumi.FileAsset(str(file)) for path, file in package_files(LAMBDA_LEAVES_OUT).items()}
            ),
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=environment),
            vpc_config=vpc,
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
            opts=child,
        )
        self.register_outputs({"function_arn": self.function.arn, "log_group": logs.name})
