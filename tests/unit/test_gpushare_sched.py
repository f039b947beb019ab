"""GPU sharing in the scheduler (GpuShare, the placement policies' Score plugins) and the
trace replay, without a server."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kybernetes.api import gpushare
from kybernetes.api.gpushare import GpuRequest, TypicalPod
from kybernetes.scheduler import config, gpusim
from kybernetes.scheduler.framework import BINDING_ANNOTATIONS, CycleState
from kybernetes.scheduler.plugins import gpushare as plugins
from kybernetes.scheduler.scheduler import FitError, Scheduler
from kybernetes.scheduler.types import PodInfo, make_node, make_pod

Obj = dict[str, Any]


def _gpu_node(name: str, gpus: int, model: str = "T4", cpu: str = "32") -> Obj:
    return make_node(name, cpu=cpu, extra={"nvidia.com/gpu": str(gpus),
                                           "kybernetes.io/gpu-milli": str(1000 * gpus)},
                     labels={"nvidia.com/gpu.product": model})


def _share(name: str, milli: int, **kw: Any) -> Obj:
    pod = make_pod(name, requests={"cpu": "1", "kybernetes.io/gpu-milli": str(milli)}, **kw)
    return pod


def _scheduler(nodes: list[Obj], cfg: Obj | None = None) -> Scheduler:
    s = Scheduler(None, config.parse(cfg or {}))  # type: ignore[arg-type]
    for n in nodes:
        s.cache.set_node(n)
    return s


def _place(s: Scheduler, pod: Obj, profile: str = "default-scheduler") -> tuple[str, str]:
    """Schedule, assume and reserve as the scheduling cycle does: (node, gpu-index)."""
    fwk = s.profiles[profile]
    state = CycleState()
    pi = PodInfo(pod)
    node = s.schedule_pod(fwk, state, pi)
    assumed = s.cache.assume(pi, node)
    assert fwk.run_reserve(state, assumed, node) is None
    return node, (state.read(BINDING_ANNOTATIONS) or {}).get(gpushare.GPU_INDEX_ANNOTATION, "")


def test_shares_stack_on_one_device_and_whole_gpus_take_idle_ones() -> None:
    s = _scheduler([_gpu_node("g", 2)])
    assert [_place(s, _share(f"p{m}", m))[1] for m in (300, 500, 200)] == ["0", "0", "0"]
    assert s.cache.node("g").gpu_free == [0, 1000]  # type: ignore[union-attr]
    whole = make_pod("train", requests={"nvidia.com/gpu": "1"})
    assert _place(s, whole) == ("g", "1")
    with pytest.raises(FitError, match="Insufficient GPU"):
        _place(s, _share("late", 100))


def test_a_share_no_single_device_can_take_names_fragmentation() -> None:
    s = _scheduler([_gpu_node("g", 2)])
    for i in range(2):
        s.cache.set_pod({**_share(f"b{i}", 600), "spec": {
            **_share(f"b{i}", 600)["spec"], "nodeName": "g"}, "metadata": {
            **_share(f"b{i}", 600)["metadata"],
            "annotations": {gpushare.GPU_INDEX_ANNOTATION: str(i)}}})
    assert s.cache.node("g").gpu_free == [400, 400]  # type: ignore[union-attr]
    with pytest.raises(FitError) as e:
        _place(s, _share("big", 500))
    assert str(e.value) == ("0/1 nodes are available: 1 node(s) had GPU fragmentation: "
                            "no single GPU has 500/1000 free.")


def test_bound_pods_hold_their_recorded_devices_until_they_go() -> None:
    s = _scheduler([_gpu_node("g", 4)])
    pod = make_pod("w", requests={"nvidia.com/gpu": "2"}, nodeName="g")
    pod["metadata"]["annotations"] = {gpushare.GPU_INDEX_ANNOTATION: "1,3"}
    s.cache.set_pod(pod)
    node = s.cache.node("g")
    assert node is not None and node.gpu_free == [1000, 0, 1000, 0]
    assert s.cache.table().gpu_free[node.index].tolist() == [1000, 0, 1000, 0]
    s.cache.remove_pod(pod)
    assert node.gpu_free == [1000] * 4
    assert s.cache.table().gpu_free[node.index].tolist() == [1000] * 4


def test_reserve_chooses_afresh_over_devices_a_what_if_left_on_the_pod() -> None:
    """Preemption's what-ifs add nominated pods to node copies, which notes devices on the
    pod info; the real placement must not trust them."""
    s = _scheduler([_gpu_node("g", 2)])
    full = make_pod("full", requests={"nvidia.com/gpu": "1"}, nodeName="g")
    full["metadata"]["annotations"] = {gpushare.GPU_INDEX_ANNOTATION: "1"}
    s.cache.set_pod(full)
    fwk = s.profiles["default-scheduler"]
    pi = PodInfo(_share("p", 300))
    pi.gpu_devices = [1]  # stale
    state = CycleState()
    assumed = s.cache.assume(pi, s.schedule_pod(fwk, state, pi))
    assert fwk.run_reserve(state, assumed, "g") is None
    assert state.read(BINDING_ANNOTATIONS) == {gpushare.GPU_INDEX_ANNOTATION: "0"}
    assert s.cache.node("g").gpu_free == [700, 0]  # type: ignore[union-attr]


def test_model_constraint() -> None:
    s = _scheduler([_gpu_node("t4", 1, "T4"), _gpu_node("a100", 1, "A100")])
    pod = _share("p", 300)
    pod["metadata"]["annotations"] = {gpushare.GPU_MODELS_ANNOTATION: "A100|H100"}
    assert _place(s, pod)[0] == "a100"
    pod2 = _share("q", 300)
    pod2["metadata"]["annotations"] = {gpushare.GPU_MODELS_ANNOTATION: "H100"}
    with pytest.raises(FitError, match=r"2 node\(s\) didn.t have an allowed GPU model"):
        _place(s, pod2)


# -- the policies' batch scores against the protocol's per-node definitions -------------


def _random_cluster(rng: random.Random, n: int) -> tuple[Scheduler, list[Obj]]:
    nodes = [_gpu_node(f"n{i:02d}", rng.choice([1, 2, 4, 8]), rng.choice(["T4", "V100"]),
                       cpu=str(rng.choice([32, 64, 96]))) for i in range(n)]
    s = _scheduler(nodes)
    for j in range(3 * n):
        node = s.cache.nodes()[rng.randrange(n)]
        free = node.gpu_free
        milli = rng.choice([100, 250, 500, 1000])
        req = GpuRequest(1, milli)
        devices = gpushare.choose_devices(free, req)
        if devices is None:
            continue
        pod = make_pod(f"b{j}", uid=f"b{j}", nodeName=node.name, requests={
            "cpu": str(rng.choice([1, 4, 8])), "kybernetes.io/gpu-milli": str(milli)})
        pod["metadata"]["annotations"] = {gpushare.GPU_INDEX_ANNOTATION: str(devices[0])}
        s.cache.set_pod(pod)
    return s, nodes


def _free_cpu(node: Any) -> int:
    return int(node.allocatable["cpu"] - node.requested.get("cpu", 0))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_scores_match_the_protocols_definitions(seed: int) -> None:
    rng = random.Random(seed)
    s, _ = _random_cluster(rng, 12)
    table = s.cache.table()
    typical = [TypicalPod(2000, 500, 1, (), 0.5), TypicalPod(8000, 1000, 2, ("V100",), 0.3),
               TypicalPod(1000, 0, 0, (), 0.2)]
    fgd = plugins.FGDScore(s.cache, typical)
    rows = np.arange(table.size)
    for req in (GpuRequest(1, 300), GpuRequest(2, 1000), GpuRequest(1, 1000), None):
        resources = {"cpu": "4"}
        if req is not None:
            resources["nvidia.com/gpu" if not req.shared else "kybernetes.io/gpu-milli"] = (
                str(req.count) if not req.shared else str(req.milli))
        pod = PodInfo(make_pod("x", requests=resources))
        assert pod.gpu == req
        state = CycleState()
        nodes = table.nodes
        free = [n.gpu_free for n in nodes]
        gpu = [sum(f) for f in free]
        r_gpu = req.total if req else 0
        expect = {
            plugins.DotProductScore(s.cache): [
                gpushare.dotprod_score(_free_cpu(n), g, 4000, r_gpu) for n, g in zip(
                    nodes, gpu, strict=True)],
            plugins.BestFitScore(s.cache): [
                gpushare.bestfit_score(_free_cpu(n), g, 4000, r_gpu) for n, g in zip(
                    nodes, gpu, strict=True)],
            plugins.GpuPackingScore(s.cache): [gpushare.gpu_packing_score(f, req) for f in free],
            plugins.GpuClusteringScore(s.cache): [
                gpushare.gpu_clustering_score(g, req, [p.gpu for p in n.pods.values() if p.gpu])
                for n, g in zip(nodes, gpu, strict=True)],
        }
        fits = np.array([req is None or gpushare.fits(f, n.gpu_model, req)
                         for n, f in zip(nodes, free, strict=True)])
        for plugin, want in expect.items():
            got = plugin.score_batch(state, pod, table, rows)
            assert got[fits].tolist() == np.array(want)[fits].tolist(), plugin.name
        got = fgd.score_batch(state, pod, table, rows)
        want_fgd = [gpushare.fgd_score(_free_cpu(n), f, n.gpu_model, 4000, req, typical)[0]
                    for n, f in zip(nodes, free, strict=True)]
        assert got[fits].tolist() == np.array(want_fgd)[fits].tolist()


def test_fgd_plus_sends_a_cpu_pod_where_no_gpu_idles() -> None:
    """Where FGD scores nodes alike for a CPU-only pod, ours prefers the node with the least
    idle GPU; GPU pods score as under FGD."""
    s = _scheduler([_gpu_node("a", 2), _gpu_node("b", 2), _gpu_node("c", 2)])
    for node, devices in (("a", "0,1"), ("c", "0")):
        pod = make_pod(f"on-{node}", uid=f"on-{node}", nodeName=node, requests={
            "nvidia.com/gpu": str(len(devices.split(",")))})
        pod["metadata"]["annotations"] = {gpushare.GPU_INDEX_ANNOTATION: devices}
        s.cache.set_pod(pod)
    typical = [TypicalPod(4000, 500, 1, (), 0.7), TypicalPod(2000, 0, 0, (), 0.3)]
    fgd, ours = plugins.FGDScore(s.cache, typical), plugins.FGDPlusScore(s.cache, typical)
    table = s.cache.table()
    rows = np.arange(table.size)
    names = [n.name for n in table.nodes]
    cpu_pod = PodInfo(make_pod("cpu", requests={"cpu": "2"}))
    theirs = fgd.score_batch(CycleState(), cpu_pod, table, rows)
    assert len(set(theirs.tolist())) == 1  # a tie: the node's rank would decide
    mine = ours.score_batch(CycleState(), cpu_pod, table, rows)
    assert names[int(mine.argmax())] == "a" and sorted(mine.tolist()).count(mine.max()) == 1
    gpu_pod = PodInfo(_share("g", 500))
    assert ours.score_batch(CycleState(), gpu_pod, table, rows).tolist() == \
        fgd.score_batch(CycleState(), gpu_pod, table, rows).tolist()


# -- the replay -------------------------------------------------------------------------


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _trace(tmp_path: Path) -> tuple[Path, Path]:
    nodes = _write(tmp_path / "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model", [
        f"node-{i},32000,131072,{2 if i % 2 else 4},{'T4' if i < 3 else 'V100M16'}"
        for i in range(6)])
    pods = _write(tmp_path / "pods.csv",
                  "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos", [
                      f"pod-{i:03d},{4000 if i % 3 else 8000},8192,{2 if i % 7 == 0 else 1},"
                      f"{1000 if i % 7 == 0 else (250, 500, 700)[i % 3]},"
                      f"{'V100M16' if i % 11 == 0 else ''},LS" for i in range(30)])
    return nodes, pods


@pytest.mark.parametrize("policy", list(gpusim.POLICIES))
def test_replay_fills_the_cluster_and_is_repeatable(tmp_path: Path, policy: str) -> None:
    nodes_csv, pods_csv = _trace(tmp_path)
    nodes, pods = gpusim.load_nodes(nodes_csv), gpusim.load_pods(pods_csv)
    first = gpusim.replay(nodes, pods, policy, tune=1.3, seed=7)
    again = gpusim.replay(nodes, pods, policy, tune=1.3, seed=7)
    assert first.as_json() | {"seconds": 0} == again.as_json() | {"seconds": 0}
    capacity = 18 * 1000
    assert first.capacity == capacity
    assert 1.3 * capacity - 1000 < first.arrived <= 1.3 * capacity
    assert 0 < first.allocated <= capacity and first.failed > 0
    assert first.curve[max(first.curve)] == round(100 * first.allocated / capacity, 2)


def test_arrivals_tune_up_with_copies_and_down_by_removal() -> None:
    pods = [gpusim.TracePod(f"p{i}", 1000, 1024, 1, 500, "") for i in range(10)]
    up = gpusim.arrivals(pods, 4000, 1.3, random.Random(1))
    assert sorted(p.name for p in up[:10]) == sorted(p.name for p in pods)
    assert all("-tuned-" in p.name for p in up[10:])
    assert sum(p.gpu_milli for p in up) == 5000  # stops before passing 5200
    down = gpusim.arrivals(pods, 2000, 1.3, random.Random(1))
    assert sum(p.gpu_milli for p in down) == 2500
    names = [p.name for p in gpusim.arrivals(pods, 10**6, 0.0001, random.Random(1))]
    assert names == []


def test_unknown_policy_is_a_clear_error(tmp_path: Path) -> None:
    nodes_csv, pods_csv = _trace(tmp_path)
    with pytest.raises(gpusim.TraceError, match="unknown policy 'Magic'"):
        gpusim.replay(gpusim.load_nodes(nodes_csv), gpusim.load_pods(pods_csv), "Magic")
