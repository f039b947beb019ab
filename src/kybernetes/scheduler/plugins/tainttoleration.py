"""TaintToleration: nodes with a NoSchedule/NoExecute taint the pod does not tolerate are
filtered out; PreferNoSchedule taints it does not tolerate lower a node's score."""

from __future__ import annotations

from typing import Any

import numpy as np

from kybernetes.api.scheduling import taint_text, tolerates, untolerated_taint
from kybernetes.scheduler.framework import (
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    Status,
)
from kybernetes.scheduler.nodetable import BoolArray, IntArray, NodeTable
from kybernetes.scheduler.plugins.helpers import default_normalize, default_normalize_batch
from kybernetes.scheduler.types import NodeInfo, PodInfo

_FILTER_EFFECTS = ("NoSchedule", "NoExecute")
_PREFER = "PreScoreTaintToleration"


class TaintToleration:
    name = "TaintToleration"
    filter_reads_pods = False

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.taints:
            return None
        taint = untolerated_taint(node.taints, pod.tolerations, _FILTER_EFFECTS)
        if taint is None:
            return None
        return Status.unresolvable(f"node(s) had untolerated taint {taint_text(taint)}")

    def filter_batch(self, state: CycleState, pod: PodInfo, table: NodeTable) -> BoolArray:
        mask = ~table.tainted
        for i in np.flatnonzero(table.tainted):
            mask[i] = self.filter(state, pod, table.nodes[i]) is None
        return mask

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, idx: IntArray
                    ) -> IntArray:
        out = np.zeros(len(idx), np.int64)
        for j in np.flatnonzero(table.tainted[idx]):
            out[j] = self.score(state, pod, table.nodes[idx[j]])
        return out

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                  ) -> Status | None:
        state.write(_PREFER, [t for t in pod.tolerations
                              if not t.get("effect") or t.get("effect") == "PreferNoSchedule"])
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        if not node.taints:
            return 0
        tolerations = state.read(_PREFER) or []
        return sum(1 for taint in node.taints if taint.get("effect") == "PreferNoSchedule"
                   and not any(tolerates(t, taint) for t in tolerations))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        default_normalize(scores, reverse=True)

    def normalize_batch(self, state: CycleState, pod: PodInfo, scores: IntArray) -> IntArray:
        return default_normalize_batch(scores, reverse=True)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent("Node", Action.ADD | Action.UPDATE_NODE_TAINT)),
                ClusterEventWithHint(ClusterEvent("Pod", Action.UPDATE_POD_TOLERATIONS))]


def new(args: dict[str, Any], handle: Handle) -> TaintToleration:
    return TaintToleration()
