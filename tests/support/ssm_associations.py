"""What moto leaves out of Systems Manager: State Manager's association status.

While `state_manager()` is active, moto's server (in this process) answers DescribeInstanceAssociationsStatus
and DescribeAssociation from a table the test fills: each instance's association runs, each with its
association's name and the command that fetches and applies a bundle version, as the stack's association
carries it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from moto.core.responses import ActionResult
from moto.ssm.responses import SimpleSystemManagerResponse

from infra.bundle import fetch_and_apply


@dataclass(frozen=True)
class Run:
    association_id: str
    name: str
    status: str
    bundle_version: str


@dataclass
class StateManager:
    """Each instance's association runs."""

    runs: dict[str, list[Run]] = field(default_factory=dict)

    def applied(self, instance_id: str, name: str, version: str, status: str = "Success") -> None:
        runs = self.runs.setdefault(instance_id, [])
        runs.append(Run(f"assoc-{instance_id}-{len(runs)}", name, status, version))


@contextmanager
def state_manager() -> Iterator[StateManager]:
    manager = StateManager()

    def describe_instance_associations_status(response: SimpleSystemManagerResponse) -> ActionResult:
        at = datetime.now(timezone.utc)
        infos = [
            {
                "AssociationId": run.association_id,
                "AssociationName": run.name,
                "Status": run.status,
                "ExecutionDate": at,
            }
            for run in manager.runs.get(response._get_param("InstanceId"), [])
        ]
        return ActionResult({"InstanceAssociationStatusInfos": infos})

    def describe_association(response: SimpleSystemManagerResponse) -> ActionResult:
        wanted = response._get_param("AssociationId")
        run = next(run for runs in manager.runs.values() for run in runs if run.association_id == wanted)
        commands = [fetch_and_apply(run.bundle_version)]
        return ActionResult({"AssociationDescription": {"AssociationId": wanted, "Parameters": {"commands": commands}}})

    added = {
        "describe_instance_associations_status": describe_instance_associations_status,
        "describe_association": describe_association,
    }
    for name, method in added.items():
        setattr(SimpleSystemManagerResponse, name, method)
    try:
        yield manager
    finally:
        for name in added:
            delattr(SimpleSystemManagerResponse, name)
