"""``kyb server --fake-nodes``: simulated nodes that kubectl sees as real ones."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, free_port, wait_for

pytestmark = pytest.mark.slow

FAKE = ["fake-node-0", "fake-node-1", "fake-node-2"]


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server without a real node and with three fake ones of 2 GPUs each."""
    base = tmp_path_factory.mktemp("fakenodes")
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home",
                extra_args=["--disable-agent", "--fake-nodes", "3", "--fake-node-gpus", "2"])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    yield c
    assert c.stop() == 0, f"kyb server did not exit cleanly:\n{_log(c.log_path)}"


def _log(path: Path) -> str:
    try:
        return path.read_text()[-3000:]
    except OSError:
        return ""



def test_fake_nodes_ready_with_gpus(fake_cluster: Cluster) -> None:
    """kubectl lists three Ready fake nodes declaring 2 allocatable GPUs each."""
    def ready() -> list[Any] | None:
        nodes = fake_cluster.kubectl_json("get", "nodes")["items"]
        return nodes if sorted(n["metadata"]["name"] for n in nodes) == FAKE else None

    nodes = wait_for("three fake nodes", ready)
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert labels["kybernetes.io/fake-node"] == "true"
        assert labels["kubernetes.io/hostname"] == node["metadata"]["name"]
        status = node["status"]
        assert status["allocatable"]["nvidia.com/gpu"] == "2"
        assert status["capacity"] == status["allocatable"]
        conds = {c["type"]: c["status"] for c in status["conditions"]}
        assert conds == {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False",
                         "PIDPressure": "False"}
    table = fake_cluster.kubectl("get", "nodes", "--no-headers").stdout.splitlines()
    assert sorted(line.split()[:2] for line in table) == [[n, "Ready"] for n in FAKE]
    gpus = fake_cluster.kubectl(
        "get", "nodes", "-l", "kybernetes.io/fake-node=true", "-o",
        r"jsonpath={range .items[*]}{.status.allocatable.nvidia\.com/gpu}{' '}{end}").stdout
    assert gpus.split() == ["2", "2", "2"]


def test_leases_exist(fake_cluster: Cluster) -> None:
    """Each fake node has a Lease in kube-node-lease held by itself."""
    def leases() -> list[Any] | None:
        items = fake_cluster.kubectl_json("get", "leases", "-n", "kube-node-lease")["items"]
        return items if sorted(i["metadata"]["name"] for i in items) == FAKE else None

    for lease in wait_for("three leases", leases):
        assert lease["spec"]["holderIdentity"] == lease["metadata"]["name"]
        assert lease["spec"]["leaseDurationSeconds"] == 40
        assert lease["spec"]["renewTime"]


def test_pod_runs_and_deletes_promptly(fake_cluster: Cluster) -> None:
    """A pod bound to fake-node-1 becomes Running and Ready; kubectl delete returns at once."""
    fake_cluster.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: sim, namespace: default}
spec:
  nodeName: fake-node-1
  terminationGracePeriodSeconds: 30
  containers:
  - {name: main, image: registry.example/model-server:1, resources: {limits: {nvidia.com/gpu: 1}}}
""")

    def running() -> Any:
        pod = fake_cluster.kubectl_json("get", "pod", "sim")
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        return pod if pod["status"].get("phase") == "Running" and \
            conds.get("Ready") == "True" else None

    pod = wait_for("the pod to run", running)
    status = pod["status"]
    assert status["podIP"].startswith("10.128.1.")
    assert status["hostIP"] == "127.16.0.2"
    assert status["containerStatuses"][0]["ready"] is True
    assert "running" in status["containerStatuses"][0]["state"]
    fake_cluster.kubectl("wait", "--for=condition=Ready", "pod/sim", "--timeout=10s")
    t0 = time.monotonic()
    fake_cluster.kubectl("delete", "pod", "sim", timeout=20)  # waits until it is gone
    assert time.monotonic() - t0 < 10
    gone = fake_cluster.kubectl("get", "pod", "sim", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
