"""The scheduler: pops pending pods one at a time, runs the profile's plugins to pick a
node, assumes the pod there, and binds it in the background.

Scheduling is serial: :meth:`Scheduler.schedule_one` runs PreFilter, Filter, Score,
Reserve and Permit without awaiting, so the cache cannot change under it. Only
PostFilter (preemption) and the binding cycle (PreBind, Bind) await the API; a binding
that fails forgets the assumed pod and puts it back in the queue.

    scheduler = Scheduler(client, config.SchedulerConfiguration())
    await scheduler.start()
    ...
    await scheduler.stop()
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import operator
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_all, cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339
from kybernetes.api.podgroup import POD_GROUP_INDEX, pod_group_index, pod_group_name
from kybernetes.client import Client, Informer, shared_informer
from kybernetes.client.events import EventRecorder
from kybernetes.scheduler import batch, metrics
from kybernetes.scheduler import config as configuration
from kybernetes.scheduler.cache import Cache
from kybernetes.scheduler.framework import (
    POD_ADD,
    POD_DELETE,
    PODS_TO_ACTIVATE,
    UNSCHEDULED_POD_ADD,
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    Code,
    CycleState,
    EnqueueExtensions,
    Status,
    fit_message,
)
from kybernetes.scheduler.queue import QueuedPodInfo, SchedulingQueue
from kybernetes.scheduler.runtime import Framework, num_feasible_nodes_to_find
from kybernetes.scheduler.types import NodeInfo, PodInfo

log = logging.getLogger(__name__)
Obj = dict[str, Any]

NO_NODES = "no nodes available to schedule pods"
_TERMINAL = ("Succeeded", "Failed")
_STATUS_WRITERS = 8

OBJECT_RESOURCES: dict[str, tuple[str, str]] = {
    "services": ("v1", "services"),
    "replicasets": ("apps/v1", "replicasets"),
    "statefulsets": ("apps/v1", "statefulsets"),
    "poddisruptionbudgets": ("policy/v1", "poddisruptionbudgets"),
    "persistentvolumeclaims": ("v1", "persistentvolumeclaims"),
    "persistentvolumes": ("v1", "persistentvolumes"),
    "storageclasses": ("storage.k8s.io/v1", "storageclasses"),
    "podgroups": ("scheduling.x-k8s.io/v1alpha1", "podgroups"),
}
"""Resources plugins may read through ``Handle.objects``, each watched by an informer."""


@dataclass
class Diagnosis:
    statuses: dict[str, Status] = field(default_factory=dict)
    plugins: set[str] = field(default_factory=set)
    pre_filter_msg: str = ""
    post_filter_msg: str = ""


class FitError(Exception):
    def __init__(self, pod: PodInfo, num_nodes: int, diagnosis: Diagnosis) -> None:
        super().__init__()
        self.pod = pod
        self.num_nodes = num_nodes
        self.diagnosis = diagnosis

    def __str__(self) -> str:
        d = self.diagnosis
        if not self.num_nodes:
            return NO_NODES
        return fit_message(self.num_nodes, d.statuses, pre_filter_msg=d.pre_filter_msg,
                           post_filter_msg=d.post_filter_msg)


def _is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in _TERMINAL


def _bound(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _spec_changed(old: Obj, new: Obj) -> bool:
    """Whether anything but status and bookkeeping changed (upstream's isPodUpdated)."""
    if old.get("spec") != new.get("spec"):
        return True
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    skip = ("resourceVersion", "managedFields", "generation")
    return any(om.get(k) != nm.get(k) for k in set(om) | set(nm) if k not in skip)


def _node_action(old: Obj, new: Obj) -> Action:
    """What kind of node update happened, for requeueing pods that it may help."""
    action = Action(0)
    os_, ns_ = old.get("status") or {}, new.get("status") or {}
    if os_.get("allocatable") != ns_.get("allocatable"):
        action |= Action.UPDATE_NODE_ALLOCATABLE
    if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
        action |= Action.UPDATE_NODE_LABEL
    ospec, nspec = old.get("spec") or {}, new.get("spec") or {}
    if ospec.get("taints") != nspec.get("taints") or \
            ospec.get("unschedulable") != nspec.get("unschedulable"):
        action |= Action.UPDATE_NODE_TAINT
    if [(c.get("type"), c.get("status")) for c in os_.get("conditions") or ()] != \
            [(c.get("type"), c.get("status")) for c in ns_.get("conditions") or ()]:
        action |= Action.UPDATE_NODE_CONDITION
    return action


def _pod_action(old: Obj, new: Obj) -> Action:
    action = Action(0)
    if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
        action |= Action.UPDATE_POD_LABEL
    if PodInfo(new).requests != PodInfo(old).requests:
        action |= Action.UPDATE_POD_SCALE_DOWN
    return action


T = TypeVar("T")
_PLUGIN = operator.attrgetter("plugin")


def _distinct(items: Iterable[T]) -> Iterable[T]:
    """Each object of ``items`` once (by identity), in order."""
    return {id(x): x for x in items}.values()


class Scheduler:
    def __init__(self, client: Client, cfg: configuration.SchedulerConfiguration | None = None,
                 *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client
        self.clock = clock
        self.cache = Cache()
        self.cache.client = client
        self.cache.objects_source = self._objects
        self.cache.namespace_source = self._namespace_labels
        self.cache.object_source = self._object
        self.cache.group_source = self._group_pods
        self.waiting: dict[str, WaitingPod] = self.cache.waiting_pods
        cfg = cfg or configuration.SchedulerConfiguration()
        self.profiles: dict[str, Framework] = configuration.build(cfg, self.cache)
        first = next(iter(self.profiles.values()))
        assert first.queue_sort is not None
        events: dict[str, list[ClusterEventWithHint]] = {}
        for fwk in self.profiles.values():
            for pl in fwk.all_plugins.values():
                if isinstance(pl, EnqueueExtensions):
                    events[pl.name] = pl.events_to_register()
        self.queue = SchedulingQueue(first.queue_sort.sort_key, pre_enqueue=self._pre_enqueue,
                                     events=events, clock=clock,
                                     initial_backoff=cfg.pod_initial_backoff_seconds,
                                     max_backoff=cfg.pod_max_backoff_seconds)
        self.cache.nominator = self.queue.nominator
        self.recorder = EventRecorder(client, "default-scheduler")
        self.pods = shared_informer(client, "v1", "pods")
        self.pods.add_index(POD_GROUP_INDEX, pod_group_index)
        self.nodes = shared_informer(client, "v1", "nodes")
        self.namespaces = shared_informer(client, "v1", "namespaces")
        self.extra: dict[str, Informer] = {
            name: shared_informer(client, av, plural) for name, (av, plural) in OBJECT_RESOURCES.items()}
        self._next_start = 0
        self.use_batch = True
        """Filter and score over node columns where the plugins can (off: node by node
        only, to compare the two)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._status_slots = asyncio.Semaphore(_STATUS_WRITERS)
        self.metrics = metrics.SchedulerMetrics()

    # -- what plugins read -----------------------------------------------------------------

    def _objects(self, resource: str) -> list[Obj]:
        inf = self.extra.get(resource)
        if inf is None:
            return self.namespaces.list() if resource == "namespaces" else []
        return inf.list()

    def _object(self, resource: str, key: str) -> Obj | None:
        inf = self.extra.get(resource)
        return inf.get(key) if inf is not None else None

    def _group_pods(self, namespace: str, name: str) -> list[Obj]:
        pods = self.pods
        out = []
        for key in pods.index_keys(POD_GROUP_INDEX, f"{namespace}/{name}"):
            pod = pods.get(key)
            if pod is not None:
                out.append(pod)
        return out

    def _namespace_labels(self, namespace: str) -> dict[str, str] | None:
        ns = self.namespaces.get(namespace)
        return None if ns is None else dict((ns.get("metadata") or {}).get("labels") or {})

    def _pre_enqueue(self, pod: PodInfo) -> Status | None:
        fwk = self.profiles.get(pod.scheduler_name)
        return fwk.run_pre_enqueue(pod) if fwk is not None else None

    # -- informer handlers -----------------------------------------------------------------

    def _responsible(self, pod: Obj) -> bool:
        return ((pod.get("spec") or {}).get("schedulerName") or "default-scheduler") \
            in self.profiles

    def _pod_added(self, pod: Obj) -> None:
        if _is_terminal(pod):
            return
        if _bound(pod):
            self.cache.set_pod(pod)
            self.queue.delete(pod["metadata"]["uid"])
            self.queue.on_event(POD_ADD, None, pod)
        elif self._responsible(pod) and not (pod.get("metadata") or {}).get(
                "deletionTimestamp"):
            self.queue.add(PodInfo(pod))
            if pod_group_name(pod):  # a gang member: its waiting siblings may now be enough
                self.queue.on_event(UNSCHEDULED_POD_ADD, None, pod)
        self._gauge()

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        uid = new["metadata"]["uid"]
        if _bound(new):
            if _is_terminal(new):
                if self.cache.has_pod(uid):
                    self.cache.remove_pod(new)
                    self.queue.on_event(POD_DELETE, old, new)
                return
            was_known = self.cache.has_pod(uid) and not self.cache.is_assumed(uid)
            self.cache.set_pod(new)
            if not _bound(old):
                self.queue.delete(uid)
            action = _pod_action(old, new) if was_known else Action.ADD
            if action:
                self.queue.on_event(ClusterEvent("Pod", action), old, new)
        elif self._responsible(new):
            if (new.get("metadata") or {}).get("deletionTimestamp"):
                self.queue.delete(uid)
            elif _spec_changed(old, new):
                self.queue.update(PodInfo(new))
        self._gauge()

    def _pod_deleted(self, pod: Obj) -> None:
        if _bound(pod) or self.cache.has_pod(pod["metadata"].get("uid", "")):
            self.cache.remove_pod(pod)
            self.queue.on_event(POD_DELETE, pod, None)
        self.queue.delete(pod["metadata"].get("uid", ""))
        self._gauge()

    def _node_added(self, node: Obj) -> None:
        self.cache.set_node(node)
        self.queue.on_event(ClusterEvent("Node", Action.ADD), None, node)

    def _node_updated(self, old: Obj, new: Obj) -> None:
        self.cache.set_node(new)
        action = _node_action(old, new)
        if action:
            self.queue.on_event(ClusterEvent("Node", action), old, new)

    def _node_deleted(self, node: Obj) -> None:
        self.cache.remove_node(node["metadata"]["name"])

    def _pod_group_added(self, pg: Obj) -> None:
        self.queue.on_event(ClusterEvent("PodGroup", Action.ADD), None, pg)

    def _pod_group_updated(self, old: Obj, new: Obj) -> None:
        if old.get("spec") != new.get("spec"):  # not the status the controller writes
            self.queue.on_event(ClusterEvent("PodGroup", Action.UPDATE), old, new)

    def _gauge(self) -> None:
        self.metrics.pending(self.queue.counts())

    def _other_changed(self, resource: str) -> Any:
        def handler(*objs: Obj) -> None:
            self.queue.on_event(ClusterEvent(resource, Action.ALL), None, objs[-1])
        return handler

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)
        self.nodes.add_handler(self._node_added, self._node_updated, self._node_deleted)
        kinds = {"persistentvolumeclaims": "PersistentVolumeClaim",
                 "persistentvolumes": "PersistentVolume", "storageclasses": "StorageClass",
                 "services": "Service"}
        for name, kind in kinds.items():
            h = self._other_changed(kind)
            self.extra[name].add_handler(h, h, h)
        self.extra["podgroups"].add_handler(self._pod_group_added, self._pod_group_updated)
        informers = [self.nodes, self.namespaces, *self.extra.values(), self.pods]
        for inf in informers:
            inf.start()
        for inf in informers:
            await inf.wait_synced()
        self._loop = spawn(self._run(), name="scheduler")

    async def stop(self) -> None:
        self.queue.close()
        await cancel_and_wait(self._loop)
        await cancel_all(list(self._tasks))
        for inf in [self.pods, self.nodes, self.namespaces, *self.extra.values()]:
            await inf.stop()

    def _spawn(self, coro: Any, name: str) -> None:
        task = spawn(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        n = 0
        while True:
            qp = await self.queue.pop()
            try:
                await self.schedule_one(qp)
            except Exception:
                log.exception("scheduling %s failed", qp.pod.key)
                self.queue.add_unschedulable(qp, plugins=set(), error=True)
            n += 1
            if n % 8 == 0:
                await asyncio.sleep(0)  # let informers and bindings run

    # -- one pod ---------------------------------------------------------------------------

    def _skip(self, pod: PodInfo) -> bool:
        current = self.pods.get(pod.key)
        if current is None or current["metadata"].get("uid") != pod.uid:
            return True
        return _bound(current) or self.cache.has_pod(pod.uid) or bool(
            current["metadata"].get("deletionTimestamp"))

    async def schedule_one(self, qp: QueuedPodInfo) -> None:
        pod = qp.pod
        fwk = self.profiles.get(pod.scheduler_name)
        if fwk is None or self._skip(pod):
            self.queue.done(pod.uid)
            return
        started = time.perf_counter()
        state = CycleState()
        try:
            node_name = self.schedule_pod(fwk, state, pod)
        except FitError as fit:
            await self._unschedulable(fwk, state, qp, fit, started)
            return
        except Exception as e:
            log.exception("scheduling %s", pod.key)
            self._failed(qp, f"running the scheduling cycle: {e}", error=True, plugins=set(),
                         reason="SchedulerError")
            self.metrics.attempt("error", fwk.name, time.perf_counter() - started)
            return
        assumed = self.cache.assume(pod, node_name)
        st = fwk.run_reserve(state, assumed, node_name)
        wait = 0.0
        if st is None:
            st, wait = fwk.run_permit(state, assumed, node_name)
            if st is not None and st.code == Code.WAIT:
                self.waiting[pod.uid] = WaitingPod(pod, {p.name for p in fwk.permit})
                st = None
        if st is not None:
            fwk.run_unreserve(state, assumed, node_name)
            self.cache.forget(assumed)
            self._failed(qp, st.message, error=st.code == Code.ERROR,
                         plugins={st.plugin} if st.rejected else set())
            self._activate(state)
            self.metrics.attempt("unschedulable" if st.rejected else "error", fwk.name,
                                 time.perf_counter() - started)
            return
        self._activate(state)
        self.metrics.attempt("scheduled", fwk.name, time.perf_counter() - started)
        self.queue.nominator.delete(pod.uid)
        self._spawn(self._binding_cycle(fwk, state, qp, assumed, node_name, wait),
                    name=f"bind-{pod.key}")

    def _activate(self, state: CycleState) -> None:
        """Move the pods a plugin asked for (``PODS_TO_ACTIVATE``) to activeQ."""
        to_activate = state.read(PODS_TO_ACTIVATE)
        if to_activate:
            state.write(PODS_TO_ACTIVATE, None)
            self.queue.activate(to_activate)

    def schedule_pod(self, fwk: Framework, state: CycleState, pod: PodInfo) -> str:
        """The node the pod should go to, or :class:`FitError`."""
        nodes = self.cache.nodes()
        if not nodes:
            raise FitError(pod, 0, Diagnosis(pre_filter_msg=NO_NODES))
        diag = Diagnosis()
        result, st, narrowing = fwk.run_pre_filter(state, pod, nodes)
        if st is not None:
            if st.code == Code.ERROR:
                raise RuntimeError(st.message)
            diag.pre_filter_msg = st.message
            diag.plugins.add(st.plugin)
            diag.statuses = {n.name: st for n in nodes}
            raise FitError(pod, len(nodes), diag)
        # a node nominated by an earlier preemption is likely the only one that fits:
        # tried first, alone (upstream's evaluateNominatedNode)
        nominated = (pod.pod.get("status") or {}).get("nominatedNodeName") or \
            self.queue.nominator.node_of(pod.uid)
        if nominated:
            node = self.cache.node(nominated)
            if node is not None:
                st = fwk.run_filter_with_nominated(state, pod, node,
                                                   self.queue.nominator.for_node(nominated))
                if st is None:
                    return nominated
                if st.code == Code.ERROR:
                    raise RuntimeError(st.message)
        candidates = nodes
        if result is not None and result.node_names is not None:
            candidates = [n for n in nodes if n.name in result.node_names]
            excluded = Status.unresolvable(
                f"node(s) didn't satisfy plugin(s) [{', '.join(sorted(narrowing))}]")
            for n in nodes:
                if n.name not in result.node_names:
                    diag.statuses[n.name] = excluded
        if candidates is nodes and self.use_batch:
            fast = self._schedule_batch(fwk, state, pod, nodes, diag)
            if fast is not None:
                return fast
        feasible = self._find_feasible(fwk, state, pod, candidates, diag)
        if not feasible:
            raise FitError(pod, len(nodes), diag)
        if len(feasible) == 1:
            return feasible[0].name
        st = fwk.run_pre_score(state, pod, feasible)
        if st is not None:
            raise RuntimeError(st.message)
        totals, _ = fwk.run_score(state, pod, feasible)
        best = max(totals)
        ties = [feasible[i] for i, s in enumerate(totals) if s == best]
        return (ties[0] if len(ties) == 1 else self.pick(ties)).name

    def pick(self, ties: list[NodeInfo]) -> NodeInfo:
        """One of the nodes sharing the best score: at random, as upstream (a replay that
        wants repeatable ties overrides this)."""
        return random.choice(ties)

    def _schedule_batch(self, fwk: Framework, state: CycleState, pod: PodInfo,
                        nodes: list[NodeInfo], diag: Diagnosis) -> str | None:
        """The fast path over node columns (``batch.py``); None when it cannot decide.
        Raises :class:`FitError` when no node fits."""
        table = self.cache.table()
        masks = batch.filter_masks(fwk, state, pod, table)
        if masks is None:
            return None
        n = len(nodes)
        start = self._next_start % n
        held: dict[int, list[PodInfo]] = {}
        """Rows of the nodes holding nominated pods that count for ``pod``, which Filter
        sees added."""
        if self.queue.nominator:
            row_of = table.row_of
            held = {row_of[name]: extra for name, extra in self.queue.nominator.counting(pod).items()
                    if name in row_of}

        vetoed: dict[int, Status] = {}
        counting = fwk.counting_filter(state) if held else None
        by_columns = getattr(counting.reader, "filter_statuses", None) \
            if counting is not None else None

        def rejects(row: int) -> bool:
            st = fwk.run_filter_with_nominated(state, pod, nodes[row], held[row])
            if st is not None and st.code == Code.ERROR:
                raise RuntimeError(st.message)
            if st is not None:
                vetoed[row] = st
            return st is not None

        mask = batch.combined(masks, table)
        want = num_feasible_nodes_to_find(fwk.percentage, n)
        if by_columns is not None and counting is not None:
            # the nodes that pass every plugin without their nominated pods can only be
            # turned down with them by the one plugin that reads pods: ask it of all held
            # nodes at once, and turn down together those the other plugins pass
            rows_held = np.fromiter(held, np.int64, len(held))
            verdicts = by_columns(state, pod, table, rows_held, list(held.values()))
            for st in _distinct(verdicts):  # column verdicts share Status objects
                if st is not None:
                    if st.code == Code.ERROR:
                        raise RuntimeError(st.message)
                    st.with_plugin(counting.reader.name)
            turn = np.fromiter((st is not None for st in verdicts), np.bool_, len(verdicts)) \
                & mask[rows_held]
            vetoed = dict(zip(rows_held[turn].tolist(),
                              itertools.compress(verdicts, turn.tolist()), strict=True))
            mask[rows_held[turn]] = False
            rows, walked = batch.first_rows(mask, start=start, want=want)
        else:
            rows, walked = batch.first_rows(mask, start=start, want=want, veto=rejects,
                                            vetoable=held)
        if not len(rows):
            if not self._diagnose_batch(fwk, state, pod, nodes, masks, held, vetoed, diag):
                return None
            raise FitError(pod, n, diag)
        self._next_start = (start + walked) % n
        if len(rows) == 1:
            return nodes[int(rows[0])].name
        feasible: list[NodeInfo] = list(operator.itemgetter(*rows.tolist())(nodes))
        st = fwk.run_pre_score(state, pod, feasible)
        if st is not None:
            raise RuntimeError(st.message)
        totals = batch.scores(fwk, state, pod, table, rows)
        if totals is None:
            listed, _ = fwk.run_score(state, pod, feasible)
            totals = np.array(listed, np.int64)
        ties = np.flatnonzero(totals == totals.max())
        if len(ties) == 1:
            return feasible[int(ties[0])].name
        return self.pick([feasible[i] for i in ties.tolist()]).name

    def _diagnose_batch(self, fwk: Framework, state: CycleState, pod: PodInfo,
                        nodes: list[NodeInfo], masks: list[tuple[Any, Any]],
                        held: dict[int, list[PodInfo]], vetoed: dict[int, Status],
                        diag: Diagnosis) -> bool:
        """Why each node failed, as the node-by-node path says it: the status of the
        first plugin whose batch verdict rejected the node, asked of that plugin alone
        (a node holding nominated pods: of the whole chain with them, unless ``vetoed``
        already has it). False when a node's own answer disagrees with the batch verdict
        (the caller then goes node by node)."""
        alive = None
        statuses: dict[str, Status] = {}
        plugins: set[str] = set()
        table = self.cache.table()
        names = table.names
        held_rows = np.fromiter(held, np.int64, len(held))
        for pl, m in masks:
            failing = ~m if alive is None else alive & ~m
            found = np.flatnonzero(failing)
            if len(held_rows):
                found = found[~np.isin(found, held_rows)]
            rows = found.tolist()
            batch_statuses = getattr(pl, "filter_statuses", None)
            verdicts: list[Status | None] = \
                batch_statuses(state, pod, table, found) \
                if batch_statuses is not None and rows else \
                [pl.filter(state, pod, nodes[row]) for row in rows]
            for one in _distinct(verdicts):  # batch verdicts share Status objects
                if one is None or one.code == Code.SKIP:
                    return False
                if one.code == Code.ERROR:
                    raise RuntimeError(one.message)
                plugins.add(one.with_plugin(pl.name).plugin)
            # none is None now
            statuses.update(zip(map(names.__getitem__, rows), cast("list[Status]", verdicts),
                                strict=True))
            alive = m if alive is None else alive & m
        statuses.update(zip(map(names.__getitem__, vetoed), vetoed.values(), strict=True))
        plugins.update(map(_PLUGIN, _distinct(vetoed.values())))
        for row in held.keys() - vetoed.keys():  # not asked yet: a plugin before turned it down
            st = fwk.run_filter_with_nominated(state, pod, nodes[row], held[row])
            if st is None:
                return False
            if st.code == Code.ERROR:
                raise RuntimeError(st.message)
            statuses[names[row]] = st
            plugins.add(st.plugin)
        if alive is not None and alive.any() and not all(
                row in held for row in np.flatnonzero(alive).tolist()):
            return False
        diag.statuses.update(statuses)
        diag.plugins.update(plugins)
        return True

    def _find_feasible(self, fwk: Framework, state: CycleState, pod: PodInfo,
                       nodes: list[NodeInfo], diag: Diagnosis) -> list[NodeInfo]:
        n = len(nodes)
        if not n:
            return []
        want = num_feasible_nodes_to_find(fwk.percentage, n)
        start = self._next_start % n
        if not fwk.has_filters():
            self._next_start = (start + want) % n
            return [nodes[(start + i) % n] for i in range(want)]
        held = self.queue.nominator.counting(pod) if self.queue.nominator else None
        run = fwk.run_filter
        feasible: list[NodeInfo] = []
        processed = 0
        order = nodes[start:] + nodes[:start] if start else nodes
        for node in order:
            processed += 1
            if held is not None:
                st = fwk.run_filter_with_nominated(state, pod, node, held.get(node.name))
            else:
                st = run(state, pod, node)
            if st is None:
                feasible.append(node)
                if len(feasible) >= want:
                    break
            elif st.code == Code.ERROR:
                raise RuntimeError(st.message)
            else:
                diag.statuses[node.name] = st
                diag.plugins.add(st.plugin)
        self._next_start = (start + processed) % n
        return feasible

    # -- failures --------------------------------------------------------------------------

    async def _unschedulable(self, fwk: Framework, state: CycleState, qp: QueuedPodInfo,
                             fit: FitError, started: float) -> None:
        pod = qp.pod
        nominated: str | None = None
        unresolvable_everywhere = all(
            st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE for st in fit.diagnosis.statuses.values())
        if fwk.post_filter and fit.num_nodes and not unresolvable_everywhere:
            result, st = await fwk.run_post_filter(state, pod, fit.diagnosis.statuses)
            if st is not None and st.message:
                fit.diagnosis.post_filter_msg = st.message
            if result is not None and result.nominated_node_name:
                nominated = result.nominated_node_name
        elif fwk.post_filter and fit.num_nodes:
            fit.diagnosis.post_filter_msg = (
                f"preemption: 0/{fit.num_nodes} nodes are available: "
                f"{fit.num_nodes} Preemption is not helpful for scheduling.")
        self.metrics.attempt("unschedulable", fwk.name, time.perf_counter() - started)
        self._failed(qp, str(fit), plugins=fit.diagnosis.plugins, nominated=nominated)

    def _failed(self, qp: QueuedPodInfo, message: str, *, plugins: set[str],
                error: bool = False, reason: str = "Unschedulable",
                nominated: str | None = None) -> None:
        pod = qp.pod
        log.debug("pod %s is unschedulable: %s", pod.key, message)
        if nominated is not None:
            self.queue.nominator.add(pod, nominated)
        self.queue.add_unschedulable(qp, plugins=plugins, error=error)
        self._spawn(self._report_failure(pod, message, reason, nominated),
                    name=f"unschedulable-{pod.key}")

    async def _report_failure(self, pod: PodInfo, message: str, reason: str,
                              nominated: str | None) -> None:
        async with self._status_slots:
            await self.recorder.emit(pod.pod, "Warning", "FailedScheduling", message)
            current = self.pods.get(pod.key) or pod.pod
            conds = (current.get("status") or {}).get("conditions") or []
            old = next((c for c in conds if c.get("type") == "PodScheduled"), None)
            status: Obj = {}
            if old is None or old.get("status") != "False" or old.get("reason") != reason \
                    or old.get("message") != message:
                status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                         "reason": reason, "message": message,
                                         "lastProbeTime": None,
                                         "lastTransitionTime": rfc3339()}]
            if nominated is not None and (current.get("status") or {}).get(
                    "nominatedNodeName", "") != nominated:
                status["nominatedNodeName"] = nominated
            if not status:
                return
            try:
                await self.client.patch("v1", "pods", pod.name, {"status": status},
                                        namespace=pod.namespace, subresource="status",
                                        patch_type="strategic")
            except StatusError as e:
                if e.code != 404:
                    log.warning("cannot update the status of pod %s: %s", pod.key, e.message)

    # -- binding cycle ---------------------------------------------------------------------

    async def _binding_cycle(self, fwk: Framework, state: CycleState, qp: QueuedPodInfo,
                             assumed: PodInfo, node_name: str, wait: float) -> None:
        pod = qp.pod
        try:
            st: Status | None = None
            if wait:
                st = await self.waiting[pod.uid].wait(wait)
            if st is None:
                st = await fwk.run_pre_bind(state, assumed, node_name)
            if st is None:
                st = await fwk.run_bind(state, assumed, node_name)
        except Exception as e:
            log.exception("binding %s", pod.key)
            st = Status.error(str(e))
        finally:
            self.waiting.pop(pod.uid, None)
        if st is not None:
            fwk.run_unreserve(state, assumed, node_name)
            self.cache.forget(assumed)
            self.queue.on_event(POD_DELETE)  # its space is free again
            message = st.message if st.rejected else f"Binding rejected: {st.message}"
            self._failed(qp, message, plugins={st.plugin} if st.rejected else set(),
                         error=not st.rejected, reason="Unschedulable" if st.rejected
                         else "SchedulerError")
            self._activate(state)  # e.g. the gang this one's room was let go for
            return
        self.queue.done(pod.uid)
        fwk.run_post_bind(state, assumed, node_name)
        if qp.initial_attempt:
            self.metrics.scheduled(self.clock.monotonic() - qp.initial_attempt, qp.attempts)
        self._spawn(self.recorder.emit(pod.pod, "Normal", "Scheduled",
                                       f"Successfully assigned {pod.key} to {node_name}"),
                    name=f"scheduled-event-{pod.key}")


class WaitingPod:
    """A pod a Permit plugin holds back (gang scheduling): bound once every plugin that
    asked it to wait allows it, given up when one rejects it or the time runs out."""

    def __init__(self, pod: PodInfo, plugins: set[str]) -> None:
        self.pod = pod
        self.pending = set(plugins)
        self._done: asyncio.Future[Status | None] = asyncio.get_running_loop().create_future()

    def allow(self, plugin: str) -> None:
        self.pending.discard(plugin)
        if not self.pending and not self._done.done():
            self._done.set_result(None)

    def reject(self, plugin: str, message: str) -> None:
        if not self._done.done():
            self._done.set_result(Status.unschedulable(message).with_plugin(plugin))

    @property
    def allowed(self) -> bool:
        """Every plugin allowed it: it goes on to bind (it stays listed meanwhile)."""
        return self._done.done() and self._done.result() is None

    async def wait(self, timeout: float) -> Status | None:
        try:
            async with asyncio.timeout(timeout):
                return await self._done
        except TimeoutError:
            pending = sorted(self.pending)
            return Status.unschedulable("rejected due to timeout after waiting "
                                        f"{timeout:g}s at plugin(s) {', '.join(pending)}"
                                        ).with_plugin(pending[0] if pending else "")
