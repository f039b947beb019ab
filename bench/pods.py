"""Pod start latency and the node agent's cost, on a real ``kyb server`` (root needed).

    python -m bench.pods [--pods 100]

Measures created → Ready for one pod and for N pods created at once (busybox
``sleep``, bound to the server's own node, once its pool of wired pod networks is full),
then the server process's CPU use while the
N pods run idle, its RSS, and the RSS of the per-container shims. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench.run import Server, free_port, report
from kybernetes.kubelet.network import pooled_namespaces

REPO = Path(__file__).resolve().parents[1]


def pod(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": "busybox",
                                     "command": ["sleep", "3600"]}]}}


async def start_pods(server: Server, ns: str, names: list[str], node: str) -> list[float]:
    """Create the pods at once; seconds from each create's acknowledgement to Ready."""
    ctx = ssl.create_default_context(cafile=server.ca)
    headers = {"Authorization": f"Bearer {server.token}"}
    created: dict[str, float] = {}
    ready: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=server.url, verify=ctx, headers=headers,
                                 timeout=60) as c:
        rv = (await c.get(f"/api/v1/namespaces/{ns}/pods")).json()["metadata"][
            "resourceVersion"]
        done = asyncio.Event()

        async def watch() -> None:
            async with c.stream("GET", f"/api/v1/namespaces/{ns}/pods", params={
                    "watch": "true", "resourceVersion": rv, "timeoutSeconds": "300"}) as r:
                async for line in r.aiter_lines():
                    if not line:
                        continue
                    obj = orjson.loads(line)["object"]
                    name = obj["metadata"]["name"]
                    conds = (obj.get("status") or {}).get("conditions") or []
                    if name not in ready and any(x["type"] == "Ready" and x["status"] == "True"
                                                 for x in conds):
                        ready[name] = time.perf_counter()
                        if len(ready) == len(names):
                            done.set()
                            return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.3)

        async def create(name: str) -> None:
            r = await c.post(f"/api/v1/namespaces/{ns}/pods", json=pod(name, node))
            r.raise_for_status()
            created[name] = time.perf_counter()

        await asyncio.gather(*(create(n) for n in names))
        await asyncio.wait_for(done.wait(), 300)
        watcher.cancel()
    return sorted(ready[n] - created[n] for n in names)


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--idle-seconds", type=int, default=30)
    ap.add_argument("--pool", type=int, default=110,
                    help="--pod-network-pool of the server (110: its default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("running pods needs root")
    tmp = Path(tempfile.mkdtemp(prefix="kyb-bench-pods-"))
    server = Server(tmp / "data", free_port())
    server.extra_args = ["--node-name", "bench-node", "--agent-port", str(free_port()),
                         "--pod-cidr", "10.42.200.0/24", "--pod-network-pool", str(args.pool)]
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "pods": args.pods}
    try:
        server.start()
        with server.client() as c:
            c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": "bench"}}).raise_for_status()
            deadline = time.monotonic() + 30
            while c.get("/api/v1/nodes/bench-node").status_code != 200:
                assert time.monotonic() < deadline, "the node did not register"
                time.sleep(0.1)
        # a node that has been up a few seconds: its pool of wired pod networks is full
        t0 = time.monotonic()
        while len(pooled_namespaces(tmp / "data" / "agent")) < args.pool:
            assert time.monotonic() - t0 < 60, "the pod network pool did not fill"
            time.sleep(0.2)
        result["network_pool"] = args.pool
        result["network_pool_fill_seconds"] = round(time.monotonic() - t0, 2)
        # the first pod also builds the shim: warm up, then measure one pod alone
        asyncio.run(start_pods(server, "bench", ["warmup"], "bench-node"))
        one = asyncio.run(start_pods(server, "bench", ["single"], "bench-node"))
        result["one_pod_seconds"] = round(one[0], 3)
        many = asyncio.run(start_pods(server, "bench", [f"p{i:03d}" for i in range(args.pods)],
                                      "bench-node"))
        result["many_pods"] = {"p50_s": round(statistics.median(many), 3),
                               "p99_s": round(percentile(many, 99), 3),
                               "max_s": round(many[-1], 3)}
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        time.sleep(5)
        cpu0 = sum(proc.cpu_times()[:2])
        time.sleep(args.idle_seconds)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        result["idle_cpu_percent_of_one_core"] = round(100 * cpu / args.idle_seconds, 2)
        result["server_rss_mb"] = round(proc.memory_info().rss / 2**20, 1)
        shims = [p for p in psutil.process_iter(["cmdline"])
                 if p.info["cmdline"] and "kyb-shim" in p.info["cmdline"][0]
                 and str(tmp) in " ".join(p.info["cmdline"])]
        result["shim_processes"] = len(shims)
        result["shim_rss_mb_total"] = round(sum(p.memory_info().rss for p in shims) / 2**20, 1)
    finally:
        server.stop_and_clean(tmp)
    report(result, args.out)


if __name__ == "__main__":
    main()
