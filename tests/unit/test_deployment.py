"""Deployment rollouts as arithmetic: surge and unavailability, the template hash, which
ReplicaSets grow and shrink in each step, proportional scaling, revisions, conditions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kybernetes.aio.clock import FakeClock
from kybernetes.api.meta import rfc3339
from kybernetes.client import NAMESPACE_INDEX, namespace_index
from kybernetes.controllers import revisions as rev
from kybernetes.controllers import rollout as r
from kybernetes.controllers import rolloutstatus as st
from kybernetes.controllers.deployment import DeploymentController
from kybernetes.controllers.ownership import (
    CONTROLLER_INDEX,
    ORPHAN_INDEX,
    controller_uid_index,
    orphan_namespace_index,
)

Obj = dict[str, Any]
NOW = 1_700_000_000.0


def deployment(replicas: int = 10, *, surge: int | str | None = 0,
               unavailable: int | str | None = 0, strategy: str = "RollingUpdate",
               generation: int = 1, status: Obj | None = None, deadline: int | None = 600,
               annotations: dict[str, str] | None = None) -> Obj:
    spec: Obj = {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"type": strategy},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "v1"}]}}}
    if strategy == "RollingUpdate":
        spec["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    if deadline is not None:
        spec["progressDeadlineSeconds"] = deadline
    md: Obj = {"name": "web", "namespace": "ns", "uid": "uid-web", "generation": generation}
    if annotations:
        md["annotations"] = annotations
    return {"metadata": md, "spec": spec, "status": status or {}}


def rs(name: str, replicas: int, *, available: int | None = None, age: float = 0,
       max_replicas: int | None = None, desired: int | None = None,
       revision: int | None = None, status_replicas: int | None = None) -> Obj:
    ann: dict[str, str] = {}
    if max_replicas is not None:
        ann[r.ANN_MAX_REPLICAS] = str(max_replicas)
    if desired is not None:
        ann[r.ANN_DESIRED_REPLICAS] = str(desired)
    if revision is not None:
        ann[rev.ANN_REVISION] = str(revision)
    avail = replicas if available is None else available
    return {"metadata": {"name": name, "uid": f"uid-{name}", "annotations": ann,
                         "creationTimestamp": rfc3339(NOW - 1000 + age)},
            "spec": {"replicas": replicas,
                     "template": {"metadata": {"labels": {"app": "web",
                                                          rev.HASH_LABEL: name}},
                                  "spec": {"containers": [{"name": "c", "image": name}]}}},
            "status": {"replicas": replicas if status_replicas is None else status_replicas,
                       "readyReplicas": avail, "availableReplicas": avail}}


def sizes(plan: list[tuple[Obj, int]]) -> dict[str, int]:
    return {rs_["metadata"]["name"]: size for rs_, size in plan}


# -- surge and unavailability -----------------------------------------------------------


@pytest.mark.parametrize("value,of,round_up,expected", [
    pytest.param(3, 10, True, 3, id="int"),
    pytest.param("25%", 10, True, 3, id="percent-surge-rounds-up"),
    pytest.param("25%", 10, False, 2, id="percent-unavailable-rounds-down"),
    pytest.param("25%", 3, True, 1, id="small-up"),
    pytest.param("25%", 3, False, 0, id="small-down"),
    pytest.param("100%", 7, False, 7, id="all"),
    pytest.param("0%", 7, True, 0, id="zero-percent"),
    pytest.param(None, 7, True, 0, id="unset"),
])
def test_scaled_value(value: int | str | None, of: int, round_up: bool, expected: int) -> None:
    """Ints are taken as they are; percentages of the replicas round as upstream."""
    assert r.scaled_value(value, of, round_up=round_up) == expected


@pytest.mark.parametrize("value", [
    pytest.param("3", id="string-without-percent"),
    pytest.param("x%", id="not-a-number"),
    pytest.param(True, id="bool"),
])
def test_scaled_value_rejects(value: Any) -> None:
    """Anything but an int or an ``N%`` string is an error."""
    with pytest.raises(ValueError):
        r.scaled_value(value, 10, round_up=True)


@pytest.mark.parametrize("surge,unavailable,desired,expected", [
    pytest.param("25%", "25%", 10, (3, 2), id="defaults-10"),
    pytest.param("25%", "25%", 3, (1, 0), id="defaults-3"),
    pytest.param(0, "10%", 5, (0, 1), id="both-zero-means-one-unavailable"),
    pytest.param(0, 0, 5, (0, 1), id="explicit-zero-zero"),
    pytest.param(2, 0, 5, (2, 0), id="surge-only"),
    pytest.param("50%", "50%", 1, (1, 0), id="one-replica"),
])
def test_resolve_fenceposts(surge: int | str, unavailable: int | str, desired: int,
                            expected: tuple[int, int]) -> None:
    """maxSurge rounds up, maxUnavailable down, and both zero becomes (0, 1)."""
    assert r.resolve_fenceposts(surge, unavailable, desired) == expected


@pytest.mark.parametrize("d,surge,unavailable", [
    pytest.param(deployment(10, surge="25%", unavailable="25%"), 3, 2, id="rolling"),
    pytest.param(deployment(2, surge=0, unavailable=5), 0, 2, id="unavailable-capped"),
    pytest.param(deployment(0, surge=1, unavailable=1), 1, 0, id="zero-replicas"),
    pytest.param(deployment(10, strategy="Recreate"), 0, 0, id="recreate"),
])
def test_max_surge_and_unavailable(d: Obj, surge: int, unavailable: int) -> None:
    """A Deployment's surge and unavailability as the controller uses them."""
    assert (r.max_surge(d), r.max_unavailable(d)) == (surge, unavailable)


# -- the template hash --------------------------------------------------------------------


TEMPLATE = {"metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "c", "image": "python:3.11",
                                     "ports": [{"containerPort": 5000}]}]}}


def test_hash_is_pinned() -> None:
    """The hash of a known template does not change between versions of this code."""
    assert rev.template_hash(TEMPLATE) == "86cd76857"
    assert rev.template_hash(TEMPLATE, 1) == "86b8f9f95b"


@pytest.mark.parametrize("variant", [
    pytest.param({"spec": TEMPLATE["spec"], "metadata": TEMPLATE["metadata"]}, id="key-order"),
    pytest.param({**TEMPLATE, "metadata": {**TEMPLATE["metadata"], "creationTimestamp": None}},
                 id="null-creation-timestamp"),
    pytest.param({**TEMPLATE, "metadata": {**TEMPLATE["metadata"], "annotations": {}}},
                 id="empty-annotations"),
    pytest.param({**TEMPLATE, "metadata": {"labels": {**TEMPLATE["metadata"]["labels"],
                                                      rev.HASH_LABEL: "abc"}}},
                 id="hash-label-ignored"),
])
def test_hash_is_stable(variant: Obj) -> None:
    """Forms of the same template that Go would print alike hash alike."""
    assert rev.template_hash(variant) == rev.template_hash(TEMPLATE)
    assert rev.equal_ignore_hash(variant, TEMPLATE)


@pytest.mark.parametrize("variant", [
    pytest.param({**TEMPLATE, "spec": {"containers": [{"name": "c", "image": "python:3.12",
                                                       "ports": [{"containerPort": 5000}]}]}},
                 id="image"),
    pytest.param({**TEMPLATE, "metadata": {"labels": {"app": "web"}}}, id="labels"),
    pytest.param({**TEMPLATE, "metadata": {**TEMPLATE["metadata"], "annotations": {
        "kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}, id="restart"),
])
def test_hash_changes_with_template(variant: Obj) -> None:
    """Any real change to the template gives another hash."""
    assert rev.template_hash(variant) != rev.template_hash(TEMPLATE)
    assert not rev.equal_ignore_hash(variant, TEMPLATE)


def test_hash_alphabet_and_collisions() -> None:
    """Hashes use the safe alphabet only; each collision count gives a new one."""
    hashes = {rev.template_hash(TEMPLATE, n) for n in (None, 0, 1, 2, 3)}
    assert len(hashes) == 5
    assert all(set(h) <= set("bcdfghjklmnpqrstvwxz2456789") for h in hashes)


# -- which ReplicaSet is new ---------------------------------------------------------------


def test_find_new_and_old() -> None:
    """The new ReplicaSet is the oldest one with the Deployment's template."""
    d = deployment()
    same = copy.deepcopy(d["spec"]["template"])
    same["metadata"]["labels"][rev.HASH_LABEL] = "h1"
    newer_twin = rs("twin", 1, age=50)
    newer_twin["spec"]["template"] = copy.deepcopy(same)
    match = rs("match", 1, age=10)
    match["spec"]["template"] = same
    other = rs("other", 1, age=0)
    found = rev.find_new(d, [newer_twin, other, match])
    assert found is match
    assert [x["metadata"]["name"] for x in rev.find_old([newer_twin, other, match], found)] == [
        "twin", "other"]
    assert rev.find_new(d, [other]) is None


# -- rolling update steps -----------------------------------------------------------------


@pytest.mark.parametrize("d,all_rss,new,expected", [
    pytest.param(deployment(10, surge=2), [rs("old", 10)], rs("new", 0), 2,
                 id="grow-by-surge"),
    pytest.param(deployment(10, surge=2), [rs("old", 10)], rs("new", 2), 2,
                 id="at-max-total"),
    pytest.param(deployment(10, surge="25%"), [rs("old", 5)], rs("new", 5), 8,
                 id="room-after-scale-down"),
    pytest.param(deployment(10, surge=20), [rs("old", 10)], rs("new", 0), 10,
                 id="never-past-replicas"),
    pytest.param(deployment(10, surge=2), [rs("old", 3)], rs("new", 12), 10,
                 id="shrink-if-too-big"),
    pytest.param(deployment(10, strategy="Recreate"), [rs("old", 10)], rs("new", 0), 10,
                 id="recreate-all-at-once"),
])
def test_new_rs_target(d: Obj, all_rss: list[Obj], new: Obj, expected: int) -> None:
    """The new ReplicaSet grows within replicas + maxSurge, never past replicas."""
    assert r.new_rs_target(d, [*all_rss, new], new) == expected


@pytest.mark.parametrize("d,olds,new,expected", [
    pytest.param(deployment(10, surge=2, unavailable=0), [rs("old", 10)],
                 rs("new", 2, available=0), {}, id="wait-for-new-to-be-available"),
    pytest.param(deployment(10, surge=2, unavailable=0), [rs("old", 10)],
                 rs("new", 2, available=2), {"old": 8}, id="scale-down-by-available"),
    pytest.param(deployment(10, surge=0, unavailable=2), [rs("old", 10)],
                 rs("new", 0, available=0), {"old": 8}, id="unavailable-budget"),
    pytest.param(deployment(10, surge=0, unavailable=2), [rs("old", 10, available=5)],
                 rs("new", 0, available=0), {"old": 8}, id="unhealthy-first"),
    pytest.param(deployment(4, surge=1, unavailable=1),
                 [rs("older", 2, age=0), rs("old", 2, age=10)], rs("new", 1, available=1),
                 {"older": 0}, id="oldest-first"),
    pytest.param(deployment(3, surge=1, unavailable=0), [rs("old", 0)],
                 rs("new", 3), {}, id="nothing-old"),
])
def test_old_rs_targets(d: Obj, olds: list[Obj], new: Obj, expected: dict[str, int]) -> None:
    """Old ReplicaSets shrink while replicas - maxUnavailable stay available."""
    plan = r.old_rs_targets(d, [*olds, new], r.active(olds), new)
    assert sizes(plan) == expected


def test_rolling_update_never_below_min_available() -> None:
    """Simulated step by step (pods ready at once), a 3-replica rollout with the default
    25%/25% never has fewer than 3 available and ends with only the new ReplicaSet."""
    d = deployment(3, surge="25%", unavailable="25%")
    old, new = rs("old", 3), rs("new", 0, age=10)
    for _ in range(20):
        target = r.new_rs_target(d, [old, new], new)
        if target != r.replicas(new):
            new = rs("new", target, age=10)
        else:
            for o, size in r.old_rs_targets(d, [old, new], r.active([old]), new):
                old = rs("old", size) if o is old else old
        assert r.total([old, new], "availableReplicas") >= 3 - r.max_unavailable(d)
        assert r.total([old, new]) <= 3 + r.max_surge(d)
    assert (r.replicas(old), r.replicas(new)) == (0, 3)


# -- scaling --------------------------------------------------------------------------------


@pytest.mark.parametrize("d,old_d_replicas,new,olds,expected", [
    pytest.param(deployment(10), 5, rs("v2", 2, age=20), [rs("v1", 3, age=10)],
                 {"v2": 4, "v1": 6}, id="5-to-10"),
    pytest.param(deployment(3), 5, rs("v2", 2, age=20), [rs("v1", 3, age=10)],
                 {"v2": 1, "v1": 2}, id="5-to-3"),
    pytest.param(deployment(4), 9, rs("v2", 8, age=20), [rs("v1", 1, age=10)],
                 {"v2": 4, "v1": 0}, id="9-to-4"),
    pytest.param(deployment(10), 7, rs("v3", 2, age=30),
                 [rs("v2", 3, age=20), rs("v1", 2, age=10)],
                 {"v3": 3, "v2": 4, "v1": 3}, id="7-to-10"),
    pytest.param(deployment(8), 13, rs("v3", 2, age=30),
                 [rs("v2", 8, age=20), rs("v1", 3, age=10)],
                 {"v3": 1, "v2": 5, "v1": 2}, id="13-to-8"),
    pytest.param(deployment(0), 5, rs("v2", 2, age=20), [rs("v1", 3, age=10)],
                 {"v2": 0, "v1": 0}, id="to-zero"),
])
def test_proportional_scaling(d: Obj, old_d_replicas: int, new: Obj, olds: list[Obj],
                              expected: dict[str, int]) -> None:
    """A replica change mid-rollout is shared in proportion (upstream's TestScale cases)."""
    before = r.replicas(deployment(old_d_replicas)) + r.max_surge(deployment(old_d_replicas))
    for x in [new, *olds]:
        x["metadata"]["annotations"][r.ANN_MAX_REPLICAS] = str(before)
    assert sizes(r.proportional_targets(d, new, olds)) == expected


@pytest.mark.parametrize("new,olds,expected", [
    pytest.param(rs("new", 3), [rs("old", 0)], "new", id="only-new-active"),
    pytest.param(rs("new", 0), [rs("old", 3)], "old", id="only-old-active"),
    pytest.param(rs("new", 0), [rs("old", 0, age=5), rs("older", 0)], "new",
                 id="none-active-newest"),
    pytest.param(None, [rs("old", 0, age=5), rs("older", 0)], "old",
                 id="none-active-no-new"),
    pytest.param(rs("new", 1), [rs("old", 2)], None, id="two-active"),
])
def test_find_active_or_latest(new: Obj | None, olds: list[Obj], expected: str | None) -> None:
    """A plain scale goes to the one active ReplicaSet, else the newest."""
    found = r.find_active_or_latest(new, olds)
    assert (found["metadata"]["name"] if found else None) == expected


@pytest.mark.parametrize("new,olds,scaling", [
    pytest.param(rs("new", 3, desired=3), [], False, id="same"),
    pytest.param(rs("new", 3, desired=5), [], True, id="replicas-changed"),
    pytest.param(rs("new", 0, desired=5), [rs("old", 3, desired=3)], False,
                 id="inactive-ignored"),
    pytest.param(rs("new", 3), [], False, id="no-annotation"),
])
def test_is_scaling_event(new: Obj, olds: list[Obj], scaling: bool) -> None:
    """Scaling is told from rollouts by the desired-replicas annotation."""
    assert r.is_scaling_event(deployment(3), new, olds) is scaling


# -- annotations and revisions --------------------------------------------------------------


def test_new_rs_annotations_on_create() -> None:
    """A new ReplicaSet gets the next revision, the replica annotations and the
    Deployment's annotations except the skipped ones."""
    d = deployment(4, surge=1, annotations={rev.ANN_CHANGE_CAUSE: "kubectl set image",
                                            rev.ANN_LAST_APPLIED: "{}", rev.ANN_REVISION: "7"})
    ann: dict[str, str] = {}
    assert rev.set_new_rs_annotations(d, ann, 3, exists=False)
    assert ann == {rev.ANN_CHANGE_CAUSE: "kubectl set image", rev.ANN_REVISION: "3",
                   r.ANN_DESIRED_REPLICAS: "4", r.ANN_MAX_REPLICAS: "5"}


def test_rollback_keeps_revision_history() -> None:
    """A reused ReplicaSet moves to the new revision and remembers its old ones."""
    ann = {rev.ANN_REVISION: "1"}
    assert rev.set_new_rs_annotations(deployment(), ann, 3, exists=True)
    assert ann == {rev.ANN_REVISION: "3", rev.ANN_REVISION_HISTORY: "1"}
    rev.set_new_rs_annotations(deployment(), ann, 5, exists=True)
    assert ann[rev.ANN_REVISION_HISTORY] == "1,3"
    assert not rev.set_new_rs_annotations(deployment(), ann, 5, exists=True)


def test_new_replicaset_object() -> None:
    """The ReplicaSet is named <deploy>-<hash>, labelled and selected by the hash."""
    d = deployment(3)
    ref = {"uid": "uid-web", "controller": True}
    made = rev.new_replicaset(d, "abc12", 1, ref)
    assert made["metadata"]["name"] == "web-abc12"
    assert made["metadata"]["labels"] == {"app": "web", rev.HASH_LABEL: "abc12"}
    assert made["spec"]["selector"]["matchLabels"] == {"app": "web", rev.HASH_LABEL: "abc12"}
    assert made["spec"]["template"]["metadata"]["labels"][rev.HASH_LABEL] == "abc12"
    assert made["metadata"]["ownerReferences"] == [ref]
    assert "pod-template-hash" not in d["spec"]["template"]["metadata"]["labels"]


# -- status and conditions -------------------------------------------------------------------


def progressing(reason: str, *, status: str = "True", updated: float = NOW - 10) -> Obj:
    return {"type": st.PROGRESSING, "status": status, "reason": reason, "message": "",
            "lastUpdateTime": rfc3339(updated), "lastTransitionTime": rfc3339(updated - 100)}


def test_status_counts_and_available() -> None:
    """Counts come from the ReplicaSets; Available is true at replicas - maxUnavailable."""
    d = deployment(4, surge=1, unavailable=1)
    new, old = rs("new", 2, available=1), rs("old", 3)
    status = st.calculate_status([old, new], new, d, NOW)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 1, "replicas": 5, "updatedReplicas": 2, "readyReplicas": 4,
        "availableReplicas": 4, "unavailableReplicas": 1}
    assert st.get_condition(status, st.AVAILABLE)["reason"] == st.MIN_AVAILABLE  # type: ignore[index]
    low = st.calculate_status([rs("old", 3, available=2)], None, d, NOW)
    assert st.get_condition(low, st.AVAILABLE)["reason"] == st.MIN_UNAVAILABLE  # type: ignore[index]


@pytest.mark.parametrize("d,rss,reason", [
    pytest.param(deployment(3, status={"conditions": [progressing(st.NEW_RS_CREATED)]}),
                 [rs("new", 3)], st.NEW_RS_AVAILABLE, id="complete"),
    pytest.param(deployment(3, status={"updatedReplicas": 1, "replicas": 4,
                                       "conditions": [progressing(st.NEW_RS_CREATED)]}),
                 [rs("new", 2, available=1), rs("old", 2)], st.RS_UPDATED, id="progressing"),
    pytest.param(deployment(3, deadline=5, status={
        "updatedReplicas": 3, "replicas": 3,
        "conditions": [progressing(st.NEW_RS_CREATED, updated=NOW - 10)]}),
                 [rs("new", 3, available=0)], st.TIMED_OUT, id="timed-out"),
    pytest.param(deployment(3, deadline=60, status={
        "updatedReplicas": 3, "replicas": 3,
        "conditions": [progressing(st.NEW_RS_CREATED, updated=NOW - 10)]}),
                 [rs("new", 3, available=0)], st.NEW_RS_CREATED, id="within-deadline"),
    pytest.param(deployment(3, deadline=5, status={
        "updatedReplicas": 3, "replicas": 3,
        "conditions": [progressing(st.NEW_RS_AVAILABLE, updated=NOW - 100)]}),
                 [rs("new", 3, available=0)], st.NEW_RS_AVAILABLE, id="complete-never-times-out"),
    pytest.param(deployment(3, deadline=None, status={
        "conditions": [progressing(st.NEW_RS_CREATED)]}),
                 [rs("new", 3)], None, id="no-deadline-no-condition"),
])
def test_progressing_condition(d: Obj, rss: list[Obj], reason: str | None) -> None:
    """Progressing: complete, progressing, timed out past the deadline, or left alone."""
    status = st.rollout_status(rss, rss[0], d, NOW)
    cond = st.get_condition(status, st.PROGRESSING)
    assert (cond["reason"] if cond else None) == reason
    if reason == st.TIMED_OUT:
        assert cond is not None and cond["status"] == "False"
        assert cond["message"] == 'ReplicaSet "new" has timed out progressing.'


def test_progress_keeps_transition_time() -> None:
    """Progress moves lastUpdateTime on, not lastTransitionTime."""
    old = progressing(st.RS_UPDATED, updated=NOW - 30)
    d = deployment(3, status={"updatedReplicas": 1, "replicas": 4, "conditions": [old]})
    status = st.rollout_status([rs("new", 2, available=1), rs("old", 2)],
                              rs("new", 2, available=1), d, NOW)
    cond = st.get_condition(status, st.PROGRESSING)
    assert cond is not None
    assert cond["lastUpdateTime"] == rfc3339(NOW)
    assert cond["lastTransitionTime"] == old["lastTransitionTime"]


def test_replica_failure_is_copied() -> None:
    """A ReplicaSet's ReplicaFailure shows on the Deployment."""
    new = rs("new", 3, available=0)
    new["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True",
                                    "reason": "FailedCreate", "message": "quota",
                                    "lastTransitionTime": rfc3339(NOW)}]
    status = st.rollout_status([new], new, deployment(3), NOW)
    cond = st.get_condition(status, st.REPLICA_FAILURE)
    assert cond is not None and cond["reason"] == "FailedCreate"


@pytest.mark.parametrize("d,status,after", [
    pytest.param(deployment(3, deadline=10), {"conditions": [
        progressing(st.RS_UPDATED, updated=NOW - 4)]}, 6.0, id="until-deadline"),
    pytest.param(deployment(3, deadline=10), {"conditions": [
        progressing(st.RS_UPDATED, updated=NOW - 40)]}, 0.0, id="overdue"),
    pytest.param(deployment(3, deadline=10), {"conditions": [
        progressing(st.TIMED_OUT, status="False")]}, None, id="already-timed-out"),
    pytest.param(deployment(3, deadline=None), {}, None, id="no-deadline"),
    pytest.param(deployment(3), {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
                                 "observedGeneration": 1,
                                 "conditions": [progressing(st.RS_UPDATED)]},
                 None, id="complete"),
])
def test_stuck_requeue(d: Obj, status: Obj, after: float | None) -> None:
    """A rollout that stopped moving is looked at again when its deadline passes."""
    assert st.stuck_requeue_after(d, status, NOW) == after


@pytest.mark.parametrize("a,b,equal", [
    pytest.param({"replicas": 0}, {}, True, id="zero-is-missing"),
    pytest.param({"replicas": 1}, {}, False, id="count"),
    pytest.param({"conditions": []}, {}, True, id="no-conditions"),
])
def test_status_equal(a: Obj, b: Obj, equal: bool) -> None:
    """Statuses compare as Go's omitempty fields would."""
    assert st.status_equal(a, b) is equal


# -- the controller against a fake API -------------------------------------------------------


class FakeClient:
    """Records writes; returns what it was sent (as the server would, near enough)."""

    def __init__(self) -> None:
        self.created: list[Obj] = []
        self.updated: list[Obj] = []
        self.statuses: list[Obj] = []
        self.events: list[str] = []

    async def create(self, api_version: str, plural: str, obj: Obj, *,
                     namespace: str | None = None) -> Obj:
        if plural == "events":
            self.events.append(obj["message"])
            return obj
        obj = copy.deepcopy(obj)
        obj["metadata"].update(uid=f"uid-{obj['metadata']['name']}", resourceVersion="1",
                               creationTimestamp=rfc3339(NOW))
        self.created.append(obj)
        return obj

    async def update(self, api_version: str, plural: str, obj: Obj) -> Obj:
        self.updated.append(copy.deepcopy(obj))
        return obj

    async def update_status(self, api_version: str, plural: str, obj: Obj) -> Obj:
        self.statuses.append(copy.deepcopy(obj))
        return obj


def controller(client: FakeClient, d: Obj, rss: list[Obj]) -> DeploymentController:
    c = DeploymentController(client, clock=FakeClock(NOW))  # type: ignore[arg-type]
    c.deployments.add_index(NAMESPACE_INDEX, namespace_index)
    c.replicasets.add_index(CONTROLLER_INDEX, controller_uid_index)
    c.replicasets.add_index(ORPHAN_INDEX, orphan_namespace_index)
    c.pods.add_index(CONTROLLER_INDEX, controller_uid_index)
    c.deployments._replace([d], "1")
    c.replicasets._replace(rss, "1")
    return c


def owned(x: Obj) -> Obj:
    x["metadata"].update(namespace="ns", resourceVersion="1", ownerReferences=[
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-web",
         "controller": True}])
    x["metadata"]["labels"] = dict(x["spec"]["template"]["metadata"]["labels"])
    x["spec"]["selector"] = {"matchLabels": {"app": "web"}}
    return x


async def test_new_deployment_creates_first_replicaset() -> None:
    """A new Deployment gets <name>-<hash> at revision 1 with all its replicas (nothing
    old to surge past), a ScalingReplicaSet event, and NewReplicaSetCreated."""
    client = FakeClient()
    d = deployment(3, surge="25%", unavailable="25%")
    await controller(client, d, []).reconcile("ns/web")
    (made,) = client.created
    pod_hash = rev.template_hash(d["spec"]["template"])
    assert made["metadata"]["name"] == f"web-{pod_hash}"
    assert made["spec"]["replicas"] == 3
    assert made["metadata"]["annotations"] == {
        rev.ANN_REVISION: "1", r.ANN_DESIRED_REPLICAS: "3", r.ANN_MAX_REPLICAS: "4"}
    assert client.events == [f"Scaled up replica set web-{pod_hash} from 0 to 3"]
    last = client.statuses[-1]
    assert last["metadata"]["annotations"][rev.ANN_REVISION] == "1"
    assert st.get_condition(last["status"], st.PROGRESSING)["reason"] == st.NEW_RS_CREATED  # type: ignore[index]


async def test_template_change_starts_rolling_update() -> None:
    """A new template creates the next revision within maxSurge and leaves the old one."""
    client = FakeClient()
    d = deployment(4, surge=1, unavailable=0, generation=2)
    old = owned(rs("old", 4, desired=4, max_replicas=5, revision=1))
    await controller(client, d, [old]).reconcile("ns/web")
    (made,) = client.created
    assert (made["spec"]["replicas"], made["metadata"]["annotations"][rev.ANN_REVISION]) == \
        (1, "2")
    assert not client.updated  # the old one waits for the new pod to be available


async def test_scaling_mid_rollout_is_proportional() -> None:
    """spec.replicas 5 -> 10 during a rollout resizes both ReplicaSets in proportion."""
    client = FakeClient()
    d = deployment(10, generation=3)
    new = owned(rs("new", 2, desired=5, max_replicas=5, revision=2, age=10))
    new["spec"]["template"] = copy.deepcopy(d["spec"]["template"])
    new["metadata"]["labels"] = {"app": "web"}
    old = owned(rs("old", 3, desired=5, max_replicas=5, revision=1))
    await controller(client, d, [old, new]).reconcile("ns/web")
    assert {u["metadata"]["name"]: u["spec"]["replicas"] for u in client.updated} == {
        "old": 6, "new": 4}
    assert all(u["metadata"]["annotations"][r.ANN_DESIRED_REPLICAS] == "10"
               for u in client.updated)
    assert sorted(client.events) == ["Scaled up replica set new from 2 to 4",
                                     "Scaled up replica set old from 3 to 6"]
