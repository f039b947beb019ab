"""The DaemonSet controller's decisions: which nodes fit, the pods it makes, the next
step (create, delete, rolling update with maxUnavailable or maxSurge) and the status."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.controllers.daemonset import (
    calculate_status,
    new_pod,
    node_fits,
    plan,
    rolling_limits,
    target_node,
)

Obj = dict[str, Any]
NOW = 1_700_000_000.0


def node(name: str, *, labels: dict[str, str] | None = None,
         taints: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints} if taints else {}}


def ds(*, pod_spec: Obj | None = None, strategy: Obj | None = None) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ns", "uid": "uid-agent",
                         "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "updateStrategy": strategy or {"type": "RollingUpdate"},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}],
                                           **(pod_spec or {})}}}}


def pod(name: str, node_name: str, *, hash_: str = "h1", ready: bool = True,
        phase: str = "Running") -> Obj:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": name,
                         "labels": {"app": "agent", "controller-revision-hash": hash_}},
            "spec": {"nodeName": node_name},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False",
                 "lastTransitionTime": "2023-11-14T22:00:00Z"}]}}


NO_SCHEDULE = [{"key": "k", "value": "v", "effect": "NoSchedule"}]
NO_EXECUTE = [{"key": "k", "value": "v", "effect": "NoExecute"}]
AFFINITY = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [
        {"key": "gpu", "operator": "In", "values": ["yes"]}]}]}}}}


@pytest.mark.parametrize("pod_spec,n,fits", [
    pytest.param({}, node("a"), (True, True), id="plain"),
    pytest.param({"nodeSelector": {"gpu": "yes"}}, node("a"), (False, False),
                 id="selector-miss"),
    pytest.param({"nodeSelector": {"gpu": "yes"}}, node("a", labels={"gpu": "yes"}),
                 (True, True), id="selector-match"),
    pytest.param(AFFINITY, node("a"), (False, False), id="affinity-miss"),
    pytest.param(AFFINITY, node("a", labels={"gpu": "yes"}), (True, True),
                 id="affinity-match"),
    pytest.param({}, node("a", taints=NO_SCHEDULE), (False, True), id="no-schedule"),
    pytest.param({}, node("a", taints=NO_EXECUTE), (False, False), id="no-execute"),
    pytest.param({"tolerations": [{"key": "k", "operator": "Exists"}]},
                 node("a", taints=NO_EXECUTE), (True, True), id="tolerated"),
    pytest.param({}, node("a", taints=[{"key": "node.kubernetes.io/unschedulable",
                                        "effect": "NoSchedule"}]),
                 (True, True), id="default-toleration"),
])
def test_node_fits(pod_spec: Obj, n: Obj, fits: tuple[bool, bool]) -> None:
    """(should run, should continue running) from selector, affinity and taints."""
    assert node_fits(ds(pod_spec=pod_spec)["spec"]["template"], n) == fits


def test_new_pod_is_pinned_through_the_scheduler() -> None:
    """The pod requires its node by matchFields and tolerates the default taints."""
    p = new_pod(ds(pod_spec=AFFINITY), "n1", "h1")
    assert "nodeName" not in p["spec"]
    assert target_node(p) == "n1"
    assert p["metadata"]["labels"]["controller-revision-hash"] == "h1"
    keys = {(t["key"], t["effect"]) for t in p["spec"]["tolerations"]}
    assert ("node.kubernetes.io/not-ready", "NoExecute") in keys
    assert ("node.kubernetes.io/pid-pressure", "NoSchedule") in keys


@pytest.mark.parametrize("strategy,desired,limits", [
    pytest.param({}, 10, (0, 1), id="defaults"),
    pytest.param({"maxUnavailable": "25%"}, 10, (0, 2), id="percent-down"),
    pytest.param({"maxSurge": "25%", "maxUnavailable": 0}, 10, (3, 0), id="surge-up"),
    pytest.param({"maxUnavailable": 0}, 10, (0, 1), id="never-both-zero"),
])
def test_rolling_limits(strategy: Obj, desired: int, limits: tuple[int, int]) -> None:
    """maxSurge rounds up, maxUnavailable down."""
    d = ds(strategy={"type": "RollingUpdate", "rollingUpdate": strategy})
    assert rolling_limits(d, desired) == limits


NODES = [node("a"), node("b"), node("c", taints=NO_EXECUTE)]
SURGE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


@pytest.mark.parametrize("d,pods,create,delete", [
    pytest.param(ds(), [], ["a", "b"], [], id="one-per-eligible-node"),
    pytest.param(ds(), [pod("p1", "a"), pod("p2", "a"), pod("p3", "c")], ["b"],
                 ["p2", "p3"], id="duplicates-and-misscheduled"),
    pytest.param(ds(), [pod("p1", "a", phase="Failed"), pod("p2", "b")], [], ["p1"],
                 id="failed-replaced-later"),
    pytest.param(ds(), [pod("p1", "gone", hash_="h2")], ["a", "b"], ["p1"],
                 id="node-gone"),
    pytest.param(ds(), [pod("p1", "a", hash_="h0"), pod("p2", "b", hash_="h0")], [],
                 ["p1"], id="rolling-max-unavailable-1"),
    pytest.param(ds(), [pod("p1", "a", hash_="h0", ready=False), pod("p2", "b", hash_="h0")],
                 [], ["p1"], id="rolling-unavailable-old-first"),
    pytest.param(ds(strategy={"type": "OnDelete"}),
                 [pod("p1", "a", hash_="h0"), pod("p2", "b", hash_="h0")], [], [],
                 id="on-delete"),
    pytest.param(ds(strategy=SURGE), [pod("p1", "a", hash_="h0"), pod("p2", "b", hash_="h0")],
                 ["a"], [], id="surge-new-first"),
    pytest.param(ds(strategy=SURGE),
                 [pod("p1", "a", hash_="h0"), pod("p3", "a", ready=False),
                  pod("p2", "b", hash_="h0")], [], [], id="surge-waits"),
    pytest.param(ds(strategy=SURGE),
                 [pod("p1", "a", hash_="h0"), pod("p3", "a"), pod("p2", "b", hash_="h0")],
                 ["b"], ["p1"], id="surge-old-goes-when-new-available"),
])
def test_plan(d: Obj, pods: list[Obj], create: list[str], delete: list[str]) -> None:
    """Creates and deletes of one sync (current hash ``h1``)."""
    step = plan(d, NODES, pods, "h1", now=NOW)
    assert step.create == create
    assert [p["metadata"]["name"] for p in step.delete] == delete


def test_status() -> None:
    """Counts over eligible nodes; a pod on an ineligible node is misscheduled."""
    pods = [pod("p1", "a"), pod("p2", "b", hash_="h0", ready=False), pod("p3", "c")]
    assert calculate_status(ds(), NODES, pods, "h1", now=NOW) == {
        "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
        "numberAvailable": 1, "numberUnavailable": 1, "updatedNumberScheduled": 1,
        "numberMisscheduled": 1}
