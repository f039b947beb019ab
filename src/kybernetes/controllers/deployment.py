"""The Deployment controller: rolls a Deployment's pod template out through ReplicaSets.

For each Deployment (a key ``namespace/name``) it claims ReplicaSets as the ReplicaSet
controller claims pods, then takes one step, as upstream's ``syncDeployment`` does:

- being deleted → only the status is kept current;
- paused, or ``spec.replicas`` changed (a ReplicaSet's ``desired-replicas`` annotation
  differs) → scale: the only active ReplicaSet takes all replicas, otherwise the change
  is shared among them in proportion (:func:`rollout.proportional_targets`);
- ``RollingUpdate`` → create the ReplicaSet of the current template
  (``<name>-<pod-template-hash>``, revision = the highest old one + 1), grow it within
  ``maxSurge``, shrink old ones while ``replicas - maxUnavailable`` stay available;
- ``Recreate`` → scale old ReplicaSets to zero, wait until their pods are gone, then
  create and scale up the new one.

Then the status: counts, ``Available``, and ``Progressing`` against
``progressDeadlineSeconds`` (a rollout that stops moving is looked at again when its
deadline passes). Old ReplicaSets scaled to zero beyond ``revisionHistoryLimit`` are
deleted. Scaling is reported as ``ScalingReplicaSet`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
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
from kybernetes.controllers import revisions, rollout, rolloutstatus
from kybernetes.controllers.ownership import (
    CONTROLLER_INDEX,
    ORPHAN_INDEX,
    claim_objects,
    controller_reference,
    controller_uid_index,
    labels_of,
    orphan_namespace_index,
    owner_can_adopt,
)
from kybernetes.controllers.replicaset import ensure_index
from kybernetes.controllers.rollout import replicas
from kybernetes.controllers.rolloutstatus import PROGRESSING

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "deployment-controller"
API_VERSION = "apps/v1"
KIND = "Deployment"


class DeploymentController:
    def __init__(self, client: Client, *, workers: int = 4, clock: Clock = SYSTEM_CLOCK,
                 pods: Informer | None = None, replicasets: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.clock = clock
        self.deployments = Informer(client, API_VERSION, "deployments")
        self.replicasets = replicasets or shared_informer(client, API_VERSION, "replicasets")
        self.pods = pods or shared_informer(client, "v1", "pods")
        self._own = [self.deployments] + [
            inf for inf, given in ((self.replicasets, replicasets), (self.pods, pods))
            if given is None]
        self.queue: WorkQueue[str] = WorkQueue(name="deployment")
        self.events = EventRecorder(client, COMPONENT)
        self._tasks: list[asyncio.Task[Any]] = []

    # -- events in -----------------------------------------------------------------------

    def _deployment_of(self, obj: Obj, ref: Obj | None) -> str | None:
        if ref is None or ref.get("kind") != KIND or \
                not str(ref.get("apiVersion", "")).startswith("apps/"):
            return None
        key = f"{obj['metadata'].get('namespace')}/{ref.get('name')}"
        d = self.deployments.get(key)
        if d is None or d["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def _matching(self, rs: Obj) -> list[str]:
        labels = labels_of(rs)
        out = []
        for d in self.deployments.by_index(NAMESPACE_INDEX,
                                           rs["metadata"].get("namespace") or ""):
            try:
                selector = from_label_selector((d.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if not selector.empty and selector.matches(labels):
                out.append(object_key(d))
        return out

    def _rs_added(self, rs: Obj) -> None:
        if rs["metadata"].get("deletionTimestamp"):
            self._rs_deleted(rs)
            return
        ref = controller_of(rs)
        if ref is not None:
            key = self._deployment_of(rs, ref)
            if key is not None:
                self.queue.add(key)
            return
        for key in self._matching(rs):
            self.queue.add(key)

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        ref, old_ref = controller_of(new), controller_of(old)
        if old_ref is not None and (ref is None or ref.get("uid") != old_ref.get("uid")):
            key = self._deployment_of(old, old_ref)
            if key is not None:
                self.queue.add(key)
        if ref is not None:
            key = self._deployment_of(new, ref)
            if key is not None:
                self.queue.add(key)
            return
        if labels_of(old) != labels_of(new) or old_ref is not None:
            for key in self._matching(new):
                self.queue.add(key)

    def _rs_deleted(self, rs: Obj) -> None:
        key = self._deployment_of(rs, controller_of(rs))
        if key is not None:
            self.queue.add(key)

    def _pod_deleted(self, pod: Obj) -> None:
        """A Recreate rollout waits for the old pods to be gone."""
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        key = self._deployment_of(rs, controller_of(rs)) if rs is not None else None
        d = self.deployments.get(key) if key is not None else None
        if d is not None and ((d.get("spec") or {}).get("strategy") or {}).get("type") \
                == "Recreate":
            self.queue.add(object_key(d))

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        cached = self.deployments.get(key)
        if cached is None:
            return None
        d = copy.deepcopy(cached)
        d.update(apiVersion=API_VERSION, kind=KIND)
        d.setdefault("status", {})
        try:
            selector = from_label_selector((d.get("spec") or {}).get("selector"))
        except SelectorError as e:
            log.warning("deployment %s: invalid selector: %s", key, e)
            return None
        if selector.empty:
            await self.events.emit(d, "Warning", "SelectingAll", "This deployment is "
                                   "selecting all pods. A non-empty selector is required.")
            if rollout.status_count(d, "observedGeneration") < \
                    int(d["metadata"].get("generation") or 0):
                d["status"]["observedGeneration"] = d["metadata"]["generation"]
                await self._write_status(d)
            return None
        md = d["metadata"]
        candidates = self.replicasets.by_index(CONTROLLER_INDEX, md["uid"]) + \
            self.replicasets.by_index(ORPHAN_INDEX, md.get("namespace") or "")
        try:
            rss = await claim_objects(
                self.client, d, candidates, selector, api_version=API_VERSION,
                plural="replicasets", owner_ref=controller_reference(d, API_VERSION, KIND),
                can_adopt=owner_can_adopt(self.client, d, API_VERSION, "deployments"))
            return await self._sync(d, rss)
        except StatusError as e:
            if e.code == 404:
                return None
            if e.code == 409:  # a stale cache: look again once the informer caught up
                log.debug("deployment %s: %s", key, e.message)
                return Result(requeue=True)
            raise

    async def _sync(self, d: Obj, rss: list[Obj]) -> Result | None:
        if d["metadata"].get("deletionTimestamp"):
            new, olds = await self._new_and_old(d, rss, create=False)
            await self._sync_status(d, [*olds, new], new)
            return None
        await self._check_paused(d)
        if (d.get("spec") or {}).get("paused"):
            return await self._scale_and_sync(d, rss)
        new, olds = await self._new_and_old(d, rss, create=False)
        if rollout.is_scaling_event(d, new, olds):
            return await self._scale_and_sync(d, rss)
        if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
            return await self._rollout_recreate(d, rss)
        return await self._rollout_rolling(d, rss)

    # -- the new and old ReplicaSets -------------------------------------------------------

    async def _new_and_old(self, d: Obj, rss: list[Obj], *, create: bool
                           ) -> tuple[Obj | None, list[Obj]]:
        """The ReplicaSet of the current template (annotated with the next revision;
        created when ``create``) and the others (upstream's
        ``getAllReplicaSetsAndSyncRevision``)."""
        existing = revisions.find_new(d, rss)
        olds = revisions.find_old(rss, existing)
        new_revision = revisions.max_revision(olds) + 1
        if existing is not None:
            new = await self._sync_existing_new(d, existing, new_revision)
            rss[rss.index(existing)] = new  # a second look in this sync sees the update
            return new, olds
        if not create:
            return None, olds
        new = await self._create_new(d, olds, new_revision)
        rss.append(new)
        return new, olds

    async def _sync_existing_new(self, d: Obj, rs: Obj, new_revision: int) -> Obj:
        spec = d.get("spec") or {}
        updated = copy.deepcopy(rs)
        ann = updated["metadata"].setdefault("annotations", {})
        changed = revisions.set_new_rs_annotations(d, ann, new_revision, exists=True)
        if (updated["spec"].get("minReadySeconds") or 0) != (spec.get("minReadySeconds") or 0):
            updated["spec"]["minReadySeconds"] = spec.get("minReadySeconds") or 0
            changed = True
        if changed:
            rs = await self.client.update(API_VERSION, "replicasets",
                                          {**updated, "apiVersion": API_VERSION,
                                           "kind": "ReplicaSet"})
        needs_update = self._set_revision(d, rollout.annotations_of(rs).get(revisions.ANN_REVISION))
        if rolloutstatus.has_progress_deadline(d) and \
                rolloutstatus.get_condition(d["status"], PROGRESSING) is None:
            rolloutstatus.set_condition(d["status"], rolloutstatus.new_condition(
                PROGRESSING, "True", rolloutstatus.FOUND_NEW_RS,
                f'Found new replica set "{rs["metadata"]["name"]}"', self.clock.now()))
            needs_update = True
        if needs_update:
            await self._write_status(d)
        return rs

    async def _create_new(self, d: Obj, olds: list[Obj], new_revision: int) -> Obj:
        md = d["metadata"]
        collisions = d["status"].get("collisionCount")
        pod_hash = revisions.template_hash((d.get("spec") or {}).get("template"), collisions)
        rs = revisions.new_replicaset(d, pod_hash, 0, controller_reference(d, API_VERSION, KIND))
        rs["spec"]["replicas"] = rollout.new_rs_new_replicas(d, [*olds, rs], rs)
        revisions.set_new_rs_annotations(d, rs["metadata"].setdefault("annotations", {}),
                                       new_revision, exists=False)
        name = rs["metadata"]["name"]
        now = self.clock.now()
        try:
            created = await self.client.create(API_VERSION, "replicasets", rs,
                                               namespace=md.get("namespace"))
            already = False
        except StatusError as e:
            if e.code != 409 or e.reason != "AlreadyExists":
                if rolloutstatus.has_progress_deadline(d):
                    rolloutstatus.set_condition(d["status"], rolloutstatus.new_condition(
                        PROGRESSING, "False", rolloutstatus.FAILED_RS_CREATE,
                        f'Failed to create new replica set "{name}": {e.message}', now))
                    await self._write_status(d)
                raise
            found = self.replicasets.get(f"{md.get('namespace')}/{name}") or \
                await self.client.get(API_VERSION, "replicasets", name,
                                      namespace=md.get("namespace"))
            ref = controller_of(found)
            if ref is None or ref.get("uid") != md["uid"] or not revisions.equal_ignore_hash(
                    (found.get("spec") or {}).get("template"), d["spec"].get("template")):
                # another template hashed to this name: hash again with one more collision
                d["status"]["collisionCount"] = int(collisions or 0) + 1
                await self._write_status(d)
                raise
            created, already = found, True
        if not already and replicas(created) > 0:
            await self.events.emit(d, "Normal", "ScalingReplicaSet",
                                   f"Scaled up replica set {name} from 0 to "
                                   f"{replicas(created)}")
        needs_update = self._set_revision(d, str(new_revision))
        if not already and rolloutstatus.has_progress_deadline(d):
            rolloutstatus.set_condition(d["status"], rolloutstatus.new_condition(
                PROGRESSING, "True", rolloutstatus.NEW_RS_CREATED,
                f'Created new replica set "{name}"', now))
            needs_update = True
        if needs_update:
            await self._write_status(d)
        return created

    @staticmethod
    def _set_revision(d: Obj, revision: str | None) -> bool:
        ann = d["metadata"].setdefault("annotations", {})
        if revision is None or ann.get(revisions.ANN_REVISION) == revision:
            return False
        ann[revisions.ANN_REVISION] = revision
        return True

    # -- scaling -------------------------------------------------------------------------------

    async def _scale_rs(self, rs: Obj, size: int, d: Obj, *, annotate: bool = False
                        ) -> tuple[Obj, bool]:
        """Give ``rs`` ``size`` replicas and the Deployment's replica annotations; with
        ``annotate`` false nothing is written when the size is already right."""
        desired, most = replicas(d), replicas(d) + rollout.max_surge(d)
        resize = replicas(rs) != size
        if not resize and not (annotate and
                               rollout.replicas_annotations_need_update(rs, desired, most)):
            return rs, False
        body = copy.deepcopy(rs)
        body.update(apiVersion=API_VERSION, kind="ReplicaSet")
        body["spec"]["replicas"] = size
        rollout.set_replicas_annotations(body["metadata"].setdefault("annotations", {}),
                                         desired, most)
        updated = await self.client.update(API_VERSION, "replicasets", body)
        if resize:
            direction = "up" if size > replicas(rs) else "down"
            await self.events.emit(d, "Normal", "ScalingReplicaSet",
                                   f"Scaled {direction} replica set {rs['metadata']['name']} "
                                   f"from {replicas(rs)} to {size}")
        return updated, resize

    async def _scale(self, d: Obj, new: Obj | None, olds: list[Obj]) -> None:
        target = rollout.find_active_or_latest(new, olds)
        if target is not None:
            await self._scale_rs(target, replicas(d), d, annotate=True)
            return
        if rollout.is_saturated(d, new):
            for old in rollout.active(olds):
                await self._scale_rs(old, 0, d)
            return
        if ((d.get("spec") or {}).get("strategy") or {}).get("type") != "Recreate":
            for rs, size in rollout.proportional_targets(d, new, olds):
                await self._scale_rs(rs, size, d, annotate=True)

    async def _scale_and_sync(self, d: Obj, rss: list[Obj]) -> Result | None:
        """Scaling only: a paused Deployment, or one whose replicas changed."""
        new, olds = await self._new_and_old(d, rss, create=False)
        await self._scale(d, new, olds)
        if (d.get("spec") or {}).get("paused"):
            await self._cleanup(d, olds)
        await self._sync_status(d, [*olds, new], new)
        return None

    # -- rollouts ----------------------------------------------------------------------------

    async def _rollout_rolling(self, d: Obj, rss: list[Obj]) -> Result | None:
        new, olds = await self._new_and_old(d, rss, create=True)
        assert new is not None
        new, scaled = await self._scale_rs(new, rollout.new_rs_target(d, [*olds, new], new), d)
        if scaled:
            return await self._sync_rollout(d, [*olds, new], new)
        scaled_down = False
        for rs, size in rollout.old_rs_targets(d, [*olds, new], rollout.active(olds), new):
            updated, scaled = await self._scale_rs(rs, size, d)
            olds = [updated if o is rs else o for o in olds]
            scaled_down = scaled_down or scaled
        if scaled_down:
            return await self._sync_rollout(d, [*olds, new], new)
        if rolloutstatus.is_complete(d, d["status"]):
            await self._cleanup(d, olds)
        return await self._sync_rollout(d, [*olds, new], new)

    async def _rollout_recreate(self, d: Obj, rss: list[Obj]) -> Result | None:
        new, olds = await self._new_and_old(d, rss, create=False)
        scaled_down = False
        for rs in rollout.active(olds):
            _, scaled = await self._scale_rs(rs, 0, d)
            scaled_down = scaled_down or scaled
        if scaled_down or self._old_pods_running(new, olds):
            return await self._sync_rollout(d, [*olds, new], new)
        if new is None:
            new, olds = await self._new_and_old(d, rss, create=True)
            assert new is not None
        new, _ = await self._scale_rs(new, replicas(d), d)
        if rolloutstatus.is_complete(d, d["status"]):
            await self._cleanup(d, olds)
        return await self._sync_rollout(d, [*olds, new], new)

    def _old_pods_running(self, new: Obj | None, olds: list[Obj]) -> bool:
        if rollout.total(olds, "replicas") > 0:
            return True
        for rs in olds:
            for pod in self.pods.by_index(CONTROLLER_INDEX, rs["metadata"]["uid"]):
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    return True
        return False

    async def _cleanup(self, d: Obj, olds: list[Obj]) -> None:
        """Delete the oldest unused ReplicaSets beyond ``revisionHistoryLimit``."""
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in olds if not rs["metadata"].get("deletionTimestamp")]
        surplus = len(alive) - int(limit)
        for rs in revisions.by_revision(alive)[:max(0, surplus)]:
            md = rs["metadata"]
            if rollout.status_count(rs, "replicas") or replicas(rs) or \
                    int(md.get("generation") or 0) > rollout.status_count(rs, "observedGeneration"):
                continue
            try:
                await self.client.delete(API_VERSION, "replicasets", md["name"],
                                         namespace=md.get("namespace"))
            except StatusError as e:
                if e.code != 404:
                    raise

    # -- status -------------------------------------------------------------------------------

    async def _check_paused(self, d: Obj) -> None:
        if not rolloutstatus.has_progress_deadline(d):
            return
        cond = rolloutstatus.get_condition(d["status"], PROGRESSING)
        if cond is not None and cond.get("reason") == rolloutstatus.TIMED_OUT:
            return
        paused_cond = cond is not None and cond.get("reason") == rolloutstatus.PAUSED
        paused = bool((d.get("spec") or {}).get("paused"))
        if paused == paused_cond:
            return
        reason, message = (rolloutstatus.PAUSED, "Deployment is paused") if paused else \
            (rolloutstatus.RESUMED, "Deployment is resumed")
        rolloutstatus.set_condition(d["status"], rolloutstatus.new_condition(
            PROGRESSING, "Unknown", reason, message, self.clock.now()))
        await self._write_status(d)

    async def _sync_status(self, d: Obj, all_rss: list[Obj | None], new: Obj | None) -> None:
        status = rolloutstatus.calculate_status(all_rss, new, d, self.clock.now())
        if not rolloutstatus.status_equal(d["status"], status):
            d["status"] = status
            await self._write_status(d)

    async def _sync_rollout(self, d: Obj, all_rss: list[Obj | None], new: Obj | None
                            ) -> Result | None:
        now = self.clock.now()
        status = rolloutstatus.rollout_status(all_rss, new, d, now)
        if rolloutstatus.status_equal(d["status"], status):
            after = rolloutstatus.stuck_requeue_after(d, status, now)
            # timestamps are whole seconds, and the deadline must have passed
            return Result(requeue_after=after + 1.0) if after is not None else None
        d["status"] = status
        await self._write_status(d)
        return None

    async def _write_status(self, d: Obj) -> None:
        """PUT the status (and the revision annotation, which the status strategy takes)."""
        updated = await self.client.update_status(API_VERSION, "deployments", d)
        d["metadata"]["resourceVersion"] = updated["metadata"].get("resourceVersion")

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.deployments, NAMESPACE_INDEX, namespace_index)
        ensure_index(self.replicasets, CONTROLLER_INDEX, controller_uid_index)
        ensure_index(self.replicasets, ORPHAN_INDEX, orphan_namespace_index)
        ensure_index(self.pods, CONTROLLER_INDEX, controller_uid_index)
        enqueue = self.queue.add
        self.deployments.add_handler(on_add=lambda d: enqueue(object_key(d)),
                                     on_update=lambda old, new: enqueue(object_key(new)),
                                     on_delete=lambda d: enqueue(object_key(d)))
        self.replicasets.add_handler(on_add=self._rs_added, on_update=self._rs_updated,
                                     on_delete=self._rs_deleted)
        self.pods.add_handler(on_delete=self._pod_deleted)
        for inf in (self.deployments, self.replicasets, self.pods):
            inf.start()
        self._tasks.append(spawn(self._run(), name="deployment-workers"))

    async def _run(self) -> None:
        for inf in (self.deployments, self.replicasets, self.pods):
            await inf.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="deployment-controller")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        for inf in self._own:
            await inf.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()
