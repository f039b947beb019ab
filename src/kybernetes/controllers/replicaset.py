"""The ReplicaSet controller: keeps ``spec.replicas`` pods matching a ReplicaSet running.

For each ReplicaSet (a key ``namespace/name``) it claims pods (adopting matching orphans,
releasing its pods that no longer match), then, once the pods it created or deleted
before have all been seen by its informer (:class:`Expectations`), creates the missing
pods from the template, 1, 2, 4, ... at a time, stopping at the first failure (upstream's
slow start), or deletes the surplus, least useful first (:func:`podutil.pods_to_delete`).
It records ``SuccessfulCreate`` / ``SuccessfulDelete`` events and writes the status:
replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (ready for
``minReadySeconds``), observedGeneration and a ``ReplicaFailure`` condition while pods
cannot be created or deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import controller_of, rfc3339
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
from kybernetes.controllers.expectations import Expectations
from kybernetes.controllers.ownership import (
    CONTROLLER_INDEX,
    ORPHAN_INDEX,
    claim_pods,
    controller_reference,
    controller_uid_index,
    labels_of,
    orphan_namespace_index,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "replicaset-controller"
API_VERSION = "apps/v1"
KIND = "ReplicaSet"
BURST_REPLICAS = 500
"""At most this many pods are created or deleted in one sync (upstream's burstReplicas)."""
SLOW_START_INITIAL_BATCH = 1


def ensure_index(informer: Informer, name: str, fn: Callable[[Obj], list[str]]) -> None:
    """Add an index unless a controller sharing the informer already did."""
    with contextlib.suppress(ValueError):
        informer.add_index(name, fn)


async def slow_start_batch(count: int, initial: int, fn: Callable[[], Awaitable[None]]
                           ) -> tuple[int, BaseException | None]:
    """Call ``fn`` ``count`` times in concurrent batches of ``initial``, twice as many,
    ... until one call fails; (successful calls, the first error)."""
    remaining, successes = count, 0
    batch = min(remaining, initial)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        successes += batch - len(errors)
        if errors:
            return successes, errors[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


def pod_from_template(rs: Obj, owner_ref: Obj) -> Obj:
    """A new pod of the ReplicaSet: the template's metadata and spec, named by the server
    from ``generateName`` ``<rs-name>-``."""
    template = (rs.get("spec") or {}).get("template") or {}
    tmd = template.get("metadata") or {}
    md: Obj = {"generateName": f"{rs['metadata']['name']}-",
               "namespace": rs["metadata"].get("namespace"),
               "labels": dict(tmd.get("labels") or {}),
               "ownerReferences": [owner_ref]}
    if tmd.get("annotations"):
        md["annotations"] = dict(tmd["annotations"])
    if tmd.get("finalizers"):
        md["finalizers"] = list(tmd["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": template.get("spec") or {}}


def calculate_status(rs: Obj, pods: list[Obj], failure: tuple[str, str] | None, *,
                     now: float) -> Obj:
    """The status the pods make (without observedGeneration); ``failure`` is the
    (reason, message) of a failed create or delete in this sync."""
    spec = rs.get("spec") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    fully_labeled = sum(1 for p in pods
                        if all(labels_of(p).get(k) == v for k, v in template_labels.items()))
    ready = sum(1 for p in pods if podutil.is_ready(p))
    available = sum(1 for p in pods if podutil.is_available(p, min_ready, now))
    status: Obj = {"replicas": len(pods)}
    for key, value in (("fullyLabeledReplicas", fully_labeled), ("readyReplicas", ready),
                       ("availableReplicas", available)):
        if value:
            status[key] = value
    conditions = [dict(c) for c in (rs.get("status") or {}).get("conditions") or []]
    existing = next((c for c in conditions if c.get("type") == "ReplicaFailure"), None)
    if failure is not None and existing is None:
        conditions.append({"type": "ReplicaFailure", "status": "True",
                           "lastTransitionTime": rfc3339(now), "reason": failure[0],
                           "message": failure[1]})
    elif failure is None and existing is not None:
        conditions.remove(existing)
    if conditions:
        status["conditions"] = conditions
    return status


_STATUS_COUNTS = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")


def status_changed(rs: Obj, status: Obj) -> bool:
    old = rs.get("status") or {}
    if any(int(old.get(k) or 0) != int(status.get(k) or 0) for k in _STATUS_COUNTS):
        return True
    if int(old.get("observedGeneration") or 0) != int(rs["metadata"].get("generation") or 0):
        return True
    return (old.get("conditions") or []) != (status.get("conditions") or [])


class ReplicaSetController:
    def __init__(self, client: Client, *, workers: int = 4, clock: Clock = SYSTEM_CLOCK,
                 pods: Informer | None = None, replicasets: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.replicasets = replicasets or shared_informer(client, API_VERSION, "replicasets")
        self._own = [inf for inf, given in ((self.pods, pods), (self.replicasets, replicasets))
                     if given is None]
        self.queue: WorkQueue[str] = WorkQueue(name="replicaset")
        self.expectations = Expectations(clock=clock)
        self.events = EventRecorder(client, COMPONENT)
        self._tasks: list[asyncio.Task[Any]] = []

    # -- events in ---------------------------------------------------------------------

    def _rs_of(self, pod: Obj, ref: Obj | None) -> str | None:
        """The cached ReplicaSet ``ref`` (a pod's controller reference) names, if any."""
        if ref is None or ref.get("kind") != KIND or \
                not str(ref.get("apiVersion", "")).startswith("apps/"):
            return None
        key = f"{pod['metadata'].get('namespace')}/{ref.get('name')}"
        rs = self.replicasets.get(key)
        if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def _matching(self, pod: Obj) -> list[str]:
        """Keys of the ReplicaSets in the pod's namespace whose selector matches it."""
        ns = pod["metadata"].get("namespace")
        labels = labels_of(pod)
        out = []
        for rs in self.replicasets.by_index(NAMESPACE_INDEX, ns or ""):
            try:
                if from_label_selector((rs.get("spec") or {}).get("selector")).matches(labels):
                    out.append(object_key(rs))
            except SelectorError:
                continue
        return out

    def _pod_added(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        ref = controller_of(pod)
        if ref is not None:
            key = self._rs_of(pod, ref)
            if key is not None:
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        for key in self._matching(pod):
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        labels_changed = labels_of(old) != labels_of(new)
        if new["metadata"].get("deletionTimestamp"):
            self._pod_deleted(new)
            if labels_changed:
                self._pod_deleted(old)
            return
        ref, old_ref = controller_of(new), controller_of(old)
        if old_ref is not None and (ref is None or ref.get("uid") != old_ref.get("uid")):
            key = self._rs_of(old, old_ref)
            if key is not None:
                self.queue.add(key)
        if ref is not None:
            key = self._rs_of(new, ref)
            if key is not None:
                self.queue.add(key)
            return
        if labels_changed or old_ref is not None:
            for key in self._matching(new):
                self.queue.add(key)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._rs_of(pod, controller_of(pod))
        if key is not None:
            self.expectations.deletion_observed(key, object_key(pod))
            self.queue.add(key)

    def _rs_deleted(self, rs: Obj) -> None:
        key = object_key(rs)
        self.expectations.delete(key)
        self.queue.add(key)

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        rs = self.replicasets.get(key)
        if rs is None:
            self.expectations.delete(key)
            return None
        needs_sync = self.expectations.satisfied(key)
        md, _spec = rs["metadata"], rs.get("spec") or {}
        claimed = await claim_pods(self.client, rs, self.pods, api_version=API_VERSION,
                                   kind=KIND, plural="replicasets", keep=podutil.is_active)
        if claimed is None:
            return None
        pods = claimed
        failure: tuple[str, str] | None = None
        if needs_sync and not md.get("deletionTimestamp"):
            failure = await self._manage(key, rs, pods)
        now = self.clock.now()
        status = calculate_status(rs, pods, failure, now=now)
        await self._write_status(rs, status)
        if failure is not None:
            return Result(requeue=True)
        return self._requeue_for_availability(rs, pods, now)

    def _requeue_for_availability(self, rs: Obj, pods: list[Obj], now: float
                                  ) -> Result | None:
        """With minReadySeconds, look again when the next ready pod becomes available."""
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready <= 0:
            return None
        times = [t for p in pods if (t := podutil.available_at(p, min_ready)) is not None
                 and t >= now]
        return Result(requeue_after=min(times) - now + 1.0) if times else None

    async def _manage(self, key: str, rs: Obj, pods: list[Obj]) -> tuple[str, str] | None:
        """Create or delete pods; the (reason, message) of a failure, or None."""
        want = int((rs.get("spec") or {}).get("replicas", 1) or 0)
        diff = len(pods) - want
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect_creations(key, count)
            ref = controller_reference(rs, API_VERSION, KIND)
            successes, error = await slow_start_batch(
                count, SLOW_START_INITIAL_BATCH, lambda: self._create_pod(key, rs, ref))
            for _ in range(count - successes):
                self.expectations.creation_observed(key)
            if error is not None:
                return "FailedCreate", _message(error)
        elif diff > 0:
            count = min(diff, BURST_REPLICAS)
            victims = podutil.pods_to_delete(pods, count, self._related_pods(rs))
            self.expectations.expect_deletions(key, [object_key(p) for p in victims])
            results = await asyncio.gather(*(self._delete_pod(key, rs, p) for p in victims),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                return "FailedDelete", _message(errors[0])
        return None

    def _related_pods(self, rs: Obj) -> list[Obj]:
        """The pods of every ReplicaSet with the same controller as ``rs``."""
        ref = controller_of(rs)
        if ref is None or not ref.get("uid"):
            return []
        out: list[Obj] = []
        for sibling in self.replicasets.by_index(CONTROLLER_INDEX, str(ref["uid"])):
            out.extend(self.pods.by_index(CONTROLLER_INDEX, sibling["metadata"]["uid"]))
        return out

    async def _create_pod(self, key: str, rs: Obj, ref: Obj) -> None:
        pod = pod_from_template(rs, ref)
        if not pod["metadata"]["labels"]:
            raise ValueError("unable to create pods, no labels")
        try:
            created = await self.client.create("v1", "pods", pod,
                                               namespace=rs["metadata"].get("namespace"))
        except StatusError as e:
            if e.code == 403 and "being terminated" in e.message:
                self.expectations.creation_observed(key)  # nothing will be created there
                return
            await self.events.emit(_typed(rs), "Warning", "FailedCreate",
                                   f"Error creating: {e.message}")
            raise
        await self.events.emit(_typed(rs), "Normal", "SuccessfulCreate",
                               f"Created pod: {created['metadata']['name']}")

    async def _delete_pod(self, key: str, rs: Obj, pod: Obj) -> None:
        md = pod["metadata"]
        try:
            await self.client.delete("v1", "pods", md["name"], namespace=md.get("namespace"))
        except StatusError as e:
            self.expectations.deletion_observed(key, object_key(pod))
            if e.code == 404:
                return
            await self.events.emit(_typed(rs), "Warning", "FailedDelete",
                                   f"Error deleting: {e.message}")
            raise
        await self.events.emit(_typed(rs), "Normal", "SuccessfulDelete",
                               f"Deleted pod: {md['name']}")

    async def _write_status(self, rs: Obj, status: Obj) -> None:
        if not status_changed(rs, status):
            return
        md = rs["metadata"]
        for attempt in range(2):
            generation = md.get("generation")
            body = {**rs, "apiVersion": API_VERSION, "kind": KIND,
                    "status": {**status, **({"observedGeneration": generation}
                                            if generation else {})}}
            try:
                await self.client.update_status(API_VERSION, "replicasets", body)
                return
            except StatusError as e:
                if e.code == 404:
                    return
                if e.code != 409 or attempt:
                    raise
            rs = await self.client.get(API_VERSION, "replicasets", md["name"],
                                       namespace=md.get("namespace"))
            md = rs["metadata"]

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.pods, CONTROLLER_INDEX, controller_uid_index)
        ensure_index(self.pods, ORPHAN_INDEX, orphan_namespace_index)
        ensure_index(self.replicasets, CONTROLLER_INDEX, controller_uid_index)
        ensure_index(self.replicasets, NAMESPACE_INDEX, namespace_index)
        self.replicasets.add_handler(on_add=lambda rs: self.queue.add(object_key(rs)),
                                     on_update=lambda old, new: self.queue.add(object_key(new)),
                                     on_delete=self._rs_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated,
                              on_delete=self._pod_deleted)
        self.pods.start()
        self.replicasets.start()
        self._tasks.append(spawn(self._run(), name="replicaset-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, self.replicasets):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="replicaset-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()


def _typed(rs: Obj) -> Obj:
    """The ReplicaSet with its kind (cached list items may lack it), for events."""
    return {**rs, "apiVersion": API_VERSION, "kind": KIND}


def _message(error: BaseException) -> str:
    return error.message if isinstance(error, StatusError) else str(error)
