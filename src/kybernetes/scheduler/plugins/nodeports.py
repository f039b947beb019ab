"""NodePorts: a pod's host ports must be free on the node (same protocol and port on the
same host IP, 0.0.0.0 overlapping every IP)."""

from __future__ import annotations

from typing import Any

from kybernetes.scheduler.framework import (
    POD_DELETE,
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    PreFilterResult,
    Status,
)
from kybernetes.scheduler.types import NodeInfo, PodInfo

REASON = "node(s) didn't have free ports for the requested pod ports"
_ANY = "0.0.0.0"


def conflicts(wanted: list[tuple[str, str, int]], used: dict[tuple[str, str, int], int]
              ) -> bool:
    if not used:
        return False
    for ip, proto, port in wanted:
        if (ip, proto, port) in used:
            return True
        if ip == _ANY:
            if any(p == proto and n == port for (_, p, n) in used):
                return True
        elif (_ANY, proto, port) in used:
            return True
    return False


class NodePorts:
    name = "NodePorts"

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        if not pod.host_ports:
            return None, Status.skip()
        return None, None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if conflicts(pod.host_ports, node.used_ports):
            return Status.unschedulable(REASON)
        return None

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(POD_DELETE), ClusterEventWithHint(ClusterEvent(
            "Node", Action.ADD | Action.UPDATE))]


def new(args: dict[str, Any], handle: Handle) -> NodePorts:
    return NodePorts()
