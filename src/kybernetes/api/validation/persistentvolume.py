"""PersistentVolumes and PersistentVolumeClaims."""

from __future__ import annotations

import posixpath

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    FIELD_IMMUTABLE,
    Errors,
    Obj,
    dict_at,
    invalid_each,
    name_is_dns_subdomain,
    str_at,
    validate_immutable,
)
from kybernetes.api.validation.placement import validate_node_selector
from kybernetes.api.validation.resources import parse, validate_positive_quantity
from kybernetes.api.validation.volumes import (
    SOURCES,
    VOLUME_MODES,
    validate_access_modes,
    validate_csi_driver_name,
    validate_no_backsteps,
    validate_pvc_spec,
)

RECLAIM_POLICIES = ["Delete", "Recycle", "Retain"]
# PersistentVolume sources: the pod volume sources that make sense cluster-wide, plus local.
_PV_SOURCES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "glusterfs", "flocker",
               "nfs", "rbd", "quobyte", "cephfs", "iscsi", "cinder", "fc", "flexVolume",
               "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume",
               "azureDisk", "scaleIO", "local", "storageos", "csi")
_CHECKS = {field: check for field, _, check in SOURCES}


@validator("", "PersistentVolume")
def validate_persistent_volume(pv: Obj) -> Errors:
    spec = dict_at(pv, "spec")
    errs = validate_access_modes(spec.get("accessModes"), "spec.accessModes", required_detail="")
    capacity = dict_at(spec, "capacity")
    if not capacity:
        errs.append(FieldError.required("spec.capacity"))
    if "storage" not in capacity or len(capacity) > 1:
        errs.append(FieldError.not_supported("spec.capacity", capacity, ["storage"]))
    for k, v in capacity.items():
        p = f"spec.capacity[{k}]"
        value = parse(v)
        if value is not None and value < 0:
            errs.append(FieldError.invalid(p, v, "must be a valid resource quantity"))
        errs += validate_positive_quantity(v, p)
    policy = str_at(spec, "persistentVolumeReclaimPolicy")
    if policy and policy not in RECLAIM_POLICIES:
        errs.append(FieldError.not_supported("spec.persistentVolumeReclaimPolicy", policy,
                                             RECLAIM_POLICIES))
    affinity = spec.get("nodeAffinity")
    if isinstance(affinity, dict):
        if "required" in affinity:
            errs += validate_node_selector(dict_at(affinity, "required"),
                                           "spec.nodeAffinity.required")
        else:
            errs.append(FieldError.required("spec.nodeAffinity.required",
                                            "must specify required node constraints"))
    errs += _sources(spec)
    host_path = str_at(dict_at(spec, "hostPath"), "path")
    if "hostPath" in spec and posixpath.normpath(host_path or ".") == "/" and policy == "Recycle":
        errs.append(FieldError.forbidden("spec.persistentVolumeReclaimPolicy",
                                         "may not be 'recycle' for a hostPath mount of '/'"))
    if spec.get("storageClassName"):
        errs += invalid_each("spec.storageClassName", spec["storageClassName"],
                             name_is_dns_subdomain(str(spec["storageClassName"]), False))
    if "volumeMode" in spec and spec["volumeMode"] not in VOLUME_MODES:
        errs.append(FieldError.not_supported("spec.volumeMode", spec["volumeMode"], VOLUME_MODES))
    return errs


def _sources(spec: Obj) -> Errors:
    errs: Errors = []
    count = 0
    for field in _PV_SOURCES:
        if field not in spec:
            continue
        path = f"spec.{field}"
        if count and field != "flexVolume":
            errs.append(FieldError.forbidden(path, "may not specify more than 1 volume type"))
            continue
        count += 1
        src = dict_at(spec, field)
        if field == "local":
            if not src.get("path"):
                errs.append(FieldError.required(f"{path}.path"))
            else:
                errs += validate_no_backsteps(str(src["path"]), f"{path}.path")
            if not isinstance(spec.get("nodeAffinity"), dict):
                errs.append(FieldError.required("spec.nodeAffinity",
                                                "Local volume requires node affinity"))
        elif field == "csi":
            errs += validate_csi_driver_name(str_at(src, "driver"), f"{path}.driver")
            if not src.get("volumeHandle"):
                errs.append(FieldError.required(f"{path}.volumeHandle"))
        else:
            errs += _CHECKS[field](src, path, False)
    if not count:
        errs.append(FieldError.required("spec", "must specify a volume type"))
    return errs


@update_validator("", "PersistentVolume")
def validate_persistent_volume_update(new: Obj, old: Obj) -> Errors:
    spec, old_spec = dict_at(new, "spec"), dict_at(old, "spec")
    errs: Errors = []
    source, old_source = ({k: s[k] for k in _PV_SOURCES if k in s} for s in (spec, old_spec))
    if "csi" in source and "csi" in old_source and \
            "controllerExpandSecretRef" not in old_source["csi"]:
        source["csi"] = {k: v for k, v in source["csi"].items() if k != "controllerExpandSecretRef"}
    if source != old_source:
        errs.append(FieldError.forbidden("spec.persistentvolumesource",
                                         "spec.persistentvolumesource is immutable after creation"))
    errs += validate_immutable(spec.get("volumeMode"), old_spec.get("volumeMode"), "volumeMode")
    if "nodeAffinity" in old_spec and spec.get("nodeAffinity") != old_spec["nodeAffinity"]:
        errs.append(FieldError.invalid("nodeAffinity", spec.get("nodeAffinity"),
                                       FIELD_IMMUTABLE + ", except for updating from beta label to "
                                       "GA"))
    return errs


@validator("", "PersistentVolumeClaim")
def validate_persistent_volume_claim(pvc: Obj) -> Errors:
    return validate_pvc_spec(dict_at(pvc, "spec"), "spec")


@update_validator("", "PersistentVolumeClaim")
def validate_persistent_volume_claim_update(new: Obj, old: Obj) -> Errors:
    spec, old_spec = dict(dict_at(new, "spec")), dict(dict_at(old, "spec"))
    errs: Errors = []
    if not old_spec.get("volumeName"):
        # The volume controller binds a claim once by setting volumeName.
        if "volumeName" in spec:
            old_spec["volumeName"] = spec["volumeName"]
        else:
            old_spec.pop("volumeName", None)
    if old_spec.get("storageClassName") is None and spec.get("storageClassName") is not None:
        old_spec["storageClassName"] = spec["storageClassName"]
    bound = dict_at(new, "status").get("phase") == "Bound"
    new_size = dict_at(dict_at(spec, "resources"), "requests").get("storage")
    old_size = dict_at(dict_at(old_spec, "resources"), "requests").get("storage")
    if bound:
        spec["resources"] = old_spec.get("resources")
        if "volumeAttributesClassName" in spec:
            spec["volumeAttributesClassName"] = old_spec.get("volumeAttributesClassName")
    if spec != old_spec:
        errs.append(FieldError.forbidden("spec", "spec is immutable after creation except "
                                         "resources.requests and volumeAttributesClassName for "
                                         "bound claims"))
    new_v, old_v = parse(new_size), parse(old_size)
    if new_v is not None and old_v is not None and new_v < old_v:
        errs.append(FieldError.forbidden("spec.resources.requests.storage",
                                         "field can not be less than previous value"))
    errs += validate_immutable(spec.get("volumeMode"), old_spec.get("volumeMode"), "volumeMode")
    return errs
