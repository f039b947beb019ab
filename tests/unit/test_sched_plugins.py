"""The basic scheduler plugins against upstream's documented behaviour: resources, node
name, cordons, ports, node affinity, taints and tolerations, scheduling gates."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.schedfakes import FakeHandle, run_filter, run_score

from kybernetes.api.scheduling import pod_requests
from kybernetes.scheduler.framework import Code
from kybernetes.scheduler.plugins import (
    nodeaffinity,
    nodename,
    nodeports,
    noderesources,
    nodeunschedulable,
    schedulinggates,
    tainttoleration,
)
from kybernetes.scheduler.types import PodInfo, make_node, make_pod

Obj = dict[str, Any]


def _reasons(statuses: dict[str, Any]) -> dict[str, list[str]]:
    return {n: (st.reasons if st is not None else []) for n, st in statuses.items()}


# -- requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "want"), [
    pytest.param({"containers": [{"resources": {"requests": {"cpu": "1", "memory": "1G"}}},
                                 {"resources": {"requests": {"cpu": "500m"}}}]},
                 {"cpu": 1500, "memory": 10**9}, id="containers-add-up"),
    pytest.param({"initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "1G"}}},
                                     {"resources": {"requests": {"cpu": "2",
                                                                 "memory": "3G"}}}],
                  "containers": [{"resources": {"requests": {"cpu": "2", "memory": "1G"}}},
                                 {"resources": {"requests": {"cpu": "1", "memory": "1G"}}}]},
                 {"cpu": 3000, "memory": 3 * 10**9}, id="init-containers-take-the-max"),
    pytest.param({"initContainers": [{"restartPolicy": "Always",
                                      "resources": {"requests": {"cpu": "1"}}},
                                     {"resources": {"requests": {"cpu": "2"}}}],
                  "containers": [{"resources": {"requests": {"cpu": "1"}}}]},
                 {"cpu": 3000}, id="sidecar-runs-beside-later-init-steps"),
    pytest.param({"containers": [{"resources": {"requests": {"nvidia.com/gpu": "2"}}}],
                  "overhead": {"cpu": "250m"}},
                 {"nvidia.com/gpu": 2, "cpu": 250}, id="extended-resources-and-overhead"),
])
def test_pod_requests(spec: Obj, want: dict[str, int]) -> None:
    """A pod's requests are computed as Kubernetes computes them."""
    assert pod_requests({"spec": spec}) == want


def test_non_zero_requests_for_scoring() -> None:
    """A container without requests counts 100m cpu and 200Mi memory when scoring."""
    pi = PodInfo(make_pod("p"))
    assert (pi.non_zero_cpu, pi.non_zero_memory) == (100, 200 * 1024 * 1024)
    assert pi.requests == {}


# -- NodeResourcesFit ---------------------------------------------------------------------

_FULL = [make_pod("old", uid="u-old", requests={"cpu": "3", "memory": "1Gi"},
                  nodeName="n1")]


@pytest.mark.parametrize(("requests", "node_kw", "want", "code"), [
    pytest.param({"cpu": "1"}, {}, [], None, id="fits"),
    pytest.param({"cpu": "2"}, {}, ["Insufficient cpu"], Code.UNSCHEDULABLE,
                 id="cpu-taken-by-other-pod"),
    pytest.param({"cpu": "2", "memory": "40Gi"}, {},
                 ["Insufficient cpu", "Insufficient memory"],
                 Code.UNSCHEDULABLE_AND_UNRESOLVABLE, id="memory-beyond-the-whole-node"),
    pytest.param({"nvidia.com/gpu": "1"}, {}, ["Insufficient nvidia.com/gpu"],
                 Code.UNSCHEDULABLE_AND_UNRESOLVABLE, id="gpu-on-a-node-without-gpus"),
    pytest.param({"nvidia.com/gpu": "1"}, {"extra": {"nvidia.com/gpu": "2"}}, [], None,
                 id="gpu-available"),
    pytest.param({}, {"pods": 1}, ["Too many pods"], Code.UNSCHEDULABLE, id="pod-count"),
])
def test_fit_filter(requests: dict[str, str], node_kw: Obj, want: list[str],
                    code: Code | None) -> None:
    """NodeResourcesFit lists every resource the node lacks, upstream's words."""
    handle = FakeHandle([make_node("n1", **node_kw)], _FULL)
    _, statuses = run_filter(noderesources.Fit({}), make_pod("p", requests=requests), handle)
    st = statuses["n1"]
    assert (st.reasons if st else []) == want
    assert (st.code if st else None) == code


@pytest.mark.parametrize(("strategy", "best"), [
    pytest.param({"type": "LeastAllocated"}, "empty", id="least-allocated-spreads"),
    pytest.param({"type": "MostAllocated"}, "busy", id="most-allocated-packs"),
    pytest.param({"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {
        "shape": [{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}},
        "busy", id="ratio-shape-favouring-full-nodes"),
    pytest.param({"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {
        "shape": [{"utilization": 0, "score": 10}, {"utilization": 100, "score": 0}]}},
        "empty", id="ratio-shape-favouring-empty-nodes"),
])
def test_fit_scoring_strategies(strategy: Obj, best: str) -> None:
    """The scoring strategy decides between spreading and bin packing."""
    handle = FakeHandle([make_node("empty"), make_node("busy")],
                        [make_pod("x", uid="ux", requests={"cpu": "2", "memory": "8Gi"},
                                  nodeName="busy")])
    plugin = noderesources.Fit({"scoringStrategy": strategy})
    scores = run_score(plugin, make_pod("p", requests={"cpu": "1", "memory": "1Gi"}), handle)
    assert max(scores, key=lambda n: scores[n]) == best
    assert all(0 <= s <= 100 for s in scores.values())


def test_least_allocated_score_value() -> None:
    """LeastAllocated: the mean over cpu and memory of the free fraction, times 100."""
    handle = FakeHandle([make_node("n", cpu="4", memory="4Gi")])
    pod = make_pod("p", requests={"cpu": "1", "memory": "2Gi"})
    assert run_score(noderesources.Fit({}), pod, handle) == {"n": (75 + 50) // 2}


def test_balanced_allocation_prefers_even_use() -> None:
    """BalancedAllocation scores 100 minus the spread of cpu and memory fractions."""
    handle = FakeHandle([make_node("even", cpu="4", memory="4Gi"),
                         make_node("skewed", cpu="4", memory="64Gi")])
    pod = make_pod("p", requests={"cpu": "2", "memory": "2Gi"})
    scores = run_score(noderesources.BalancedAllocation({}), pod, handle)
    assert scores["even"] == 100
    assert scores["skewed"] < scores["even"]


# -- NodeName, NodeUnschedulable, NodePorts -----------------------------------------------


def test_node_name() -> None:
    """A pod naming its node fits only there."""
    handle = FakeHandle([make_node("a"), make_node("b")])
    _, statuses = run_filter(nodename.NodeName(), make_pod("p", nodeName="b"), handle)
    assert _reasons(statuses) == {"a": [nodename.REASON], "b": []}


@pytest.mark.parametrize(("tolerations", "fits"), [
    pytest.param([], False, id="cordoned"),
    pytest.param([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                   "effect": "NoSchedule"}], True, id="tolerates-the-cordon"),
])
def test_node_unschedulable(tolerations: list[Obj], fits: bool) -> None:
    """A cordoned node takes only pods that tolerate the unschedulable taint."""
    handle = FakeHandle([make_node("a", unschedulable=True)])
    _, statuses = run_filter(nodeunschedulable.NodeUnschedulable(),
                             make_pod("p", tolerations=tolerations), handle)
    assert (statuses["a"] is None) == fits


def _port_pod(name: str, port: int, ip: str = "", proto: str = "TCP", **kw: Any) -> Obj:
    pod = make_pod(name, uid=f"u-{name}", **kw)
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": port,
                                              "hostIP": ip, "protocol": proto}]
    return pod


@pytest.mark.parametrize(("pod", "fits"), [
    pytest.param(_port_pod("p", 8080), False, id="same-port-any-ip"),
    pytest.param(_port_pod("p", 8081), True, id="other-port"),
    pytest.param(_port_pod("p", 8080, proto="UDP"), True, id="other-protocol"),
    pytest.param(_port_pod("p", 9090, ip="127.0.0.2"), True, id="other-ip"),
    pytest.param(_port_pod("p", 9090, ip="127.0.0.1"), False, id="same-ip"),
    pytest.param(_port_pod("p", 9090), False, id="wildcard-overlaps-specific-ip"),
])
def test_node_ports(pod: Obj, fits: bool) -> None:
    """Host ports conflict on the same protocol and port when host IPs overlap."""
    handle = FakeHandle([make_node("a")], [_port_pod("x", 8080, nodeName="a"),
                                           _port_pod("y", 9090, ip="127.0.0.1",
                                                     nodeName="a")])
    _, statuses = run_filter(nodeports.NodePorts(), pod, handle)
    assert (statuses["a"] is None) == fits


# -- NodeAffinity -------------------------------------------------------------------------

_ZONES = [make_node("a", labels={"zone": "z1", "gpu": "a100", "cores": "64"}),
          make_node("b", labels={"zone": "z2", "cores": "16"}),
          make_node("c", labels={"zone": "z3"})]


def _required(*terms: Obj) -> Obj:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(terms)}}}


@pytest.mark.parametrize(("spec", "fit"), [
    pytest.param({"nodeSelector": {"zone": "z2"}}, {"b"}, id="node-selector"),
    pytest.param({"affinity": _required({"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["z1", "z3"]}]})}, {"a", "c"}, id="in"),
    pytest.param({"affinity": _required({"matchExpressions": [
        {"key": "zone", "operator": "NotIn", "values": ["z1"]}]})}, {"b", "c"}, id="notin"),
    pytest.param({"affinity": _required({"matchExpressions": [
        {"key": "gpu", "operator": "Exists"}]})}, {"a"}, id="exists"),
    pytest.param({"affinity": _required({"matchExpressions": [
        {"key": "gpu", "operator": "DoesNotExist"}]})}, {"b", "c"}, id="does-not-exist"),
    pytest.param({"affinity": _required({"matchExpressions": [
        {"key": "cores", "operator": "Gt", "values": ["32"]}]})}, {"a"}, id="gt"),
    pytest.param({"affinity": _required({"matchExpressions": [
        {"key": "cores", "operator": "Lt", "values": ["32"]}]})}, {"b"}, id="lt"),
    pytest.param({"affinity": _required(
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]},
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z3"]}]})},
        {"a", "c"}, id="terms-are-ored"),
    pytest.param({"affinity": _required({"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["z1", "z2"]},
        {"key": "cores", "operator": "Lt", "values": ["32"]}]})}, {"b"},
        id="expressions-are-anded"),
    pytest.param({"affinity": _required({"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": ["c"]}]})}, {"c"},
        id="match-fields-node-name"),
    pytest.param({"nodeSelector": {"zone": "z1"}, "affinity": _required({"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["z2"]}]})}, set(),
        id="selector-and-affinity-both-apply"),
])
def test_node_affinity_filter(spec: Obj, fit: set[str]) -> None:
    """nodeSelector and required node affinity, every operator."""
    handle = FakeHandle(_ZONES)
    st, statuses = run_filter(nodeaffinity.NodeAffinity({}), make_pod("p", **spec), handle)
    if st is not None:
        assert not fit
        return
    assert {n for n, s in statuses.items() if s is None} == fit
    for _n, s in statuses.items():
        if s is not None:
            assert s.reasons == [nodeaffinity.REASON]
            assert s.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_node_affinity_preferred_scores() -> None:
    """Preferred terms score the sum of matching weights, normalised to 100."""
    handle = FakeHandle(_ZONES)
    pod = make_pod("p", affinity={"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 80, "preference": {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["z2"]}]}},
            {"weight": 20, "preference": {"matchExpressions": [
                {"key": "gpu", "operator": "Exists"}]}}]}})
    assert run_score(nodeaffinity.NodeAffinity({}), pod, handle) == {"a": 25, "b": 100, "c": 0}


# -- TaintToleration ----------------------------------------------------------------------

_GPU_TAINT = {"key": "gpu", "value": "true", "effect": "NoSchedule"}


@pytest.mark.parametrize(("tolerations", "fits"), [
    pytest.param([], False, id="untolerated"),
    pytest.param([{"key": "gpu", "operator": "Equal", "value": "true",
                   "effect": "NoSchedule"}], True, id="equal"),
    pytest.param([{"key": "gpu", "operator": "Exists"}], True, id="exists-any-effect"),
    pytest.param([{"operator": "Exists"}], True, id="empty-key-exists-tolerates-all"),
    pytest.param([{"key": "gpu", "operator": "Equal", "value": "false"}], False,
                 id="other-value"),
    pytest.param([{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}], False,
                 id="other-effect"),
])
def test_taint_toleration_filter(tolerations: list[Obj], fits: bool) -> None:
    """A NoSchedule taint keeps out pods that do not tolerate it, upstream's message."""
    handle = FakeHandle([make_node("a", taints=[_GPU_TAINT])])
    _, statuses = run_filter(tainttoleration.TaintToleration(),
                             make_pod("p", tolerations=tolerations), handle)
    if fits:
        assert statuses["a"] is None
    else:
        assert statuses["a"].reasons == ["node(s) had untolerated taint {gpu: true}"]


def test_taint_toleration_prefers_fewer_prefer_no_schedule_taints() -> None:
    """PreferNoSchedule taints lower a node's score."""
    soft = {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}
    handle = FakeHandle([make_node("clean"), make_node("one", taints=[soft]),
                         make_node("two", taints=[soft, {**soft, "key": "old"}])])
    scores = run_score(tainttoleration.TaintToleration(), make_pod("p"), handle)
    assert scores == {"clean": 100, "one": 50, "two": 0}
    tolerant = make_pod("q", tolerations=[{"key": "spot", "operator": "Exists"}])
    assert run_score(tainttoleration.TaintToleration(), tolerant, handle)["one"] == 100


def test_scheduling_gates() -> None:
    """A gated pod does not enter the active queue; its gate names are reported."""
    plugin = schedulinggates.SchedulingGates()
    gated = PodInfo(make_pod("p", schedulingGates=[{"name": "example.com/a"},
                                                   {"name": "b"}]))
    st = plugin.pre_enqueue(gated)
    assert st is not None and st.message == "waiting for scheduling gates: [example.com/a b]"
    assert plugin.pre_enqueue(PodInfo(make_pod("q"))) is None
