"""The persistent volume controller: binds claims to volumes and keeps their phases.

- A Pending claim binds to the volume :func:`kybernetes.api.storage.best_match` picks:
  the volume's ``claimRef`` is set first, then the claim's ``volumeName``; both become
  ``Bound``, the claim with the volume's capacity and access modes.
- With no volume to bind, a claim of a StorageClass whose ``volumeBindingMode`` is
  ``WaitForFirstConsumer`` waits for a pod: once a pod using it has a node, the claim is
  annotated ``volume.kubernetes.io/selected-node`` (the scheduler's job in Kubernetes; done
  here for pods that name their node). Then ``volume.kubernetes.io/storage-provisioner``
  asks the class's provisioner for a volume (for ``local-path``: the node agent).
- A volume whose claim is gone is ``Released`` (its provisioner deletes it if its reclaim
  policy is ``Delete``); a bound claim whose volume is gone is ``Lost``.
- The protection finalizers: a claim being deleted keeps ``kubernetes.io/pvc-protection``
  while a pod that has not ended uses it; a volume keeps ``kubernetes.io/pv-protection``
  while it is bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api import storage
from kybernetes.api.errors import StatusError
from kybernetes.client import Client, Result, WorkQueue, run_workers, shared_informer
from kybernetes.client.events import EventRecorder

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "persistentvolume-controller"


class PersistentVolumeController:
    def __init__(self, client: Client, *, workers: int = 2) -> None:
        self.client = client
        self.workers = workers
        self.claims = shared_informer(client, "v1", "persistentvolumeclaims")
        self.volumes = shared_informer(client, "v1", "persistentvolumes")
        self.pods = shared_informer(client, "v1", "pods")
        self.classes = shared_informer(client, "storage.k8s.io/v1", "storageclasses")
        self.nodes = shared_informer(client, "v1", "nodes")
        self.queue: WorkQueue[str] = WorkQueue()
        self.events = EventRecorder(client, COMPONENT)
        self._tasks: list[asyncio.Task[Any]] = []

    # -- events in ---------------------------------------------------------------------

    def _claim_key(self, claim: Obj) -> None:
        md = claim["metadata"]
        self.queue.add(f"claim:{md.get('namespace')}/{md.get('name')}")

    def _claim_changed(self, claim: Obj) -> None:
        self._claim_key(claim)
        volume = (claim.get("spec") or {}).get("volumeName")
        if volume:
            self.queue.add(f"volume:{volume}")

    def _volume_changed(self, volume: Obj) -> None:
        self.queue.add(f"volume:{volume['metadata']['name']}")
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        if ref.get("name"):
            self.queue.add(f"claim:{ref.get('namespace')}/{ref.get('name')}")

    def _pod_changed(self, pod: Obj) -> None:
        ns = pod["metadata"].get("namespace")
        for name in storage.claims_of(pod):
            self.queue.add(f"claim:{ns}/{name}")

    async def reconcile(self, key: str) -> Result | None:
        kind, _, name = key.partition(":")
        try:
            if kind == "claim":
                return await self.sync_claim(name)
            return await self.sync_volume(name)
        except StatusError as e:
            if e.code in (404, 409):
                return Result(requeue_after=0.2)
            raise

    # -- claims ------------------------------------------------------------------------

    def _users(self, claim: Obj) -> list[Obj]:
        md = claim["metadata"]
        return [p for p in self.pods.list()
                if p["metadata"].get("namespace") == md.get("namespace")
                and md.get("name") in storage.claims_of(p)
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]

    async def sync_claim(self, key: str) -> Result | None:
        claim = self.claims.get(key)
        if claim is None:
            return None
        md, spec = claim["metadata"], claim.get("spec") or {}
        if md.get("deletionTimestamp"):
            if storage.PVC_PROTECTION in (md.get("finalizers") or []) and \
                    not self._users(claim):
                await self._drop_finalizer("persistentvolumeclaims", claim,
                                           storage.PVC_PROTECTION)
            return None
        phase = (claim.get("status") or {}).get("phase")
        if spec.get("volumeName"):
            volume = self.volumes.get(spec["volumeName"])
            if volume is None:
                if phase == "Bound":
                    await self._claim_status(claim, "Lost")
                    await self.events.emit(claim, "Warning", "ClaimLost",
                                           "Bound claim has lost reference to "
                                           "PersistentVolume. Data on the volume is lost!")
                return None
            ref = (volume.get("spec") or {}).get("claimRef")
            if ref and not storage.refers_to(ref, claim):
                if phase != "Lost":
                    await self._claim_status(claim, "Lost")
                    await self.events.emit(claim, "Warning", "ClaimMisbound",
                                           "Two claims are bound to the same volume, this one "
                                           "is bound incorrectly")
                return None
            await self._bind(volume, claim)
            return None
        volume = storage.best_match(self._bindable(claim), claim)
        if volume is not None:
            await self._bind(volume, claim)
            return None
        return await self._wait_or_provision(claim)

    def _bindable(self, claim: Obj) -> list[Obj]:
        """Volumes this controller may bind the claim to. A WaitForFirstConsumer claim
        waits for the scheduler: until it picks a node (``selected-node``) only a volume
        the scheduler pre-bound to it (``claimRef``) will do; then only volumes usable on
        that node."""
        volumes = self.volumes.list()
        cls = self.classes.get(storage.class_of(claim) or "")
        if cls is None or cls.get("volumeBindingMode") != "WaitForFirstConsumer":
            return volumes
        node = ((claim["metadata"].get("annotations") or {}).get(storage.ANN_SELECTED_NODE)
                or next((p["spec"]["nodeName"] for p in self._users(claim)
                         if (p.get("spec") or {}).get("nodeName")), ""))
        if not node:
            return [v for v in volumes
                    if storage.refers_to((v.get("spec") or {}).get("claimRef"), claim)]
        labels = (self.nodes.get(node) or {}).get("metadata", {}).get("labels") or {}
        return [v for v in volumes if storage.node_allowed(v, node, labels)]

    async def _wait_or_provision(self, claim: Obj) -> Result | None:
        md = claim["metadata"]
        annotations = md.get("annotations") or {}
        class_name = storage.class_of(claim)
        if not class_name:
            await self._claim_status(claim, "Pending")
            await self.events.emit(claim, "Normal", "FailedBinding",
                                   "no persistent volumes available for this claim and no "
                                   "storage class is set")
            return None
        cls = self.classes.get(class_name)
        if cls is None:
            await self._claim_status(claim, "Pending")
            await self.events.emit(claim, "Warning", "ProvisioningFailed",
                                   f'storageclass.storage.k8s.io "{class_name}" not found')
            return Result(requeue_after=5.0)
        provisioner = str(cls.get("provisioner") or "")
        patch: dict[str, str] = {}
        if not annotations.get(storage.ANN_SELECTED_NODE):
            node = next((p["spec"]["nodeName"] for p in self._users(claim)
                         if (p.get("spec") or {}).get("nodeName")), "")
            if not node and cls.get("volumeBindingMode") == "WaitForFirstConsumer":
                await self._claim_status(claim, "Pending")
                await self.events.emit(claim, "Normal", "WaitForFirstConsumer",
                                       "waiting for first consumer to be created before "
                                       "binding")
                return None
            if not node and provisioner == storage.LOCAL_PATH:
                # Immediate binding of a node-local volume: the first Ready node
                node = next((n["metadata"]["name"] for n in sorted(
                    self.nodes.list(), key=lambda n: n["metadata"].get("name", ""))
                    if _ready(n)), "")
                if not node:
                    await self._claim_status(claim, "Pending")
                    return Result(requeue_after=5.0)
            if node:
                patch[storage.ANN_SELECTED_NODE] = node
        if annotations.get(storage.ANN_STORAGE_PROVISIONER) != provisioner:
            patch[storage.ANN_STORAGE_PROVISIONER] = provisioner
            patch[storage.ANN_STORAGE_PROVISIONER_BETA] = provisioner
        if patch:
            await self.client.patch("v1", "persistentvolumeclaims", md["name"], {
                "metadata": {"annotations": patch,
                             "resourceVersion": md.get("resourceVersion")}},
                namespace=md.get("namespace"))
        await self._claim_status(claim, "Pending")
        await self.events.emit(claim, "Normal", "ExternalProvisioning",
                               f"Waiting for a volume to be created either by the external "
                               f"provisioner '{provisioner}' or manually by the system "
                               f"administrator. If volume creation is delayed, please verify "
                               f"that the provisioner is running and correctly registered.")
        return None

    async def _bind(self, volume: Obj, claim: Obj) -> None:
        vmd, cmd = volume["metadata"], claim["metadata"]
        vspec = volume.get("spec") or {}
        ref = vspec.get("claimRef")
        if not ref or not ref.get("uid"):
            ann = {} if ref else {storage.ANN_BOUND_BY_CONTROLLER: "yes"}
            volume = await self.client.patch("v1", "persistentvolumes", vmd["name"], {
                "metadata": {"resourceVersion": vmd.get("resourceVersion"),
                             **({"annotations": ann} if ann else {})},
                "spec": {"claimRef": storage.claim_ref(claim)}})
        if (volume.get("status") or {}).get("phase") != "Bound":
            await self.client.patch("v1", "persistentvolumes", vmd["name"],
                                    {"status": {"phase": "Bound"}}, subresource="status")
        cspec = claim.get("spec") or {}
        ann = dict(cmd.get("annotations") or {})
        if cspec.get("volumeName") != vmd["name"] or ann.get(storage.ANN_BIND_COMPLETED) != "yes":
            patch_ann = {storage.ANN_BIND_COMPLETED: "yes"}
            if not cspec.get("volumeName"):
                patch_ann[storage.ANN_BOUND_BY_CONTROLLER] = "yes"
            claim = await self.client.patch("v1", "persistentvolumeclaims", cmd["name"], {
                "metadata": {"annotations": patch_ann,
                             "resourceVersion": cmd.get("resourceVersion")},
                "spec": {"volumeName": vmd["name"]}}, namespace=cmd.get("namespace"))
        status = claim.get("status") or {}
        want = {"phase": "Bound", "accessModes": vspec.get("accessModes") or [],
                "capacity": vspec.get("capacity") or {}}
        if any(status.get(k) != v for k, v in want.items()):
            await self.client.patch("v1", "persistentvolumeclaims", cmd["name"],
                                    {"status": want}, namespace=cmd.get("namespace"),
                                    subresource="status")

    async def _claim_status(self, claim: Obj, phase: str) -> None:
        if (claim.get("status") or {}).get("phase") == phase:
            return
        md = claim["metadata"]
        await self.client.patch("v1", "persistentvolumeclaims", md["name"],
                                {"status": {"phase": phase}}, namespace=md.get("namespace"),
                                subresource="status")

    # -- volumes -----------------------------------------------------------------------

    async def sync_volume(self, name: str) -> Result | None:
        volume = self.volumes.get(name)
        if volume is None:
            return None
        md, spec = volume["metadata"], volume.get("spec") or {}
        phase = (volume.get("status") or {}).get("phase")
        ref = spec.get("claimRef") or {}
        claim = self.claims.get(f"{ref.get('namespace')}/{ref.get('name')}") if ref else None
        bound = claim is not None and storage.refers_to(ref, claim)
        if md.get("deletionTimestamp"):
            if storage.PV_PROTECTION in (md.get("finalizers") or []) and \
                    not (bound and claim is not None and
                         (claim.get("spec") or {}).get("volumeName") == name):
                await self._drop_finalizer("persistentvolumes", volume, storage.PV_PROTECTION)
            return None
        if not ref:
            want = "Available"
        elif not bound and ref.get("uid"):
            want = "Released"
        elif not bound:
            want = "Available"  # pre-bound to a claim that does not exist yet
        elif claim is not None and (claim.get("spec") or {}).get("volumeName") == name:
            want = "Bound"
        else:
            want = phase or "Available"  # the claim's side is being bound
        if phase != want:
            await self.client.patch("v1", "persistentvolumes", name,
                                    {"status": {"phase": want}}, subresource="status")
            if want == "Released" and spec.get("persistentVolumeReclaimPolicy") == "Delete" \
                    and (md.get("annotations") or {}).get(storage.ANN_PROVISIONED_BY) is None:
                await self.events.emit(volume, "Warning", "VolumeFailedDelete",
                                       "error getting deleter volume plugin for volume "
                                       f'"{name}": no deletable volume plugin matched')
        return None

    # -- helpers -----------------------------------------------------------------------

    async def _drop_finalizer(self, plural: str, obj: Obj, finalizer: str) -> None:
        md = obj["metadata"]
        await self.client.patch("v1", plural, md["name"], {"metadata": {
            "finalizers": [f for f in md.get("finalizers") or [] if f != finalizer],
            "resourceVersion": md.get("resourceVersion")}}, namespace=md.get("namespace"))

    async def start(self) -> None:
        self.claims.add_handler(on_add=self._claim_changed,
                                on_update=lambda old, new: self._claim_changed(new),
                                on_delete=self._claim_changed)
        self.volumes.add_handler(on_add=self._volume_changed,
                                 on_update=lambda old, new: self._volume_changed(new),
                                 on_delete=self._volume_changed)
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new),
                              on_delete=self._pod_changed)
        for inf in (self.classes, self.nodes, self.volumes, self.pods, self.claims):
            inf.start()
        self._tasks.append(spawn(self._run(), name="persistentvolume-workers"))

    async def _run(self) -> None:
        for inf in (self.classes, self.nodes, self.volumes, self.pods, self.claims):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers)

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in (self.claims, self.volumes, self.pods, self.classes, self.nodes):
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()


def _ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])
