"""The StatefulSet controller's decisions: ordinals, the pods and claims it makes, the
next step (ordered, parallel, scale down, rolling update) and the status."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.controllers import history
from kybernetes.controllers.statefulset import (
    calculate_status,
    new_claim,
    new_pod,
    ordinal_of,
    plan,
    revision_for,
    status_changed,
)

Obj = dict[str, Any]
NOW = 1_700_000_000.0


def sts(*, replicas: int = 3, policy: str = "OrderedReady", strategy: Obj | None = None,
        retention: Obj | None = None) -> Obj:
    spec: Obj = {"replicas": replicas, "serviceName": "svc", "podManagementPolicy": policy,
                 "selector": {"matchLabels": {"app": "web"}},
                 "updateStrategy": strategy or {"type": "RollingUpdate"},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "img"}],
                                       "volumes": [{"name": "data", "emptyDir": {}}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                           "spec": {"accessModes": ["ReadWriteOnce"]}}]}
    if retention:
        spec["persistentVolumeClaimRetentionPolicy"] = retention
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "ns", "uid": "uid-web", "generation": 2},
            "spec": spec, "status": {}}


def pod(ordinal: int, *, rev: str = "r1", healthy: bool = True, phase: str = "Running",
        deleting: bool = False) -> Obj:
    md: Obj = {"name": f"web-{ordinal}", "namespace": "ns", "uid": f"u{ordinal}",
               "labels": {"app": "web", "controller-revision-hash": rev}}
    if deleting:
        md["deletionTimestamp"] = "2023-11-14T22:13:20Z"
    return {"metadata": md, "status": {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if healthy else "False",
         "lastTransitionTime": "2023-11-14T22:00:00Z"}]}}


@pytest.mark.parametrize("name,ordinal", [
    pytest.param("web-0", 0, id="zero"),
    pytest.param("web-12", 12, id="two-digits"),
    pytest.param("web-01", None, id="leading-zero"),
    pytest.param("webx-1", None, id="other-set"),
    pytest.param("web-a", None, id="not-a-number"),
])
def test_ordinal_of(name: str, ordinal: int | None) -> None:
    """Only ``<set>-<ordinal>`` names have an ordinal."""
    assert ordinal_of("web", {"metadata": {"name": name}}) == ordinal


def test_new_pod_identity() -> None:
    """The pod has its name labels, hostname, subdomain and claim volumes."""
    s = sts()
    p = new_pod(s, s["spec"]["template"], 2, "web-abc")
    assert p["metadata"]["name"] == "web-2"
    assert p["metadata"]["labels"] == {
        "app": "web", "statefulset.kubernetes.io/pod-name": "web-2",
        "apps.kubernetes.io/pod-index": "2", "controller-revision-hash": "web-abc"}
    assert p["spec"]["hostname"] == "web-2" and p["spec"]["subdomain"] == "svc"
    assert p["spec"]["volumes"] == [{"name": "data",
                                     "persistentVolumeClaim": {"claimName": "data-web-2"}}]
    assert p["metadata"]["ownerReferences"][0]["controller"] is True


@pytest.mark.parametrize("retention,owned", [
    pytest.param(None, False, id="retain-by-default"),
    pytest.param({"whenDeleted": "Delete"}, True, id="when-deleted-delete"),
    pytest.param({"whenScaled": "Delete"}, False, id="when-scaled-only"),
])
def test_new_claim(retention: Obj | None, owned: bool) -> None:
    """Claims are ``<template>-<set>-<ordinal>``; whenDeleted=Delete makes the set owner."""
    s = sts(retention=retention)
    c = new_claim(s, s["spec"]["volumeClaimTemplates"][0], 1)
    assert c["metadata"]["name"] == "data-web-1"
    assert c["metadata"]["labels"] == {"app": "web"}
    assert bool(c["metadata"].get("ownerReferences")) is owned


ROLLING = {"type": "RollingUpdate"}
PARTITION_1 = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}


@pytest.mark.parametrize("s,pods,create,delete", [
    pytest.param(sts(), [], [0], [], id="ordered-first"),
    pytest.param(sts(), [pod(0, healthy=False)], [], [], id="ordered-waits-for-ready"),
    pytest.param(sts(), [pod(0)], [1], [], id="ordered-next"),
    pytest.param(sts(policy="Parallel"), [pod(0, healthy=False)], [1, 2], [],
                 id="parallel-all"),
    pytest.param(sts(), [pod(0), pod(1, phase="Failed"), pod(2)], [], ["web-1"],
                 id="failed-deleted"),
    pytest.param(sts(replicas=1), [pod(0), pod(1), pod(2)], [], ["web-2"],
                 id="scale-down-highest-first"),
    pytest.param(sts(replicas=1), [pod(0), pod(1), pod(2, deleting=True)], [], [],
                 id="scale-down-one-at-a-time"),
    pytest.param(sts(replicas=1, policy="Parallel"), [pod(0), pod(1), pod(2)], [],
                 ["web-2", "web-1"], id="parallel-scale-down"),
    pytest.param(sts(), [pod(0), pod(1), pod(2)], [], ["web-2"], id="update-highest"),
    pytest.param(sts(), [pod(0), pod(1), pod(2, rev="r2", healthy=False)], [], [],
                 id="update-waits-for-renewed"),
    pytest.param(sts(), [pod(0), pod(1), pod(2, rev="r2")], [], ["web-1"],
                 id="update-next-down"),
    pytest.param(sts(strategy=PARTITION_1), [pod(0), pod(1, rev="r2"), pod(2, rev="r2")],
                 [], [], id="partition-stops"),
    pytest.param(sts(strategy={"type": "OnDelete"}), [pod(0), pod(1), pod(2)], [], [],
                 id="on-delete"),
])
def test_plan(s: Obj, pods: list[Obj], create: list[int], delete: list[str]) -> None:
    """One step toward the desired pods (update revision ``r2``)."""
    step = plan(s, pods, "r1", "r2")
    assert step.create == create
    assert [p["metadata"]["name"] for p in step.delete] == delete


@pytest.mark.parametrize("strategy,ordinal,rev", [
    pytest.param(ROLLING, 0, "r2", id="rolling"),
    pytest.param(PARTITION_1, 0, "r1", id="below-partition"),
    pytest.param(PARTITION_1, 1, "r2", id="at-partition"),
    pytest.param({"type": "OnDelete"}, 2, "r1", id="on-delete"),
])
def test_revision_for(strategy: Obj, ordinal: int, rev: str) -> None:
    """A re-created pod keeps the current revision below the partition."""
    assert revision_for(sts(strategy=strategy), ordinal, "r1", "r2") == rev


@pytest.mark.parametrize("pods,current", [
    pytest.param([pod(0), pod(1, rev="r2"), pod(2, rev="r2")], "r1", id="in-progress"),
    pytest.param([pod(0, rev="r2"), pod(1, rev="r2"), pod(2, rev="r2")], "r2", id="complete"),
])
def test_status(pods: list[Obj], current: str) -> None:
    """Counts per revision; the current revision moves once every pod is updated."""
    st = calculate_status(sts(), pods, "r1", "r2", now=NOW)
    assert st["replicas"] == 3 and st["readyReplicas"] == 3 and st["availableReplicas"] == 3
    assert st["currentRevision"] == current and st["updateRevision"] == "r2"
    s = sts()
    assert status_changed(s, st)
    s["status"] = {**st, "observedGeneration": 2}
    assert not status_changed(s, st)


def test_revision_round_trip() -> None:
    """A revision holds the template as a replace patch and gives it back."""
    s = sts()
    rev = history.new_revision(s, s["spec"]["template"], api_version="apps/v1",
                               kind="StatefulSet", revision=1)
    assert rev["data"]["spec"]["template"]["$patch"] == "replace"
    assert history.template_of(rev) == s["spec"]["template"]
    assert rev["metadata"]["name"] == f"web-{history.hash_of(rev)}"
    assert history.find_equal([rev], s["spec"]["template"]) is rev
