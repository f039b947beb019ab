"""The disruption controller's arithmetic: scaled values, expected and desired pods,
healthy pods, disrupted pods, and the PodDisruptionBudget status it writes."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.aio.clock import FakeClock
from kybernetes.api.meta import rfc3339
from kybernetes.client import NAMESPACE_INDEX, namespace_index
from kybernetes.controllers.disruption import (
    DELETION_TIMEOUT,
    DisruptionController,
    ScaleError,
    count_healthy,
    disrupted_pods,
    expected_and_desired,
    fail_safe_status,
    pdb_status,
    scaled_value,
    status_changed,
)

Obj = dict[str, Any]
NOW = 1_700_000_000.0


def pod(name: str, *, ready: bool = True, owner: tuple[str, str] | None = ("ReplicaSet", "rs"),
        deleting: bool = False) -> Obj:
    md: Obj = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": {"app": "db"}}
    if owner is not None:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                  "uid": f"uid-{owner[1]}", "controller": True}]
    if deleting:
        md["deletionTimestamp"] = rfc3339(NOW)
    return {"metadata": md, "status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}}


def pdb(*, min_available: int | str | None = None, max_unavailable: int | str | None = None,
        generation: int = 1, status: Obj | None = None) -> Obj:
    spec: Obj = {"selector": {"matchLabels": {"app": "db"}}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {"metadata": {"name": "db", "namespace": "ns", "uid": "uid-db",
                         "generation": generation, "resourceVersion": "5"},
            "spec": spec, **({"status": status} if status is not None else {})}


def workload(kind: str, name: str, replicas: int, owner: str | None = None) -> Obj:
    md: Obj = {"name": name, "namespace": "ns", "uid": f"uid-{name}"}
    if owner is not None:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment",
                                  "name": owner, "uid": f"uid-{owner}", "controller": True}]
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": md,
            "spec": {"replicas": replicas}}


SCALES = {"uid-rs": ("uid-rs", 5), "uid-sts": ("uid-sts", 2)}


def finder(ref: Obj, ns: str) -> tuple[str, int] | None:
    return SCALES.get(str(ref.get("uid")))


@pytest.mark.parametrize(("value", "total", "expected"), [
    pytest.param(2, 10, 2, id="int"),
    pytest.param("50%", 5, 3, id="percent-rounds-up"),
    pytest.param("100%", 3, 3, id="all"),
    pytest.param("0%", 3, 0, id="none"),
    pytest.param("3", 10, 3, id="numeric-string"),
])
def test_scaled_value(value: int | str, total: int, expected: int) -> None:
    """Percentages of the total, rounded up."""
    assert scaled_value(value, total) == expected


def test_scaled_value_rejects_garbage() -> None:
    """A string that is neither a number nor a percentage is an error."""
    with pytest.raises(ScaleError):
        scaled_value("lots", 3)


@pytest.mark.parametrize(("budget", "pods", "expected"), [
    pytest.param(pdb(min_available=2), [pod("a"), pod("b"), pod("c")], (3, 2),
                 id="min-int-counts-pods"),
    pytest.param(pdb(min_available="50%"), [pod("a"), pod("b")], (5, 3),
                 id="min-percent-of-scale"),
    pytest.param(pdb(max_unavailable=1), [pod("a"), pod("b")], (5, 4), id="max-int"),
    pytest.param(pdb(max_unavailable="30%"),
                 [pod("a"), pod("b", owner=("StatefulSet", "sts"))], (7, 4),
                 id="max-percent-two-controllers"),
    pytest.param(pdb(max_unavailable=9), [pod("a")], (5, 0), id="max-above-scale"),
    pytest.param(pdb(max_unavailable=1), [pod("a", owner=None), pod("b")], (5, 4),
                 id="unmanaged-left-out"),
    pytest.param(pdb(), [pod("a")], (0, 0), id="neither"),
])
def test_expected_and_desired(budget: Obj, pods: list[Obj], expected: tuple[int, int]) -> None:
    """minAvailable int against pods found; percentages and maxUnavailable against scale."""
    assert expected_and_desired(budget, pods, finder)[:2] == expected


def test_expected_needs_a_known_controller() -> None:
    """A pod whose controller cannot be found fails the computation."""
    with pytest.raises(ScaleError, match="found no controllers"):
        expected_and_desired(pdb(max_unavailable=1), [pod("a", owner=("ReplicaSet", "x"))],
                             finder)


@pytest.mark.parametrize(("pods", "disrupted", "expected"), [
    pytest.param([pod("a"), pod("b"), pod("c", ready=False)], {}, 2, id="ready-only"),
    pytest.param([pod("a"), pod("b", deleting=True)], {}, 1, id="deleting-not-healthy"),
    pytest.param([pod("a"), pod("b")], {"b": rfc3339(NOW - 10)}, 1, id="just-evicted"),
    pytest.param([pod("a"), pod("b")], {"b": rfc3339(NOW - DELETION_TIMEOUT - 1)}, 2,
                 id="eviction-expired"),
])
def test_count_healthy(pods: list[Obj], disrupted: dict[str, str], expected: int) -> None:
    """Ready pods that are neither being deleted nor just evicted."""
    assert count_healthy(pods, disrupted, NOW) == expected


@pytest.mark.parametrize(("recorded", "pods", "kept"), [
    pytest.param({"a": rfc3339(NOW - 10)}, [pod("a")], ["a"], id="pending"),
    pytest.param({"a": rfc3339(NOW - 10)}, [pod("a", deleting=True)], [], id="now-deleting"),
    pytest.param({"a": rfc3339(NOW - 10)}, [], [], id="gone"),
    pytest.param({"a": rfc3339(NOW - DELETION_TIMEOUT - 5)}, [pod("a")], [], id="expired"),
])
def test_disrupted_pods_cleanup(recorded: dict[str, str], pods: list[Obj],
                                kept: list[str]) -> None:
    """Evictions are forgotten once the pod goes, is being deleted, or too much time passed."""
    out, recheck = disrupted_pods(pdb(status={"disruptedPods": recorded}), pods, NOW)
    assert sorted(out) == kept
    assert (recheck is not None) == bool(kept)


@pytest.mark.parametrize(("healthy", "desired", "expected", "allowed", "reason"), [
    pytest.param(3, 2, 3, 1, "SufficientPods", id="one-allowed"),
    pytest.param(2, 2, 3, 0, "InsufficientPods", id="at-minimum"),
    pytest.param(1, 2, 3, 0, "InsufficientPods", id="below"),
    pytest.param(2, 0, 0, 0, "InsufficientPods", id="nothing-expected"),
])
def test_pdb_status(healthy: int, desired: int, expected: int, allowed: int,
                    reason: str) -> None:
    """disruptionsAllowed = currentHealthy - desiredHealthy, never negative, and the condition."""
    status = pdb_status(pdb(min_available=2, generation=4), current_healthy=healthy,
                        desired_healthy=desired, expected=expected, disrupted={}, now=NOW)
    assert (status["disruptionsAllowed"], status["observedGeneration"]) == (allowed, 4)
    [cond] = status["conditions"]
    assert (cond["type"], cond["reason"], cond["status"]) == \
        ("DisruptionAllowed", reason, "True" if allowed else "False")
    assert cond["lastTransitionTime"] == rfc3339(NOW) and cond["observedGeneration"] == 4


def test_condition_transition_time_kept_without_change() -> None:
    """The condition's lastTransitionTime only moves when its status changes."""
    first = pdb_status(pdb(min_available=1), current_healthy=3, desired_healthy=1, expected=3,
                       disrupted={}, now=NOW - 100)
    again = pdb_status(pdb(min_available=1, status=first), current_healthy=2,
                       desired_healthy=1, expected=3, disrupted={}, now=NOW)
    assert again["conditions"][0]["lastTransitionTime"] == rfc3339(NOW - 100)
    assert status_changed(pdb(min_available=1, status=first), again)
    assert not status_changed(pdb(min_available=1, status=again), again)


def test_fail_safe() -> None:
    """A failed computation allows no disruption and says why."""
    status = fail_safe_status(pdb(status={"disruptionsAllowed": 2}), "boom", NOW)
    assert status["disruptionsAllowed"] == 0
    assert (status["conditions"][0]["reason"], status["conditions"][0]["message"]) == \
        ("SyncFailed", "boom")


# -- the controller against a fake API -------------------------------------------------------


class FakeClient:
    def __init__(self) -> None:
        self.statuses: list[Obj] = []

    async def create(self, api_version: str, plural: str, obj: Obj, *,
                     namespace: str | None = None) -> Obj:
        return obj  # events

    async def update_status(self, api_version: str, plural: str, obj: Obj) -> Obj:
        self.statuses.append(obj["status"])
        return obj


def controller(client: FakeClient, budgets: list[Obj], pods: list[Obj],
               workloads: list[Obj]) -> DisruptionController:
    c = DisruptionController(client, clock=FakeClock(NOW))  # type: ignore[arg-type]
    c.pods.add_index(NAMESPACE_INDEX, namespace_index)
    c.pdbs.add_index(NAMESPACE_INDEX, namespace_index)
    c.pods._replace(pods, "1")
    c.pdbs._replace(budgets, "1")
    for inf, kind in ((c.replicasets, "ReplicaSet"), (c.deployments, "Deployment"),
                      (c.statefulsets, "StatefulSet")):
        inf._replace([w for w in workloads if w["kind"] == kind], "1")
    return c


@pytest.mark.parametrize(("budget", "workloads", "expected"), [
    pytest.param(pdb(max_unavailable=1), [workload("ReplicaSet", "rs", 3)], (3, 2, 1),
                 id="replicaset-scale"),
    pytest.param(pdb(max_unavailable="50%"),
                 [workload("ReplicaSet", "rs", 3, owner="dep"),
                  workload("Deployment", "dep", 4)], (4, 2, 1), id="deployment-scale"),
    pytest.param(pdb(min_available=2), [], (3, 2, 1), id="min-int-needs-no-controller"),
])
async def test_reconcile_writes_status(budget: Obj, workloads: list[Obj],
                                       expected: tuple[int, int, int]) -> None:
    """The scale comes from the pods' ReplicaSet, or the Deployment that owns it."""
    client = FakeClient()
    c = controller(client, [budget], [pod("a"), pod("b"), pod("c")], workloads)
    await c.reconcile("ns/db")
    status = client.statuses[-1]
    assert (status["expectedPods"], status["desiredHealthy"],
            status["disruptionsAllowed"]) == expected
    assert status["currentHealthy"] == 3


async def test_reconcile_fails_safe_without_controller() -> None:
    """maxUnavailable with a pod whose ReplicaSet is unknown allows nothing."""
    client = FakeClient()
    c = controller(client, [pdb(max_unavailable=1, status={"disruptionsAllowed": 1})],
                   [pod("a")], [])
    result = await c.reconcile("ns/db")
    assert result is not None and result.requeue
    assert client.statuses[-1]["disruptionsAllowed"] == 0
    assert client.statuses[-1]["conditions"][0]["reason"] == "SyncFailed"
