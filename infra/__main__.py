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
for name, value in stack.exports().items():
    pulumi.export(name, value)
