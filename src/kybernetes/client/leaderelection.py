"""Leader election through a ``coordination.k8s.io/v1`` Lease, as client-go's.

Several processes campaign for one Lease; the one whose identity is its
``holderIdentity`` leads and renews it every ``retry_period``. The others watch it: a
lease whose record has not changed for its ``leaseDurationSeconds`` (measured on *this*
process's clock, never by trusting the holder's ``renewTime``) is taken over with a
compare-and-swap update, so two candidates cannot both win. A leader that cannot renew
for ``renew_deadline`` stops leading (``renew_deadline < lease_duration``: it stops
before anyone else may start). Stopped cleanly, a leader releases the lease (empty
holder, duration 1 s) so that a standby takes over at once::

    elector = LeaderElector(client, on_started_leading=start, on_stopped_leading=stop)
    await elector.run()   # returns when leadership is lost; cancel it to step down
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339_micro
from kybernetes.client.events import EventRecorder
from kybernetes.client.rest import Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Hook = Callable[[], Coroutine[Any, Any, None]]

LEASES = ("coordination.k8s.io/v1", "leases")
JITTER = 1.2
"""client-go's JitterFactor: a candidate retries after retry_period * (1 + up to 1.2)."""


def default_identity() -> str:
    """``<hostname>_<uuid>``, as kube-controller-manager names itself."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class LeaderElector:
    """Campaign for, hold and give back one Lease (client-go's LeaderElector)."""

    def __init__(self, client: Client, *, name: str = "kube-controller-manager",
                 namespace: str = "kube-system", identity: str = "",
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, on_started_leading: Hook | None = None,
                 on_stopped_leading: Hook | None = None,
                 on_new_leader: Callable[[str], None] | None = None,
                 release_on_cancel: bool = True, jitter: float = JITTER,
                 component: str = "", clock: Clock = SYSTEM_CLOCK) -> None:
        if lease_duration <= renew_deadline:
            raise ValueError("the lease duration must be greater than the renew deadline")
        if renew_deadline <= JITTER * retry_period:
            raise ValueError(f"the renew deadline must be greater than {JITTER} times the "
                             "retry period")
        if retry_period <= 0:
            raise ValueError("the retry period must be positive")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.release_on_cancel = release_on_cancel
        self.jitter = jitter
        self.clock = clock
        self.events = EventRecorder(client, component or name, host=socket.gethostname())
        self.observed: Obj = {}
        """The lease's spec as last read or written."""
        self.observed_time = 0.0
        """When (this process's monotonic clock) the spec last changed."""
        self._reported_leader: str | None = None
        self._lease: Obj | None = None

    # -- state ------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether the lease, as last seen, names this candidate."""
        return bool(self.observed.get("holderIdentity")) and \
            self.observed.get("holderIdentity") == self.identity

    @property
    def leader(self) -> str:
        """The holder as last observed ("" when none)."""
        return str(self.observed.get("holderIdentity") or "")

    def _observe(self, spec: Obj) -> None:
        if spec != self.observed:
            self.observed = dict(spec)
            self.observed_time = self.clock.monotonic()

    def _lease_valid(self) -> bool:
        duration = float(self.observed.get("leaseDurationSeconds") or 0)
        return self.observed_time + duration > self.clock.monotonic()

    # -- one attempt ------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """Create, take over or renew the lease once; whether this candidate now holds it."""
        now = rfc3339_micro(self.clock.now())
        spec: Obj = {"holderIdentity": self.identity,
                     "leaseDurationSeconds": max(1, round(self.lease_duration)),
                     "acquireTime": now, "renewTime": now}
        try:
            lease = await self.client.get(*LEASES, self.name, namespace=self.namespace)
        except StatusError as e:
            if e.code != 404:
                log.warning("error retrieving lease %s/%s: %s", self.namespace, self.name,
                            e.message)
                return False
            spec["leaseTransitions"] = 0
            try:
                created = await self.client.create(*LEASES, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec}, namespace=self.namespace)
            except StatusError as e2:
                log.info("error creating lease %s/%s: %s", self.namespace, self.name,
                         e2.message)
                return False
            self._lease = created
            self._observe(spec)
            return True
        old: Obj = lease.get("spec") or {}
        self._observe(old)
        holder = old.get("holderIdentity") or ""
        if holder and holder != self.identity and self._lease_valid():
            log.debug("lease %s/%s is held by %s and has not yet expired", self.namespace,
                      self.name, holder)
            return False
        if holder == self.identity:
            spec["acquireTime"] = old.get("acquireTime") or now
            spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0)
        else:
            spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + 1
        lease["spec"] = spec
        try:
            updated = await self.client.update(*LEASES, lease, namespace=self.namespace)
        except StatusError as e:
            # 409: somebody else wrote it since we read it (and so, maybe, won)
            log.info("failed to update lease %s/%s: %s", self.namespace, self.name, e.message)
            return False
        self._lease = updated
        self._observe(spec)
        return True

    async def _attempt(self, timeout: float) -> bool:
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), max(timeout, 0.001))
        except TimeoutError:
            log.info("lease %s/%s: request timed out", self.namespace, self.name)
        except Exception as e:  # e.g. the API server is unreachable: retried
            log.info("lease %s/%s: %s", self.namespace, self.name, e or type(e).__name__)
        return False

    def _report_transition(self) -> None:
        leader = self.leader
        if leader and leader != self._reported_leader:
            self._reported_leader = leader
            log.info("new leader elected: %s", leader)
            if self.on_new_leader is not None:
                self.on_new_leader(leader)

    async def _event(self, message: str) -> None:
        if self._lease is None:
            return
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": self._lease.get("metadata") or {}}
        try:
            await self.events.emit(lease, "Normal", "LeaderElection",
                                   f"{self.identity} {message}")
        except Exception as e:  # an event is worth a try, never a failure
            log.debug("leader election event: %s", e)

    # -- loops ------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Retry until this candidate holds the lease (cancel to give up)."""
        desc = f"{self.namespace}/{self.name}"
        log.info("attempting to acquire leader lease %s...", desc)
        while True:
            ok = await self._attempt(self.renew_deadline)
            self._report_transition()
            if ok:
                log.info("successfully acquired lease %s", desc)
                await self._event("became leader")
                return
            await self.clock.sleep(self.retry_period *
                                   (1 + random.random() * self.jitter))

    async def renew(self) -> None:
        """Renew every ``retry_period``; return once renewals failed for ``renew_deadline``."""
        last_ok = self.clock.monotonic()
        while True:
            await self.clock.sleep(self.retry_period)
            left = last_ok + self.renew_deadline - self.clock.monotonic()
            ok = left > 0 and await self._attempt(left)
            self._report_transition()
            if ok:
                last_ok = self.clock.monotonic()
                continue
            if self.clock.monotonic() - last_ok >= self.renew_deadline or \
                    (self.leader and not self.is_leader):
                log.info("failed to renew lease %s/%s: leadership lost", self.namespace,
                         self.name)
                await self._event("stopped leading")
                return

    async def release(self) -> bool:
        """Give the lease up (empty holder, 1 s) if this candidate holds it."""
        if not self.is_leader or self._lease is None:
            return True
        now = rfc3339_micro(self.clock.now())
        lease = dict(self._lease)
        spec: Obj = {"leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
                     "leaseTransitions": int(self.observed.get("leaseTransitions") or 0)}
        lease["spec"] = spec
        try:
            async with asyncio.timeout(self.renew_deadline):
                try:
                    self._lease = await self.client.update(*LEASES, lease,
                                                           namespace=self.namespace)
                except StatusError as e:
                    if e.code != 409:
                        raise
                    # a renewal whose answer was cut off by the cancellation went through:
                    # ours still, at a newer version; release that one
                    current = await self.client.get(*LEASES, self.name,
                                                    namespace=self.namespace)
                    if (current.get("spec") or {}).get("holderIdentity") != self.identity:
                        return True
                    current["spec"] = spec
                    self._lease = await self.client.update(*LEASES, current,
                                                           namespace=self.namespace)
        except Exception as e:
            log.error("failed to release lease %s/%s: %s", self.namespace, self.name,
                      e or type(e).__name__)
            return False
        self._observe(spec)
        log.info("released lease %s/%s", self.namespace, self.name)
        return True

    async def run(self) -> None:
        """Campaign; lead (``on_started_leading``) until leadership is lost, then
        ``on_stopped_leading`` and return. Cancelled while leading, it stops leading,
        releases the lease (``release_on_cancel``) and re-raises."""
        await self.acquire()
        starting: asyncio.Task[None] | None = None
        if self.on_started_leading is not None:
            # as client-go's goroutine: the lease is renewed while the leader starts up
            starting = spawn(self.on_started_leading(), name=f"leader:{self.name}:start")
        cancelled = False
        try:
            await self.renew()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if starting is not None:
                # stop what is fully started, no half of it; but a start that cannot finish
                # (its informers never sync) must not hold the stop forever
                await asyncio.wait({starting}, timeout=self.renew_deadline)
                if not starting.done():
                    log.warning("lease %s/%s: starting the leader's work did not finish in "
                                "%.0f s: cancelled", self.namespace, self.name,
                                self.renew_deadline)
                    await cancel_and_wait(starting)
            if self.on_stopped_leading is not None:
                await self.on_stopped_leading()
            if cancelled:
                await self._event("stopped leading")
            if cancelled and self.release_on_cancel:
                await self.release()
