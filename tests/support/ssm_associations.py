"""What moto leaves out of Systems Manager: State Manager's association status.

While `state_manager()` is active, moto's server (in this process) answers DescribeInstanceAssociationsStatus
and DescribeAssociation from a table the test fills: each instance's newest association run, with the
command that fetches and applies a bundle version, as the stack's association carries it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from moto.core.responses import ActionResult
from moto.ssm.responses import SimpleSystemManagerResponse

from infra.bundle import fetch_and_apply


@dataclass
class StateManager:
    """Each instance's newest association run: (association id, status, bundle version)."""

    runs: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def applied(self, instance_id: str, version: str, status: str = "Success") -> None:
        self.runs[instance_id] = (f"assoc-{instance_id}", status, version)


@contextmanager
def state_manager() -> Iterator[StateManager]:
    manager = StateManager()

    def describe_instance_associations_status(response: SimpleSystemManagerResponse) -> ActionResult:
        run = manager.runs.get(response._get_param("InstanceId"))
        infos = []
        if run is not None:
            association_id, status, _ = run
            at = datetime.now(timezone.utc)
            infos.append({"AssociationId": association_id, "Status": status, "ExecutionDate": at})
        return ActionResult({"InstanceAssociationStatusInfos": infos})

    def describe_association(response: SimpleSystemManagerResponse) -> ActionResult:
        wanted = response._get_param("AssociationId")
        version = next(version for association_id, _, version in manager.runs.values() if association_id == wanted)
        return ActionResult(
            {
                "AssociationDescription": {
                    "AssociationId": wanted,
                    "Parameters": {"commands": [fetch_and_apply(version)]},
                }
            }
        )

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
