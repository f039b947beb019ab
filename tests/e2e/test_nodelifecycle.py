"""The node lifecycle controller against a real ``kyb server``: a node whose Lease is not
renewed goes Unknown and tainted, its pods are marked not Ready and evicted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, free_port, wait_for

pytestmark = pytest.mark.slow

NODE = "stale-node"
UNREACHABLE = "node.kubernetes.io/unreachable"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server with a 5 s node monitor grace period and two fake nodes (renewing their
    Leases every second)."""
    base = tmp_path_factory.mktemp("nodelifecycle")
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home",
                extra_args=["--disable-agent", "--fake-nodes", "2",
                            "--node-monitor-grace-period", "5",
                            "--fake-node-lease-interval", "1s"])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    yield c
    assert c.stop() == 0, "kyb server did not exit cleanly"



def _now(micro: bool = False) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.now(UTC).strftime(fmt)


def _heartbeat(c: Cluster) -> None:
    """Play the kubelet once: renew the Lease and post Ready."""
    c.kubectl("-n", "kube-node-lease", "patch", "lease", NODE, "--type=merge",
              "-p", json.dumps({"spec": {"renewTime": _now(micro=True)}}))
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status", "lastHeartbeatTime": _now(),
             "lastTransitionTime": _now()}
    c.kubectl("patch", "node", NODE, "--subresource=status", "--type=merge",
              "-p", json.dumps({"status": {"conditions": [ready]}}))


def _pod(name: str, tolerations: list[Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": NODE, "tolerations": tolerations,
                     "containers": [{"name": "c", "image": "busybox"}]}}


def _get(c: Cluster, *args: str) -> Any:
    proc = c.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _deleting(c: Cluster, name: str) -> bool:
    pod = _get(c, "pod", name)
    return pod is None or bool(pod["metadata"].get("deletionTimestamp"))


def test_unreachable_node_tainted_and_pods_evicted(cluster: Cluster) -> None:
    """No Lease renewal: Unknown, unreachable taints, pods not Ready and evicted; back: untainted."""
    c = cluster
    c.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}))
    c.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": NODE, "namespace": "kube-node-lease"},
         "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40,
                  "renewTime": _now(micro=True)}}))
    _heartbeat(c)
    short = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
              "tolerationSeconds": 2}]
    c.kubectl("create", "-f", "-", input=json.dumps(_pod("short", short)))
    c.kubectl("create", "-f", "-", input=json.dumps(_pod("default", [])))
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": _now()}
    c.kubectl("patch", "pod", "default", "--subresource=status", "--type=merge",
              "-p", json.dumps({"status": {"phase": "Running", "conditions": [ready]}}))
    tolerations = _get(c, "pod", "default")["spec"]["tolerations"]
    assert {(t["key"], t["tolerationSeconds"]) for t in tolerations} == {
        ("node.kubernetes.io/not-ready", 300), (UNREACHABLE, 300)}

    def unreachable() -> Any:
        node = _get(c, "node", NODE)
        taints = {(t["key"], t["effect"]) for t in (node.get("spec") or {}).get("taints") or ()}
        return node if {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")} <= taints \
            else None

    node = wait_for("the unreachable taints", unreachable, timeout=20)
    tainted_at = time.monotonic()
    conds = {x["type"]: x for x in node["status"]["conditions"]}
    for type_ in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
        assert conds[type_]["status"] == "Unknown"
    assert conds["Ready"]["reason"] == "NodeStatusUnknown"
    assert conds["Ready"]["message"] == "Kubelet stopped posting node status."

    wait_for("the tolerating pod's eviction", lambda: _deleting(c, "short"), timeout=10)
    assert time.monotonic() - tainted_at > 1.0  # after its tolerationSeconds, not at once
    short_pod = _get(c, "pod", "short")
    if short_pod is not None:
        target = [x for x in short_pod["status"].get("conditions") or ()
                  if x["type"] == "DisruptionTarget"]
        assert target and target[0]["reason"] == "DeletionByTaintManager"

    def not_ready() -> bool:
        pod = _get(c, "pod", "default")
        return any(x["type"] == "Ready" and x["status"] == "False"
                   for x in pod["status"].get("conditions") or ())

    wait_for("the pod marked not Ready", not_ready)
    assert not _deleting(c, "default")  # 300 s of toleration left

    # a NoExecute taint the pod does not tolerate evicts it at once
    c.kubectl("taint", "node", NODE, "example.com/drain=true:NoExecute")
    wait_for("the untolerating pod's eviction", lambda: _deleting(c, "default"), timeout=8)
    events = _get(c, "events", "--field-selector", "involvedObject.name=default")["items"]
    assert any(e["reason"] == "TaintManagerEviction"
               and e["message"] == "Marking for deletion Pod default/default" for e in events)

    # the kubelet is back: the unreachable taints go, the others stay
    _heartbeat(c)

    def untainted() -> Any:
        taints = (_get(c, "node", NODE).get("spec") or {}).get("taints") or []
        return taints if all(t["key"] != UNREACHABLE for t in taints) else None

    taints = wait_for("the unreachable taints removed", untainted, timeout=8)
    assert [t["key"] for t in taints] == ["example.com/drain"]


DEAD = "dead-node"


def _post_status(c: Cluster, node: str) -> None:
    """Play a kubelet once for ``node``: capacity, Ready, and a renewed Lease."""
    stamp = _now()
    resources = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    c.kubectl("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"capacity": resources, "allocatable": resources, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status", "lastHeartbeatTime": stamp,
             "lastTransitionTime": stamp}]}}))
    c.kubectl("-n", "kube-node-lease", "patch", "lease", node, "--type=merge",
              "-p", json.dumps({"spec": {"renewTime": _now(micro=True)}}))


def test_pods_of_a_dead_node_are_replaced_on_another(cluster: Cluster) -> None:
    """A Deployment's pods on a node that goes silent are evicted after their
    tolerationSeconds and recreated by the ReplicaSet on the (fake) nodes still alive."""
    c = cluster
    fakes = wait_for("the 2 fake nodes", lambda: len(f := [
        n["metadata"]["name"] for n in c.kubectl_json("get", "nodes")["items"]
        if n["metadata"]["name"] not in (NODE, DEAD)]) == 2 and f)
    c.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": DEAD, "labels": {
            "kubernetes.io/hostname": DEAD}}}))
    c.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": DEAD, "namespace": "kube-node-lease"},
         "spec": {"holderIdentity": DEAD, "leaseDurationSeconds": 40,
                  "renewTime": _now(micro=True)}}))
    # its last heartbeat (Lease and status) is posted after this: the eviction's lower
    # bound below holds from here whatever the steps in between take
    silent_at = time.monotonic()
    _post_status(c, DEAD)
    for name in fakes:  # the first pods can only go to the node about to die
        c.kubectl("cordon", name)
    c.kubectl("create", "namespace", "failover")
    c.kubectl("apply", "-n", "failover", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "model"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "model"}},
                 "template": {"metadata": {"labels": {"app": "model"}}, "spec": {
                     "tolerations": [{"key": UNREACHABLE, "operator": "Exists",
                                      "effect": "NoExecute", "tolerationSeconds": 2}],
                     "containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": "100m"}}}]}}}}))

    def on_dead() -> Any:
        pods = c.kubectl_json("get", "pods", "-n", "failover")["items"]
        return pods if len(pods) == 2 and all(p["spec"].get("nodeName") == DEAD
                                              for p in pods) else None

    first = wait_for("2 pods on the node", on_dead, timeout=20)
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": _now()}
    for p in first:  # its kubelet starts them
        c.kubectl("patch", "pod", p["metadata"]["name"], "-n", "failover",
                  "--subresource=status", "--type=merge", "-p", json.dumps(
                      {"status": {"phase": "Running", "conditions": [ready]}}))
    for name in fakes:
        c.kubectl("uncordon", name)
    old = {p["metadata"]["name"] for p in first}

    def replaced() -> Any:
        pods = c.kubectl_json("get", "pods", "-n", "failover")["items"]
        new = [p for p in pods if p["metadata"]["name"] not in old
               and p["spec"].get("nodeName") in fakes and p["status"].get("phase") == "Running"
               and any(x["type"] == "Ready" and x["status"] == "True"
                       for x in p["status"].get("conditions") or ())]
        gone = all(p["metadata"]["name"] not in old or p["metadata"].get("deletionTimestamp")
                   for p in pods)
        return new if len(new) == 2 and gone else None

    new = wait_for("2 replacements running on the live nodes", replaced, timeout=40)
    # grace period (5 s) + tolerationSeconds (2 s) before the first eviction
    assert time.monotonic() - silent_at > 6
    assert {p["spec"]["nodeName"] for p in new} <= set(fakes)
    d = wait_for("the Deployment available again", lambda: (x := c.kubectl_json(
        "get", "deployment", "model", "-n", "failover"))["status"].get(
        "availableReplicas") == 2 and x)
    assert d["status"]["replicas"] == 2
    c.kubectl("delete", "namespace", "failover", "--wait=false")
    c.kubectl("delete", "node", DEAD)
