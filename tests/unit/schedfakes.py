"""A fake cluster for scheduler plugin tests: nodes and pods in memory behind the
``Handle`` protocol, and helpers that run one plugin's extension points as the framework
would."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kybernetes.scheduler.framework import (
    Code,
    CycleState,
    FilterPlugin,
    PreFilterPlugin,
    PreScorePlugin,
    ScoreNormalizer,
    ScorePlugin,
    Status,
)
from kybernetes.scheduler.types import (
    NodeInfo,
    PodInfo,
    TermCounts,
    required_anti_affinity_counts,
)

Obj = dict[str, Any]


class FakeHandle:
    def __init__(self, nodes: Iterable[Obj] = (), pods: Iterable[Obj] = (), *,
                 namespaces: Mapping[str, Mapping[str, str]] | None = None,
                 objects: Mapping[str, list[Obj]] | None = None) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        for n in nodes:
            ni = NodeInfo(n)
            self._nodes[ni.name] = ni
        for p in pods:
            pi = PodInfo(p)
            ni = self._nodes.get(pi.node_name)
            if ni is None:
                ni = self._nodes[pi.node_name] = NodeInfo(name=pi.node_name)
            ni.add_pod(pi)
        self._namespaces = {k: dict(v) for k, v in (namespaces or {}).items()}
        self._objects = {k: list(v) for k, v in (objects or {}).items()}
        self.client: Any = None
        self.nominator: Any = None
        self.waiting_pods: dict[str, Any] = {}

    def nodes(self) -> list[NodeInfo]:
        return [n for n in self._nodes.values() if n.node is not None]

    def node(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    def nodes_with_affinity_pods(self) -> list[NodeInfo]:
        return [n for n in self.nodes() if n.pods_with_affinity]

    def nodes_with_required_anti_affinity_pods(self) -> list[NodeInfo]:
        return [n for n in self.nodes() if n.pods_with_required_anti_affinity]

    def required_anti_affinity_counts(self) -> TermCounts:
        return required_anti_affinity_counts(self.nodes())

    def pods_by_topology(self, namespace: str, key: str, value: str, topology: str
                         ) -> Mapping[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for n in self._nodes.values():
            k = sum(1 for p in n.pods.values()
                    if p.namespace == namespace and p.labels.get(key) == value)
            label = n.labels.get(topology)
            if k and label is not None and n.node is not None:
                out[(topology, label)] = out.get((topology, label), 0) + k
        return out

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        return self._namespaces.get(namespace)

    def objects(self, resource: str) -> list[Obj]:
        return list(self._objects.get(resource, []))


def run_filter(plugin: Any, pod: Obj, handle: FakeHandle
               ) -> tuple[Status | None, dict[str, Status | None]]:
    """PreFilter, then Filter on every node: (prefilter status, node name -> status)."""
    pi = PodInfo(pod)
    state = CycleState()
    nodes = handle.nodes()
    if isinstance(plugin, PreFilterPlugin):
        result, st = plugin.pre_filter(state, pi, nodes)
        if st is not None and st.code == Code.SKIP:
            return st, {n.name: None for n in nodes}
        if st is not None:
            return st, {}
        if result is not None and result.node_names is not None:
            nodes = [n for n in nodes if n.name in result.node_names]
    out: dict[str, Status | None] = {}
    assert isinstance(plugin, FilterPlugin)
    for n in nodes:
        out[n.name] = plugin.filter(state, pi, n)
    return None, out


def run_score(plugin: Any, pod: Obj, handle: FakeHandle, nodes: list[str] | None = None
              ) -> dict[str, int]:
    """PreFilter (when the plugin has it), PreScore, Score and NormalizeScore over
    ``nodes`` (default all): node name -> final score."""
    pi = PodInfo(pod)
    state = CycleState()
    infos = [n for n in handle.nodes() if nodes is None or n.name in nodes]
    if isinstance(plugin, PreFilterPlugin):
        plugin.pre_filter(state, pi, handle.nodes())
    if isinstance(plugin, PreScorePlugin):
        st = plugin.pre_score(state, pi, infos)
        if st is not None and st.code == Code.SKIP:
            return {n.name: 0 for n in infos}
        assert st is None, st
    assert isinstance(plugin, ScorePlugin)
    scores = [plugin.score(state, pi, n) for n in infos]
    if isinstance(plugin, ScoreNormalizer):
        plugin.normalize_score(state, pi, scores)
    return {n.name: s for n, s in zip(infos, scores, strict=True)}
