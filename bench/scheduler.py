"""Scheduler throughput in the style of upstream's scheduler_perf, through the real API
server: a ``kyb server`` with N fake nodes (status only, no processes), pods created by
``wrk`` (C, one thread, so the client does not eat the server's CPU), and pods/s measured
from the first create to the last binding, read from the scheduler's own metrics.

    python -m bench.scheduler [--nodes 5000] [--pods 10000] [--cases basic,spread,...]

Prints JSON: per case, pods/s (created → bound), how fast wrk could create them, the
server's CPU per pod, and the scheduler's attempt counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.run import Server, _steal, free_port

HERE = Path(__file__).resolve().parent
ZONES = 3
POD_CPU, POD_MEMORY = "100m", "500Mi"
"""upstream's pod-default.yaml; nodes are its node-default.yaml: 4 cpu, 32Gi, 110 pods."""


def pod(*, cpu: str = POD_CPU, memory: str = POD_MEMORY, labels: dict[str, str] | None = None,
        **spec: Any) -> dict[str, Any]:
    resources = spec.pop("resources", {"requests": {"cpu": cpu, "memory": memory},
                                       "limits": {"cpu": cpu, "memory": memory}})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "pod-", "labels": labels or {"app": "bench"}},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                     "resources": resources}], **spec}}


def _spread(when: str) -> dict[str, Any]:
    return {"topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "bench"}}}]}


_HOST_TERM = {"labelSelector": {"matchLabels": {"app": "bench"}},
              "topologyKey": "kubernetes.io/hostname"}


@dataclass
class Case:
    name: str
    upstream: str
    floor: float
    """upstream's CI floor in pods/s (0: none quoted)."""
    measure: dict[str, Any]
    init: dict[str, Any] | None = None
    init_pods: int = 0
    nodes: int = 0
    """0: --nodes."""
    pods: int = 0
    """0: --pods."""
    node_extra: dict[str, Any] = field(default_factory=dict)


CASES = {
    "basic": Case("SchedulingBasic", "SchedulingBasic/5000Nodes", 1000, pod()),
    "spread": Case("TopologySpreading", "TopologySpreading/5000Nodes", 460,
                   pod(**_spread("DoNotSchedule"))),
    "preferred-spread": Case("PreferredTopologySpreading",
                             "PreferredTopologySpreading/5000Nodes", 340,
                             pod(**_spread("ScheduleAnyway"))),
    "anti-affinity": Case("SchedulingPodAntiAffinity", "SchedulingPodAntiAffinity/5000Nodes",
                          590, pod(affinity={"podAntiAffinity": {
                              "requiredDuringSchedulingIgnoredDuringExecution": [_HOST_TERM]}}),
                          pods=4000),
    "preferred-affinity": Case("SchedulingPreferredPodAffinity",
                               "SchedulingPreferredPodAffinity/5000Nodes", 0,
                               pod(affinity={"podAffinity": {
                                   "preferredDuringSchedulingIgnoredDuringExecution": [
                                       {"weight": 1, "podAffinityTerm": _HOST_TERM}]}})),
    "extended-resources": Case("SchedulingWithExtendedResource",
                               "SchedulingWithExtendedResource/5000Nodes", 180,
                               pod(resources={"requests": {"nvidia.com/gpu": "1"},
                                              "limits": {"nvidia.com/gpu": "1"}}),
                               node_extra={"gpus": 4}),
    "preemption": Case("PreemptionBasic", "PreemptionBasic/500Nodes", 570,
                       pod(cpu="3", priorityClassName="high"),
                       init=pod(cpu="900m", priorityClassName="low"), init_pods=2000,
                       nodes=500, pods=500),
}


def node_list(n: int, extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": f"node-{i}", "cpu": "4", "memory": "32Gi", "pods": 110,
             "labels": {"topology.kubernetes.io/zone": f"zone-{i % ZONES}"}, **extra}
            for i in range(n)]


def metrics(server: Server) -> dict[str, float]:
    with server.client() as c:
        text = c.get("/metrics").text
    out: dict[str, float] = {"bound": 0.0, "pending": 0.0}
    for line in text.splitlines():
        if line.startswith("scheduler_pod_scheduling_sli_duration_seconds_count"):
            out["bound"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("scheduler_pending_pods{"):
            out["pending"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("scheduler_schedule_attempts_total{"):
            m = re.search(r'result="(\w+)"', line)
            if m:
                out[f"attempts_{m.group(1)}"] = out.get(f"attempts_{m.group(1)}", 0.0) + \
                    float(line.rsplit(" ", 1)[1])
    return out


def wrk_create(server: Server, body: Path, count: int, ns: str) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", "-d600s", "--latency", "-s", str(HERE / "create-pods.lua"),
         server.url], capture_output=True, text=True, timeout=660, check=True,
        env={**os.environ, "TOKEN": server.token, "BODY": str(body), "COUNT": str(count),
             "NS": ns}).stdout
    m = re.search(r"requests=(\d+) rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) "
                  r"errors_status=(\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {"requests": int(m.group(1)), "per_second": float(m.group(2)),
            "p50_ms": float(m.group(3)), "p99_ms": float(m.group(4)),
            "non_2xx": int(m.group(5))}


def wait_bound(server: Server, target: float, *, timeout: float) -> tuple[dict[str, float], float]:
    """Poll the scheduler's metrics until ``target`` pods are bound (or nothing moves for
    10 s, or ``timeout``); (last metrics, time of the last increase)."""
    last = metrics(server)
    last_change = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        m = metrics(server)
        if m["bound"] != last["bound"]:
            last_change = time.monotonic()
        last = m
        if m["bound"] >= target:
            break
        if time.monotonic() - last_change > 10:
            break
    return last, last_change


def wait_nodes(server: Server, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while time.monotonic() < deadline:
            items = c.get("/api/v1/nodes").json()["items"]
            if len(items) >= n:
                return
            time.sleep(1)
    raise RuntimeError(f"{n} fake nodes not registered in {timeout:.0f} s")


def run_case(case: Case, *, nodes: int, pods: int, tmp: Path) -> dict[str, Any]:
    n_nodes = case.nodes or nodes
    n_pods = case.pods or pods
    node_file = tmp / "nodes.yaml"
    node_file.write_text(yaml.safe_dump(node_list(n_nodes, case.node_extra)))
    data = tmp / f"data-{case.name}"
    server = Server(data, free_port())
    server.extra_args = ["--disable-agent", "--fake-node-list", str(node_file)]
    try:
        server.start()
        wait_nodes(server, n_nodes)
        with server.client() as c:
            c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": "bench"}})
            for name, value in (("low", 0), ("high", 1000)):
                c.post("/apis/scheduling.k8s.io/v1/priorityclasses", json={
                    "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": name}, "value": value})
        if case.init is not None:
            body = tmp / "init.json"
            body.write_text(json.dumps(case.init))
            wrk_create(server, body, case.init_pods, "bench")
            wait_bound(server, case.init_pods, timeout=300)
        time.sleep(2)  # let the fake nodes' status writes settle
        body = tmp / "pod.json"
        body.write_text(json.dumps(case.measure))
        before = metrics(server)
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        steal0 = _steal()
        t0 = time.monotonic()
        created = wrk_create(server, body, n_pods, "bench")
        target = before["bound"] + created["requests"] - created["non_2xx"]
        after, t_last = wait_bound(server, target, timeout=600)
        elapsed = t_last - t0
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        bound = after["bound"] - before["bound"]
        wall = time.monotonic() - t0
        return {
            "case": case.name, "upstream_case": case.upstream, "nodes": n_nodes,
            "init_pods": case.init_pods, "pods_created": created["requests"],
            "pods_bound": int(bound),
            "pods_per_second": round(bound / elapsed, 1) if elapsed > 0 else 0.0,
            "upstream_ci_floor": case.floor or None,
            "create_per_second": created["per_second"],
            "create_p99_ms": created["p99_ms"],
            "seconds": round(elapsed, 2),
            "server_cpu_ms_per_pod": round(1e3 * cpu / max(bound, 1), 3),
            "server_cpu_percent": round(100 * cpu / wall, 1),
            "attempts": {k[9:]: int(v - before.get(k, 0)) for k, v in after.items()
                         if k.startswith("attempts_")},
            "rss_mb": round(proc.memory_info().rss / 2**20, 1),
            "cpu_steal_percent": round(100 * (_steal() - steal0)
                                       / (wall * (os.cpu_count() or 1)), 1),
        }
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk; `make install` installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="kyb-sched-bench-"))
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "cases": [],
    }
    try:
        for name in args.cases.split(","):
            r = run_case(CASES[name], nodes=args.nodes, pods=args.pods, tmp=tmp)
            print(json.dumps(r), file=sys.stderr, flush=True)
            result["cases"].append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
