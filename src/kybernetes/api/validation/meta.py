"""Object metadata validation (apimachinery's ``ValidateObjectMeta`` and its update twin).

The API server calls these for every kind, built-in or custom::

    errs = validate_metadata("apps", "Deployment", obj, namespaced=True)      # on create
    errs = validate_metadata_update(new, old)                                 # on update

``validate_metadata_update`` already re-checks labels, annotations, owner references and
finalizers, so call it *instead of* ``validate_metadata`` on updates.
"""

from __future__ import annotations

from typing import Any

from kybernetes.api.errors import FieldError
from kybernetes.api.validation.common import (
    Errors,
    NameFn,
    Obj,
    child,
    dicts_at,
    index,
    invalid_each,
    is_qualified_name,
    name_is_dns1035_label,
    name_is_dns_label,
    name_is_dns_subdomain,
    name_is_path_segment,
    validate_immutable,
)
from kybernetes.api.validation.labels import validate_annotations, validate_labels

_RBAC = "rbac.authorization.k8s.io"

# How each kind's metadata.name is checked; everything else is a DNS-1123 subdomain.
NAME_RULES: dict[tuple[str, str], NameFn] = {
    ("", "Namespace"): name_is_dns_label,
    ("", "Service"): name_is_dns1035_label,
    ("apps", "StatefulSet"): name_is_dns_label,
    (_RBAC, "Role"): name_is_path_segment,
    (_RBAC, "RoleBinding"): name_is_path_segment,
    (_RBAC, "ClusterRole"): name_is_path_segment,
    (_RBAC, "ClusterRoleBinding"): name_is_path_segment,
}

# Groups whose kinds go through core's ValidateObjectMeta, which also rejects unqualified
# finalizers other than the standard ones (CRDs and custom resources do not).
KUBE_FINALIZER_GROUPS = frozenset({
    "", "apps", "batch", "autoscaling", "networking.k8s.io", "policy", "scheduling.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", _RBAC, "storage.k8s.io",
})
# Finalizers without a domain prefix that the built-in kinds accept.
STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})
_BANNED_OWNERS = {("", "v1", "Event")}


def name_rule(group: str, kind: str) -> NameFn:
    """The name check for a kind (custom resources use DNS-1123 subdomains)."""
    return NAME_RULES.get((group, kind), name_is_dns_subdomain)


def validate_metadata(group: str, kind: str, obj: Obj, *, namespaced: bool) -> Errors:
    """``metadata`` of a new object: name, namespace, labels, annotations, owners, finalizers."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    fn = name_rule(group, kind)
    errs: Errors = []
    name, generate_name = meta.get("name") or "", meta.get("generateName") or ""
    if generate_name:
        errs += invalid_each("metadata.generateName", generate_name, fn(generate_name, True))
    if name:
        errs += invalid_each("metadata.name", name, fn(name, False))
    elif not generate_name:
        errs.append(FieldError.required("metadata.name", "name or generateName is required"))

    namespace = meta.get("namespace") or ""
    if namespaced:
        if not namespace:
            errs.append(FieldError.required("metadata.namespace"))
        else:
            errs += invalid_each("metadata.namespace", namespace,
                                 name_is_dns_label(namespace, False))
    elif namespace:
        errs.append(FieldError.forbidden("metadata.namespace", "not allowed on this type"))
    return errs + _common(meta, builtin=group in KUBE_FINALIZER_GROUPS)


def validate_metadata_update(new: Obj, old: Obj) -> Errors:
    """Identity fields are immutable; the mutable parts are re-validated."""
    meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
    old_meta = old.get("metadata") if isinstance(old.get("metadata"), dict) else {}
    assert isinstance(meta, dict) and isinstance(old_meta, dict)
    errs: Errors = []
    if old_meta.get("deletionTimestamp"):
        extra = sorted(set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or []))
        if extra:
            errs.append(FieldError.forbidden(
                "metadata.finalizers",
                "no new finalizers can be added if the object is being deleted, found new "
                "finalizers []string{" + ", ".join(f'"{f}"' for f in extra) + "}"))
    for field in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds"):
        zero: Any = 0 if field == "deletionGracePeriodSeconds" else ""
        errs += validate_immutable(meta.get(field, zero), old_meta.get(field, zero),
                                   f"metadata.{field}")
    group = str(new.get("apiVersion", "")).rpartition("/")[0]
    return errs + _common(meta, builtin=group in KUBE_FINALIZER_GROUPS)


def _common(meta: Obj, *, builtin: bool) -> Errors:
    errs = validate_labels(meta.get("labels"), "metadata.labels")
    errs += validate_annotations(meta.get("annotations"), "metadata.annotations")
    errs += validate_owner_references(dicts_at(meta, "ownerReferences"), "metadata.ownerReferences")
    errs += validate_finalizers(meta.get("finalizers") or [], "metadata.finalizers",
                                builtin=builtin)
    errs += _validate_managed_fields(dicts_at(meta, "managedFields"), "metadata.managedFields")
    return errs


def validate_owner_references(refs: list[Obj], path: str) -> Errors:
    errs: Errors = []
    controller = ""
    for ref in refs:
        api_version, kind = str(ref.get("apiVersion", "")), str(ref.get("kind", ""))
        group, version = _split_api_version(api_version)
        if not version:
            errs.append(FieldError.invalid(child(path, "apiVersion"), api_version,
                                           "version must not be empty"))
        if not kind:
            errs.append(FieldError.invalid(child(path, "kind"), kind, "must not be empty"))
        if not ref.get("name"):
            errs.append(FieldError.invalid(child(path, "name"), ref.get("name", ""),
                                           "must not be empty"))
        if not ref.get("uid"):
            errs.append(FieldError.invalid(child(path, "uid"), ref.get("uid", ""),
                                           "must not be empty"))
        if (group, version, kind) in _BANNED_OWNERS:
            errs.append(FieldError.invalid(path, ref,
                                           f"{group}/{version}, Kind={kind} is disallowed from "
                                           "being an owner"))
        if ref.get("controller") is True:
            current = f"{kind}/{ref.get('name', '')}"
            if controller:
                errs.append(FieldError.invalid(
                    path, refs, "Only one reference can have Controller set to true. Found "
                    f'"true" in references for {controller} and {current}'))
            else:
                controller = current
    return errs


def _split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> (apps, v1); ``v1`` -> ("", v1); anything else has no version."""
    parts = api_version.split("/")
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    return "", ""


def validate_finalizers(finalizers: Any, path: str, *, builtin: bool = True,
                        indexed: bool = True) -> Errors:
    errs: Errors = []
    if not isinstance(finalizers, list):
        return errs
    for i, f in enumerate(finalizers):
        f = str(f)
        errs += invalid_each(path, f, is_qualified_name(f))
        if builtin and "/" not in f and f not in STANDARD_FINALIZERS:
            errs.append(FieldError.invalid(
                index(path, i) if indexed else path, f,
                "name is neither a standard finalizer name nor is it fully qualified"))
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        errs.append(FieldError.invalid(
            path, finalizers, "finalizer orphan and foregroundDeletion cannot be both set"))
    return errs


def _validate_managed_fields(entries: list[Obj], path: str) -> Errors:
    errs: Errors = []
    for i, entry in enumerate(entries):
        p = index(path, i)
        if entry.get("operation") not in ("Apply", "Update"):
            errs.append(FieldError.invalid(child(p, "operation"), entry.get("operation", ""),
                                           "must be `Apply` or `Update`"))
        if entry.get("fieldsType") and entry["fieldsType"] != "FieldsV1":
            errs.append(FieldError.invalid(child(p, "fieldsType"), entry["fieldsType"],
                                           "must be `FieldsV1`"))
        manager = str(entry.get("manager", ""))
        if len(manager) > 128:
            errs.append(FieldError.too_long(child(p, "manager"), manager, 128))
    return errs
