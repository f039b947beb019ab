"""The node agent registers this machine as a Node and keeps its Lease fresh."""

from __future__ import annotations

import time

import pytest

from tests.e2e.cluster import Cluster

pytestmark = pytest.mark.slow


def test_node_registered_ready_with_lease(cluster: Cluster) -> None:
    """kubectl sees the server's own Node Ready, with capacity, labels and a renewed Lease."""
    deadline = time.monotonic() + 20
    while True:
        nodes = cluster.kubectl_json("get", "nodes")["items"]
        mine = [n for n in nodes if n["metadata"]["name"] == cluster.node_name]
        if mine:
            break
        assert time.monotonic() < deadline, nodes
        time.sleep(0.2)
    node = mine[0]
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == cluster.node_name
    assert labels["kubernetes.io/os"] == "linux"
    assert "node-role.kubernetes.io/control-plane" in labels
    status = node["status"]
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds == {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False",
                     "PIDPressure": "False"}
    assert int(status["capacity"]["pods"]) == 110
    assert int(status["capacity"]["cpu"]) >= 1
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == cluster.agent_port
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert node["spec"]["podCIDR"] == cluster.pod_cidr
    table = cluster.kubectl("get", "node", cluster.node_name).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert table[1].split()[:3] == [cluster.node_name, "Ready", "control-plane"]
    lease = cluster.kubectl_json("get", "lease", cluster.node_name, "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == cluster.node_name
    assert lease["spec"]["leaseDurationSeconds"] == 40
    described = cluster.kubectl("describe", "node", cluster.node_name).stdout
    assert "KubeletReady" in described and "HolderIdentity:" in described
