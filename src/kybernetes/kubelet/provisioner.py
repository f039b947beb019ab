"""The node's half of the ``local-path`` StorageClass: volumes are directories under the
agent's data dir (``DATA_DIR/volumes/pvc-<uid>_<namespace>_<name>``).

A claim that asks for this provisioner (``volume.kubernetes.io/storage-provisioner``) and
was given this node (``volume.kubernetes.io/selected-node``) gets its directory and a
PersistentVolume named ``pvc-<claim uid>``: a ``hostPath`` with a required node affinity
to this node, already naming the claim in its ``claimRef`` (the volume controller then
completes the binding). A Released volume of ours with reclaim policy ``Delete`` has its
directory removed, then the PersistentVolume is deleted; ``Retain`` keeps both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api import storage
from kybernetes.api.errors import StatusError
from kybernetes.client import Client, Result, WorkQueue, run_workers, shared_informer
from kybernetes.client.events import EventRecorder

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class LocalPathProvisioner:
    def __init__(self, client: Client, *, node_name: str, root: Path) -> None:
        self.client = client
        self.node_name = node_name
        self.root = root
        self.claims = shared_informer(client, "v1", "persistentvolumeclaims")
        self.volumes = shared_informer(client, "v1", "persistentvolumes")
        self.queue: WorkQueue[str] = WorkQueue()
        self.events = EventRecorder(client, f"{storage.LOCAL_PATH}_{node_name}",
                                    host=node_name)
        self._tasks: list[asyncio.Task[Any]] = []

    def _mine(self, claim: Obj) -> bool:
        ann = claim["metadata"].get("annotations") or {}
        return ann.get(storage.ANN_STORAGE_PROVISIONER) == storage.LOCAL_PATH and \
            ann.get(storage.ANN_SELECTED_NODE) == self.node_name

    def _on_claim(self, claim: Obj) -> None:
        if self._mine(claim) and not (claim.get("spec") or {}).get("volumeName"):
            md = claim["metadata"]
            self.queue.add(f"claim:{md.get('namespace')}/{md.get('name')}")

    def _on_volume(self, volume: Obj) -> None:
        if (volume["metadata"].get("annotations") or {}).get(storage.ANN_PROVISIONED_BY) == \
                storage.LOCAL_PATH and storage.node_allowed(volume, self.node_name) and \
                (volume.get("status") or {}).get("phase") == "Released":
            self.queue.add(f"volume:{volume['metadata']['name']}")

    def directory(self, claim: Obj) -> Path:
        md = claim["metadata"]
        return self.root / f"pvc-{md['uid']}_{md.get('namespace')}_{md.get('name')}"

    async def reconcile(self, key: str) -> Result | None:
        kind, _, name = key.partition(":")
        try:
            if kind == "claim":
                await self.provision(name)
            else:
                await self.delete(name)
        except StatusError as e:
            if e.code in (404, 409):
                return Result(requeue_after=0.5)
            raise
        return None

    async def provision(self, key: str) -> None:
        claim = self.claims.get(key)
        if claim is None or not self._mine(claim) or claim["metadata"].get("deletionTimestamp") \
                or (claim.get("spec") or {}).get("volumeName"):
            return
        md, spec = claim["metadata"], claim.get("spec") or {}
        name = f"pvc-{md['uid']}"
        if self.volumes.get(name) is not None:
            return
        cls = await self.client.get("storage.k8s.io/v1", "storageclasses",
                                    storage.class_of(claim))
        await self.events.emit(claim, "Normal", "Provisioning",
                               f'External provisioner is provisioning volume for claim '
                               f'"{md.get("namespace")}/{md.get("name")}"')
        path = self.directory(claim)
        await asyncio.to_thread(_make_dir, path)
        request = (((spec.get("resources") or {}).get("requests") or {}).get("storage")) or "0"
        volume: Obj = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name,
                         "annotations": {storage.ANN_PROVISIONED_BY: storage.LOCAL_PATH}},
            "spec": {
                "capacity": {"storage": request},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy") or "Delete",
                "storageClassName": storage.class_of(claim),
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "claimRef": storage.claim_ref(claim),
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": storage.HOSTNAME_LABEL, "operator": "In",
                     "values": [self.node_name]}]}]}},
            }}
        if cls.get("mountOptions"):
            volume["spec"]["mountOptions"] = cls["mountOptions"]
        try:
            await self.client.create("v1", "persistentvolumes", volume)
        except StatusError as e:
            if e.code != 409:
                await self.events.emit(claim, "Warning", "ProvisioningFailed",
                                       f"failed to provision volume with StorageClass "
                                       f'"{storage.class_of(claim)}": {e.message}')
                raise
            return
        await self.events.emit(claim, "Normal", "ProvisioningSucceeded",
                               f"Successfully provisioned volume {name}")

    async def delete(self, name: str) -> None:
        volume = self.volumes.get(name)
        if volume is None or (volume.get("status") or {}).get("phase") != "Released" or \
                (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") != "Delete":
            return
        path = Path(((volume.get("spec") or {}).get("hostPath") or {}).get("path", ""))
        # only ever a directory this provisioner made
        if path.parent == self.root and path.name.startswith("pvc-"):
            await asyncio.to_thread(shutil.rmtree, path, True)
        with contextlib.suppress(StatusError):
            await self.client.delete("v1", "persistentvolumes", name)

    async def start(self) -> None:
        self.claims.add_handler(on_add=self._on_claim,
                                on_update=lambda old, new: self._on_claim(new))
        self.volumes.add_handler(on_add=self._on_volume,
                                 on_update=lambda old, new: self._on_volume(new))
        self.volumes.start()
        self.claims.start()
        self._tasks.append(spawn(self._run(), name=f"local-path:{self.node_name}"))

    async def _run(self) -> None:
        await self.volumes.wait_synced()
        await self.claims.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=1)

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.claims.stop()
        await self.volumes.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)
