"""trainguard's Pulumi program: read and validate the settings, build the stack, export what a person needs."""

import pulumi

from infra.settings import LIST_KEYS, NAMESPACE, SCALAR_KEYS, ConfigError, validate
from infra.stack import TrainingStack

config = pulumi.Config(NAMESPACE)
raw = {key: config.get_object(key) for key in LIST_KEYS} | {key: config.get(key) for key in SCALAR_KEYS}
try:
    settings = validate({key: value for key, value in raw.items() if value is not None})
except ConfigError as error:
    raise pulumi.RunError(f"bad trainguard config:\n{error}") from None

stack = TrainingStack("trainguard", settings)

pulumi.export("instance_ids", stack.instance_ids)
pulumi.export("public_ips", stack.public_ips)
pulumi.export(
    "ssh_commands",
    [ip.apply(lambda address: f"ssh ubuntu@{address}") for ip in stack.public_ips],
)
pulumi.export(
    "probe_commands",
    [iid.apply(lambda instance_id: f"python -m healthcheck probe {instance_id}") for iid in stack.instance_ids],
)
pulumi.export("bucket_name", stack.bucket_name)
pulumi.export("topic_arn", stack.topic_arn)
pulumi.export("dashboard_url", stack.dashboard_url)
