"""StatefulSets and DaemonSets end to end: a real ``kyb server`` with three fake nodes,
driven by the real kubectl — ordered start and reverse scale-down, claims from
volumeClaimTemplates, a partitioned rolling update, one daemon pod per eligible node and
a DaemonSet rollout, with ``kubectl rollout status`` for both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.test_deployments import _start, namespace, wait_for

pytestmark = pytest.mark.slow

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server without a real node and with three fake ones."""
    c = _start(tmp_path_factory, "workloads", 3)
    try:
        yield c
    finally:
        assert c.stop() == 0, "kyb server did not exit cleanly"


def sts_yaml(name: str, *, replicas: int, image: str = "busybox:1", extra: str = "") -> str:
    return f"""
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  serviceName: {name}
  selector: {{matchLabels: {{app: {name}}}}}
  {extra}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, image: "{image}"}}]
"""


def pods_of(c: Cluster, ns: str, app: str) -> list[Obj]:
    items: list[Obj] = c.kubectl_json("get", "pods", "-n", ns, "-l", f"app={app}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(p: Obj) -> bool:
    return any(cond["type"] == "Ready" and cond["status"] == "True"
               for cond in (p.get("status") or {}).get("conditions") or [])


def test_statefulset_order_scale_and_partitioned_update(fake_cluster: Cluster) -> None:
    """web-0, web-1, web-2 come up in order; scale down removes the highest first; a
    partitioned update renews only the pods at or above the partition."""
    c = fake_cluster
    ns = namespace(c, "sts")
    c.kubectl("apply", "-n", ns, "-f", "-", input=sts_yaml("web", replicas=3))
    seen: list[list[str]] = []

    def all_ready() -> bool:
        pods = pods_of(c, ns, "web")
        names = sorted(p["metadata"]["name"] for p in pods)
        if names not in seen:
            seen.append(names)
        return len(pods) == 3 and all(ready(p) for p in pods)

    wait_for("web-0..2 ready", all_ready, timeout=40)
    assert all(s == ["web-0", "web-1", "web-2"][:len(s)] for s in seen), seen
    p0 = c.kubectl_json("get", "pod", "-n", ns, "web-0")
    labels = p0["metadata"]["labels"]
    assert labels["statefulset.kubernetes.io/pod-name"] == "web-0"
    assert labels["apps.kubernetes.io/pod-index"] == "0"
    assert labels["controller-revision-hash"].startswith("web-")
    assert p0["spec"]["hostname"] == "web-0" and p0["spec"]["subdomain"] == "web"
    out = c.kubectl("rollout", "status", "-n", ns, "statefulset/web", "--timeout=30s")
    assert "roll out complete" in out.stdout
    assert c.kubectl_json("get", "controllerrevisions", "-n", ns)["items"]

    c.kubectl("scale", "-n", ns, "statefulset/web", "--replicas=1")
    wait_for("scaled to 1", lambda: [p["metadata"]["name"] for p in pods_of(c, ns, "web")]
             == ["web-0"], timeout=30)
    c.kubectl("scale", "-n", ns, "statefulset/web", "--replicas=3")
    wait_for("scaled to 3", all_ready, timeout=40)

    old = labels["controller-revision-hash"]
    c.kubectl("patch", "-n", ns, "statefulset/web", "--type=merge", "-p",
              '{"spec":{"updateStrategy":{"type":"RollingUpdate",'
              '"rollingUpdate":{"partition":1}},'
              '"template":{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}}}')
    out = c.kubectl("rollout", "status", "-n", ns, "statefulset/web", "--timeout=40s")
    assert "partitioned roll out complete" in out.stdout

    def revisions() -> dict[str, str]:
        return {p["metadata"]["name"]: p["metadata"]["labels"]["controller-revision-hash"]
                for p in pods_of(c, ns, "web")}

    wait_for("web-1, web-2 renewed", lambda: all_ready() and (r := revisions())["web-0"] == old
             and r["web-1"] != old and r["web-2"] != old, timeout=30)
    status = c.kubectl_json("get", "statefulset", "-n", ns, "web")["status"]
    assert status["updatedReplicas"] == 2 and status["currentRevision"] == old


def test_statefulset_claims_from_templates(fake_cluster: Cluster) -> None:
    """volumeClaimTemplates make one claim per pod, named <template>-<set>-<ordinal>,
    created before the pod; they stay after the set is deleted (Retain)."""
    c = fake_cluster
    ns = namespace(c, "sts-claims")
    extra = ("podManagementPolicy: Parallel\n  volumeClaimTemplates:\n"
             "  - metadata: {name: data}\n"
             "    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}")
    c.kubectl("apply", "-n", ns, "-f", "-", input=sts_yaml("db", replicas=2, extra=extra))

    def claims() -> list[str]:
        return sorted(x["metadata"]["name"] for x in
                      c.kubectl_json("get", "pvc", "-n", ns)["items"])

    wait_for("claims", lambda: claims() == ["data-db-0", "data-db-1"], timeout=30)
    wait_for("pods", lambda: len(pods_of(c, ns, "db")) == 2, timeout=30)
    vols = c.kubectl_json("get", "pod", "-n", ns, "db-1")["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-1"}} in vols
    c.kubectl("delete", "-n", ns, "statefulset/db", "--wait=false")
    wait_for("pods gone", lambda: not pods_of(c, ns, "db"), timeout=30)
    assert claims() == ["data-db-0", "data-db-1"]


def ds_yaml(name: str, *, image: str = "busybox:1", pod_spec: str = "") -> str:
    return f"""
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      {pod_spec}
      containers: [{{name: c, image: "{image}"}}]
"""


def test_daemonset_nodes_selector_taint_and_rollout(fake_cluster: Cluster) -> None:
    """One pod per fake node; a nodeSelector and an untolerated taint leave nodes out; a
    new image rolls out to every node."""
    c = fake_cluster
    ns = namespace(c, "ds")
    nodes = sorted(n["metadata"]["name"] for n in c.kubectl_json("get", "nodes")["items"])

    def placed(app: str) -> list[str]:
        pods = pods_of(c, ns, app)
        if not all(ready(p) for p in pods):
            return []
        return sorted(p["spec"].get("nodeName", "") for p in pods)

    c.kubectl("apply", "-n", ns, "-f", "-", input=ds_yaml("agent"))
    wait_for("a pod per node", lambda: placed("agent") == nodes, timeout=30)
    out = c.kubectl("rollout", "status", "-n", ns, "daemonset/agent", "--timeout=30s")
    assert "successfully rolled out" in out.stdout
    pod = pods_of(c, ns, "agent")[0]
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["key"] == "metadata.name"
    keys = {t.get("key") for t in pod["spec"]["tolerations"]}
    assert "node.kubernetes.io/unschedulable" in keys

    c.kubectl("label", "node", nodes[0], "workload-test=yes")
    c.kubectl("taint", "node", nodes[1], "dedicated=infra:NoSchedule")
    try:
        c.kubectl("apply", "-n", ns, "-f", "-", input=ds_yaml(
            "picky", pod_spec="nodeSelector: {workload-test: 'yes'}"))
        c.kubectl("apply", "-n", ns, "-f", "-", input=ds_yaml("shy"))
        wait_for("selector", lambda: placed("picky") == [nodes[0]], timeout=30)
        wait_for("taint", lambda: placed("shy") == [nodes[0], nodes[2]], timeout=30)
        status = c.kubectl_json("get", "daemonset", "-n", ns, "shy")["status"]
        assert status["desiredNumberScheduled"] == 2

        c.kubectl("set", "image", "-n", ns, "daemonset/agent", "c=busybox:2")
        out = c.kubectl("rollout", "status", "-n", ns, "daemonset/agent", "--timeout=40s")
        assert "successfully rolled out" in out.stdout
        images = {p["spec"]["containers"][0]["image"] for p in pods_of(c, ns, "agent")}
        assert images == {"busybox:2"}
        # as upstream: the old pod on the tainted node is replaced by none (NoSchedule)
        wait_for("agent off the tainted node",
                 lambda: placed("agent") == [nodes[0], nodes[2]], timeout=20)
    finally:
        c.kubectl("taint", "node", nodes[1], "dedicated-", check=False)
        c.kubectl("label", "node", nodes[0], "workload-test-", check=False)
