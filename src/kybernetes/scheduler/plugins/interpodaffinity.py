"""InterPodAffinity: a pod's required (anti-)affinity and the required anti-affinity of the
pods already running decide where it may go; preferred terms, and the terms existing pods
hold toward it, rank the nodes that are left. Kubernetes 1.32 semantics.

All the work over the cluster's pods is done once per attempt: PreFilter counts matching
pods per topology pair ``(topologyKey, value)`` and PreScore sums weights per pair, so that
Filter and Score cost a few dict lookups per node::

    plugin = new({"hardPodAffinityWeight": 5}, handle)
    _, status = plugin.pre_filter(state, pod, handle.nodes())
    status = plugin.filter(state, pod, node)   # None, or why the node does not fit
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from kybernetes.api.selectors import LabelSelector
from kybernetes.scheduler.framework import (
    MAX_NODE_SCORE,
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    PreFilterResult,
    Status,
)
from kybernetes.scheduler.nodetable import BoolArray, IntArray, LabelColumn, NodeTable, PairCounts
from kybernetes.scheduler.types import AffinityTerm, NodeInfo, PodInfo, TermCounts

NAME = "InterPodAffinity"
PRE_FILTER_STATE_KEY = "PreFilter" + NAME
PRE_SCORE_STATE_KEY = "PreScore" + NAME

ERR_REASON_AFFINITY_RULES_NOT_MATCH = "node(s) didn't match pod affinity rules"
ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH = "node(s) didn't match pod anti-affinity rules"
ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH = (
    "node(s) didn't satisfy existing pods anti-affinity rules")

DEFAULT_HARD_POD_AFFINITY_WEIGHT = 1
MIN_HARD_POD_AFFINITY_WEIGHT = 0
MAX_HARD_POD_AFFINITY_WEIGHT = 100

TopologyPair = tuple[str, str]
Counts = dict[TopologyPair, int]
ScoreMap = dict[str, dict[str, int]]
"""topologyKey -> topology value -> summed weight."""


class _IncomingTerm:
    """A term of the pod being scheduled, its namespaceSelector resolved as upstream merges
    it into the namespace list: an empty selector selects every namespace (known or not), a
    non-empty one only the known namespaces whose labels it matches. Resolutions are cached
    for the attempt, as upstream lists the namespaces once."""

    __slots__ = ("_eq", "_handle", "_ns", "_ns_selector", "selector", "topology_key", "weight")

    def __init__(self, term: AffinityTerm, handle: Handle) -> None:
        self.selector = term.selector
        self.topology_key = term.topology_key
        self.weight = term.weight
        self._handle = handle
        self._ns: dict[str, bool] = dict.fromkeys(term.namespaces, True)
        self._ns_selector: LabelSelector | None = term.namespace_selector
        # The usual selector (matchLabels, In) as (key, allowed values) pairs, so that the
        # loops over every pod in the cluster stay in this frame.
        self._eq: tuple[tuple[str, frozenset[str]], ...] | None = None
        sel = term.selector
        if not sel.nothing and all(r.op in ("=", "in") for r in sel.requirements):
            self._eq = tuple((r.key, frozenset(r.values)) for r in sel.requirements)

    def listed_namespaces(self) -> list[str] | None:
        """The namespaces the term selects when they are a fixed list (no
        namespaceSelector); None otherwise."""
        if self._ns_selector is not None:
            return None
        return [ns for ns, hit in self._ns.items() if hit]

    def _selects_namespace(self, ns: str) -> bool:
        sel = self._ns_selector
        if sel is None:
            hit = False
        elif sel.empty:
            hit = True
        else:
            labels = self._handle.namespace_labels(ns)
            hit = labels is not None and sel.matches(labels)
        self._ns[ns] = hit
        return hit

    def matches(self, pod: PodInfo) -> bool:
        hit = self._ns.get(pod.namespace)
        if hit is None:
            hit = self._selects_namespace(pod.namespace)
        if not hit:
            return False
        eq = self._eq
        if eq is None:
            return self.selector.matches(pod.labels)
        labels = pod.labels
        return all(labels.get(key) in values for key, values in eq)

    def count(self, pods: Iterable[PodInfo]) -> int:
        """How many of ``pods`` the term selects (``matches`` unrolled: the hot loop)."""
        ns_hits = self._ns
        eq = self._eq
        n = 0
        for p in pods:
            hit = ns_hits.get(p.namespace)
            if hit is None:
                hit = self._selects_namespace(p.namespace)
            if not hit:
                continue
            if eq is None:
                n += self.selector.matches(p.labels)
                continue
            labels = p.labels
            for key, values in eq:
                if labels.get(key) not in values:
                    break
            else:
                n += 1
        return n


def _incoming(terms: Iterable[AffinityTerm], handle: Handle) -> list[_IncomingTerm]:
    return [_IncomingTerm(t, handle) for t in terms]


def _matches_all(terms: list[_IncomingTerm], pod: PodInfo) -> bool:
    """Whether ``pod`` matches every term (and there is at least one)."""
    return bool(terms) and all(t.matches(pod) for t in terms)


def _count_all(terms: list[_IncomingTerm], pods: Iterable[PodInfo]) -> int:
    """How many of ``pods`` match every one of ``terms`` (at least one)."""
    if len(terms) == 1:
        return terms[0].count(pods)
    return sum(1 for p in pods if all(t.matches(p) for t in terms))


def _selects(term: AffinityTerm, pod: PodInfo, ns_labels: Mapping[str, str]) -> bool:
    """``term.matches(pod, ns_labels)`` with the common requirements inlined, for the loops
    over every existing pod's terms."""
    if pod.namespace not in term.namespaces:
        ns_sel = term.namespace_selector
        if ns_sel is None or not ns_sel.matches(ns_labels):
            return False
    sel = term.selector
    if sel.nothing:
        return False
    labels = pod.labels
    for r in sel.requirements:
        op = r.op
        if op == "=" or op == "in":
            if labels.get(r.key) not in r.values:
                return False
        elif not r.matches(labels):
            return False
    return True


def _bump(counts: Counts, labels: Mapping[str, str], key: str, delta: int) -> None:
    value = labels.get(key)
    if value is None:
        return
    pair = (key, value)
    n = counts.get(pair, 0) + delta
    if n:
        counts[pair] = n
    else:
        counts.pop(pair, None)  # counts go down on remove_pod; a zero is no entry


def _populated(col: LabelColumn, counts: Counts, key: str, live: list[PairCounts] | None
               ) -> BoolArray:
    """The nodes whose value of ``key`` has a positive count: from the cache's per-code
    counts when ``counts`` is exactly the sum of ``live`` ones, else pair by pair."""
    if live is not None:
        per: IntArray | None = None
        for src in live:
            if src.key == key:
                arr = src.per_code(col)
                per = arr.copy() if per is None else per + arr
        if per is None:
            return np.zeros(len(col.codes), np.bool_)
        out: BoolArray = (per > 0)[col.codes]
        return out
    return col.spread_hits(col.hits(counts, key))


class _PreFilterState:
    """What Filter reads: the pod's required terms and three counts per topology pair."""

    __slots__ = ("affinity", "affinity_counts", "affinity_keys", "anti_affinity",
                 "anti_affinity_counts", "anti_affinity_keys", "existing_anti_affinity_counts",
                 "existing_anti_affinity_keys", "ns_labels", "pod", "self_affinity", "sources")

    def __init__(self, pod: PodInfo, affinity: list[_IncomingTerm],
                 anti_affinity: list[_IncomingTerm], ns_labels: Mapping[str, str]) -> None:
        self.pod = pod
        self.affinity = affinity
        self.anti_affinity = anti_affinity
        self.affinity_keys = [t.topology_key for t in affinity]
        self.anti_affinity_keys = [t.topology_key for t in anti_affinity]
        self.ns_labels = ns_labels
        """The pod's namespace labels ({} when the namespace is unknown)."""
        self.self_affinity = _matches_all(affinity, pod)
        self.affinity_counts: Counts = {}
        """Existing pods matching all of the pod's required affinity terms."""
        self.anti_affinity_counts: Counts = {}
        """Existing pods matching one of the pod's required anti-affinity terms (per term)."""
        self.existing_anti_affinity_counts: Counts = {}
        """Existing pods' required anti-affinity terms that match the pod."""
        self.existing_anti_affinity_keys: set[str] = set()
        """The topology keys of those terms."""
        self.sources: dict[str, list[Mapping[tuple[str, str], int]]] | None = {
            "affinity": [], "anti_affinity": [], "existing_anti_affinity": []}
        """The cache's own counts each of the three was summed from (None: counted some
        other way too, or changed since by add_pod/remove_pod)."""

    def clone(self) -> _PreFilterState:
        c = _PreFilterState.__new__(_PreFilterState)
        for slot in _PreFilterState.__slots__:
            setattr(c, slot, getattr(self, slot))
        c.affinity_counts = dict(self.affinity_counts)
        c.anti_affinity_counts = dict(self.anti_affinity_counts)
        c.existing_anti_affinity_counts = dict(self.existing_anti_affinity_counts)
        c.existing_anti_affinity_keys = set(self.existing_anti_affinity_keys)
        return c

    def add_source(self, which: str, counts: Mapping[tuple[str, str], int]) -> None:
        if self.sources is not None:
            self.sources[which].append(counts)

    def live(self, which: str) -> list[PairCounts] | None:
        """The cache's counts ``which`` is the sum of, when it is exactly that."""
        if self.sources is None:
            return None
        found = self.sources[which]
        if all(isinstance(x, PairCounts) for x in found):
            return found  # type: ignore[return-value]
        return None

    def update_with_pod(self, other: PodInfo, node: NodeInfo, delta: int) -> None:
        self.sources = None
        labels = node.labels
        if other.has_required_anti_affinity:
            for at in other.required_anti_affinity_terms:
                if at.matches(self.pod, self.ns_labels):
                    _bump(self.existing_anti_affinity_counts, labels, at.topology_key, delta)
                    self.existing_anti_affinity_keys.add(at.topology_key)
        if _matches_all(self.affinity, other):
            for t in self.affinity:
                _bump(self.affinity_counts, labels, t.topology_key, delta)
        for t in self.anti_affinity:
            if t.matches(other):
                _bump(self.anti_affinity_counts, labels, t.topology_key, delta)

    def satisfies_affinity(self, labels: Mapping[str, str]) -> bool:
        counts = self.affinity_counts
        pods_exist = True
        for key in self.affinity_keys:
            value = labels.get(key)
            if value is None:
                return False  # every topology key must be on the node
            if counts.get((key, value), 0) <= 0:
                pods_exist = False
        if pods_exist:
            return True
        # The first pod of a group with affinity to itself: nothing in the cluster matches
        # its terms yet, but it does, so it may go anywhere the topology keys exist.
        return not counts and self.self_affinity

    def satisfies_anti_affinity(self, labels: Mapping[str, str]) -> bool:
        counts = self.anti_affinity_counts
        if counts:
            for key in self.anti_affinity_keys:
                value = labels.get(key)
                if value is not None and counts.get((key, value), 0) > 0:
                    return False
        return True

    def satisfies_existing_anti_affinity(self, labels: Mapping[str, str]) -> bool:
        counts = self.existing_anti_affinity_counts
        if len(counts) < len(labels):
            for (key, value), n in counts.items():
                if n > 0 and labels.get(key) == value:
                    return False
        else:
            for pair in labels.items():
                if counts.get(pair, 0) > 0:
                    return False
        return True


class _PreScoreState:
    __slots__ = ("topology_score",)

    def __init__(self, topology_score: ScoreMap) -> None:
        self.topology_score = topology_score

    def clone(self) -> _PreScoreState:
        return self  # read-only once written


def _add(scores: ScoreMap, labels: Mapping[str, str], key: str, weight: int) -> None:
    value = labels.get(key)
    if value is not None:
        by_value = scores.get(key)
        if by_value is None:
            by_value = scores[key] = {}
        by_value[value] = by_value.get(value, 0) + weight


def _as_pod(obj: Any) -> PodInfo | None:
    if obj is None or isinstance(obj, PodInfo):
        return obj
    return PodInfo(obj)


def _node_labels(obj: Any) -> Mapping[str, str]:
    if obj is None:
        return {}
    if isinstance(obj, NodeInfo):
        return obj.labels
    return (obj.get("metadata") or {}).get("labels") or {}


class InterPodAffinity:
    """The plugin; ``new`` builds it from the profile's args."""

    name = NAME

    def __init__(self, handle: Handle, *,
                 hard_pod_affinity_weight: int = DEFAULT_HARD_POD_AFFINITY_WEIGHT,
                 ignore_preferred_terms_of_existing_pods: bool = False) -> None:
        self.handle = handle
        self.hard_pod_affinity_weight = hard_pod_affinity_weight
        self.ignore_preferred_terms_of_existing_pods = ignore_preferred_terms_of_existing_pods

    # -- PreFilter / Filter ------------------------------------------------------------

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        handle = self.handle
        affinity = _incoming(pod.required_affinity_terms, handle)
        anti = _incoming(pod.required_anti_affinity_terms, handle)
        s = _PreFilterState(pod, affinity, anti, handle.namespace_labels(pod.namespace) or {})
        self._count_existing_anti_affinity(s, handle.required_anti_affinity_counts())
        if not s.existing_anti_affinity_counts and not affinity and not anti:
            return None, Status.skip()
        if affinity or anti:
            self._count_incoming(s, nodes)
        state.write(PRE_FILTER_STATE_KEY, s)
        return None, None

    @staticmethod
    def _count_existing_anti_affinity(s: _PreFilterState, terms: TermCounts) -> None:
        """Existing pods whose required anti-affinity selects the incoming pod, per
        topology pair: each distinct term decided once, its pods counted already."""
        pod, ns_labels, counts = s.pod, s.ns_labels, s.existing_anti_affinity_counts
        for at, term_counts in terms:
            if not _selects(at, pod, ns_labels):
                continue
            s.existing_anti_affinity_keys.add(at.topology_key)
            s.add_source("existing_anti_affinity", term_counts)
            if not counts:
                counts.update(term_counts)  # a copy: the state's own counts change later
                continue
            for pair, n in term_counts.items():
                counts[pair] = counts.get(pair, 0) + n

    def _count_incoming(self, s: _PreFilterState, nodes: list[NodeInfo]) -> None:
        affinity, anti = s.affinity, s.anti_affinity
        aff_counts, anti_counts = s.affinity_counts, s.anti_affinity_counts
        # the usual term (one label, listed namespaces) from the cache's label index:
        # only the nodes holding such pods, instead of every pod of the cluster
        if len(affinity) == 1:
            used = self._count_indexed(affinity[0], aff_counts)
            if used is not None:
                affinity = []
                for counts in used:
                    s.add_source("affinity", counts)
        rest = []
        for t in anti:
            used = self._count_indexed(t, anti_counts)
            if used is None:
                rest.append(t)
            else:
                for counts in used:
                    s.add_source("anti_affinity", counts)
        anti = rest
        if not affinity and not anti:
            return
        s.sources = None  # counted pod by pod too
        for node in nodes:
            pods = node.pods
            if not pods:
                continue
            labels = node.labels
            if affinity and any(k in labels for k in s.affinity_keys):
                n = _count_all(affinity, pods.values())
                if n:
                    for t in affinity:
                        _bump(aff_counts, labels, t.topology_key, n)
            for t in anti:
                if t.topology_key in labels:
                    n = t.count(pods.values())
                    if n:
                        _bump(anti_counts, labels, t.topology_key, n)

    def _score_indexed(self, t: _IncomingTerm, weight: int, scores: ScoreMap) -> bool:
        """Add ``weight`` per pod ``t`` selects to its topology pair's score, from the
        label index; False (nothing added) when the term is not one label in listed
        namespaces."""
        counts: Counts = {}
        if self._count_indexed(t, counts) is None:
            return False
        for (key, value), n in counts.items():
            by_value = scores.setdefault(key, {})
            by_value[value] = by_value.get(value, 0) + n * weight
        return True

    def _count_indexed(self, t: _IncomingTerm, counts: Counts
                       ) -> list[Mapping[tuple[str, str], int]] | None:
        """Count the pods ``t`` selects per topology pair from the label index; returns
        the index's counts that were added up, or None (nothing counted) when the term is
        not one label in listed namespaces."""
        namespaces = t.listed_namespaces()
        if namespaces is None or t._eq is None or len(t._eq) != 1:
            return None
        (key, values), = t._eq
        handle, topology = self.handle, t.topology_key
        used = []
        for ns in namespaces:
            for value in values:
                by_pair = handle.pods_by_topology(ns, key, value, topology)
                used.append(by_pair)
                if not counts:
                    counts.update(by_pair)
                    continue
                for pair, n in by_pair.items():
                    counts[pair] = counts.get(pair, 0) + n
        return used

    def add_pod(self, state: CycleState, pod: PodInfo, to_add: PodInfo, node: NodeInfo
                ) -> Status | None:
        s = state.read(PRE_FILTER_STATE_KEY)
        if not isinstance(s, _PreFilterState):
            return _missing(PRE_FILTER_STATE_KEY)
        s.update_with_pod(to_add, node, 1)
        return None

    def remove_pod(self, state: CycleState, pod: PodInfo, to_remove: PodInfo,
                   node: NodeInfo) -> Status | None:
        s = state.read(PRE_FILTER_STATE_KEY)
        if not isinstance(s, _PreFilterState):
            return _missing(PRE_FILTER_STATE_KEY)
        s.update_with_pod(to_remove, node, -1)
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s = state.read(PRE_FILTER_STATE_KEY)
        if not isinstance(s, _PreFilterState):
            return _missing(PRE_FILTER_STATE_KEY)
        labels = node.labels
        if s.affinity_keys and not s.satisfies_affinity(labels):
            return Status.unresolvable(ERR_REASON_AFFINITY_RULES_NOT_MATCH)
        if s.anti_affinity_counts and not s.satisfies_anti_affinity(labels):
            return Status.unschedulable(ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH)
        if s.existing_anti_affinity_counts and not s.satisfies_existing_anti_affinity(labels):
            return Status.unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH)
        return None

    def filter_batch(self, state: CycleState, pod: PodInfo, table: NodeTable
                     ) -> BoolArray | None:
        """:meth:`filter` for every node at once, one verdict per topology value."""
        s = state.read(PRE_FILTER_STATE_KEY)
        if not isinstance(s, _PreFilterState):
            return None
        mask = table.all()
        if s.affinity_keys:
            counts = s.affinity_counts
            present = table.all()
            populated = table.all()
            for key in s.affinity_keys:
                col = table.label_column(key)
                present &= col.codes >= 0
                populated &= _populated(col, counts, key, s.live("affinity"))
            if not (not counts and s.self_affinity):
                present &= populated
            mask &= present
        if s.anti_affinity_counts:
            counts = s.anti_affinity_counts
            live = s.live("anti_affinity")
            for key in s.anti_affinity_keys:
                mask &= ~_populated(table.label_column(key), counts, key, live)
        if s.existing_anti_affinity_counts:
            # one pass per topology key (thousands of single-node pairs with hostname)
            live = s.live("existing_anti_affinity")
            for key in s.existing_anti_affinity_keys:
                mask &= ~_populated(table.label_column(key), s.existing_anti_affinity_counts,
                                    key, live)
        return mask

    # -- PreScore / Score --------------------------------------------------------------

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                  ) -> Status | None:
        handle = self.handle
        preferred = _incoming(pod.preferred_affinity_terms, handle)
        preferred_anti = _incoming(pod.preferred_anti_affinity_terms, handle)
        has_constraints = bool(preferred or preferred_anti)
        if self.ignore_preferred_terms_of_existing_pods and not has_constraints:
            return Status.skip()
        ns_labels = handle.namespace_labels(pod.namespace) or {}
        hard = self.hard_pod_affinity_weight
        scores: ScoreMap = {}
        # the incoming pod's usual terms (one label, listed namespaces) from the label
        # index; the others by looking at every pod of every node
        preferred = [t for t in preferred if not self._score_indexed(t, t.weight, scores)]
        preferred_anti = [t for t in preferred_anti
                          if not self._score_indexed(t, -t.weight, scores)]
        if preferred or preferred_anti:
            for node in handle.nodes():
                labels = node.labels
                if not labels or not node.pods:
                    continue
                pods = node.pods.values()
                for t in preferred:
                    if t.topology_key in labels:
                        n = t.count(pods)
                        if n:
                            _add(scores, labels, t.topology_key, n * t.weight)
                for t in preferred_anti:
                    if t.topology_key in labels:
                        n = t.count(pods)
                        if n:
                            _add(scores, labels, t.topology_key, -n * t.weight)
        # Only pods whose terms can score others (PodInfo.has_affinity) hold any toward
        # the incoming pod.
        for node in handle.nodes_with_affinity_pods():
            labels = node.labels
            if not labels:
                continue
            for existing in node.pods_with_affinity.values():
                if hard > 0:
                    for at in existing.required_affinity_terms:
                        if _selects(at, pod, ns_labels):
                            _add(scores, labels, at.topology_key, hard)
                for at in existing.preferred_affinity_terms:
                    if _selects(at, pod, ns_labels):
                        _add(scores, labels, at.topology_key, at.weight)
                for at in existing.preferred_anti_affinity_terms:
                    if _selects(at, pod, ns_labels):
                        _add(scores, labels, at.topology_key, -at.weight)
        if not scores:
            return Status.skip()
        state.write(PRE_SCORE_STATE_KEY, _PreScoreState(scores))
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        s = state.read(PRE_SCORE_STATE_KEY)
        if not isinstance(s, _PreScoreState):
            return 0
        labels = node.labels
        total = 0
        for key, by_value in s.topology_score.items():
            value = labels.get(key)
            if value is not None:
                total += by_value.get(value, 0)
        return total

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        """:meth:`score` of the nodes at ``rows``: each topology key's scores per value
        spread over the nodes by the node table's label column."""
        total = np.zeros(len(rows), np.int64)
        s = state.read(PRE_SCORE_STATE_KEY)
        if not isinstance(s, _PreScoreState):
            return total
        for key, by_value in s.topology_score.items():
            total += table.label_column(key).numbers(by_value, rows)
        return total

    def normalize_batch(self, state: CycleState, pod: PodInfo, scores: IntArray) -> IntArray:
        """:meth:`normalize_score` of a numpy column (the same float steps)."""
        s = state.read(PRE_SCORE_STATE_KEY)
        if not isinstance(s, _PreScoreState) or not s.topology_score or not len(scores):
            return scores
        lo, hi = int(scores.min()), int(scores.max())
        if hi - lo <= 0:
            return np.zeros(len(scores), np.int64)
        out: IntArray = (MAX_NODE_SCORE * ((scores - lo) / (hi - lo))).astype(np.int64)
        return out

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        s = state.read(PRE_SCORE_STATE_KEY)
        if not isinstance(s, _PreScoreState) or not s.topology_score or not scores:
            return
        lo, hi = min(scores), max(scores)
        diff = hi - lo
        for i, raw in enumerate(scores):
            scores[i] = int(MAX_NODE_SCORE * ((raw - lo) / diff)) if diff > 0 else 0

    # -- queueing hints ----------------------------------------------------------------

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            ClusterEventWithHint(
                ClusterEvent("Pod", Action.ADD | Action.UPDATE_POD_LABEL | Action.DELETE),
                self._after_pod_change),
            ClusterEventWithHint(
                ClusterEvent("Node", Action.ADD | Action.UPDATE_NODE_LABEL),
                self._after_node_change),
        ]

    def _after_pod_change(self, pod: PodInfo, old: Any, new: Any) -> bool:
        original, modified = _as_pod(old), _as_pod(new)
        if (modified is not None and not modified.node_name) or (
                original is not None and not original.node_name):
            return False  # an unscheduled pod takes no part in (anti-)affinity
        affinity = _incoming(pod.required_affinity_terms, self.handle)
        anti = _incoming(pod.required_anti_affinity_terms, self.handle)
        if original is not None and modified is not None:
            if not _matches_all(affinity, original) and _matches_all(affinity, modified):
                return True
            return any(t.matches(original) and not t.matches(modified) for t in anti)
        if modified is not None:
            return _matches_all(affinity, modified)
        if original is None:
            return True
        if any(t.matches(original) for t in anti):
            return True
        # The deleted pod's own anti-affinity may have been what kept the pod out.
        ns_labels = self.handle.namespace_labels(pod.namespace) or {}
        return any(at.matches(pod, ns_labels) for at in original.required_anti_affinity_terms)

    def _after_node_change(self, pod: PodInfo, old: Any, new: Any) -> bool:
        affinity = pod.required_affinity_terms
        if not affinity:
            return True  # the pod was kept out by anti-affinity, which a node may escape
        keys = {t.topology_key for t in affinity}
        keys.update(t.topology_key for t in pod.required_anti_affinity_terms)
        new_labels, old_labels = _node_labels(new), _node_labels(old)
        return any(k in new_labels or k in old_labels for k in keys)


def _missing(key: str) -> Status:
    return Status.error(f'error reading "{key}" from cycleState: not found')


def new(args: dict[str, Any], handle: Handle) -> InterPodAffinity:
    """The plugin from ``InterPodAffinityArgs``: ``hardPodAffinityWeight`` (0..100, default
    1) and ``ignorePreferredTermsOfExistingPods`` (default false)."""
    weight = args.get("hardPodAffinityWeight")
    if weight is None:
        weight = DEFAULT_HARD_POD_AFFINITY_WEIGHT
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise ValueError(f"hardPodAffinityWeight: Invalid value: {weight!r}: must be an integer")
    if not MIN_HARD_POD_AFFINITY_WEIGHT <= weight <= MAX_HARD_POD_AFFINITY_WEIGHT:
        raise ValueError(
            f"hardPodAffinityWeight: Invalid value: {weight}: not in valid range "
            f"[{MIN_HARD_POD_AFFINITY_WEIGHT}, {MAX_HARD_POD_AFFINITY_WEIGHT}]")
    ignore = args.get("ignorePreferredTermsOfExistingPods", False)
    if not isinstance(ignore, bool):
        raise ValueError(
            f"ignorePreferredTermsOfExistingPods: Invalid value: {ignore!r}: must be a boolean")
    return InterPodAffinity(handle, hard_pod_affinity_weight=weight,
                            ignore_preferred_terms_of_existing_pods=ignore)
