"""The service proxy's userspace data path (``--proxy-mode userspace``, what an agent
without nft or root uses) on a real node: serve-model.yaml's ClusterIP, NodePort and
LoadBalancer spread requests over the replicas from the host and from a pod, a deleted
replica stops receiving connections with no request failing, no nftables table is
installed, the service range is local while the server runs and its route goes with
it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kybernetes.proxy.host import USERSPACE_DIR, table_name
from tests.e2e.cluster import Cluster, agent_cluster
from tests.e2e.test_services import (
    _route,
    _tables,
    assert_even,
    replicas,
    resolve,
    serve_model,
    spread,
    spread_from_a_pod,
)
from tests.e2e.test_services import (
    test_a_deleted_replica_stops_receiving_and_no_request_fails as deleted_replica_check,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
    reason="pods with their own addresses need root and the CNI plugins (Debian "
           "containernetworking-plugins)")]

REQUESTS = 1500


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    running = agent_cluster(tmp_path_factory.mktemp("userspace"), "--proxy-mode", "userspace")
    c = next(running)
    table = table_name(c.data_dir / "agent")
    try:
        yield serve_model(c)
    finally:
        running.close()
    assert not (USERSPACE_DIR / table).exists()
    if not any(USERSPACE_DIR.glob("*")):  # no other userspace proxy runs on the machine
        assert "10.96.0.0/12" not in _local_routes()


def _local_routes() -> str:
    return subprocess.run(["ip", "route", "show", "table", "local"], capture_output=True,
                          text=True, check=False).stdout


def test_userspace_proxy_spreads_requests(served: tuple[Cluster, dict[str, Any]]) -> None:
    c, svc = served
    assert table_name(c.data_dir / "agent") not in _tables()  # no kernel rules
    assert "local 10.96.0.0/12 dev lo" in _local_routes()
    assert _route("10.100.7.9").startswith("local 10.100.7.9 dev lo")
    pods = replicas(c)
    assert len(pods) == 3
    cluster_ip = svc["spec"]["clusterIP"]
    node_port = svc["spec"]["ports"][0]["nodePort"]
    [lb] = [i["ip"] for i in svc["status"]["loadBalancer"]["ingress"]]
    assert resolve(c, "ml-model.default.svc.cluster.local") == [cluster_ip]
    for what, host, port in (("ClusterIP", cluster_ip, 80), ("NodePort", "127.0.0.1", node_port),
                             ("LoadBalancer", lb, 80)):
        assert_even(spread(host, port, REQUESTS), pods, f"{what} from the host")

    spread_from_a_pod(c, node_port, REQUESTS, pods)


def test_userspace_proxy_a_port_without_endpoints_refuses(
        served: tuple[Cluster, dict[str, Any]]) -> None:
    c, _ = served
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "nobody"},
        "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}}))
    ip = c.kubectl_json("get", "service", "nobody")["spec"]["clusterIP"]
    import socket

    for addr in (ip, "10.111.1.2"):
        with pytest.raises(ConnectionRefusedError), socket.create_connection((addr, 80), 3):
            pass
    c.kubectl("delete", "service", "nobody")


def test_userspace_proxy_a_deleted_replica_stops_receiving(
        served: tuple[Cluster, dict[str, Any]]) -> None:
    deleted_replica_check(served)
