"""The node agent's GPUs: what NVML reports becomes the node's capacity and model label,
and a pod sees exactly the devices the scheduler gave it, with its share's hints."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kybernetes.kubelet import devices, node
from kybernetes.kubelet.devices import Device, discover, scheduled_devices


class _FakeNvml(types.ModuleType):
    """pynvml as a machine with two H100s shows it."""

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.nvmlInit = lambda: None
        self.nvmlDeviceGetCount = lambda: 2
        self.nvmlDeviceGetHandleByIndex = lambda i: i
        self.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
        self.nvmlDeviceGetUUID = lambda h: f"GPU-{h:08x}-real"


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    discover.cache_clear()
    yield
    discover.cache_clear()


def test_nvml_devices_become_capacity_and_the_model_label(nvml: None, tmp_path: Path) -> None:
    assert discover(0) == [Device(0, "GPU-00000000-real", "NVIDIA-H100-80GB-HBM3"),
                           Device(1, "GPU-00000001-real", "NVIDIA-H100-80GB-HBM3")]
    cfg = node.NodeConfig(name="box", data_dir=tmp_path, address="127.0.0.1", port=1)
    cap = node.capacity(cfg)
    assert cap["nvidia.com/gpu"] == "2" and cap["kybernetes.io/gpu-milli"] == "2000"
    labels = node.labels(cfg)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "2"


def test_no_driver_no_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = types.ModuleType("pynvml")

    def fail() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    broken.nvmlInit = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    discover.cache_clear()
    try:
        assert discover(0) == []
        cfg = node.NodeConfig(name="box", data_dir=tmp_path, address="127.0.0.1", port=1)
        assert "nvidia.com/gpu" not in node.capacity(cfg)
        assert discover(3)[2] == Device(2, "GPU-fake-0002", devices.FAKE_MODEL)
    finally:
        discover.cache_clear()


def _pod(annotations: dict[str, str], *containers: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations},
            "spec": {"containers": list(containers)}}


def test_a_share_sees_its_device_and_hints() -> None:
    gpus = discover(4)
    share = {"name": "infer", "resources": {"limits": {"kybernetes.io/gpu-milli": "300"}}}
    sidecar = {"name": "log"}
    pod = _pod({"kybernetes.io/gpu-index": "2"}, share, sidecar)
    assert scheduled_devices(pod, share, gpus) == ([gpus[2]], {
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "30", "KYBERNETES_GPU_MILLI": "300",
        "KYBERNETES_GPU_MEMORY_FRACTION": "0.3"})
    assert scheduled_devices(pod, sidecar, gpus) == ([], {})
    whole = {"name": "train", "resources": {"limits": {"nvidia.com/gpu": "2"}}}
    assert scheduled_devices(_pod({"kybernetes.io/gpu-index": "1,3"}, whole), whole,
                             gpus) == ([gpus[1], gpus[3]], {})
    # not placed by the scheduler: the device manager decides
    assert scheduled_devices(_pod({}, whole), whole, gpus) is None
    # the trace's annotation form: every container sees the device
    trace = _pod({"kybernetes.io/gpu-index": "0", "alibabacloud.com/gpu-milli": "250",
                  "alibabacloud.com/gpu-count": "1"}, {"name": "a"}, {"name": "b"})
    assert scheduled_devices(trace, {"name": "b"}, gpus)[0] == [gpus[0]]  # type: ignore[index]
