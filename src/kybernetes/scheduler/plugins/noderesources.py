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
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter, methodcaller
from typing import Any

import numpy as np

from kybernetes.api.scheduling import Resources
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
from kybernetes.scheduler.nodetable import BoolArray, IntArray, NodeTable
from kybernetes.scheduler.types import NodeInfo, PodInfo, Room

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
    return shortfall(pod, len(node.pods), node.allowed_pods, node.allocatable, node.requested,
                     ignored, ignored_groups)


def shortfall(pod: PodInfo, pods: int, allowed_pods: int, alloc: Resources, used: Resources,
              ignored: frozenset[str] = frozenset(),
              ignored_groups: frozenset[str] = frozenset()) -> list[tuple[str, bool]]:
    """:func:`insufficient` from the counts alone: ``pods`` placed of ``allowed_pods``,
    ``used`` of ``alloc``."""
    out: list[tuple[str, bool]] = []
    if pods + 1 > allowed_pods:
        out.append(("Too many pods", False))
    req = pod.requests
    if not req:
        return out
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


_REQUESTS = attrgetter("requests")


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
        return self._verdict(insufficient(pod, node, self.ignored, self.ignored_groups))

    def filter_room(self, pod: PodInfo, room: Room) -> Status | None:
        """:meth:`filter` on the node as ``room`` counts it (the verdict reads nothing
        else of the node's pods)."""
        return self._verdict(self._room_shortfall(pod, room))

    def fits_room(self, pod: PodInfo, room: Room) -> bool:
        """Whether :meth:`filter_room` passes (without the reasons)."""
        return not self._room_shortfall(pod, room)

    def _room_shortfall(self, pod: PodInfo, room: Room) -> list[tuple[str, bool]]:
        node = room.node
        return shortfall(pod, room.pods, node.allowed_pods, node.allocatable, room.requested,
                         self.ignored, self.ignored_groups)

    @staticmethod
    def _verdict(missing: list[tuple[str, bool]]) -> Status | None:
        if not missing:
            return None
        st = Status.unschedulable(*(reason for reason, _ in missing))
        if any(unresolvable for _, unresolvable in missing):
            st = Status.unresolvable(*st.reasons)
        return st

    def _counts(self, name: str, want: int) -> bool:
        """Whether a request of ``want`` of resource ``name`` is checked (as
        :func:`shortfall` checks)."""
        return bool(want) and (name in _BASIC or (
            _is_scalar(name) and name not in self.ignored
            and name.split("/", 1)[0] not in self.ignored_groups))

    def filter_batch(self, state: CycleState, pod: PodInfo, table: NodeTable) -> BoolArray:
        """:meth:`filter` for every node of the table at once."""
        mask: BoolArray = table.pods + 1 <= table.allowed_pods
        for name, want in pod.requests.items():
            if not self._counts(name, want):
                continue
            alloc, used = table.columns(name)
            mask &= want <= alloc - used
        return mask

    def filter_statuses(self, state: CycleState, pod: PodInfo, table: NodeTable,
                        rows: IntArray, added: Sequence[Sequence[PodInfo]] | None = None
                        ) -> list[Status | None]:
        """:meth:`filter`'s verdict on each node at ``rows``, from the table's columns
        (with the pods ``added[i]`` placed on the node at ``rows[i]`` too); nodes short of
        the same resources share one Status."""
        checks: list[tuple[str, BoolArray, BoolArray]] = []
        """(reason, short, short even when empty) in :func:`shortfall`'s order."""
        pods = table.pods[rows]
        flat: list[Mapping[str, int]] = []
        """What each added pod requests, row after row (``owner``: its row's position)."""
        if added is not None:
            counts = np.fromiter(map(len, added), np.int64, len(rows))
            pods = pods + counts
            flat = list(map(_REQUESTS, itertools.chain.from_iterable(added)))
            owner = np.repeat(np.arange(len(rows)), counts)
        too_many: BoolArray = pods + 1 > table.allowed_pods[rows]
        checks.append(("Too many pods", too_many, np.zeros(len(rows), np.bool_)))
        for name, want in pod.requests.items():
            if not self._counts(name, want):
                continue
            alloc, used = table.columns(name)
            have, taken = alloc[rows], used[rows]
            if flat:
                more = np.zeros(len(rows), np.int64)
                np.add.at(more, owner, np.fromiter(map(methodcaller("get", name, 0), flat),
                                                   np.int64, len(flat)))
                taken = taken + more
            checks.append((f"Insufficient {name}", want > have - taken, want > have))
        code = np.zeros(len(rows), np.int64)
        for i, (_, short, empty_short) in enumerate(checks):
            code |= short.astype(np.int64) << (2 * i)
            code |= (short & empty_short).astype(np.int64) << (2 * i + 1)
        codes, which = np.unique(code, return_inverse=True)
        shared = [self._verdict([(reason, bool(c >> (2 * i + 1) & 1))
                                 for i, (reason, _, _) in enumerate(checks) if c >> (2 * i) & 1])
                  for c in codes.tolist()]
        return list(map(shared.__getitem__, which.tolist()))

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, idx: IntArray
                    ) -> IntArray | None:
        """:meth:`score` for the nodes at ``idx`` (None: only the scalar form exists)."""
        vector = _VECTOR_SCORERS.get(self.strategy)
        if vector is None:
            return None
        total = np.zeros(len(idx), np.int64)
        weights = np.zeros(len(idx), np.int64)
        for name, weight in self.resources:
            if name not in ("cpu", "memory") and not pod.requests.get(name):
                continue
            alloc = table.columns(name)[0][idx]
            requested = _requested_batch(table, pod, name, idx, non_zero=True)
            valid = alloc > 0
            safe = np.where(valid, alloc, 1)
            total += np.where(valid, vector(requested, safe) * weight, 0)
            weights += np.where(valid, weight, 0)
        out: IntArray = np.where(weights > 0, total // np.maximum(weights, 1), 0)
        return out

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


def _least_batch(requested: IntArray, allocatable: IntArray) -> IntArray:
    out: IntArray = np.where(requested > allocatable, 0,
                             (allocatable - requested) * MAX_NODE_SCORE // allocatable)
    return out


def _most_batch(requested: IntArray, allocatable: IntArray) -> IntArray:
    out: IntArray = np.minimum(requested, allocatable) * MAX_NODE_SCORE // allocatable
    return out


_VECTOR_SCORERS: dict[str, Callable[[IntArray, IntArray], IntArray]] = {
    "LeastAllocated": _least_batch, "MostAllocated": _most_batch}


def _requested_batch(table: NodeTable, pod: PodInfo, name: str, idx: IntArray, *,
                     non_zero: bool) -> IntArray:
    if non_zero and name == "cpu":
        out: IntArray = table.nz_cpu[idx] + pod.non_zero_cpu
    elif non_zero and name == "memory":
        out = table.nz_memory[idx] + pod.non_zero_memory
    else:
        out = table.columns(name)[1][idx] + pod.requests.get(name, 0)
    return out


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

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, idx: IntArray
                    ) -> IntArray | None:
        """:meth:`score` for the nodes at ``idx``, when two resources are weighed (the
        default cpu and memory); None otherwise."""
        if len(self.resources) != 2 or any(
                n not in ("cpu", "memory") and not pod.requests.get(n) for n in self.resources):
            return None
        fractions = []
        valid = []
        for name in self.resources:
            alloc = table.columns(name)[0][idx]
            ok = alloc > 0
            requested = _requested_batch(table, pod, name, idx, non_zero=False)
            fractions.append(np.minimum(1.0, requested / np.where(ok, alloc, 1)))
            valid.append(ok)
        both = valid[0] & valid[1]
        one = valid[0] ^ valid[1]
        std = np.abs(fractions[0] - fractions[1]) / 2
        scores = ((1 - std) * MAX_NODE_SCORE).astype(np.int64)
        out: IntArray = np.where(both, scores, np.where(one, MAX_NODE_SCORE, 0))
        return out

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(POD_DELETE),
                ClusterEventWithHint(ClusterEvent("Node", Action.ADD
                                                  | Action.UPDATE_NODE_ALLOCATABLE))]


def new_fit(args: dict[str, Any], handle: Handle) -> Fit:
    return Fit(args)


def new_balanced(args: dict[str, Any], handle: Handle) -> BalancedAllocation:
    return BalancedAllocation(args)
