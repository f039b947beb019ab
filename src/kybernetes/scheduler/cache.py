"""The scheduler's picture of the cluster: every node with the pods bound or assumed to it.

Informers feed it bound pods and nodes. When the scheduler picks a node it *assumes* the
pod there at once, so the next pod already sees the space taken, while the binding is
written in the background; the informer's copy of the bound pod later confirms the
assumption, and a failed binding *forgets* it. A scheduling cycle runs without awaiting,
so plugins read the live cache: no snapshot copy is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from kybernetes.scheduler.nodetable import NodeTable, PairCounts
from kybernetes.scheduler.types import AffinityTerm, NodeInfo, PodInfo, TermCounts

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_NONE: Mapping[str, int] = MappingProxyType({})
_MAX_TOPOLOGY_ENTRIES = 4096
"""Label values with topology sums kept (past it they are all dropped, then asked again)."""
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"


@dataclass(slots=True)
class _PodState:
    info: PodInfo
    node: str
    assumed: bool = False


def _same_placement(pi: PodInfo, pod: Obj) -> bool:
    """Whether ``pod`` places exactly as ``pi`` was parsed: the same spec, labels,
    annotations (GPU devices) and deletion mark (what PodInfo derives its fields from)."""
    md, was = pod.get("metadata") or {}, pi.pod.get("metadata") or {}
    return pod.get("spec") == pi.spec and (md.get("labels") or {}) == pi.labels \
        and md.get("annotations") == was.get("annotations") \
        and md.get("deletionTimestamp") == was.get("deletionTimestamp") \
        and md.get("namespace", "") == pi.namespace


def _start(pod: Obj) -> Any:
    return (pod.get("status") or {}).get("startTime")


def _zone(node: NodeInfo) -> str:
    labels = node.labels
    return f"{labels.get(REGION_LABEL, '')}:\x00:{labels.get(ZONE_LABEL, '')}"


def _bump_topologies(by_key: Mapping[str, PairCounts], labels: Mapping[str, str],
                     delta: int) -> None:
    """Count (1) or uncount (-1) one pod in each topology sum, by its node's labels."""
    for topology, counts in by_key.items():
        label = labels.get(topology)
        if label is not None:
            counts.bump((topology, label), delta)


class Cache:
    """Nodes and their pods; also the ``Handle`` plugins read (with ``objects``,
    ``get_object``, ``group_pods``, ``namespace_labels`` and ``client`` supplied by the
    scheduler)."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        self._pods: dict[str, _PodState] = {}
        self._order: list[NodeInfo] | None = None
        self._table: NodeTable | None = None
        self._with_affinity: dict[str, NodeInfo] = {}
        self._with_anti_affinity: dict[str, NodeInfo] = {}
        self._anti_terms: dict[int, tuple[AffinityTerm, PairCounts, list[int]]] = {}
        """Required anti-affinity terms of the pods on known nodes, by the term's id: the
        term, its pods per topology pair, and how many pods carry it (kept as pods and
        nodes change: InterPodAffinity's PreFilter reads it for every pod)."""
        self._by_label: dict[tuple[str, str, str], dict[str, int]] = {}
        """(namespace, label key, value) → node name → how many of its pods carry it."""
        self._by_topology: dict[tuple[str, str, str], dict[str, PairCounts]] = {}
        """The same summed by the nodes' labels: (namespace, label key, value) → topology
        key → (topology key, value) → pods; only for the topology keys asked for, kept
        as pods and nodes change."""
        self.objects_source: Callable[[str], list[Obj]] = lambda resource: []
        self.namespace_source: Callable[[str], dict[str, str] | None] = lambda ns: None
        self.object_source: Callable[[str, str], Obj | None] = lambda resource, key: None
        self.group_source: Callable[[str, str], list[Obj]] = lambda ns, name: []
        self.client: Any = None
        self.nominator: Any = None
        """The queue's :class:`~kybernetes.scheduler.queue.Nominator` (preemption)."""
        self.waiting_pods: dict[str, Any] = {}
        """Pods held at Permit, by uid (``WaitingPod``: ``allow``/``reject``)."""

    # -- Handle ----------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        """Nodes in zone-interleaved order (as upstream's node tree), so that a search that
        stops early still looks at every zone."""
        if self._order is None:
            zones: dict[str, list[NodeInfo]] = {}
            for n in self._nodes.values():
                if n.node is not None:
                    zones.setdefault(_zone(n), []).append(n)
            if len(zones) <= 1:
                self._order = next(iter(zones.values()), [])
            else:
                order: list[NodeInfo] = []
                lists = list(zones.values())
                for i in range(max(len(x) for x in lists)):
                    order.extend(x[i] for x in lists if i < len(x))
                self._order = order
            if self._table is not None:
                for n in self._table.nodes:
                    n.table = None
            self._table = NodeTable(self._order)
        return self._order

    def table(self) -> NodeTable:
        """The resources of the nodes of :meth:`nodes`, as columns (same order)."""
        self.nodes()
        assert self._table is not None
        return self._table

    def node(self, name: str) -> NodeInfo | None:
        n = self._nodes.get(name)
        return n if n is not None and n.node is not None else None

    def nodes_with_affinity_pods(self) -> list[NodeInfo]:
        return [n for n in self._with_affinity.values() if n.node is not None]

    def nodes_with_required_anti_affinity_pods(self) -> list[NodeInfo]:
        return [n for n in self._with_anti_affinity.values() if n.node is not None]

    def required_anti_affinity_counts(self) -> TermCounts:
        return [(term, counts) for term, counts, _ in self._anti_terms.values() if counts]

    def pods_by_label(self, namespace: str, key: str, value: str) -> Mapping[str, int]:
        """Node name → how many pods in ``namespace`` labelled ``key=value`` it holds
        (nodes not known yet included: the caller looks each up)."""
        return self._by_label.get((namespace, key, value), _NONE)

    def pods_by_topology(self, namespace: str, key: str, value: str, topology: str
                         ) -> Mapping[tuple[str, str], int]:
        """(``topology``, the node's value of it) → how many pods in ``namespace``
        labelled ``key=value`` the known nodes with that label hold. Counted once from
        :meth:`pods_by_label`, then kept up to date as pods and nodes change."""
        entry = (namespace, key, value)
        by_key = self._by_topology.get(entry)
        counts = by_key.get(topology) if by_key is not None else None
        if counts is not None:
            return counts
        if by_key is None:
            if len(self._by_topology) >= _MAX_TOPOLOGY_ENTRIES:
                self._by_topology.clear()
            by_key = self._by_topology[entry] = {}
        counts = by_key[topology] = PairCounts(topology)
        for node_name, n in self._by_label.get(entry, _NONE).items():
            ni = self._nodes.get(node_name)
            if ni is not None and ni.node is not None:
                label = ni.labels.get(topology)
                if label is not None:
                    counts.bump((topology, label), n)
        return counts

    def _index_labels(self, pi: PodInfo, node_name: str, delta: int) -> None:
        ns, index, by_topology = pi.namespace, self._by_label, self._by_topology
        for key, value in pi.labels.items():
            entry = (ns, key, value)
            nodes = index.get(entry)
            if nodes is None:
                if delta < 0:
                    continue
                nodes = index[entry] = {}
            n = nodes.get(node_name, 0) + delta
            if n > 0:
                nodes[node_name] = n
            else:
                nodes.pop(node_name, None)
                if not nodes:
                    del index[entry]
            by_key = by_topology.get(entry)
            if by_key:
                ni = self._nodes.get(node_name)
                if ni is not None and ni.node is not None:
                    _bump_topologies(by_key, ni.labels, delta)

    def _index_node_topology(self, ni: NodeInfo, delta: int) -> None:
        """Count (1) or uncount (-1) ``ni``'s pods in the topology sums by its labels."""
        by_topology = self._by_topology
        if ni.node is None or not by_topology:
            return
        labels = ni.labels
        for pi in ni.pods.values():
            ns = pi.namespace
            for key, value in pi.labels.items():
                by_key = by_topology.get((ns, key, value))
                if by_key:
                    _bump_topologies(by_key, labels, delta)

    def _index_anti_affinity(self, pi: PodInfo, ni: NodeInfo, delta: int) -> None:
        """Count (``delta`` 1) or uncount (-1) ``pi``'s required anti-affinity terms on
        ``ni`` (a node not known yet, or gone, has no labels to count them by)."""
        labels = ni.labels if ni.node is not None else {}
        for at in pi.required_anti_affinity_terms:
            entry = self._anti_terms.get(id(at))
            if entry is None:
                if delta < 0:
                    continue
                entry = self._anti_terms[id(at)] = (at, PairCounts(at.topology_key), [0])
            entry[2][0] += delta
            value = labels.get(at.topology_key)
            if value is not None:
                pair = (at.topology_key, value)
                entry[1].bump(pair, delta)
            if entry[2][0] <= 0:
                del self._anti_terms[id(at)]

    def _index_node_anti_affinity(self, ni: NodeInfo, delta: int) -> None:
        for pi in ni.pods_with_required_anti_affinity.values():
            self._index_anti_affinity(pi, ni, delta)

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        return self.namespace_source(namespace)

    def objects(self, resource: str) -> list[Obj]:
        return self.objects_source(resource)

    def get_object(self, resource: str, key: str) -> Obj | None:
        return self.object_source(resource, key)

    def group_pods(self, namespace: str, name: str) -> list[Obj]:
        return self.group_source(namespace, name)

    # -- nodes -----------------------------------------------------------------------------

    def set_node(self, node: Obj) -> NodeInfo:
        name = node["metadata"]["name"]
        ni = self._nodes.get(name)
        if ni is None:
            ni = self._nodes[name] = NodeInfo(node)
            self._order = None
        else:
            zone_before = _zone(ni) if ni.node is not None else None
            labels_before = ni.labels if ni.node is not None else None
            self._index_node_anti_affinity(ni, -1)  # counted by its labels: again after
            relabelled = labels_before != ((node.get("metadata") or {}).get("labels") or {})
            if relabelled:
                self._index_node_topology(ni, -1)
            ni.set_node(node)
            self._index_node_anti_affinity(ni, 1)
            if relabelled:
                self._index_node_topology(ni, 1)
            if zone_before != _zone(ni):
                self._order = None
        return ni

    def remove_node(self, name: str) -> None:
        ni = self._nodes.get(name)
        if ni is None:
            return
        self._order = None
        if ni.pods:
            self._index_node_anti_affinity(ni, -1)
            self._index_node_topology(ni, -1)
            ni.node = None  # keep its pods accounted until they go (as upstream does)
            self._index_node_anti_affinity(ni, 1)
        else:
            del self._nodes[name]
            self._with_affinity.pop(name, None)
            self._with_anti_affinity.pop(name, None)

    # -- pods ------------------------------------------------------------------------------

    def _place(self, pi: PodInfo, node_name: str) -> None:
        ni = self._nodes.get(node_name)
        if ni is None:
            ni = self._nodes[node_name] = NodeInfo(name=node_name)
        if pi.uid not in ni.pods:
            self._index_labels(pi, node_name, 1)
        ni.add_pod(pi)
        if pi.has_required_anti_affinity:
            self._index_anti_affinity(pi, ni, 1)
        self._track(ni)

    def _unplace(self, pi: PodInfo, node_name: str) -> None:
        ni = self._nodes.get(node_name)
        if ni is None:
            return
        placed = ni.pods_with_required_anti_affinity.get(pi.uid)
        if placed is not None:
            self._index_anti_affinity(placed, ni, -1)
        stored = ni.pods.get(pi.uid)
        if stored is not None:
            self._index_labels(stored, node_name, -1)
        ni.remove_pod(pi)
        self._track(ni)
        if ni.node is None and not ni.pods:
            del self._nodes[node_name]

    def _track(self, ni: NodeInfo) -> None:
        if ni.pods_with_affinity:
            self._with_affinity[ni.name] = ni
        else:
            self._with_affinity.pop(ni.name, None)
        if ni.pods_with_required_anti_affinity:
            self._with_anti_affinity[ni.name] = ni
        else:
            self._with_anti_affinity.pop(ni.name, None)

    def assume(self, pod: PodInfo, node_name: str) -> PodInfo:
        """Account ``pod`` on ``node_name`` before its binding is written."""
        if pod.uid in self._pods:
            raise ValueError(f"pod {pod.key} is already in the cache")
        assumed = pod.on_node(node_name)
        self._pods[pod.uid] = _PodState(assumed, node_name, assumed=True)
        self._place(assumed, node_name)
        return assumed

    def forget(self, pod: PodInfo) -> None:
        """Undo :meth:`assume` (the binding failed)."""
        st = self._pods.get(pod.uid)
        if st is None or not st.assumed:
            return
        del self._pods[pod.uid]
        self._unplace(st.info, st.node)

    def is_assumed(self, uid: str) -> bool:
        st = self._pods.get(uid)
        return st is not None and st.assumed

    def has_pod(self, uid: str) -> bool:
        return uid in self._pods

    def set_pod(self, pod: Obj) -> None:
        """A bound pod seen by the informer (added or updated). A new version that
        changes nothing placement reads (its status, say, or the confirmation of an
        assumed pod) only replaces the object: the node keeps its generation."""
        uid = pod["metadata"]["uid"]
        node_name = pod["spec"]["nodeName"]
        st = self._pods.get(uid)
        if st is not None:
            if st.node == node_name and _same_placement(st.info, pod):
                if _start(st.info.pod) != _start(pod):
                    node = self._nodes.get(node_name)
                    if node is not None:
                        node.start_generation += 1
                st.info.swap(pod)
                st.assumed = False
                return
            self._unplace(st.info, st.node)
        pi = PodInfo(pod)
        self._pods[uid] = _PodState(pi, node_name)
        self._place(pi, node_name)

    def remove_pod(self, pod: Obj) -> None:
        st = self._pods.pop(pod["metadata"].get("uid", ""), None)
        if st is not None:
            self._unplace(st.info, st.node)

    def pod_count(self) -> int:
        return len(self._pods)
