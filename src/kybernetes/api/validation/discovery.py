"""The ``discovery.k8s.io`` group: EndpointSlices."""

from __future__ import annotations

import ipaddress

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    invalid_each,
    is_dns1123_label,
    is_dns1123_subdomain,
    list_at,
    name_is_dns_subdomain,
    parse_ip,
    str_at,
    validate_dns1123_label,
    validate_immutable,
    validate_non_special_ip,
    validate_qualified_name,
)
from kybernetes.api.validation.containers import PROTOCOLS
from kybernetes.api.validation.labels import validate_labels

ADDRESS_TYPES = ["FQDN", "IPv4", "IPv6"]
MAX_ENDPOINTS, MAX_ADDRESSES, MAX_PORTS, MAX_TOPOLOGY_LABELS = 1000, 100, 20000, 16


@validator("discovery.k8s.io", "EndpointSlice")
def validate_endpoint_slice(es: Obj) -> Errors:
    errs: Errors = []
    kind = str_at(es, "addressType")
    if not kind:
        errs.append(FieldError.required("addressType"))
    elif kind not in ADDRESS_TYPES:
        errs.append(FieldError.not_supported("addressType", kind, ADDRESS_TYPES))
    endpoints = dicts_at(es, "endpoints")
    if len(endpoints) > MAX_ENDPOINTS:
        errs.append(FieldError.too_many("endpoints", len(endpoints), MAX_ENDPOINTS))
    else:
        for i, ep in enumerate(endpoints):
            errs += _endpoint(ep, index("endpoints", i), kind)
    ports = dicts_at(es, "ports")
    if len(ports) > MAX_PORTS:
        return [*errs, FieldError.too_many("ports", len(ports), MAX_PORTS)]
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = index("ports", i)
        name = str_at(port, "name")
        if name:
            errs += validate_dns1123_label(name, child(p, "name"))
        if name in names:
            errs.append(FieldError.duplicate(child(p, "name"), name))
        names.add(name)
        if port.get("protocol") is None:
            errs.append(FieldError.required(child(p, "protocol")))
        elif port["protocol"] not in PROTOCOLS:
            errs.append(FieldError.not_supported(child(p, "protocol"), port["protocol"], PROTOCOLS))
        if port.get("appProtocol") is not None:
            errs += validate_qualified_name(str(port["appProtocol"]), child(p, "appProtocol"))
    return errs


def _endpoint(ep: Obj, path: str, kind: str) -> Errors:
    errs: Errors = []
    addresses = list_at(ep, "addresses")
    ap = child(path, "addresses")
    if not addresses:
        errs.append(FieldError.required(ap, "must contain at least 1 address"))
    elif len(addresses) > MAX_ADDRESSES:
        errs.append(FieldError.too_many(ap, len(addresses), MAX_ADDRESSES))
    for i, address in enumerate(addresses):
        address, p = str(address), index(ap, i)
        if kind in ("IPv4", "IPv6"):
            ip = parse_ip(address)
            want = ipaddress.IPv4Address if kind == "IPv4" else ipaddress.IPv6Address
            if not isinstance(ip, want):
                errs.append(FieldError.invalid(p, address, f"must be a valid {kind} address"))
            else:
                errs += validate_non_special_ip(address, p)
        elif kind == "FQDN":
            errs += _fqdn(address, p)
    if ep.get("nodeName") is not None:
        node = str(ep["nodeName"])
        errs += invalid_each(child(path, "nodeName"), node, name_is_dns_subdomain(node, False))
    topology = dict_at(ep, "deprecatedTopology")
    tp = child(path, "deprecatedTopology")
    if len(topology) > MAX_TOPOLOGY_LABELS:
        errs.append(FieldError.too_many(tp, len(topology), MAX_TOPOLOGY_LABELS))
    errs += validate_labels(topology, tp)
    if ep.get("hostname") is not None:
        errs += validate_dns1123_label(str(ep["hostname"]), child(path, "hostname"))
    return errs


def _fqdn(name: str, path: str) -> Errors:
    if not name:
        return [FieldError.required(path)]
    name = name.removesuffix(".")
    msgs = is_dns1123_subdomain(name)
    if msgs:
        return [FieldError.invalid(path, name, ",".join(msgs))]
    if len(name.split(".")) < 2:
        return [FieldError.invalid(
            path, name, "should be a domain with at least two segments separated by dots")]
    for label in name.split("."):
        msgs = is_dns1123_label(label)
        if msgs:
            return [FieldError.invalid(path, label, ",".join(msgs))]
    return []


@update_validator("discovery.k8s.io", "EndpointSlice")
def validate_endpoint_slice_update(new: Obj, old: Obj) -> Errors:
    return validate_immutable(new.get("addressType", ""), old.get("addressType", ""), "addressType")
