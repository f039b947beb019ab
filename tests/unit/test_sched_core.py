"""The scheduling cycle, the queue, the configuration and preemption, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.aio.clock import FakeClock
from kybernetes.api.meta import parse_time
from kybernetes.scheduler import config
from kybernetes.scheduler.cache import Cache
from kybernetes.scheduler.framework import (
    NODE_ADD,
    POD_DELETE,
    Action,
    ClusterEvent,
    CycleState,
    Status,
)
from kybernetes.scheduler.plugins.defaultpreemption import Candidate, pick_one
from kybernetes.scheduler.queue import SchedulingQueue
from kybernetes.scheduler.runtime import num_feasible_nodes_to_find
from kybernetes.scheduler.scheduler import FitError, Scheduler
from kybernetes.scheduler.types import PodInfo, Room, make_node, make_pod

Obj = dict[str, Any]


def _scheduler(nodes: list[Obj], pods: list[Obj] = (), cfg: Obj | None = None  # type: ignore[assignment]
               ) -> Scheduler:
    s = Scheduler(None, config.parse(cfg or {}))  # type: ignore[arg-type]
    for n in nodes:
        s._node_added(n)
    for p in pods:
        s.cache.set_pod(p)
    return s


def _schedule(s: Scheduler, pod: Obj, profile: str = "default-scheduler") -> str:
    return s.schedule_pod(s.profiles[profile], CycleState(), PodInfo(pod))


def _gpu_cluster() -> list[Obj]:
    """12 nodes: 8 without GPUs, 4 GPU nodes tainted gpu=true:NoSchedule."""
    taint = {"key": "gpu", "value": "true", "effect": "NoSchedule"}
    return [make_node(f"cpu-{i}") for i in range(8)] + [
        make_node(f"gpu-{i}", taints=[taint], extra={"nvidia.com/gpu": "1"}) for i in range(4)]


def test_fit_error_message_reads_like_upstream() -> None:
    """An unplaceable GPU pod gets upstream's reason counts, sorted, then preemption's."""
    s = _scheduler(_gpu_cluster())
    with pytest.raises(FitError) as e:
        _schedule(s, make_pod("train", requests={"nvidia.com/gpu": "1"}))
    assert str(e.value) == ("0/12 nodes are available: 4 node(s) had untolerated taint "
                            "{gpu: true}, 8 Insufficient nvidia.com/gpu.")


def test_tolerating_gpu_pod_lands_on_a_gpu_node() -> None:
    """With the toleration the pod fits a GPU node, and only there."""
    s = _scheduler(_gpu_cluster())
    pod = make_pod("train", requests={"nvidia.com/gpu": "1"},
                   tolerations=[{"key": "gpu", "operator": "Exists"}])
    assert _schedule(s, pod).startswith("gpu-")


def test_assumed_pods_take_space_at_once() -> None:
    """The next pod sees the space the previous one was assumed to take."""
    s = _scheduler([make_node("a", cpu="2"), make_node("b", cpu="2")])
    placed = []
    for i in range(4):
        pi = PodInfo(make_pod(f"p{i}", uid=f"u{i}", requests={"cpu": "1"}))
        node = s.schedule_pod(s.profiles["default-scheduler"], CycleState(), pi)
        s.cache.assume(pi, node)
        placed.append(node)
    assert sorted(placed) == ["a", "a", "b", "b"]
    with pytest.raises(FitError, match="2 Insufficient cpu"):
        _schedule(s, make_pod("p9", uid="u9", requests={"cpu": "1"}))
    s.cache.forget(PodInfo(make_pod("p0", uid="u0")))
    assert _schedule(s, make_pod("p9", uid="u9", requests={"cpu": "1"})) == placed[0]


def test_least_allocated_spreads_and_most_allocated_packs() -> None:
    """The default profile spreads; a MostAllocated profile packs onto the busy node."""
    cfg = {"profiles": [{"schedulerName": "default-scheduler"},
                        {"schedulerName": "bin-packing", "pluginConfig": [
                            {"name": "NodeResourcesFit", "args": {"scoringStrategy": {
                                "type": "MostAllocated"}}}]}]}
    busy = make_pod("x", uid="ux", requests={"cpu": "2", "memory": "16Gi"}, nodeName="busy")
    s = _scheduler([make_node("busy"), make_node("idle")], [busy], cfg)
    pod = make_pod("p", requests={"cpu": "1", "memory": "1Gi"})
    assert _schedule(s, pod) == "idle"
    assert _schedule(s, pod, "bin-packing") == "busy"


def test_pre_filter_rejection_message() -> None:
    """A PreFilter rejection is reported once, not per node."""
    s = _scheduler([make_node("a"), make_node("b")])
    pod = make_pod("p", affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In",
                              "values": ["zzz"]}]}]}}})
    with pytest.raises(FitError) as e:
        _schedule(s, pod)
    assert str(e.value) == ("0/2 nodes are available: 2 node(s) didn't satisfy plugin(s) "
                            "[NodeAffinity].")


def test_no_nodes() -> None:
    """Without nodes the message says so."""
    with pytest.raises(FitError, match="no nodes available to schedule pods"):
        _schedule(_scheduler([]), make_pod("p"))


@pytest.mark.parametrize(("percentage", "nodes", "want"), [
    pytest.param(0, 50, 50, id="small-cluster-all-nodes"),
    pytest.param(0, 5000, 500, id="adaptive-10-percent-at-5000"),
    pytest.param(0, 1000, 420, id="adaptive-42-percent-at-1000"),
    pytest.param(0, 100000, 5000, id="adaptive-floor-5-percent"),
    pytest.param(1, 5000, 100, id="at-least-100"),
    pytest.param(100, 5000, 5000, id="all"),
])
def test_num_feasible_nodes(percentage: int, nodes: int, want: int) -> None:
    """percentageOfNodesToScore follows upstream's adaptive default."""
    assert num_feasible_nodes_to_find(percentage, nodes) == want


def test_search_stops_early_and_rotates() -> None:
    """With 500 nodes, 135 feasible are enough; the next search starts where it stopped."""
    s = _scheduler([make_node(f"n{i:03d}") for i in range(500)])
    fwk = s.profiles["default-scheduler"]
    pi = PodInfo(make_pod("p"))
    from kybernetes.scheduler.scheduler import Diagnosis

    def search() -> list[Any]:
        state = CycleState()
        fwk.run_pre_filter(state, pi, s.cache.nodes())
        return s._find_feasible(fwk, state, pi, s.cache.nodes(), Diagnosis())

    first, second = search(), search()
    assert len(first) == len(second) == num_feasible_nodes_to_find(0, 500) == 230
    assert {n.name for n in first}.isdisjoint({n.name for n in second})


def test_zones_are_interleaved() -> None:
    """Nodes are tried zone by zone in turn, so an early stop still sees every zone."""
    c = Cache()
    for i in range(3):
        for z in ("z1", "z2"):
            c.set_node(make_node(f"{z}-{i}", labels={"topology.kubernetes.io/zone": z}))
    assert [n.name for n in c.nodes()][:4] == ["z1-0", "z2-0", "z1-1", "z2-1"]


# -- queue --------------------------------------------------------------------------------


def _queue(clock: FakeClock, **kw: Any) -> SchedulingQueue:
    from kybernetes.scheduler.plugins.noderesources import Fit

    events = {"NodeResourcesFit": Fit({}).events_to_register()}
    return SchedulingQueue(lambda p, t: (-p.priority, t), clock=clock, events=events, **kw)


async def test_queue_pops_by_priority_then_age() -> None:
    """Higher priority first; equal priority in arrival order."""
    clock = FakeClock()
    q = _queue(clock)
    for name, prio in (("low", 1), ("high", 10), ("low2", 1)):
        clock.advance(1)
        q.add(PodInfo(make_pod(name, uid=name, priority=prio)))
    assert [(await q.pop()).pod.name for _ in range(3)] == ["high", "low", "low2"]


async def test_unschedulable_pod_waits_for_a_helpful_event() -> None:
    """A pod NodeResourcesFit rejected moves on a pod deletion, not on a label change."""
    clock = FakeClock()
    q = _queue(clock)
    q.add(PodInfo(make_pod("p", uid="p")))
    qp = await q.pop()
    q.add_unschedulable(qp, plugins={"NodeResourcesFit"})
    assert q.where("p") == "unschedulable"
    q.on_event(ClusterEvent("Pod", Action.UPDATE_POD_LABEL))
    assert q.where("p") == "unschedulable"
    q.on_event(POD_DELETE)
    assert q.where("p") == "backoff"
    clock.advance(1.0)
    q.flush()
    assert q.where("p") == "active"


async def test_event_during_the_attempt_is_not_lost() -> None:
    """A cluster event while the pod was being scheduled sends it to backoffQ."""
    clock = FakeClock()
    q = _queue(clock)
    q.add(PodInfo(make_pod("p", uid="p")))
    qp = await q.pop()
    q.on_event(NODE_ADD)
    q.add_unschedulable(qp, plugins={"NodeResourcesFit"})
    assert q.where("p") == "backoff"


async def test_backoff_doubles_up_to_the_cap() -> None:
    """Back-off is 1 s, 2 s, 4 s, 8 s, then 10 s."""
    clock = FakeClock()
    q = _queue(clock)
    q.add(PodInfo(make_pod("p", uid="p")))
    waits = []
    for _ in range(6):
        qp = await q.pop()
        waits.append(q.backoff_duration(qp))
        q.add_unschedulable(qp, plugins=set(), error=True)
        clock.advance(q.backoff_duration(qp))
    assert waits == [1, 2, 4, 8, 10, 10]


async def test_unschedulable_pods_retry_after_five_minutes() -> None:
    """Without any event, an unschedulable pod is tried again after five minutes."""
    clock = FakeClock()
    q = _queue(clock)
    q.add(PodInfo(make_pod("p", uid="p")))
    q.add_unschedulable(await q.pop(), plugins={"NodeResourcesFit"})
    clock.advance(299)
    q.flush()
    assert q.where("p") == "unschedulable"
    clock.advance(2)
    q.flush()
    assert q.where("p") == "active"


def test_gated_pod_enters_when_gates_are_removed() -> None:
    """A gated pod waits outside activeQ until an update removes its gates."""
    from kybernetes.scheduler.plugins.schedulinggates import SchedulingGates

    gates = SchedulingGates()
    q = SchedulingQueue(lambda p, t: (t,), pre_enqueue=gates.pre_enqueue, clock=FakeClock())
    q.add(PodInfo(make_pod("p", uid="p", schedulingGates=[{"name": "wait"}])))
    assert q.where("p") == "gated"
    q.update(PodInfo(make_pod("p", uid="p")))
    assert q.where("p") == "active"


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "error"), [
    pytest.param({"apiVersion": "kubescheduler.config.k8s.io/v1beta3"}, "apiVersion",
                 id="old-api-version"),
    pytest.param({"profiles": [{"schedulerName": "a"}, {"schedulerName": "a"}]},
                 "Duplicate value", id="duplicate-profile"),
    pytest.param({"percentageOfNodesToScore": 120}, "percentageOfNodesToScore",
                 id="percentage-out-of-range"),
    pytest.param({"profiles": [{"plugins": {"filter": {"enabled": [{"name": "Nope"}]}}}]},
                 "plugin 'Nope' not found", id="unknown-plugin"),
    pytest.param({"profiles": [{"plugins": {"filter": {"enabled": [
        {"name": "PrioritySort"}]}}}]}, "does not extend filter", id="wrong-extension-point"),
    pytest.param({"profiles": [{"plugins": {"bind": {"disabled": [{"name": "*"}]}}}]},
                 "bind plugin", id="no-binder"),
    pytest.param({"profiles": [{"pluginConfig": [{"name": "NodeResourcesFit", "args": {
        "scoringStrategy": {"type": "Fancy"}}}]}]}, "Unsupported value", id="bad-args"),
])
def test_configuration_errors(doc: Obj, error: str) -> None:
    """Bad configurations are refused with a field and a reason."""
    with pytest.raises(config.ConfigError, match=error):
        config.build(config.parse(doc), Cache())


def test_configuration_disables_and_weights() -> None:
    """Plugins can be disabled per extension point and re-weighted."""
    cfg = config.parse({"profiles": [{"plugins": {
        "score": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}],
                  "enabled": [{"name": "NodeAffinity", "weight": 7}]},
        "filter": {"disabled": [{"name": "TaintToleration"}]}}}]})
    fwk = config.build(cfg, Cache())["default-scheduler"]
    assert "NodeResourcesBalancedAllocation" not in [p.name for p in fwk.score]
    assert "TaintToleration" not in [p.name for p in fwk.filter]
    assert "TaintToleration" in [p.name for p in fwk.score]
    assert fwk.weights["NodeAffinity"] == 7
    assert fwk.weights["TaintToleration"] == 3


# -- preemption ---------------------------------------------------------------------------


def _running(name: str, node: str, prio: int, cpu: str, start: str = "2026-01-01T00:00:00Z",
             labels: dict[str, str] | None = None) -> Obj:
    pod = make_pod(name, uid=f"u-{name}", requests={"cpu": cpu}, nodeName=node,
                   priority=prio, labels=labels or {})
    pod["status"] = {"phase": "Running", "startTime": start}
    return pod


def _victims(s: Scheduler, pod: Obj) -> dict[str, list[str]]:
    fwk = s.profiles["default-scheduler"]
    pi = PodInfo(pod)
    state = CycleState()
    with pytest.raises(FitError) as e:
        s.schedule_pod(fwk, state, pi)
    plugin = fwk.all_plugins["DefaultPreemption"]
    cands, _statuses = plugin.find_candidates(state, pi, s.cache.nodes(), e.value.diagnosis.statuses)
    return {c.node: [v.name for v in c.victims] for c in cands}


def test_preemption_removes_only_what_is_needed() -> None:
    """Lower-priority pods are removed, then the most important given back while it fits."""
    s = _scheduler([make_node("a", cpu="4")], [
        _running("big-low", "a", 10, "2"), _running("small-low", "a", 10, "1"),
        _running("mid", "a", 50, "1")])
    assert _victims(s, make_pod("urgent", priority=100, requests={"cpu": "2"})) == {
        "a": ["big-low"]}


def test_preemption_never_touches_equal_or_higher_priority() -> None:
    """Pods of equal or higher priority are never victims."""
    s = _scheduler([make_node("a", cpu="2")], [_running("peer", "a", 100, "2")])
    fwk = s.profiles["default-scheduler"]
    pi = PodInfo(make_pod("p", priority=100, requests={"cpu": "1"}))
    with pytest.raises(FitError) as e:
        s.schedule_pod(fwk, CycleState(), pi)
    plugin = fwk.all_plugins["DefaultPreemption"]
    cands, statuses = plugin.find_candidates(CycleState(), pi, s.cache.nodes(),
                                             e.value.diagnosis.statuses)
    assert cands == []
    assert statuses["a"].reasons == ["No preemption victims found for incoming pod"]


def test_preemption_respects_disruption_budgets_where_possible() -> None:
    """Of two nodes, the one whose victims no PodDisruptionBudget protects is chosen."""
    s = _scheduler([make_node("a", cpu="2"), make_node("b", cpu="2")], [
        _running("guarded", "a", 10, "2", labels={"app": "db"}),
        _running("free", "b", 20, "2", labels={"app": "batch"})])
    pdb = {"metadata": {"name": "db", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "db"}}},
           "status": {"disruptionsAllowed": 0}}
    s.extra["poddisruptionbudgets"]._store("default/db", pdb)
    fwk = s.profiles["default-scheduler"]
    pi = PodInfo(make_pod("p", priority=100, requests={"cpu": "2"}))
    state = CycleState()
    with pytest.raises(FitError) as e:
        s.schedule_pod(fwk, state, pi)
    cands, _ = fwk.all_plugins["DefaultPreemption"].find_candidates(
        state, pi, s.cache.nodes(), e.value.diagnosis.statuses)
    assert {c.node: c.pdb_violations for c in cands} == {"a": 1, "b": 0}
    assert pick_one(cands).node == "b"


def _cand(node: str, prios: list[int], violations: int = 0,
          starts: list[str] | None = None) -> Candidate:
    starts = starts or ["2026-01-01T00:00:00Z"] * len(prios)
    return Candidate(node, [PodInfo(_running(f"{node}{i}", node, p, "1", start=t))
                            for i, (p, t) in enumerate(zip(prios, starts, strict=True))],
                     violations)


@pytest.mark.parametrize(("cands", "want"), [
    pytest.param([_cand("a", [1], 1), _cand("b", [50])], "b", id="fewest-pdb-violations"),
    pytest.param([_cand("a", [50]), _cand("b", [10, 10])], "b", id="lowest-highest-priority"),
    pytest.param([_cand("a", [10, 10]), _cand("b", [10, 1])], "b", id="lowest-priority-sum"),
    pytest.param([_cand("a", [10, 10]), _cand("b", [10])], "b", id="fewest-victims"),
    pytest.param([_cand("a", [10], starts=["2026-01-01T00:00:00Z"]),
                  _cand("b", [10], starts=["2026-01-02T00:00:00Z"])], "b",
                 id="latest-start-time"),
])
def test_pick_one_node_for_preemption(cands: list[Candidate], want: str) -> None:
    """Candidates are compared criterion by criterion, as upstream."""
    assert pick_one(cands).node == want


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_preemption_by_counts_matches_the_whole_filter_chain(seed: int) -> None:
    """Where NodeResourcesFit is the only Filter reading the node's pods, preemption's dry
    runs by resource counts pick the same victims, budget violations and per-node reasons
    as the whole Filter chain run on a copy of each node; so do the checks with pods
    nominated here and there, in the failed attempt before it."""
    import random

    rng = random.Random(seed)
    nodes = _random_cluster(rng, 30)
    running = [_running(f"r{i}", f"n{rng.randrange(30)}", rng.choice([0, 10, 50, 100]),
                        rng.choice(["100m", "500m", "1", "2"]),
                        start=f"2026-01-0{rng.randint(1, 9)}T00:00:00Z",
                        labels={"app": rng.choice(["db", "web"])}) for i in range(300)]
    s = _scheduler(nodes, running)
    s.extra["poddisruptionbudgets"]._store("default/db", {
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}},
        "status": {"disruptionsAllowed": 2}})
    fwk = s.profiles["default-scheduler"]
    plugin = fwk.all_plugins["DefaultPreemption"]
    by_counts = with_candidates = 0
    for i in range(60):
        if rng.random() < 0.4:
            nominated = make_pod(f"nom{i}", uid=f"nom{i}", priority=rng.choice([0, 60, 1000]),
                                 requests={"cpu": rng.choice(["500m", "2"])})
            s.queue.nominator.add(PodInfo(nominated), f"n{rng.randrange(30)}")
        spec: Obj = {"tolerations": [{"key": "gpu", "operator": "Exists"}]
                     if rng.random() < 0.5 else []}
        if rng.random() < 0.3:
            spec["nodeSelector"] = {"topology.kubernetes.io/zone": rng.choice(["z0", "z1"])}
        if rng.random() < 0.15:
            spec["affinity"] = {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "db"}},
                    "topologyKey": "kubernetes.io/hostname"}]}}
        requests = {"cpu": rng.choice(["2", "3", "4", "6"])}
        if rng.random() < 0.3:
            requests["memory"] = rng.choice(["1Gi", "20Gi"])
        pi = PodInfo(make_pod(f"pre{i}", uid=f"pre{i}", priority=rng.choice([20, 60, 200]),
                              requests=requests, **spec))
        start, seed_i = rng.randrange(30), rng.random()
        outcomes: list[Any] = []
        for counting in (True, False):
            fwk.by_counts, s._next_start = counting, start
            state = CycleState()
            try:
                outcomes.append(s.schedule_pod(fwk, state, pi))
                continue
            except FitError as e:
                fit_error = e
            by_counts += counting and fwk.counting_filter(state) is not None
            random.seed(seed_i)  # the same first candidate node
            cands, statuses = plugin.find_candidates(state, pi, s.cache.nodes(),
                                                     fit_error.diagnosis.statuses)
            outcomes.append((str(fit_error),
                             [(c.node, [v.name for v in c.victims], c.pdb_violations)
                              for c in cands],
                             {k: (v.code, v.reasons, v.plugin) for k, v in statuses.items()}))
        assert outcomes[0] == outcomes[1], f"pod {i}"
        with_candidates += isinstance(outcomes[0], tuple) and bool(outcomes[0][1])
    assert by_counts >= 20 and with_candidates >= 15, (by_counts, with_candidates)


def test_nominator_counting_views_follow_nominations() -> None:
    """The pods nominated to each node that count for a pod (others of at least its
    priority), kept per priority as pods are nominated, moved and withdrawn, are those
    picked from the node's nominated pods afresh."""
    import random

    from kybernetes.scheduler.queue import Nominator
    from kybernetes.scheduler.runtime import nominated_that_count

    rng = random.Random(5)
    nom = Nominator()
    pods = [PodInfo(make_pod(f"p{i}", uid=f"u{i}", priority=rng.choice([0, 10, 100])))
            for i in range(40)]
    for step in range(400):
        pod = rng.choice(pods)
        if rng.random() < 0.6:
            nom.add(pod, f"n{rng.randrange(8)}")
        else:
            nom.delete(pod.uid)
        asker = rng.choice(pods)
        view = nom.counting(asker)
        want = {f"n{i}": nominated_that_count(asker, nom.for_node(f"n{i}")) for i in range(8)}
        assert {n: view.get(n) for n in want} == want, step
        assert dict(view.items()) == {n: v for n, v in want.items() if v}, step


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_preemption_reuses_a_nodes_dry_run_only_while_nothing_it_read_changed(seed: int
                                                                              ) -> None:
    """Preemptors of a few shapes, one after another, while pods come, go and start, nodes
    shrink, budgets change and pods are nominated: the candidates and every node's
    verdict are those of a plugin that remembers nothing, and most dry runs are reused."""
    import random

    from kybernetes.scheduler.plugins import defaultpreemption

    rng = random.Random(seed)
    n_nodes = 20
    nodes = [make_node(f"n{i}", cpu=str(rng.choice([4, 8])), pods=110,
                       labels={"topology.kubernetes.io/zone": f"z{i % 3}"})
             for i in range(n_nodes)]

    def running(i: int) -> Obj:
        return _running(f"r{i}", f"n{rng.randrange(n_nodes)}", rng.choice([0, 10, 10, 50]),
                        rng.choice(["500m", "1", "2"]),
                        start=f"2026-01-0{rng.randint(1, 9)}T00:00:00Z",
                        labels={"app": rng.choice(["db", "web"])})

    pods = {p["metadata"]["name"]: p for p in (running(i) for i in range(170))}
    s = _scheduler(nodes, list(pods.values()))
    pdbs = s.extra["poddisruptionbudgets"]
    version = 0

    def budget(allowed: int) -> None:
        nonlocal version
        version += 1
        pdbs._store("default/db", {
            "metadata": {"name": "db", "namespace": "default", "uid": "pdb-db",
                         "resourceVersion": str(version)},
            "spec": {"selector": {"matchLabels": {"app": "db"}}},
            "status": {"disruptionsAllowed": allowed}})

    budget(2)
    fwk = s.profiles["default-scheduler"]
    plugin = fwk.all_plugins["DefaultPreemption"]
    shapes = [(100, "3"), (100, "6"), (60, "4")]
    changes: dict[str, int] = {}
    nominated: list[str] = []
    preempting = 0
    for i in range(120):
        change = rng.choice(["start", "start", "start", "remove", "add", "node", "budget",
                             "nominate", "nominate", "forget", "none", "none"])
        changes[change] = changes.get(change, 0) + 1
        if change == "start":  # a status update: same placement, a new start time
            name = rng.choice(sorted(pods))
            pod = pods[name] = {**pods[name], "status": {
                "phase": "Running", "startTime": f"2026-02-{rng.randint(10, 28)}T00:00:00Z"}}
            s.cache.set_pod(pod)
        elif change == "remove":
            s.cache.remove_pod(pods.pop(rng.choice(sorted(pods))))
        elif change == "add":
            pod = running(1000 + i)
            pods[pod["metadata"]["name"]] = pod
            s.cache.set_pod(pod)
        elif change == "node":
            old = nodes[rng.randrange(n_nodes)]
            new = make_node(old["metadata"]["name"], cpu=str(rng.choice([4, 6, 8])), pods=110,
                            labels=old["metadata"]["labels"])
            s._node_updated(old, new)
            nodes[nodes.index(old)] = new
        elif change == "budget":
            budget(rng.choice([0, 1, 3]))
        elif change == "nominate":
            prio, cpu = rng.choice(shapes)
            s.queue.nominator.add(PodInfo(make_pod(f"nom{i}", uid=f"nom{i}", priority=prio,
                                                   requests={"cpu": cpu})),
                                  f"n{rng.randrange(n_nodes)}")
            nominated.append(f"nom{i}")
        elif change == "forget" and nominated:
            s.queue.nominator.delete(nominated.pop(rng.randrange(len(nominated))))
        prio, cpu = rng.choice(shapes)
        # replicas differ in their token volume's name (reused all the same)
        token = f"kube-api-access-{i:05d}"
        pre = make_pod(f"pre{i}", uid=f"pre{i}", priority=prio, requests={"cpu": cpu},
                       volumes=[{"name": token, "projected": {"sources": [
                           {"serviceAccountToken": {"path": "token"}}]}}])
        pre["spec"]["containers"][0]["volumeMounts"] = [
            {"name": token, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
        pi = PodInfo(pre)
        state = CycleState()
        try:
            s.schedule_pod(fwk, state, pi)
            continue
        except FitError as e:
            statuses = e.diagnosis.statuses
        assert fwk.counting_filter(state) is not None
        preempting += 1
        fresh = defaultpreemption.new({}, plugin.handle)
        fresh.bind_framework(fwk)
        outcomes = []
        for p in (plugin, fresh):
            random.seed(i)  # the same first candidate node
            cands, verdicts = p.find_candidates(state, pi, s.cache.nodes(), statuses)
            outcomes.append(([(c.node, [v.name for v in c.victims], c.pdb_violations)
                              for c in cands],
                             {k: (v.code, v.reasons, v.plugin) for k, v in verdicts.items()}))
        assert fresh.dry_runs_reused == 0
        assert outcomes[0] == outcomes[1], f"preemptor {i} after {change}"
    assert preempting >= 15 and plugin.dry_runs_reused >= 100, (preempting,
                                                                 plugin.dry_runs_reused)
    assert min(changes.values()) >= 3, changes


async def test_preemption_policy_never_does_not_preempt() -> None:
    """A pod with preemptionPolicy Never waits instead of preempting."""
    s = _scheduler([make_node("a", cpu="2")], [_running("low", "a", 1, "2")])
    fwk = s.profiles["default-scheduler"]
    plugin = fwk.all_plugins["DefaultPreemption"]
    pi = PodInfo(make_pod("p", priority=100, preemptionPolicy="Never",
                          requests={"cpu": "1"}))
    result, st = await plugin.post_filter(CycleState(), pi,
                                          {"a": Status.unschedulable("Insufficient cpu")})
    assert result is None and st is not None
    assert st.message == "not eligible due to preemptionPolicy=Never."


# -- the batch fast path decides exactly as the node-by-node path ------------------------


def _random_cluster(rng: Any, n: int) -> list[Obj]:
    nodes = []
    for i in range(n):
        taints = []
        if rng.random() < 0.2:
            taints.append({"key": "gpu", "value": "true",
                           "effect": rng.choice(["NoSchedule", "PreferNoSchedule"])})
        labels = {"topology.kubernetes.io/zone": f"z{i % 3}"} if rng.random() < 0.9 else {}
        nodes.append(make_node(f"n{i}", labels=labels, cpu=str(rng.choice([1, 2, 4, 8])),
                               memory=rng.choice(["2Gi", "8Gi", "32Gi"]),
                               pods=rng.choice([3, 110]), taints=taints,
                               unschedulable=rng.random() < 0.1,
                               extra={"nvidia.com/gpu": str(rng.choice([0, 1, 4]))}))
    return nodes


def _random_pod(rng: Any, i: int) -> Obj:
    requests = {"cpu": rng.choice(["100m", "500m", "1", "3"]),
                "memory": rng.choice(["100Mi", "1Gi", "6Gi"])}
    if rng.random() < 0.3:
        requests["nvidia.com/gpu"] = str(rng.choice([1, 2]))
    if rng.random() < 0.2:
        del requests["memory"]
    tolerations = [{"key": "gpu", "operator": "Exists"}] if rng.random() < 0.5 else []
    spread = [{"maxSkew": rng.choice([1, 2, 5]),
               "whenUnsatisfiable": rng.choice(["DoNotSchedule", "ScheduleAnyway"]),
               "topologyKey": rng.choice(["topology.kubernetes.io/zone",
                                          "kubernetes.io/hostname"]),
               "labelSelector": {"matchLabels": {"app": "x"}}}
              for _ in range(rng.choice([0, 0, 0, 1, 2]))]
    affinity: Obj = {}
    term = {"labelSelector": {"matchLabels": {"app": rng.choice(["x", "y"])}},
            "topologyKey": rng.choice(["topology.kubernetes.io/zone", "kubernetes.io/hostname"])}
    roll = rng.random()
    if roll < 0.15:
        affinity = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    elif roll < 0.25:
        affinity = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    elif roll < 0.4:
        kind = "podAffinity" if roll < 0.33 else "podAntiAffinity"
        affinity = {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": rng.choice([1, 7, 100]), "podAffinityTerm": term}]}}
    return make_pod(f"p{i}", uid=f"u{i}", requests=requests, tolerations=tolerations,
                    labels={"app": rng.choice(["x", "y"])}, topologySpreadConstraints=spread,
                    affinity=affinity)


def test_fit_statuses_from_columns_match_each_nodes_own() -> None:
    """NodeResourcesFit's verdicts from the node table (used to say why no node fits) are
    each node's own: reasons in the same order, unresolvable where even the empty node is
    too small, one Status shared by nodes short of the same things (a few per message:
    one per combination of which shortfalls even the empty node has)."""
    import random

    import numpy as np

    rng = random.Random(11)
    s = _scheduler(_random_cluster(rng, 120))
    for i in range(260):  # fill them unevenly, some past their pod limit
        pi = PodInfo(_random_pod(rng, i))
        s.cache.assume(pi, rng.choice(s.cache.nodes()).name)
    fit = s.profiles["default-scheduler"].all_plugins["NodeResourcesFit"]
    nodes, table = s.cache.nodes(), s.cache.table()
    seen: set[tuple[Any, ...]] = set()
    for i in range(40):
        pod = PodInfo(_random_pod(rng, 1000 + i))
        rows = np.array([n.index for n in nodes], np.int64)
        got = fit.filter_statuses(CycleState(), pod, table, rows)
        want = [fit.filter(CycleState(), pod, n) for n in nodes]
        assert [st and (st.code, st.reasons) for st in got] == \
            [st and (st.code, st.reasons) for st in want]
        seen.update((st.code, *st.reasons) for st in want if st is not None)
        objects: dict[tuple[Any, ...], set[int]] = {}
        for st in got:
            if st is not None:
                objects.setdefault((st.code, *st.reasons), set()).add(id(st))
        assert all(len(ids) <= 2 ** (len(k) - 1) for k, ids in objects.items())
        assert sum(map(len, objects.values())) < sum(st is not None for st in got)
        # with pods added here and there (nominated ones), as a Room counts them
        added = [[PodInfo(_random_pod(rng, 2000 + 10 * i + k)) for k in range(rng.choice(
            [0, 0, 1, 2]))] for _ in nodes]
        got = fit.filter_statuses(CycleState(), pod, table, rows, added)
        rooms = [Room(n) for n in nodes]
        for room, extra in zip(rooms, added, strict=True):
            for p in extra:
                room.add(p)
        want = [fit.filter_room(pod, room) for room in rooms]
        assert [st and (st.code, st.reasons) for st in got] == \
            [st and (st.code, st.reasons) for st in want]
    assert any("Too many pods" in k for k in seen) and any(
        k[0] == 3 for k in seen) and any(k[0] == 2 and len(k) > 2 for k in seen), seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_path_matches_node_by_node(seed: int) -> None:
    """Same feasible nodes in the same order, same scores, for random clusters and pods."""
    import random

    import numpy as np

    from kybernetes.scheduler import batch
    from kybernetes.scheduler.scheduler import Diagnosis

    rng = random.Random(seed)
    s = _scheduler(_random_cluster(rng, 300))
    fwk = s.profiles["default-scheduler"]
    placed = scored = soft_spread = affinity_scored = diagnosed = 0
    for i in range(150):
        pi = PodInfo(_random_pod(rng, i))
        start = rng.randrange(300)
        slow_state, fast_state = CycleState(), CycleState()
        nodes = s.cache.nodes()
        fwk.run_pre_filter(slow_state, pi, nodes)
        fwk.run_pre_filter(fast_state, pi, nodes)
        s._next_start = start
        slow_diag = Diagnosis()
        slow = s._find_feasible(fwk, slow_state, pi, nodes, slow_diag)
        fast = batch.feasible(fwk, fast_state, pi, s.cache.table(), start=start,
                              want=num_feasible_nodes_to_find(0, len(nodes)))
        if not slow:
            assert fast is None
            # and each node's reason, as the node-by-node path gives it
            masks = batch.filter_masks(fwk, fast_state, pi, s.cache.table())
            if masks is not None:
                fast_diag = Diagnosis()
                assert s._diagnose_batch(fwk, fast_state, pi, nodes, masks, {}, {}, fast_diag)
                assert {k: (v.code, v.reasons, v.plugin) for k, v in fast_diag.statuses.items()} \
                    == {k: (v.code, v.reasons, v.plugin) for k, v in slow_diag.statuses.items()}
                assert fast_diag.plugins == slow_diag.plugins
                diagnosed += 1
            continue
        assert fast is not None
        rows, walked = fast
        assert [nodes[r].name for r in rows.tolist()] == [n.name for n in slow]
        assert (start + walked) % len(nodes) == s._next_start
        fwk.run_pre_score(slow_state, pi, slow)
        fwk.run_pre_score(fast_state, pi, slow)
        totals, _ = fwk.run_score(slow_state, pi, slow)
        fast_totals = batch.scores(fwk, fast_state, pi, s.cache.table(), rows)
        if fast_totals is not None:  # None: a score plugin without a batch form ran
            assert np.array_equal(fast_totals, np.array(totals))
            scored += 1
        # and each plugin's batch form alone, whatever the others have
        for pl in fwk.score:
            score_batch = getattr(pl, "score_batch", None)
            if score_batch is None or pl.name in slow_state.skip_score:
                continue
            one = [pl.score(slow_state, pi, n) for n in slow]
            many = score_batch(fast_state, pi, s.cache.table(), rows)
            if pl.name in fwk.normalizers:
                pl.normalize_score(slow_state, pi, one)
                many = pl.normalize_batch(fast_state, pi, many)
            assert many.tolist() == one, pl.name
            soft_spread += pl.name == "PodTopologySpread"
            affinity_scored += pl.name == "InterPodAffinity"
        s.cache.assume(pi, slow[int(np.argmax(totals))].name)
        placed += 1
    assert placed > 50 and scored >= 50 and soft_spread > 10 and diagnosed >= 2
    assert affinity_scored > 20, affinity_scored


def test_anti_affinity_index_follows_pods_and_nodes() -> None:
    """The cache's required anti-affinity counts, its pods-by-label index and the sums of
    that by topology, kept as pods and nodes come, go and change labels, equal those
    computed afresh."""
    import random

    from kybernetes.scheduler.types import required_anti_affinity_counts

    rnd = random.Random(7)

    def anti(app: str, key: str) -> dict[str, Any]:
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}

    def snapshot(counts: Any) -> dict[int, dict[tuple[str, str], int]]:
        return {id(t): dict(c) for t, c in counts}

    c = Cache()
    names = [f"n{i}" for i in range(6)]
    placed: dict[str, str] = {}
    for step in range(600):
        op = rnd.random()
        node = rnd.choice(names)
        if op < 0.25:
            zone = rnd.choice(["z1", "z2", "z3"])
            c.set_node(make_node(node, labels={"topology.kubernetes.io/zone": zone}))
        elif op < 0.3:
            c.remove_node(node)
        elif op < 0.7:
            uid = f"p{rnd.randrange(40)}"
            key = rnd.choice(["kubernetes.io/hostname", "topology.kubernetes.io/zone"])
            pod = make_pod(uid, uid=uid, nodeName=node, labels={"app": "a"},
                           affinity=anti(rnd.choice(["a", "b"]), key) if rnd.random() < 0.8
                           else {})
            if rnd.random() < 0.3 and not c.has_pod(uid):
                c.assume(PodInfo(pod), node)
            else:
                c.set_pod(pod)
            placed[uid] = node
        elif placed:
            uid = rnd.choice(sorted(placed))
            if c.is_assumed(uid) and rnd.random() < 0.5:
                c.forget(PodInfo(make_pod(uid, uid=uid)))
            else:
                c.remove_pod(make_pod(uid, uid=uid))
            placed.pop(uid)
        want = snapshot(required_anti_affinity_counts(c.nodes_with_required_anti_affinity_pods()))
        assert snapshot(c.required_anti_affinity_counts()) == want, f"step {step}"
        by_node: dict[str, int] = {}
        for n in placed.values():
            by_node[n] = by_node.get(n, 0) + 1
        assert dict(c.pods_by_label("default", "app", "a")) == by_node, f"step {step}"
        assert not c.pods_by_label("default", "app", "b")
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
            by_pair: dict[tuple[str, str], int] = {}
            for name, n in by_node.items():
                node = c.node(name)
                label = node.labels.get(key) if node is not None else None
                if label is not None:
                    by_pair[(key, label)] = by_pair.get((key, label), 0) + n
            assert dict(c.pods_by_topology("default", "app", "a", key)) == by_pair, \
                f"step {step}"
            assert not c.pods_by_topology("default", "app", "b", key)
        # and as counts per label code of the node table's columns, kept in step
        live = [counts for _, counts in c.required_anti_affinity_counts()]
        live += [c.pods_by_topology("default", "app", "a", key)
                 for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")]
        for counts in live:
            if not c.nodes():
                continue
            col = c.table().label_column(counts.key)
            fresh = [0] * (len(col.values) + 1)
            for (_, value), n in counts.items():
                if value in col.code_of:
                    fresh[col.code_of[value]] += n
            assert counts.per_code(col).tolist() == fresh, f"step {step}"


def test_spread_counts_kept_between_cycles_equal_fresh_ones() -> None:
    """PodTopologySpread keeps its per-domain counts from cycle to cycle and counts again
    only the nodes whose generation moved: after random pods come and go and nodes get
    relabelled, added and removed, its counts equal those of a plugin counting afresh."""
    import random

    from kybernetes.scheduler.plugins import podtopologyspread

    rng = random.Random(11)
    s = _scheduler(_random_cluster(rng, 60))
    fwk = s.profiles["default-scheduler"]
    kept = next(pl for pl in fwk.pre_filter if pl.name == "PodTopologySpread")
    placed: list[Obj] = []
    spread = [{"maxSkew": 1, "whenUnsatisfiable": when, "topologyKey": key,
               "labelSelector": {"matchLabels": {"app": "x"}}}
              for when in ("DoNotSchedule", "ScheduleAnyway")
              for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]
    probe = PodInfo(make_pod("probe", uid="probe", labels={"app": "x"},
                             topologySpreadConstraints=spread))
    # without constraints of its own, the system defaults (by hostname and zone) over what
    # its Service selects; nodes without a zone are then scored too
    service = {"metadata": {"name": "x", "namespace": "default"},
               "spec": {"selector": {"app": "x"}}}
    s.cache.objects_source = lambda resource: [service] if resource == "services" else []
    defaulted = PodInfo(make_pod("probe2", uid="probe2", labels={"app": "x"}))
    extra = 0
    for step in range(300):
        roll = rng.random()
        nodes = s.cache.nodes()
        if roll < 0.6 or not placed:
            pod = make_pod(f"p{step}", uid=f"u{step}", labels={"app": rng.choice("xy")},
                           requests={"cpu": "10m"})
            pod["spec"]["nodeName"] = rng.choice(nodes).name
            s.cache.set_pod(pod)
            placed.append(pod)
        elif roll < 0.8:
            s.cache.remove_pod(placed.pop(rng.randrange(len(placed))))
        elif roll < 0.9:
            node = dict(rng.choice(nodes).node or {})
            node["metadata"] = {**node["metadata"], "labels": {
                **node["metadata"].get("labels", {}),
                "topology.kubernetes.io/zone": f"z{rng.randrange(4)}"}}
            s.cache.set_node(node)
        elif roll < 0.95:
            extra += 1
            s._node_added(make_node(f"extra{extra}", labels={
                "topology.kubernetes.io/zone": f"z{rng.randrange(3)}"}))
        else:
            s.cache.remove_node(rng.choice(nodes).name)
        fresh = podtopologyspread.new({}, kept._handle)
        nodes = s.cache.nodes()
        got: list[Any] = []
        # kept counts, fresh ones, and fresh ones over copies of the nodes (not rows of
        # the node table: PreScore's node-by-node form)
        for pl, scored in ((kept, nodes), (fresh, nodes), (fresh, [n.clone() for n in nodes])):
            state = CycleState()
            pl.pre_filter(state, probe, nodes)
            pl.pre_score(state, probe, scored)
            pf, ps = state.read("PreFilterPodTopologySpread"), state.read("PreScorePodTopologySpread")
            state = CycleState()
            pl.pre_score(state, defaulted, scored)
            ds = state.read("PreScorePodTopologySpread")
            got.append((pf.counts, pf.mins, ps.counts, ps.host_counts, ps.ignored, ps.weights,
                        ds.counts, ds.host_counts, ds.ignored, ds.weights))
        assert got[0] == got[1] == got[2], f"step {step}"
        assert got[0][4] and not got[0][8]  # zoneless nodes ignored, but not by the defaults


def test_a_nominated_node_is_tried_first() -> None:
    """A pod nominated to a node by an earlier preemption goes there when it fits, even
    where another node scores higher; when it no longer fits, the whole search runs."""
    s = _scheduler([make_node("big", cpu="64", memory="256Gi"),
                    make_node("small", cpu="2", memory="4Gi")])
    pod = make_pod("p", uid="p", requests={"cpu": "1"})
    assert _schedule(s, pod) == "big"  # the emptier node scores higher
    pod["status"] = {"nominatedNodeName": "small"}
    assert _schedule(s, pod) == "small"
    s.cache.set_pod(make_pod("filler", uid="filler", nodeName="small",
                             requests={"cpu": "1500m"}))
    assert _schedule(s, pod) == "big"
    # also from the scheduler's own record, before the pod's status says so
    del pod["status"]
    s.cache.remove_pod(make_pod("filler", uid="filler"))
    s.queue.nominator.add(PodInfo(pod), "small")
    assert _schedule(s, pod) == "small"


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_batch_and_node_by_node_schedule_alike_with_nominated_pods(seed: int) -> None:
    """With pods nominated by preemptions here and there (of higher and lower priority),
    the batch path places each pod where the node-by-node path does, or fails with the
    same reasons."""
    import random

    rng = random.Random(seed)
    s = _scheduler(_random_cluster(rng, 40))
    s.pick = lambda ties: ties[0]  # type: ignore[method-assign]
    fwk = s.profiles["default-scheduler"]
    outcomes = {"placed": 0, "failed": 0}
    for i in range(150):
        if rng.random() < 0.3:
            big = make_pod(f"nominated{i}", uid=f"n{i}", priority=rng.choice([0, 1000]),
                           requests={"cpu": rng.choice(["1", "3"]), "memory": "1Gi"})
            s.queue.nominator.add(PodInfo(big), rng.choice(s.cache.nodes()).name)
        pod = _random_pod(rng, i)
        pod["spec"]["priority"] = rng.choice([0, 500])
        pi = PodInfo(pod)
        start = rng.randrange(40)
        results: list[Any] = []
        for use_batch in (True, False):
            # the node-by-node path also runs the whole chain with the nominated pods
            s.use_batch, s._next_start, fwk.by_counts = use_batch, start, use_batch
            try:
                results.append((s.schedule_pod(fwk, CycleState(), pi), s._next_start % 40))
            except FitError as e:
                statuses = {k: (v.code, v.reasons, v.plugin)
                            for k, v in e.diagnosis.statuses.items()}
                results.append((str(e), s._next_start % 40, statuses))
        assert results[0] == results[1], f"pod {i}"
        if results[0][0] in {n.name for n in s.cache.nodes()}:
            s.cache.assume(pi, results[0][0])
            outcomes["placed"] += 1
        else:
            outcomes["failed"] += 1
    assert outcomes["placed"] > 30 and outcomes["failed"] > 5, outcomes


def test_a_pods_status_update_does_not_replace_it_on_its_node() -> None:
    """A new version of a bound pod that changes only its status (or confirms the assumed
    pod) swaps the object in place; the node's generation stays. A new label places it
    again: the indexes follow."""
    c = Cache()
    c.set_node(make_node("n1"))
    pod = make_pod("p", uid="p", labels={"app": "a"}, requests={"cpu": "1"})
    assumed = c.assume(PodInfo(pod), "n1")
    node = c.node("n1")
    assert node is not None
    generation = node.generation
    bound = {**pod, "spec": {**pod["spec"], "nodeName": "n1"},
             "status": {"phase": "Pending"}}
    c.set_pod(bound)
    assert not c.is_assumed("p") and node.pods["p"] is assumed
    assert node.generation == generation and assumed.pod is bound
    assert assumed.start_time == float("inf")  # not started yet
    running = {**bound, "status": {"phase": "Running", "startTime": "2026-11-24T05:00:00Z"}}
    c.set_pod(running)
    assert node.pods["p"] is assumed and assumed.pod is running
    assert assumed.start_time == parse_time("2026-11-24T05:00:00Z")  # read again
    assert node.generation == generation and node.requested["cpu"] == 1000
    relabelled = {**running, "metadata": {**running["metadata"], "labels": {"app": "b"}}}
    c.set_pod(relabelled)
    assert node.generation > generation and node.pods["p"].labels == {"app": "b"}
    assert not c.pods_by_label("default", "app", "a")
    assert dict(c.pods_by_label("default", "app", "b")) == {"n1": 1}
    assert node.requested["cpu"] == 1000
