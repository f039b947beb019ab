"""Trace replay of GPU placement: the FGD paper's experiment
(``../shared/data/fgd-reference/PROTOCOL.md``) run through the live scheduler's own code —
its configuration, framework, plugins, node cache and node table — on fake nodes.

The arrival sequence follows the protocol: every trace row is a pod; the trace is shuffled,
then tuned to ``tune`` × the cluster's GPU capacity (random draws with replacement
appended, or random removals); nodes get a random rank that breaks score ties. Pods are
scheduled one at a time and never leave; a pod that fits nowhere fails and is dropped.
After each pod the replay notes the GPU demand arrived so far and the milli-GPU allocated,
both as % of capacity; the curve is the mean allocation at each whole arrived %.

>>> POLICIES["FGD"]
'FGDScore'
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kybernetes.api import gpushare
from kybernetes.scheduler import config
from kybernetes.scheduler.framework import CycleState
from kybernetes.scheduler.scheduler import FitError, Scheduler
from kybernetes.scheduler.types import NodeInfo, PodInfo

Obj = dict[str, Any]

POLICIES = {
    "Random": "RandomScore",
    "DotProd": "DotProductScore",
    "GpuClustering": "GpuClusteringScore",
    "GpuPacking": "GpuPackingScore",
    "BestFit": "BestFitScore",
    "FGD": "FGDScore",
    "FGDPlus": "FGDPlusScore",
}
"""Policy names as the paper's figures give them → the Score plugin that implements it."""
MAX_PODS_PER_NODE = 1000
"""The trace's nodes run far fewer pods than this; it is not a constraint of the replay."""


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class TraceNode:
    name: str
    cpu: int
    memory_mib: int
    gpus: int
    model: str


@dataclass(frozen=True)
class TracePod:
    name: str
    cpu: int
    memory_mib: int
    gpus: int
    milli: int
    spec: str

    @property
    def gpu_milli(self) -> int:
        """Milli-GPU the pod asks for in all (the protocol's num_gpu · gpu_milli)."""
        return self.gpus * self.milli


def _rows(path: Path, needed: set[str]) -> Iterable[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = needed - set(reader.fieldnames or ())
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        yield from reader


def _int(row: dict[str, str], key: str, where: str) -> int:
    text = (row.get(key) or "").strip()
    try:
        return int(float(text)) if text else 0
    except ValueError:
        raise TraceError(f"{where}: {key}: not a number: {text!r}") from None


def load_nodes(path: Path) -> list[TraceNode]:
    """``sn,cpu_milli,memory_mib,gpu,model`` rows (the trace's node list)."""
    out = []
    for i, row in enumerate(_rows(path, {"sn", "cpu_milli", "memory_mib", "gpu", "model"}), 2):
        where = f"{path}:{i}"
        out.append(TraceNode(row["sn"], _int(row, "cpu_milli", where),
                             _int(row, "memory_mib", where), _int(row, "gpu", where),
                             (row.get("model") or "").strip()))
    if not out:
        raise TraceError(f"{path}: no nodes")
    return out


def load_pods(path: Path) -> list[TracePod]:
    """``name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec`` rows (times are ignored:
    pods never leave)."""
    out = []
    need = {"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"}
    for i, row in enumerate(_rows(path, need), 2):
        where = f"{path}:{i}"
        gpus = _int(row, "num_gpu", where)
        milli = max(0, min(_int(row, "gpu_milli", where), gpushare.FULL)) if gpus > 0 else 0
        spec = (row.get("gpu_spec") or "").strip()
        out.append(TracePod(row["name"], _int(row, "cpu_milli", where),
                            _int(row, "memory_mib", where), gpus, milli,
                            "" if spec == "nan" else spec))
    if not out:
        raise TraceError(f"{path}: no pods")
    return out


def arrivals(pods: list[TracePod], capacity: int, tune: float, rng: random.Random
             ) -> list[TracePod]:
    """The arrival sequence (§2): the trace shuffled, then grown with random copies (drawn
    with replacement, appended) or thinned by random removals until its GPU demand is
    ``tune`` × ``capacity``."""
    by_name = sorted(pods, key=lambda p: p.name)
    seq = list(by_name)
    rng.shuffle(seq)
    target = tune * capacity
    total = sum(p.gpu_milli for p in seq)
    if total < target:
        i = 0
        while True:
            p = by_name[rng.randrange(len(by_name))]
            if total + p.milli > target:
                break
            total += p.gpu_milli
            seq.append(TracePod(f"{p.name}-tuned-{i}", p.cpu, p.memory_mib, p.gpus, p.milli,
                                p.spec))
            i += 1
    elif total > target:
        alive = [True] * len(seq)
        order = list(range(len(seq)))
        rng.shuffle(order)
        for j in order:
            if total <= target:
                break
            alive[j] = False
            total -= seq[j].gpu_milli
        seq = [p for p, keep in zip(seq, alive, strict=True) if keep]
    return seq


def typical_pods(pods: Iterable[TracePod]) -> list[Obj]:
    """FGD's typical pods of the original trace, as the plugin's ``typicalPods`` args."""
    kinds = gpushare.typical_pods((p.cpu, p.milli, p.gpus, p.spec) for p in pods)
    return [{"cpu": t.cpu, "milli": t.milli, "count": t.count, "models": list(t.models),
             "weight": t.weight} for t in kinds]


def node_object(n: TraceNode, rank: int) -> Obj:
    name = f"{rank:04d}-{n.name}"
    alloc = {"cpu": f"{n.cpu}m", "memory": f"{n.memory_mib}Mi",
             "pods": str(MAX_PODS_PER_NODE)}
    labels = {"kubernetes.io/hostname": name}
    if n.gpus:
        alloc[gpushare.NVIDIA_GPU] = str(n.gpus)
        labels[gpushare.GPU_MODEL_LABEL] = n.model
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {}, "status": {"capacity": alloc, "allocatable": alloc,
                                   "conditions": [{"type": "Ready", "status": "True"}]}}


def pod_object(p: TracePod, uid: int) -> Obj:
    annotations = {}
    if p.gpus:
        annotations = {gpushare.TRACE_COUNT: str(p.gpus), gpushare.TRACE_MILLI: str(p.milli)}
        if p.spec:
            annotations[gpushare.TRACE_MODEL] = p.spec
    requests = {"cpu": f"{p.cpu}m", "memory": f"{p.memory_mib}Mi"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": "default", "uid": f"trace-{uid}",
                         "annotations": annotations},
            "spec": {"containers": [{"name": "main", "resources": {"requests": requests}}]}}


def profile(policy: str, *, seed: int, typical: list[Obj]) -> config.SchedulerConfiguration:
    """The scheduler configuration of a replay (§5): only the policy's Score plugin, weight
    1000; every node scored."""
    plugin = POLICIES.get(policy, policy)
    if plugin not in config.REGISTRY:
        raise TraceError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
    entry = {"name": plugin, "weight": 1000}
    plugins: Obj = {"multiPoint": {"enabled": [entry]},
                    "score": {"disabled": [{"name": "*"}], "enabled": [entry]},
                    "preScore": {"disabled": [{"name": "*"}]},
                    "postFilter": {"disabled": [{"name": "*"}]}}
    if plugin == "RandomScore":
        plugins["preScore"]["enabled"] = [{"name": plugin}]
    args: list[Obj] = []
    if plugin == "RandomScore":
        args.append({"name": plugin, "args": {"seed": seed}})
    if plugin in ("FGDScore", "FGDPlusScore"):
        args.append({"name": plugin, "args": {"typicalPods": typical}})
    return config.parse({"percentageOfNodesToScore": 100, "profiles": [{
        "schedulerName": "default-scheduler", "plugins": plugins, "pluginConfig": args}]})


class ReplayScheduler(Scheduler):
    """The live scheduler without a server; ties go to the first node by name (§5)."""

    def pick(self, ties: list[NodeInfo]) -> NodeInfo:
        return min(ties, key=lambda n: n.name)


@dataclass
class Result:
    policy: str
    seed: int
    tune: float
    pods: int
    failed: int = 0
    capacity: int = 0
    arrived: int = 0
    allocated: int = 0
    seconds: float = 0.0
    curve: dict[int, float] = field(default_factory=dict)
    """Arrived demand (whole % of capacity) → mean allocated milli-GPU (% of capacity)."""

    def as_json(self) -> Obj:
        return {"policy": self.policy, "seed": self.seed, "tune": self.tune,
                "pods": self.pods, "failed": self.failed, "capacity_milli": self.capacity,
                "arrived_pct": round(100 * self.arrived / self.capacity, 2),
                "allocated_pct": round(100 * self.allocated / self.capacity, 2),
                "seconds": round(self.seconds, 1),
                "curve": {str(k): v for k, v in sorted(self.curve.items())}}


def replay(nodes: list[TraceNode], pods: list[TracePod], policy: str, *, tune: float = 1.3,
           seed: int = 42) -> Result:
    started = time.perf_counter()
    rng = random.Random(seed)
    capacity = sum(n.gpus for n in nodes) * gpushare.FULL
    if not capacity:
        raise TraceError("the nodes have no GPUs")
    seq = arrivals(pods, capacity, tune, rng)
    ranks = list(range(len(nodes)))
    rng.shuffle(ranks)
    sched = ReplayScheduler(None, profile(policy, seed=seed, typical=typical_pods(pods)))  # type: ignore[arg-type]
    for n, rank in zip(sorted(nodes, key=lambda n: n.name), ranks, strict=True):
        sched.cache.set_node(node_object(n, rank))
    fwk = sched.profiles["default-scheduler"]
    result = Result(policy, seed, tune, len(seq), capacity=capacity)
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    unit = capacity / 100
    for uid, p in enumerate(seq):
        result.arrived += p.gpu_milli
        pod = PodInfo(pod_object(p, uid))
        state = CycleState()
        try:
            node = sched.schedule_pod(fwk, state, pod)
        except FitError:
            result.failed += 1
        else:
            assumed = sched.cache.assume(pod, node)
            if fwk.run_reserve(state, assumed, node) is None:
                result.allocated += p.gpu_milli
            else:
                fwk.run_unreserve(state, assumed, node)
                sched.cache.forget(assumed)
                result.failed += 1
        x = round(result.arrived / unit)
        sums[x] = sums.get(x, 0.0) + round(result.allocated / unit, 2)
        counts[x] = counts.get(x, 0) + 1
    result.curve = {x: round(sums[x] / counts[x], 2) for x in sums}
    table = sched.cache.table()
    held = int(table.gpu_free.clip(min=0).sum())
    if capacity - held != result.allocated:
        raise AssertionError(f"replay bookkeeping: the node table holds {capacity - held} "
                             f"milli-GPU, the replay counted {result.allocated}")
    result.seconds = time.perf_counter() - started
    return result


def plot(result: Result, path: Path) -> None:
    """The allocation curve as a PNG (matplotlib, imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(result.curve)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [result.curve[x] for x in xs], label=result.policy)
    ax.plot(xs, xs, linestyle=":", color="grey", label="arrived")
    ax.set_xlabel("arrived GPU demand (% of capacity)")
    ax.set_ylabel("allocated GPU (% of capacity)")
    ax.set_xlim(0, max(xs))
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
