"""PodTopologySpread: spread a pod and its siblings evenly over topology domains (zones,
nodes, racks...), as kube-scheduler 1.32 does.

Each constraint counts, in every domain of its ``topologyKey``, the pods of the incoming
pod's namespace that match its ``labelSelector``. Hard constraints (``DoNotSchedule``) are
counted once in PreFilter; Filter then rejects a node whose domain would exceed the
smallest domain by more than ``maxSkew`` once the pod is there. Soft ones
(``ScheduleAnyway``) are counted in PreScore, and Score favours the emptier domains. A pod
without constraints gets the plugin's default ones: by default, spread by node and by zone
over the pods that its Services and its ReplicaSet (or RC, StatefulSet) select::

    plugin = new({}, handle)                                   # system defaults
    plugin = new({"defaultingType": "List", "defaultConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
         "whenUnsatisfiable": "ScheduleAnyway"}]}, handle)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kybernetes.api.scheduling import HOSTNAME_LABEL, NodeSelector, untolerated_taint
from kybernetes.api.selectors import (
    LabelSelector,
    Requirement,
    SelectorError,
    from_label_selector,
)
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
from kybernetes.scheduler.nodetable import BoolArray, IntArray, NodeTable
from kybernetes.scheduler.types import NodeInfo, PodInfo

Obj = dict[str, Any]

NAME = "PodTopologySpread"
ERR_REASON_CONSTRAINTS_NOT_MATCH = "node(s) didn't match pod topology spread constraints"
ERR_REASON_NODE_LABEL_NOT_MATCH = ERR_REASON_CONSTRAINTS_NOT_MATCH + " (missing required label)"

ZONE_LABEL = "topology.kubernetes.io/zone"
DO_NOT_SCHEDULE = "DoNotSchedule"
SCHEDULE_ANYWAY = "ScheduleAnyway"
SYSTEM_DEFAULTING = "System"
LIST_DEFAULTING = "List"
HONOR = "Honor"

SYSTEM_DEFAULT_CONSTRAINTS: tuple[Obj, ...] = (
    {"topologyKey": HOSTNAME_LABEL, "whenUnsatisfiable": SCHEDULE_ANYWAY, "maxSkew": 3},
    {"topologyKey": ZONE_LABEL, "whenUnsatisfiable": SCHEDULE_ANYWAY, "maxSkew": 5},
)

_PRE_FILTER_KEY = "PreFilter" + NAME
_PRE_SCORE_KEY = "PreScore" + NAME
_TAINT_EFFECTS = ("NoSchedule", "NoExecute")
_NO_DOMAIN = 2**31 - 1  # the global minimum while a constraint has no domain at all
_INVALID_SCORE = -1  # Score's mark for a node NormalizeScore must give 0
_MEMO_PER_NODE = 256
_MAX_SELECTORS = 4096
_MAX_TOTALS = 16
_CONTROLLER_KINDS = {("v1", "ReplicationController"): "replicationcontrollers",
                     ("apps/v1", "ReplicaSet"): "replicasets",
                     ("apps/v1", "StatefulSet"): "statefulsets"}


@dataclass(frozen=True, slots=True)
class Constraint:
    """A ``topologySpreadConstraints`` entry, parsed (matchLabelKeys already merged into
    the selector)."""

    max_skew: int
    topology_key: str
    selector: LabelSelector
    min_domains: int = 1
    honor_affinity: bool = True
    """nodeAffinityPolicy: Honor (the default): only nodes matching the pod's
    nodeSelector and required node affinity count."""
    honor_taints: bool = False
    """nodeTaintsPolicy: Honor: nodes with a taint the pod does not tolerate do not count."""


def parse_constraints(raw: Iterable[Mapping[str, Any]], pod_labels: Mapping[str, str],
                      action: str) -> list[Constraint]:
    """The constraints of ``raw`` whose ``whenUnsatisfiable`` is ``action``.

    Raises SelectorError for a selector that cannot be parsed."""
    out: list[Constraint] = []
    for c in raw:
        if c.get("whenUnsatisfiable") != action:
            continue
        selector = from_label_selector(c.get("labelSelector"))
        match = {k: pod_labels[k] for k in c.get("matchLabelKeys") or () if k in pod_labels}
        if match:
            # the pod's values for matchLabelKeys narrow the selector; on a selector that
            # matches nothing (no labelSelector) they are all that is left, as upstream
            reqs = tuple(Requirement(k, "=", (str(v),)) for k, v in sorted(match.items()))
            selector = LabelSelector(reqs if selector.nothing else reqs + selector.requirements)
        min_domains = c.get("minDomains")
        out.append(Constraint(
            max_skew=int(c.get("maxSkew") or 1),
            topology_key=str(c.get("topologyKey", "")),
            selector=selector,
            min_domains=1 if min_domains is None else int(min_domains),
            honor_affinity=(c.get("nodeAffinityPolicy") or HONOR) == HONOR,
            honor_taints=c.get("nodeTaintsPolicy") == HONOR))
    return out


class _Inclusion:
    """Which nodes count for a pod's spreading: the node inclusion policies' tests."""

    __slots__ = ("affinity", "node_selector", "tolerations")

    def __init__(self, pod: PodInfo) -> None:
        self.node_selector: dict[str, str] = dict(pod.spec.get("nodeSelector") or {})
        self.affinity: NodeSelector | None = pod.required_node_affinity
        self.tolerations: list[Mapping[str, Any]] = list(pod.tolerations)

    def affinity_ok(self, node: NodeInfo) -> bool:
        labels = node.labels
        for k, v in self.node_selector.items():
            if labels.get(k) != v:
                return False
        return self.affinity is None or self.affinity.matches(labels, node.name)

    def taints_ok(self, node: NodeInfo) -> bool:
        return not node.taints or untolerated_taint(node.taints, self.tolerations,
                                                   _TAINT_EFFECTS) is None

    def included(self, c: Constraint, node: NodeInfo) -> bool:
        return ((not c.honor_affinity or self.affinity_ok(node))
                and (not c.honor_taints or self.taints_ok(node)))

    def signature(self, affinity: bool, taints: bool) -> str:
        """What the tests depend on, when they are made."""
        return repr((sorted(self.node_selector.items()) if affinity else None,
                     self.affinity if affinity else None,
                     self.tolerations if taints else None))

    def checks(self, constraints: Iterable[Constraint]) -> tuple[bool, bool]:
        """Whether any constraint needs the affinity test, the taint test, at all."""
        cs = list(constraints)
        return (any(c.honor_affinity for c in cs)
                and (bool(self.node_selector) or self.affinity is not None),
                any(c.honor_taints for c in cs))


def _has_keys(labels: Mapping[str, str], constraints: Iterable[Constraint]) -> bool:
    # a plain loop: this runs for every node of every cycle, all() costs a generator
    for c in constraints:  # noqa: SIM110
        if c.topology_key not in labels:
            return False
    return True


class _NodeMemo:
    __slots__ = ("counts", "generation", "info")

    def __init__(self, info: NodeInfo) -> None:
        self.info = info
        self.generation = info.generation
        self.counts: dict[int, int] = {}


Matcher = Callable[[Mapping[str, str]], bool]


def _matcher(selector: LabelSelector) -> Matcher | None:
    """``selector.matches``, faster for plain matchLabels; None when it matches nothing."""
    if selector.nothing:
        return None
    reqs = selector.requirements
    if not all(r.op == "=" for r in reqs):
        return selector.matches
    if len(reqs) == 1:
        key, value = reqs[0].key, reqs[0].values[0]
        return lambda labels: labels.get(key) == value
    pairs = tuple((r.key, r.values[0]) for r in reqs)
    return lambda labels: all(labels.get(k) == v for k, v in pairs)


class _Counter:
    """Counts, for one pod's constraints, the pods on a node that each one selects: pods
    of the pod's namespace matching the selector, terminating ones aside. Counts are kept
    in the plugin's memo while the node's generation stays the same."""

    __slots__ = ("matchers", "memo", "namespace", "sids")

    def __init__(self, memo: dict[str, _NodeMemo], namespace: str, sids: list[int],
                 constraints: list[Constraint]) -> None:
        self.memo = memo
        self.namespace = namespace
        self.sids = sids
        self.matchers = [_matcher(c.selector) for c in constraints]

    def count(self, node: NodeInfo, i: int) -> int:
        pods = node.pods
        match = self.matchers[i]
        if not pods or match is None:
            return 0
        memo = self.memo.get(node.name)
        if memo is None or memo.info is not node or memo.generation != node.generation:
            memo = self.memo[node.name] = _NodeMemo(node)
        counts = memo.counts
        sid = self.sids[i]
        n = counts.get(sid)
        if n is None:
            ns = self.namespace
            n = 0
            for p in pods.values():
                if p.namespace == ns and match(p.labels) and not p.terminating:
                    n += 1
            if len(counts) >= _MEMO_PER_NODE:
                counts.clear()
            counts[sid] = n
        return n


Contribution = list[tuple[int, str, int]]
"""What one node adds to the totals: (constraint index, domain, matching pods)."""


class _Totals:
    """Matching pods by domain over every node, for one list of constraints (with one
    pod's node inclusion tests), kept from cycle to cycle: a node is counted again only
    when its generation (its pods, labels or taints) or its NodeInfo changed. A domain
    stays while at least one counted node is in it, even with no matching pod."""

    __slots__ = ("domains", "generations", "nodes", "table", "totals")

    def __init__(self, size: int) -> None:
        self.nodes: dict[str, tuple[NodeInfo, int, Contribution]] = {}
        self.totals: list[dict[str, int]] = [{} for _ in range(size)]
        self.domains: list[dict[str, int]] = [{} for _ in range(size)]
        """Counted nodes by domain."""
        self.table: NodeTable | None = None
        self.generations: IntArray | None = None
        """The nodes' generations at the last refresh, when ``nodes`` were ``table``'s."""

    def refresh(self, nodes: list[NodeInfo], contribution: Callable[[NodeInfo], Contribution]
                ) -> list[dict[str, int]]:
        table = nodes[0].table if nodes else None
        if table is not None and table.nodes is not nodes:
            table = None
        if table is not None and table is self.table and self.generations is not None:
            # the same nodes as last time: only those whose generation moved
            changed = np.flatnonzero(table.generation != self.generations)
            self._count([nodes[i] for i in changed.tolist()], contribution)
        else:
            self._count(nodes, contribution)
            seen = self.nodes
            if len(seen) > len(nodes):  # nodes gone
                live = {n.name for n in nodes}
                for name in [k for k in seen if k not in live]:
                    self._apply(seen.pop(name)[2], -1)
        self.table = table
        self.generations = table.generation.copy() if table is not None else None
        return self.totals

    def _count(self, nodes: list[NodeInfo],
               contribution: Callable[[NodeInfo], Contribution]) -> None:
        seen = self.nodes
        for node in nodes:
            e = seen.get(node.name)
            if e is not None and e[0] is node and e[1] == node.generation:
                continue
            if e is not None:
                self._apply(e[2], -1)
            c = contribution(node)
            self._apply(c, 1)
            seen[node.name] = (node, node.generation, c)

    def _apply(self, contribution: Contribution, sign: int) -> None:
        for i, value, n in contribution:
            domains, totals = self.domains[i], self.totals[i]
            k = domains.get(value, 0) + sign
            if k:
                domains[value] = k
                totals[value] = totals.get(value, 0) + sign * n
            else:
                del domains[value]
                del totals[value]


class _PreFilterState:
    """Per hard constraint: matching pods by domain, and the smallest count."""

    __slots__ = ("constraints", "counts", "mins", "self_match")

    def __init__(self, constraints: list[Constraint], self_match: list[int],
                 counts: list[dict[str, int]], mins: list[int]) -> None:
        self.constraints = constraints
        self.self_match = self_match
        self.counts = counts
        self.mins = mins

    def clone(self) -> _PreFilterState:
        return _PreFilterState(self.constraints, self.self_match,
                               [dict(c) for c in self.counts], list(self.mins))

    def update(self, i: int, value: str, delta: int) -> None:
        counts = self.counts[i]
        new = counts.get(value, 0) + delta
        counts[value] = new
        if new < self.mins[i]:
            self.mins[i] = new
        elif delta > 0 and new - delta == self.mins[i]:
            self.mins[i] = min(counts.values())


class _PreScoreState:
    __slots__ = ("constraints", "counter", "counts", "host_counts", "ignored", "weights")

    def __init__(self, constraints: list[Constraint], counter: _Counter) -> None:
        self.constraints = constraints
        self.ignored: set[str] = set()
        self.counts: list[dict[str, int]] = [{} for _ in constraints]
        """Matching pods by domain (not for the hostname key, counted per node)."""
        self.host_counts: list[dict[str, int]] = [{} for _ in constraints]
        """Matching pods by candidate node, for constraints on the hostname key."""
        self.weights: list[float] = []
        self.counter = counter

    def clone(self) -> _PreScoreState:
        return self  # read-only once written


class PodTopologySpread:
    name = NAME

    def __init__(self, handle: Handle, *, default_constraints: list[Obj],
                 system_defaulted: bool) -> None:
        self._handle = handle
        self._defaults = default_constraints
        self._system_defaulted = system_defaulted
        # matching-pod counts by node, valid while the node's generation stays the same:
        # most nodes do not change between two cycles, so counting is mostly lookups
        self._memo: dict[str, _NodeMemo] = {}
        self._selector_ids: dict[tuple[str, LabelSelector], int] = {}
        self._next_selector_id = 0
        # per-domain totals of the constraint lists seen lately, most recent last
        self._totals: dict[tuple[Any, ...], _Totals] = {}

    # -- constraints -----------------------------------------------------------------------

    def _constraints(self, pod: PodInfo, action: str) -> list[Constraint]:
        raw = pod.spec.get("topologySpreadConstraints")
        if raw:
            return parse_constraints(raw, pod.labels, action)
        if not self._defaults:
            return []
        constraints = parse_constraints(self._defaults, pod.labels, action)
        if not constraints:
            return []
        selector = self._default_selector(pod)
        if selector.empty:
            return []
        return [replace(c, selector=selector) for c in constraints]

    def _default_selector(self, pod: PodInfo) -> LabelSelector:
        """What the pod's Services and controller select (upstream's DefaultSelector)."""
        ns = pod.namespace
        label_set: dict[str, str] = {}
        for svc in self._handle.objects("services"):
            if (svc.get("metadata") or {}).get("namespace", "") != ns:
                continue
            sel = (svc.get("spec") or {}).get("selector")
            if sel is None:
                continue  # a Service without a selector selects nothing
            if all(pod.labels.get(k) == v for k, v in sel.items()):
                label_set.update(sel)
        reqs = _set_requirements(label_set)
        owner = next((r for r in (pod.pod.get("metadata") or {}).get("ownerReferences") or ()
                      if r.get("controller")), None)
        if owner is None:
            return LabelSelector(reqs)
        resource = _CONTROLLER_KINDS.get((owner.get("apiVersion", ""), owner.get("kind", "")))
        if resource is None:
            return LabelSelector(reqs)
        ctrl = next((o for o in self._handle.objects(resource)
                     if (o.get("metadata") or {}).get("namespace", "") == ns
                     and (o.get("metadata") or {}).get("name") == owner.get("name")), None)
        if ctrl is None:
            return LabelSelector(reqs)
        ctrl_sel = (ctrl.get("spec") or {}).get("selector")
        if resource == "replicationcontrollers":
            label_set.update(ctrl_sel or {})
            return LabelSelector(_set_requirements(label_set))
        try:
            other = from_label_selector(ctrl_sel)
        except SelectorError:
            return LabelSelector(reqs)
        return LabelSelector(reqs + other.requirements)

    # -- counting --------------------------------------------------------------------------

    def _selector_id(self, namespace: str, selector: LabelSelector) -> int:
        key = (namespace, selector)
        sid = self._selector_ids.get(key)
        if sid is None:
            if len(self._selector_ids) >= _MAX_SELECTORS:
                self._selector_ids.clear()
                self._memo.clear()
                self._totals.clear()
            sid = self._selector_ids[key] = self._next_selector_id
            self._next_selector_id += 1  # never reused, so a stale memo entry cannot match
        return sid

    def _counter(self, pod: PodInfo, constraints: list[Constraint], nodes: list[NodeInfo]
                 ) -> _Counter:
        if len(self._memo) > 2 * len(nodes) + 16:  # forget nodes that are gone
            live = {n.name for n in nodes}
            self._memo = {k: v for k, v in self._memo.items() if k in live}
        sids = [self._selector_id(pod.namespace, c.selector) for c in constraints]
        return _Counter(self._memo, pod.namespace, sids, constraints)

    def _domain_counts(self, pod: PodInfo, constraints: list[Constraint], counter: _Counter,
                       nodes: list[NodeInfo], *, counted: list[int], require_all: bool
                       ) -> list[dict[str, int]]:
        """Matching pods by domain, over ``nodes``, for the constraints at the indices
        ``counted`` (the others get empty dicts). ``require_all``: only nodes with every
        constraint's topology key count; otherwise a missing key is the domain "".
        Nodes the constraint's inclusion policies leave out do not count. The result is
        shared: copy before changing it."""
        inclusion = _Inclusion(pod)
        check_affinity, check_taints = inclusion.checks(constraints)
        pairs = [(i, constraints[i]) for i in counted]

        def contribution(node: NodeInfo) -> Contribution:
            labels = node.labels
            if node.node is None or (require_all and not _has_keys(labels, constraints)):
                return []
            affinity_ok = not check_affinity or inclusion.affinity_ok(node)
            taints_ok = not check_taints or inclusion.taints_ok(node)
            return [(i, labels.get(c.topology_key, ""), counter.count(node, i))
                    for i, c in pairs
                    if (affinity_ok or not c.honor_affinity)
                    and (taints_ok or not c.honor_taints)]

        key = (require_all, tuple(counted), tuple(
            (counter.sids[i], c.topology_key, c.honor_affinity and check_affinity,
             c.honor_taints and check_taints) for i, c in enumerate(constraints)),
               inclusion.signature(check_affinity, check_taints))
        totals = self._totals.pop(key, None)
        if totals is None:
            totals = _Totals(len(constraints))
            if len(self._totals) >= _MAX_TOTALS:
                del self._totals[next(iter(self._totals))]  # the least recently used
        self._totals[key] = totals
        return totals.refresh(nodes, contribution)

    # -- PreFilter / Filter ----------------------------------------------------------------

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        try:
            constraints = self._constraints(pod, DO_NOT_SCHEDULE)
        except SelectorError as e:
            return None, Status.error(f"get constraints from pod: obtaining pod's hard "
                                      f"topology spread constraints: {e}")
        if not constraints:
            return None, Status.skip()
        # every node counts, not only those the framework is about to filter
        all_nodes = self._handle.nodes()
        counter = self._counter(pod, constraints, all_nodes)
        counts = [dict(d) for d in self._domain_counts(
            pod, constraints, counter, all_nodes, counted=list(range(len(constraints))),
            require_all=True)]
        mins = [min(d.values(), default=_NO_DOMAIN) for d in counts]
        self_match = [1 if c.selector.matches(pod.labels) else 0 for c in constraints]
        state.write(_PRE_FILTER_KEY, _PreFilterState(constraints, self_match, counts, mins))
        return None, None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s: _PreFilterState | None = state.read(_PRE_FILTER_KEY)
        if s is None:
            return Status.error(f'reading "{_PRE_FILTER_KEY}" from cycleState: not found')
        labels = node.labels
        counts, mins, self_match = s.counts, s.mins, s.self_match
        for i, c in enumerate(s.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                return Status.unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH)
            d = counts[i]
            # fewer eligible domains than minDomains: the global minimum counts as 0
            min_match = 0 if len(d) < c.min_domains else mins[i]
            # existing matches + the pod itself (if it matches) - global minimum <= maxSkew
            if d.get(value, 0) + self_match[i] - min_match > c.max_skew:
                return Status.unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH)
        return None

    def filter_batch(self, state: CycleState, pod: PodInfo, table: NodeTable
                     ) -> BoolArray | None:
        """:meth:`filter` for every node at once: one verdict per topology domain, spread
        over the nodes by their label values (a node without the label fails)."""
        s: _PreFilterState | None = state.read(_PRE_FILTER_KEY)
        if s is None:
            return None
        mask = table.all()
        for i, c in enumerate(s.constraints):
            col = table.label_column(c.topology_key)
            d = s.counts[i]
            min_match = 0 if len(d) < c.min_domains else s.mins[i]
            mask &= col.spread([d.get(v, 0) + s.self_match[i] - min_match <= c.max_skew
                                for v in col.values])
        return mask

    # -- PreFilterExtensions ---------------------------------------------------------------

    def add_pod(self, state: CycleState, pod: PodInfo, to_add: PodInfo, node: NodeInfo
                ) -> Status | None:
        self._update_with_pod(state, pod, to_add, node, 1)
        return None

    def remove_pod(self, state: CycleState, pod: PodInfo, to_remove: PodInfo,
                   node: NodeInfo) -> Status | None:
        self._update_with_pod(state, pod, to_remove, node, -1)
        return None

    def _update_with_pod(self, state: CycleState, pod: PodInfo, other: PodInfo,
                         node: NodeInfo, delta: int) -> None:
        s: _PreFilterState | None = state.read(_PRE_FILTER_KEY)
        if s is None or other.namespace != pod.namespace or node.node is None:
            return
        labels = node.labels
        if not _has_keys(labels, s.constraints):
            return
        inclusion = _Inclusion(pod)
        for i, c in enumerate(s.constraints):
            if not c.selector.matches(other.labels) or not inclusion.included(c, node):
                continue
            s.update(i, labels[c.topology_key], delta)

    # -- PreScore / Score ------------------------------------------------------------------

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                  ) -> Status | None:
        all_nodes = self._handle.nodes()
        if not all_nodes:
            return Status.skip()
        try:
            constraints = self._constraints(pod, SCHEDULE_ANYWAY)
        except SelectorError as e:
            return Status.error(f"calculating preScoreState: obtaining pod's soft topology "
                                f"spread constraints: {e}")
        if not constraints:
            return Status.skip()
        counter = self._counter(pod, constraints, all_nodes)
        s = _PreScoreState(constraints, counter)
        # only the pod's own constraints need every key on a node: with the system
        # defaults, a node without a zone label is still spread by hostname
        require_all = bool(pod.spec.get("topologySpreadConstraints")) \
            or not self._system_defaulted
        host = [c.topology_key == HOSTNAME_LABEL for c in constraints]
        candidates = self._candidates(s, nodes, host, require_all)
        for i in range(len(constraints)):
            size = len(nodes) - len(s.ignored) if host[i] else len(s.counts[i])
            s.weights.append(math.log(size + 2))
        counted = [i for i in range(len(constraints)) if not host[i]]
        if counted:
            totals = self._domain_counts(pod, constraints, counter, all_nodes,
                                         counted=counted, require_all=require_all)
            for i in counted:
                # only the domains of candidate nodes matter
                t = totals[i]
                s.counts[i] = {v: t.get(v, 0) for v in s.counts[i]}
        for i in range(len(constraints)):
            if host[i]:
                s.host_counts[i] = {n.name: counter.count(n, i) for n in candidates}
        state.write(_PRE_SCORE_KEY, s)
        return None

    @staticmethod
    def _candidates(s: _PreScoreState, nodes: list[NodeInfo], host: list[bool],
                    require_all: bool) -> list[NodeInfo]:
        """The nodes to score (``require_all``: those with every constraint's key; the
        others go to ``s.ignored``), and the domains they are in (as keys of
        ``s.counts``; a missing key is the domain "") for the constraints not on the
        hostname key. Over the node table's label columns when the nodes are its rows."""
        constraints = s.constraints
        table = nodes[0].table if nodes else None
        rows = [n.index for n in nodes if n.table is table] if table is not None else []
        if table is None or len(rows) != len(nodes):
            candidates: list[NodeInfo] = []
            for node in nodes:
                if require_all and not _has_keys(node.labels, constraints):
                    s.ignored.add(node.name)
                    continue
                candidates.append(node)
                for i, c in enumerate(constraints):
                    if not host[i]:  # (hostname: counted per node)
                        s.counts[i].setdefault(node.labels.get(c.topology_key, ""), 0)
            return candidates
        at = np.array(rows, np.int64)
        columns = [table.label_column(c.topology_key) for c in constraints]
        codes = [col.codes[at] for col in columns]
        candidates = nodes
        if require_all:
            missing = np.zeros(len(at), np.bool_)
            for column in codes:
                missing |= column < 0
            if missing.any():
                s.ignored.update(nodes[j].name for j in np.flatnonzero(missing).tolist())
                keep = ~missing
                candidates = [nodes[j] for j in np.flatnonzero(keep).tolist()]
                codes = [column[keep] for column in codes]
        for i, col in enumerate(columns):
            if not host[i]:
                values = col.values
                s.counts[i] = {values[k] if k >= 0 else "": 0
                               for k in np.unique(codes[i]).tolist()}
        return candidates

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        """The (weighted) number of matching pods in the node's domains; normalised later
        so that fewer means a higher score."""
        s: _PreScoreState | None = state.read(_PRE_SCORE_KEY)
        if s is None:
            return 0
        if node.name in s.ignored:
            return _INVALID_SCORE
        labels = node.labels
        total = 0.0
        for i, c in enumerate(s.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == HOSTNAME_LABEL:
                cnt = s.host_counts[i].get(node.name)
                if cnt is None:
                    cnt = s.counter.count(node, i)
            else:
                cnt = s.counts[i].get(value, 0)
            # maxSkew-1 added waters down small differences, more so for a larger maxSkew
            total += cnt * s.weights[i] + (c.max_skew - 1)
        return math.floor(total + 0.5)  # Go's math.Round: halves away from zero

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        """:meth:`score` of the nodes at ``rows``: a count per domain, spread over the
        nodes by their label values (per node for the hostname key), summed constraint by
        constraint in the same order so that the floats round alike."""
        s: _PreScoreState | None = state.read(_PRE_SCORE_KEY)
        if s is None:
            return np.zeros(len(rows), np.int64)
        total = np.zeros(len(rows), np.float64)
        for i, c in enumerate(s.constraints):
            col = table.label_column(c.topology_key)
            codes = col.codes[rows]
            if c.topology_key == HOSTNAME_LABEL:
                host, nodes = s.host_counts[i], table.nodes
                cnt = np.fromiter(
                    (n if (n := host.get((ni := nodes[r]).name)) is not None
                     else s.counter.count(ni, i) for r in rows.tolist()), np.float64, len(rows))
            else:
                cnt = col.numbers(s.counts[i], rows, np.float64)
            total += np.where(codes >= 0, cnt * s.weights[i] + (c.max_skew - 1), 0.0)
        out: IntArray = np.floor(total + 0.5).astype(np.int64)
        if s.ignored:
            nodes = table.nodes
            out[[j for j, r in enumerate(rows.tolist()) if nodes[r].name in s.ignored]] = \
                _INVALID_SCORE
        return out

    def normalize_batch(self, state: CycleState, pod: PodInfo, scores: IntArray) -> IntArray:
        """:meth:`normalize_score` of a numpy column."""
        if state.read(_PRE_SCORE_KEY) is None:
            return scores
        valid = scores != _INVALID_SCORE
        if not valid.any():
            return np.zeros(len(scores), np.int64)
        lo, hi = int(scores[valid].min()), int(scores[valid].max())
        if hi == 0:
            out: IntArray = np.where(valid, MAX_NODE_SCORE, 0)
        else:
            out = np.where(valid, MAX_NODE_SCORE * (hi + lo - scores) // hi, 0)
        return out.astype(np.int64)

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        if state.read(_PRE_SCORE_KEY) is None:
            return
        valid = [x for x in scores if x != _INVALID_SCORE]
        lo = min(valid, default=0)
        hi = max(valid, default=0)
        for i, x in enumerate(scores):
            if x == _INVALID_SCORE:
                scores[i] = 0
            elif hi == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (hi + lo - x) // hi

    # -- events ----------------------------------------------------------------------------

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            # a matching pod placed, relabelled or gone changes the counts; a new
            # toleration changes which nodes count under nodeTaintsPolicy: Honor
            ClusterEventWithHint(ClusterEvent(
                "Pod", Action.ADD | Action.UPDATE_POD_LABEL | Action.UPDATE_POD_TOLERATIONS
                | Action.DELETE), self._pod_hint),
            # a node's topology labels or taints decide which domain it counts in
            ClusterEventWithHint(ClusterEvent(
                "Node", Action.ADD | Action.DELETE | Action.UPDATE_NODE_LABEL
                | Action.UPDATE_NODE_TAINT), self._node_hint),
        ]

    def _pod_hint(self, pod: PodInfo, old: Any, new: Any) -> bool:
        try:
            original, modified = _as_pod(old), _as_pod(new)
            for p in (original, modified):
                if p is not None and not (p.uid == pod.uid or (
                        p.node_name and p.namespace == pod.namespace)):
                    return False  # unscheduled, or another namespace: counts unchanged
            constraints = self._constraints(pod, DO_NOT_SCHEDULE)
            if original is not None and modified is not None:
                if (modified.uid == pod.uid and modified.tolerations != original.tolerations
                        and any(c.honor_taints for c in constraints)):
                    return True
                if modified.labels == original.labels:
                    return False
                return any(c.selector.matches(original.labels)
                           != c.selector.matches(modified.labels) for c in constraints)
            p = modified if modified is not None else original
            return p is not None and any(c.selector.matches(p.labels) for c in constraints)
        except Exception:
            return True  # when in doubt, retry the pod

    def _node_hint(self, pod: PodInfo, old: Any, new: Any) -> bool:
        try:
            constraints = self._constraints(pod, DO_NOT_SCHEDULE)
            original, modified = _node_view(old), _node_view(new)
            was = original is not None and _has_keys(original[0], constraints)
            now = modified is not None and _has_keys(modified[0], constraints)
            if original is not None and modified is not None:
                if was != now:
                    return True
                return now and (original[1] != modified[1] or any(
                    original[0].get(c.topology_key) != modified[0].get(c.topology_key)
                    for c in constraints))
            return now if modified is not None else was
        except Exception:
            return True


def _set_requirements(label_set: Mapping[str, Any]) -> tuple[Requirement, ...]:
    return tuple(Requirement(k, "=", (str(v),)) for k, v in sorted(label_set.items()))


def _as_pod(obj: Any) -> PodInfo | None:
    if obj is None or isinstance(obj, PodInfo):
        return obj
    return PodInfo(obj)


def _node_view(obj: Any) -> tuple[Mapping[str, str], list[Obj]] | None:
    """(labels, taints) of a node dict or NodeInfo."""
    if obj is None:
        return None
    if isinstance(obj, NodeInfo):
        return obj.labels, obj.taints
    return ((obj.get("metadata") or {}).get("labels") or {},
            list((obj.get("spec") or {}).get("taints") or ()))


def _validate(args: Mapping[str, Any]) -> tuple[str, list[Obj]]:
    errors: list[str] = []
    defaulting = args.get("defaultingType") or SYSTEM_DEFAULTING
    constraints: list[Obj] = list(args.get("defaultConstraints") or ())
    if defaulting not in (SYSTEM_DEFAULTING, LIST_DEFAULTING):
        errors.append(f'defaultingType: Unsupported value: "{defaulting}": supported values: '
                      f'"{SYSTEM_DEFAULTING}", "{LIST_DEFAULTING}"')
    elif defaulting == SYSTEM_DEFAULTING and constraints:
        errors.append(f'defaultingType: Invalid value: "{defaulting}": when '
                      '.defaultConstraints are not empty')
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(constraints):
        p = f"defaultConstraints[{i}]"
        skew = c.get("maxSkew")
        if not isinstance(skew, int) or skew <= 0:
            errors.append(f"{p}.maxSkew: Invalid value: {skew}: not in valid range (0, inf)")
        key = c.get("topologyKey") or ""
        if not key:
            errors.append(f"{p}.topologyKey: Required value: can not be empty")
        when = c.get("whenUnsatisfiable") or ""
        if not when:
            errors.append(f"{p}.whenUnsatisfiable: Required value: can not be empty")
        elif when not in (DO_NOT_SCHEDULE, SCHEDULE_ANYWAY):
            errors.append(f'{p}.whenUnsatisfiable: Unsupported value: "{when}": supported '
                          f'values: "{DO_NOT_SCHEDULE}", "{SCHEDULE_ANYWAY}"')
        if c.get("labelSelector") is not None:
            errors.append(f"{p}.labelSelector: Forbidden: constraint must not define a "
                          "selector, as they deduced for each pod")
        if (key, when) in seen:
            errors.append(f"defaultConstraints[{i}]: Duplicate value: \"{{{key}, {when}}}\"")
        seen.add((key, when))
    if errors:
        raise ValueError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    return defaulting, constraints


def new(args: dict[str, Any], handle: Handle) -> PodTopologySpread:
    """PodTopologySpreadArgs: ``defaultingType`` ("System", the default, or "List") and
    ``defaultConstraints`` (only with "List"). Raises ValueError for invalid args."""
    defaulting, constraints = _validate(args)
    if defaulting == SYSTEM_DEFAULTING:
        return PodTopologySpread(handle, default_constraints=list(SYSTEM_DEFAULT_CONSTRAINTS),
                                 system_defaulted=True)
    return PodTopologySpread(handle, default_constraints=constraints, system_defaulted=False)
