"""The StatefulSet controller: pods ``<set>-<ordinal>`` with stable names and claims.

For each StatefulSet it claims pods, finds or creates the ControllerRevision of the
current template (:mod:`history`), then makes one step, as upstream's
``defaultStatefulSetControl`` does:

- failed pods are deleted (and so re-created);
- missing ordinals ``0..replicas-1`` are created, each after its claims
  ``<template>-<set>-<ordinal>`` (from ``volumeClaimTemplates``); with ``OrderedReady``
  one at a time, each Running and Ready before the next, with ``Parallel`` all at once;
- ordinals ``>= replicas`` are deleted from the highest down (one at a time and only
  while the others are healthy with ``OrderedReady``);
- with ``RollingUpdate`` the pods at or above ``partition`` whose revision is not the
  update revision are deleted from the highest ordinal down, one at a time, each after
  the others are Running and Ready (``OnDelete``: only pods deleted by hand are renewed).

Claims outlive pods unless ``persistentVolumeClaimRetentionPolicy`` says ``Delete``:
``whenDeleted`` makes the set their owner (the garbage collector removes them with it),
``whenScaled`` makes a condemned pod their owner before it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import controller_of
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
from kybernetes.controllers import history, podutil
from kybernetes.controllers.ownership import (
    CONTROLLER_INDEX,
    ORPHAN_INDEX,
    claim_pods,
    controller_reference,
    controller_uid_index,
    labels_of,
    orphan_namespace_index,
)
from kybernetes.controllers.replicaset import ensure_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "statefulset-controller"
API_VERSION = "apps/v1"
KIND = "StatefulSet"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = history.REVISION_HASH_LABEL
DEFAULT_HISTORY_LIMIT = 10


def ordinal_of(set_name: str, pod: Obj) -> int | None:
    """The ordinal in a pod's name ``<set>-<ordinal>``, or None if it is not one."""
    m = re.fullmatch(rf"{re.escape(set_name)}-(0|[1-9][0-9]*)", pod["metadata"].get("name", ""))
    return int(m.group(1)) if m else None


def claim_name(template: Obj, set_name: str, ordinal: int) -> str:
    return f"{(template.get('metadata') or {}).get('name', '')}-{set_name}-{ordinal}"


def retention(sts: Obj) -> tuple[str, str]:
    """(whenDeleted, whenScaled) of the claim retention policy; Retain by default."""
    policy = (sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
    return str(policy.get("whenDeleted") or "Retain"), str(policy.get("whenScaled") or "Retain")


def new_claim(sts: Obj, template: Obj, ordinal: int) -> Obj:
    """The claim of one pod from one ``volumeClaimTemplates`` entry: the template, named
    ``<template>-<set>-<ordinal>``, labelled with the set's ``matchLabels``."""
    md = sts["metadata"]
    tmd = template.get("metadata") or {}
    labels = dict(tmd.get("labels") or {})
    labels.update(((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    cmd: Obj = {"name": claim_name(template, md["name"], ordinal),
                "namespace": md.get("namespace"), "labels": labels}
    if tmd.get("annotations"):
        cmd["annotations"] = dict(tmd["annotations"])
    if retention(sts)[0] == "Delete":
        cmd["ownerReferences"] = [controller_reference(sts, API_VERSION, KIND)]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": cmd,
            "spec": dict(template.get("spec") or {})}


def new_pod(sts: Obj, template: Obj, ordinal: int, revision_name: str) -> Obj:
    """Pod ``<set>-<ordinal>`` from ``template`` (the revision's), with its identity: the
    name labels, hostname and subdomain, and the claims in place of same-named volumes."""
    md, spec = sts["metadata"], sts.get("spec") or {}
    name = f"{md['name']}-{ordinal}"
    tmd = template.get("metadata") or {}
    labels = dict(tmd.get("labels") or {})
    labels.update({POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal),
                   REVISION_LABEL: revision_name})
    pmd: Obj = {"name": name, "namespace": md.get("namespace"), "labels": labels,
                "ownerReferences": [controller_reference(sts, API_VERSION, KIND)]}
    if tmd.get("annotations"):
        pmd["annotations"] = dict(tmd["annotations"])
    pod_spec = dict(template.get("spec") or {})
    claims = spec.get("volumeClaimTemplates") or []
    if claims:
        names = {(c.get("metadata") or {}).get("name") for c in claims}
        volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") not in names]
        volumes += [{"name": (c.get("metadata") or {}).get("name"),
                     "persistentVolumeClaim": {"claimName": claim_name(c, md["name"], ordinal)}}
                    for c in claims]
        pod_spec["volumes"] = volumes
    pod_spec["hostname"] = name
    if spec.get("serviceName"):
        pod_spec["subdomain"] = spec["serviceName"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pmd, "spec": pod_spec}


def is_healthy(pod: Obj) -> bool:
    """Running, Ready and not being deleted (upstream's ``isRunningAndReady``)."""
    return (pod.get("status") or {}).get("phase") == "Running" and podutil.is_ready(pod) \
        and not pod["metadata"].get("deletionTimestamp")


def is_failed(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == "Failed"


def revision_of(pod: Obj) -> str:
    return labels_of(pod).get(REVISION_LABEL, "")


def partition_of(sts: Obj) -> int:
    strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    return int((strategy.get("rollingUpdate") or {}).get("partition") or 0)


def calculate_status(sts: Obj, pods: list[Obj], current: str, update: str, *,
                     now: float) -> Obj:
    """The status the pods make, with the current revision moved to the update revision
    once a rolling update has reached every pod (upstream's ``completeRollingUpdate``)."""
    spec = sts.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    status: Obj = {
        "replicas": len(live),
        "readyReplicas": sum(1 for p in live if is_healthy(p)),
        "availableReplicas": sum(1 for p in live if is_healthy(p)
                                 and podutil.is_available(p, min_ready, now)),
        "currentReplicas": sum(1 for p in live if revision_of(p) == current),
        "updatedReplicas": sum(1 for p in live if revision_of(p) == update),
        "currentRevision": current, "updateRevision": update,
        "collisionCount": int((sts.get("status") or {}).get("collisionCount") or 0),
    }
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    replicas = int(spec.get("replicas", 1) or 0)
    if strategy == "RollingUpdate" and status["updatedReplicas"] == replicas \
            and status["readyReplicas"] == replicas and status["replicas"] == replicas:
        status["currentRevision"] = update
        status["currentReplicas"] = status["updatedReplicas"]
    return status


_STATUS_KEYS = ("replicas", "readyReplicas", "availableReplicas", "currentReplicas",
                "updatedReplicas", "currentRevision", "updateRevision", "collisionCount")


def status_changed(sts: Obj, status: Obj) -> bool:
    old = sts.get("status") or {}
    if any((old.get(k) or 0) != (status.get(k) or 0) for k in _STATUS_KEYS):
        return True
    return int(old.get("observedGeneration") or 0) != int(sts["metadata"].get("generation") or 0)


class Plan:
    """What one sync does: claims and pods to create, pods to delete (in order)."""

    def __init__(self) -> None:
        self.create: list[int] = []
        self.delete: list[Obj] = []


def plan(sts: Obj, pods: list[Obj], current: str, update: str) -> Plan:
    """One step toward the desired pods (pure: no I/O), as upstream orders it."""
    spec = sts.get("spec") or {}
    name = sts["metadata"]["name"]
    replicas = int(spec.get("replicas", 1) or 0)
    ordered = (spec.get("podManagementPolicy") or "OrderedReady") == "OrderedReady"
    out = Plan()
    by_ordinal: dict[int, Obj] = {}
    for p in pods:
        o = ordinal_of(name, p)
        if o is not None:
            by_ordinal[o] = p
    condemned = sorted((o for o in by_ordinal if o >= replicas), reverse=True)
    # failed pods go first: they are re-created on a later sync
    for o in sorted(by_ordinal):
        p = by_ordinal[o]
        if o < replicas and is_failed(p) and not p["metadata"].get("deletionTimestamp"):
            out.delete.append(p)
            if ordered:
                return out
    for o in range(replicas):
        existing = by_ordinal.get(o)
        if existing is None:
            out.create.append(o)
            if ordered:
                return out
            continue
        if ordered and not is_healthy(existing):
            return out  # wait for it to be Running and Ready (or gone) first
    if out.create or out.delete:
        return out
    for o in condemned:
        p = by_ordinal[o]
        if p["metadata"].get("deletionTimestamp"):
            if ordered:
                return out  # wait for it to go
            continue
        if ordered and any(not is_healthy(q) for k, q in by_ordinal.items() if k != o
                           and k < replicas):
            return out
        out.delete.append(p)
        if ordered:
            return out
    if out.delete or condemned:
        return out
    if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
        return out
    partition = partition_of(sts)
    for o in range(replicas - 1, partition - 1, -1):
        p = by_ordinal[o]
        if revision_of(p) != update and not p["metadata"].get("deletionTimestamp"):
            if all(is_healthy(q) for k, q in by_ordinal.items() if k != o):
                out.delete.append(p)
            return out
        if not is_healthy(p):
            return out  # one at a time: wait for the last one renewed
    return out


def revision_for(sts: Obj, ordinal: int, current: str, update: str) -> str:
    """The revision a new pod of ``ordinal`` gets: the current one below the partition
    and with ``OnDelete`` (as upstream's ``newVersionedStatefulSetPod``), else the update
    one."""
    if current == update:
        return update
    strategy = ((sts.get("spec") or {}).get("updateStrategy") or {}).get("type",
                                                                        "RollingUpdate")
    if strategy == "OnDelete" or ordinal < partition_of(sts):
        return current
    return update


class StatefulSetController:
    def __init__(self, client: Client, *, workers: int = 2, clock: Clock = SYSTEM_CLOCK,
                 pods: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.pods = pods or shared_informer(client, "v1", "pods")
        self.sets = Informer(client, API_VERSION, "statefulsets")
        self.revisions = shared_informer(client, API_VERSION, history.PLURAL)
        self._own = [self.sets, self.revisions] + ([self.pods] if pods is None else [])
        self.queue: WorkQueue[str] = WorkQueue(name="statefulset")
        self.events = EventRecorder(client, COMPONENT)
        self._tasks: list[asyncio.Task[Any]] = []

    # -- events in ---------------------------------------------------------------------

    def _owner_key(self, obj: Obj) -> str | None:
        ref = controller_of(obj)
        if ref is None or ref.get("kind") != KIND:
            return None
        key = f"{obj['metadata'].get('namespace')}/{ref.get('name')}"
        sts = self.sets.get(key)
        if sts is None or sts["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def _pod_changed(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.queue.add(key)
            return
        if controller_of(pod) is None:
            ns = pod["metadata"].get("namespace") or ""
            for sts in self.sets.by_index(NAMESPACE_INDEX, ns):
                with contextlib.suppress(SelectorError):
                    if from_label_selector((sts.get("spec") or {}).get("selector")) \
                            .matches(labels_of(pod)):
                        self.queue.add(object_key(sts))

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        sts = self.sets.get(key)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return None
        sts = {**sts, "apiVersion": API_VERSION, "kind": KIND}
        md = sts["metadata"]
        claimed = await claim_pods(self.client, sts, self.pods, api_version=API_VERSION,
                                   kind=KIND, plural="statefulsets")
        if claimed is None:
            return None
        pods = claimed
        revisions = self.revisions.by_index(CONTROLLER_INDEX, md["uid"])
        update_rev = await history.ensure_revision(self.client, sts, revisions,
                                                   api_version=API_VERSION, kind=KIND)
        update = update_rev["metadata"]["name"]
        by_name = {r["metadata"]["name"]: r for r in revisions}
        by_name[update] = update_rev
        current = str((sts.get("status") or {}).get("currentRevision") or "")
        if current not in by_name:
            current = update
        step = plan(sts, pods, current, update)
        await self._apply(sts, step, by_name, current, update)
        status = calculate_status(sts, pods, current, update, now=self.clock.now())
        await self._write_status(sts, status)
        live = {current, update, *(revision_of(p) for p in pods)}
        limit = (sts.get("spec") or {}).get("revisionHistoryLimit")
        await history.truncate(self.client, list(by_name.values()), live,
                               limit=DEFAULT_HISTORY_LIMIT if limit is None else int(limit))
        return None

    async def _apply(self, sts: Obj, step: Plan, revisions: dict[str, Obj], current: str,
                     update: str) -> None:
        spec = sts.get("spec") or {}
        await asyncio.gather(*(self._create(sts, o, revisions, current, update)
                               for o in step.create))
        replicas = int(spec.get("replicas", 1) or 0)
        for pod in step.delete:
            o = ordinal_of(sts["metadata"]["name"], pod)
            if o is not None and o >= replicas and retention(sts)[1] == "Delete":
                await self._claims_owned_by_pod(sts, pod, o)
            await self._delete(sts, pod)

    async def _create(self, sts: Obj, ordinal: int, revisions: dict[str, Obj], current: str,
                      update: str) -> None:
        ns = sts["metadata"].get("namespace")
        for template in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
            try:
                await self.client.create("v1", "persistentvolumeclaims",
                                         new_claim(sts, template, ordinal), namespace=ns)
            except StatusError as e:
                if e.code != 409:
                    await self.events.emit(sts, "Warning", "FailedCreate",
                                           f"create Claim {claim_name(template, sts['metadata']['name'], ordinal)} "
                                           f"for Pod {sts['metadata']['name']}-{ordinal} in "
                                           f"StatefulSet {sts['metadata']['name']} failed "
                                           f"error: {e.message}")
                    raise
        rev = revision_for(sts, ordinal, current, update)
        pod = new_pod(sts, history.template_of(revisions[rev]), ordinal, rev)
        name = pod["metadata"]["name"]
        try:
            await self.client.create("v1", "pods", pod, namespace=ns)
        except StatusError as e:
            if e.code == 409:
                return
            await self.events.emit(sts, "Warning", "FailedCreate",
                                   f"create Pod {name} in StatefulSet "
                                   f"{sts['metadata']['name']} failed error: {e.message}")
            raise
        await self.events.emit(sts, "Normal", "SuccessfulCreate",
                               f"create Pod {name} in StatefulSet {sts['metadata']['name']} "
                               "successful")

    async def _claims_owned_by_pod(self, sts: Obj, pod: Obj, ordinal: int) -> None:
        """``whenScaled: Delete``: the condemned pod owns its claims, so they go with it."""
        ref = {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
               "uid": pod["metadata"]["uid"]}
        for template in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
            name = claim_name(template, sts["metadata"]["name"], ordinal)
            try:
                claim = await self.client.get("v1", "persistentvolumeclaims", name,
                                              namespace=sts["metadata"].get("namespace"))
                refs = [r for r in claim["metadata"].get("ownerReferences") or []
                        if r.get("uid") != sts["metadata"]["uid"]]
                if any(r.get("uid") == ref["uid"] for r in refs):
                    continue
                await self.client.patch("v1", "persistentvolumeclaims", name,
                                        {"metadata": {"ownerReferences": [*refs, ref]}},
                                        namespace=sts["metadata"].get("namespace"))
            except StatusError as e:
                if e.code != 404:
                    raise

    async def _delete(self, sts: Obj, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        try:
            await self.client.delete("v1", "pods", name,
                                     namespace=pod["metadata"].get("namespace"),
                                     preconditions={"uid": pod["metadata"]["uid"]})
        except StatusError as e:
            if e.code in (404, 409):
                return
            raise
        await self.events.emit(sts, "Normal", "SuccessfulDelete",
                               f"delete Pod {name} in StatefulSet {sts['metadata']['name']} "
                               "successful")

    async def _write_status(self, sts: Obj, status: Obj) -> None:
        if not status_changed(sts, status):
            return
        generation = sts["metadata"].get("generation")
        body = {**sts, "status": {**(sts.get("status") or {}), **status,
                                  **({"observedGeneration": generation} if generation else {})}}
        try:
            await self.client.update_status(API_VERSION, "statefulsets", body)
        except StatusError as e:
            if e.code != 404:
                raise

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.pods, CONTROLLER_INDEX, controller_uid_index)
        ensure_index(self.pods, ORPHAN_INDEX, orphan_namespace_index)
        ensure_index(self.sets, NAMESPACE_INDEX, namespace_index)
        ensure_index(self.revisions, CONTROLLER_INDEX, controller_uid_index)
        self.sets.add_handler(on_add=lambda s: self.queue.add(object_key(s)),
                              on_update=lambda old, new: self.queue.add(object_key(new)),
                              on_delete=lambda s: self.queue.add(object_key(s)))
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new),
                              on_delete=self._pod_changed)
        for inf in self._own:
            inf.start()
        self._tasks.append(spawn(self._run(), name="statefulset-workers"))

    async def _run(self) -> None:
        for inf in (self.pods, self.sets, self.revisions):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="statefulset-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
