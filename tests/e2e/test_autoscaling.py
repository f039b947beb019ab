"""HorizontalPodAutoscaler end to end, on a server with the real node agent: the
``autoscale.yaml`` scenario over ``serve-model.yaml`` scales up while the model's pods burn
CPU and, once the load stops, back down to ``minReplicas`` step by step.

The scenario's third metric (External ``requests_per_second``) has no provider until the
networking issue serves ``external.metrics.k8s.io``: as upstream does, the autoscaler then
still scales up on the metrics it has, but never down, and says so in ScalingActive.
The test shows that, then removes the External metric to watch the scale-down.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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

    # idle: CPU and memory are read; the external metric has no API yet, so no scale-down
    hpa = wait_for("metrics in the autoscaler's status", lambda: (h := _hpa(c)) and any(
        (m.get("resource") or {}).get("name") == "cpu"
        for m in (h.get("status") or {}).get("currentMetrics") or ()) and h, timeout=60)
    active = _condition(hpa, "ScalingActive")
    assert active["status"] == "False" and active["reason"] == "FailedGetExternalMetric", active
    assert "requests_per_second" in active["message"]
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

    # without the External metric, and a short scale-down window, it comes back down
    c.kubectl("patch", "hpa", "ml-model-hpa", "--type=json", "-p", json.dumps([
        {"op": "remove", "path": "/spec/metrics/2"},
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
