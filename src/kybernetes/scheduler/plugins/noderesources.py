"""NodeResourcesFit and NodeResourcesBalancedAllocation.

Fit filters out nodes without room for the pod's requests (cpu, memory,
ephemeral-storage, pod count, extended resources such as ``nvidia.com/gpu``) and scores
the rest by one of three strategies: ``LeastAllocated`` (spread, the default),
``MostAllocated`` (bin packing) or ``RequestedToCapacityRatio`` (a piecewise-linear shape
of utilisation). BalancedAllocation prefers nodes whose cpu and memory end up equally
used. Scores use the "non-zero" requests for cpu and memory (100m and 200Mi for a
container that asks for nothing), as upstream does, so that empty pods still spread.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from kybernetes.scheduler.framework import (
    MAX_NODE_SCORE,
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

_BASIC = ("cpu", "memory", "ephemeral-storage")
DEFAULT_RESOURCES: list[dict[str, Any]] = [{"name": "cpu", "weight": 1},
                                           {"name": "memory", "weight": 1}]


def _is_scalar(name: str) -> bool:
    """Extended (``vendor/name``), hugepages and attachable-volume resources: the ones a
    node declares and pods request by name."""
    return "/" in name or name.startswith(("hugepages-", "attachable-volumes-"))


def insufficient(pod: PodInfo, node: NodeInfo, ignored: frozenset[str] = frozenset(),
                 ignored_groups: frozenset[str] = frozenset()) -> list[tuple[str, bool]]:
    """(reason, unresolvable) for every resource the node lacks for the pod;
    unresolvable when even an empty node could not hold the request."""
    out: list[tuple[str, bool]] = []
    if len(node.pods) + 1 > node.allowed_pods:
        out.append(("Too many pods", False))
    req = pod.requests
    if not req:
        return out
    alloc = node.allocatable
    used = node.requested
    for name, want in req.items():
        if not want:
            continue
        if name not in _BASIC:
            if not _is_scalar(name) or name in ignored or \
                    name.split("/", 1)[0] in ignored_groups:
                continue
        have = alloc.get(name, 0)
        if want > have - used.get(name, 0):
            out.append((f"Insufficient {name}", want > have))
    return out


def _least(requested: int, allocatable: int) -> int:
    if requested > allocatable:
        return 0
    return (allocatable - requested) * MAX_NODE_SCORE // allocatable


def _most(requested: int, allocatable: int) -> int:
    return min(requested, allocatable) * MAX_NODE_SCORE // allocatable


def _ratio_scorer(shape: list[dict[str, Any]]) -> Callable[[int, int], int]:
    """RequestedToCapacityRatio: utilisation 0..100 → score by linear interpolation
    between the shape's points (scores 0..10, scaled to 0..100)."""
    pts = sorted((int(p.get("utilization", 0)), int(p.get("score", 0)) * MAX_NODE_SCORE // 10)
                 for p in shape)
    if not pts:
        raise ValueError("scoringStrategy.requestedToCapacityRatio.shape: Required value")

    def score(requested: int, allocatable: int) -> int:
        util = min(requested, allocatable) * 100 // allocatable
        if util <= pts[0][0]:
            return pts[0][1]
        for (u0, s0), (u1, s1) in itertools.pairwise(pts):
            if util <= u1:
                return s0 + (s1 - s0) * (util - u0) // (u1 - u0)
        return pts[-1][1]

    return score


def _requested(node: NodeInfo, pod: PodInfo, name: str, *, non_zero: bool) -> int:
    if non_zero and name == "cpu":
        return node.non_zero_cpu + pod.non_zero_cpu
    if non_zero and name == "memory":
        return node.non_zero_memory + pod.non_zero_memory
    return node.requested.get(name, 0) + pod.requests.get(name, 0)


class Fit:
    name = "NodeResourcesFit"

    def __init__(self, args: dict[str, Any]) -> None:
        self.ignored = frozenset(args.get("ignoredResources") or ())
        self.ignored_groups = frozenset(args.get("ignoredResourceGroups") or ())
        strategy = args.get("scoringStrategy") or {}
        self.strategy = strategy.get("type") or "LeastAllocated"
        self.resources = [(str(r["name"]), int(r.get("weight", 1)))
                          for r in strategy.get("resources") or DEFAULT_RESOURCES]
        self._scorer: Callable[[int, int], int]
        if self.strategy == "LeastAllocated":
            self._scorer = _least
        elif self.strategy == "MostAllocated":
            self._scorer = _most
        elif self.strategy == "RequestedToCapacityRatio":
            self._scorer = _ratio_scorer(
                (strategy.get("requestedToCapacityRatio") or {}).get("shape") or [])
        else:
            raise ValueError(f"scoringStrategy.type: Unsupported value: {self.strategy!r}")

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        return None, None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        missing = insufficient(pod, node, self.ignored, self.ignored_groups)
        if not missing:
            return None
        st = Status.unschedulable(*(reason for reason, _ in missing))
        if any(unresolvable for _, unresolvable in missing):
            st = Status.unresolvable(*st.reasons)
        return st

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        total = weights = 0
        alloc = node.allocatable
        for name, weight in self.resources:
            allocatable = alloc.get(name, 0)
            if not allocatable:
                continue
            if name not in ("cpu", "memory") and not pod.requests.get(name):
                continue  # an extended resource the pod does not use does not count
            total += self._scorer(_requested(node, pod, name, non_zero=True), allocatable) \
                * weight
            weights += weight
        return total // weights if weights else 0

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(POD_DELETE),
                ClusterEventWithHint(ClusterEvent("Pod", Action.UPDATE_POD_SCALE_DOWN)),
                ClusterEventWithHint(ClusterEvent(
                    "Node", Action.ADD | Action.UPDATE_NODE_ALLOCATABLE | Action.UPDATE_NODE_TAINT
                    | Action.UPDATE_NODE_LABEL))]


class BalancedAllocation:
    name = "NodeResourcesBalancedAllocation"

    def __init__(self, args: dict[str, Any]) -> None:
        self.resources = [str(r["name"]) for r in args.get("resources") or DEFAULT_RESOURCES]

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        fractions = []
        alloc = node.allocatable
        for name in self.resources:
            allocatable = alloc.get(name, 0)
            if not allocatable:
                continue
            if name not in ("cpu", "memory") and not pod.requests.get(name):
                continue
            fractions.append(min(1.0, _requested(node, pod, name, non_zero=False)
                                 / allocatable))
        if len(fractions) < 2:
            return MAX_NODE_SCORE if fractions else 0
        if len(fractions) == 2:
            std = abs(fractions[0] - fractions[1]) / 2
        else:
            mean = sum(fractions) / len(fractions)
            std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
        return int((1 - std) * MAX_NODE_SCORE)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(POD_DELETE),
                ClusterEventWithHint(ClusterEvent("Node", Action.ADD
                                                  | Action.UPDATE_NODE_ALLOCATABLE))]


def new_fit(args: dict[str, Any], handle: Handle) -> Fit:
    return Fit(args)


def new_balanced(args: dict[str, Any], handle: Handle) -> BalancedAllocation:
    return BalancedAllocation(args)
