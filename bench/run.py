"""``make bench``: API server figures on this machine, printed as JSON.

Measures, against a real ``kyb server`` process on loopback HTTPS:
cold start to /readyz, idle RSS, creates/s and GETs/s with wrk (-t1 -c16), the time to
list 10,000 ConfigMaps, and watch-event latency to 100 concurrent watchers.
The load generators are wrk (C) or a single asyncio process, so the client does not eat
the server's CPU more than it must.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "bench"
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = ["--agent-port", str(free_port()),
                                      "--pod-cidr", "10.42.201.0/24"]
        log = os.environ.get("KYB_BENCH_SERVER_LOG", "")
        self.log_path = Path(log) if log else None
        """Where the server's log goes ($KYB_BENCH_SERVER_LOG; default: nowhere)."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> float:
        t0 = time.monotonic()
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kybernetes.cli.main", "server", "--data-dir",
             str(self.data_dir), "--port", str(self.port), "--bind-address", "127.0.0.1",
             "--advertise-address", "127.0.0.1", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        if not isinstance(log, int):
            log.close()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", verify=ctx, timeout=0.5).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited")
            if time.monotonic() - t0 > 30:
                raise RuntimeError("server not ready in 30 s")
            time.sleep(0.005)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                # never leave it behind; the caller learns it did not stop in time
                self.proc.kill()
                self.proc.wait()
                raise

    def stop_and_clean(self, tmp: Path) -> None:
        """Stop the server, stop the pods its node agent left running, remove ``tmp``."""
        self.stop()
        subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "killall", "--data-dir",
                        str(self.data_dir)], capture_output=True, check=False, cwd=REPO)
        shutil.rmtree(tmp, ignore_errors=True)

    @property
    def token(self) -> str:
        return (self.data_dir / "pki" / "admin.token").read_text().strip()

    @property
    def ca(self) -> str:
        return str(self.data_dir / "pki" / "ca.crt")

    def settle(self, *, quiet: float = 0.05, limit: float = 20.0) -> float:
        """Wait until the server's components have started (its CPU use over one second
        falls under ``quiet``), so the measurements do not race their start-up."""
        assert self.proc is not None
        p = psutil.Process(self.proc.pid)
        t0 = time.monotonic()
        time.sleep(1)
        while time.monotonic() - t0 < limit:
            c0 = sum(p.cpu_times()[:2])
            time.sleep(1)
            if sum(p.cpu_times()[:2]) - c0 < quiet:
                break
        return time.monotonic() - t0

    def rss_mb(self) -> float:
        assert self.proc is not None
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.ca),
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=60)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30)}


def report(result: dict[str, Any], out: Path | None) -> None:
    """Print the result as JSON, and write it to ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


def _steal() -> float:
    """CPU time stolen by the hypervisor so far (seconds, all CPUs)."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def wrk(server: Server, script: Path, *, seconds: int, env: dict[str, str]) -> dict[str, float]:
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    cpu0 = sum(proc.cpu_times()[:2])
    steal0 = _steal()
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(script), server.url],
        capture_output=True, text=True, env={**os.environ, "TOKEN": server.token, **env},
        timeout=seconds + 60, check=True).stdout
    m = re.search(r"requests=(\d+) rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) "
                  r"errors_status=(\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    requests = int(m.group(1))
    return {"requests": requests, "per_second": float(m.group(2)),
            "p50_ms": float(m.group(3)), "p99_ms": float(m.group(4)),
            "non_2xx": int(m.group(5)),
            "server_cpu_us_per_request": round(1e6 * cpu / max(requests, 1), 1),
            "cpu_steal_percent": round(100 * (_steal() - steal0) / (seconds *
                                                                   (os.cpu_count() or 1)), 1)}


async def _fill(server: Server, namespace: str, n: int) -> None:
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=server.url,
                                 verify=ssl.create_default_context(cafile=server.ca),
                                 headers={"Authorization": f"Bearer {server.token}"},
                                 limits=httpx.Limits(max_connections=16), timeout=60) as c:
        async def one(i: int) -> None:
            async with sem:
                r = await c.post(f"/api/v1/namespaces/{namespace}/configmaps", content=orjson.dumps(
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"l-{i:05d}"},
                     "data": {"model": "resnet50", "version": "v1", "pad": "x" * 200}}),
                    headers={"Content-Type": "application/json"})
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(n)))


def list_seconds(server: Server, namespace: str, n: int) -> dict[str, float]:
    with server.client() as c:
        c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": namespace}}).raise_for_status()
        asyncio.run(_fill(server, namespace, n))
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            r = c.get(f"/api/v1/namespaces/{namespace}/configmaps")
            body = r.content
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
        count = len(orjson.loads(body)["items"])
        assert count >= n, count  # plus kube-root-ca.crt
        t0 = time.perf_counter()
        r = c.get(f"/api/v1/namespaces/{namespace}/configmaps", headers={
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        table = time.perf_counter() - t0
    return {"objects": count, "median_s": statistics.median(times), "min_s": min(times),
            "bytes": len(body), "table_s": table}


async def _watch_latency(server: Server, namespace: str, watchers: int, events: int
                         ) -> dict[str, float]:
    ctx = ssl.create_default_context(cafile=server.ca)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    ready = 0
    all_ready = asyncio.Event()
    done = asyncio.Event()
    received = 0

    async def watcher() -> None:
        nonlocal ready, received
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx,
                                                       server_hostname="localhost")
        writer.write((f"GET /api/v1/namespaces/{namespace}/configmaps?watch=true&"
                      f"resourceVersion={rv} HTTP/1.1\r\nHost: localhost\r\n"
                      f"Authorization: Bearer {server.token}\r\n\r\n").encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        ready += 1
        if ready == watchers:
            all_ready.set()
        buf = b""
        while not done.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                break
            now = time.perf_counter()
            buf += chunk
            for m in re.finditer(rb'"name":"(ev-\d+)"', buf):
                name = m.group(1).decode()
                if name in sent:
                    latencies.append(now - sent[name])
                    received += 1
            buf = buf[buf.rfind(b"\n") + 1:] if b"\n" in buf else buf[-200:]
            if received >= watchers * events:
                done.set()
        writer.close()

    with server.client() as c:
        c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": namespace}}).raise_for_status()
        rv = c.get(f"/api/v1/namespaces/{namespace}/configmaps").json()["metadata"][
            "resourceVersion"]
    tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    await asyncio.wait_for(all_ready.wait(), 30)
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=server.url, verify=ctx, timeout=30,
                                 headers={"Authorization": f"Bearer {server.token}"}) as c:
        for i in range(events):
            name = f"ev-{i}"
            sent[name] = time.perf_counter()
            r = await c.post(f"/api/v1/namespaces/{namespace}/configmaps",
                             json={"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": name}})
            r.raise_for_status()
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(done.wait(), 30)
    except TimeoutError:
        pass
    done.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()
    return {"watchers": watchers, "events": events, "delivered": len(latencies),
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
            "max_ms": 1000 * latencies[-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10, help="wrk duration per run")
    ap.add_argument("--list-objects", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk; `make install` installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="kyb-bench-"))
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
    }
    server = Server(tmp / "data", free_port())
    try:
        first = server.start()
        time.sleep(3)
        result["idle_rss_mb"] = round(server.rss_mb(), 1)
        server.stop()
        restart = server.start()
        result["ready_seconds"] = {"first_start": round(first, 3), "restart": round(restart, 3)}
        result["settle_seconds"] = round(server.settle(), 1)
        with server.client() as c:
            c.post("/api/v1/namespaces/default/configmaps", json={
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench-get"},
                "data": {"model": "resnet50"}}).raise_for_status()
        result["create_configmaps"] = wrk(server, SHARED_BENCH / "create-configmaps.lua",
                                          seconds=args.seconds, env={"NS": "default"})
        result["get_configmap"] = wrk(server, HERE / "get-object.lua", seconds=args.seconds,
                                      env={})
        result["list_configmaps"] = list_seconds(server, "bench-list", args.list_objects)
        result["watch_fanout"] = asyncio.run(_watch_latency(server, "bench-watch", 100, 50))
        result["rss_after_load_mb"] = round(server.rss_mb(), 1)
    finally:
        # its node agent's pool of pod networks (and its pods' tmpfs) outlive the server
        server.stop_and_clean(tmp)
    report(result, args.out)


if __name__ == "__main__":
    main()
