"""Controller references: who owns an object, and claiming (adopting and releasing) the
objects a selector picks, as client-go's ``ControllerRefManager`` does.

A controller claims from the objects it may own (those it already controls plus the
orphans in its namespace):

- an object it controls that still matches its selector stays its own;
- one it controls that no longer matches is released (its reference removed);
- an orphan that matches is adopted (a controller reference added), unless the owner
  or the object is being deleted, or a fresh read shows the owner is gone;
- anything controlled by another owner is left alone.

::

    claimed = await claim_objects(client, owner, candidates, selector,
                                  api_version="v1", plural="pods",
                                  owner_ref=controller_reference(rs, "apps/v1", "ReplicaSet"),
                                  can_adopt=recheck)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from kybernetes.api.errors import StatusError
from kybernetes.api.meta import controller_of
from kybernetes.api.selectors import LabelSelector, SelectorError, from_label_selector
from kybernetes.client import Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]

CONTROLLER_INDEX = "controller-uid"
"""Informer index: the uid of an object's controller (its ``controller: true`` owner)."""
ORPHAN_INDEX = "orphan-namespace"
"""Informer index: the namespace of each object that has no controller."""

Decision = Literal["own", "adopt", "release", "ignore"]


def controller_reference(owner: Obj, api_version: str, kind: str) -> Obj:
    """The ownerReference a controller puts on what it creates or adopts."""
    md = owner["metadata"]
    return {"apiVersion": api_version, "kind": kind, "name": md["name"], "uid": md["uid"],
            "controller": True, "blockOwnerDeletion": True}


def controller_uid_index(obj: Obj) -> list[str]:
    """Index function for :data:`CONTROLLER_INDEX`."""
    ref = controller_of(obj)
    return [str(ref["uid"])] if ref and ref.get("uid") else []


def orphan_namespace_index(obj: Obj) -> list[str]:
    """Index function for :data:`ORPHAN_INDEX`."""
    if controller_of(obj) is not None:
        return []
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


def labels_of(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def decide(owner: Obj, obj: Obj, selector: LabelSelector) -> Decision:
    """What claiming does with ``obj`` (client-go's ``ClaimObject``), before any write."""
    omd, md = owner["metadata"], obj.get("metadata") or {}
    ref = controller_of(obj)
    matches = selector.matches(labels_of(obj))
    if ref is not None:
        if ref.get("uid") != omd.get("uid"):
            return "ignore"
        if matches:
            return "own"
        return "ignore" if omd.get("deletionTimestamp") else "release"
    if omd.get("deletionTimestamp") or not matches or md.get("deletionTimestamp"):
        return "ignore"
    if omd.get("namespace") and omd.get("namespace") != md.get("namespace"):
        return "ignore"
    return "adopt"


def adopt_patch(owner_ref: Obj, obj: Obj) -> Obj:
    """Strategic merge patch adding ``owner_ref``; the uid guards against a re-created object."""
    return {"metadata": {"ownerReferences": [owner_ref],
                         "uid": (obj.get("metadata") or {}).get("uid")}}


def release_patch(owner_uid: str, obj: Obj) -> Obj:
    """Strategic merge patch removing the reference to ``owner_uid``."""
    return {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
                         "uid": (obj.get("metadata") or {}).get("uid")}}


def owner_can_adopt(client: Client, owner: Obj, api_version: str, plural: str
                    ) -> Callable[[], Awaitable[bool]]:
    """A check, made at most once, that the owner still exists (same uid) and is not being
    deleted, read from the API server rather than the cache (upstream's
    ``RecheckDeletionTimestamp``)."""
    md = owner["metadata"]
    result: list[bool] = []

    async def check() -> bool:
        if not result:
            try:
                fresh = await client.get(api_version, plural, md["name"],
                                         namespace=md.get("namespace"))
            except StatusError as e:
                if e.code != 404:
                    raise
                result.append(False)
            else:
                fmd = fresh.get("metadata") or {}
                result.append(fmd.get("uid") == md.get("uid")
                              and not fmd.get("deletionTimestamp"))
        return result[0]

    return check


async def claim_objects(client: Client, owner: Obj, candidates: Iterable[Obj],
                        selector: LabelSelector, *, api_version: str, plural: str,
                        owner_ref: Obj, can_adopt: Callable[[], Awaitable[bool]]
                        ) -> list[Obj]:
    """The candidates ``owner`` controls after adopting and releasing as :func:`decide`
    says (adopted ones as the API server returned them). A failed adoption or release
    raises, as upstream does, so that the owner is synced again later."""
    claimed: list[Obj] = []
    errors: list[StatusError] = []
    for obj in candidates:
        decision = decide(owner, obj, selector)
        if decision == "own":
            claimed.append(obj)
            continue
        if decision == "ignore":
            continue
        md = obj["metadata"]
        if decision == "adopt" and not await can_adopt():
            continue
        patch = adopt_patch(owner_ref, obj) if decision == "adopt" \
            else release_patch(owner["metadata"]["uid"], obj)
        try:
            updated = await client.patch(api_version, plural, md["name"], patch,
                                         patch_type="strategic",
                                         namespace=md.get("namespace"))
        except StatusError as e:
            if e.code == 404:
                continue
            if e.code == 422 and decision == "release":
                continue  # the object was re-created (uid changed): nothing to release
            errors.append(e)
            continue
        if decision == "adopt":
            claimed.append(updated)
    if errors:
        raise errors[0]
    return claimed


async def claim_pods(client: Client, owner: Obj, pods: Any, *, api_version: str, kind: str,
                     plural: str, keep: Callable[[Obj], bool] | None = None
                     ) -> list[Obj] | None:
    """The pods a workload controls: its own and the orphans of its namespace (from the
    informer ``pods``, indexed by :data:`CONTROLLER_INDEX` and :data:`ORPHAN_INDEX`),
    adopted and released as its selector says; None when the selector is invalid."""
    md = owner["metadata"]
    try:
        selector = from_label_selector((owner.get("spec") or {}).get("selector"))
    except SelectorError as e:
        log.warning("%s %s/%s: invalid selector: %s", kind.lower(), md.get("namespace"),
                    md.get("name"), e)
        return None
    candidates = pods.by_index(CONTROLLER_INDEX, md["uid"]) \
        + pods.by_index(ORPHAN_INDEX, md.get("namespace") or "")
    if keep is not None:
        candidates = [p for p in candidates if keep(p)]
    return await claim_objects(
        client, owner, candidates, selector, api_version="v1", plural="pods",
        owner_ref=controller_reference(owner, api_version, kind),
        can_adopt=owner_can_adopt(client, owner, api_version, plural))
