"""GPU sharing on a live server (issue 8, point 4): a node agent with 2 fake GPUs; shares
of 0.3, 0.5 and 0.2 GPU stack on one device, each pod sees only its device and its
share, ``kubectl describe node`` shows every device's allocation, whole-GPU pods take an
idle device, and a share that fits the node's total but no single device is refused
with a reason naming GPU fragmentation."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, agent_cluster, wait_for

pytestmark = pytest.mark.slow

SCRIPT = ("echo devices=$CUDA_VISIBLE_DEVICES mps=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE "
          "milli=$KYBERNETES_GPU_MILLI; sleep 3600")


PROFILES = """apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: gpu-fgd
  plugins:
    multiPoint:
      enabled: [{name: FGDPlusScore, weight: 1000}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("gpushare")
    (base / "scheduler.yaml").write_text(PROFILES)
    yield from agent_cluster(base, "--fake-gpus", "2", "--scheduler-config",
                             str(base / "scheduler.yaml"))


def _pod(name: str, resources: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "busybox",
                                     "command": ["sh", "-c", SCRIPT],
                                     "resources": {"limits": resources}}]}}


def _share(name: str, milli: int) -> dict[str, Any]:
    return _pod(name, {"kybernetes.io/gpu-milli": str(milli)})


def _running(cluster: Cluster, *names: str) -> dict[str, str]:
    """Each pod's log line, once it runs."""
    out = {}
    for name in names:
        wait_for(f"{name} Running", lambda n=name: cluster.kubectl_json(
            "get", "pod", n)["status"].get("phase") == "Running")
        out[name] = wait_for(f"{name}'s log", lambda n=name: cluster.kubectl(
            "logs", n).stdout.strip())
    return out


def _apply(cluster: Cluster, *objs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def _describe(cluster: Cluster) -> str:
    return cluster.kubectl("describe", "node", cluster.node_name).stdout


def test_shares_stack_on_one_device_and_fragmentation_is_named(cluster: Cluster) -> None:
    node = wait_for("the node", lambda: cluster.kubectl(
        "get", "node", cluster.node_name, "-o", "json", check=False).stdout)
    node = json.loads(node)
    assert node["status"]["allocatable"]["kybernetes.io/gpu-milli"] == "2k"  # canonical 2000
    _apply(cluster, _share("a", 300), _share("b", 500), _share("c", 200))
    logs = _running(cluster, "a", "b", "c")
    assert logs == {"a": "devices=0 mps=30 milli=300", "b": "devices=0 mps=50 milli=500",
                    "c": "devices=0 mps=20 milli=200"}
    for name in "abc":
        pod = cluster.kubectl_json("get", "pod", name)
        assert pod["metadata"]["annotations"]["kybernetes.io/gpu-index"] == "0"
    wait_for("per-device allocation on the node", lambda: (
        "0: 1000/1000 (default/a 300, default/b 500, default/c 200); 1: 0/1000"
        in _describe(cluster)))
    # a whole GPU: the idle device
    _apply(cluster, _pod("whole", {"nvidia.com/gpu": "1"}))
    assert _running(cluster, "whole")["whole"] == "devices=1 mps= milli="
    wait_for("device 1 taken", lambda: "1: 1000/1000 (default/whole 1000)" in
             _describe(cluster))
    cluster.kubectl("delete", "pod", "whole", "c", "--wait=true", "--timeout=60s")
    # 200 free on device 0; 700 goes to device 1, leaving 300 there
    _apply(cluster, _share("d", 700))
    assert _running(cluster, "d")["d"] == "devices=1 mps=70 milli=700"
    wait_for("the allocation follows", lambda: (
        "0: 800/1000 (default/a 300, default/b 500); 1: 700/1000 (default/d 700)"
        in _describe(cluster)))
    # 500 milli-GPU are free on the node, but no device has 400
    _apply(cluster, _share("e", 400))
    event = wait_for("FailedScheduling", lambda: next((
        e for e in cluster.kubectl_json("get", "events", "--field-selector",
                                        "involvedObject.name=e")["items"]
        if e["reason"] == "FailedScheduling"), None))
    assert "1 node(s) had GPU fragmentation: no single GPU has 400/1000 free" in \
        event["message"], event["message"]
    assert cluster.kubectl_json("get", "pod", "e")["status"]["phase"] == "Pending"
    cluster.kubectl("delete", "pod", "a", "b", "d", "e", "--wait=true", "--timeout=60s")
    wait_for("all devices free", lambda: "0: 0/1000; 1: 0/1000" in _describe(cluster))


def test_a_profile_places_shares_with_a_policy(cluster: Cluster) -> None:
    """A pod of the ``gpu-fgd`` profile is placed by FGDPlusScore (typical pods read from
    the cluster's pods) and gets its device like any other."""
    pods = [_share("f1", 600), _share("f2", 300)]
    for p in pods:
        p["spec"]["schedulerName"] = "gpu-fgd"
    _apply(cluster, *pods)
    logs = _running(cluster, "f1", "f2")
    assert logs["f1"] in ("devices=0 mps=60 milli=600", "devices=1 mps=60 milli=600")
    assert logs["f2"].endswith("mps=30 milli=300")
    for name in ("f1", "f2"):
        pod = cluster.kubectl_json("get", "pod", name)
        assert pod["metadata"]["annotations"]["kybernetes.io/gpu-index"] in ("0", "1")
    cluster.kubectl("delete", "pod", "f1", "f2", "--wait=true", "--timeout=60s")


def test_sim_gpu_replays_a_trace_through_the_cli(tmp_path: Path) -> None:
    """``kyb sim gpu`` prints the allocation curve as JSON and draws it."""
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"n{i},32000,65536,2,T4\n" for i in range(4)))
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n" + "".join(
        f"p{i},2000,4096,1,{(300, 500, 700)[i % 3]},\n" for i in range(12)))
    png = tmp_path / "curve.png"
    out = subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "sim", "gpu",
                          "--nodes", str(nodes), "--pods", str(pods), "--policy", "FGD",
                          "--seed", "3", "--plot", str(png)],
                         capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["policy"] == "FGD" and result["capacity_milli"] == 8000
    assert 128 <= result["arrived_pct"] <= 130
    curve = result["curve"]
    assert curve[max(curve, key=int)] == result["allocated_pct"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "sim", "gpu",
                          "--nodes", str(nodes), "--pods", str(pods), "--policy", "Magic"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown policy 'Magic'" in bad.stderr
