"""trainguard's Pulumi program: read and validate the settings, build the stack, export what a person needs."""

import sys
from pathlib import Path

# Pulumi runs this file with infra/ as the working directory; the program's packages (infra, healthcheck) are
# in the checkout above it, and only healthcheck is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi

from infra.settings import KEYS, NAMESPACE, ConfigError, Kind, validate
from infra.stack import PlacementError, TrainingStack, stack_name_problem

# Before anything is declared, each in one line: a stack name AWS would refuse in a name made from it, bad
# settings, and a subnet the stack cannot work in.
problem = stack_name_problem(pulumi.get_stack())
if problem is not None:
    raise pulumi.RunError(problem)
config = pulumi.Config(NAMESPACE)
raw = {key.name: config.get_object(key.name) if key.kind is Kind.LIST else config.get(key.name) for key in KEYS}
try:
    settings = validate({name: value for name, value in raw.items() if value is not None})
except ConfigError as error:
    raise pulumi.RunError(f"bad trainguard config:\n{error}") from None

try:
    stack = TrainingStack("trainguard", settings)
except PlacementError as error:
    raise pulumi.RunError(str(error)) from None
for name, value in stack.exports().items():
    pulumi.export(name, value)
