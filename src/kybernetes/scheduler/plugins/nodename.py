"""NodeName: a pod that names its node (``spec.nodeName``) fits only there."""

from __future__ import annotations

from typing import Any

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

REASON = "node(s) didn't match the requested node name"


class NodeName:
    name = "NodeName"
    filter_reads_pods = False

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if pod.node_name and pod.node_name != node.name:
            return Status.unresolvable(REASON)
        return None

    def filter_batch(self, state: CycleState, pod: PodInfo, table: NodeTable
                     ) -> BoolArray | None:
        return table.all() if not pod.node_name else None

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent("Node", Action.ADD))]


def new(args: dict[str, Any], handle: Handle) -> NodeName:
    return NodeName()
