"""The ReplicaSet controller's decisions: claiming, which pods go first, slow start,
expectations, pods from the template, and the status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kybernetes.aio.clock import FakeClock
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339
from kybernetes.api.selectors import from_label_selector
from kybernetes.controllers import podutil
from kybernetes.controllers.expectations import Expectations
from kybernetes.controllers.ownership import (
    CONTROLLER_INDEX,
    ORPHAN_INDEX,
    adopt_patch,
    controller_reference,
    controller_uid_index,
    decide,
    orphan_namespace_index,
    release_patch,
)
from kybernetes.controllers.replicaset import (
    ReplicaSetController,
    calculate_status,
    pod_from_template,
    slow_start_batch,
    status_changed,
)

Obj = dict[str, Any]
NOW = 1_700_000_000.0


def pod(name: str, *, node: str = "n1", phase: str = "Running", ready: bool = True,
        created: float = NOW - 100, ready_at: float | None = None, cost: int | None = None,
        restarts: int = 0, labels: dict[str, str] | None = None, owner: str | None = None,
        deleting: bool = False) -> Obj:
    md: Obj = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
               "creationTimestamp": rfc3339(created), "labels": labels or {"app": "web"}}
    if cost is not None:
        md["annotations"] = {podutil.DELETION_COST: str(cost)}
    if owner is not None:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                  "name": owner, "uid": f"uid-{owner}", "controller": True}]
    if deleting:
        md["deletionTimestamp"] = rfc3339(NOW)
    status: Obj = {"phase": phase,
                   "containerStatuses": [{"name": "c", "restartCount": restarts}],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "lastTransitionTime": rfc3339(ready_at or created)}]}
    return {"metadata": md, "spec": {"nodeName": node} if node else {}, "status": status}


def rs(name: str = "web", *, replicas: int = 3, min_ready: int = 0,
       conditions: list[Obj] | None = None, generation: int = 1) -> Obj:
    spec: Obj = {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                              "spec": {"containers": [{"name": "c", "image": "img"}]}}}
    if min_ready:
        spec["minReadySeconds"] = min_ready
    status: Obj = {"conditions": conditions} if conditions else {}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "generation": generation, "resourceVersion": "5"},
            "spec": spec, "status": status}


def names(pods: list[Obj]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


# -- which pods to delete -----------------------------------------------------------------


@pytest.mark.parametrize("pods,first", [
    pytest.param([pod("on-node"), pod("unscheduled", node="", phase="Pending", ready=False)],
                 "unscheduled", id="unscheduled-before-scheduled"),
    pytest.param([pod("running"), pod("pending", phase="Pending", ready=False)],
                 "pending", id="pending-before-running"),
    pytest.param([pod("running"), pod("unknown", phase="Unknown")],
                 "unknown", id="unknown-before-running"),
    pytest.param([pod("ready"), pod("not-ready", ready=False)],
                 "not-ready", id="not-ready-before-ready"),
    pytest.param([pod("cheap", cost=-5), pod("default")],
                 "cheap", id="lower-deletion-cost-first"),
    pytest.param([pod("old-ready", ready_at=NOW - 50), pod("new-ready", ready_at=NOW - 5)],
                 "new-ready", id="ready-for-less-time-first"),
    pytest.param([pod("calm"), pod("crashy", restarts=4)],
                 "crashy", id="more-restarts-first"),
    pytest.param([pod("older", created=NOW - 500), pod("newer", created=NOW - 10)],
                 "newer", id="newer-before-older"),
    pytest.param([pod("scheduled-not-ready", ready=False),
                  pod("unscheduled-ready", node="", phase="Running")],
                 "unscheduled-ready", id="node-outranks-readiness"),
])
def test_first_pod_to_delete(pods: list[Obj], first: str) -> None:
    """The least useful pod is deleted first, whatever order the pods come in."""
    assert names(podutil.pods_to_delete(pods, 1)) == [first]
    assert names(podutil.pods_to_delete(list(reversed(pods)), 1)) == [first]


def test_pods_on_crowded_nodes_go_first() -> None:
    """Among equals, a pod sharing its node with more related pods goes first."""
    a, b = pod("alone", node="n1"), pod("crowded", node="n2")
    related = [a, b, pod("sib-1", node="n2"), pod("sib-2", node="n2")]
    assert names(podutil.pods_to_delete([a, b], 1, related)) == ["crowded"]


def test_full_ranking() -> None:
    """unscheduled < pending < not ready < ready, then newer before older."""
    pods = [pod("ready-old", created=NOW - 900), pod("ready-new", created=NOW - 10),
            pod("not-ready", ready=False), pod("pending", phase="Pending", ready=False),
            pod("unscheduled", node="", phase="Pending", ready=False)]
    assert names(podutil.rank_for_deletion(pods)) == [
        "unscheduled", "pending", "not-ready", "ready-new", "ready-old"]


@pytest.mark.parametrize("count,expected", [
    pytest.param(0, 0, id="none"),
    pytest.param(2, 2, id="some"),
    pytest.param(9, 3, id="more-than-there-are"),
])
def test_pods_to_delete_count(count: int, expected: int) -> None:
    """Never more pods than asked for, nor than there are."""
    assert len(podutil.pods_to_delete([pod("a"), pod("b"), pod("c")], count)) == expected


@pytest.mark.parametrize("p,min_ready,available", [
    pytest.param(pod("a", ready_at=NOW - 5), 0, True, id="ready-no-min"),
    pytest.param(pod("a", ready=False), 0, False, id="not-ready"),
    pytest.param(pod("a", ready_at=NOW - 5), 10, False, id="ready-too-briefly"),
    pytest.param(pod("a", ready_at=NOW - 15), 10, True, id="ready-long-enough"),
])
def test_available(p: Obj, min_ready: int, available: bool) -> None:
    """Available means ready for at least minReadySeconds."""
    assert podutil.is_available(p, min_ready, NOW) is available


# -- claiming ------------------------------------------------------------------------------


@pytest.mark.parametrize("obj,owner_deleting,decision", [
    pytest.param(pod("p", owner="web"), False, "own", id="owned-and-matching"),
    pytest.param(pod("p", owner="web", labels={"app": "db"}), False, "release",
                 id="owned-not-matching"),
    pytest.param(pod("p", owner="web", labels={"app": "db"}), True, "ignore",
                 id="owner-being-deleted-keeps-it"),
    pytest.param(pod("p"), False, "adopt", id="orphan-matching"),
    pytest.param(pod("p", labels={"app": "db"}), False, "ignore", id="orphan-not-matching"),
    pytest.param(pod("p", deleting=True), False, "ignore", id="orphan-being-deleted"),
    pytest.param(pod("p"), True, "ignore", id="no-adoption-while-deleted"),
    pytest.param(pod("p", owner="other"), False, "ignore", id="someone-elses"),
])
def test_claim_decision(obj: Obj, owner_deleting: bool, decision: str) -> None:
    """Claiming adopts matching orphans and releases owned pods that stopped matching."""
    owner = rs()
    if owner_deleting:
        owner["metadata"]["deletionTimestamp"] = rfc3339(NOW)
    selector = from_label_selector(owner["spec"]["selector"])
    assert decide(owner, obj, selector) == decision


def test_adopt_and_release_patches() -> None:
    """Adoption adds a controller reference; release deletes it by uid; both carry the uid."""
    ref = controller_reference(rs(), "apps/v1", "ReplicaSet")
    assert ref == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                   "uid": "uid-web", "controller": True, "blockOwnerDeletion": True}
    p = pod("p")
    assert adopt_patch(ref, p) == {"metadata": {"ownerReferences": [ref], "uid": "uid-p"}}
    assert release_patch("uid-web", p) == {"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": "uid-web"}], "uid": "uid-p"}}


# -- slow start --------------------------------------------------------------------------


@pytest.mark.parametrize("count,fail_on,batches,successes", [
    pytest.param(10, None, [1, 2, 4, 3], 10, id="doubling"),
    pytest.param(1, None, [1], 1, id="one"),
    pytest.param(0, None, [], 0, id="nothing"),
    pytest.param(10, 2, [1, 2], 2, id="stops-after-failing-batch"),
    pytest.param(10, 0, [1], 0, id="first-fails"),
])
async def test_slow_start_batch(count: int, fail_on: int | None, batches: list[int],
                                successes: int) -> None:
    """Batches of 1, 2, 4, ... until a call fails; the failed batch finishes."""
    calls: list[int] = []
    seen: list[int] = []
    batch_of: list[int] = []

    async def fn() -> None:
        n = len(calls)
        calls.append(n)
        batch_of.append(len(seen))
        await asyncio.sleep(0)
        seen.append(n)
        if fail_on is not None and n == fail_on:
            raise RuntimeError("boom")

    done, err = await slow_start_batch(count, 1, fn)
    sizes = [batch_of.count(b) for b in sorted(set(batch_of))]
    assert sizes == batches
    assert done == successes
    assert (err is not None) == (fail_on is not None)


# -- expectations --------------------------------------------------------------------------


def test_expectations_wait_for_creations() -> None:
    """A key is not synced again until every expected creation was observed."""
    exp = Expectations(clock=FakeClock())
    assert exp.satisfied("ns/web")
    exp.expect_creations("ns/web", 2)
    assert not exp.satisfied("ns/web")
    exp.creation_observed("ns/web")
    assert not exp.satisfied("ns/web")
    exp.creation_observed("ns/web")
    assert exp.satisfied("ns/web")


def test_expectations_count_each_deletion_once() -> None:
    """A pod seen terminating and then deleted lowers the deletions once."""
    exp = Expectations(clock=FakeClock())
    exp.expect_deletions("ns/web", ["ns/a", "ns/b"])
    exp.deletion_observed("ns/web", "ns/a")
    exp.deletion_observed("ns/web", "ns/a")
    exp.deletion_observed("ns/web", "ns/other")
    assert exp.pending("ns/web") == (0, 1)
    exp.deletion_observed("ns/web", "ns/b")
    assert exp.satisfied("ns/web")


def test_expectations_expire() -> None:
    """Unmet expectations are given up on after the TTL."""
    clock = FakeClock()
    exp = Expectations(clock=clock, ttl=300)
    exp.expect_creations("ns/web", 1)
    clock.advance(299)
    assert not exp.satisfied("ns/web")
    clock.advance(2)
    assert exp.satisfied("ns/web")
    exp.delete("ns/web")
    assert exp.pending("ns/web") == (0, 0)


# -- pods from the template, and status ------------------------------------------------------


def test_pod_from_template() -> None:
    """A pod gets the template's labels and spec, the controller reference, and a
    generateName of ``<rs>-``."""
    owner = rs()
    owner["spec"]["template"]["metadata"]["annotations"] = {"a": "b"}
    ref = controller_reference(owner, "apps/v1", "ReplicaSet")
    p = pod_from_template(owner, ref)
    assert p["metadata"]["generateName"] == "web-"
    assert "name" not in p["metadata"]
    assert p["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert p["metadata"]["annotations"] == {"a": "b"}
    assert p["metadata"]["ownerReferences"] == [ref]
    assert p["spec"] == owner["spec"]["template"]["spec"]


def test_status_counts() -> None:
    """replicas, fullyLabeled (all template labels), ready and available are counted."""
    full = {"app": "web", "tier": "front"}
    pods = [pod("a", labels=full, ready_at=NOW - 60), pod("b", labels=full, ready_at=NOW - 2),
            pod("c", ready=False)]
    status = calculate_status(rs(min_ready=10), pods, None, now=NOW)
    assert status == {"replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                      "availableReplicas": 1}


def test_status_zero_counts_are_left_out() -> None:
    """As Go's omitempty: only replicas is always there."""
    assert calculate_status(rs(), [], None, now=NOW) == {"replicas": 0}


def test_replica_failure_condition() -> None:
    """A failed create adds ReplicaFailure; the next clean sync removes it."""
    status = calculate_status(rs(), [], ("FailedCreate", "pods \"x\" is forbidden"), now=NOW)
    assert status["conditions"] == [{
        "type": "ReplicaFailure", "status": "True", "lastTransitionTime": rfc3339(NOW),
        "reason": "FailedCreate", "message": "pods \"x\" is forbidden"}]
    failed = rs(conditions=status["conditions"])
    again = calculate_status(failed, [], ("FailedCreate", "other"), now=NOW + 5)
    assert again["conditions"] == status["conditions"]
    assert "conditions" not in calculate_status(failed, [], None, now=NOW + 10)


@pytest.mark.parametrize("old_status,new_status,changed", [
    pytest.param({"replicas": 3, "observedGeneration": 1}, {"replicas": 3}, False,
                 id="same"),
    pytest.param({"replicas": 2, "observedGeneration": 1}, {"replicas": 3}, True,
                 id="count"),
    pytest.param({"replicas": 3}, {"replicas": 3}, True, id="generation-not-observed"),
    pytest.param({"replicas": 3, "readyReplicas": 0, "observedGeneration": 1},
                 {"replicas": 3}, False, id="zero-equals-missing"),
])
def test_status_changed(old_status: Obj, new_status: Obj, changed: bool) -> None:
    """The status is written only when a count, the conditions or the generation moved."""
    obj = rs()
    obj["status"] = old_status
    assert status_changed(obj, new_status) is changed


# -- the controller against a fake API -------------------------------------------------------


class FakeClient:
    """Records creates, deletes and status writes; pods get names as the server would."""

    def __init__(self) -> None:
        self.created: list[Obj] = []
        self.deleted: list[str] = []
        self.statuses: list[Obj] = []
        self.fail_creates = False

    async def create(self, api_version: str, plural: str, obj: Obj, *,
                     namespace: str | None = None) -> Obj:
        if plural == "events":
            return obj
        if self.fail_creates:
            raise StatusError(403, "Forbidden", "exceeded quota")
        obj = {**obj, "metadata": {**obj["metadata"],
                                   "name": f"{obj['metadata']['generateName']}{len(self.created)}"}}
        self.created.append(obj)
        return obj

    async def delete(self, api_version: str, plural: str, name: str, *,
                     namespace: str | None = None) -> Obj:
        self.deleted.append(name)
        return {}

    async def update_status(self, api_version: str, plural: str, obj: Obj) -> Obj:
        self.statuses.append(obj["status"])
        return obj


def controller(client: FakeClient, rss: list[Obj], pods: list[Obj]) -> ReplicaSetController:
    c = ReplicaSetController(client, clock=FakeClock(NOW))  # type: ignore[arg-type]
    c.pods.add_index(CONTROLLER_INDEX, controller_uid_index)
    c.pods.add_index(ORPHAN_INDEX, orphan_namespace_index)
    c.replicasets.add_index(CONTROLLER_INDEX, controller_uid_index)
    c.pods._replace(pods, "1")
    c.replicasets._replace(rss, "1")
    return c


async def test_burst_not_doubled_before_the_informer_sees_it() -> None:
    """A second sync before the watch delivers the new pods creates nothing more."""
    client = FakeClient()
    c = controller(client, [rs(replicas=5)], [])
    await c.reconcile("ns/web")
    assert len(client.created) == 5
    await c.reconcile("ns/web")
    assert len(client.created) == 5
    for p in client.created:
        c._pod_added(p)
    assert c.expectations.satisfied("ns/web")


async def test_scale_down_deletes_least_useful() -> None:
    """Scaling 3 -> 1 deletes the pending pod and the newer ready one."""
    client = FakeClient()
    pods = [pod("old", owner="web", created=NOW - 900), pod("new", owner="web"),
            pod("pending", owner="web", phase="Pending", ready=False, node="")]
    c = controller(client, [rs(replicas=1)], pods)
    await c.reconcile("ns/web")
    assert sorted(client.deleted) == ["new", "pending"]
    assert client.statuses[-1]["replicas"] == 3  # they are still there until observed


async def test_failed_create_sets_condition_and_retries() -> None:
    """A refused create records ReplicaFailure and asks for a rate-limited retry."""
    client = FakeClient()
    client.fail_creates = True
    c = controller(client, [rs(replicas=2)], [])
    result = await c.reconcile("ns/web")
    assert result is not None and result.requeue
    assert client.statuses[-1]["conditions"][0]["reason"] == "FailedCreate"
    assert c.expectations.satisfied("ns/web")  # nothing is awaited from a failed create
