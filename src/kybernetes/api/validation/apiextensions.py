"""CustomResourceDefinitions: names, versions and structural schemas.

A v1 CRD must be *structural*: every schema node names its type (``type: object`` at the
root), except nodes marked ``x-kubernetes-int-or-string`` or
``x-kubernetes-embedded-resource``; arrays name their ``items``.
"""

from __future__ import annotations

from typing import Any

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    is_dns1035_label,
    is_dns1123_subdomain,
    key,
    list_at,
    str_at,
    validate_enum,
    validate_immutable,
)

GROUP = "apiextensions.k8s.io"
SCHEMA_TYPES = ["array", "boolean", "integer", "number", "object", "string"]
COLUMN_TYPES = ["boolean", "date", "integer", "number", "string"]
COLUMN_FORMATS = ["byte", "date", "date-time", "double", "float", "int32", "int64", "password"]
_ROOT, _FIELD, _ITEM = "root", "field", "item"


@validator(GROUP, "CustomResourceDefinition")
def validate_crd(crd: Obj) -> Errors:
    spec = dict_at(crd, "spec")
    names = dict_at(spec, "names")
    group, plural = str_at(spec, "group"), str_at(names, "plural")
    errs: Errors = []
    name = str_at(dict_at(crd, "metadata"), "name")
    if name and name != f"{plural}.{group}":
        errs.append(FieldError.invalid("metadata.name", name,
                                       'must be spec.names.plural+"."+spec.group'))
    if not group:
        errs.append(FieldError.required("spec.group"))
    elif is_dns1123_subdomain(group):
        errs.append(FieldError.invalid("spec.group", group, ",".join(is_dns1123_subdomain(group))))
    elif len(group.split(".")) < 2:
        errs.append(FieldError.invalid("spec.group", group, "should be a domain with at least one "
                                                            "dot"))
    errs += validate_enum(str_at(spec, "scope"), "spec.scope", ["Cluster", "Namespaced"])
    errs += _versions(spec)
    for field in ("plural", "singular", "kind", "listKind"):
        if not names.get(field):
            errs.append(FieldError.required(f"spec.names.{field}"))
    errs += validate_names(names, "spec.names")
    errs += _conversion(dict_at(spec, "conversion"), "spec.conversion")
    if spec.get("preserveUnknownFields") is True:
        errs.append(FieldError.invalid("spec.preserveUnknownFields", True,
                                       "cannot set to true, set "
                                       "x-kubernetes-preserve-unknown-fields "
                                       "to true in spec.versions[*].schema instead"))
    errs += _stored_versions(crd)
    return errs


def validate_names(names: Obj, path: str) -> Errors:
    errs: Errors = []
    for field in ("plural", "singular"):
        value = str_at(names, field)
        if value and is_dns1035_label(value):
            errs.append(FieldError.invalid(child(path, field), value,
                                           ",".join(is_dns1035_label(value))))
    for field in ("kind", "listKind"):
        value = str_at(names, field)
        if value and is_dns1035_label(value.lower()):
            errs.append(FieldError.invalid(child(path, field), value,
                                           "may have mixed case, but should otherwise match: "
                                           + ",".join(is_dns1035_label(value.lower()))))
    for field in ("shortNames", "categories"):
        for i, value in enumerate(list_at(names, field)):
            value = str(value)
            if is_dns1035_label(value):
                errs.append(FieldError.invalid(index(child(path, field), i), value,
                                               ",".join(is_dns1035_label(value))))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.append(FieldError.invalid(child(path, "listKind"), names["listKind"],
                                       "kind and listKind may not be the same"))
    return errs


def _versions(spec: Obj) -> Errors:
    versions = dicts_at(spec, "versions")
    if not versions:
        return [FieldError.required("spec.versions", "must have at least one version")]
    errs: Errors = []
    seen: set[str] = set()
    unique, storage = True, 0
    for i, version in enumerate(versions):
        p = index("spec.versions", i)
        name = str_at(version, "name")
        storage += version.get("storage") is True
        unique &= name not in seen
        seen.add(name)
        if is_dns1035_label(name):
            errs.append(FieldError.invalid(child(p, "name"), name,
                                           ",".join(is_dns1035_label(name))))
        schema = dict_at(version, "schema").get("openAPIV3Schema")
        sp = child(p, "schema", "openAPIV3Schema")
        if not isinstance(schema, dict):
            errs.append(FieldError.required(sp, "schemas are required"))
        else:
            errs += validate_structural(schema, sp, _ROOT)
        for j, col in enumerate(dicts_at(version, "additionalPrinterColumns")):
            errs += _column(col, index(child(p, "additionalPrinterColumns"), j))
        scale = dict_at(dict_at(version, "subresources"), "scale")
        if scale:
            errs += _scale(scale, child(p, "subresources", "scale"))
    if not unique:
        errs.append(FieldError.invalid("spec.versions", versions,
                                       "must contain unique version names"))
    if storage != 1:
        errs.append(FieldError.invalid("spec.versions", versions,
                                       "must have exactly one version marked as storage version"))
    return errs


def validate_structural(s: Obj, path: str, level: str) -> Errors:
    """The structural-schema invariants of one schema node and its children."""
    errs: Errors = []
    kind = str_at(s, "type")
    int_or_string = s.get("x-kubernetes-int-or-string") is True
    embedded = s.get("x-kubernetes-embedded-resource") is True
    if kind and kind not in SCHEMA_TYPES:
        errs.append(FieldError.not_supported(child(path, "type"), kind, SCHEMA_TYPES))
    if kind == "array" and "items" not in s:
        errs.append(FieldError.required(child(path, "items"), "must be specified"))
    if isinstance(s.get("items"), dict):
        errs += validate_structural(s["items"], child(path, "items"), _ITEM)
    for name, prop in dict_at(s, "properties").items():
        if isinstance(prop, dict):
            errs += validate_structural(prop, key(child(path, "properties"), name), _FIELD)
    additional = s.get("additionalProperties")
    if isinstance(additional, dict):
        if s.get("properties"):
            errs.append(FieldError.forbidden(child(path, "additionalProperties"),
                                             "additionalProperties and properties are mutual "
                                             "exclusive"))
        errs += validate_structural(additional, child(path, "additionalProperties"), _FIELD)
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        errs.append(FieldError.invalid(child(path, "x-kubernetes-preserve-unknown-fields"), False,
                                       "must be true or undefined"))
    if int_or_string and s.get("x-kubernetes-preserve-unknown-fields") is True:
        errs.append(FieldError.invalid(child(path, "x-kubernetes-preserve-unknown-fields"), True,
                                       "must be false if x-kubernetes-int-or-string is true"))
    if int_or_string and embedded:
        errs.append(FieldError.invalid(child(path, "x-kubernetes-embedded-resource"), True,
                                       "must be false if x-kubernetes-int-or-string is true"))
    if embedded and kind != "object":
        detail = "must be object if x-kubernetes-embedded-resource is true"
        errs.append(FieldError.required(child(path, "type"), detail) if not kind
                    else FieldError.invalid(child(path, "type"), kind, detail))
    elif not kind and not int_or_string:
        where = {_ROOT: "at the root", _ITEM: "for specified array items",
                 _FIELD: "for specified object fields"}[level]
        errs.append(FieldError.required(child(path, "type"), f"must not be empty {where}"))
    if level == _ROOT and kind and kind != "object":
        errs.append(FieldError.invalid(child(path, "type"), kind, "must be object at the root"))
    if level == _ROOT or embedded:
        errs += _metadata_properties(s, path, root=level == _ROOT)
    if embedded and s.get("x-kubernetes-preserve-unknown-fields") is not True \
            and not s.get("properties"):
        errs.append(FieldError.required(child(path, "properties"), "must not be empty if "
                                        "x-kubernetes-embedded-resource is true without "
                                        "x-kubernetes-preserve-unknown-fields"))
    return errs


def _metadata_properties(s: Obj, path: str, *, root: bool) -> Errors:
    errs: Errors = []
    props = dict_at(s, "properties")
    expected = {"kind": "string", "apiVersion": "string", "metadata": "object"}
    for name, want in expected.items():
        if isinstance(props.get(name), dict) and props[name].get("type", "") != want:
            errs.append(FieldError.invalid(child(key(child(path, "properties"), name), "type"),
                                           props[name].get("type", ""), f"must be {want}"))
    meta = props.get("metadata")
    if root and isinstance(meta, dict):
        rest = {k: v for k, v in meta.items() if k not in ("type", "default")}
        meta_props = dict_at(meta, "properties")
        if set(meta_props) in ({"name"}, {"name", "generateName"}):
            rest.pop("properties")
        if rest:
            errs.append(FieldError.forbidden(key(child(path, "properties"), "metadata"),
                                             "must not specify anything other than name and "
                                             "generateName, but metadata is implicitly specified"))
    return errs


def _column(col: Obj, path: str) -> Errors:
    errs: Errors = []
    if not col.get("name"):
        errs.append(FieldError.required(child(path, "name")))
    kind = str_at(col, "type")
    types = "must be one of " + ",".join(COLUMN_TYPES)
    if not kind:
        errs.append(FieldError.required(child(path, "type"), types))
    elif kind not in COLUMN_TYPES:
        errs.append(FieldError.invalid(child(path, "type"), kind, types))
    fmt = str_at(col, "format")
    if fmt and fmt not in COLUMN_FORMATS:
        errs.append(FieldError.invalid(child(path, "format"), fmt,
                                       "must be one of " + ",".join(COLUMN_FORMATS)))
    if not col.get("jsonPath"):
        errs.append(FieldError.required(child(path, "jsonPath")))
    return errs


def _scale(scale: Obj, path: str) -> Errors:
    errs: Errors = []
    rules = (("specReplicasPath", (".spec.",), "should be a json path under .spec"),
             ("statusReplicasPath", (".status.",), "should be a json path under .status"),
             ("labelSelectorPath", (".spec.", ".status."),
              "should be a json path under either .spec or .status"))
    for field, prefixes, detail in rules:
        value = str_at(scale, field)
        if not value:
            if field != "labelSelectorPath":
                errs.append(FieldError.required(child(path, field)))
        elif not value.startswith(prefixes):
            errs.append(FieldError.invalid(child(path, field), value, detail))
    return errs


def _conversion(conversion: Obj, path: str) -> Errors:
    strategy = str_at(conversion, "strategy")
    errs = validate_enum(strategy, child(path, "strategy"), ["None", "Webhook"])
    webhook = conversion.get("webhook")
    if strategy == "Webhook":
        if not isinstance(webhook, dict) or not isinstance(webhook.get("clientConfig"), dict):
            errs.append(FieldError.required(child(path, "webhook", "clientConfig"),
                                            "required when strategy is set to Webhook"))
        if not isinstance(webhook, dict) or not webhook.get("conversionReviewVersions"):
            errs.append(FieldError.required(child(path, "webhook", "conversionReviewVersions"),
                                            "must specify at least one version"))
    elif webhook is not None:
        errs.append(FieldError.forbidden(child(path, "webhook"),
                                         "should not be set when strategy is not set to Webhook"))
    return errs


def _stored_versions(crd: Obj) -> Errors:
    stored = [str(v) for v in list_at(dict_at(crd, "status"), "storedVersions")]
    path = "status.storedVersions"
    if not stored:
        return [FieldError.invalid(path, stored, "must have at least one stored version")]
    errs: Errors = []
    remaining = {v: i for i, v in enumerate(stored)}
    for version in dicts_at(dict_at(crd, "spec"), "versions"):
        name = str_at(version, "name")
        if version.get("storage") is True and name not in remaining:
            errs.append(FieldError.invalid(path, version, "must have the storage version " + name))
        remaining.pop(name, None)
    for v, i in remaining.items():
        errs.append(FieldError.invalid(index(path, i), v, "must appear in spec.versions"))
    return errs


def _established(crd: Obj) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in dicts_at(dict_at(crd, "status"), "conditions"))


def _get(obj: Obj, *fields: str) -> Any:
    for f in fields[:-1]:
        obj = dict_at(obj, f)
    return obj.get(fields[-1])


@update_validator(GROUP, "CustomResourceDefinition")
def validate_crd_update(new: Obj, old: Obj) -> Errors:
    spec, old_spec = dict_at(new, "spec"), dict_at(old, "spec")
    immutable = [("group",), ("names", "plural")]
    if _established(old):
        immutable = [("scope",), ("names", "kind"), *immutable]
    errs: Errors = []
    for fields in immutable:
        errs += validate_immutable(_get(spec, *fields), _get(old_spec, *fields),
                                   "spec." + ".".join(fields))
    return errs
