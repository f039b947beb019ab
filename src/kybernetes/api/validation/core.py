"""Core (``v1``) kinds: Pod, Namespace, ConfigMap, Secret, quotas, limits, Node, events.

Services live in :mod:`.service`, volumes and claims in :mod:`.persistentvolume`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from kybernetes.api.errors import DUPLICATE, FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    FIELD_IMMUTABLE,
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    invalid_each,
    is_config_map_key,
    is_dns1123_subdomain,
    is_label_value,
    is_valid_port_num,
    list_at,
    name_is_dns_subdomain,
    str_at,
    validate_cidr,
    validate_dns1123_label,
    validate_immutable,
    validate_ip,
    validate_non_special_ip,
    validate_qualified_name,
)
from kybernetes.api.validation.containers import PROTOCOLS
from kybernetes.api.validation.labels import validate_label_name
from kybernetes.api.validation.meta import validate_finalizers
from kybernetes.api.validation.placement import TAINT_EFFECTS
from kybernetes.api.validation.podspec import validate_pod_spec
from kybernetes.api.validation.podupdate import validate_pod_spec_update
from kybernetes.api.validation.resources import (
    STANDARD_LIMIT_TYPES,
    is_overcommit_allowed,
    parse,
    text,
    validate_container_resource_name,
    validate_quantity_value,
    validate_quota_resource_name,
    validate_resource_name,
)

MAX_SECRET_SIZE = 1024 * 1024

# -- Pod ----------------------------------------------------------------------------------


@validator("", "Pod")
def validate_pod(pod: Obj) -> Errors:
    spec = dict_at(pod, "spec")
    name = str_at(dict_at(pod, "metadata"), "name")
    errs = validate_pod_spec(spec, "spec", pod_name=name, is_pod=True)
    annotations = dict_at(dict_at(pod, "metadata"), "annotations")
    if "kubernetes.io/config.mirror" in annotations and not spec.get("nodeName"):
        errs.append(FieldError.invalid("metadata.annotations[kubernetes.io/config.mirror]",
                                       annotations["kubernetes.io/config.mirror"],
                                       "must set spec.nodeName if mirror pod annotation is set"))
    if not spec.get("serviceAccountName"):
        for vi, vol in enumerate(dicts_at(spec, "volumes")):
            for si, src in enumerate(dicts_at(dict_at(vol, "projected"), "sources")):
                if "serviceAccountToken" in src:
                    errs.append(FieldError.forbidden(
                        f"spec.volumes[{vi}].projected.sources[{si}].serviceAccountToken",
                        "must not be specified when serviceAccountName is not set"))
    for field in ("containers", "initContainers", "ephemeralContainers"):
        for i, c in enumerate(dicts_at(spec, field)):
            image = str_at(c, "image")
            if image != image.strip():
                errs.append(FieldError.invalid(f"spec.{field}[{i}].image", image,
                                               "must not have leading or trailing whitespace"))
    return errs


@update_validator("", "Pod")
def validate_pod_update(new: Obj, old: Obj) -> Errors:
    errs: Errors = []
    new_ann, old_ann = (dict_at(dict_at(o, "metadata"), "annotations") for o in (new, old))
    mirror = "kubernetes.io/config.mirror"
    if mirror in old_ann and new_ann.get(mirror) != old_ann[mirror]:
        errs.append(FieldError.forbidden(f"metadata.annotations[{mirror}]",
                                         "may not remove or update mirror pod annotation"))
    elif mirror in new_ann and mirror not in old_ann:
        errs.append(FieldError.forbidden(f"metadata.annotations[{mirror}]",
                                         "may not add mirror pod annotation"))
    return errs + validate_pod_spec_update(dict_at(new, "spec"), dict_at(old, "spec"))


# -- Namespace ------------------------------------------------------------------------------


@validator("", "Namespace")
def validate_namespace(ns: Obj) -> Errors:
    errs: Errors = []
    for f in list_at(dict_at(ns, "spec"), "finalizers"):
        errs += validate_finalizers([f], "spec.finalizers", indexed=False)
    return errs


# -- ConfigMap and Secret ---------------------------------------------------------------------


@validator("", "ConfigMap")
def validate_config_map(cm: Obj) -> Errors:
    errs: Errors = []
    data, binary = dict_at(cm, "data"), dict_at(cm, "binaryData")
    total = 0
    for k, v in data.items():
        errs += invalid_each(f"data[{k}]", k, is_config_map_key(k))
        if k in binary:
            errs.append(FieldError.invalid(f"data[{k}]", k,
                                           "duplicate of key present in binaryData"))
        total += len(str(v).encode())
    for k, v in binary.items():
        errs += invalid_each(f"binaryData[{k}]", k, is_config_map_key(k))
        total += _decoded_size(v)
    if total > MAX_SECRET_SIZE:
        errs.append(FieldError.too_long("", "", MAX_SECRET_SIZE))
    return errs


def _decoded_size(value: Any) -> int:
    try:
        return len(base64.b64decode(str(value), validate=True))
    except (binascii.Error, ValueError):
        return len(str(value))


def _immutable_data(new: Obj, old: Obj, fields: tuple[str, ...]) -> Errors:
    if old.get("immutable") is not True:
        return []
    errs: Errors = []
    if new.get("immutable") is not True:
        errs.append(FieldError.forbidden("immutable",
                                         "field is immutable when `immutable` is set"))
    for field in fields:
        if (new.get(field) or {}) != (old.get(field) or {}):
            errs.append(FieldError.forbidden(field, "field is immutable when `immutable` is set"))
    return errs


@update_validator("", "ConfigMap")
def validate_config_map_update(new: Obj, old: Obj) -> Errors:
    return _immutable_data(new, old, ("data", "binaryData"))


_DOCKER_KEYS = {"kubernetes.io/dockercfg": ".dockercfg",
                "kubernetes.io/dockerconfigjson": ".dockerconfigjson"}


@validator("", "Secret")
def validate_secret(secret: Obj) -> Errors:
    errs: Errors = []
    data = dict_at(secret, "data")
    total = 0
    for k, v in data.items():
        errs += invalid_each(f"data[{k}]", k, is_config_map_key(k))
        total += _decoded_size(v)
    if total > MAX_SECRET_SIZE:
        errs.append(FieldError.too_long("data", "", MAX_SECRET_SIZE))
    return errs + _secret_type_keys(secret, data)


def _secret_type_keys(secret: Obj, data: Obj) -> Errors:
    """The keys each well-known secret type must carry."""
    kind = str_at(secret, "type")
    if kind == "kubernetes.io/service-account-token":
        ann = dict_at(dict_at(secret, "metadata"), "annotations")
        if not ann.get("kubernetes.io/service-account.name"):
            return [FieldError.required("metadata.annotations[kubernetes.io/service-account.name]")]
    elif kind == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            return [FieldError.required("data[username]"), FieldError.required("data[password]")]
    elif kind == "kubernetes.io/ssh-auth":
        if not data.get("ssh-privatekey"):
            return [FieldError.required("data[ssh-privatekey]")]
    elif kind == "kubernetes.io/tls":
        return [FieldError.required(f"data[{k}]") for k in ("tls.crt", "tls.key") if k not in data]
    elif kind in _DOCKER_KEYS:
        k = _DOCKER_KEYS[kind]
        if k not in data:
            return [FieldError.required(f"data[{k}]")]
        try:
            if not isinstance(orjson.loads(base64.b64decode(str(data[k]))), dict):
                raise ValueError("json: cannot unmarshal into Go value of type map")
        except (ValueError, binascii.Error) as e:
            return [FieldError.invalid(f"data[{k}]", "<secret contents redacted>", str(e))]
    return []


@update_validator("", "Secret")
def validate_secret_update(new: Obj, old: Obj) -> Errors:
    errs = validate_immutable(new.get("type", ""), old.get("type", ""), "type")
    return errs + _immutable_data(new, old, ("data",))


# -- ResourceQuota and LimitRange -------------------------------------------------------------

_SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass",
           "CrossNamespacePodAffinity", "VolumeAttributesClass")
_CONFLICTING_SCOPES = ({"BestEffort", "NotBestEffort"}, {"Terminating", "NotTerminating"})


@validator("", "ResourceQuota")
def validate_resource_quota(rq: Obj) -> Errors:
    spec = dict_at(rq, "spec")
    errs: Errors = []
    for k, v in dict_at(spec, "hard").items():
        errs += validate_quota_resource_name(k, f"spec.hard[{k}]")
        errs += validate_quantity_value(k, v, f"spec.hard[{k}]")
    scopes = [str(s) for s in list_at(spec, "scopes")]
    for s in scopes:
        if s not in _SCOPES:
            errs.append(FieldError.invalid("spec.scopes", scopes, "unsupported scope"))
    errs += [FieldError.invalid("spec.scopes", scopes, "conflicting scopes")
             for pair in _CONFLICTING_SCOPES if pair <= set(scopes)]
    for req in dicts_at(dict_at(spec, "scopeSelector"), "matchExpressions"):
        p = "spec.scopeSelector.matchExpressions"
        name, op, values = str_at(req, "scopeName"), str_at(req, "operator"), list_at(req, "values")
        if name not in _SCOPES:
            errs.append(FieldError.invalid(child(p, "scopeName"), name, "unsupported scope"))
        if op in ("In", "NotIn"):
            if not values:
                errs.append(FieldError.required(child(p, "values"), "must be at least one value "
                                                "when `operator` is 'In' or 'NotIn' for scope "
                                                "selector"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(FieldError.invalid(child(p, "values"), values, "must be no value when "
                                               "`operator` is 'Exist' or 'DoesNotExist' for scope "
                                               "selector"))
        else:
            errs.append(FieldError.invalid(child(p, "operator"), op,
                                           "not a valid selector operator"))
    return errs


@update_validator("", "ResourceQuota")
def validate_resource_quota_update(new: Obj, old: Obj) -> Errors:
    scopes = set(list_at(dict_at(new, "spec"), "scopes"))
    if scopes != set(list_at(dict_at(old, "spec"), "scopes")):
        return [FieldError.invalid("spec.scopes", list_at(dict_at(new, "spec"), "scopes"),
                                   FIELD_IMMUTABLE)]
    return []


@validator("", "LimitRange")
def validate_limit_range(lr: Obj) -> Errors:
    errs: Errors = []
    seen: set[str] = set()
    for i, item in enumerate(dicts_at(dict_at(lr, "spec"), "limits")):
        p = index("spec.limits", i)
        kind = str_at(item, "type")
        type_errs = validate_qualified_name(kind, child(p, "type"))
        if not type_errs and "/" not in kind and kind not in STANDARD_LIMIT_TYPES:
            type_errs = [FieldError.invalid(child(p, "type"), kind,
                                            "must be a standard limit type or fully qualified")]
        errs += type_errs
        if kind in seen:
            errs.append(FieldError.duplicate(child(p, "type"), kind))
        seen.add(kind)
        errs += _limit_range_item(item, kind, p)
    return errs


def _limit_range_item(item: Obj, kind: str, p: str) -> Errors:
    errs: Errors = []
    name_check = validate_container_resource_name if kind in ("Pod", "Container") \
        else validate_resource_name
    lists: dict[str, Obj] = {}
    for field in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
        values = dict_at(item, field)
        if kind == "Pod" and field in ("default", "defaultRequest"):
            if values:
                errs.append(FieldError.forbidden(child(p, field),
                                                 "may not be specified when `type` is 'Pod'"))
            continue
        for k in values:
            errs += name_check(k, f"{child(p, field)}[{k}]")
        lists[field] = values
    if kind == "PersistentVolumeClaim" and "storage" not in dict_at(item, "min") \
            and "storage" not in dict_at(item, "max"):
        errs.append(FieldError.required(child(p, "limits"), "either minimum or maximum storage "
                                        "value is required, but neither was provided"))
    keys = {k for values in lists.values() for k in values}
    for k in sorted(keys):
        q = {field: parse(values[k]) for field, values in lists.items() if k in values}
        s = {field: text(values[k]) for field, values in lists.items() if k in values}
        mn, mx, df, dr = q.get("min"), q.get("max"), q.get("default"), q.get("defaultRequest")
        checks = [
            (mn is not None and mx is not None and mn > mx, "min", "min",
             f"min value {s.get('min')} is greater than max value {s.get('max')}"),
            (dr is not None and mn is not None and mn > dr, "defaultRequest", "defaultRequest",
             f"min value {s.get('min')} is greater than default request value "
             f"{s.get('defaultRequest')}"),
            (dr is not None and mx is not None and dr > mx, "defaultRequest", "defaultRequest",
             f"default request value {s.get('defaultRequest')} is greater than max value "
             f"{s.get('max')}"),
            (dr is not None and df is not None and dr > df, "defaultRequest", "defaultRequest",
             f"default request value {s.get('defaultRequest')} is greater than default limit "
             f"value {s.get('default')}"),
            (df is not None and mn is not None and mn > df, "default", "min",
             f"min value {s.get('min')} is greater than default value {s.get('default')}"),
            (df is not None and mx is not None and df > mx, "default", "max",
             f"default value {s.get('default')} is greater than max value {s.get('max')}"),
        ]
        for failed, field, shown, msg in checks:
            if failed:
                errs.append(FieldError.invalid(f"{child(p, field)}[{k}]", s.get(shown), msg))
        ratio = q.get("maxLimitRequestRatio")
        if ratio is not None and ratio < 1:
            errs.append(FieldError.invalid(f"{child(p, 'maxLimitRequestRatio')}[{k}]",
                                           s["maxLimitRequestRatio"],
                                           f"ratio {s['maxLimitRequestRatio']} is less than 1"))
        if not is_overcommit_allowed(k) and df is not None and dr is not None and df != dr:
            errs.append(FieldError.invalid(f"{child(p, 'defaultRequest')}[{k}]",
                                           s["defaultRequest"],
                                           f"default value {s['default']} must equal to "
                                           f"defaultRequest value {s['defaultRequest']} in {k}"))
    return errs


# -- Node -------------------------------------------------------------------------------------


def _validate_taints(taints: list[Obj], path: str) -> Errors:
    errs: Errors = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        p = index(path, i)
        k, effect = str_at(taint, "key"), str_at(taint, "effect")
        errs += validate_label_name(k, child(p, "key"))
        msgs = is_label_value(str_at(taint, "value"))
        if msgs:
            errs.append(FieldError.invalid(child(p, "value"), str_at(taint, "value"),
                                           ";".join(msgs)))
        if not effect:
            errs.append(FieldError.required(child(p, "effect")))
        elif effect not in TAINT_EFFECTS:
            errs.append(FieldError.not_supported(child(p, "effect"), effect, TAINT_EFFECTS))
        if (k, effect) in seen:
            errs.append(FieldError(DUPLICATE, p, taint,
                                   "taints must be unique by key and effect pair"))
            continue
        seen.add((k, effect))
    return errs


@validator("", "Node")
def validate_node(node: Obj) -> Errors:
    spec, status = dict_at(node, "spec"), dict_at(node, "status")
    errs = _validate_taints(dicts_at(spec, "taints"), "metadata.taints")
    for field in ("capacity", "allocatable"):
        for k, v in dict_at(status, field).items():
            errs += validate_quantity_value(k, v, f"status.{field}.{k}")
    cidrs = [str(c) for c in list_at(spec, "podCIDRs")]
    for i, cidr in enumerate(cidrs):
        errs += validate_cidr(cidr, index("spec.podCIDRs", i))
    if len(cidrs) != len(set(cidrs)):
        for i, cidr in enumerate(cidrs):
            if cidr in cidrs[:i]:
                errs.append(FieldError.duplicate(index("spec.podCIDRs", i), cidr))
    return errs


@update_validator("", "Node")
def validate_node_update(new: Obj, old: Obj) -> Errors:
    errs: Errors = []
    spec, old_spec = dict_at(new, "spec"), dict_at(old, "spec")
    if old_spec.get("podCIDRs") and spec.get("podCIDRs") != old_spec.get("podCIDRs"):
        errs.append(FieldError.forbidden("spec.podCIDRs", 'node updates may not change podCIDR '
                                         'except from "" to valid'))
    if old_spec.get("providerID") and spec.get("providerID") != old_spec["providerID"]:
        errs.append(FieldError.forbidden("spec.providerID", 'node updates may not change '
                                         'providerID except from "" to valid'))
    if spec.get("externalID", "") != old_spec.get("externalID", ""):
        errs.append(FieldError.forbidden("spec.externalID", "may not be updated"))
    addresses = dicts_at(dict_at(new, "status"), "addresses")
    for i, addr in enumerate(addresses):
        if addr in addresses[:i]:
            errs.append(FieldError.duplicate(index("status.addresses", i), addr))
    return errs


# -- Endpoints and Events ------------------------------------------------------------------------


@validator("", "Endpoints")
def validate_endpoints(ep: Obj) -> Errors:
    errs: Errors = []
    for i, subset in enumerate(dicts_at(ep, "subsets")):
        p = index("subsets", i)
        if not subset.get("addresses") and not subset.get("notReadyAddresses"):
            errs.append(FieldError.required(p, "must specify `addresses` or `notReadyAddresses`"))
        for field in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(dicts_at(subset, field)):
                ap = index(child(p, field), j)
                errs += validate_ip(str_at(addr, "ip"), child(ap, "ip"))
                if addr.get("hostname"):
                    errs += validate_dns1123_label(str(addr["hostname"]), child(ap, "hostname"))
                if "nodeName" in addr:
                    errs += invalid_each(child(ap, "nodeName"), addr["nodeName"],
                                         name_is_dns_subdomain(str(addr["nodeName"]), False))
                errs += validate_non_special_ip(str_at(addr, "ip"), child(ap, "ip"))
        ports = dicts_at(subset, "ports")
        for j, port in enumerate(ports):
            errs += validate_endpoint_port(port, index(child(p, "ports"), j), len(ports) > 1)
    return errs


def validate_endpoint_port(port: Obj, path: str, require_name: bool) -> Errors:
    errs: Errors = []
    name = str_at(port, "name")
    if require_name and not name:
        errs.append(FieldError.required(child(path, "name")))
    elif name:
        errs += validate_dns1123_label(name, child(path, "name"))
    errs += invalid_each(child(path, "port"), port.get("port", 0),
                         is_valid_port_num(int(port.get("port") or 0)))
    protocol = str_at(port, "protocol")
    if not protocol:
        errs.append(FieldError.required(child(path, "protocol")))
    elif protocol not in PROTOCOLS:
        errs.append(FieldError.not_supported(child(path, "protocol"), protocol, PROTOCOLS))
    if "appProtocol" in port:
        errs += validate_qualified_name(str(port["appProtocol"]), child(path, "appProtocol"))
    return errs


_EVENT_LIMITS = {"reportingInstance": 128, "action": 128, "reason": 128, "message": 1024}


@validator("", "Event")
def validate_event(event: Obj) -> Errors:
    """Legacy (core/v1) event rules, which events.k8s.io events must also pass."""
    errs: Errors = []
    namespace = str_at(dict_at(event, "metadata"), "namespace")
    involved_ns = str_at(dict_at(event, "involvedObject"), "namespace")
    mismatch = FieldError.invalid("involvedObject.namespace", involved_ns,
                                  "does not match event.namespace")
    if not event.get("eventTime"):
        if not involved_ns:
            if namespace not in ("", "default"):
                errs.append(mismatch)
        elif namespace != involved_ns:
            errs.append(mismatch)
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            errs.append(mismatch)
        controller = str_at(event, "reportingComponent")  # reportingController in events/v1
        if not controller:
            errs.append(FieldError.required("reportingController"))
        errs += validate_qualified_name(controller, "reportingController")
        for field, limit in _EVENT_LIMITS.items():
            value = str_at(event, field)
            if not value and field != "message":
                errs.append(FieldError.required(field))
            if len(value) > limit:
                errs.append(FieldError.invalid(field, "", f"can have at most {limit} characters"))
    errs += invalid_each("namespace", namespace, is_dns1123_subdomain(namespace))
    return errs
