"""The ``storage.k8s.io`` group: StorageClasses."""

from __future__ import annotations

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    dict_at,
    dicts_at,
    index,
    str_at,
    validate_immutable,
    validate_qualified_name,
)
from kybernetes.api.validation.labels import validate_label_name

MAX_PARAMETERS = 512
MAX_PARAMETERS_SIZE = 256 * 1024
RECLAIM_POLICIES = ["Delete", "Retain"]
BINDING_MODES = ["Immediate", "WaitForFirstConsumer"]


@validator("storage.k8s.io", "StorageClass")
def validate_storage_class(sc: Obj) -> Errors:
    errs: Errors = []
    provisioner = str_at(sc, "provisioner")
    if not provisioner:
        errs.append(FieldError.required("provisioner"))
    else:
        errs += validate_qualified_name(provisioner.lower(), "provisioner")
    params = dict_at(sc, "parameters")
    if len(params) > MAX_PARAMETERS:
        errs.append(FieldError.too_long("parameters", "", MAX_PARAMETERS))
    elif sum(len(k) + len(str(v)) for k, v in params.items()) > MAX_PARAMETERS_SIZE:
        errs.append(FieldError.too_long("parameters", "", MAX_PARAMETERS_SIZE))
    for k in params:
        if not k:
            errs.append(FieldError.invalid("parameters", k, "field can not be empty."))
    policy = str_at(sc, "reclaimPolicy")
    if policy and policy not in RECLAIM_POLICIES:
        errs.append(FieldError.not_supported("reclaimPolicy", policy, RECLAIM_POLICIES))
    mode = sc.get("volumeBindingMode")
    if mode is None:
        errs.append(FieldError.required("volumeBindingMode"))
    elif mode not in BINDING_MODES:
        errs.append(FieldError.not_supported("volumeBindingMode", mode, BINDING_MODES))
    for i, term in enumerate(dicts_at(sc, "allowedTopologies")):
        tp = index("allowedTopologies", i)
        exprs = dicts_at(term, "matchLabelExpressions")
        keys: set[str] = set()
        for j, req in enumerate(exprs):
            rp = index(f"{tp}.matchLabelExpressions", j)
            values = req.get("values") or []
            if not values:
                errs.append(FieldError.required(f"{rp}.values"))
            for n, v in enumerate(values):
                if v in values[:n]:
                    errs.append(FieldError.duplicate(index(f"{rp}.values", n), v))
            errs += validate_label_name(str_at(req, "key"), f"{rp}.key")
            if str_at(req, "key") in keys:
                errs.append(FieldError.duplicate(f"{rp}.key", str_at(req, "key")))
            keys.add(str_at(req, "key"))
    return errs


@update_validator("storage.k8s.io", "StorageClass")
def validate_storage_class_update(new: Obj, old: Obj) -> Errors:
    errs: Errors = []
    if (new.get("parameters") or {}) != (old.get("parameters") or {}):
        errs.append(FieldError.forbidden("parameters", "updates to parameters are forbidden."))
    if new.get("provisioner") != old.get("provisioner"):
        errs.append(FieldError.forbidden("provisioner", "updates to provisioner are forbidden."))
    if new.get("reclaimPolicy") != old.get("reclaimPolicy"):
        errs.append(FieldError.forbidden("reclaimPolicy",
                                         "updates to reclaimPolicy are forbidden."))
    return errs + validate_immutable(new.get("volumeBindingMode"), old.get("volumeBindingMode"),
                                     "volumeBindingMode")
