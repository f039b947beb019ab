"""The scheduling queue: activeQ, backoffQ and the unschedulable pods, as upstream.

- **activeQ** holds pods ready to be tried, popped in the QueueSort plugin's order
  (priority, then age).
- **backoffQ** holds pods that failed and wait out their back-off (1 s doubling to 10 s
  by attempt) before going back to activeQ.
- **unschedulable** pods wait for a cluster event that one of the plugins that rejected
  them registered for (a node added, a pod deleted...), or for five minutes.
- **gated** pods failed a PreEnqueue plugin (scheduling gates) and wait for an update.

A failed pod whose scheduling overlapped a cluster event goes to backoffQ, not to
unschedulable, so that the event is not lost.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.scheduler.framework import ClusterEvent, ClusterEventWithHint, Status
from kybernetes.scheduler.types import PodInfo

SortKey = Callable[[PodInfo, float], tuple[Any, ...]]
UNSCHEDULABLE_FLUSH_SECONDS = 30.0
MAX_IN_UNSCHEDULABLE_SECONDS = 300.0


@dataclass(slots=True, eq=False)
class QueuedPodInfo:
    pod: PodInfo
    timestamp: float
    """When the pod was (re-)added to activeQ: its age for sorting."""
    initial_attempt: float = 0.0
    attempts: int = 0
    unschedulable_plugins: set[str] = field(default_factory=set)
    gated_by: str = ""
    cycle: int = 0
    """The scheduling cycle of its last attempt."""
    last_failure: float = 0.0


class SchedulingQueue:
    def __init__(self, sort_key: SortKey, *,
                 pre_enqueue: Callable[[PodInfo], Status | None] = lambda p: None,
                 events: dict[str, list[ClusterEventWithHint]] | None = None,
                 clock: Clock = SYSTEM_CLOCK, initial_backoff: float = 1.0,
                 max_backoff: float = 10.0) -> None:
        self._sort_key = sort_key
        self._pre_enqueue = pre_enqueue
        self._events = events or {}
        self._clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._seq = itertools.count()
        self._active: list[tuple[tuple[Any, ...], int, str]] = []
        self._active_entries: dict[str, tuple[int, QueuedPodInfo]] = {}
        self._backoff: dict[str, QueuedPodInfo] = {}
        self._unschedulable: dict[str, QueuedPodInfo] = {}
        self._gated: dict[str, QueuedPodInfo] = {}
        self._in_flight: dict[str, QueuedPodInfo] = {}
        self._wakeup = asyncio.Event()
        self._closed = False
        self.scheduling_cycle = 0
        self._move_request_cycle = -1
        self.nominator = Nominator()

    # -- sizes, for metrics and tests -----------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {"active": len(self._active_entries), "backoff": len(self._backoff),
                "unschedulable": len(self._unschedulable), "gated": len(self._gated)}

    def where(self, uid: str) -> str:
        """Which queue holds the pod ("" when none; "in-flight" while being scheduled)."""
        for name, q in (("active", self._active_entries), ("backoff", self._backoff),
                        ("unschedulable", self._unschedulable), ("gated", self._gated),
                        ("in-flight", self._in_flight)):
            if uid in q:
                return name
        return ""

    # -- adding ----------------------------------------------------------------------------

    def _push_active(self, qp: QueuedPodInfo) -> None:
        seq = next(self._seq)
        self._active_entries[qp.pod.uid] = (seq, qp)
        heapq.heappush(self._active, (self._sort_key(qp.pod, qp.timestamp), seq, qp.pod.uid))
        self._wakeup.set()

    def _enqueue(self, qp: QueuedPodInfo) -> None:
        """activeQ, unless a PreEnqueue plugin holds the pod back."""
        st = self._pre_enqueue(qp.pod)
        if st is not None:
            qp.gated_by = st.plugin
            self._gated[qp.pod.uid] = qp
            return
        qp.gated_by = ""
        self._push_active(qp)

    def add(self, pod: PodInfo) -> None:
        """A new pending pod."""
        now = self._clock.monotonic()
        self._drop(pod.uid)
        self._enqueue(QueuedPodInfo(pod, now, initial_attempt=0.0))

    def update(self, pod: PodInfo) -> None:
        """A pending pod changed: refresh it where it is; a gated or unschedulable pod
        whose change may help is tried again."""
        uid = pod.uid
        if uid in self._in_flight:
            self._in_flight[uid].pod = pod
            return
        if uid in self._active_entries:
            self._active_entries[uid][1].pod = pod
            return
        if uid in self._backoff:
            self._backoff[uid].pod = pod
            return
        qp = self._gated.pop(uid, None) or self._unschedulable.pop(uid, None)
        if qp is None:
            self.add(pod)
            return
        qp.pod = pod
        if self._backing_off(qp):
            self._backoff[uid] = qp
            self._wakeup.set()
        else:
            self._enqueue(qp)

    def delete(self, uid: str) -> None:
        self._drop(uid)
        self._in_flight.pop(uid, None)
        self.nominator.delete(uid)

    def _drop(self, uid: str) -> None:
        self._active_entries.pop(uid, None)
        self._backoff.pop(uid, None)
        self._unschedulable.pop(uid, None)
        self._gated.pop(uid, None)

    # -- popping ---------------------------------------------------------------------------

    async def pop(self) -> QueuedPodInfo:
        """The next pod to schedule; waits while activeQ is empty (backoffQ and the
        unschedulable pods are flushed meanwhile)."""
        while True:
            if self._closed:
                raise asyncio.CancelledError
            self.flush()
            while self._active:
                _, seq, uid = heapq.heappop(self._active)
                entry = self._active_entries.get(uid)
                if entry is None or entry[0] != seq:
                    continue  # superseded or removed
                del self._active_entries[uid]
                qp = entry[1]
                qp.attempts += 1
                if not qp.initial_attempt:
                    qp.initial_attempt = self._clock.monotonic()
                self.scheduling_cycle += 1
                qp.cycle = self.scheduling_cycle
                self._in_flight[uid] = qp
                return qp
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self._next_wake()):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _next_wake(self) -> float:
        now = self._clock.monotonic()
        waits = [self._backoff_until(qp) - now for qp in self._backoff.values()]
        waits.append(UNSCHEDULABLE_FLUSH_SECONDS)
        return max(0.01, min(waits))

    def done(self, uid: str) -> None:
        """The pod's scheduling attempt ended (bound, or put back by
        :meth:`add_unschedulable`)."""
        self._in_flight.pop(uid, None)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    # -- failures --------------------------------------------------------------------------

    def backoff_duration(self, qp: QueuedPodInfo) -> float:
        d = self.initial_backoff * (2 ** min(max(0, qp.attempts - 1), 64))
        return float(min(d, self.max_backoff))

    def _backoff_until(self, qp: QueuedPodInfo) -> float:
        return qp.last_failure + self.backoff_duration(qp)

    def _backing_off(self, qp: QueuedPodInfo) -> bool:
        return qp.last_failure > 0 and self._backoff_until(qp) > self._clock.monotonic()

    def add_unschedulable(self, qp: QueuedPodInfo, *, plugins: set[str],
                          error: bool = False) -> None:
        """Put back a pod whose attempt failed: backoffQ when it failed on an error or a
        cluster event came in meanwhile, else the unschedulable pods."""
        uid = qp.pod.uid
        self._in_flight.pop(uid, None)
        if uid in self._active_entries or uid in self._backoff:
            return
        qp.unschedulable_plugins = set(plugins)
        qp.last_failure = self._clock.monotonic()
        if error or not plugins or self._move_request_cycle >= qp.cycle:
            self._backoff[uid] = qp
            self._wakeup.set()
        else:
            self._unschedulable[uid] = qp

    def flush(self) -> None:
        """Move pods whose back-off is over to activeQ, and pods unschedulable for too
        long to backoffQ (or activeQ)."""
        now = self._clock.monotonic()
        for uid, qp in list(self._backoff.items()):
            if self._backoff_until(qp) <= now:
                del self._backoff[uid]
                qp.timestamp = now
                self._enqueue(qp)
        for uid, qp in list(self._unschedulable.items()):
            if now - qp.last_failure >= MAX_IN_UNSCHEDULABLE_SECONDS:
                del self._unschedulable[uid]
                self._requeue(qp, now)

    def _requeue(self, qp: QueuedPodInfo, now: float) -> None:
        if self._backoff_until(qp) > now:
            self._backoff[qp.pod.uid] = qp
            self._wakeup.set()
        else:
            qp.timestamp = now
            self._enqueue(qp)

    # -- cluster events --------------------------------------------------------------------

    def _may_help(self, qp: QueuedPodInfo, event: ClusterEvent, old: Any, new: Any) -> bool:
        if not qp.unschedulable_plugins:
            return True
        for plugin in qp.unschedulable_plugins:
            for reg in self._events.get(plugin, ()):
                if reg.event.covers(event) and (reg.hint is None or reg.hint(qp.pod, old, new)):
                    return True
        return False

    def on_event(self, event: ClusterEvent, old: Any = None, new: Any = None) -> None:
        """A cluster event: unschedulable pods it may help go back to be tried."""
        self._move_request_cycle = self.scheduling_cycle
        if not self._unschedulable:
            return
        now = self._clock.monotonic()
        for uid, qp in list(self._unschedulable.items()):
            if self._may_help(qp, event, old, new):
                del self._unschedulable[uid]
                self._requeue(qp, now)

    def move_all(self) -> None:
        """Every unschedulable pod is tried again (e.g. after a preemption)."""
        self._move_request_cycle = self.scheduling_cycle
        now = self._clock.monotonic()
        for uid, qp in list(self._unschedulable.items()):
            del self._unschedulable[uid]
            self._requeue(qp, now)

    def activate(self, uids: Iterable[str]) -> None:
        """Move these pods from backoffQ or the unschedulable pods straight to activeQ,
        back-off or not (upstream's ``Activate``: the siblings of a gang member that
        waits at Permit). Pods elsewhere (active, in flight, gated, unknown) stay."""
        now = self._clock.monotonic()
        for uid in uids:
            qp = self._unschedulable.pop(uid, None) or self._backoff.pop(uid, None)
            if qp is not None:
                qp.timestamp = now
                self._enqueue(qp)

    def pending(self) -> list[QueuedPodInfo]:
        return [e[1] for e in self._active_entries.values()] + list(self._backoff.values()) \
            + list(self._unschedulable.values()) + list(self._gated.values())


_VIEWS = 8
"""How many priorities :meth:`Nominator.counting` keeps a view for."""


class NominatedFor:
    """For one pod, the pods nominated to each node that Filter adds there (those of at
    least its priority but itself): ``get(node)``, and ``items()`` of the nodes with any.
    Read it within one scheduling cycle; it changes as nominations do."""

    __slots__ = ("_own", "_own_held", "_view")

    def __init__(self, view: dict[str, list[PodInfo]], own: str, own_held: list[PodInfo]
                 ) -> None:
        self._view, self._own, self._own_held = view, own, own_held

    def get(self, node: str) -> list[PodInfo]:
        if node == self._own:
            return self._own_held
        return self._view.get(node) or _NONE

    def items(self) -> Iterator[tuple[str, list[PodInfo]]]:
        own = self._own
        for name, held in self._view.items():
            if name != own:
                yield name, held
            elif self._own_held:
                yield name, self._own_held


_NONE: list[PodInfo] = []


class Nominator:
    """Pods nominated to a node by preemption: while the victims go, other pods of lower
    priority must not take their place."""

    def __init__(self) -> None:
        self._by_node: dict[str, dict[str, PodInfo]] = {}
        self._node_of: dict[str, str] = {}
        self._views: dict[int, dict[str, list[PodInfo]]] = {}
        """Priority → node → the pods nominated there of at least that priority, for the
        priorities asked of :meth:`counting` lately, kept in step."""

    def add(self, pod: PodInfo, node_name: str) -> None:
        self.delete(pod.uid)
        if not node_name:
            return
        self._by_node.setdefault(node_name, {})[pod.uid] = pod
        self._node_of[pod.uid] = node_name
        for prio, view in self._views.items():
            if pod.priority >= prio:
                view.setdefault(node_name, []).append(pod)

    def delete(self, uid: str) -> None:
        node = self._node_of.pop(uid, None)
        if node is None:
            return
        pods = self._by_node.get(node, {})
        pod = pods.pop(uid, None)
        if not pods:
            self._by_node.pop(node, None)
        if pod is None:
            return
        for prio, view in self._views.items():
            held = view.get(node)
            if pod.priority >= prio and held is not None:
                held[:] = [p for p in held if p.uid != uid]
                if not held:
                    del view[node]

    def for_node(self, node_name: str) -> list[PodInfo]:
        return list(self._by_node.get(node_name, {}).values())

    def counting(self, pod: PodInfo) -> NominatedFor:
        """The pods nominated to each node that Filter adds there for ``pod``: the others
        of at least its priority."""
        view = self._views.get(pod.priority)
        if view is None:
            if len(self._views) >= _VIEWS:
                self._views.clear()
            prio = pod.priority
            view = self._views[prio] = {}
            for name, pods in self._by_node.items():
                held = [p for p in pods.values() if p.priority >= prio]
                if held:
                    view[name] = held
        own = self._node_of.get(pod.uid, "")
        return NominatedFor(view, own, [p for p in view.get(own, ()) if p.uid != pod.uid])

    def node_of(self, uid: str) -> str:
        return self._node_of.get(uid, "")

    def nodes(self) -> list[str]:
        """The nodes some pod is nominated to."""
        return list(self._by_node)

    def __bool__(self) -> bool:
        return bool(self._by_node)
