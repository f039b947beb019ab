"""The disruption controller: the status of PodDisruptionBudgets.

For each PodDisruptionBudget (a key ``namespace/name``) it counts the pods its selector
matches (``{}`` matches every pod in the namespace, no selector none) and writes, as
upstream: ``expectedPods``, ``desiredHealthy``, ``currentHealthy`` (ready, not being
deleted, not recently evicted), ``disruptionsAllowed`` (0 while no pod is expected),
``disruptedPods`` (evictions the API server recorded, dropped once the pod is gone or
after :data:`DELETION_TIMEOUT`), ``observedGeneration`` and the ``DisruptionAllowed``
condition (``SufficientPods`` / ``InsufficientPods``; ``SyncFailed`` when the pods'
controllers cannot be found).

An integer ``minAvailable`` is compared with the pods found; a percentage
``minAvailable`` or any ``maxUnavailable`` is taken of the scale of the pods'
controllers: ``spec.replicas`` of their ReplicaSet, of the Deployment owning that
ReplicaSet, or of their StatefulSet (each counted once). Pods without a controller are
left out of that sum (an ``UnmanagedPods`` event says so), as upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import controller_of, parse_time, rfc3339
from kybernetes.api.selectors import SelectorError, from_label_selector
from kybernetes.client import (
    NAMESPACE_INDEX,
    Client,
    Informer,
    Result,
    WorkQueue,
    namespace_index,
    object_key,
    run_workers,
    shared_informer,
)
from kybernetes.client.events import EventRecorder
from kybernetes.controllers import podutil
from kybernetes.controllers.replicaset import ensure_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "controllermanager"
API_VERSION = "policy/v1"
CONDITION = "DisruptionAllowed"
DELETION_TIMEOUT = 120.0
"""How long an evicted pod may take to get a deletionTimestamp (upstream's 2 minutes)."""

ScaleFinder = Callable[[Obj, str], tuple[str, int] | None]
"""(controller reference, namespace) -> (uid of the scaled object, its replicas) or None."""


class ScaleError(Exception):
    """The scale of a pod's controller cannot be found."""


def scaled_value(value: int | str, total: int) -> int:
    """An int-or-percent of ``total``, percentages rounded up (``GetScaledValueFromIntOrPercent``)."""
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        try:
            return int(text)
        except ValueError:
            raise ScaleError(f"invalid value for IntOrString: invalid value {text!r}") from None
    try:
        percent = int(text[:-1])
    except ValueError:
        raise ScaleError(f"invalid value for IntOrString: invalid value {text!r}") from None
    return math.ceil(percent * total / 100)


def expected_scale(pods: list[Obj], find: ScaleFinder) -> tuple[int, list[str]]:
    """The summed scale of the pods' controllers, and the names of pods without one."""
    scales: dict[str, int] = {}
    seen_refs: set[str] = set()
    unmanaged: list[str] = []
    for pod in pods:
        ref = controller_of(pod)
        if ref is None:
            unmanaged.append(str(pod["metadata"]["name"]))
            continue
        if str(ref.get("uid")) in seen_refs:
            continue
        found = find(ref, str(pod["metadata"].get("namespace") or ""))
        if found is None:
            raise ScaleError(f"found no controllers for pod {pod['metadata']['name']!r}")
        seen_refs.add(str(ref.get("uid")))
        scales[found[0]] = found[1]
    return sum(scales.values()), unmanaged


def expected_and_desired(pdb: Obj, pods: list[Obj], find: ScaleFinder
                         ) -> tuple[int, int, list[str]]:
    """(expectedPods, desiredHealthy, unmanaged pod names) — upstream's
    ``getExpectedPodCount``."""
    spec = pdb.get("spec") or {}
    max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
    if max_unavailable is not None:
        expected, unmanaged = expected_scale(pods, find)
        return expected, max(0, expected - scaled_value(max_unavailable, expected)), unmanaged
    if min_available is not None:
        if isinstance(min_available, int):
            return len(pods), min_available, []
        expected, unmanaged = expected_scale(pods, find)
        return expected, scaled_value(min_available, expected), unmanaged
    return 0, 0, []


def disrupted_pods(pdb: Obj, pods: list[Obj], now: float
                   ) -> tuple[dict[str, str], float | None]:
    """The ``disruptedPods`` still pending: evicted pods that exist, are not yet being
    deleted and were evicted less than :data:`DELETION_TIMEOUT` ago; and when the
    earliest of them expires (None when none)."""
    recorded = (pdb.get("status") or {}).get("disruptedPods") or {}
    out: dict[str, str] = {}
    recheck: float | None = None
    for pod in pods:
        md = pod["metadata"]
        if md.get("deletionTimestamp") or md["name"] not in recorded:
            continue
        started = parse_time(recorded[md["name"]])
        if started is None:
            continue
        expires = started + DELETION_TIMEOUT
        if expires < now:
            log.info("pod %s/%s was expected to be deleted but it wasn't",
                     md.get("namespace"), md["name"])
            continue
        out[md["name"]] = recorded[md["name"]]
        recheck = expires if recheck is None else min(recheck, expires)
    return out, recheck


def count_healthy(pods: list[Obj], disrupted: dict[str, str], now: float) -> int:
    """Ready pods not being deleted and not just evicted (``countHealthyPods``)."""
    healthy = 0
    for pod in pods:
        md = pod["metadata"]
        if md.get("deletionTimestamp"):
            continue
        started = parse_time(disrupted.get(md["name"]))
        if started is not None and started + DELETION_TIMEOUT > now:
            continue
        if podutil.is_ready(pod):
            healthy += 1
    return healthy


def set_condition(conditions: list[Obj], *, status: str, reason: str, message: str,
                  observed_generation: int, now: float) -> list[Obj]:
    """``meta.SetStatusCondition`` for the DisruptionAllowed condition."""
    out = [dict(c) for c in conditions]
    current = next((c for c in out if c.get("type") == CONDITION), None)
    if current is None:
        current = {"type": CONDITION, "lastTransitionTime": rfc3339(now)}
        out.append(current)
    elif current.get("status") != status:
        current["lastTransitionTime"] = rfc3339(now)
    current.update(status=status, reason=reason, message=message,
                   observedGeneration=observed_generation)
    return out


def pdb_status(pdb: Obj, *, current_healthy: int, desired_healthy: int, expected: int,
               disrupted: dict[str, str], now: float) -> Obj:
    """The status to write (upstream's ``updatePdbStatus``)."""
    allowed = current_healthy - desired_healthy
    if expected <= 0 or allowed <= 0:
        allowed = 0
    generation = int(pdb["metadata"].get("generation") or 0)
    status: Obj = {"observedGeneration": generation, "disruptionsAllowed": allowed,
                   "currentHealthy": current_healthy, "desiredHealthy": desired_healthy,
                   "expectedPods": expected}
    if disrupted:
        status["disruptedPods"] = dict(disrupted)
    old = (pdb.get("status") or {}).get("conditions") or []
    if allowed > 0:
        status["conditions"] = set_condition(old, status="True", reason="SufficientPods",
                                             message="", observed_generation=generation,
                                             now=now)
    else:
        status["conditions"] = set_condition(old, status="False", reason="InsufficientPods",
                                             message="", observed_generation=generation,
                                             now=now)
    return status


def fail_safe_status(pdb: Obj, message: str, now: float) -> Obj:
    """No disruptions while the status cannot be computed (upstream's ``failSafe``)."""
    status = dict(pdb.get("status") or {})
    status["disruptionsAllowed"] = 0
    status["conditions"] = set_condition(
        status.get("conditions") or [], status="False", reason="SyncFailed", message=message,
        observed_generation=int(status.get("observedGeneration") or 0), now=now)
    return status


_COUNTS = ("currentHealthy", "desiredHealthy", "expectedPods", "disruptionsAllowed",
           "observedGeneration")


def status_changed(pdb: Obj, status: Obj) -> bool:
    old = pdb.get("status") or {}
    if any(int(old.get(k) or 0) != int(status.get(k) or 0) for k in _COUNTS):
        return True
    if (old.get("disruptedPods") or {}) != (status.get("disruptedPods") or {}):
        return True
    return (old.get("conditions") or []) != (status.get("conditions") or [])


class DisruptionController:
    def __init__(self, client: Client, *, workers: int = 2, clock: Clock = SYSTEM_CLOCK,
                 pods: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.pdbs = Informer(client, API_VERSION, "poddisruptionbudgets")
        self.replicasets = shared_informer(client, "apps/v1", "replicasets")
        self.deployments = shared_informer(client, "apps/v1", "deployments")
        self.statefulsets = shared_informer(client, "apps/v1", "statefulsets")
        self._own = [self.pdbs, self.replicasets, self.deployments, self.statefulsets]
        if pods is None:
            self._own.append(self.pods)
        self.queue: WorkQueue[str] = WorkQueue(name="disruption")
        self.events = EventRecorder(client, COMPONENT)
        self._tasks: list[asyncio.Task[Any]] = []

    # -- finding the scale of a pod's controller -------------------------------------------

    def _owned(self, informer: Informer, ref: Obj, ns: str, kind: str) -> Obj | None:
        if ref.get("kind") != kind or not str(ref.get("apiVersion", "")).startswith("apps/"):
            return None
        obj = informer.get(f"{ns}/{ref.get('name')}")
        if obj is None or obj["metadata"].get("uid") != ref.get("uid"):
            return None
        return obj

    def find_scale(self, ref: Obj, ns: str) -> tuple[str, int] | None:
        """The Deployment, ReplicaSet or StatefulSet ``ref`` leads to, and its replicas."""
        rs = self._owned(self.replicasets, ref, ns, "ReplicaSet")
        if rs is not None:
            rs_ref = controller_of(rs)
            if rs_ref is not None and rs_ref.get("kind") == "Deployment":
                dep = self._owned(self.deployments, rs_ref, ns, "Deployment")
                if dep is None:
                    return None
                return str(dep["metadata"]["uid"]), _replicas(dep)
            return str(rs["metadata"]["uid"]), _replicas(rs)
        sts = self._owned(self.statefulsets, ref, ns, "StatefulSet")
        if sts is not None:
            return str(sts["metadata"]["uid"]), _replicas(sts)
        return None

    # -- events in ---------------------------------------------------------------------

    def _pod_changed(self, *pods: Obj) -> None:
        keys: set[str] = set()
        for pod in pods:
            md = pod.get("metadata") or {}
            labels = md.get("labels") or {}
            for pdb in self.pdbs.by_index(NAMESPACE_INDEX, md.get("namespace") or ""):
                with contextlib.suppress(SelectorError):
                    if from_label_selector((pdb.get("spec") or {}).get("selector")
                                           ).matches(labels):
                        keys.add(object_key(pdb))
        for key in keys:
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if old["metadata"].get("resourceVersion") != new["metadata"].get("resourceVersion"):
            self._pod_changed(old, new)

    def _scale_changed(self, old: Obj, new: Obj) -> None:
        """A workload's replicas changed: every budget in its namespace may change."""
        if _replicas(old) != _replicas(new):
            for pdb in self.pdbs.by_index(NAMESPACE_INDEX,
                                          new["metadata"].get("namespace") or ""):
                self.queue.add(object_key(pdb))

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        pdb = self.pdbs.get(key)
        if pdb is None:
            return None
        now = self.clock.now()
        try:
            selector = from_label_selector((pdb.get("spec") or {}).get("selector"))
        except SelectorError as e:
            await self._write_status(pdb, fail_safe_status(pdb, str(e), now))
            return None
        ns = pdb["metadata"].get("namespace") or ""
        pods = [p for p in self.pods.by_index(NAMESPACE_INDEX, ns)
                if selector.matches(p["metadata"].get("labels") or {})]
        typed = {**pdb, "apiVersion": API_VERSION, "kind": "PodDisruptionBudget"}
        if not pods:
            await self.events.emit(typed, "Normal", "NoPods", "No matching pods found")
        try:
            expected, desired, unmanaged = expected_and_desired(pdb, pods, self.find_scale)
        except ScaleError as e:
            await self.events.emit(typed, "Warning", "CalculateExpectedPodCountFailed",
                                   f"Failed to calculate the number of expected pods: {e}")
            await self._write_status(pdb, fail_safe_status(pdb, str(e), now))
            return Result(requeue=True)
        if unmanaged:
            await self.events.emit(
                typed, "Warning", "UnmanagedPods",
                "Pods selected by this PodDisruptionBudget (selector: "
                f"{(pdb.get('spec') or {}).get('selector')}) were found to be unmanaged. As "
                "a result, the status of the PDB cannot be calculated correctly, which may "
                "result in undefined behavior. To account for these pods please set "
                '".spec.minAvailable" field of the PDB to an integer value.')
        disrupted, recheck = disrupted_pods(pdb, pods, now)
        healthy = count_healthy(pods, disrupted, now)
        status = pdb_status(pdb, current_healthy=healthy, desired_healthy=desired,
                            expected=expected, disrupted=disrupted, now=now)
        await self._write_status(pdb, status)
        if recheck is not None:
            return Result(requeue_after=max(0.0, recheck - now) + 0.5)
        return None

    async def _write_status(self, pdb: Obj, status: Obj) -> None:
        if not status_changed(pdb, status):
            return
        body = {**pdb, "apiVersion": API_VERSION, "kind": "PodDisruptionBudget",
                "status": status}
        try:
            await self.client.update_status(API_VERSION, "poddisruptionbudgets", body)
        except StatusError as e:
            if e.code == 404:
                return
            if e.code == 409:  # an eviction or a stale cache: the informer brings it back
                self.queue.add(object_key(pdb))
                return
            raise

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.pods, NAMESPACE_INDEX, namespace_index)
        ensure_index(self.pdbs, NAMESPACE_INDEX, namespace_index)
        self.pdbs.add_handler(on_add=lambda p: self.queue.add(object_key(p)),
                              on_update=lambda old, new: self.queue.add(object_key(new)))
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated,
                              on_delete=self._pod_changed)
        for inf in (self.replicasets, self.deployments, self.statefulsets):
            inf.add_handler(on_update=self._scale_changed)
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="disruption-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, *self._own):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="disruption-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()


def _replicas(obj: Obj) -> int:
    replicas = (obj.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)
