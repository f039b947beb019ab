"""Node-pressure eviction: when the node runs short of memory, disk or process ids, its
pods are stopped one at a time, the greediest first, as kubelet's eviction manager does.

Signals (kubelet's names): ``memory.available`` (MemAvailable), ``nodefs.available`` and
``nodefs.inodesFree`` (the file system of the agent's data dir; ``imagefs.*`` is the same
one here), ``pid.available`` (pid_max minus the processes running). Hard thresholds come
from ``--eviction-hard`` (kubelet's default:
``memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%``).

While a threshold is crossed the node reports MemoryPressure / DiskPressure / PIDPressure,
and every monitoring period one pod is evicted: its containers are killed at once and it
ends ``Failed`` with reason ``Evicted``, a ``DisruptionTarget`` condition and an
``Evicted`` event. Pods are ranked as kubelet ranks them: those using more than they
request first, then by priority (lowest first), then by how far their use exceeds their
request.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kybernetes.api import quantity
from kybernetes.kubelet.stats import meminfo

if TYPE_CHECKING:
    from kybernetes.kubelet.pods import PodManager, PodWorker

log = logging.getLogger(__name__)
Obj = dict[str, Any]

DEFAULT_HARD = ("memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,"
                "nodefs.inodesFree<5%")
SIGNALS = ("memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available",
           "imagefs.inodesFree", "pid.available")
RESOURCE = {"memory.available": "memory", "nodefs.available": "ephemeral-storage",
            "imagefs.available": "ephemeral-storage", "nodefs.inodesFree": "inodes",
            "imagefs.inodesFree": "inodes", "pid.available": "pids"}
CONDITION = {"memory": "memory_pressure", "ephemeral-storage": "disk_pressure",
             "inodes": "disk_pressure", "pids": "pid_pressure"}


class ThresholdError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    signal: str
    quantity: Fraction | None = None
    """An absolute amount (bytes, inodes, pids), or None when ``percent`` is set."""
    percent: Fraction | None = None
    text: str = ""

    def limit(self, capacity: Fraction) -> Fraction:
        if self.percent is not None:
            return capacity * self.percent / 100
        assert self.quantity is not None
        return self.quantity


def parse_thresholds(text: str) -> list[Threshold]:
    """``signal<quantity`` or ``signal<N%``, comma separated."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        signal, sep, value = part.partition("<")
        signal, value = signal.strip(), value.strip()
        if not sep or signal not in SIGNALS or not value:
            raise ThresholdError(f'invalid eviction threshold "{part}": want SIGNAL<QUANTITY '
                                 f"with SIGNAL one of {', '.join(SIGNALS)}")
        try:
            if value.endswith("%"):
                out.append(Threshold(signal, percent=Fraction(value[:-1]), text=value))
            else:
                out.append(Threshold(signal, quantity=quantity.parse(value), text=value))
        except (ValueError, ZeroDivisionError) as e:
            raise ThresholdError(f'invalid eviction threshold "{part}": {e}') from None
    return out


@dataclass
class Observation:
    available: Fraction
    capacity: Fraction


def observe(data_dir: Path, proc: Path = Path("/proc")) -> dict[str, Observation]:
    """The signals now."""
    out: dict[str, Observation] = {}
    total, available = meminfo(proc)
    out["memory.available"] = Observation(Fraction(available), Fraction(total))
    st = os.statvfs(data_dir)
    fs = Observation(Fraction(st.f_bavail * st.f_frsize), Fraction(st.f_blocks * st.f_frsize))
    inodes = Observation(Fraction(st.f_favail), Fraction(st.f_files))
    out["nodefs.available"] = out["imagefs.available"] = fs
    out["nodefs.inodesFree"] = out["imagefs.inodesFree"] = inodes
    try:
        pid_max = int((proc / "sys" / "kernel" / "pid_max").read_text())
        running = sum(1 for p in proc.iterdir() if p.name.isdigit())
        out["pid.available"] = Observation(Fraction(pid_max - running), Fraction(pid_max))
    except (OSError, ValueError):
        pass
    return out


def crossed(thresholds: list[Threshold], seen: dict[str, Observation]
            ) -> list[tuple[Threshold, Observation]]:
    out = []
    for t in thresholds:
        obs = seen.get(t.signal)
        if obs is not None and obs.capacity > 0 and obs.available < t.limit(obs.capacity):
            out.append((t, obs))
    return out


def _request(pod: Obj, resource: str) -> Fraction:
    total = Fraction(0)
    for c in (pod.get("spec") or {}).get("containers") or []:
        value = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        if value is not None:
            total += quantity.parse(value)
    return total


def rank(pods: list[tuple[Obj, Fraction]], resource: str) -> list[tuple[Obj, Fraction]]:
    """(pod, usage) in the order kubelet evicts them for ``resource``."""
    def key(item: tuple[Obj, Fraction]) -> tuple[int, int, Fraction]:
        pod, usage = item
        over = usage - _request(pod, resource)
        priority = int((pod.get("spec") or {}).get("priority") or 0)
        return (0 if over > 0 else 1, priority, -over)

    return sorted(pods, key=key)


class EvictionManager:
    def __init__(self, pods: PodManager, data_dir: Path, thresholds: list[Threshold], *,
                 interval: float = 10.0) -> None:
        self.pods = pods
        self.data_dir = data_dir
        self.thresholds = thresholds
        self.interval = interval
        self.pressure: dict[str, bool] = {}
        """memory_pressure / disk_pressure / pid_pressure, as the node reports them."""
        self.on_change: Callable[[], Awaitable[None]] | None = None
        """Called when the pressure changes (the node's conditions are updated at once)."""
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("eviction check failed")
            await asyncio.sleep(self.interval)

    async def check(self) -> str:
        """One monitoring pass; returns the name of the pod evicted ("" for none)."""
        seen = await asyncio.to_thread(observe, self.data_dir)
        hits = crossed(self.thresholds, seen)
        pressure = {flag: any(CONDITION[RESOURCE[t.signal]] == flag for t, _ in hits)
                    for flag in ("memory_pressure", "disk_pressure", "pid_pressure")}
        changed, self.pressure = pressure != self.pressure, pressure
        if changed and self.on_change is not None:
            await self.on_change()
        if not hits:
            return ""
        threshold, obs = hits[0]
        resource = RESOURCE[threshold.signal]
        candidates = []
        for w in list(self.pods.workers.values()):
            if w.rejected is not None or w.pod["metadata"].get("deletionTimestamp") or \
                    (w.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            candidates.append((w, self._usage(w, resource)))
        if not candidates:
            return ""
        ranked = rank([(w.pod, u) for w, u in candidates], resource)
        victim_pod, usage = ranked[0]
        worker = next(w for w, _ in candidates if w.pod is victim_pod)
        await self.evict(worker, resource, threshold, obs, usage)
        return worker.name

    def _usage(self, w: PodWorker, resource: str) -> Fraction:
        total = Fraction(0)
        for c in (w.spec.get("containers") or []):
            if resource == "memory":
                total += self.pods.cgroups.usage(w.uid, c.get("name", ""))[1]
            elif resource == "ephemeral-storage":
                run = self.pods.runtime.current(w.uid, c.get("name", ""))
                if run is not None:
                    total += sum(f.stat().st_size for f in run.log.parent.glob(
                        run.log.name + "*") if f.is_file())
        if resource == "ephemeral-storage":
            vols = self.pods.runtime.empty_dir(w.uid)
            if vols.exists():
                total += sum(f.stat().st_size for f in vols.rglob("*")
                             if f.is_file() and not f.is_symlink())
        return total

    async def evict(self, w: PodWorker, resource: str, threshold: Threshold,
                    obs: Observation, usage: Fraction) -> None:
        fmt = quantity.BINARY_SI if resource in ("memory", "ephemeral-storage") \
            else quantity.DECIMAL_SI
        request = _request(w.pod, resource)
        message = (f"The node was low on resource: {resource}. Threshold quantity: "
                   f"{threshold.text}, available: "
                   f"{quantity.format_quantity(_whole(obs.available), fmt)}. ")
        if resource in ("memory", "ephemeral-storage"):
            name = ((w.spec.get("containers") or [{}])[0]).get("name", "")
            message += (f"Container {name} was using "
                        f"{quantity.format_quantity(_whole(usage), fmt)}, request is "
                        f"{quantity.format_quantity(request, fmt)}, has larger consumption of "
                        f"{resource}. ")
        log.info("evicting pod %s/%s: %s", w.namespace, w.name, message)
        # the worker kills a rejected pod's containers before it reports it Failed
        w.rejected = ("Evicted", message)
        w.wake.set()
        await w.event("Evicted", message, typ="Warning")
        for _ in range(200):  # as kubelet, wait for the pod to be gone before going on
            if w.all_stopped():
                break
            await asyncio.sleep(0.05)


def _whole(v: Fraction) -> Fraction:
    """Rounded down to a whole number of Ki (as kubelet prints them)."""
    return Fraction(int(v) // 1024 * 1024) if v >= 1024 else Fraction(int(v))
