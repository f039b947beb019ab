"""CustomResourceDefinitions as registry entries: one :class:`Resource` per served version."""

from __future__ import annotations

from typing import Any

from kybernetes.api.meta import rfc3339
from kybernetes.api.registry import ALL_VERBS, Resource
from kybernetes.api.strategy import Strategy
from kybernetes.api.structural import Compiler

Obj = dict[str, Any]

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


def _set_api_version(api_version: str) -> Any:
    def convert(obj: Obj) -> Obj:
        if obj.get("apiVersion") == api_version:
            return obj
        out = dict(obj)
        out["apiVersion"] = api_version
        return out

    return convert


def storage_version(crd: Obj) -> str:
    for v in (crd.get("spec") or {}).get("versions") or ():
        if v.get("storage"):
            return str(v["name"])
    return ""


def resources_for(crd: Obj, compiler: Compiler) -> list[Resource]:
    """The served versions of ``crd`` as registry entries (storage version first)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    plural = names.get("plural", "")
    kind = names.get("kind", "")
    stored = storage_version(crd)
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    out: list[Resource] = []
    for v in spec.get("versions") or ():
        if not v.get("served", True):
            continue
        version = v["name"]
        subs = v.get("subresources") or {}
        sub_names: list[str] = []
        if "status" in subs:
            sub_names.append("status")
        scale = subs.get("scale")
        if scale is not None:
            sub_names.append("scale")
        schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}
        res = Resource(
            group=group,
            version=version,
            kind=kind,
            plural=plural,
            singular=names.get("singular") or kind.lower(),
            namespaced=namespaced,
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            verbs=ALL_VERBS,
            subresources=tuple(sub_names),
            storage_group_resource=f"{group}/{plural}",
            storage_version=stored or version,
            crd=True,
            schema=compiler.compile(schema, crd=True),
            strategy=Strategy(group, kind, has_status="status" in sub_names, crd=True),
            printer_columns=list(v.get("additionalPrinterColumns") or []),
            scale_paths=(scale.get("specReplicasPath", ".spec.replicas"),
                         scale.get("statusReplicasPath", ".status.replicas"),
                         scale.get("labelSelectorPath", "")) if scale is not None else None,
            openapi=schema,
        )
        if stored and version != stored:
            res.to_storage = _set_api_version(f"{group}/{stored}")
            res.from_storage = _set_api_version(f"{group}/{version}")
        out.append(res)
    out.sort(key=lambda r: r.version != stored)
    return out


def _condition(typ: str, status: str, reason: str, message: str, now: float,
               old: list[Obj]) -> Obj:
    for c in old:
        if c.get("type") == typ and c.get("status") == status:
            return {**c, "reason": reason, "message": message}
    return {"type": typ, "status": status, "lastTransitionTime": rfc3339(now),
            "reason": reason, "message": message}


def established_status(crd: Obj, now: float, *, conflict: str = "") -> Obj:
    """The status the CRD controllers give an accepted (or conflicting) definition."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    status = dict(crd.get("status") or {})
    old = list(status.get("conditions") or [])
    conds: list[Obj] = []
    if conflict:
        conds.append(_condition("NamesAccepted", "False", "MultipleNamesNotAllowed" if False
                                else "NameConflict", conflict, now, old))
        conds.append(_condition("Established", "False", "NotAccepted",
                                "not all names are accepted", now, old))
    else:
        conds.append(_condition("NamesAccepted", "True", "NoConflicts", "no conflicts found",
                                now, old))
        conds.append(_condition("Established", "True", "InitialNamesAccepted",
                                "the initial names have been accepted", now, old))
        status["acceptedNames"] = names
    if (crd.get("metadata") or {}).get("deletionTimestamp"):
        conds.append(_condition("Terminating", "True", "InstanceDeletionInProgress",
                                "CustomResource deletion is in progress", now, old))
    status["conditions"] = conds
    stored = list(status.get("storedVersions") or [])
    sv = storage_version(crd)
    if sv and sv not in stored:
        stored.append(sv)
    status["storedVersions"] = stored
    return status
