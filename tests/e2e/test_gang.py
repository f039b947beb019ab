"""Gang scheduling end to end: a real ``kyb server`` with four fake nodes (32 CPUs each),
coscheduling PodGroups (``scheduling.x-k8s.io/v1alpha1``) and pods that join them by label,
driven by the real kubectl — with the default scheduler, no ``schedulerName`` needed.

Each gang member asks for 20 CPUs, so a node takes one member and the cluster room for
four."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import Cluster, fake_node_cluster, wait_for

pytestmark = pytest.mark.slow

Obj = dict[str, Any]
LABEL = "scheduling.x-k8s.io/pod-group"
BIG = "20"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from fake_node_cluster(tmp_path_factory.mktemp("gang"), 4)


def _wait(cond: Callable[[], Any], what: str, timeout: float = 40.0) -> Any:
    return wait_for(what, cond, timeout, every=0.25)


def _group(name: str, ns: str, min_member: int, timeout: int = 3) -> Obj:
    return {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"minMember": min_member, "scheduleTimeoutSeconds": timeout}}


def _pod(name: str, ns: str, group: str | None, cpu: str = BIG) -> Obj:
    labels = {"app": name}
    if group:
        labels[LABEL] = group
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                 "resources": {"requests": {"cpu": cpu}}}]}}


def _apply(c: Cluster, *objs: Obj) -> None:
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))


def _namespace(c: Cluster, ns: str) -> None:
    c.kubectl("create", "namespace", ns)


def _bound(c: Cluster, ns: str) -> dict[str, str]:
    """Pod name -> node, of the namespace's pods bound to a node."""
    pods = c.kubectl_json("get", "pods", "-n", ns)["items"]
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods
            if (p.get("spec") or {}).get("nodeName")}


def _never_bound(c: Cluster, ns: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert _bound(c, ns) == {}, "a gang member was bound before the gang was complete"
        time.sleep(0.5)


def _events(c: Cluster, ns: str, reason: str) -> list[Obj]:
    out = c.kubectl("get", "events", "-n", ns, "--field-selector", f"reason={reason}",
                    "-o", "json").stdout
    return list(json.loads(out)["items"])


def test_podgroups_are_served(fake: Cluster) -> None:
    """Discovery lists the kind with its short names; kubectl prints its columns."""
    out = fake.kubectl("api-resources", "--api-group=scheduling.x-k8s.io").stdout
    row = next(line for line in out.splitlines() if line.startswith("podgroups"))
    assert row.split()[:5] == ["podgroups", "pg,pgs", "scheduling.x-k8s.io/v1alpha1", "true",
                               "PodGroup"]
    _namespace(fake, "gang-api")
    _apply(fake, _group("g", "gang-api", 2))
    header = fake.kubectl("get", "pgs", "-n", "gang-api").stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "MINMEMBER", "RUNNING", "SUCCEEDED", "FAILED", "AGE"]
    _apply(fake, _group("g", "gang-api", 3))  # apply again: a patch
    pg = _wait(lambda: (lambda g: g if (g.get("status") or {}).get("phase") else None)(
        fake.kubectl_json("get", "pg", "g", "-n", "gang-api")), "the PodGroup's status")
    assert pg["spec"]["minMember"] == 3 and pg["metadata"]["generation"] == 2
    assert pg["status"]["phase"] == "Pending"
    bad = fake.kubectl("apply", "-f", "-", check=False,
                       input=yaml.safe_dump(_group("bad", "gang-api", -1)))
    assert bad.returncode != 0
    assert "spec.minMember: Invalid value: -1: must be greater than or equal to 0" in bad.stderr


def test_gang_without_room_holds_nothing_then_binds_whole(fake: Cluster) -> None:
    """Four members, room for three: none binds, and nothing stays reserved (a pod that
    needs the room those three would take schedules); once a fourth node is back, all four
    bind, and the PodGroup's status follows them to Running."""
    ns = "gang-a"
    _namespace(fake, ns)
    fake.kubectl("cordon", "fake-node-3")
    try:
        _apply(fake, _group("train", ns, 4),
               *(_pod(f"worker-{i}", ns, "train") for i in range(4)))
        _never_bound(fake, ns, 6)
        _wait(lambda: _events(fake, ns, "FailedScheduling"), "a FailedScheduling event")
        _apply(fake, _pod("filler", ns, None))
        _wait(lambda: "filler" in _bound(fake, ns), "the filler to be bound")
        assert set(_bound(fake, ns)) == {"filler"}
        fake.kubectl("delete", "pod", "filler", "-n", ns, "--wait=true")
    finally:
        fake.kubectl("uncordon", "fake-node-3")
    bound = _wait(lambda: (lambda b: b if len(b) == 4 else None)(_bound(fake, ns)),
                  "the whole gang to be bound", timeout=60)
    assert sorted(bound.values()) == [f"fake-node-{i}" for i in range(4)]

    def running() -> Obj | None:
        pg = fake.kubectl_json("get", "podgroup", "train", "-n", ns)
        status = pg.get("status") or {}
        return status if status.get("phase") == "Running" else None

    status = _wait(running, "the PodGroup to be Running")
    assert status["running"] == 4 and status["scheduled"] == 4 and status["failed"] == 0
    assert status["scheduleStartTime"]
    fake.kubectl("delete", "namespace", ns, "--wait=false")
    fake.kubectl("delete", "pods", "--all", "-n", ns, "--wait=true")


def test_two_gangs_for_room_for_one_run_one_after_the_other(fake: Cluster) -> None:
    """Two gangs of four, created interleaved, room for one: one binds whole while the
    other holds nothing; when the first one's pods go, the second binds."""
    ns = "gang-b"
    _namespace(fake, ns)
    objs: list[Obj] = [_group("first", ns, 4), _group("second", ns, 4)]
    for i in range(4):
        objs += [_pod(f"first-{i}", ns, "first"), _pod(f"second-{i}", ns, "second")]
    _apply(fake, *objs)

    def one_gang() -> str | None:
        bound = _bound(fake, ns)
        gangs = {name.rsplit("-", 1)[0] for name in bound}
        return next(iter(gangs)) if len(bound) == 4 and len(gangs) == 1 else None

    winner = _wait(one_gang, "one whole gang to be bound", timeout=60)
    loser = "second" if winner == "first" else "first"
    time.sleep(2)
    assert set(_bound(fake, ns)) == {f"{winner}-{i}" for i in range(4)}
    fake.kubectl("delete", "pods", "-n", ns, "-l", f"{LABEL}={winner}", "--wait=true")
    bound = _wait(lambda: (lambda b: b if len(b) == 4 else None)(_bound(fake, ns)),
                  "the other gang to be bound", timeout=60)
    assert set(bound) == {f"{loser}-{i}" for i in range(4)}
    fake.kubectl("delete", "pods", "--all", "-n", ns, "--wait=true")


def test_gang_short_of_members_waits_for_them(fake: Cluster) -> None:
    """Two pods of a group of three stay Pending with upstream's message; the third one
    arriving lets all three bind."""
    ns = "gang-c"
    _namespace(fake, ns)
    _apply(fake, _group("small", ns, 3), _pod("m-0", ns, "small", cpu="1"),
           _pod("m-1", ns, "small", cpu="1"))

    def sibling_events() -> list[str]:
        return [e["message"] for e in _events(fake, ns, "FailedScheduling")
                if "cannot find enough sibling pods" in e["message"]]

    msgs = _wait(sibling_events, "the FailedScheduling event")
    assert any("current pods number: 2, minMember of group: 3" in m for m in msgs), msgs
    for name in ("m-0", "m-1"):
        pod = fake.kubectl_json("get", "pod", name, "-n", ns)
        assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    pg = fake.kubectl_json("get", "pg", "small", "-n", ns)
    assert pg["status"]["phase"] == "Pending"
    _apply(fake, _pod("m-2", ns, "small", cpu="1"))
    _wait(lambda: len(_bound(fake, ns)) == 3, "the gang of three to be bound")


def _training_job(name: str, ns: str) -> Obj:
    template = {"spec": {"containers": [{
        "name": "pytorch", "image": "python:3.11", "command": ["python", "/train.py"],
        "resources": {"requests": {"cpu": BIG}}}]}}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"runPolicy": {"schedulingPolicy": {"scheduleTimeoutSeconds": 3}},
                     "pytorchReplicaSpecs": {
                         "Master": {"replicas": 1, "template": template},
                         "Worker": {"replicas": 3, "template": template}}}}


def test_two_training_jobs_for_room_for_one_never_deadlock(fake: Cluster) -> None:
    """Two 4-replica PyTorchJobs, room for one: the training controller makes each a
    PodGroup of four; one job's pods all bind while the other's hold nothing; once the
    first job is deleted, the second one's bind."""
    ns = "gang-jobs"
    _namespace(fake, ns)
    _apply(fake, _training_job("one", ns), _training_job("two", ns))
    groups = _wait(lambda: (lambda items: items if len(items) == 2 else None)(
        fake.kubectl_json("get", "podgroups", "-n", ns)["items"]), "the jobs' PodGroups")
    assert sorted((g["metadata"]["name"], g["spec"]["minMember"]) for g in groups) == [
        ("one", 4), ("two", 4)]

    def one_job() -> str | None:
        bound = _bound(fake, ns)
        jobs = {name.split("-", 1)[0] for name in bound}
        return next(iter(jobs)) if len(bound) == 4 and len(jobs) == 1 else None

    winner = _wait(one_job, "one whole job to be bound", timeout=60)
    loser = "two" if winner == "one" else "one"
    time.sleep(2)
    assert {n.split("-", 1)[0] for n in _bound(fake, ns)} == {winner}
    fake.kubectl("delete", "pytorchjob", winner, "-n", ns, "--wait=true")
    bound = _wait(lambda: (lambda b: b if len(b) == 4 and all(
        n.startswith(loser) for n in b) else None)(_bound(fake, ns)),
        "the other job's pods to be bound", timeout=90)
    assert sorted(bound) == [f"{loser}-master-0", *(f"{loser}-worker-{i}" for i in range(3))]
    fake.kubectl("delete", "namespace", ns, "--wait=false")
