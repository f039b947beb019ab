"""Gang scheduling: the Coscheduling plugin's extension points, the scheduler driving whole
PodGroups (all bound or none, resources released on rejection, no deadlock between two
gangs), the PodGroup status controller and the PodGroup API's validation."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.builtin import build_registry
from kybernetes.api.podgroup import POD_GROUP_LABEL
from kybernetes.controllers.podgroup import pod_group_status
from kybernetes.scheduler import config
from kybernetes.scheduler.cache import Cache
from kybernetes.scheduler.framework import PODS_TO_ACTIVATE, Code, CycleState, Status
from kybernetes.scheduler.plugins.coscheduling import Coscheduling, format_gap, new
from kybernetes.scheduler.scheduler import Scheduler, WaitingPod
from kybernetes.scheduler.types import NodeInfo, PodInfo, make_node, make_pod

Obj = dict[str, Any]
FAST = {"podInitialBackoffSeconds": 0.01, "podMaxBackoffSeconds": 0.05}


def pod_group(name: str, min_member: int, *, ns: str = "default", timeout: int | None = None,
              min_resources: Obj | None = None) -> Obj:
    spec: Obj = {"minMember": min_member}
    if timeout is not None:
        spec["scheduleTimeoutSeconds"] = timeout
    if min_resources is not None:
        spec["minResources"] = min_resources
    return {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": ns, "uid": f"pg-{name}"}, "spec": spec}


def member(name: str, group: str, cpu: str = "1", **spec: Any) -> Obj:
    return make_pod(name, uid=f"u-{name}", requests={"cpu": cpu},
                    labels={POD_GROUP_LABEL: group}, **spec)


# -- the plugin against a handle of its own ------------------------------------------------


class Handle:
    """A minimal Handle: PodGroups and pods by key, placed pods by uid, waiting pods."""

    def __init__(self, groups: list[Obj] = (), pods: list[Obj] = (),  # type: ignore[assignment]
                 placed: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.groups = {f"{g['metadata']['namespace']}/{g['metadata']['name']}": g
                       for g in groups}
        self.pods = list(pods)
        self.placed = set(placed)
        self.waiting_pods: dict[str, Any] = {}
        self.lookups = 0

    def get_object(self, resource: str, key: str) -> Obj | None:
        assert resource == "podgroups"
        self.lookups += 1
        return self.groups.get(key)

    def group_pods(self, namespace: str, name: str) -> list[Obj]:
        self.lookups += 1
        return [p for p in self.pods if p["metadata"]["namespace"] == namespace
                and p["metadata"]["labels"].get(POD_GROUP_LABEL) == name]

    def has_pod(self, uid: str) -> bool:
        return uid in self.placed


class Waiting:
    def __init__(self, pod: Obj) -> None:
        self.pod = PodInfo(pod)
        self.allowed: list[str] = []
        self.rejected: list[tuple[str, str]] = []

    def allow(self, plugin: str) -> None:
        self.allowed.append(plugin)

    def reject(self, plugin: str, message: str) -> None:
        self.rejected.append((plugin, message))


def test_pods_without_a_group_cost_no_lookup() -> None:
    """A pod without the label passes every point without reading PodGroups or pods."""
    h = Handle([pod_group("g", 2)])
    pl = Coscheduling(h)  # type: ignore[arg-type]
    pi = PodInfo(make_pod("plain", requests={"cpu": "1"}, priority=5))
    state = CycleState()
    assert pl.pre_filter(state, pi, []) == (None, None)
    assert pl.permit(state, pi, "n1") == (None, 0.0)
    pl.unreserve(state, pi, "n1")
    _, st = asyncio.run(pl.post_filter(state, pi, {}))
    assert st is not None and st.code == Code.UNSCHEDULABLE and st.reasons == []
    assert pl.sort_key(pi, 12.5) == (-5, 12.5)  # PrioritySort's key, exactly
    assert h.lookups == 0


def test_pre_filter_wants_min_member_pods() -> None:
    """Fewer pods than minMember: unresolvable with upstream's message; enough: passes."""
    pods = [member("a", "g"), member("b", "g")]
    h = Handle([pod_group("g", 3)], pods)
    pl = Coscheduling(h)  # type: ignore[arg-type]
    _, st = pl.pre_filter(CycleState(), PodInfo(pods[0]), [])
    assert st is not None and st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert st.message == ("pre-filter pod a cannot find enough sibling pods, current pods "
                          "number: 2, minMember of group: 3")
    h.pods.append(member("c", "g"))
    assert pl.pre_filter(CycleState(), PodInfo(pods[0]), []) == (None, None)
    # a pod whose PodGroup does not exist (yet) passes PreFilter; Permit turns it away
    orphan = PodInfo(member("x", "nope"))
    assert pl.pre_filter(CycleState(), orphan, []) == (None, None)
    st, _ = pl.permit(CycleState(), orphan, "n1")
    assert st is not None and st.message == "PodGroup not found"


def test_pre_filter_checks_min_resources_once_per_timeout() -> None:
    """With minResources the cluster's free room (the group's own pods counted free) must
    cover them; a passed check is remembered for the group's timeout."""
    pods = [member(f"p{i}", "g") for i in range(2)]
    h = Handle([pod_group("g", 2, timeout=30, min_resources={"cpu": "6"})], pods)
    now = [100.0]
    pl = Coscheduling(h, now=lambda: now[0])  # type: ignore[arg-type]
    node = NodeInfo(make_node("n1", cpu="4"))
    _, st = pl.pre_filter(CycleState(), PodInfo(pods[0]), [node])
    assert st is not None and st.message == "resource gap: map[cpu:2]"
    node2 = NodeInfo(make_node("n2", cpu="4"))
    assert pl.pre_filter(CycleState(), PodInfo(pods[0]), [node, node2]) == (None, None)
    node2.add_pod(PodInfo(make_pod("hog", uid="hog", requests={"cpu": "4"}, nodeName="n2")))
    assert pl.pre_filter(CycleState(), PodInfo(pods[0]), [node, node2]) == (None, None)
    now[0] += 31
    _, st = pl.pre_filter(CycleState(), PodInfo(pods[0]), [node, node2])
    assert st is not None and "resource gap" in st.message
    assert format_gap({"memory": 2 * 1024**3, "pods": 1, "cpu": 1500}) == \
        "map[cpu:1500m memory:2Gi pods:1]"


def test_permit_waits_then_allows_the_whole_gang() -> None:
    """Members wait (the group's timeout) until minMember are placed; the last one lets
    every waiting sibling go; the first one asks for its siblings to be tried at once."""
    pods = [member(f"p{i}", "g") for i in range(3)]
    h = Handle([pod_group("g", 3, timeout=7)], pods)
    pl = Coscheduling(h)  # type: ignore[arg-type]
    state = CycleState()
    h.placed.add("u-p0")
    st, timeout = pl.permit(state, PodInfo(pods[0]), "n1")
    assert st is not None and st.code == Code.WAIT and timeout == 7
    assert state.read(PODS_TO_ACTIVATE) == {"u-p1", "u-p2"}
    h.waiting_pods["u-p0"] = Waiting(pods[0])
    h.placed.add("u-p1")
    state = CycleState()
    st, _ = pl.permit(state, PodInfo(pods[1]), "n1")
    assert st is not None and st.code == Code.WAIT and state.read(PODS_TO_ACTIVATE) is None
    h.waiting_pods["u-p1"] = Waiting(pods[1])
    h.placed.add("u-p2")
    assert pl.permit(CycleState(), PodInfo(pods[2]), "n1") == (None, 0.0)
    assert [w.allowed for w in h.waiting_pods.values()] == [["Coscheduling"]] * 2
    # without scheduleTimeoutSeconds: permitWaitingTimeSeconds, 60 by default
    assert pl.timeout(pod_group("x", 1)) == 60
    assert new({"permitWaitingTimeSeconds": 5}, h).timeout(pod_group("x", 1)) == 5  # type: ignore[arg-type]


def test_unreserve_and_post_filter_reject_the_waiting_siblings() -> None:
    """Unreserve rejects every waiting sibling; PostFilter does unless the gang is (nearly)
    complete, and says so."""
    pods = [member(f"p{i}", "g") for i in range(4)]
    h = Handle([pod_group("g", 4)], pods, placed={"u-p0", "u-p1"})
    pl = Coscheduling(h)  # type: ignore[arg-type]
    w0, w1 = Waiting(pods[0]), Waiting(pods[1])
    other = Waiting(member("q", "other"))  # an older gang, also waiting
    pl.sort_key(other.pod, 1.0)
    pl.sort_key(w0.pod, 2.0)
    h.waiting_pods = {"u-p0": w0, "u-p1": w1, "u-q": other}
    _, st = asyncio.run(pl.post_filter(CycleState(), PodInfo(pods[3]), {}))
    assert st is not None and st.message == ("PodGroup default/g gets rejected due to Pod p3 "
                                             "is unschedulable even after PostFilter")
    assert w0.rejected == w1.rejected == [("Coscheduling", "optimistic rejection in PostFilter")]
    assert other.rejected == []
    pl.unreserve(CycleState(), PodInfo(pods[0]), "n1")
    assert w0.rejected[1:] == [] and w1.rejected[1:] == [("Coscheduling", "rejection in Unreserve")]
    # 10 pods, 9 placed: the gap is 10 %, nobody is rejected
    big = [member(f"b{i}", "big") for i in range(10)]
    h2 = Handle([pod_group("big", 10)], big, placed={f"u-b{i}" for i in range(9)})
    waiting = Waiting(big[0])
    h2.waiting_pods = {"u-b0": waiting}
    _, st = asyncio.run(Coscheduling(h2).post_filter(  # type: ignore[arg-type]
        CycleState(), PodInfo(big[9]), {}))
    assert st is not None and st.reasons == [] and waiting.rejected == []


def test_pod_group_back_off_blocks_pre_filter() -> None:
    """With podGroupBackoffSeconds a group rejected in PostFilter fails PreFilter for that
    long."""
    pods = [member(f"p{i}", "g") for i in range(2)]
    h = Handle([pod_group("g", 2)], pods)
    now = [0.0]
    pl = Coscheduling(h, pod_group_backoff=10, now=lambda: now[0])  # type: ignore[arg-type]
    asyncio.run(pl.post_filter(CycleState(), PodInfo(pods[0]), {}))
    _, st = pl.pre_filter(CycleState(), PodInfo(pods[1]), [])
    assert st is not None and st.message == "podGroup default/g failed recently"
    now[0] = 11
    assert pl.pre_filter(CycleState(), PodInfo(pods[1]), []) == (None, None)
    with pytest.raises(ValueError, match="podGroupBackoffSeconds"):
        new({"podGroupBackoffSeconds": -1}, h)  # type: ignore[arg-type]


def test_queue_sort_keeps_a_gang_together() -> None:
    """Higher priority first; then each group in the order it was first seen, its pods
    together; pods without a group by age."""
    pl = Coscheduling(Handle())  # type: ignore[arg-type]
    a = [PodInfo(member(f"a{i}", "a")) for i in range(3)]
    b = [PodInfo(member(f"b{i}", "b")) for i in range(3)]
    plain = PodInfo(make_pod("plain", uid="plain"))
    urgent = PodInfo(member("u", "c", priority=100))
    arrivals = [(a[0], 1.0), (b[0], 2.0), (plain, 2.5), (a[1], 3.0), (b[1], 4.0),
                (a[2], 5.0), (b[2], 6.0), (urgent, 7.0)]
    order = sorted(arrivals, key=lambda x: pl.sort_key(*x))
    assert [p.name for p, _ in order] == ["u", "a0", "a1", "a2", "b0", "b1", "b2", "plain"]


# -- configuration -------------------------------------------------------------------------


def test_coscheduling_is_in_the_default_profile() -> None:
    """On by default: queue sort, PreFilter, PostFilter after preemption, Permit, Reserve;
    a profile that disables it sorts with PrioritySort; an explicit queue sort wins."""
    fwk = config.build(config.parse({}), Cache())["default-scheduler"]
    assert fwk.queue_sort is not None and fwk.queue_sort.name == "Coscheduling"
    assert [p.name for p in fwk.post_filter] == ["DefaultPreemption", "Coscheduling"]
    assert [p.name for p in fwk.permit] == ["Coscheduling"]
    assert "Coscheduling" in [p.name for p in fwk.pre_filter]
    assert "Coscheduling" in [p.name for p in fwk.reserve]
    off = config.build(config.parse({"profiles": [{"plugins": {"multiPoint": {
        "disabled": [{"name": "Coscheduling"}]}}}]}), Cache())["default-scheduler"]
    assert off.queue_sort is not None and off.queue_sort.name == "PrioritySort"
    assert off.permit == []
    explicit = config.build(config.parse({"profiles": [{"plugins": {"queueSort": {
        "enabled": [{"name": "PrioritySort"}]}}}]}), Cache())["default-scheduler"]
    assert explicit.queue_sort is not None and explicit.queue_sort.name == "PrioritySort"
    with pytest.raises(config.ConfigError, match="permitWaitingTimeSeconds"):
        config.build(config.parse({"profiles": [{"pluginConfig": [{"name": "Coscheduling",
                     "args": {"permitWaitingTimeSeconds": -3}}]}]}), Cache())


# -- the scheduler with gangs ------------------------------------------------------------


class Recorder:
    async def emit(self, *args: Any) -> None:
        return None

    def post(self, *args: Any, **kw: Any) -> None:
        return None


class Cluster:
    """A scheduler without a server: the informers' caches fed by hand, bindings recorded
    and fed back as the informer would."""

    def __init__(self, nodes: list[Obj], cfg: Obj | None = None) -> None:
        self.s = s = Scheduler(None, config.parse(cfg or FAST))  # type: ignore[arg-type]
        s.recorder = Recorder()  # type: ignore[assignment]
        self.failures: list[tuple[str, str]] = []
        self.bound: dict[str, str] = {}

        async def report(pod: PodInfo, message: str, reason: str, nominated: Any) -> None:
            self.failures.append((pod.name, message))

        s._report_failure = report  # type: ignore[method-assign]
        cluster = self

        class Binder:
            name = "FakeBinder"

            async def bind(self, state: CycleState, pod: PodInfo, node_name: str
                           ) -> Status | None:
                cluster.bound[pod.name] = node_name
                old = s.pods.get(pod.key)
                assert old is not None
                new = copy.deepcopy(old)
                new["spec"]["nodeName"] = node_name
                s.pods._apply("MODIFIED", new)
                s._pod_updated(old, new)
                return None

        s.profiles["default-scheduler"].bind = [Binder()]
        for n in nodes:
            s._node_added(n)
        self._loop: asyncio.Task[None] | None = None

    def add_group(self, pg: Obj) -> None:
        self.s.extra["podgroups"]._apply("ADDED", pg)
        self.s._pod_group_added(pg)

    def add(self, *pods: Obj) -> None:
        for pod in pods:
            self.s.pods._apply("ADDED", pod)
            self.s._pod_added(pod)

    def delete(self, *names: str) -> None:
        for name in names:
            pod = self.s.pods.get(f"default/{name}")
            assert pod is not None
            self.s.pods._apply("DELETED", pod)
            self.s._pod_deleted(pod)
            self.bound.pop(name, None)

    def start(self) -> None:
        self._loop = spawn(self.s._run(), name="test-scheduler")

    async def stop(self) -> None:
        self.s.queue.close()
        await cancel_and_wait(self._loop)
        for t in list(self.s._tasks):
            t.cancel()

    async def until(self, what: str, fn: Callable[[], Any], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not fn():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: " \
                f"bound={self.bound} failures={self.failures[-3:]}"
            await asyncio.sleep(0.01)

    def requested_cpu(self) -> int:
        return sum(n.requested.get("cpu", 0) for n in self.s.cache.nodes())


def _nodes(n: int, cpu: str = "1") -> list[Obj]:
    return [make_node(f"n{i}", cpu=cpu) for i in range(n)]


async def test_a_gang_that_fits_binds_whole() -> None:
    """Four members, room for four: all four bind, none before the fourth is placed."""
    c = Cluster(_nodes(4))
    c.add_group(pod_group("g", 4, timeout=5))
    c.add(*(member(f"p{i}", "g") for i in range(4)))
    c.start()
    try:
        await c.until("the gang bound", lambda: len(c.bound) == 4)
        assert sorted(c.bound.values()) == ["n0", "n1", "n2", "n3"]
        assert not c.s.waiting
    finally:
        await c.stop()


async def test_a_gang_without_room_holds_nothing() -> None:
    """Four members, room for three: none binds, the three placed are let go (PostFilter's
    optimistic rejection) and a single pod takes the room; once room is added the whole
    gang binds."""
    c = Cluster(_nodes(3))
    c.add_group(pod_group("g", 4, timeout=30))
    c.add(*(member(f"p{i}", "g") for i in range(4)))
    c.start()
    try:
        await c.until("the optimistic rejection", lambda: any(
            "gets rejected due to Pod" in m for _, m in c.failures))
        await c.until("the reservations released", lambda: any(
            "optimistic rejection in PostFilter" in m for _, m in c.failures))
        await asyncio.sleep(0.3)
        assert c.bound == {}
        c.add(make_pod("filler", uid="u-filler", requests={"cpu": "1"}))
        await c.until("the filler bound", lambda: "filler" in c.bound)
        c.delete("filler")
        c.s._node_added(make_node("n3", cpu="1"))
        await c.until("the gang bound", lambda: len(c.bound) == 4)
        assert not c.s.waiting and c.requested_cpu() == 4000
    finally:
        await c.stop()


async def test_permit_timeout_releases_the_gang() -> None:
    """Two members placed, the third fits nowhere for a reason preemption cannot fix: the
    two wait scheduleTimeoutSeconds, then are both rejected and their room is free."""
    c = Cluster(_nodes(4), cfg={"podInitialBackoffSeconds": 5, "podMaxBackoffSeconds": 10})
    c.add_group(pod_group("g", 3, timeout=1))
    c.add(member("p0", "g"), member("p1", "g"),
          member("p2", "g", nodeSelector={"missing": "label"}))
    c.start()
    try:
        await c.until("both waiting", lambda: len(c.s.waiting) == 2)
        assert c.requested_cpu() == 2000
        await c.until("the timeout", lambda: len(
            [m for _, m in c.failures if "rejected due to timeout" in m
             or "rejection in Unreserve" in m]) >= 2, timeout=4)
        await c.until("the room released", lambda: not c.s.waiting
                      and c.requested_cpu() == 0)
        msgs = [m for _, m in c.failures]
        assert "rejected due to timeout after waiting 1s at plugin(s) Coscheduling" in msgs
        assert c.bound == {}
    finally:
        await c.stop()


async def test_two_gangs_for_room_for_one_do_not_deadlock() -> None:
    """Two gangs of four arriving interleaved, room for four: one binds whole, the other
    holds nothing; when the first one's pods go, the second binds."""
    c = Cluster(_nodes(4))
    c.add_group(pod_group("a", 4, timeout=3))
    c.add_group(pod_group("b", 4, timeout=3))
    c.start()
    try:
        for i in range(4):
            c.add(member(f"a{i}", "a"))
            await asyncio.sleep(0)
            c.add(member(f"b{i}", "b"))
            await asyncio.sleep(0)
        await c.until("one gang bound", lambda: len(c.bound) == 4, timeout=10)
        winner = sorted(c.bound)[0][0]
        assert sorted(c.bound) == [f"{winner}{i}" for i in range(4)]
        loser = "b" if winner == "a" else "a"
        await c.until("the other gang let go", lambda: not c.s.waiting)
        assert c.requested_cpu() == 4000
        c.delete(*(f"{winner}{i}" for i in range(4)))
        await c.until("the other gang bound", lambda: sorted(c.bound) == [
            f"{loser}{i}" for i in range(4)], timeout=10)
    finally:
        await c.stop()


async def test_gangs_placed_half_each_settle_in_rank_order() -> None:
    """The livelock upstream's PostFilter alone allows: two gangs each get half of the room
    (their members' priorities interleave in the queue), each one's next pod fails, and
    each would reject itself, back off and do it again. Here the older gang keeps its
    waiting pods, the younger lets go, and the older binds at once."""
    c = Cluster(_nodes(4))
    c.add_group(pod_group("a", 4, timeout=30))
    c.add_group(pod_group("b", 4, timeout=30))
    priorities = {"a0": 10, "a1": 10, "b0": 9, "b1": 9, "a2": 8, "a3": 8, "b2": 7, "b3": 7}
    for name, prio in priorities.items():
        c.add(member(name, name[0], priority=prio))
    c.start()
    try:
        await c.until("gang a bound", lambda: len(c.bound) == 4, timeout=3)
        assert sorted(c.bound) == ["a0", "a1", "a2", "a3"]
        msgs = {(n, m) for n, m in c.failures}
        assert ("b0", "rejected in favour of the older PodGroup default/a") in msgs
        assert not any("optimistic rejection" in m for _, m in msgs)
        c.delete("a0", "a1", "a2", "a3")
        await c.until("gang b bound", lambda: sorted(c.bound) == ["b0", "b1", "b2", "b3"])
    finally:
        await c.stop()


def test_post_filter_rejects_younger_gangs_first() -> None:
    """The failing pod's gang ranks first: the younger gang's waiting pods are rejected,
    its own kept; when the younger's last waiting pod lets go (Unreserve), the older's
    pods still pending are asked to be tried at once."""
    a = [member(f"a{i}", "a") for i in range(3)]
    b = [member(f"b{i}", "b") for i in range(3)]
    h = Handle([pod_group("a", 3), pod_group("b", 3)], a + b,
               placed={"u-a0", "u-b0"})
    pl = Coscheduling(h)  # type: ignore[arg-type]
    pl.sort_key(PodInfo(a[0]), 1.0)
    pl.sort_key(PodInfo(b[0]), 2.0)
    wa, wb = Waiting(a[0]), Waiting(b[0])
    h.waiting_pods = {"u-a0": wa, "u-b0": wb}
    _, st = asyncio.run(pl.post_filter(CycleState(), PodInfo(a[1]), {}))
    assert st is not None and st.message == ("PodGroup default/a waits for the room held by "
                                             "PodGroup(s) default/b at Permit")
    assert wa.rejected == [] and wb.rejected == [
        ("Coscheduling", "rejected in favour of the older PodGroup default/a")]
    # the younger one failing: upstream's optimistic rejection of its own
    _, st = asyncio.run(pl.post_filter(CycleState(), PodInfo(b[1]), {}))
    assert st is not None and "gets rejected due to Pod b1" in st.message
    del h.waiting_pods["u-b0"]
    h.placed.discard("u-b0")
    state = CycleState()
    pl.unreserve(state, PodInfo(b[0]), "n1")
    assert state.read(PODS_TO_ACTIVATE) == {"u-a1", "u-a2"}


async def test_incomplete_gang_waits_for_its_siblings() -> None:
    """A member rejected for lack of siblings waits unschedulable; another gang's pod does
    not wake it, its own sibling does."""
    c = Cluster(_nodes(4), cfg={"podInitialBackoffSeconds": 0.01, "podMaxBackoffSeconds": 0.01})
    c.add_group(pod_group("g", 2))
    c.add_group(pod_group("h", 2))
    c.add(member("p0", "g"))
    c.start()
    try:
        await c.until("p0 unschedulable", lambda: c.s.queue.where("u-p0") == "unschedulable")
        assert "cannot find enough sibling pods, current pods number: 1, minMember of " \
            "group: 2" in c.failures[0][1]
        c.add(member("q0", "h"))
        await asyncio.sleep(0.1)
        assert c.s.queue.where("u-p0") == "unschedulable"
        c.add(member("p1", "g"))
        await c.until("the gang bound", lambda: {"p0", "p1"} <= set(c.bound))
    finally:
        await c.stop()


async def test_resource_gap_waits_for_room() -> None:
    """A gang short of its minResources is turned away at PreFilter and tried again when a
    node is added."""
    c = Cluster(_nodes(2))
    c.add_group(pod_group("g", 2, min_resources={"cpu": "3"}))
    c.add(member("p0", "g"), member("p1", "g"))
    c.start()
    try:
        await c.until("both unschedulable", lambda: all(
            c.s.queue.where(u) == "unschedulable" for u in ("u-p0", "u-p1")))
        assert any("resource gap: map[cpu:1]" in m for _, m in c.failures)
        c.s._node_added(make_node("n2", cpu="1"))
        await c.until("the gang bound", lambda: len(c.bound) == 2)
    finally:
        await c.stop()


async def test_lowering_min_member_wakes_the_gang() -> None:
    """A PodGroup update (minMember lowered) retries its pods."""
    c = Cluster(_nodes(2))
    pg = pod_group("g", 3)
    c.add_group(pg)
    c.add(member("p0", "g"), member("p1", "g"))
    c.start()
    try:
        await c.until("both unschedulable", lambda: all(
            c.s.queue.where(u) == "unschedulable" for u in ("u-p0", "u-p1")))
        new_pg = copy.deepcopy(pg)
        new_pg["spec"]["minMember"] = 2
        c.s.extra["podgroups"]._apply("MODIFIED", new_pg)
        c.s._pod_group_updated(pg, new_pg)
        await c.until("the gang bound", lambda: len(c.bound) == 2)
    finally:
        await c.stop()


def test_waiting_pod_timeout_names_the_plugin() -> None:
    async def go() -> Status | None:
        wp = WaitingPod(PodInfo(member("p", "g")), {"Coscheduling"})
        return await wp.wait(0.01)

    st = asyncio.run(go())
    assert st is not None and st.plugin == "Coscheduling" and st.rejected


# -- the PodGroup controller's status ------------------------------------------------------


def _pod(name: str, phase: str = "Pending", node: str = "", owner: str = "job") -> Obj:
    return {"metadata": {"name": name, "namespace": "ns",
                         "ownerReferences": [{"name": owner, "kind": "PyTorchJob"}]},
            "spec": {"nodeName": node} if node else {}, "status": {"phase": phase}}


@pytest.mark.parametrize(("phase", "pods", "want", "counts"), [
    pytest.param("", [], "Pending", (0, 0, 0, 0), id="new"),
    pytest.param("Pending", [_pod("a")], "Pending", (0, 0, 0, 0), id="too-few"),
    pytest.param("Pending", [_pod("a"), _pod("b")], "PreScheduling", (0, 0, 0, 0),
                 id="enough-pods"),
    pytest.param("PreScheduling", [_pod("a", node="n"), _pod("b")], "Scheduling",
                 (0, 0, 0, 1), id="one-bound"),
    pytest.param("Scheduling", [_pod("a", node="n"), _pod("b", node="n")], "Scheduled",
                 (0, 0, 0, 2), id="all-bound"),
    pytest.param("Scheduled", [_pod("a", "Running", "n"), _pod("b", "Succeeded", "n")],
                 "Running", (1, 1, 0, 2), id="running"),
    pytest.param("Running", [_pod("a", "Failed", "n"), _pod("b", "Running", "n")],
                 "Failed", (1, 0, 1, 2), id="failed"),
    pytest.param("Running", [_pod("a", "Succeeded", "n"), _pod("b", "Succeeded", "n")],
                 "Finished", (0, 2, 0, 2), id="finished"),
    pytest.param("Running", [], "Pending", (0, 0, 0, 0), id="pods-gone"),
    pytest.param("", [_pod("a", "Running", "n"), _pod("b", "Running", "n")], "Running",
                 (2, 0, 0, 2), id="all-steps-at-once"),
])
def test_pod_group_phases(phase: str, pods: list[Obj], want: str,
                          counts: tuple[int, int, int, int]) -> None:
    """The phases of scheduler-plugins' controller (the PreScheduling release)."""
    pg = {"metadata": {"name": "g", "namespace": "ns"}, "spec": {"minMember": 2},
          "status": {"phase": phase} if phase else {}}
    status = pod_group_status(pg, pods, 1_700_000_000)
    assert status["phase"] == want
    assert (status["running"], status["succeeded"], status["failed"],
            status["scheduled"]) == counts


def test_pod_group_pre_scheduling_records_owner_and_start() -> None:
    pg = {"metadata": {"name": "g", "namespace": "ns"}, "spec": {"minMember": 1},
          "status": {"phase": "Pending"}}
    status = pod_group_status(pg, [_pod("b", owner="z"), _pod("a", owner="job")], 0)
    assert status["occupiedBy"] == "ns/job"
    assert status["scheduleStartTime"] == "1970-01-01T00:00:00Z"
    final = {**pg, "status": {"phase": "Finished"}}
    assert pod_group_status(final, [], 0) == {"phase": "Finished"}


# -- the API -----------------------------------------------------------------------------


def test_pod_group_api_validation() -> None:
    """Served as a built-in kind; negative counts and bad quantities are refused."""
    reg = build_registry()
    res = reg.by_kind("scheduling.x-k8s.io", "v1alpha1", "PodGroup")
    assert res is not None and res.namespaced and res.plural == "podgroups"
    assert res.short_names == ("pg", "pgs") and "status" in res.subresources
    assert [c["name"] for c in res.printer_columns] == [
        "Phase", "MinMember", "Running", "Succeeded", "Failed", "Age"]
    assert res.strategy is not None
    good = pod_group("g", 2, timeout=5, min_resources={"cpu": "2", "nvidia.com/gpu": "1"})
    assert res.strategy.validate(good) == []
    bad = pod_group("g", -1, timeout=-2, min_resources={"cpu": "lots"})
    assert [str(e) for e in res.strategy.validate(bad)] == [
        "spec.minMember: Invalid value: -1: must be greater than or equal to 0",
        "spec.scheduleTimeoutSeconds: Invalid value: -2: must be greater than or equal to 0",
        'spec.minResources[cpu]: Invalid value: "lots": must be a valid resource quantity',
    ]
