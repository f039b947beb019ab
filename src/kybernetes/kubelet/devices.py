"""GPU assignment, as the NVIDIA device plugin does it: whole devices, one pod each.

A container asking for ``nvidia.com/gpu: N`` gets N devices no other running pod holds,
seen through ``CUDA_VISIBLE_DEVICES`` / ``NVIDIA_VISIBLE_DEVICES``. Assignments are kept in
the pod's directory so that a restarted agent hands out the same devices again.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kybernetes.api import gpushare, quantity

RESOURCE = "nvidia.com/gpu"


class DeviceError(Exception):
    """Not enough free devices (kubelet's UnexpectedAdmissionError)."""


FAKE_MODEL = "Fake-GPU"


@dataclass(frozen=True)
class Device:
    index: int
    uuid: str
    model: str = FAKE_MODEL
    """The product name, as NVIDIA's GPU feature discovery labels it (spaces → dashes)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@functools.cache
def discover(fake: int) -> list[Device]:
    """The node's GPUs: ``fake`` declared ones, else what NVML reports (none without an
    NVIDIA driver). Asked once per process."""
    if fake:
        return [Device(i, f"GPU-fake-{i:04d}") for i in range(fake)]
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(pynvml.nvmlDeviceGetName(handle)).strip().replace(" ", "-")
            out.append(Device(i, _text(pynvml.nvmlDeviceGetUUID(handle)), name))
        return out
    except Exception:
        return []


def requested(container: dict[str, Any]) -> int:
    res = container.get("resources") or {}
    value = (res.get("limits") or {}).get(RESOURCE) or (res.get("requests") or {}).get(RESOURCE)
    return quantity.value(value) if value else 0


class DeviceManager:
    def __init__(self, devices: list[Device]) -> None:
        self.devices = devices
        self.owners: dict[int, str] = {}
        """device index -> "<pod uid>/<container>"."""

    def _file(self, pod_dir: Path) -> Path:
        return pod_dir / "devices.json"

    def restore(self, uid: str, pod_dir: Path) -> None:
        try:
            saved = json.loads(self._file(pod_dir).read_text())
        except (OSError, ValueError):
            return
        for container, indices in saved.items():
            for i in indices:
                self.owners[int(i)] = f"{uid}/{container}"

    def assign(self, uid: str, container: str, count: int, pod_dir: Path) -> list[Device]:
        if count <= 0:
            return []
        owner = f"{uid}/{container}"
        mine = [d for d in self.devices if self.owners.get(d.index) == owner]
        if len(mine) >= count:
            return mine[:count]
        free = [d for d in self.devices if d.index not in self.owners]
        if len(free) + len(mine) < count:
            raise DeviceError(
                f"Allocate failed due to requested number of devices unavailable for "
                f"{RESOURCE}. Requested: {count}, Available: {len(free) + len(mine)}")
        chosen = mine + free[:count - len(mine)]
        for d in chosen:
            self.owners[d.index] = owner
        self._save(uid, pod_dir)
        return chosen

    def _save(self, uid: str, pod_dir: Path) -> None:
        saved: dict[str, list[int]] = {}
        for index, owner in self.owners.items():
            pod, _, container = owner.partition("/")
            if pod == uid:
                saved.setdefault(container, []).append(index)
        pod_dir.mkdir(parents=True, exist_ok=True)
        self._file(pod_dir).write_text(json.dumps(saved))

    def release(self, uid: str) -> None:
        for index in [i for i, o in self.owners.items() if o.startswith(f"{uid}/")]:
            del self.owners[index]


def scheduled_devices(pod: dict[str, Any], container: dict[str, Any],
                      devices: list[Device]) -> tuple[list[Device], dict[str, str]] | None:
    """The devices the scheduler gave the pod (``kybernetes.io/gpu-index``) as this
    container sees them, with the hints a GPU share gets: None when the scheduler chose
    nothing (the device manager then assigns whole devices itself).

    A share of ``m`` milli-GPU runs with ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` = m/10 (the
    share of the device's SMs an MPS client may use), ``KYBERNETES_GPU_MILLI`` and
    ``KYBERNETES_GPU_MEMORY_FRACTION`` (for ``torch.cuda.set_per_process_memory_fraction``).
    Containers that ask for no GPU resource get no devices unless none of the pod's do
    (the request was made by annotation)."""
    indexes = gpushare.device_indexes(pod)
    req = gpushare.gpu_request(pod)
    if indexes is None or req is None:
        return None
    def asks(c: dict[str, Any]) -> bool:
        res = c.get("resources") or {}
        return any(name in (res.get(part) or {}) for part in ("requests", "limits")
                   for name in (RESOURCE, gpushare.GPU_MILLI))
    if not asks(container) and any(asks(c) for c in (pod.get("spec") or {}).get(
            "containers") or ()):
        return [], {}
    by_index = {d.index: d for d in devices}
    chosen = [by_index[i] for i in indexes if i in by_index]
    hints: dict[str, str] = {}
    if req.shared:
        hints = {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(max(1, -(-req.milli // 10))),
                 "KYBERNETES_GPU_MILLI": str(req.milli),
                 "KYBERNETES_GPU_MEMORY_FRACTION": f"{req.milli / gpushare.FULL:g}"}
    return chosen, hints


def visible_env(devices: list[Device]) -> dict[str, str]:
    if not devices:
        return {}
    indices = ",".join(str(d.index) for d in devices)
    return {"CUDA_VISIBLE_DEVICES": indices,
            "NVIDIA_VISIBLE_DEVICES": ",".join(d.uuid for d in devices)}
