"""GPU sharing: what a pod asks of a node's GPUs, how a node's devices fit it, and the
placement scores and fragmentation measure of the FGD paper's simulator ("Beware of
Fragmentation", USENIX ATC'23), as ``../shared/data/fgd-reference/PROTOCOL.md`` defines
them. Pure functions over small values, shared by the scheduler's plugins, the node
agent and the trace replay.

A pod asks for GPUs in one of three ways (the first found wins):

- ``kybernetes.io/gpu-milli: 300`` (resource request): a 300/1000 share of one GPU (1000:
  one whole GPU);
- the trace's annotations ``alibabacloud.com/gpu-milli`` and ``alibabacloud.com/gpu-count``
  (as the simulator's pod YAML has them);
- ``nvidia.com/gpu: k``: ``k`` whole GPUs.

Allowed models: annotation ``kybernetes.io/gpu-models`` (or the trace's
``alibabacloud.com/gpu-card-model``), ``|``-separated; empty means any.

>>> req = GpuRequest(count=1, milli=300)
>>> choose_devices([1000, 400, 800], req)   # best fit: the least free that fits
[1]
>>> choose_devices([1000, 400, 1000], GpuRequest(count=2, milli=1000))  # lowest free
[0, 2]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kybernetes.api import quantity

Obj = dict[str, Any]

GPU_MILLI = "kybernetes.io/gpu-milli"
NVIDIA_GPU = "nvidia.com/gpu"
GPU_MODELS_ANNOTATION = "kybernetes.io/gpu-models"
GPU_INDEX_ANNOTATION = "kybernetes.io/gpu-index"
"""On a bound pod: the devices the scheduler gave it, ``"0"`` or ``"0,2"``."""
GPU_MODEL_LABEL = "nvidia.com/gpu.product"
"""The node label naming its GPU model (as NVIDIA's GPU feature discovery sets it)."""
TRACE_MILLI = "alibabacloud.com/gpu-milli"
TRACE_COUNT = "alibabacloud.com/gpu-count"
TRACE_MODEL = "alibabacloud.com/gpu-card-model"
FULL = 1000
"""One whole GPU, in milli-GPU."""
CPU_SCALE = 128_000
"""The simulator's normalisation of CPU (milli) in DotProd and BestFit."""
GPU_SCALE = 8_000
"""... and of GPU (milli-GPU: eight whole GPUs)."""


@dataclass(frozen=True)
class GpuRequest:
    """``count`` GPUs of ``milli`` each (a share when ``count`` is 1 and ``milli`` < 1000),
    on a node whose model is one of ``models`` (any if empty)."""

    count: int
    milli: int
    models: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.count * self.milli

    @property
    def shared(self) -> bool:
        return self.count == 1 and self.milli < FULL

    def model_ok(self, model: str) -> bool:
        return not self.models or model in self.models


def _models(text: str | None) -> tuple[str, ...]:
    return tuple(m for m in (text or "").split("|") if m and m != "nan")


def _container_amount(pod: Mapping[str, Any], resource: str) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("requests") or {}).get(resource, (res.get("limits") or {}).get(
            resource))
        if value is not None:
            total += int(quantity.value(str(value)))
    return total


def gpu_request(pod: Mapping[str, Any]) -> GpuRequest | None:
    """What ``pod`` asks of a node's GPUs; None if nothing."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    models = _models(ann.get(GPU_MODELS_ANNOTATION) or ann.get(TRACE_MODEL))
    milli = _container_amount(pod, GPU_MILLI)
    if milli > 0:
        return GpuRequest(1, min(milli, FULL), models)
    if ann.get(TRACE_MILLI) is not None:
        count = int(ann.get(TRACE_COUNT) or 1)
        share = max(0, min(int(ann[TRACE_MILLI]), FULL))
        return GpuRequest(count, share, models) if count > 0 and share > 0 else None
    whole = _container_amount(pod, NVIDIA_GPU)
    return GpuRequest(whole, FULL, models) if whole > 0 else None


def device_indexes(pod: Mapping[str, Any]) -> list[int] | None:
    """The devices recorded on a pod (``kybernetes.io/gpu-index``), None if none are."""
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(GPU_INDEX_ANNOTATION)
    if not text:
        return None
    try:
        return [int(x) for x in str(text).split(",")]
    except ValueError:
        return None


def format_indexes(devices: Iterable[int]) -> str:
    return ",".join(str(d) for d in devices)


# -- fitting ---------------------------------------------------------------------------


def fits(free: Sequence[int], model: str, req: GpuRequest) -> bool:
    """Whether a node with devices ``free`` (milli-GPU free on each) of ``model`` can
    take ``req``: a share needs one device with room, ``k`` GPUs ``k`` free devices."""
    if not req.model_ok(model):
        return False
    if req.count == 1:
        return any(f >= req.milli for f in free)
    return sum(1 for f in free if f >= FULL) >= req.count


def choose_devices(free: Sequence[int], req: GpuRequest, *,
                   prefer: Sequence[int] | None = None) -> list[int] | None:
    """The devices ``req`` gets: whole GPUs are the lowest-indexed free ones; a share goes
    to the device with the least room that fits (ties: the lowest index), or to
    ``prefer`` (devices in order of preference) when given."""
    if req.count > 1 or req.milli >= FULL:
        idle = [i for i, f in enumerate(free) if f >= FULL]
        return idle[:req.count] if len(idle) >= req.count else None
    fitting = [i for i, f in enumerate(free) if f >= req.milli]
    if not fitting:
        return None
    if prefer is not None:
        return next(([i] for i in prefer if i in fitting), None)
    return [min(fitting, key=lambda i: (free[i], i))]


def take(free: Sequence[int], devices: Iterable[int], milli: int) -> list[int]:
    """``free`` after ``milli`` of each of ``devices`` is taken."""
    out = list(free)
    for i in devices:
        out[i] -= milli
    return out


# -- fragmentation (FGD) ---------------------------------------------------------------


@dataclass(frozen=True)
class TypicalPod:
    cpu: int
    milli: int
    count: int
    models: tuple[str, ...]
    weight: float


def typical_pods(pods: Iterable[tuple[int, int, int, str]], *,
                 coverage: float = 0.95) -> list[TypicalPod]:
    """The typical pods of a workload: its (cpu, gpu milli, gpu count, gpu spec) groups,
    most common first (ties: larger cpu, milli, count, spec), until ``coverage`` of the
    pods are covered; weights are the groups' shares of the covered pods."""
    groups = Counter((int(c), int(m), int(k), s or "") for c, m, k, s in pods)
    total = sum(groups.values())
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1], *(-x for x in kv[0][:3]),
                                                     _reverse(kv[0][3])))
    chosen: list[tuple[tuple[int, int, int, str], int]] = []
    covered = 0
    for key, n in ordered:
        chosen.append((key, n))
        covered += n
        if covered >= coverage * total:
            break
    return [TypicalPod(c, m, k, _models(s), n / covered) for (c, m, k, s), n in chosen]


def _reverse(text: str) -> tuple[int, ...]:
    """A sort key that orders strings descending inside an ascending sort."""
    return (*(-ord(ch) for ch in text), 0)


def fragmentation(cpu_free: int, free: Sequence[int], model: str,
                  typical: Sequence[TypicalPod]) -> float:
    """F(n): the milli-GPU of a node that the typical pods, weighted, could not use."""
    idle = sum(free)
    out = 0.0
    for t in typical:
        if t.count == 0 or (t.models and model not in t.models) or cpu_free < t.cpu or \
                sum(1 for f in free if f >= t.milli) < t.count:
            out += t.weight * idle
        else:
            out += t.weight * sum(f for f in free if f < t.milli)
    return out


def _sigmoid_score(delta: float) -> int:
    return int(100 / (1 + math.exp(-delta / 1000)))


def fgd_score(cpu_free: int, free: Sequence[int], model: str, cpu: int,
              req: GpuRequest | None, typical: Sequence[TypicalPod]) -> tuple[int, int]:
    """FGD's score of placing a pod (``cpu`` milli, ``req``) on a node, and for a share
    the device it would take (-1 otherwise)."""
    before = fragmentation(cpu_free, free, model, typical)
    if req is not None and req.shared:
        best, device = -1, -1
        for i, f in enumerate(free):
            if f < req.milli:
                continue
            after = fragmentation(cpu_free - cpu, take(free, [i], req.milli), model, typical)
            score = _sigmoid_score(before - after)
            if score > best:
                best, device = score, i
        return best, device
    after_free = list(free)
    if req is not None:
        chosen = sorted((i for i, f in enumerate(free) if f >= req.milli),
                        key=lambda i: (free[i], i))[:req.count]
        after_free = take(free, chosen, req.milli)
    after = fragmentation(cpu_free - cpu, after_free, model, typical)
    return _sigmoid_score(before - after), -1


# -- the baseline policies -------------------------------------------------------------


def dotprod_score(cpu_free: int, gpu_free: int, cpu: int, gpu: int) -> int:
    s = 1 - 0.5 * ((cpu_free / CPU_SCALE) * (cpu / CPU_SCALE) +
                   (gpu_free / GPU_SCALE) * (gpu / GPU_SCALE))
    return int(100 * s)


def bestfit_score(cpu_free: int, gpu_free: int, cpu: int, gpu: int) -> int:
    """BestFit's raw score (the simulator then rescales it over the feasible nodes, which
    changes neither the winner nor the ties)."""
    return int(100 * (1 - (0.5 * (cpu_free - cpu) / CPU_SCALE +
                           0.5 * (gpu_free - gpu) / GPU_SCALE)))


def gpu_packing_score(free: Sequence[int], req: GpuRequest | None) -> int:
    if req is None:
        return 0
    if all(f >= FULL for f in free):
        return 33 - len(free)
    chosen = [f for f in sorted(free) if f >= req.milli][:req.count]
    fully_free = sum(1 for f in chosen if f >= FULL)
    if fully_free:
        return max(50 - fully_free, 33)
    return max(100 - sum(f * 100 // FULL for f in free) // 10, 50)


def gpu_clustering_score(gpu_free: int, req: GpuRequest | None,
                         hosted: Iterable[GpuRequest]) -> int:
    """``hosted``: the GPU requests of the pods the node already runs."""
    if req is None:
        return 0
    tags = {_tag(r) for r in hosted}
    tag = _tag(req)
    if not tags:
        base = 25
    elif tags == {tag}:
        base = 75
    elif tag in tags:
        base = 50
    else:
        base = 0
    return base + (25 * (GPU_SCALE - gpu_free)) // GPU_SCALE


def _tag(req: GpuRequest) -> str:
    return "share-gpu" if req.shared else "k-gpu"
