"""The shared scenarios on a server with the real node agent, applied unchanged:
serve-model.yaml's replicas serve on their own IPs and answer kubectl's streams;
gpu-serving.yaml's replicas get distinct GPUs."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.cluster import KUBECTL, SCENARIOS, Cluster, agent_cluster, free_port
from tests.e2e.test_pods import ready, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
    reason="running pods needs root and the CNI plugins (Debian containernetworking-plugins)")]


def _pods(cluster: Cluster, ns: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json("get", "pods", "-n", ns, "-l",
                                                       selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_serve_model(cluster: Cluster, namespace: str) -> None:
    """serve-model.yaml: 3 Ready replicas, each answering /predict with its own name on
    its own IP; logs, exec, port-forward and top work on them."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(SCENARIOS / "serve-model.yaml"))
    pods = wait_for("3 ready replicas", lambda: (ps := _pods(cluster, namespace, "app=ml-model"))
                    and len(ps) == 3 and all(ready(p) for p in ps) and ps, timeout=90)
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 3
    for p in pods:
        name = p["metadata"]["name"]
        r = httpx.post(f"http://{p['status']['podIP']}:5000/predict",
                       json={"features": [1.0, 2.0, 3.0]}, timeout=5)
        assert r.json() == {"prediction": 0.5 - 2.5 + 6.0 + 0.1, "version": "v1", "pod": name}
    name = pods[0]["metadata"]["name"]
    assert cluster.kubectl("logs", name, "-n", namespace).returncode == 0
    out = cluster.kubectl("exec", name, "-n", namespace, "--", "python", "-c",
                          "import os; print(os.environ['POD_NAME'])").stdout
    assert out == f"{name}\n"
    port = free_port()
    fwd = subprocess.Popen([KUBECTL, f"--cache-dir={cluster.cache_dir / 'kube-cache'}",
                            "port-forward", "-n", namespace, f"pod/{name}", f"{port}:5000"],
                           env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def answered() -> Any:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
            except (OSError, httpx.HTTPError):
                return None
        assert wait_for("the forwarded port", answered) == {"ok": True}
    finally:
        fwd.terminate()
        fwd.wait(timeout=10)
    top = wait_for("kubectl top", lambda: (p := cluster.kubectl(
        "top", "pods", "-n", namespace, check=False)).returncode == 0 and p.stdout)
    assert all(p["metadata"]["name"] in top for p in pods)


def test_serve_model_rollouts_on_the_node_agent(cluster: Cluster, namespace: str) -> None:
    """serve-model.yaml on real pods: deleted pods are replaced; ``kubectl set image`` rolls
    out without ever having fewer than replicas - maxUnavailable (3 - 0) Ready pods
    (sampled all along); ``rollout undo`` brings the old template back; an image the node
    does not have stalls the next rollout until ProgressDeadlineExceeded, the old pods
    still serving."""
    c, ns = cluster, namespace
    c.kubectl("apply", "-n", ns, "-f", str(SCENARIOS / "serve-model.yaml"))
    c.kubectl("rollout", "status", "deployment/ml-model", "-n", ns, "--timeout=90s",
              timeout=100)
    victim = _pods(c, ns, "app=ml-model")[0]["metadata"]["name"]
    c.kubectl("delete", "pod", victim, "-n", ns, "--wait=false")
    wait_for("3 ready replicas again", lambda: (ps := _pods(c, ns, "app=ml-model"))
             and len(ps) == 3 and all(ready(p) for p in ps)
             and victim not in {p["metadata"]["name"] for p in ps}, timeout=60)

    lowest = [3]
    stop = threading.Event()

    def sample() -> None:
        with c.http() as http:
            while not stop.is_set():
                items = http.get(f"/api/v1/namespaces/{ns}/pods",
                                 params={"labelSelector": "app=ml-model"}).json()["items"]
                lowest[0] = min(lowest[0], sum(
                    1 for p in items if ready(p) and not p["metadata"].get("deletionTimestamp")))
                time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        c.kubectl("set", "image", "deployment/ml-model", "-n", ns, "ml-model=python:3.12")
        c.kubectl("rollout", "status", "deployment/ml-model", "-n", ns, "--timeout=120s",
                  timeout=130)
    finally:
        stop.set()
        sampler.join()
    assert lowest[0] >= 3, f"only {lowest[0]} ready pods during the rollout"
    pods = _pods(c, ns, "app=ml-model")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"python:3.12"}

    c.kubectl("rollout", "undo", "deployment/ml-model", "-n", ns)
    c.kubectl("rollout", "status", "deployment/ml-model", "-n", ns, "--timeout=120s",
              timeout=130)
    d = c.kubectl_json("get", "deployment", "ml-model", "-n", ns)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "python:3.11"

    c.kubectl("patch", "deployment", "ml-model", "-n", ns, "--type=merge",
              "-p", '{"spec": {"progressDeadlineSeconds": 10}}')
    c.kubectl("set", "image", "deployment/ml-model", "-n", ns, "ml-model=no-such-image:1")
    out = c.kubectl("rollout", "status", "deployment/ml-model", "-n", ns, "--timeout=60s",
                    check=False, timeout=70)
    assert out.returncode != 0
    assert 'deployment "ml-model" exceeded its progress deadline' in out.stderr
    d = c.kubectl_json("get", "deployment", "ml-model", "-n", ns)
    progressing = next(x for x in d["status"]["conditions"] if x["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False",
                                                              "ProgressDeadlineExceeded")
    assert d["status"]["readyReplicas"] == 3  # the old pods still serve
    stuck = [p for p in _pods(c, ns, "app=ml-model")
             if p["spec"]["containers"][0]["image"] == "no-such-image:1"]
    assert stuck and all(
        ((s.get("state") or {}).get("waiting") or {}).get("reason") in
        ("ErrImagePull", "ImagePullBackOff")
        for p in stuck for s in p["status"].get("containerStatuses") or ())


@pytest.fixture
def gpu_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A server whose node declares 4 fake GPUs."""
    yield from agent_cluster(tmp_path, "--fake-gpus", "4")


def test_gpu_serving_replicas_get_distinct_gpus(gpu_cluster: Cluster) -> None:
    """gpu-serving.yaml with --fake-gpus 4: two replicas, two different devices."""
    c = gpu_cluster
    wait_for("the node", lambda: c.kubectl("get", "node", c.node_name, check=False)
             .returncode == 0)
    c.kubectl("apply", "-f", str(SCENARIOS / "gpu-serving.yaml"))
    pods = wait_for("2 running replicas", lambda: (ps := _pods(c, "default", "app=gpu-model"))
                    and len(ps) == 2 and all(p["status"].get("phase") == "Running" for p in ps)
                    and ps, timeout=90)
    seen = set()
    for p in pods:
        name = p["metadata"]["name"]
        line = wait_for(f"{name}'s devices", lambda n=name: c.kubectl(
            "logs", n, check=False).stdout.strip(), timeout=30)
        assert line.startswith("visible GPUs: ")
        seen.add(line.removeprefix("visible GPUs: "))
    assert len(seen) == 2 and seen <= {"0", "1", "2", "3"}
    c.kubectl("delete", "deployment", "gpu-model", "--wait=false")
    time.sleep(0.5)
