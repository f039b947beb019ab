"""One scheduling profile at run time: its plugins at each extension point, in order, and
the loops that call them.

Plugin order and score weights come from the profile's configuration (``config.py``);
a plugin sits at every extension point it implements unless the configuration says
otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kybernetes.scheduler.framework import (
    MAX_NODE_SCORE,
    BindPlugin,
    Code,
    CycleState,
    FilterPlugin,
    Handle,
    PermitPlugin,
    PostBindPlugin,
    PostFilterPlugin,
    PostFilterResult,
    PreBindPlugin,
    PreEnqueuePlugin,
    PreFilterExtensions,
    PreFilterPlugin,
    PreFilterResult,
    PreScorePlugin,
    QueueSortPlugin,
    ReservePlugin,
    ScoreNormalizer,
    ScorePlugin,
    Status,
)
from kybernetes.scheduler.types import NodeInfo, PodInfo, Room

log = logging.getLogger(__name__)

MIN_FEASIBLE_NODES = 100
MIN_FEASIBLE_PERCENTAGE = 5


def num_feasible_nodes_to_find(percentage: int, num_nodes: int) -> int:
    """How many feasible nodes to look for before scoring (``percentageOfNodesToScore``;
    0 is upstream's adaptive default: 50 % minus 1 % per 125 nodes, at least 5 %)."""
    if num_nodes < MIN_FEASIBLE_NODES:
        return num_nodes
    if percentage <= 0:
        percentage = max(MIN_FEASIBLE_PERCENTAGE, 50 - num_nodes // 125)
    return max(MIN_FEASIBLE_NODES, num_nodes * percentage // 100)


def nominated_that_count(pod: PodInfo, nominated: Iterable[PodInfo]) -> list[PodInfo]:
    """The pods nominated to a node that Filter adds there for ``pod``: the others of at
    least its priority (as upstream)."""
    return [p for p in nominated if p.uid != pod.uid and p.priority >= pod.priority]


def first_failure(plugins: Iterable[FilterPlugin], state: CycleState, pod: PodInfo,
                  node: NodeInfo) -> Status | None:
    """The verdict of the first of ``plugins`` that rejects the node, as the chain gives it."""
    for pl in plugins:
        st = pl.filter(state, pod, node)
        if st is not None and st.code != Code.SKIP:
            return st.with_plugin(pl.name)
    return None


class CountingFilter:
    """A pod's Filter chain when a single active plugin (``reader``) reads the node's
    pods, and only their counts: the verdicts of the plugins ``before`` and ``after`` it
    stay what they are on the node whatever pods are added or taken away, so checks that
    do so (preemption's dry runs, nominated pods) ask those once and ``reader`` of a
    :class:`Room`."""

    __slots__ = ("after", "before", "reader")

    def __init__(self, before: list[FilterPlugin], reader: Any, after: list[FilterPlugin]
                 ) -> None:
        self.before = before
        self.reader = reader
        self.after = after

    def fits(self, pod: PodInfo, room: Room) -> bool:
        """Whether ``reader`` passes the node as ``room`` counts it."""
        return bool(self.reader.fits_room(pod, room))

    def room_verdict(self, pod: PodInfo, room: Room) -> Status | None:
        st: Status | None = self.reader.filter_room(pod, room)
        return st.with_plugin(self.reader.name) if st is not None else None

    def with_nominated(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                       extra: list[PodInfo]) -> Status | None:
        """:meth:`Framework.run_filter_with_nominated` (``extra``: the nominated pods
        that count) by counts."""
        st = first_failure(self.before, state, pod, node)
        if st is not None:
            return st
        room = Room(node)
        for p in extra:
            room.add(p)
        st = self.room_verdict(pod, room) or first_failure(self.after, state, pod, node)
        if st is not None:
            return st
        return self.room_verdict(pod, Room(node))


class Framework:
    """The plugins of one profile (``spec.schedulerName``)."""

    def __init__(self, name: str, plugins: dict[str, list[Any]], weights: dict[str, int],
                 handle: Handle, *, percentage_of_nodes_to_score: int = 0) -> None:
        self.name = name
        self.handle = handle
        self.percentage = percentage_of_nodes_to_score
        self.weights = weights
        p = plugins
        self.pre_enqueue: list[PreEnqueuePlugin] = p.get("preEnqueue", [])
        sort = p.get("queueSort", [])
        self.queue_sort: QueueSortPlugin | None = sort[0] if sort else None
        self.pre_filter: list[PreFilterPlugin] = p.get("preFilter", [])
        self.filter: list[FilterPlugin] = p.get("filter", [])
        self.post_filter: list[PostFilterPlugin] = p.get("postFilter", [])
        self.pre_score: list[PreScorePlugin] = p.get("preScore", [])
        self.score: list[ScorePlugin] = p.get("score", [])
        self.reserve: list[ReservePlugin] = p.get("reserve", [])
        self.permit: list[PermitPlugin] = p.get("permit", [])
        self.pre_bind: list[PreBindPlugin] = p.get("preBind", [])
        self.bind: list[BindPlugin] = p.get("bind", [])
        self.post_bind: list[PostBindPlugin] = p.get("postBind", [])
        self.normalizers: dict[str, ScoreNormalizer] = {
            pl.name: pl for pl in self.score if isinstance(pl, ScoreNormalizer)}
        """Score plugins that normalise (checked once: protocol checks are slow)."""
        self.by_counts = True
        """Whether checks that add or take away pods may use the plugins' ``filter_room``
        (:meth:`counting_filter`); off, they always run the whole chain on a copy."""
        self.extensions: list[PreFilterExtensions] = [
            x for x in self.pre_filter if isinstance(x, PreFilterExtensions)]
        self.all_plugins: dict[str, Any] = {}
        for group in plugins.values():
            for plugin in group:
                self.all_plugins.setdefault(plugin.name, plugin)
        for plugin in self.all_plugins.values():
            if hasattr(plugin, "bind_framework"):
                plugin.bind_framework(self)  # preemption re-runs this profile's filters

    def has_filters(self) -> bool:
        return bool(self.filter)

    # -- PreEnqueue ------------------------------------------------------------------------

    def run_pre_enqueue(self, pod: PodInfo) -> Status | None:
        for pl in self.pre_enqueue:
            st = pl.pre_enqueue(pod)
            if st is not None:
                return st.with_plugin(pl.name)
        return None

    # -- PreFilter and Filter --------------------------------------------------------------

    def run_pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                       ) -> tuple[PreFilterResult | None, Status | None, set[str]]:
        """(merged result, failure, plugins that narrowed or rejected)."""
        merged: PreFilterResult | None = None
        narrowing: set[str] = set()
        for pl in self.pre_filter:
            result, st = pl.pre_filter(state, pod, nodes)
            if st is not None:
                if st.code == Code.SKIP:
                    state.skip_filter.add(pl.name)
                    continue
                return None, st.with_plugin(pl.name), {pl.name}
            if result is not None and result.node_names is not None:
                narrowing.add(pl.name)
                if merged is None or merged.node_names is None:
                    merged = PreFilterResult(set(result.node_names))
                else:
                    merged.node_names &= result.node_names
                if not merged.node_names:
                    return merged, Status.unresolvable(
                        f"node(s) didn't satisfy plugin(s) [{', '.join(sorted(narrowing))}]"
                    ).with_plugin(pl.name), narrowing
        return merged, None, narrowing

    def run_filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        skip = state.skip_filter
        for pl in self.filter:
            if skip and pl.name in skip:
                continue
            st = pl.filter(state, pod, node)
            if st is not None:
                if st.code == Code.SKIP:
                    continue
                return st.with_plugin(pl.name)
        return None

    def run_add_pod(self, state: CycleState, pod: PodInfo, to_add: PodInfo,
                    node: NodeInfo) -> Status | None:
        for pl in self.extensions:
            if pl.name in state.skip_filter:
                continue
            st = pl.add_pod(state, pod, to_add, node)
            if st is not None:
                return st.with_plugin(pl.name)
        return None

    def run_remove_pod(self, state: CycleState, pod: PodInfo, to_remove: PodInfo,
                       node: NodeInfo) -> Status | None:
        for pl in self.extensions:
            if pl.name in state.skip_filter:
                continue
            st = pl.remove_pod(state, pod, to_remove, node)
            if st is not None:
                return st.with_plugin(pl.name)
        return None

    def counting_filter(self, state: CycleState) -> CountingFilter | None:
        """The pod's active Filter plugins split around the only one whose verdict reads
        the node's pods, when that one judges by their counts alone (``filter_room``,
        ``fits_room``) and no PreFilter extension is active; None otherwise (or when
        ``by_counts`` is off)."""
        if not self.by_counts:
            return None
        skip = state.skip_filter
        if any(x.name not in skip for x in self.extensions):
            return None
        reader: Any = None
        before: list[FilterPlugin] = []
        after: list[FilterPlugin] = []
        for pl in self.filter:
            if pl.name in skip:
                continue
            if getattr(pl, "filter_reads_pods", True):
                if reader is not None or not hasattr(pl, "filter_room") \
                        or not hasattr(pl, "fits_room"):
                    return None
                reader = pl
            else:
                (after if reader is not None else before).append(pl)
        if reader is None:
            return None
        return CountingFilter(before, reader, after)

    def run_filter_with_nominated(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                                  nominated: Iterable[PodInfo]) -> Status | None:
        """Filter as upstream does when pods are nominated to the node: the pod must fit
        both with the nominated pods of at least its priority added and without them."""
        extra = nominated_that_count(pod, nominated)
        if not extra:
            return self.run_filter(state, pod, node)
        counting = self.counting_filter(state)
        if counting is not None:
            return counting.with_nominated(state, pod, node, extra)
        state2 = state.clone()
        node2 = node.clone()
        for p in extra:
            node2.add_pod(p)
            st = self.run_add_pod(state2, pod, p, node2)
            if st is not None:
                return st
        st = self.run_filter(state2, pod, node2)
        if st is not None:
            return st
        return self.run_filter(state, pod, node)

    # -- PostFilter ------------------------------------------------------------------------

    async def run_post_filter(self, state: CycleState, pod: PodInfo,
                              statuses: dict[str, Status]
                              ) -> tuple[PostFilterResult | None, Status | None]:
        reasons: list[str] = []
        for pl in self.post_filter:
            result, st = await pl.post_filter(state, pod, statuses)
            if st is None:
                return result, None
            if st.code != Code.UNSCHEDULABLE:
                return None, st.with_plugin(pl.name)
            reasons.extend(st.reasons)
        if not self.post_filter:
            return None, Status.unschedulable()
        return None, Status.unschedulable(*reasons)

    # -- Score -----------------------------------------------------------------------------

    def run_pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                      ) -> Status | None:
        for pl in self.pre_score:
            st = pl.pre_score(state, pod, nodes)
            if st is not None:
                if st.code == Code.SKIP:
                    state.skip_score.add(pl.name)
                    continue
                return st.with_plugin(pl.name)
        return None

    def run_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                  ) -> tuple[list[int], dict[str, list[int]]]:
        """Total weighted score per node, and each plugin's (normalised) scores."""
        totals = [0] * len(nodes)
        per_plugin: dict[str, list[int]] = {}
        skip = state.skip_score
        for pl in self.score:
            if pl.name in skip:
                continue
            fn = pl.score
            scores = [fn(state, pod, n) for n in nodes]
            normalizer = self.normalizers.get(pl.name)
            if normalizer is not None:
                normalizer.normalize_score(state, pod, scores)
            weight = self.weights.get(pl.name, 1)
            for i, s in enumerate(scores):
                if s < 0 or s > MAX_NODE_SCORE:
                    raise ValueError(f"plugin {pl.name} returned an invalid score {s}")
                totals[i] += s * weight
            per_plugin[pl.name] = scores
        return totals, per_plugin

    # -- Reserve, Permit, binding ----------------------------------------------------------

    def run_reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for pl in self.reserve:
            st = pl.reserve(state, pod, node_name)
            if st is not None:
                return st.with_plugin(pl.name)
        return None

    def run_unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for pl in reversed(self.reserve):
            try:
                pl.unreserve(state, pod, node_name)
            except Exception:
                log.exception("unreserve of %s by %s failed", pod.key, pl.name)

    def run_permit(self, state: CycleState, pod: PodInfo, node_name: str
                   ) -> tuple[Status | None, float]:
        """Failure, or (Wait status, longest timeout) when a plugin wants to wait."""
        wait = 0.0
        for pl in self.permit:
            st, timeout = pl.permit(state, pod, node_name)
            if st is None:
                continue
            if st.code == Code.WAIT:
                wait = max(wait, timeout)
                continue
            return st.with_plugin(pl.name), 0.0
        return (Status.wait(), wait) if wait else (None, 0.0)

    async def run_pre_bind(self, state: CycleState, pod: PodInfo, node_name: str
                           ) -> Status | None:
        for pl in self.pre_bind:
            st = await pl.pre_bind(state, pod, node_name)
            if st is not None and st.code != Code.SKIP:
                return st.with_plugin(pl.name)
        return None

    async def run_bind(self, state: CycleState, pod: PodInfo, node_name: str
                       ) -> Status | None:
        for pl in self.bind:
            st = await pl.bind(state, pod, node_name)
            if st is not None and st.code == Code.SKIP:
                continue
            return st.with_plugin(pl.name) if st is not None else None
        return Status.error("no bind plugin bound the pod")

    def run_post_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for pl in self.post_bind:
            try:
                pl.post_bind(state, pod, node_name)
            except Exception:
                log.exception("post-bind of %s by %s failed", pod.key, pl.name)
