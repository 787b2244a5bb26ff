"""trainguard's Pulumi program: read and validate the settings, build the stack, export what a person needs."""

import pulumi

from infra.settings import KEYS, NAMESPACE, ConfigError, Kind, validate
from infra.stack import TrainingStack

config = pulumi.Config(NAMESPACE)
raw = {key.name: config.get_object(key.name) if key.kind is Kind.LIST else config.get(key.name) for key in KEYS}
try:
    settings = validate({name: value for name, value in raw.items() if value is not None})
except ConfigError as error:
    raise pulumi.RunError(f"bad trainguard config:\n{error}") from None

stack = TrainingStack("trainguard", settings)
for name, value in stack.exports().items():
    pulumi.export(name, value)
