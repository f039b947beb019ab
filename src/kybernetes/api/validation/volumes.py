"""Pod volumes and PersistentVolumeClaim specs (``ValidateVolumes`` and friends).

Every volume names exactly one source. The common sources (emptyDir, hostPath, secret,
configMap, persistentVolumeClaim, projected, downwardAPI, nfs, csi, ephemeral) are checked
in depth; the legacy in-tree ones only for their required fields.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from kybernetes.api.errors import FieldError
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    invalid_each,
    name_is_dns_label,
    name_is_dns_subdomain,
    str_at,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_enum,
)
from kybernetes.api.validation.labels import (
    validate_annotations,
    validate_label_selector,
    validate_labels,
)
from kybernetes.api.validation.resources import (
    parse,
    validate_positive_quantity,
    validate_quantity_value,
)

FILE_MODE_ERROR = "must be a number between 0 and 0777 (octal), both inclusive"
HOST_PATH_TYPES = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                   "FileOrCreate", "Socket"]
ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
VOLUME_MODES = ["Block", "Filesystem"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]

SourceCheck = Callable[[Obj, str, bool], Errors]


# -- paths inside volumes -------------------------------------------------------------------


def validate_no_backsteps(target: str, path: str) -> Errors:
    if ".." in target.replace("\\", "/").split("/"):
        return [FieldError.invalid(path, target, "must not contain '..'")]
    return []


def validate_local_descending_path(target: str, path: str) -> Errors:
    errs = []
    if posixpath.isabs(target):
        errs.append(FieldError.invalid(path, target, "must be a relative path"))
    return errs + validate_no_backsteps(target, path)


def validate_local_non_reserved_path(target: str, path: str) -> Errors:
    errs = validate_local_descending_path(target, path)
    if target.startswith("..") and not target.startswith("../"):
        errs.append(FieldError.invalid(path, target, "must not start with '..'"))
    return errs


def _mode(obj: Obj, name: str, path: str) -> Errors:
    mode = obj.get(name)
    if isinstance(mode, int) and not 0 <= mode <= 0o777:
        return [FieldError.invalid(child(path, name), mode, FILE_MODE_ERROR)]
    return []


def _key_to_path(kp: Obj, path: str) -> Errors:
    errs: Errors = []
    if not kp.get("key"):
        errs.append(FieldError.required(child(path, "key")))
    if not kp.get("path"):
        errs.append(FieldError.required(child(path, "path")))
    errs += validate_local_non_reserved_path(str_at(kp, "path"), child(path, "path"))
    return errs + _mode(kp, "mode", path)


def _items(src: Obj, path: str) -> Errors:
    errs: Errors = []
    for i, kp in enumerate(dicts_at(src, "items")):
        errs += _key_to_path(kp, index(child(path, "items"), i))
    return errs


# -- one check per source ---------------------------------------------------------------------


def _required(*fields: str) -> SourceCheck:
    def check(src: Obj, path: str, is_pod: bool) -> Errors:
        return [FieldError.required(child(path, f)) for f in fields if not src.get(f)]
    return check


def _empty_dir(src: Obj, path: str, is_pod: bool) -> Errors:
    limit = parse(src["sizeLimit"]) if "sizeLimit" in src else None
    if limit is not None and limit < 0:
        return [FieldError.forbidden(child(path, "sizeLimit"),
                                     "SizeLimit field must be a valid resource quantity")]
    return []


def _host_path(src: Obj, path: str, is_pod: bool) -> Errors:
    if not src.get("path"):
        return [FieldError.required(child(path, "path"))]
    errs = validate_no_backsteps(str_at(src, "path"), child(path, "path"))
    if "type" in src and src["type"] not in HOST_PATH_TYPES:
        errs.append(FieldError.not_supported(child(path, "type"), src["type"], HOST_PATH_TYPES))
    return errs


def _git_repo(src: Obj, path: str, is_pod: bool) -> Errors:
    errs = _required("repository")(src, path, is_pod)
    return errs + validate_local_descending_path(str_at(src, "directory"), child(path, "directory"))


def _secret(src: Obj, path: str, is_pod: bool) -> Errors:
    errs = _required("secretName")(src, path, is_pod)
    return errs + _mode(src, "defaultMode", path) + _items(src, path)


def _config_map(src: Obj, path: str, is_pod: bool) -> Errors:
    errs = _required("name")(src, path, is_pod)
    return errs + _mode(src, "defaultMode", path) + _items(src, path)


def _nfs(src: Obj, path: str, is_pod: bool) -> Errors:
    errs = _required("server", "path")(src, path, is_pod)
    if not posixpath.isabs(str_at(src, "path")):
        errs.append(FieldError.invalid(child(path, "path"), str_at(src, "path"),
                                       "must be an absolute path"))
    return errs


def _downward_file(f: Obj, path: str) -> Errors:
    errs: Errors = []
    if not f.get("path"):
        errs.append(FieldError.required(child(path, "path")))
    errs += validate_local_non_reserved_path(str_at(f, "path"), child(path, "path"))
    if "fieldRef" in f:
        ref = dict_at(f, "fieldRef")
        if not ref.get("apiVersion"):
            errs.append(FieldError.required(child(path, "fieldRef", "apiVersion")))
        elif not ref.get("fieldPath"):
            errs.append(FieldError.required(child(path, "fieldRef", "fieldPath")))
        if "resourceFieldRef" in f:
            errs.append(FieldError.invalid(path, "resource",
                                           "fieldRef and resourceFieldRef can not be specified "
                                           "simultaneously"))
    elif "resourceFieldRef" in f:
        if not dict_at(f, "resourceFieldRef").get("containerName"):
            errs.append(FieldError.required(child(path, "resourceFieldRef", "containerName")))
    else:
        errs.append(FieldError.required(path, "one of fieldRef and resourceFieldRef is required"))
    return errs + _mode(f, "mode", path)


def _downward_api(src: Obj, path: str, is_pod: bool) -> Errors:
    errs = _mode(src, "defaultMode", path)
    for f in dicts_at(src, "items"):
        errs += _downward_file(f, path)
    return errs


def _projected(src: Obj, path: str, is_pod: bool) -> Errors:
    errs = _mode(src, "defaultMode", path)
    seen: set[str] = set()
    for i, source in enumerate(dicts_at(src, "sources")):
        sp = index(child(path, "sources"), i)
        present = [k for k in ("secret", "configMap", "downwardAPI", "serviceAccountToken",
                               "clusterTrustBundle") if k in source]
        for k in ("secret", "configMap"):
            if k in source:
                proj = dict_at(source, k)
                if not proj.get("name"):
                    errs.append(FieldError.required(child(sp, k, "name")))
                errs += _items(proj, child(sp, k))
                for kp in dicts_at(proj, "items"):
                    if kp.get("path") and kp["path"] in seen:
                        errs.append(FieldError.invalid(path, proj.get("name", ""),
                                                       "conflicting duplicate paths"))
                    seen.add(str(kp.get("path", "")))
        if "downwardAPI" in source:
            for f in dicts_at(dict_at(source, "downwardAPI"), "items"):
                errs += _downward_file(f, child(sp, "downwardAPI"))
        if "serviceAccountToken" in source:
            tok = dict_at(source, "serviceAccountToken")
            tp = child(sp, "serviceAccountToken")
            seconds = tok.get("expirationSeconds", 3600)
            if isinstance(seconds, int) and seconds < 600:
                errs.append(FieldError.invalid(child(tp, "expirationSeconds"), seconds,
                                               "may not specify a duration less than 10 minutes"))
            if isinstance(seconds, int) and seconds > 1 << 32:
                errs.append(FieldError.invalid(child(tp, "expirationSeconds"), seconds,
                                               "may not specify a duration larger than 2^32 "
                                               "seconds"))
            if not tok.get("path"):
                errs.append(FieldError.required(child(path, "path")))
            else:
                errs += validate_local_non_reserved_path(tok["path"], child(path, "path"))
        if len(present) > 1:
            errs.append(FieldError.forbidden(sp, "may not specify more than 1 volume type per "
                                                 "source"))
    return errs


def _csi(src: Obj, path: str, is_pod: bool) -> Errors:
    return validate_csi_driver_name(str_at(src, "driver"), child(path, "driver"))


def validate_csi_driver_name(driver: str, path: str) -> Errors:
    errs: Errors = []
    if not driver:
        errs.append(FieldError.required(path))
    if len(driver) > 63:
        errs.append(FieldError.too_long(path, "", 63))
    return errs + invalid_each(path, driver, name_is_dns_subdomain(driver.lower(), False))


def _ephemeral(src: Obj, path: str, is_pod: bool) -> Errors:
    if "volumeClaimTemplate" not in src:
        return [FieldError.required(child(path, "volumeClaimTemplate"))]
    tmpl = dict_at(src, "volumeClaimTemplate")
    tp = child(path, "volumeClaimTemplate")
    meta = dict_at(tmpl, "metadata")
    errs = validate_annotations(meta.get("annotations"), child(tp, "metadata", "annotations"))
    errs += validate_labels(meta.get("labels"), child(tp, "metadata", "labels"))
    for k in meta:
        if k not in ("labels", "annotations"):
            errs.append(FieldError.forbidden(child(tp, "metadata", k), "cannot be set"))
    return errs + validate_pvc_spec(dict_at(tmpl, "spec"), child(tp, "spec"))


def _image(src: Obj, path: str, is_pod: bool) -> Errors:
    errs: Errors = []
    if is_pod and not src.get("reference"):
        errs.append(FieldError.required(child(path, "reference")))
    return errs + validate_enum(str_at(src, "pullPolicy"), child(path, "pullPolicy"),
                                PULL_POLICIES)


# (JSON field, name used in "may not specify more than 1 volume type", check), upstream order.
SOURCES: tuple[tuple[str, str, SourceCheck], ...] = (
    ("emptyDir", "emptyDir", _empty_dir),
    ("hostPath", "hostPath", _host_path),
    ("gitRepo", "gitRepo", _git_repo),
    ("gcePersistentDisk", "gcePersistentDisk", _required("pdName")),
    ("awsElasticBlockStore", "awsElasticBlockStore", _required("volumeID")),
    ("secret", "secret", _secret),
    ("nfs", "nfs", _nfs),
    ("iscsi", "iscsi", _required("targetPortal", "iqn")),
    ("glusterfs", "glusterfs", _required("endpoints", "path")),
    ("flocker", "flocker", lambda s, p, x: [] if s.get("datasetName") or s.get("datasetUUID")
     else [FieldError.required(p, "one of datasetName and datasetUUID is required")]),
    ("persistentVolumeClaim", "persistentVolumeClaim", _required("claimName")),
    ("rbd", "rbd", _required("monitors", "image")),
    ("cinder", "cinder", _required("volumeID")),
    ("cephfs", "cephFS", _required("monitors")),
    ("quobyte", "quobyte", _required("registry", "volume")),
    ("downwardAPI", "downwarAPI", _downward_api),
    ("fc", "fc", lambda s, p, x: [] if s.get("targetWWNs") or s.get("wwids") else
     [FieldError.required(child(p, "targetWWNs"),
                          "must specify either targetWWNs or wwids, but not both")]),
    ("flexVolume", "flexVolume", _required("driver")),
    ("configMap", "configMap", _config_map),
    ("azureFile", "azureFile", _required("secretName", "shareName")),
    ("vsphereVolume", "vsphereVolume", _required("volumePath")),
    ("photonPersistentDisk", "photonPersistentDisk", _required("pdID")),
    ("portworxVolume", "portworxVolume", _required("volumeID")),
    ("azureDisk", "azureDisk", _required("diskName", "diskURI")),
    ("storageos", "storageos", _required("volumeName")),
    ("projected", "projected", _projected),
    ("scaleIO", "scaleIO", _required("gateway", "system", "volumeName")),
    ("csi", "csi", _csi),
    ("ephemeral", "ephemeral", _ephemeral),
    ("image", "image", _image),
)
SOURCE_FIELDS = frozenset(s[0] for s in SOURCES)


def validate_volume_source(vol: Obj, path: str, *, is_pod: bool) -> Errors:
    errs: Errors = []
    count = 0
    for field, dup_name, check in SOURCES:
        if field not in vol:
            continue
        if count:
            errs.append(FieldError.forbidden(child(path, dup_name),
                                             "may not specify more than 1 volume type"))
            continue
        count += 1
        src = vol[field] if isinstance(vol[field], dict) else {}
        errs += check(src, child(path, field), is_pod)
    if not count:
        errs.append(FieldError.required(path, "must specify a volume type"))
    return errs


def validate_volumes(volumes: list[Obj], path: str, *, pod_name: str = "",
                     is_pod: bool = False) -> tuple[dict[str, Obj], Errors]:
    """The volumes that validated, by name, and the errors of the others."""
    names: dict[str, Obj] = {}
    errs: Errors = []
    created_claims = {f"{pod_name}-{v.get('name', '')}" for v in volumes
                      if pod_name and "ephemeral" in v}
    for i, vol in enumerate(volumes):
        p = index(path, i)
        name = str_at(vol, "name")
        el = validate_volume_source(vol, p, is_pod=is_pod)
        if not name:
            el.append(FieldError.required(child(p, "name")))
        else:
            el += validate_dns1123_label(name, child(p, "name"))
        if name in names:
            el.append(FieldError.duplicate(child(p, "name"), name))
        if el:
            errs += el
        else:
            names[name] = vol
        claim = dict_at(vol, "persistentVolumeClaim").get("claimName")
        if "persistentVolumeClaim" in vol and claim in created_claims:
            errs.append(FieldError.invalid(child(p, "persistentVolumeClaim", "claimName"), claim,
                                           "must not reference a PVC that gets created for an "
                                           "ephemeral volume"))
    return names, errs


# -- PersistentVolumeClaim specs (claims, ephemeral volumes, StatefulSet templates) --------


def validate_access_modes(modes: Any, path: str, *, required_detail: str) -> Errors:
    errs: Errors = []
    modes = modes if isinstance(modes, list) else []
    if not modes:
        errs.append(FieldError.required(path, required_detail))
    for mode in modes:
        if mode not in ACCESS_MODES:
            errs.append(FieldError.not_supported(path, mode, ACCESS_MODES))
    if "ReadWriteOncePod" in modes and any(m in ACCESS_MODES and m != "ReadWriteOncePod"
                                           for m in modes):
        errs.append(FieldError.forbidden(path, "may not use ReadWriteOncePod with other access "
                                               "modes"))
    return errs


def validate_pvc_spec(spec: Obj, path: str) -> Errors:
    errs = validate_access_modes(spec.get("accessModes"), child(path, "accessModes"),
                                 required_detail="at least 1 access mode is required")
    if "selector" in spec:
        errs += validate_label_selector(spec.get("selector"), child(path, "selector"))
    requests = dict_at(dict_at(spec, "resources"), "requests")
    storage_path = child(path, "resources") + "[storage]"
    if "storage" not in requests:
        errs.append(FieldError.required(storage_path))
    else:
        positive = validate_positive_quantity(requests["storage"], storage_path)
        errs += positive or validate_quantity_value("storage", requests["storage"], storage_path)
    if spec.get("storageClassName"):
        errs += invalid_each(child(path, "storageClassName"), spec["storageClassName"],
                             name_is_dns_subdomain(str(spec["storageClassName"]), False))
    if "volumeMode" in spec and spec["volumeMode"] not in VOLUME_MODES:
        errs.append(FieldError.not_supported(child(path, "volumeMode"), spec["volumeMode"],
                                             VOLUME_MODES))
    for field in ("dataSource", "dataSourceRef"):
        if field in spec:
            errs += _data_source(dict_at(spec, field), child(path, field))
    return errs


def _data_source(ref: Obj, path: str) -> Errors:
    errs: Errors = []
    if not ref.get("name"):
        errs.append(FieldError.required(child(path, "name")))
    if not ref.get("kind"):
        errs.append(FieldError.required(child(path, "kind")))
    group = str_at(ref, "apiGroup")
    if not group and ref.get("kind") != "PersistentVolumeClaim":
        errs.append(FieldError.invalid(path, ref.get("kind", ""),
                                       "must be 'PersistentVolumeClaim' when referencing the "
                                       "default apiGroup"))
    if group:
        errs += validate_dns1123_subdomain(group, child(path, "apiGroup"))
    if ref.get("namespace"):
        errs += invalid_each(child(path, "namespace"), ref["namespace"],
                             name_is_dns_label(str(ref["namespace"]), False))
    return errs
