"""NodeUnschedulable: no new pods on a cordoned node (``spec.unschedulable``) unless the
pod tolerates the ``node.kubernetes.io/unschedulable`` taint."""

from __future__ import annotations

from typing import Any

from kybernetes.api.scheduling import tolerates
from kybernetes.scheduler.framework import (
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    Status,
)
from kybernetes.scheduler.nodetable import BoolArray, NodeTable
from kybernetes.scheduler.types import NodeInfo, PodInfo

REASON = "node(s) were unschedulable"
_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


class NodeUnschedulable:
    name = "NodeUnschedulable"
    filter_reads_pods = False

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.unschedulable:
            return None
        if any(tolerates(t, _TAINT) for t in pod.tolerations):
            return None
        return Status.unresolvable(REASON)

    def filter_batch(self, state: CycleState, pod: PodInfo, table: NodeTable) -> BoolArray:
        if any(tolerates(t, _TAINT) for t in pod.tolerations):
            return table.all()
        return ~table.unschedulable

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent("Node", Action.ADD | Action.UPDATE_NODE_TAINT)),
                ClusterEventWithHint(ClusterEvent("Pod", Action.UPDATE_POD_TOLERATIONS))]


def new(args: dict[str, Any], handle: Handle) -> NodeUnschedulable:
    return NodeUnschedulable()
