"""PodTopologySpread filters and scores nodes as kube-scheduler 1.32 does: the worked
examples of the "Pod Topology Spread Constraints" page, upstream's score tables, and the
preemption hooks (add_pod/remove_pod)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tests.unit.schedfakes import FakeHandle, run_filter, run_score

from kybernetes.scheduler.framework import Action, ClusterEvent, Code, CycleState
from kybernetes.scheduler.plugins import podtopologyspread
from kybernetes.scheduler.plugins.podtopologyspread import (
    ERR_REASON_CONSTRAINTS_NOT_MATCH,
    ERR_REASON_NODE_LABEL_NOT_MATCH,
    PodTopologySpread,
)
from kybernetes.scheduler.types import NodeInfo, PodInfo, make_node, make_pod

Obj = dict[str, Any]
HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
FOO = {"matchLabels": {"foo": "bar"}}


def node(name: str, zone: str | None = None, *, taints: list[Obj] | None = None,
         labels: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Obj:
    """A node in ``zone`` (label ``zone``), without the labels in ``drop``."""
    n = make_node(name, labels={**({"zone": zone} if zone else {}), **(labels or {})},
                  taints=taints)
    for key in drop:
        del n["metadata"]["labels"][key]
    return n


def spread(max_skew: int, key: str = "zone", when: str = "DoNotSchedule",
           selector: Obj | None = FOO, **extra: Any) -> Obj:
    c: Obj = {"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when, **extra}
    if selector is not None:
        c["labelSelector"] = selector
    return c


def incoming(*constraints: Obj, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    """The pod being scheduled (labelled foo=bar unless told)."""
    if constraints:
        spec["topologySpreadConstraints"] = list(constraints)
    return make_pod("mypod", labels={"foo": "bar"} if labels is None else labels, **spec)


def placed(name: str, node_name: str, labels: dict[str, str] | None = None,
           namespace: str = "default", terminating: bool = False) -> Obj:
    """A pod already on ``node_name`` (labelled foo=bar unless told)."""
    p = make_pod(name, namespace, labels={"foo": "bar"} if labels is None else labels,
                 nodeName=node_name)
    if terminating:
        p["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return p


def on(node_name: str, *names: str, **kw: Any) -> list[Obj]:
    return [placed(n, node_name, **kw) for n in names]


def plugin(handle: FakeHandle, args: dict[str, Any] | None = None) -> PodTopologySpread:
    return podtopologyspread.new(args or {}, handle)


def feasible(pod: Obj, nodes: list[Obj], pods: list[Obj], **handle_kw: Any) -> list[str]:
    handle = FakeHandle(nodes, pods, **handle_kw)
    st, statuses = run_filter(plugin(handle), pod, handle)
    assert st is None or st.code == Code.SKIP, st
    return sorted(n for n, s in statuses.items() if s is None)


# The docs' cluster: node1, node2 in zoneA, node3, node4 in zoneB.
FOUR_NODES = [node("node1", "zoneA"), node("node2", "zoneA"),
              node("node3", "zoneB"), node("node4", "zoneB")]
# Three foo=bar pods: two in zoneA, one in zoneB.
THREE_PODS = on("node1", "p1") + on("node2", "p2") + on("node3", "p3")
FIVE_NODES = [*FOUR_NODES, node("node5", "zoneC")]
NOT_ZONE_C = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [
        {"key": "zone", "operator": "NotIn", "values": ["zoneC"]}]}]}}}
TAINT = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("pod", "nodes", "pods", "want"),
    [
        pytest.param(incoming(spread(1)), FOUR_NODES, THREE_PODS, ["node3", "node4"],
                     id="docs-one-constraint-goes-to-zoneB"),
        pytest.param(incoming(spread(2)), FOUR_NODES, THREE_PODS,
                     ["node1", "node2", "node3", "node4"], id="docs-maxskew-2-anywhere"),
        pytest.param(incoming(spread(1), spread(1, HOST)), FOUR_NODES, THREE_PODS, ["node4"],
                     id="docs-two-constraints-node4"),
        pytest.param(incoming(spread(1), spread(1, HOST)),
                     [node("node1", "zoneA"), node("node2", "zoneA"), node("node3", "zoneB")],
                     on("node1", "p1", "p2") + on("node2", "p3") + on("node3", "p4", "p5"),
                     [], id="docs-conflicting-constraints-pending"),
        pytest.param(incoming(spread(1), affinity=NOT_ZONE_C), FIVE_NODES, THREE_PODS,
                     ["node3", "node4", "node5"],
                     id="docs-node-affinity-zoneC-not-a-domain"),
        pytest.param(incoming(spread(1, nodeAffinityPolicy="Ignore"), affinity=NOT_ZONE_C),
                     FIVE_NODES, THREE_PODS, ["node5"],
                     id="node-affinity-policy-ignore-counts-zoneC"),
        pytest.param(incoming(spread(1), nodeSelector={"zone": "zoneA"}), FIVE_NODES,
                     on("node1", "p1", "p2") + on("node3", "p3"),
                     ["node1", "node2", "node3", "node4", "node5"],
                     id="node-selector-leaves-other-zones-out-of-the-minimum"),
        pytest.param(incoming(spread(1)), FIVE_NODES, THREE_PODS, ["node5"],
                     id="empty-zone-is-the-minimum"),
        pytest.param(incoming(spread(2, minDomains=5)),
                     [node("n1", "z1"), node("n2", "z2"), node("n3", "z3")],
                     on("n1", "a", "b") + on("n2", "c", "d") + on("n3", "e", "f"), [],
                     id="docs-min-domains-5-of-3-minimum-is-0"),
        pytest.param(incoming(spread(2, minDomains=3)),
                     [node("n1", "z1"), node("n2", "z2"), node("n3", "z3")],
                     on("n1", "a", "b") + on("n2", "c", "d") + on("n3", "e", "f"),
                     ["n1", "n2", "n3"], id="min-domains-met"),
        pytest.param(incoming(spread(1, minDomains=3)),
                     [node("n1", "z1"), node("n2", "z2")], on("n1", "a") + on("n2", "b"), [],
                     id="min-domains-unmet-skew-against-0"),
        pytest.param(incoming(spread(1)), [node("n1", "z1"), node("n2", "z2")],
                     on("n1", "a") + on("n2", "b"), ["n1", "n2"], id="min-domains-default-1"),
        pytest.param(incoming(spread(1), labels={}), FOUR_NODES, THREE_PODS,
                     ["node1", "node2", "node3", "node4"],
                     id="pod-not-matching-own-selector-adds-nothing"),
        pytest.param(incoming(spread(1)), FOUR_NODES,
                     on("node1", "p1", namespace="other") + on("node2", "p2") + on("node3", "p3"),
                     ["node1", "node2", "node3", "node4"], id="other-namespace-not-counted"),
        pytest.param(incoming(spread(1)), FOUR_NODES,
                     on("node1", "p1", terminating=True) + on("node2", "p2") + on("node3", "p3"),
                     ["node1", "node2", "node3", "node4"], id="terminating-not-counted"),
        pytest.param(incoming(spread(1)), FOUR_NODES,
                     on("node1", "p1", labels={"foo": "baz"}) + on("node2", "p2")
                     + on("node3", "p3"),
                     ["node1", "node2", "node3", "node4"], id="non-matching-not-counted"),
        pytest.param(incoming(spread(1)), [*FOUR_NODES, node("nozone")],
                     THREE_PODS + on("nozone", "x1", "x2"), ["node3", "node4"],
                     id="node-without-key-not-counted"),
        pytest.param(incoming(spread(1, matchLabelKeys=["rev"]),
                              labels={"foo": "bar", "rev": "2"}), FOUR_NODES,
                     on("node1", "o1", "o2", labels={"foo": "bar", "rev": "1"})
                     + on("node3", "n1", labels={"foo": "bar", "rev": "2"}),
                     ["node1", "node2"], id="match-label-keys-only-this-revision"),
        pytest.param(incoming(spread(1, selector=None, matchLabelKeys=["rev"]),
                              labels={"rev": "2"}), FOUR_NODES,
                     on("node3", "n1", labels={"rev": "2"}), ["node1", "node2"],
                     id="match-label-keys-without-selector"),
        pytest.param(incoming(spread(1, selector=None)), FOUR_NODES, THREE_PODS,
                     ["node1", "node2", "node3", "node4"], id="no-selector-matches-nothing"),
        pytest.param(incoming(spread(1, selector={})), FOUR_NODES,
                     THREE_PODS + on("node4", "x", labels={"app": "other"}),
                     ["node1", "node2", "node3", "node4"], id="empty-selector-matches-all"),
        pytest.param(incoming(spread(1, nodeTaintsPolicy="Honor")),
                     [*FOUR_NODES, node("node5", "zoneC", taints=[TAINT])], THREE_PODS,
                     ["node3", "node4", "node5"], id="taints-policy-honor-skips-tainted-zone"),
        pytest.param(incoming(spread(1)),
                     [*FOUR_NODES, node("node5", "zoneC", taints=[TAINT])], THREE_PODS,
                     ["node5"], id="taints-policy-ignore-by-default"),
        pytest.param(incoming(spread(1, nodeTaintsPolicy="Honor"),
                              tolerations=[{"key": "dedicated", "operator": "Exists"}]),
                     [*FOUR_NODES, node("node5", "zoneC", taints=[TAINT])], THREE_PODS,
                     ["node5"], id="taints-policy-honor-tolerated"),
        pytest.param(incoming(spread(1), spread(1, "zone", "ScheduleAnyway",
                                                {"matchLabels": {"x": "y"}})),
                     FOUR_NODES, THREE_PODS, ["node3", "node4"],
                     id="soft-constraints-do-not-filter"),
    ],
)
def test_filter(pod: Obj, nodes: list[Obj], pods: list[Obj], want: list[str]) -> None:
    """Nodes that pass Filter after PreFilter counted the cluster."""
    assert feasible(pod, nodes, pods) == want


def test_filter_statuses() -> None:
    """Skew and missing topology label fail with upstream's codes and messages."""
    handle = FakeHandle([*FOUR_NODES, node("nozone")], THREE_PODS)
    _, statuses = run_filter(plugin(handle), incoming(spread(1)), handle)
    assert statuses["node3"] is None
    skewed = statuses["node1"]
    assert skewed is not None and skewed.code == Code.UNSCHEDULABLE
    assert skewed.reasons == [ERR_REASON_CONSTRAINTS_NOT_MATCH]
    missing = statuses["nozone"]
    assert missing is not None and missing.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert missing.reasons == ["node(s) didn't match pod topology spread constraints "
                               "(missing required label)"]
    assert missing.reasons[0] == ERR_REASON_NODE_LABEL_NOT_MATCH


@pytest.mark.parametrize(
    ("pod", "args", "objects"),
    [
        pytest.param(incoming(), {}, {}, id="no-constraints-no-owner"),
        pytest.param(incoming(spread(1, when="ScheduleAnyway")), {}, {}, id="only-soft"),
        pytest.param(incoming(), {}, {"services": [{"metadata": {"namespace": "default"},
                                                    "spec": {"selector": {"foo": "bar"}}}]},
                     id="system-defaults-are-soft"),
        pytest.param(incoming(), {"defaultingType": "List", "defaultConstraints": [
            spread(1, selector=None)]}, {}, id="list-defaults-without-selector"),
    ],
)
def test_pre_filter_skips(pod: Obj, args: dict[str, Any], objects: dict[str, list[Obj]]
                          ) -> None:
    """PreFilter returns Skip when the pod has no hard constraint."""
    handle = FakeHandle(FOUR_NODES, THREE_PODS, objects=objects)
    st, _ = run_filter(plugin(handle, args), pod, handle)
    assert st is not None and st.code == Code.SKIP


def rs_pod(**spec: Any) -> Obj:
    p = incoming(**spec)
    p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                         "name": "web-1", "controller": True}]
    return p


RS = {"metadata": {"namespace": "default", "name": "web-1"},
      "spec": {"selector": {"matchLabels": {"foo": "bar"}}}}
LIST_HARD = {"defaultingType": "List", "defaultConstraints": [spread(1, selector=None)]}


@pytest.mark.parametrize(
    ("pod", "objects", "want"),
    [
        pytest.param(rs_pod(), {"replicasets": [RS]}, ["node3", "node4"],
                     id="replicaset-selector"),
        pytest.param(incoming(), {"services": [{"metadata": {"namespace": "default"},
                                                "spec": {"selector": {"foo": "bar"}}}]},
                     ["node3", "node4"], id="service-selector"),
        pytest.param(incoming(), {"services": [{"metadata": {"namespace": "other"},
                                                "spec": {"selector": {"foo": "bar"}}}]},
                     ["node1", "node2", "node3", "node4"], id="service-other-namespace"),
        pytest.param(incoming(), {"services": [{"metadata": {"namespace": "default"},
                                                "spec": {"selector": {"foo": "nope"}}}]},
                     ["node1", "node2", "node3", "node4"], id="service-not-selecting-pod"),
        pytest.param(rs_pod(), {}, ["node1", "node2", "node3", "node4"],
                     id="owner-not-found"),
        pytest.param(rs_pod(topologySpreadConstraints=[spread(3)]), {"replicasets": [RS]},
                     ["node1", "node2", "node3", "node4"], id="own-constraints-win"),
    ],
)
def test_list_default_constraints(pod: Obj, objects: dict[str, list[Obj]], want: list[str]
                                  ) -> None:
    """List defaults apply to pods without constraints, selecting by Services and owner."""
    handle = FakeHandle(FOUR_NODES, THREE_PODS, objects=objects)
    _, statuses = run_filter(plugin(handle, LIST_HARD), pod, handle)
    assert sorted(n for n, s in statuses.items() if s is None) == want


def hosts(*names: str, zone: dict[str, str] | None = None) -> list[Obj]:
    return [node(n, (zone or {}).get(n)) for n in names]


def pods_on(spread_: dict[str, int], labels: dict[str, str] | None = None) -> list[Obj]:
    """``{"node-a": 2}``: that many foo=bar pods on each node."""
    return [placed(f"p-{n}-{i}-{sorted((labels or {}).items())}", n, labels)
            for n, k in spread_.items() for i in range(k)]


ABXY = hosts("node-a", "node-b", "node-x", "node-y",
             zone={"node-a": "zone1", "node-b": "zone1", "node-x": "zone2", "node-y": "zone2"})
NODE_KEYED = [node(n, labels={"node": n}) for n in ("node-a", "node-b", "node-c")]
NODE_KEYED_FOO = [node("node-a", labels={"node": "node-a", "foo": ""}),
                  node("node-b", labels={"node": "node-b", "foo": ""}),
                  node("node-c", labels={"node": "node-c"})]
SOFT = "ScheduleAnyway"
SVC = {"services": [{"metadata": {"namespace": "default"}, "spec": {"selector": {"foo": "bar"}}}]}


@pytest.mark.parametrize(
    ("pod", "nodes", "pods", "candidates", "want", "objects"),
    [
        pytest.param(incoming(spread(1, HOST, SOFT)), hosts("node-a", "node-b"), [], None,
                     {"node-a": 100, "node-b": 100}, {}, id="no-pods"),
        pytest.param(incoming(spread(1, HOST, SOFT)), hosts("node-a", "node-b"),
                     pods_on({"node-a": 2, "node-b": 1}), ["node-a"], {"node-a": 100}, {},
                     id="one-candidate"),
        pytest.param(incoming(spread(1, HOST, SOFT)), hosts("node-a", "node-b", "node-c", "node-d"),
                     pods_on({"node-a": 2, "node-b": 1, "node-d": 3}), None,
                     {"node-a": 20, "node-b": 60, "node-c": 100, "node-d": 0}, {},
                     id="hostname-2-1-0-3"),
        pytest.param(incoming(spread(1, HOST, SOFT, selector=None)),
                     hosts("node-a", "node-b", "node-c", "node-d"),
                     pods_on({"node-a": 2, "node-b": 1, "node-d": 3}), None,
                     {"node-a": 100, "node-b": 100, "node-c": 100, "node-d": 100}, {},
                     id="null-selector"),
        pytest.param(incoming(spread(2, HOST, SOFT)), hosts("node-a", "node-b", "node-c", "node-d"),
                     pods_on({"node-a": 2, "node-b": 1, "node-d": 3}), None,
                     {"node-a": 33, "node-b": 66, "node-c": 100, "node-d": 16}, {},
                     id="hostname-maxskew-2"),
        pytest.param(incoming(spread(3, HOST, SOFT)), hosts("node-a", "node-b", "node-c", "node-d"),
                     pods_on({"node-a": 4, "node-b": 3, "node-c": 2, "node-d": 1}), None,
                     {"node-a": 44, "node-b": 66, "node-c": 77, "node-d": 100}, {},
                     id="hostname-maxskew-3"),
        pytest.param(incoming(), hosts("node-a", "node-b", "node-c", "node-d"),
                     pods_on({"node-a": 4, "node-b": 3, "node-c": 2, "node-d": 1}), None,
                     {"node-a": 44, "node-b": 66, "node-c": 77, "node-d": 100}, SVC,
                     id="system-defaults-without-zones"),
        pytest.param(incoming(spread(1, HOST, SOFT)), hosts("node-a", "node-b", "node-x", "node-y"),
                     pods_on({"node-a": 4, "node-b": 2, "node-x": 1, "node-y": 3}),
                     ["node-a", "node-b", "node-x"],
                     {"node-a": 33, "node-b": 83, "node-x": 100}, {}, id="three-candidates"),
        pytest.param(incoming(spread(1, HOST, SOFT)),
                     [node("node-a"), node("node-b", drop=(HOST,)),
                      node("node-x"), node("node-y")],
                     pods_on({"node-a": 4, "node-b": 2, "node-x": 1, "node-y": 3}),
                     ["node-a", "node-b", "node-x"],
                     {"node-a": 16, "node-b": 0, "node-x": 100}, {},
                     id="candidate-without-key-scores-0"),
        pytest.param(incoming(spread(1, "zone", SOFT)), ABXY,
                     pods_on({"node-a": 4, "node-b": 2, "node-x": 1, "node-y": 3}),
                     ["node-a", "node-b", "node-x"],
                     {"node-a": 75, "node-b": 75, "node-x": 100}, {}, id="zone-three-candidates"),
        pytest.param(incoming(spread(1, "zone", SOFT), spread(1, HOST, SOFT)), ABXY,
                     pods_on({"node-a": 2, "node-b": 1, "node-x": 2, "node-y": 4}),
                     ["node-a", "node-x"], {"node-a": 100, "node-x": 63}, {},
                     id="zone-and-hostname-two-candidates"),
        pytest.param(incoming(spread(1, "zone", SOFT), spread(1, HOST, SOFT,
                                                              {"matchLabels": {"bar": ""}}),
                              labels={"foo": "bar", "bar": ""}), ABXY,
                     pods_on({"node-a": 1}) + pods_on({"node-b": 1}, {"foo": "bar", "bar": ""})
                     + pods_on({"node-y": 1}) + pods_on({"node-y": 1}, {"bar": ""}), None,
                     {"node-a": 60, "node-b": 20, "node-x": 100, "node-y": 60}, {},
                     id="zone-and-hostname-different-selectors"),
        pytest.param(incoming(spread(1, HOST, SOFT)), hosts("node-a", "node-b"),
                     on("node-a", "a1", namespace="ns1") + pods_on({"node-a": 1, "node-b": 2}),
                     None, {"node-a": 100, "node-b": 33}, {}, id="other-namespace"),
        pytest.param(incoming(spread(1, HOST, SOFT)), hosts("node-a", "node-b"),
                     on("node-a", "a1", terminating=True) + on("node-b", "b1"), None,
                     {"node-a": 100, "node-b": 0}, {}, id="terminating"),
        pytest.param(incoming(spread(2, "node", SOFT, minDomains=10)), NODE_KEYED,
                     pods_on({"node-a": 2, "node-b": 2, "node-c": 1}), None,
                     {"node-a": 75, "node-b": 75, "node-c": 100}, {},
                     id="min-domains-ignored-when-soft"),
        pytest.param(incoming(spread(1, "node", SOFT), nodeSelector={"foo": ""}),
                     NODE_KEYED_FOO, pods_on({"node-a": 2, "node-b": 1, "node-c": 1}), None,
                     {"node-a": 0, "node-b": 33, "node-c": 100}, {},
                     id="affinity-policy-honored"),
        pytest.param(incoming(spread(1, "node", SOFT, nodeAffinityPolicy="Ignore"),
                              nodeSelector={"foo": ""}),
                     NODE_KEYED_FOO, pods_on({"node-a": 2, "node-b": 1, "node-c": 1}), None,
                     {"node-a": 66, "node-b": 100, "node-c": 100}, {},
                     id="affinity-policy-ignored"),
        pytest.param(incoming(spread(1, "node", SOFT, nodeTaintsPolicy="Honor")),
                     [*NODE_KEYED[:2], node("node-c", labels={"node": "node-c"},
                                            taints=[TAINT])],
                     pods_on({"node-a": 2, "node-b": 1, "node-c": 1}), None,
                     {"node-a": 0, "node-b": 33, "node-c": 100}, {}, id="taints-policy-honored"),
        pytest.param(incoming(spread(1, "node", SOFT)),
                     [*NODE_KEYED[:2], node("node-c", labels={"node": "node-c"},
                                            taints=[TAINT])],
                     pods_on({"node-a": 2, "node-b": 1, "node-c": 1}), None,
                     {"node-a": 66, "node-b": 100, "node-c": 100}, {}, id="taints-policy-ignored"),
        pytest.param(incoming(spread(1, "zone", SOFT),
                              spread(1, HOST, SOFT, {"matchLabels": {"bar": ""}},
                                     matchLabelKeys=["baz"]),
                              labels={"foo": "bar", "bar": "", "baz": ""}), ABXY,
                     pods_on({"node-a": 1}) + pods_on({"node-b": 1},
                                                      {"foo": "bar", "bar": "", "baz": ""})
                     + pods_on({"node-x": 1}) + pods_on({"node-x": 1}, {"bar": ""})
                     + pods_on({"node-x": 1}, {"bar": "", "baz": ""}), None,
                     {"node-a": 60, "node-b": 20, "node-x": 60, "node-y": 100}, {},
                     id="match-label-keys-and-selector"),
    ],
)
def test_score(pod: Obj, nodes: list[Obj], pods: list[Obj], candidates: list[str] | None,
               want: dict[str, int], objects: dict[str, list[Obj]]) -> None:
    """Normalised scores: fewer matching pods in a node's domains score higher."""
    handle = FakeHandle(nodes, pods, objects=objects)
    assert run_score(plugin(handle), pod, handle, candidates) == want


@pytest.mark.parametrize(
    "pod",
    [
        pytest.param(incoming(), id="no-constraints"),
        pytest.param(incoming(spread(1)), id="only-hard"),
    ],
)
def test_pre_score_skips(pod: Obj) -> None:
    """PreScore returns Skip when the pod has no soft constraint."""
    handle = FakeHandle(FOUR_NODES, THREE_PODS)
    pl = plugin(handle)
    st = pl.pre_score(CycleState(), PodInfo(pod), handle.nodes())
    assert st is not None and st.code == Code.SKIP


def test_score_ordering_prefers_emptier_zone_then_node() -> None:
    """With the system defaults, the emptiest node of the emptiest zone wins."""
    nodes = [node("a1", labels={ZONE: "za"}),
             node("a2", labels={ZONE: "za"}),
             node("b1", labels={ZONE: "zb"}),
             node("b2", labels={ZONE: "zb"})]
    pods = pods_on({"a1": 3, "a2": 2, "b1": 2})
    handle = FakeHandle(nodes, pods, objects=SVC)
    scores = run_score(plugin(handle), incoming(), handle)
    assert max(scores, key=lambda n: scores[n]) == "b2"
    assert scores["b2"] > scores["b1"] > scores["a2"] > scores["a1"]


def prefiltered(pod: Obj, handle: FakeHandle) -> tuple[PodTopologySpread, CycleState, PodInfo]:
    pl = plugin(handle)
    state = CycleState()
    pi = PodInfo(pod)
    _, st = pl.pre_filter(state, pi, handle.nodes())
    assert st is None
    return pl, state, pi


def passing(pl: PodTopologySpread, state: CycleState, pi: PodInfo, handle: FakeHandle
            ) -> list[str]:
    return sorted(n.name for n in handle.nodes() if pl.filter(state, pi, n) is None)


@pytest.mark.parametrize(
    ("change", "want"),
    [
        pytest.param([("add", "node3", placed("x", "node3"))],
                     ["node1", "node2", "node3", "node4"], id="add-raises-the-minimum"),
        pytest.param([("add", "node1", placed("x", "node1"))], ["node3", "node4"],
                     id="add-to-the-fuller-zone"),
        pytest.param([("remove", "node1", THREE_PODS[0])],
                     ["node1", "node2", "node3", "node4"], id="remove-evens-out"),
        pytest.param([("remove", "node3", THREE_PODS[2])], ["node3", "node4"],
                     id="remove-from-the-minimum"),
        pytest.param([("add", "node3", placed("x", "node3", namespace="other"))],
                     ["node3", "node4"], id="add-other-namespace-ignored"),
        pytest.param([("add", "node3", placed("x", "node3", labels={"app": "y"}))],
                     ["node3", "node4"], id="add-non-matching-ignored"),
        pytest.param([("add", "node3", placed("x", "node3")),
                      ("add", "node4", placed("y", "node4"))],
                     ["node1", "node2"], id="minimum-zone-overtakes"),
    ],
)
def test_add_remove_pod(change: list[tuple[str, str, Obj]], want: list[str]) -> None:
    """add_pod/remove_pod update the PreFilter counts as if the cluster had changed."""
    handle = FakeHandle(FOUR_NODES, THREE_PODS)
    pl, state, pi = prefiltered(incoming(spread(1)), handle)
    for op, node_name, other in change:
        ni = handle.node(node_name)
        assert ni is not None
        fn = pl.add_pod if op == "add" else pl.remove_pod
        assert fn(state, pi, PodInfo(other), ni) is None
    assert passing(pl, state, pi, handle) == want


def test_add_pod_on_a_clone_leaves_the_original() -> None:
    """Preemption works on a cloned state; the original keeps its counts."""
    handle = FakeHandle(FOUR_NODES, THREE_PODS)
    pl, state, pi = prefiltered(incoming(spread(1)), handle)
    clone = state.clone()
    node3 = handle.node("node3")
    assert node3 is not None
    pl.add_pod(clone, pi, PodInfo(placed("x", "node3")), node3)
    assert passing(pl, clone, pi, handle) == ["node1", "node2", "node3", "node4"]
    assert passing(pl, state, pi, handle) == ["node3", "node4"]


def test_add_pod_without_pre_filter_state_is_a_no_op() -> None:
    """A skipped PreFilter leaves nothing to update."""
    handle = FakeHandle(FOUR_NODES, THREE_PODS)
    ni = handle.node("node1")
    assert ni is not None
    pl = plugin(handle)
    assert pl.add_pod(CycleState(), PodInfo(incoming()), PodInfo(placed("x", "node1")),
                      ni) is None


def test_counts_follow_node_changes_between_cycles() -> None:
    """Counts kept from one cycle are redone for a node whose pods changed."""
    handle = FakeHandle(FOUR_NODES, THREE_PODS)
    pl = plugin(handle)
    pod = incoming(spread(1))
    _, before = run_filter(pl, pod, handle)
    assert sorted(n for n, s in before.items() if s is None) == ["node3", "node4"]
    node4 = handle.node("node4")
    assert node4 is not None
    node4.add_pod(PodInfo(placed("x", "node4")))
    _, after = run_filter(pl, pod, handle)
    assert sorted(n for n, s in after.items() if s is None) == [
        "node1", "node2", "node3", "node4"]
    node1 = handle.node("node1")
    assert node1 is not None
    old = node1.pods["uid-p1"]
    node1.remove_pod(old)
    node1.add_pod(PodInfo(placed("p1", "node1", terminating=True)))
    _, third = run_filter(pl, pod, handle)
    assert sorted(n for n, s in third.items() if s is None) == ["node1", "node2"]


def test_counts_follow_node_relabels_and_removals() -> None:
    """A node moved to another zone, or gone, changes the counts kept from before."""
    handle = FakeHandle(FOUR_NODES, THREE_PODS)
    pl = plugin(handle)
    pod = incoming(spread(1))

    def ok() -> list[str]:
        _, statuses = run_filter(pl, pod, handle)
        return sorted(n for n, s in statuses.items() if s is None)

    assert ok() == ["node3", "node4"]
    node4, node3 = handle.node("node4"), handle.node("node3")
    assert node4 is not None and node3 is not None
    node4.set_node(node("node4", "zoneA"))
    assert ok() == ["node3"]
    node3.node = None  # deleted (FakeHandle.nodes() leaves it out)
    assert ok() == ["node1", "node2", "node4"]


def test_pods_with_different_node_affinity_do_not_share_counts() -> None:
    """Counts kept for one pod's inclusion tests are not reused for another's."""
    handle = FakeHandle(FIVE_NODES, THREE_PODS)
    pl = plugin(handle)
    plain, excluding_c = incoming(spread(1)), incoming(spread(1), affinity=NOT_ZONE_C)
    for _ in range(2):
        for pod, want in ((plain, ["node5"]), (excluding_c, ["node3", "node4", "node5"])):
            _, statuses = run_filter(pl, pod, handle)
            assert sorted(n for n, s in statuses.items() if s is None) == want


def test_kept_counts_match_a_fresh_count() -> None:
    """Through random pod and node changes, a long-lived plugin decides as a new one."""
    rng = random.Random(7)
    zones = ["z1", "z2", "z3"]
    names = [f"n{i}" for i in range(8)]
    handle = FakeHandle([node(n, rng.choice(zones)) for n in names], [],
                        objects={"replicasets": [RS]})
    kept = plugin(handle, {"defaultingType": "List", "defaultConstraints": [
        spread(1, HOST, SOFT, selector=None), spread(2, "zone", SOFT, selector=None)]})
    pods = [incoming(spread(1), spread(1, HOST)),
            incoming(spread(1, "zone", SOFT), spread(1, HOST, SOFT), labels={"foo": "bar"}),
            incoming(spread(1, nodeTaintsPolicy="Honor"), nodeSelector={"zone": "z1"}),
            rs_pod()]
    for step in range(60):
        ni = handle.node(rng.choice(names))
        assert ni is not None
        action = rng.randrange(4)
        if action == 0 or not ni.pods:
            labels = rng.choice([{"foo": "bar"}, {"foo": "baz"}, {}])
            ni.add_pod(PodInfo(placed(f"s{step}", ni.name, labels,
                                      namespace=rng.choice(["default", "other"]))))
        elif action == 1:
            ni.remove_pod(rng.choice(list(ni.pods.values())))
        elif action == 2:
            victim = rng.choice(list(ni.pods.values()))
            ni.remove_pod(victim)
            ni.add_pod(PodInfo(placed(victim.name, ni.name, victim.labels,
                                      namespace=victim.namespace, terminating=True)))
        else:
            ni.set_node(node(ni.name, rng.choice(zones),
                             taints=[TAINT] if rng.random() < 0.3 else None))
        fresh = plugin(handle, {"defaultingType": "List", "defaultConstraints": [
            spread(1, HOST, SOFT, selector=None), spread(2, "zone", SOFT, selector=None)]})
        for pod in pods:
            assert run_filter(kept, pod, handle) == run_filter(fresh, pod, handle), step
            assert run_score(kept, pod, handle) == run_score(fresh, pod, handle), step


def test_events_to_register() -> None:
    """Pod add/delete/label changes and node add/label/taint changes requeue the pod."""
    events = [e.event for e in plugin(FakeHandle()).events_to_register()]
    for wanted in (ClusterEvent("Pod", Action.ADD), ClusterEvent("Pod", Action.DELETE),
                   ClusterEvent("Pod", Action.UPDATE_POD_LABEL),
                   ClusterEvent("Node", Action.ADD),
                   ClusterEvent("Node", Action.UPDATE_NODE_LABEL),
                   ClusterEvent("Node", Action.UPDATE_NODE_TAINT)):
        assert any(e.covers(wanted) for e in events), wanted
    assert not any(e.covers(ClusterEvent("Node", Action.UPDATE_NODE_ALLOCATABLE))
                   for e in events)


def hint(resource: str, old: Any, new: Any, pod: Obj | None = None) -> bool:
    regs = plugin(FakeHandle()).events_to_register()
    fn = next(r.hint for r in regs if r.event.resource == resource)
    assert fn is not None
    return fn(PodInfo(pod or incoming(spread(1))), old, new)


def relabel(obj: Obj, labels: dict[str, str]) -> Obj:
    return {**obj, "metadata": {**obj["metadata"], "labels": labels}}


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        pytest.param(None, placed("x", "node1"), True, id="matching-pod-added"),
        pytest.param(None, placed("x", "node1", labels={"app": "y"}), False,
                     id="other-pod-added"),
        pytest.param(None, placed("x", "node1", namespace="other"), False,
                     id="other-namespace"),
        pytest.param(None, make_pod("x", labels={"foo": "bar"}), False, id="unscheduled"),
        pytest.param(placed("x", "node1"), None, True, id="matching-pod-deleted"),
        pytest.param(placed("x", "node1"), relabel(placed("x", "node1"), {}), True,
                     id="label-no-longer-matches"),
        pytest.param(placed("x", "node1"), relabel(placed("x", "node1"),
                                                   {"foo": "bar", "a": "b"}), False,
                     id="unrelated-label-change"),
        pytest.param(PodInfo(placed("x", "node1")), None, True, id="pod-info-objects"),
    ],
)
def test_pod_hint(old: Any, new: Any, want: bool) -> None:
    """The pod hint requeues only for changes to pods the constraints count."""
    assert hint("Pod", old, new) is want


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        pytest.param(None, node("n", "z1"), True, id="node-with-key-added"),
        pytest.param(None, node("n"), False, id="node-without-key-added"),
        pytest.param(node("n", "z1"), None, True, id="node-with-key-deleted"),
        pytest.param(node("n"), node("n", "z1"), True, id="key-label-added"),
        pytest.param(node("n", "z1"), node("n", "z2"), True, id="key-label-changed"),
        pytest.param(node("n", "z1"), node("n", "z1", labels={"other": "x"}), False,
                     id="other-label-changed"),
        pytest.param(node("n", "z1"), node("n", "z1", taints=[TAINT]), True,
                     id="taint-changed"),
        pytest.param(NodeInfo(node("n", "z1")), NodeInfo(node("n", "z2")), True,
                     id="node-info-objects"),
    ],
)
def test_node_hint(old: Any, new: Any, want: bool) -> None:
    """The node hint requeues when a node's topology labels or taints change."""
    assert hint("Node", old, new) is want


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param({"defaultingType": "Other"}, 'defaultingType: Unsupported value: "Other"',
                     id="bad-defaulting-type"),
        pytest.param({"defaultConstraints": [spread(1, selector=None)]},
                     "when .defaultConstraints are not empty", id="system-with-constraints"),
        pytest.param({"defaultingType": "List",
                      "defaultConstraints": [spread(0, selector=None)]},
                     "maxSkew: Invalid value: 0", id="zero-max-skew"),
        pytest.param({"defaultingType": "List", "defaultConstraints": [spread(1)]},
                     "labelSelector: Forbidden", id="selector-forbidden"),
        pytest.param({"defaultingType": "List",
                      "defaultConstraints": [spread(1, when="Maybe", selector=None)]},
                     'whenUnsatisfiable: Unsupported value: "Maybe"', id="bad-when"),
        pytest.param({"defaultingType": "List",
                      "defaultConstraints": [spread(1, selector=None),
                                             spread(2, selector=None)]},
                     "Duplicate value", id="duplicate"),
    ],
)
def test_new_rejects_bad_args(args: dict[str, Any], message: str) -> None:
    """Invalid PodTopologySpreadArgs fail plugin creation."""
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        podtopologyspread.new(args, FakeHandle())


def test_name() -> None:
    """The plugin names itself as upstream does."""
    assert plugin(FakeHandle()).name == "PodTopologySpread"
