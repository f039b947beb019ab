"""ControllerRevisions: the template history of StatefulSets and DaemonSets.

A revision holds its owner's pod template as upstream's patch (``data: {spec: {template:
{..., $patch: replace}}}``), is named ``<owner>-<hash>`` and labelled
``controller-revision-hash: <hash>``. :func:`ensure_revision` finds or creates the
revision for the current template (an existing equal one is re-numbered to the newest,
as upstream does on a roll back); :func:`truncate` deletes the oldest unused ones.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable
from typing import Any

from kybernetes.api.errors import StatusError
from kybernetes.client import Client
from kybernetes.controllers.ownership import controller_reference
from kybernetes.controllers.revisions import template_hash

Obj = dict[str, Any]

API_VERSION = "apps/v1"
PLURAL = "controllerrevisions"
REVISION_HASH_LABEL = "controller-revision-hash"


def revision_data(template: Obj | None) -> Obj:
    return {"spec": {"template": {**copy.deepcopy(template or {}), "$patch": "replace"}}}


def template_of(revision: Obj) -> Obj:
    """The pod template a revision holds."""
    template = dict(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


def number(revision: Obj) -> int:
    return int(revision.get("revision") or 0)


def hash_of(revision: Obj) -> str:
    return str(((revision.get("metadata") or {}).get("labels") or {})
               .get(REVISION_HASH_LABEL, ""))


def new_revision(owner: Obj, template: Obj | None, *, api_version: str, kind: str,
                 revision: int, collision_count: int | None = None) -> Obj:
    """A ControllerRevision of ``owner`` for ``template``."""
    hash_ = template_hash(template, collision_count)
    md = owner["metadata"]
    labels = dict(((template or {}).get("metadata") or {}).get("labels") or {})
    labels[REVISION_HASH_LABEL] = hash_
    return {"apiVersion": API_VERSION, "kind": "ControllerRevision",
            "metadata": {"name": f"{md['name']}-{hash_}", "namespace": md.get("namespace"),
                         "labels": labels,
                         "ownerReferences": [controller_reference(owner, api_version, kind)]},
            "data": revision_data(template), "revision": revision}


def sort_revisions(revisions: Iterable[Obj]) -> list[Obj]:
    return sorted(revisions, key=lambda r: (number(r), r["metadata"].get("name", "")))


def find_equal(revisions: Iterable[Obj], template: Obj | None) -> Obj | None:
    want = template or {}
    equal = [r for r in revisions if template_of(r) == want]
    return sort_revisions(equal)[-1] if equal else None


async def ensure_revision(client: Client, owner: Obj, revisions: list[Obj], *,
                          api_version: str, kind: str) -> Obj:
    """The revision of ``owner``'s current template, created or re-numbered as needed."""
    template = (owner.get("spec") or {}).get("template")
    latest = max((number(r) for r in revisions), default=0)
    found = find_equal(revisions, template)
    md = owner["metadata"]
    if found is not None:
        if number(found) < latest:
            found = await client.patch(API_VERSION, PLURAL, found["metadata"]["name"],
                                       {"revision": latest + 1}, namespace=md.get("namespace"))
        return found
    collision = (owner.get("status") or {}).get("collisionCount")
    rev = new_revision(owner, template, api_version=api_version, kind=kind,
                       revision=latest + 1, collision_count=collision)
    try:
        created: Obj = await client.create(API_VERSION, PLURAL, rev,
                                           namespace=md.get("namespace"))
        return created
    except StatusError as e:
        if e.code != 409:
            raise
    existing: Obj = await client.get(API_VERSION, PLURAL, rev["metadata"]["name"],
                                     namespace=md.get("namespace"))
    if template_of(existing) != (template or {}):
        raise StatusError(409, "AlreadyExists",
                          f'controllerrevisions "{rev["metadata"]["name"]}" exists with '
                          "another template (hash collision)")
    return existing


async def truncate(client: Client, revisions: list[Obj], live: Collection[str], *,
                   limit: int) -> None:
    """Delete the oldest revisions not in ``live`` (names) beyond ``limit``."""
    unused = [r for r in sort_revisions(revisions) if r["metadata"]["name"] not in live]
    for r in unused[:max(0, len(unused) - limit)]:
        try:
            await client.delete(API_VERSION, PLURAL, r["metadata"]["name"],
                                namespace=r["metadata"].get("namespace"))
        except StatusError as e:
            if e.code != 404:
                raise
