"""NodeAffinity: ``spec.nodeSelector`` and required node affinity filter nodes; preferred
terms score them by the sum of the weights of the terms a node matches."""

from __future__ import annotations

from typing import Any

from kybernetes.api.scheduling import NodeSelector, node_selector_term
from kybernetes.scheduler.framework import (
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    PreFilterResult,
    Status,
)
from kybernetes.scheduler.plugins.helpers import default_normalize
from kybernetes.scheduler.types import NodeInfo, PodInfo

REASON = "node(s) didn't match Pod's node affinity/selector"
ENFORCED_REASON = "node(s) didn't match scheduler-enforced node affinity"
_PREFERRED = "PreScoreNodeAffinity"


def required_selector_matches(pod: PodInfo, node: NodeInfo) -> bool:
    """Whether a node satisfies the pod's nodeSelector and required node affinity."""
    selector = pod.spec.get("nodeSelector")
    if selector:
        labels = node.labels
        for k, v in selector.items():
            if labels.get(k) != v:
                return False
    required = pod.required_node_affinity
    return required is None or required.matches(node.labels, node.name)


def _node_names(required: NodeSelector | None) -> set[str] | None:
    """Nodes named by ``matchFields metadata.name In`` in every term (a shortcut that
    avoids running filters on nodes that cannot match)."""
    if required is None or not required.terms:
        return None
    names: set[str] = set()
    for term in required.terms:
        term_names: set[str] | None = None
        for r in term.fields:
            if r.key == "metadata.name" and r.operator == "In":
                term_names = set(r.values) if term_names is None else term_names & set(r.values)
        if term_names is None:
            return None
        names |= term_names
    return names


class NodeAffinity:
    name = "NodeAffinity"
    filter_reads_pods = False

    def __init__(self, args: dict[str, Any]) -> None:
        added = (args.get("addedAffinity") or {})
        req = added.get("requiredDuringSchedulingIgnoredDuringExecution")
        self.added_required = NodeSelector.parse(req) if req else None
        self.added_preferred = [(int(t.get("weight", 0)), node_selector_term(t.get("preference")
                                                                             or {}))
                                for t in added.get(
                                    "preferredDuringSchedulingIgnoredDuringExecution") or ()]

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        if not pod.spec.get("nodeSelector") and pod.required_node_affinity is None \
                and self.added_required is None:
            return None, Status.skip()
        names = _node_names(pod.required_node_affinity)
        if names is not None and not names:
            return None, Status.unresolvable(REASON)
        return (PreFilterResult(names) if names is not None else None), None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if self.added_required is not None and \
                not self.added_required.matches(node.labels, node.name):
            return Status.unresolvable(ENFORCED_REASON)
        if not required_selector_matches(pod, node):
            return Status.unresolvable(REASON)
        return None

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                  ) -> Status | None:
        raw = ((pod.affinity.get("nodeAffinity") or {})
               .get("preferredDuringSchedulingIgnoredDuringExecution") or ())
        terms = [(int(t.get("weight", 0)), node_selector_term(t.get("preference") or {}))
                 for t in raw] + self.added_preferred
        if not terms:
            return Status.skip()
        state.write(_PREFERRED, terms)
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        terms = state.read(_PREFERRED) or ()
        return sum(w for w, t in terms if t.matches(node.labels, node.name))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        default_normalize(scores)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(ClusterEvent("Node", Action.ADD | Action.UPDATE_NODE_LABEL))]


def new(args: dict[str, Any], handle: Handle) -> NodeAffinity:
    return NodeAffinity(args)
