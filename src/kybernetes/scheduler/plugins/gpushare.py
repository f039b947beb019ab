"""GPU sharing: the ``GpuShare`` filter and device assignment, and the GPU placement
policies of the FGD paper's simulator as Score plugins.

``GpuShare`` (on by default) keeps pods off nodes whose devices cannot take them: a share
(``kybernetes.io/gpu-milli: 300``) needs one device with 300 milli-GPU free, ``k`` whole
GPUs need ``k`` idle devices, and the node's model (label ``nvidia.com/gpu.product``)
must be one the pod allows. At Reserve it gives the pod its devices — the device the
profile's placement policy prefers, else the one with the least room that fits — and the
binding records them on the pod (annotation ``kybernetes.io/gpu-index``), where the node
agent reads them.

The policies (``RandomScore``, ``DotProductScore``, ``GpuClusteringScore``,
``GpuPackingScore``, ``BestFitScore``, ``FGDScore``) score as
``../shared/data/fgd-reference/PROTOCOL.md`` defines them, over numpy columns of every
node's devices; ``FGDPlusScore`` is ours (FGD with CPU-only pods sent where no GPU
idles). None is enabled by default. A profile picks one::

    profiles:
    - schedulerName: gpu-fgd
      plugins:
        multiPoint:
          enabled: [{name: FGDPlusScore, weight: 1000}]
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kybernetes.api import gpushare
from kybernetes.api.gpushare import FULL, GpuRequest, TypicalPod
from kybernetes.scheduler.framework import (
    BINDING_ANNOTATIONS,
    POD_DELETE,
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    PreFilterResult,
    Status,
)
from kybernetes.scheduler.nodetable import BoolArray, IntArray, NodeTable
from kybernetes.scheduler.types import NodeInfo, PodInfo

FloatArray = npt.NDArray[np.float64]
_REQUEST = "GpuShare/request"
_CHOICE = "GpuShare/choice"
"""CycleState key: per node name, the devices the placement policy picked while scoring."""


def _request(state: CycleState, pod: PodInfo) -> GpuRequest | None:
    req: GpuRequest | None = state.read(_REQUEST)
    return req if req is not None else pod.gpu


def _free_before(node: NodeInfo, pod: PodInfo, req: GpuRequest) -> list[int]:
    """The node's free milli-GPU per device as it was before ``pod`` was placed there."""
    free = list(node.gpu_free)
    if pod.uid in node.pods:
        for d in pod.gpu_devices or ():
            if 0 <= d < len(free):
                free[d] += req.milli
    return free


def _model_mask(table: NodeTable, req: GpuRequest) -> BoolArray:
    if not req.models:
        return table.all()
    col = table.label_column(gpushare.GPU_MODEL_LABEL)
    return col.spread([v in req.models for v in col.values])


# -- the filter and device assignment -------------------------------------------------


class GpuShare:
    name = "GpuShare"

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self._choosers: list[Any] = []

    def bind_framework(self, fwk: Any) -> None:
        self._choosers = [pl for pl in fwk.score if hasattr(pl, "choose_gpus")]

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        req = pod.gpu
        if req is None:
            return None, Status.skip()
        state.write(_REQUEST, req)
        return None, None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        req = _request(state, pod)
        if req is None:
            return None
        free = node.gpu_free
        if not req.model_ok(node.gpu_model):
            return Status.unresolvable("node(s) didn't have an allowed GPU model")
        if len(free) < req.count:
            return Status.unresolvable("Insufficient GPU devices")
        if gpushare.fits(free, node.gpu_model, req):
            return None
        total = sum(f for f in free if f > 0)
        if total >= req.total:
            what = (f"no single GPU has {req.milli}/{FULL} free" if req.count == 1
                    else f"fewer than {req.count} idle GPUs")
            return Status.unschedulable(f"node(s) had GPU fragmentation: {what}")
        return Status.unschedulable("Insufficient GPU")

    def filter_batch(self, state: CycleState, pod: PodInfo, table: NodeTable) -> BoolArray:
        req = _request(state, pod)
        if req is None:
            return table.all()
        fitting = (table.gpu_free >= req.milli).sum(1)
        mask: BoolArray = (fitting >= req.count) & _model_mask(table, req)
        return mask

    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        req = _request(state, pod)
        node = self.handle.node(node_name)
        if req is None or node is None:
            return None
        chosen = (state.read(_CHOICE) or {}).get(node_name)
        if chosen is None:
            free = _free_before(node, pod, req)
            for pl in self._choosers:
                chosen = pl.choose_gpus(state, pod, node, free, req)
                if chosen is not None:
                    break
            else:
                # chosen afresh: a pod info may carry devices from a what-if placement
                # (preemption adds nominated pods to node copies)
                chosen = gpushare.choose_devices(free, req)
        if chosen is None:
            return Status.unschedulable("no GPU device left for the pod")
        node.move_gpus(pod, chosen)
        devices = chosen
        annotations = dict(state.read(BINDING_ANNOTATIONS) or {})
        annotations[gpushare.GPU_INDEX_ANNOTATION] = gpushare.format_indexes(devices)
        state.write(BINDING_ANNOTATIONS, annotations)
        return None

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        annotations = state.read(BINDING_ANNOTATIONS)
        if annotations:
            annotations.pop(gpushare.GPU_INDEX_ANNOTATION, None)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(POD_DELETE),
                ClusterEventWithHint(ClusterEvent("Node", Action.ADD | Action.UPDATE_NODE_ALLOCATABLE
                                                  | Action.UPDATE_NODE_LABEL))]


# -- placement policies ---------------------------------------------------------------


def _free_columns(table: NodeTable, rows: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """(free cpu, free milli-GPU per device with 0 past the last, total free milli-GPU)."""
    alloc, req = table.columns("cpu")
    cpu = alloc[rows] - req[rows]
    gpus = np.maximum(table.gpu_free[rows], 0)
    return cpu, gpus, gpus.sum(1)


def _amounts(pod: PodInfo, req: GpuRequest | None) -> tuple[int, int]:
    return pod.requests.get("cpu", 0), req.total if req is not None else 0


class _Policy:
    """What every policy shares: its batch score is its score (one node = one row)."""

    name = ""

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        table = node.table
        if table is None:
            raise RuntimeError(f"{self.name}: node {node.name} is not in a node table")
        return int(self.score_batch(state, pod, table, np.array([node.index]))[0])

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        raise NotImplementedError


class RandomScore(_Policy):
    """One feasible node, drawn uniformly, scores 100; a share goes to a random device
    that fits."""

    name = "RandomScore"

    def __init__(self, handle: Handle, seed: int | None) -> None:
        super().__init__(handle)
        self.rng = random.Random(seed)

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                  ) -> Status | None:
        state.write("RandomScore/pick", self.rng.choice(nodes).name if nodes else "")
        return None

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        pick = state.read("RandomScore/pick")
        names = [table.nodes[i].name for i in rows.tolist()]
        return np.array([100 if n == pick else 0 for n in names], np.int64)

    def choose_gpus(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                    free: list[int], req: GpuRequest) -> list[int] | None:
        if not req.shared:
            return None
        fitting = [i for i, f in enumerate(free) if f >= req.milli]
        return [self.rng.choice(fitting)] if fitting else None


class DotProductScore(_Policy):
    name = "DotProductScore"

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        cpu, _, gpu = _free_columns(table, rows)
        r_cpu, r_gpu = _amounts(pod, _request(state, pod))
        s = 1 - 0.5 * ((cpu / gpushare.CPU_SCALE) * (r_cpu / gpushare.CPU_SCALE)
                       + (gpu / gpushare.GPU_SCALE) * (r_gpu / gpushare.GPU_SCALE))
        out: IntArray = np.floor(100 * s).astype(np.int64)
        return out


class BestFitScore(_Policy):
    name = "BestFitScore"

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        cpu, _, gpu = _free_columns(table, rows)
        r_cpu, r_gpu = _amounts(pod, _request(state, pod))
        raw = 100 * (1 - (0.5 * (cpu - r_cpu) / gpushare.CPU_SCALE
                          + 0.5 * (gpu - r_gpu) / gpushare.GPU_SCALE))
        out: IntArray = np.floor(raw).astype(np.int64)
        return out


class GpuClusteringScore(_Policy):
    name = "GpuClusteringScore"

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        req = _request(state, pod)
        if req is None:
            return np.zeros(len(rows), np.int64)
        _, _, gpu = _free_columns(table, rows)
        hosted = table.gpu_pods[rows] > 0
        mine = hosted[:, 0 if req.shared else 1]
        other = hosted[:, 1 if req.shared else 0]
        base = np.where(~mine & ~other, 25, np.where(mine & ~other, 75, np.where(mine, 50, 0)))
        out: IntArray = base + (25 * (gpushare.GPU_SCALE - gpu)) // gpushare.GPU_SCALE
        return out


class GpuPackingScore(_Policy):
    name = "GpuPackingScore"

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        req = _request(state, pod)
        if req is None:
            return np.zeros(len(rows), np.int64)
        raw = table.gpu_free[rows]
        valid = raw >= 0
        devices = valid.sum(1)
        idle = ((raw >= FULL) | ~valid).all(1)
        partial_fit = (valid & (raw >= req.milli) & (raw < FULL)).sum(1)
        whole_taken = np.maximum(req.count - partial_fit, 0)
        used_tenths = (np.where(valid, raw, 0) * 100 // FULL).sum(1) // 10
        out: IntArray = np.where(
            idle, 33 - devices,
            np.where(whole_taken > 0, np.maximum(50 - whole_taken, 33),
                     np.maximum(100 - used_tenths, 50)))
        return out


# -- FGD -------------------------------------------------------------------------------


class _Typical:
    """The typical pods as arrays: cpu, milli, count, weight per pod kind, and which GPU
    models each allows (a column per model code of the node table, the last for nodes
    without a model)."""

    def __init__(self, pods: Sequence[TypicalPod]) -> None:
        self.pods = list(pods)
        self.cpu = np.array([t.cpu for t in pods], np.int64)
        self.milli = np.array([t.milli for t in pods], np.int64)
        self.count = np.array([t.count for t in pods], np.int64)
        self.weight = np.array([t.weight for t in pods], np.float64)
        self._allowed: tuple[int, BoolArray] | None = None

    def unusable_by_model(self, table: NodeTable, rows: IntArray) -> BoolArray:
        """(rows × kinds): a kind that can never use the node's GPUs (CPU-only, or a model
        it does not allow)."""
        col = table.label_column(gpushare.GPU_MODEL_LABEL)
        if self._allowed is None or self._allowed[0] != id(col):
            allowed = np.array([[(not t.models or v in t.models) and t.count > 0
                                 for v in col.values] + [not t.models and t.count > 0]
                                for t in self.pods], np.bool_).reshape(len(self.pods), -1)
            self._allowed = (id(col), allowed.T.copy())
        out: BoolArray = ~self._allowed[1][col.codes[rows]]
        return out


def _sigmoid(delta: FloatArray) -> IntArray:
    out: IntArray = np.floor(100 / (1 + np.exp(-delta / 1000))).astype(np.int64)
    return out


class FGDScore(_Policy):
    """Fragmentation gradient descent: the node (and device) whose fragmentation, measured
    against the workload's typical pods, grows least. ``typicalPods`` (args) fixes the
    typical pods; otherwise they are those of the pods the cluster runs, re-read each
    minute."""

    name = "FGDScore"
    REFRESH = 60.0

    def __init__(self, handle: Handle, typical: Sequence[TypicalPod] | None) -> None:
        super().__init__(handle)
        self._fixed = typical is not None
        self._typical = _Typical(typical or [])
        self._read_at = -1e9

    def typical(self, pod: PodInfo, req: GpuRequest | None) -> _Typical:
        if self._fixed:
            return self._typical
        now = time.monotonic()
        if now - self._read_at > self.REFRESH or not self._typical.pods:
            kinds = [_kind(p) for n in self.handle.nodes() for p in n.pods.values()]
            self._typical = _Typical(gpushare.typical_pods(kinds or [_kind(pod)]))
            self._read_at = now
        return self._typical

    @staticmethod
    def _frag(typ: _Typical, cpu: IntArray, gpus: IntArray, model_bad: BoolArray
              ) -> tuple[FloatArray, BoolArray, IntArray, IntArray]:
        """F(n) of every row (rows × devices → rows), with the per-kind aggregates it is
        made of: which devices each kind fits (rows × devices × kinds), how many, and the
        milli-GPU too small for it (rows × kinds)."""
        ge = gpus[:, :, None] >= typ.milli
        fitting = ge.sum(1)
        small = np.where(ge, 0, gpus[:, :, None]).sum(1)
        unusable = model_bad | (cpu[:, None] < typ.cpu) | (fitting < typ.count)
        frag: FloatArray = np.where(unusable, gpus.sum(1)[:, None], small) @ typ.weight
        return frag, ge, fitting, small

    def deltas(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
               ) -> tuple[FloatArray, BoolArray]:
        """(rows × trials) the fall in fragmentation F(before) − F(after) of each way to
        place the pod, and which trials are possible. A share tries every device (trial
        = device index); anything else has one trial: its least-free fitting devices."""
        req = _request(state, pod)
        typ = self.typical(pod, req)
        cpu, gpus, idle = _free_columns(table, rows)
        model_bad = typ.unusable_by_model(table, rows)
        before, ge, fitting, small = self._frag(typ, cpu, gpus, model_bad)
        cpu_after = cpu - pod.requests.get("cpu", 0)
        if req is None or not req.shared:
            after_gpus = gpus if req is None else _take_least_fitting(gpus, req)
            one = before - self._frag(typ, cpu_after, after_gpus, model_bad)[0]
            return one[:, None], np.ones((len(rows), 1), np.bool_)
        # a share: try every device that fits, from the aggregates of the node as it is
        trial = gpus - req.milli                                  # rows × devices
        ge2 = trial[:, :, None] >= typ.milli
        fitting2 = fitting[:, None, :] - ge + ge2
        small2 = (small[:, None, :] - np.where(ge, 0, gpus[:, :, None])
                  + np.where(ge2, 0, trial[:, :, None]))
        unusable = (model_bad[:, None, :] | (cpu_after[:, None, None] < typ.cpu)
                    | (fitting2 < typ.count))
        after = np.where(unusable, (idle - req.milli)[:, None, None], small2) @ typ.weight
        return before[:, None] - after, table.gpu_free[rows] >= req.milli

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        delta, possible = self.deltas(state, pod, table, rows)
        scores = np.where(possible, _sigmoid(delta), -1)
        if delta.shape[1] > 1:
            _remember_devices(state, table, rows, scores.argmax(1))
        out: IntArray = scores.max(1)
        return out

    def choose_gpus(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                    free: list[int], req: GpuRequest) -> list[int] | None:
        if not req.shared:
            return None
        typ = self.typical(pod, req)
        _, device = gpushare.fgd_score(node.allocatable.get("cpu", 0) - node.requested.get(
            "cpu", 0) + pod.requests.get("cpu", 0), free, node.gpu_model,
            pod.requests.get("cpu", 0), req, typ.pods)
        return [device] if device >= 0 else None


class FGDPlusScore(FGDScore):
    """Ours: FGD, except where FGD leaves the choice to chance. A pod without GPUs that
    fragments no GPU on several nodes (FGD scores them all alike, and the node's random
    rank decides) goes to the one with the least idle GPU among them — its CPU is then
    taken where no GPU can be stranded by it. GPU pods are placed as FGD places them."""

    name = "FGDPlusScore"

    def score_batch(self, state: CycleState, pod: PodInfo, table: NodeTable, rows: IntArray
                    ) -> IntArray:
        out = super().score_batch(state, pod, table, rows)
        if _request(state, pod) is not None or len(rows) < 2:
            return out
        hi = out.max()
        top = np.flatnonzero(out == hi)
        if len(top) < 2:
            return out
        _, _, idle = _free_columns(table, rows[top])
        later = top[idle > idle.min()]
        if hi > 0:
            out[later] = hi - 1
        else:
            out[top[idle == idle.min()]] = 1
        return out


def _remember_devices(state: CycleState, table: NodeTable, rows: IntArray,
                      devices: IntArray) -> None:
    """Note the device a policy picked on each node, for Reserve."""
    choice = state.read(_CHOICE)
    if choice is None:
        choice = {}
        state.write(_CHOICE, choice)
    for i, d in zip(rows.tolist(), devices.tolist(), strict=True):
        choice[table.nodes[i].name] = [d]


def _take_least_fitting(gpus: IntArray, req: GpuRequest) -> IntArray:
    """Each row's devices after ``req`` takes its ``count`` least-free fitting devices."""
    key = np.where(gpus >= req.milli, gpus, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=1, kind="stable")[:, :req.count]
    out = gpus.copy()
    np.put_along_axis(out, order, np.take_along_axis(gpus, order, 1) - req.milli, 1)
    return out


def _kind(pod: PodInfo) -> tuple[int, int, int, str]:
    req = pod.gpu
    if req is None:
        return (pod.requests.get("cpu", 0), 0, 0, "")
    return (pod.requests.get("cpu", 0), req.milli, req.count, "|".join(req.models))


def parse_typical(entries: Iterable[dict[str, Any]]) -> list[TypicalPod]:
    """``typicalPods`` args: ``[{cpu: 4000, milli: 500, count: 1, models: [V100],
    weight: 0.2}]`` (cpu in millicores)."""
    return [TypicalPod(int(e.get("cpu", 0)), int(e.get("milli", 0)), int(e.get("count", 0)),
                       tuple(e.get("models") or ()), float(e["weight"])) for e in entries]


# -- factories --------------------------------------------------------------------------


def new(args: dict[str, Any], handle: Handle) -> GpuShare:
    return GpuShare(handle)


def new_random(args: dict[str, Any], handle: Handle) -> RandomScore:
    seed = args.get("seed")
    return RandomScore(handle, int(seed) if seed is not None else None)


def new_dotprod(args: dict[str, Any], handle: Handle) -> DotProductScore:
    return DotProductScore(handle)


def new_bestfit(args: dict[str, Any], handle: Handle) -> BestFitScore:
    return BestFitScore(handle)


def new_clustering(args: dict[str, Any], handle: Handle) -> GpuClusteringScore:
    return GpuClusteringScore(handle)


def new_packing(args: dict[str, Any], handle: Handle) -> GpuPackingScore:
    return GpuPackingScore(handle)


def new_fgd(args: dict[str, Any], handle: Handle, cls: type[FGDScore] = FGDScore
            ) -> FGDScore:
    typical = args.get("typicalPods")
    return cls(handle, parse_typical(typical) if typical is not None else None)


def new_fgd_plus(args: dict[str, Any], handle: Handle) -> FGDScore:
    return new_fgd(args, handle, FGDPlusScore)

