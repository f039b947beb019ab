"""HorizontalPodAutoscaler end to end, on a server with the real node agent: the
``autoscale.yaml`` scenario over ``serve-model.yaml`` scales up while the model's pods burn
CPU and, once the load stops, back down to ``minReplicas`` step by step.

The scenario's third metric, External ``requests_per_second``, is the request rate the
service proxy measures (``external.metrics.k8s.io``): a bounded HTTP load on the
Service's load balancer address scales the model up, and it comes back down after.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kybernetes.api import quantity
from tests.e2e.cluster import KUBECTL, SCENARIOS, Cluster, agent_cluster
from tests.e2e.test_pods import ready, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
    reason="running pods needs root and the CNI plugins (Debian containernetworking-plugins)")]

BURN_SECONDS = 30


@pytest.fixture
def hpa_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A server whose autoscalers sync every 2 s (upstream's default is 15 s)."""
    yield from agent_cluster(tmp_path, "--horizontal-pod-autoscaler-sync-period", "2s")


def _hpa(c: Cluster) -> dict[str, Any]:
    out: dict[str, Any] = c.kubectl_json("get", "hpa", "ml-model-hpa")
    return out


def _condition(hpa: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((x for x in (hpa.get("status") or {}).get("conditions") or ()
                 if x["type"] == type_), {})


def _replicas(c: Cluster) -> int:
    return int(c.kubectl_json("get", "deployment", "ml-model")["spec"]["replicas"])


def _burn(c: Cluster, pod: str) -> subprocess.Popen[bytes]:
    """A busy loop inside the pod (kubectl exec runs in the container's cgroups)."""
    code = f"import time\nt = time.time() + {BURN_SECONDS}\nwhile time.time() < t: pass"
    return subprocess.Popen([KUBECTL, f"--cache-dir={c.cache_dir / 'kube-cache'}", "exec", pod,
                             "--", "python", "-c", code], env=c.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_autoscale_scenario_scales_up_under_load_and_back_down(hpa_cluster: Cluster) -> None:
    c = hpa_cluster
    wait_for("the node", lambda: c.kubectl("get", "node", c.node_name, check=False)
             .returncode == 0)
    c.kubectl("apply", "-f", str(SCENARIOS / "serve-model.yaml"))
    pods = wait_for("3 ready replicas", lambda: (ps := [
        p for p in c.kubectl_json("get", "pods", "-l", "app=ml-model")["items"]
        if not p["metadata"].get("deletionTimestamp")]) and len(ps) == 3
        and all(ready(p) for p in ps) and ps, timeout=90)
    c.kubectl("apply", "-f", str(SCENARIOS / "autoscale.yaml"))

    # idle: CPU, memory and the request rate (none) are read; the 5 min scale-down
    # window keeps the 3 replicas
    def all_three(h: dict[str, Any]) -> bool:
        kinds = {(m.get("resource") or {}).get("name") or m.get("type")
                 for m in (h.get("status") or {}).get("currentMetrics") or ()}
        return kinds == {"cpu", "memory", "External"}
    hpa = wait_for("the three metrics in the autoscaler's status",
                   lambda: (h := _hpa(c)) and all_three(h) and h, timeout=60)
    active = _condition(hpa, "ScalingActive")
    assert active["status"] == "True" and active["reason"] == "ValidMetricFound", active
    [rate] = [m for m in hpa["status"]["currentMetrics"] if m["type"] == "External"]
    assert rate["external"]["metric"]["name"] == "requests_per_second"
    assert rate["external"]["current"]["averageValue"] == "0"
    assert _replicas(c) == 3
    table = c.kubectl("get", "hpa", "ml-model-hpa").stdout
    assert "Deployment/ml-model" in table and "cpu: " in table and "/70%" in table, table

    # load: every replica burns a core; 3 -> at most max(2 x 3, 4) = 6 in the first step
    burners = [_burn(c, p["metadata"]["name"]) for p in pods]
    try:
        wait_for("a scale-up", lambda: _replicas(c) > 3, timeout=60)
        assert _replicas(c) == 6
        events = c.kubectl_json("get", "events", "--field-selector",
                                "involvedObject.name=ml-model-hpa,reason=SuccessfulRescale")
        messages = [e["message"] for e in events["items"]]
        assert ("New size: 6; reason: cpu resource utilization (percentage of request) "
                "above target") in messages, messages
        hpa = _hpa(c)
        cpu = next(m for m in hpa["status"]["currentMetrics"]
                   if (m.get("resource") or {}).get("name") == "cpu")
        assert cpu["resource"]["current"]["averageUtilization"] > 70
        assert hpa["status"]["lastScaleTime"]
        for b in burners:  # the loops end by themselves (a closed exec stream, as upstream,
            b.wait(timeout=BURN_SECONDS + 30)  # does not stop the command in the pod)
    finally:
        for b in burners:
            if b.poll() is None:
                b.kill()
                b.wait(timeout=10)

    def cpu_now() -> int:
        metrics = (_hpa(c).get("status") or {}).get("currentMetrics") or ()
        cpu = [m for m in metrics if (m.get("resource") or {}).get("name") == "cpu"]
        return int(cpu[0]["resource"]["current"]["averageUtilization"]) if cpu else 100
    wait_for("the load gone from the metrics", lambda: cpu_now() < 70, timeout=30)

    # with a short scale-down window, it comes back down
    c.kubectl("patch", "hpa", "ml-model-hpa", "--type=json", "-p", json.dumps([
        {"op": "add", "path": "/spec/behavior",
         "value": {"scaleDown": {"stabilizationWindowSeconds": 6}}}]))
    seen = [_replicas(c)]

    def at_min() -> bool:
        n = _replicas(c)
        if n != seen[-1]:
            seen.append(n)
        return n == 2
    wait_for("the scale-down to minReplicas", at_min, timeout=120)
    assert seen == sorted(seen, reverse=True), f"replicas went {seen}"
    hpa = _hpa(c)
    assert _condition(hpa, "ScalingActive")["reason"] == "ValidMetricFound"
    assert hpa["status"]["desiredReplicas"] == 2


@pytest.fixture
def fast_hpa_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Autoscalers syncing every 2 s with a 6 s scale-down window."""
    yield from agent_cluster(tmp_path, "--horizontal-pod-autoscaler-sync-period", "2s",
                             "--horizontal-pod-autoscaler-downscale-stabilization", "6s")


def _load(host: str, port: int, stop: threading.Event, counts: list[int]) -> None:
    """POST /predict on new connections until ``stop``, for 40 s or 40,000 requests at most."""
    deadline = time.monotonic() + 40
    while not stop.is_set() and time.monotonic() < deadline and counts[0] < 40000:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request("POST", "/predict", body=b'{"features": [1, 2, 3]}')
            conn.getresponse().read()
            counts[0] += 1
        except OSError:
            counts[1] += 1
        finally:
            conn.close()


def test_request_rate_scales_the_model_up_and_back_down(fast_hpa_cluster: Cluster) -> None:
    """autoscale.yaml's External ``requests_per_second`` (target 50 per replica): idle, the
    model goes down to minReplicas; a bounded load on the load balancer address raises the
    rate above the target and the replicas with it; after the load they come back down."""
    c = fast_hpa_cluster
    c.kubectl("apply", "-f", str(SCENARIOS / "serve-model.yaml"))
    c.kubectl("rollout", "status", "deployment/ml-model", "--timeout=90s", timeout=100)
    lb = wait_for("the load balancer's address", lambda: (c.kubectl_json(
        "get", "service", "ml-model").get("status") or {}).get("loadBalancer", {})
        .get("ingress"))[0]["ip"]
    c.kubectl("apply", "-f", str(SCENARIOS / "autoscale.yaml"))
    wait_for("the idle model at minReplicas", lambda: _replicas(c) == 2, timeout=90)

    def rate() -> float:
        metrics = (_hpa(c).get("status") or {}).get("currentMetrics") or ()
        ext = [m for m in metrics if m["type"] == "External"]
        return quantity.value(ext[0]["external"]["current"]["averageValue"]) if ext else 0.0

    stop, counts = threading.Event(), [0, 0]
    workers = [threading.Thread(target=_load, args=(lb, 80, stop, counts)) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        wait_for("the request rate above target in the autoscaler", lambda: rate() > 50,
                 timeout=40)
        wait_for("a scale-up", lambda: _replicas(c) > 2, timeout=40)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert counts[0] > 0
    events = c.kubectl_json("get", "events", "--field-selector",
                            "involvedObject.name=ml-model-hpa,reason=SuccessfulRescale")
    assert any("above target" in e["message"] for e in events["items"]), events
    wait_for("the rate to fall", lambda: rate() < 50, timeout=60)
    wait_for("the scale-down to minReplicas", lambda: _replicas(c) == 2, timeout=120)
