"""Endpoints, EndpointSlices and PodDisruptionBudget status end to end: a real
``kyb server`` with two fake nodes, driven by the real kubectl — a Deployment exposed
as a Service gets an Endpoints and an EndpointSlice that follow scaling, and a budget
shows the disruptions it allows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, fake_node_cluster
from tests.e2e.test_pods import wait_for

pytestmark = pytest.mark.slow

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server without a real node and with two fake ones."""
    yield from fake_node_cluster(tmp_path_factory.mktemp("endpoints"), 2)


def _addresses(c: Cluster, ns: str) -> list[str]:
    ep = c.kubectl_json("get", "endpoints", "web", "-n", ns)
    return sorted(f"{a['ip']}:{p['port']}" for s in ep.get("subsets") or []
                  for a in s.get("addresses") or [] for p in s.get("ports") or [])


def _slice_endpoints(c: Cluster, ns: str) -> list[Obj]:
    slices = c.kubectl_json("get", "endpointslices", "-n", ns,
                            "-l", "kubernetes.io/service-name=web")["items"]
    return [ep for s in slices for ep in s.get("endpoints") or []]


def test_api_serves_endpoints_and_slices(fake_cluster: Cluster) -> None:
    """kubectl api-resources lists endpoints and discovery.k8s.io endpointslices."""
    names = set(fake_cluster.kubectl("api-resources", "-o", "name").stdout.split())
    assert {"endpoints", "endpointslices.discovery.k8s.io",
            "poddisruptionbudgets.policy"} <= names


def test_service_endpoints_follow_scale(fake_cluster: Cluster) -> None:
    """Endpoints and EndpointSlices list the ready pods on the target port, and follow scaling."""
    c, ns = fake_cluster, "ep-scale"
    c.kubectl("create", "namespace", ns)
    c.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3", "-n", ns)
    c.kubectl("expose", "deployment", "web", "--port=80", "--target-port=8080", "-n", ns)
    addresses = wait_for("3 endpoint addresses", lambda: len(_addresses(c, ns)) == 3
                         and _addresses(c, ns))
    assert all(a.endswith(":8080") for a in addresses)
    ep = c.kubectl_json("get", "endpoints", "web", "-n", ns)
    assert ep["metadata"]["labels"]["endpoints.kubernetes.io/managed-by"] == \
        "endpoint-controller"
    assert "endpoints.kubernetes.io/last-change-trigger-time" in ep["metadata"]["annotations"]
    address = ep["subsets"][0]["addresses"][0]
    assert address["targetRef"]["kind"] == "Pod" and address["nodeName"]
    assert "8080" in c.kubectl("get", "endpoints", "web", "-n", ns).stdout

    endpoints = wait_for("3 slice endpoints", lambda: len(_slice_endpoints(c, ns)) == 3
                         and _slice_endpoints(c, ns))
    assert all(e["conditions"] == {"ready": True, "serving": True, "terminating": False}
               for e in endpoints)
    slices = c.kubectl_json("get", "endpointslices", "-n", ns,
                            "-l", "kubernetes.io/service-name=web")["items"]
    assert len(slices) == 1
    es = slices[0]
    assert es["metadata"]["name"].startswith("web-") and es["addressType"] == "IPv4"
    assert es["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == \
        "endpointslice-controller.k8s.io"
    assert es["ports"] == [{"name": "", "port": 8080, "protocol": "TCP"}]
    assert sorted(f"{e['addresses'][0]}:8080" for e in endpoints) == addresses

    c.kubectl("scale", "deployment", "web", "--replicas=1", "-n", ns)
    wait_for("1 endpoint address", lambda: len(_addresses(c, ns)) == 1)
    wait_for("1 ready slice endpoint", lambda: [
        e for e in _slice_endpoints(c, ns) if e["conditions"]["ready"]] and all(
        not e["conditions"]["ready"] for e in _slice_endpoints(c, ns)[1:]) and len(
        [e for e in _slice_endpoints(c, ns) if not e["conditions"]["terminating"]]) == 1)
    wait_for("terminating endpoints gone", lambda: len(_slice_endpoints(c, ns)) == 1)


def test_pdb_allowed_disruptions(fake_cluster: Cluster) -> None:
    """minAvailable 2 over 3 ready replicas allows one disruption."""
    c, ns = fake_cluster, "ep-pdb"
    c.kubectl("create", "namespace", ns)
    c.kubectl("create", "deployment", "db", "--image=nginx", "--replicas=3", "-n", ns)
    c.kubectl("create", "poddisruptionbudget", "db", "--selector=app=db", "--min-available=2",
              "-n", ns)

    def allowed() -> bool:
        lines = c.kubectl("get", "pdb", "db", "-n", ns).stdout.splitlines()
        return len(lines) == 2 and lines[1].split()[3] == "1"

    wait_for("ALLOWED DISRUPTIONS 1", allowed)
    assert "ALLOWED DISRUPTIONS" in c.kubectl("get", "pdb", "db", "-n", ns).stdout
    pdb = c.kubectl_json("get", "pdb", "db", "-n", ns)
    status = pdb["status"]
    assert (status["expectedPods"], status["currentHealthy"], status["desiredHealthy"]) == \
        (3, 3, 2)
    assert status["observedGeneration"] == pdb["metadata"]["generation"]
    cond = next(x for x in status["conditions"] if x["type"] == "DisruptionAllowed")
    assert (cond["status"], cond["reason"]) == ("True", "SufficientPods")

    # the eviction subresource honours the budget: one eviction goes, the next is refused.
    # The nodes are cordoned meanwhile: on fake nodes the evicted pod's replacement would
    # otherwise be Running and counted healthy within a second, and the budget would
    # rightly allow the next eviction too.
    pods = [p["metadata"]["name"] for p in c.kubectl_json("get", "pods", "-n", ns,
                                                           "-l", "app=db")["items"]]
    nodes = [n["metadata"]["name"] for n in c.kubectl_json("get", "nodes")["items"]]
    c.kubectl("cordon", *nodes)
    try:
        with c.http() as http:
            def evict(name: str) -> Any:
                return http.post(f"/api/v1/namespaces/{ns}/pods/{name}/eviction",
                                 json={"apiVersion": "policy/v1", "kind": "Eviction",
                                       "metadata": {"name": name, "namespace": ns}})

            assert evict(pods[0]).status_code == 201
            refused = evict(pods[1])
        assert refused.status_code == 429
        assert "disruption budget" in refused.json()["message"]
    finally:
        c.kubectl("uncordon", *nodes)
    wait_for("the replacement counted", lambda: c.kubectl_json(
        "get", "pdb", "db", "-n", ns)["status"].get("disruptionsAllowed") == 1)
