"""SchedulingGates: a pod with ``spec.schedulingGates`` waits outside the active queue
until every gate is removed."""

from __future__ import annotations

from typing import Any

from kybernetes.scheduler.framework import (
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    Handle,
    Status,
)
from kybernetes.scheduler.types import PodInfo


class SchedulingGates:
    name = "SchedulingGates"

    def pre_enqueue(self, pod: PodInfo) -> Status | None:
        gates = pod.spec.get("schedulingGates") or []
        if not gates:
            return None
        names = [g.get("name", "") for g in gates]
        return Status.unresolvable(f"waiting for scheduling gates: [{' '.join(names)}]")

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent(
            "Pod", Action.UPDATE_POD_SCHEDULING_GATES_ELIMINATED))]


def new(args: dict[str, Any], handle: Handle) -> SchedulingGates:
    return SchedulingGates()
