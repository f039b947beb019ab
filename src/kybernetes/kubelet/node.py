"""What the node agent says about its machine: the Node object it registers."""

from __future__ import annotations

import os
import platform
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from kybernetes import __version__
from kybernetes.api.meta import rfc3339
from kybernetes.kubelet.devices import discover

Obj = dict[str, Any]

MAX_PODS = 110
HARD_EVICTION_MEMORY = 100 * 1024 * 1024
"""Memory kept back from allocatable, as kubelet's default ``memory.available<100Mi``."""

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


@dataclass
class NodeConfig:
    name: str
    data_dir: Path
    address: str
    port: int
    """Where the agent's own API (logs, exec, ...) listens."""
    pod_cidr: str = "10.42.0.0/24"
    fake_gpus: int = 0
    taints: list[Obj] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    control_plane: bool = False
    bind_address: str = "0.0.0.0"
    """Where the agent's API listens."""
    eviction_hard: str = ""
    """Hard eviction thresholds (kubelet's --eviction-hard); "" for kubelet's defaults."""
    eviction_period: float = 10.0
    log_max_size: int = 10 * 1024 * 1024
    """A container's log is rotated past this many bytes (0: never)."""
    log_max_files: int = 5
    network_pool: int = 0
    """Pod network namespaces kept wired ahead of time."""


def parse_taints(specs: list[str]) -> list[Obj]:
    """``key=value:Effect`` / ``key:Effect`` as kubelet's ``--register-with-taints``."""
    out = []
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            kv, _, effect = item.rpartition(":")
            if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute") or not kv:
                raise ValueError(f"invalid taint {item!r}: want key[=value]:Effect")
            key, _, value = kv.partition("=")
            taint: Obj = {"key": key, "effect": effect}
            if value:
                taint["value"] = value
            out.append(taint)
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def capacity(cfg: NodeConfig) -> Obj:
    disk = shutil.disk_usage(cfg.data_dir)
    cap: Obj = {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{psutil.virtual_memory().total // 1024}Ki",
        "ephemeral-storage": f"{disk.total // 1024}Ki",
        "pods": str(MAX_PODS),
    }
    gpus = discover(cfg.fake_gpus)
    if gpus:
        cap["nvidia.com/gpu"] = str(len(gpus))
        cap["kybernetes.io/gpu-milli"] = str(1000 * len(gpus))  # shares of the devices
    return cap


def allocatable(cfg: NodeConfig) -> Obj:
    alloc = capacity(cfg)
    mem = psutil.virtual_memory().total - HARD_EVICTION_MEMORY
    alloc["memory"] = f"{max(mem, 0) // 1024}Ki"
    disk = shutil.disk_usage(cfg.data_dir)
    alloc["ephemeral-storage"] = str(int(disk.total * 0.9))  # 10% kept, as nodefs.available
    return alloc


def labels(cfg: NodeConfig) -> dict[str, str]:
    arch = _ARCH.get(platform.machine(), platform.machine())
    out = {
        "kubernetes.io/hostname": cfg.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
    }
    if cfg.control_plane:
        out["node-role.kubernetes.io/control-plane"] = "true"
    gpus = discover(cfg.fake_gpus)
    if gpus:
        out["nvidia.com/gpu.present"] = "true"
        out["nvidia.com/gpu.product"] = gpus[0].model
        out["nvidia.com/gpu.count"] = str(len(gpus))
    out.update(cfg.labels)
    return out


def node_info() -> Obj:
    uname = platform.uname()
    return {
        "machineID": _read("/etc/machine-id"),
        "systemUUID": _read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
        "bootID": _read("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": uname.release,
        "osImage": _os_image(),
        "containerRuntimeVersion": f"kybernetes://{__version__}",
        "kubeletVersion": "v1.32.0-kybernetes",
        "kubeProxyVersion": "v1.32.0-kybernetes",
        "operatingSystem": "linux",
        "architecture": _ARCH.get(uname.machine, uname.machine),
    }


def conditions(previous: list[Obj] | None, now: float, *, memory_pressure: bool = False,
               disk_pressure: bool = False, pid_pressure: bool = False,
               ready: bool = True) -> list[Obj]:
    """The four node conditions, keeping lastTransitionTime while a status holds."""
    old = {c.get("type"): c for c in previous or []}
    stamp = rfc3339(now)

    def cond(typ: str, bad: bool, ok_reason: str, ok_msg: str, bad_reason: str,
             bad_msg: str, *, positive: bool = False) -> Obj:
        status = ("True" if not bad else "False") if positive else ("True" if bad else "False")
        prev = old.get(typ) or {}
        transition = prev.get("lastTransitionTime") if prev.get("status") == status else stamp
        return {"type": typ, "status": status, "lastHeartbeatTime": stamp,
                "lastTransitionTime": transition or stamp,
                "reason": bad_reason if bad else ok_reason,
                "message": bad_msg if bad else ok_msg}

    return [
        cond("MemoryPressure", memory_pressure, "KubeletHasSufficientMemory",
             "kubelet has sufficient memory available", "KubeletHasInsufficientMemory",
             "kubelet has insufficient memory available"),
        cond("DiskPressure", disk_pressure, "KubeletHasNoDiskPressure",
             "kubelet has no disk pressure", "KubeletHasDiskPressure",
             "kubelet has disk pressure"),
        cond("PIDPressure", pid_pressure, "KubeletHasSufficientPID",
             "kubelet has sufficient PID available", "KubeletHasInsufficientPID",
             "kubelet has insufficient PID available"),
        cond("Ready", not ready, "KubeletReady", "kubelet is posting ready status",
             "KubeletNotReady", "container runtime is not ready", positive=True),
    ]


def node_object(cfg: NodeConfig, now: float) -> Obj:
    """The Node this agent registers (spec, labels and a first status)."""
    spec: Obj = {"podCIDR": cfg.pod_cidr, "podCIDRs": [cfg.pod_cidr]}
    if cfg.taints:
        spec["taints"] = cfg.taints
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.name, "labels": labels(cfg),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach":
                                         "true"}},
        "spec": spec,
        "status": node_status(cfg, now, None),
    }


def node_status(cfg: NodeConfig, now: float, previous: Obj | None, **pressure: bool) -> Obj:
    return {
        "capacity": capacity(cfg),
        "allocatable": allocatable(cfg),
        "conditions": conditions((previous or {}).get("conditions"), now, **pressure),
        "addresses": [{"type": "InternalIP", "address": cfg.address},
                      {"type": "Hostname", "address": cfg.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
        "nodeInfo": node_info(),
        "images": [],
    }


def default_node_name() -> str:
    return socket.gethostname().lower()
