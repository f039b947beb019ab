"""Resource usage of the node and of each running container, in the shape of kubelet's
Summary API (``/stats/summary``), which the API server's ``metrics.k8s.io`` reads.

Nothing is sampled in the background (idle costs nothing): CPU rates come from the
difference between the counters read now and those read at the previous request. A
counter seen for the first time is read twice, a short moment apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kybernetes.api.meta import rfc3339

Obj = dict[str, Any]

FIRST_WINDOW = 0.25
"""Seconds between the two reads of a counter seen for the first time."""
MIN_WINDOW = 1.0
"""A previous reading younger than this is not replaced (windows stay meaningful)."""
STALE = 300.0
"""A previous reading older than this is not used."""


@dataclass(frozen=True)
class Target:
    """One container to report: where its counters are read from."""

    namespace: str
    pod: str
    uid: str
    container: str


Reader = Callable[[str, str], tuple[int, int]]
"""(pod uid, container) -> (CPU nanoseconds, memory working set bytes)."""


def node_counters(proc: Path = Path("/proc")) -> tuple[int, int]:
    """(CPU nanoseconds used by the whole machine, memory working set bytes)."""
    cpu_ns = 0
    with (proc / "stat").open() as f:
        first = f.readline().split()
    if first and first[0] == "cpu":
        ticks = [int(v) for v in first[1:]]
        # user nice system idle iowait irq softirq (steal ...): time the guest did not get
        # (steal) and idle time are not usage
        busy = sum(ticks[:7]) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
        cpu_ns = busy * (1_000_000_000 // _clock_ticks())
    total, available = meminfo(proc)
    return cpu_ns, max(0, total - available)


def meminfo(proc: Path = Path("/proc")) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes."""
    info: dict[str, int] = {}
    with (proc / "meminfo").open() as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                info[key] = int(rest.split()[0]) * 1024
    return info.get("MemTotal", 0), info.get("MemAvailable", 0)


def _clock_ticks() -> int:
    import os

    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (ValueError, OSError):
        return 100


class Stats:
    """Keeps the previous reading of every counter to turn it into a rate."""

    def __init__(self, read: Reader, *, node: Callable[[], tuple[int, int]] = node_counters
                 ) -> None:
        self.read = read
        self.read_node = node
        self._prev: dict[tuple[str, str], tuple[float, int]] = {}

    def _sample(self, targets: Iterable[Target]) -> tuple[float, dict[tuple[str, str],
                                                                    tuple[int, int]]]:
        now = time.monotonic()
        out = {("", ""): self.read_node()}
        for t in targets:
            out[(t.uid, t.container)] = self.read(t.uid, t.container)
        return now, out

    async def summary(self, node_name: str, targets: list[Target]) -> Obj:
        now, cur = self._sample(targets)
        fresh = [k for k in cur if not self._usable(k, now)]
        if fresh:
            # a counter without a usable earlier reading: take one a moment apart
            for k in fresh:
                self._prev[k] = (now, cur[k][0])
            await asyncio.sleep(FIRST_WINDOW)
            now, cur = self._sample(targets)
        stamp = rfc3339(time.time())

        def stat(key: tuple[str, str]) -> tuple[Obj, Obj]:
            cpu_ns, mem = cur[key]
            then, prev_ns = self._prev[key]
            window = max(now - then, 1e-3)
            nano_cores = max(0, round((cpu_ns - prev_ns) / window))
            if now - then >= MIN_WINDOW:
                self._prev[key] = (now, cpu_ns)
            return ({"time": stamp, "usageNanoCores": nano_cores,
                     "usageCoreNanoSeconds": cpu_ns, "window": round(window, 3)},
                    {"time": stamp, "workingSetBytes": mem, "usageBytes": mem})

        node_cpu, node_mem = stat(("", ""))
        pods: dict[str, Obj] = {}
        for t in targets:
            cpu, mem = stat((t.uid, t.container))
            entry = pods.setdefault(t.uid, {
                "podRef": {"name": t.pod, "namespace": t.namespace, "uid": t.uid},
                "containers": []})
            entry["containers"].append({"name": t.container, "cpu": cpu, "memory": mem})
        live = {(t.uid, t.container) for t in targets} | {("", "")}
        for k in [k for k in self._prev if k not in live]:
            del self._prev[k]
        return {"node": {"nodeName": node_name, "cpu": node_cpu, "memory": node_mem},
                "pods": list(pods.values())}

    def _usable(self, key: tuple[str, str], now: float) -> bool:
        prev = self._prev.get(key)
        return prev is not None and 0 < now - prev[0] < STALE
