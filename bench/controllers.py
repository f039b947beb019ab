"""Workload controllers at scale, on fake nodes (status only, no processes):

    python -m bench.controllers [--deployments 100] [--replicas 10] [--rollout 100]

1. ``kubectl apply`` of N Deployments × R replicas → every Deployment available: seconds,
   and the server process's CPU (API server, scheduler, controllers, fake nodes — all in
   the one ``kyb server`` process).
2. A Deployment of M replicas, then a new image (``kubectl set image``) → the rollout
   complete (all updated and available, the old ReplicaSet at 0): seconds.

Prints JSON.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.run import Server, _steal, free_port, machine, report

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")


def deployment(name: str, replicas: int, image: str = "registry.k8s.io/pause:3.10"
               ) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "c", "image": image, "resources": {
                             "requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


def _kubectl(server: Server, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(server.data_dir / "kubeconfig")}
    return subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True,
                          env=env, check=True, timeout=300).stdout


def _deployments(server: Server) -> list[dict[str, Any]]:
    with server.client() as c:
        items: list[dict[str, Any]] = c.get(
            "/apis/apps/v1/namespaces/bench/deployments").json()["items"]
    return items


def _wait(cond: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``cond`` holds (polled every 0.25 s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.25)
    raise RuntimeError(f"not done in {timeout:.0f} s")


def _available(d: dict[str, Any], replicas: int) -> bool:
    st = d.get("status") or {}
    return (st.get("observedGeneration") == d["metadata"].get("generation")
            and st.get("availableReplicas") == replicas
            and st.get("updatedReplicas") == replicas and st.get("replicas") == replicas)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deployments", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--rollout", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kyb-ctl-bench-"))
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    server = Server(tmp / "data", free_port())
    server.extra_args = ["--disable-agent", "--fake-nodes", str(args.nodes)]
    try:
        server.start()
        _wait(lambda: len(_kubectl(server, "get", "nodes", "-o", "name").split())
              >= args.nodes, 60)
        _kubectl(server, "create", "namespace", "bench")
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        n, r = args.deployments, args.replicas
        docs = yaml.safe_dump_all([deployment(f"d{i}", r) for i in range(n)])
        cpu0, steal0, t0 = sum(proc.cpu_times()[:2]), _steal(), time.monotonic()
        _kubectl(server, "apply", "-f", "-", stdin=docs)
        _wait(lambda: sum(_available(d, r) for d in _deployments(server)) == n, 600)
        seconds = wall = time.monotonic() - t0
        result["deployments"] = {
            "deployments": n, "replicas_each": r,
            "seconds_apply_to_all_available": round(seconds, 2),
            "server_cpu_seconds": round(sum(proc.cpu_times()[:2]) - cpu0, 2),
            "cpu_steal_percent": round(100 * (_steal() - steal0)
                                       / (wall * (os.cpu_count() or 1)), 1)}
        m = args.rollout
        _kubectl(server, "apply", "-f", "-", stdin=yaml.safe_dump(deployment("roll", m)))

        def roll() -> dict[str, Any]:
            return next(d for d in _deployments(server) if d["metadata"]["name"] == "roll")
        _wait(lambda: _available(roll(), m), 300)
        cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
        _kubectl(server, "set", "image", "-n", "bench", "deployment/roll",
                 "c=registry.k8s.io/pause:3.9")
        _wait(lambda: _available(roll(), m) and "3.9" in str(roll()["spec"]), 600)
        _kubectl(server, "rollout", "status", "-n", "bench", "deployment/roll",
                 "--timeout=300s")
        result["rollout"] = {
            "replicas": m, "seconds_set_image_to_complete": round(time.monotonic() - t0, 2),
            "server_cpu_seconds": round(sum(proc.cpu_times()[:2]) - cpu0, 2)}
        result["rss_mb"] = round(proc.memory_info().rss / 2**20, 1)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(result, args.out)


if __name__ == "__main__":
    main()
