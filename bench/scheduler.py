"""Scheduler throughput in the style of upstream's scheduler_perf, through the real API
server: a ``kyb server`` with N fake nodes (status only, no processes), pods created by
``wrk`` (C, one thread, so the client does not eat the server's CPU), and pods/s measured
from the first create to the last binding, read from the scheduler's own metrics.

    python -m bench.scheduler [--nodes 5000] [--pods 10000] [--cases basic,spread,...]
                              [--separate-scheduler]

``--separate-scheduler`` runs the scheduler as its own ``kyb scheduler`` process (on the
second core) beside ``kyb server --disable-scheduler``; bindings are then counted from the
API server's request metrics, and CPU is reported per process.

Prints JSON: per case, pods/s (created → bound), how fast wrk could create them, the
server's CPU per pod, and the scheduler's attempt counts. In a case with churn
(PreemptionAsync) a thread creates one more pod every 200 ms beside the measured ones, in
a namespace of its own; those are left out of the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.run import Server, _steal, free_port, machine, report

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
    churn: dict[str, Any] | None = None
    """A pod created every ``churn_interval`` seconds while the measured pods are
    (upstream's ``churn`` op, mode create), in a namespace of its own."""
    churn_interval: float = 0.2


POLL_SECONDS = 0.25
"""How often the server's /metrics is read (each read costs the server ~5 ms of CPU: at
10 per second, as before 2026-11-23, rendering them took 10-20 % of its CPU)."""

CASES = {
    "basic": Case("SchedulingBasic", "SchedulingBasic/5000Nodes", 1000, pod()),
    "spread": Case("TopologySpreading", "TopologySpreading/5000Nodes", 460,
                   pod(**_spread("DoNotSchedule")), pods=5000),
    "preferred-spread": Case("PreferredTopologySpreading",
                             "PreferredTopologySpreading/5000Nodes", 340,
                             pod(**_spread("ScheduleAnyway")), pods=5000),
    "anti-affinity": Case("SchedulingPodAntiAffinity", "SchedulingPodAntiAffinity/5000Nodes",
                          590, pod(affinity={"podAntiAffinity": {
                              "requiredDuringSchedulingIgnoredDuringExecution": [_HOST_TERM]}}),
                          pods=2000),
    "preferred-affinity": Case("SchedulingPreferredPodAffinity",
                               "SchedulingPreferredPodAffinity/5000Nodes", 0,
                               pod(affinity={"podAffinity": {
                                   "preferredDuringSchedulingIgnoredDuringExecution": [
                                       {"weight": 1, "podAffinityTerm": _HOST_TERM}]}}),
                               pods=2000),
    "extended-resources": Case("SchedulingWithExtendedResource",
                               "SchedulingWithExtendedResource/5000Nodes", 180,
                               pod(resources={"requests": {"nvidia.com/gpu": "1"},
                                              "limits": {"nvidia.com/gpu": "1"}}),
                               node_extra={"gpus": 4}, pods=5000),
    # upstream's preemption cases (default_preemption/performance-config.yaml): 4
    # low-priority pods (900m) fill each node to 3.6 of its 4 cpu; a high-priority pod
    # (3 cpu) must preempt 3 of them. PreemptionBasic measures the preemptors (no
    # threshold upstream; its 5000-node workload is disabled there); PreemptionAsync
    # measures ordinary pods (100m, which fit the 0.4 cpu left) scheduled while a
    # preemptor arrives every 200 ms, and has the CI threshold of 570 pods/s.
    "preemption": Case("PreemptionBasic", "PreemptionBasic/500Nodes", 0,
                       pod(cpu="3", priorityClassName="high"),
                       init=pod(cpu="900m", priorityClassName="low",
                                terminationGracePeriodSeconds=0),
                       init_pods=2000, nodes=500, pods=500),
    "preemption-5000": Case("PreemptionBasic", "PreemptionBasic/5000Nodes", 0,
                            pod(cpu="3", priorityClassName="high"),
                            init=pod(cpu="900m", priorityClassName="low",
                                     terminationGracePeriodSeconds=0),
                            init_pods=20000, nodes=5000, pods=5000),
    "preemption-async": Case("PreemptionAsync", "PreemptionAsync/5000Nodes", 570,
                             pod(priorityClassName="low"),
                             init=pod(cpu="900m", priorityClassName="low",
                                      terminationGracePeriodSeconds=0),
                             init_pods=20000, nodes=5000, pods=5000,
                             churn=pod(cpu="3", priorityClassName="high")),
}


def node_list(n: int, extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": f"node-{i}", "cpu": "4", "memory": "32Gi", "pods": 110,
             "labels": {"topology.kubernetes.io/zone": f"zone-{i % ZONES}"}, **extra}
            for i in range(n)]


def metrics(server: Server, *, separate: bool = False) -> dict[str, float]:
    """Pods created and bound so far, pending pods and scheduling attempts, from
    ``/metrics`` (the API server's request counts and the scheduler's own; a scheduler in
    its own process: the API server's count of bindings)."""
    with server.client() as c:
        text = c.get("/metrics").text
    out: dict[str, float] = {"bound": 0.0, "pending": 0.0, "created": 0.0}
    for line in text.splitlines():
        value = line.rsplit(" ", 1)[-1]
        binding = separate and line.startswith("apiserver_request_total{") and \
            'resource="pods",' in line and 'subresource="binding"' in line and \
            'verb="create"' in line and 'code="201"' in line
        if binding or line.startswith("scheduler_pod_scheduling_sli_duration_seconds_count"):
            out["bound"] += float(value)
        elif line.startswith("scheduler_pending_pods{"):
            out["pending"] += float(value)
        elif line.startswith("scheduler_schedule_attempts_total{"):
            m = re.search(r'result="(\w+)"', line)
            if m:
                key = f"attempts_{m.group(1)}"
                out[key] = out.get(key, 0.0) + float(value)
        elif line.startswith("apiserver_request_total{") and 'resource="pods",' in line \
                and 'subresource=""' in line and 'verb="create"' in line \
                and 'code="201"' in line:
            out["created"] += float(value)
    return out


class Churn(threading.Thread):
    """Creates ``body`` in the namespace ``churn`` every ``interval`` seconds until
    stopped, as upstream's churn op (mode create) does: a few requests a second, which
    cost the server little and this process less."""

    NAMESPACE = "churn"

    def __init__(self, server: Server, body: dict[str, Any], interval: float) -> None:
        super().__init__(daemon=True)
        self.server, self.body, self.interval = server, body, interval
        self.created = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with self.server.client() as c:
            while not self.halt.is_set():
                r = c.post(f"/api/v1/namespaces/{self.NAMESPACE}/pods", json=self.body)
                self.created += r.status_code == 201
                self.halt.wait(self.interval)

    def bound(self) -> int:
        """How many of them are bound to a node."""
        with self.server.client() as c:
            items = c.get(f"/api/v1/namespaces/{self.NAMESPACE}/pods").json()["items"]
        return sum(1 for p in items if (p.get("spec") or {}).get("nodeName"))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def create_and_wait(server: Server, body: Path, count: int, ns: str, *,
                    timeout: float = 600, separate: bool = False,
                    churn: Churn | None = None) -> dict[str, Any]:
    """Create ``count`` pods with wrk while polling the metrics; returns when they are all
    bound (or the scheduler did nothing for 20 s): first create → last bind, and when the creates
    finished. The pods of ``churn`` are left out of the counts."""

    def measure() -> dict[str, float]:
        m = metrics(server, separate=separate)
        if churn is not None:
            m["created"] -= churn.created
            m["bound"] -= churn.bound()
        return m

    before = measure()
    t0 = time.monotonic()
    wrk = subprocess.Popen(
        ["wrk", "-t1", "-c16", f"-d{int(timeout)}s", "--latency", "-s",
         str(HERE / "create-pods.lua"), server.url], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TOKEN": server.token, "BODY": str(body), "COUNT": str(count),
             "NS": ns})
    created_at = bound_at = moved_at = t0
    last = before
    try:
        while time.monotonic() - t0 < timeout:
            time.sleep(POLL_SECONDS)
            m = measure()
            now = time.monotonic()
            if m["created"] != last["created"]:
                created_at = now
            if m["bound"] != last["bound"]:
                bound_at = now
            if m["bound"] != last["bound"] or any(
                    m[k] != last.get(k) for k in m if k.startswith("attempts_")):
                moved_at = now
            last = m
            if m["bound"] - before["bound"] >= count:
                break
            if now - max(created_at, moved_at) > 20:
                break
    finally:
        wrk.terminate()
        wrk.wait(timeout=10)
    return {"before": before, "after": last, "t0": t0, "created_at": created_at,
            "bound_at": bound_at}


def wait_nodes(server: Server, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while time.monotonic() < deadline:
            items = c.get("/api/v1/nodes").json()["items"]
            if len(items) >= n:
                return
            time.sleep(1)
    raise RuntimeError(f"{n} fake nodes not registered in {timeout:.0f} s")


def run_case(case: Case, *, nodes: int, pods: int, tmp: Path,
             separate: bool = False) -> dict[str, Any]:
    n_nodes = case.nodes or nodes
    n_pods = case.pods or pods
    node_file = tmp / "nodes.yaml"
    node_file.write_text(yaml.safe_dump(node_list(n_nodes, case.node_extra)))
    data = tmp / f"data-{case.name}"
    server = Server(data, free_port())
    server.extra_args = ["--disable-agent", "--fake-node-list", str(node_file)]
    if separate:
        server.extra_args.append("--disable-scheduler")
    scheduler: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        if separate:
            scheduler = subprocess.Popen(
                [sys.executable, "-m", "kybernetes.cli.main", "scheduler", "--kubeconfig",
                 str(data / "kubeconfig")], stdout=subprocess.DEVNULL,
                stderr=(tmp / f"scheduler-{case.name}.log").open("wb"))
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
            create_and_wait(server, body, case.init_pods, "bench", separate=separate)
        time.sleep(2)  # let the fake nodes' status writes settle
        churn: Churn | None = None
        if case.churn is not None:
            with server.client() as c:
                c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": Churn.NAMESPACE}})
            churn = Churn(server, case.churn, case.churn_interval)
        body = tmp / "pod.json"
        body.write_text(json.dumps(case.measure))
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        sched_proc = psutil.Process(scheduler.pid) if scheduler is not None else None
        cpu0 = sum(proc.cpu_times()[:2])
        sched_cpu0 = sum(sched_proc.cpu_times()[:2]) if sched_proc is not None else 0.0
        steal0 = _steal()
        if churn is not None:
            churn.start()
        try:
            run = create_and_wait(server, body, n_pods, "bench", separate=separate, churn=churn)
        finally:
            if churn is not None:
                churn.stop()
        before, after, t0 = run["before"], run["after"], run["t0"]
        elapsed = run["bound_at"] - t0
        wall = time.monotonic() - t0
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        sched_cpu = sum(sched_proc.cpu_times()[:2]) - sched_cpu0 if sched_proc else 0.0
        bound = after["bound"] - before["bound"]
        created = after["created"] - before["created"]
        create_s = run["created_at"] - t0
        return {
            "case": case.name, "upstream_case": case.upstream, "nodes": n_nodes,
            "init_pods": case.init_pods, "pods_created": int(created),
            "pods_bound": int(bound),
            "pods_per_second": round(bound / elapsed, 1) if elapsed > 0 else 0.0,
            "upstream_ci_floor": case.floor or None,
            "creates_per_second": round(created / create_s, 1) if create_s > 0 else 0.0,
            "seconds": round(elapsed, 2),
            "server_cpu_ms_per_pod": round(1e3 * cpu / max(bound, 1), 3),
            "server_cpu_percent": round(100 * cpu / wall, 1),
            "attempts": {k[9:]: int(v - before.get(k, 0)) for k, v in after.items()
                         if k.startswith("attempts_")},
            "rss_mb": round(proc.memory_info().rss / 2**20, 1),
            **({"churn_pods_created": churn.created, "churn_pods_bound": churn.bound()}
               if churn is not None else {}),
            **({"scheduler_process": True,
                "scheduler_cpu_ms_per_pod": round(1e3 * sched_cpu / max(bound, 1), 3),
                "scheduler_cpu_percent": round(100 * sched_cpu / wall, 1),
                "scheduler_rss_mb": round(sched_proc.memory_info().rss / 2**20, 1)}
               if sched_proc is not None else {}),
            "cpu_steal_percent": round(100 * (_steal() - steal0)
                                       / (wall * (os.cpu_count() or 1)), 1),
        }
    finally:
        if scheduler is not None:
            scheduler.terminate()
            scheduler.wait(timeout=15)
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--separate-scheduler", action="store_true",
                    help="run the scheduler as its own `kyb scheduler` process")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk; `make install` installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="kyb-sched-bench-"))
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "cases": [],
    }
    try:
        for name in args.cases.split(","):
            r = run_case(CASES[name], nodes=args.nodes, pods=args.pods, tmp=tmp,
                         separate=args.separate_scheduler)
            print(json.dumps(r), file=sys.stderr, flush=True)
            result["cases"].append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(result, args.out)


if __name__ == "__main__":
    main()
