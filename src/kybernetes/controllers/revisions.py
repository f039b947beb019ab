"""Pod templates and revisions of a Deployment's ReplicaSets.

The ``pod-template-hash`` (FNV-32a of the template's canonical JSON plus the collision
count, in upstream's safe alphabet), which ReplicaSet holds the Deployment's current
template, revision numbers (``deployment.kubernetes.io/revision``, with
``revision-history`` when a rollback reuses a ReplicaSet), the annotations copied from
the Deployment, and the new ReplicaSet itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import orjson

from kybernetes.controllers.rollout import (
    ANN_DESIRED_REPLICAS,
    ANN_MAX_REPLICAS,
    annotations_of,
    by_creation,
    created,
    int_annotation,
    max_surge,
    name_of,
    replicas,
    set_replicas_annotations,
)

Obj = dict[str, Any]

HASH_LABEL = "pod-template-hash"
ANN_REVISION = "deployment.kubernetes.io/revision"
ANN_REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
ANN_CHANGE_CAUSE = "kubernetes.io/change-cause"
ANN_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ANN_ROLLBACK_TO = "deprecated.deployment.rollback.to"
SKIPPED_ANNOTATIONS = frozenset({ANN_LAST_APPLIED, ANN_REVISION, ANN_REVISION_HISTORY,
                                 ANN_DESIRED_REPLICAS, ANN_MAX_REPLICAS, ANN_ROLLBACK_TO})
"""Deployment annotations not copied to its ReplicaSets (nor back on rollback)."""
MAX_REVISION_HISTORY_CHARS = 2000
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# -- the pod-template hash ---------------------------------------------------------------


def _prune(value: Any) -> Any:
    """Drop nulls and empty maps/lists, which Go's omitempty would not print either."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _prune(v)
            if v is None or v == {} or v == []:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _without_hash(template: Obj | None) -> Obj:
    template = _prune(template or {})
    labels = (template.get("metadata") or {}).get("labels")
    if labels and HASH_LABEL in labels:
        labels = {k: v for k, v in labels.items() if k != HASH_LABEL}
        md = {**template["metadata"], "labels": labels}
        if not labels:
            del md["labels"]
        template = {**template, "metadata": md}
        if not md:
            del template["metadata"]
    return template


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Upstream's ``rand.SafeEncodeString``: no vowels, so no words, and no 0/1/3."""
    return "".join(_ALPHANUMS[ord(ch) % len(_ALPHANUMS)] for ch in text)


def template_hash(template: Obj | None, collision_count: int | None = None) -> str:
    """The ``pod-template-hash`` of a pod template: FNV-32a of its canonical JSON (keys
    sorted, nulls and empties dropped, any hash label ignored) and the collision count."""
    data = orjson.dumps(_without_hash(template), option=orjson.OPT_SORT_KEYS)
    if collision_count is not None:
        data += struct.pack("<I", collision_count & 0xFFFFFFFF)
    return safe_encode(str(fnv32a(data)))


def equal_ignore_hash(a: Obj | None, b: Obj | None) -> bool:
    """Whether two pod templates are the same but for the hash label."""
    return bool(_without_hash(a) == _without_hash(b))


# -- revisions ----------------------------------------------------------------------------


def revision(obj: Obj) -> int:
    return int_annotation(obj, ANN_REVISION) or 0


def max_revision(rss: Iterable[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def by_revision(rss: Iterable[Obj]) -> list[Obj]:
    return sorted(rss, key=lambda rs: (revision(rs), created(rs), name_of(rs)))


def find_new(d: Obj, rss: Iterable[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template is the Deployment's."""
    template = (d.get("spec") or {}).get("template")
    for rs in by_creation(rss):
        if equal_ignore_hash((rs.get("spec") or {}).get("template"), template):
            return rs
    return None


def find_old(rss: Iterable[Obj], new: Obj | None) -> list[Obj]:
    if new is None:
        return list(rss)
    return [rs for rs in rss if rs["metadata"].get("uid") != new["metadata"].get("uid")]


# -- annotations ------------------------------------------------------------------------


def copy_annotations(d: Obj, target: dict[str, str]) -> bool:
    """Copy the Deployment's annotations but the skipped ones; whether any changed."""
    changed = False
    for k, v in annotations_of(d).items():
        if k in SKIPPED_ANNOTATIONS or target.get(k) == v:
            continue
        target[k] = v
        changed = True
    return changed


def set_new_rs_annotations(d: Obj, target: dict[str, str], new_revision: int, *,
                           exists: bool) -> bool:
    """Annotate the new ReplicaSet: the Deployment's annotations, its revision (keeping
    the revisions it had before in ``revision-history`` when a rollback reuses it) and,
    when it is about to be created, the replica annotations."""
    changed = copy_annotations(d, target)
    old_text = target.get(ANN_REVISION)
    try:
        old = int(old_text) if old_text else 0
    except ValueError:
        return changed
    if old < new_revision:
        target[ANN_REVISION] = str(new_revision)
        changed = True
        if old_text:
            history = target.get(ANN_REVISION_HISTORY, "")
            entries = history.split(",") if history else []
            length = len(history) + len(old_text) + 1
            while entries and length > MAX_REVISION_HISTORY_CHARS:
                length -= len(entries.pop(0)) + 1
            if length <= MAX_REVISION_HISTORY_CHARS:
                target[ANN_REVISION_HISTORY] = ",".join([*entries, old_text])
    if not exists and set_replicas_annotations(target, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


def new_replicaset(d: Obj, pod_hash: str, size: int, owner_ref: Obj) -> Obj:
    """The ReplicaSet for the Deployment's current template, named ``<deploy>-<hash>``."""
    md, spec = d["metadata"], d.get("spec") or {}
    template = dict(spec.get("template") or {})
    tmd = dict(template.get("metadata") or {})
    tmd["labels"] = {**(tmd.get("labels") or {}), HASH_LABEL: pod_hash}
    template["metadata"] = tmd
    selector = dict(spec.get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
    rs_spec: Obj = {"replicas": size, "selector": selector, "template": template}
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{md['name']}-{pod_hash}", "namespace": md.get("namespace"),
                         "labels": dict(tmd["labels"]), "ownerReferences": [owner_ref]},
            "spec": rs_spec}
