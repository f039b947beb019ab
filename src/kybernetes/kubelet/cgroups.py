"""Resource limits through cgroups (v1 memory/cpu/pids hierarchies; v2 when that is all
the machine has): one cgroup per container under ``kybernetes/pod<uid>/``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kybernetes.api import quantity

ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD = 100_000
_V1 = ("memory", "cpu", "cpuacct", "pids")


def version() -> int:
    if (ROOT / "memory" / "memory.limit_in_bytes").exists():
        return 1
    if (ROOT / "cgroup.controllers").exists():
        return 2
    return 0


def _write(path: Path, value: str) -> None:
    with contextlib.suppress(OSError):
        path.write_text(value)


def cpu_shares(requests: dict[str, str]) -> int:
    milli = quantity.milli_value(requests["cpu"]) if "cpu" in requests else 0
    return max(2, milli * 1024 // 1000) if milli else 2


class Cgroups:
    def __init__(self, prefix: str = "kybernetes") -> None:
        self.prefix = prefix
        self.version = version()
        self.roots: list[Path] = []
        """The hierarchies a container joins (v1: one per controller directory)."""
        if self.version == 1:
            # co-mounted controllers (cpu,cpuacct) share one directory: list it once
            seen: set[Path] = set()
            for c in _V1:
                if (ROOT / c).is_dir() and (real := (ROOT / c).resolve()) not in seen:
                    seen.add(real)
                    self.roots.append(ROOT / c)
        elif self.version == 2:
            self.roots.append(ROOT)

    def paths(self, pod_uid: str, container: str) -> list[Path]:
        rel = f"{self.prefix}/pod{pod_uid}/{container}"
        return [root / rel for root in self.roots]

    def create(self, pod_uid: str, container: str, resources: dict[str, dict[str, str]]
               ) -> list[str]:
        """Make the container's cgroups with its limits; returns the directories to join."""
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        out = []
        for path in self.paths(pod_uid, container):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue
            out.append(str(path))
            if self.version == 1:
                kind = path.relative_to(ROOT).parts[0]
                if kind == "memory" and "memory" in limits:
                    _write(path / "memory.limit_in_bytes",
                           str(quantity.value(limits["memory"])))
                    _write(path / "memory.swappiness", "0")
                elif kind == "cpu":
                    _write(path / "cpu.shares", str(cpu_shares(requests)))
                    if "cpu" in limits:
                        quota = max(1000, quantity.milli_value(limits["cpu"]) * CFS_PERIOD // 1000)
                        _write(path / "cpu.cfs_period_us", str(CFS_PERIOD))
                        _write(path / "cpu.cfs_quota_us", str(quota))
            else:
                self._enable_controllers(path)
                if "memory" in limits:
                    _write(path / "memory.max", str(quantity.value(limits["memory"])))
                    _write(path / "memory.swap.max", "0")
                if "cpu" in limits:
                    quota = max(1000, quantity.milli_value(limits["cpu"]) * CFS_PERIOD // 1000)
                    _write(path / "cpu.max", f"{quota} {CFS_PERIOD}")
                _write(path / "cpu.weight", str(max(1, cpu_shares(requests) * 100 // 1024)))
        return out

    def _enable_controllers(self, path: Path) -> None:
        parts = path.relative_to(ROOT).parts
        for i in range(len(parts)):
            parent = ROOT.joinpath(*parts[:i])
            _write(parent / "cgroup.subtree_control", "+memory +cpu +pids")

    def oom_killed(self, pod_uid: str, container: str) -> bool:
        """Whether the kernel OOM-killed something in the container's cgroup."""
        for path in self.paths(pod_uid, container):
            for name in ("memory.oom_control", "memory.events"):
                try:
                    text = (path / name).read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip() not in ("", "0"):
                        return True
        return False

    def usage(self, pod_uid: str, container: str) -> tuple[int, int]:
        """(CPU nanoseconds used, memory working set bytes) of a container."""
        cpu_ns = mem = 0
        for path in self.paths(pod_uid, container):
            with contextlib.suppress(OSError, ValueError):
                if self.version == 1:
                    kind = path.relative_to(ROOT).parts[0]
                    if kind == "memory":
                        usage = int((path / "memory.usage_in_bytes").read_text())
                        inactive = 0
                        for line in (path / "memory.stat").read_text().splitlines():
                            if line.startswith("total_inactive_file "):
                                inactive = int(line.split()[1])
                        mem = max(0, usage - inactive)
                    elif (path / "cpuacct.usage").exists():
                        cpu_ns = int((path / "cpuacct.usage").read_text())
                elif self.version == 2:
                    for line in (path / "cpu.stat").read_text().splitlines():
                        if line.startswith("usage_usec "):
                            cpu_ns = int(line.split()[1]) * 1000
                    mem = int((path / "memory.current").read_text())
        return cpu_ns, mem

    def remove(self, pod_uid: str) -> None:
        """Remove the pod's cgroups (its processes must be gone)."""
        rel = Path(self.prefix) / f"pod{pod_uid}"
        roots = [ROOT / c / rel for c in _V1 if not (ROOT / c).is_symlink()] \
            if self.version == 1 else [ROOT / rel]
        for root in roots:
            if not root.exists():
                continue
            for child in sorted(root.iterdir(), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        os.rmdir(child)
            with contextlib.suppress(OSError):
                os.rmdir(root)

    def known_pods(self) -> list[str]:
        base = (ROOT / "memory" / self.prefix) if self.version == 1 else (ROOT / self.prefix)
        if not base.exists():
            return []
        return [p.name[3:] for p in base.iterdir() if p.name.startswith("pod")]
