"""The ``networking.k8s.io`` group: Ingresses, IngressClasses, NetworkPolicies."""

from __future__ import annotations

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    int_at,
    invalid_each,
    is_dns1123_subdomain,
    is_path_segment_name,
    is_valid_port_name,
    is_valid_port_num,
    is_wildcard_dns1123_subdomain,
    list_at,
    name_is_dns1035_label,
    name_is_dns_label,
    name_is_dns_subdomain,
    parse_ip,
    str_at,
    validate_cidr,
    validate_immutable,
)
from kybernetes.api.validation.labels import validate_label_selector

PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]
_INVALID_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_SUFFIXES = ("/..", "/.")

# -- Ingress ----------------------------------------------------------------------------------


@validator("networking.k8s.io", "Ingress")
def validate_ingress(ing: Obj) -> Errors:
    spec = dict_at(ing, "spec")
    errs: Errors = []
    rules = dicts_at(spec, "rules")
    if not rules and "defaultBackend" not in spec:
        errs.append(FieldError.invalid("spec", list_at(spec, "rules"),
                                       "either `defaultBackend` or `rules` must be specified"))
    if "defaultBackend" in spec:
        errs += _backend(dict_at(spec, "defaultBackend"), "spec.defaultBackend")
    for i, rule in enumerate(rules):
        errs += _rule(rule, index("spec.rules", i))
    for i, tls in enumerate(dicts_at(spec, "tls")):
        p = index("spec.tls", i)
        for j, host in enumerate(list_at(tls, "hosts")):
            host = str(host)
            check = is_wildcard_dns1123_subdomain if "*" in host else is_dns1123_subdomain
            errs += invalid_each(index(child(p, "hosts"), j), host, check(host))
        secret = str_at(tls, "secretName")
        if secret:
            errs += invalid_each(child(p, "secretName"), secret,
                                 name_is_dns_subdomain(secret, False))
    if spec.get("ingressClassName") is not None:
        name = str(spec["ingressClassName"])
        errs += invalid_each("spec.ingressClassName", name, name_is_dns_subdomain(name, False))
    annotation = dict_at(dict_at(ing, "metadata"), "annotations").get("kubernetes.io/ingress.class")
    if annotation is not None and spec.get("ingressClassName") is not None \
            and annotation != spec["ingressClassName"]:
        errs.append(FieldError.invalid("annotations.kubernetes.io/ingress.class", annotation,
                                       "must match `ingressClassName` when both are specified"))
    return errs


def _rule(rule: Obj, path: str) -> Errors:
    errs: Errors = []
    host = str_at(rule, "host")
    if host:
        if parse_ip(host) is not None:
            errs.append(FieldError.invalid(child(path, "host"), host,
                                           "must be a DNS name, not an IP address"))
        check = is_wildcard_dns1123_subdomain if "*" in host else is_dns1123_subdomain
        errs += invalid_each(child(path, "host"), host, check(host))
    if isinstance(rule.get("http"), dict):
        hp = child(path, "http")
        paths = dicts_at(rule["http"], "paths")
        if not paths:
            errs.append(FieldError.required(child(hp, "paths")))
        for i, p in enumerate(paths):
            errs += _http_path(p, index(child(hp, "paths"), i))
    return errs


def _http_path(p: Obj, path: str) -> Errors:
    if "pathType" not in p:
        return [FieldError.required(child(path, "pathType"), "pathType must be specified")]
    errs: Errors = []
    kind, value = p["pathType"], str_at(p, "path")
    pp = child(path, "path")
    if kind in ("Exact", "Prefix"):
        if not value.startswith("/"):
            errs.append(FieldError.invalid(pp, value, "must be an absolute path"))
        if value:
            errs += [FieldError.invalid(pp, value, f"must not contain '{seq}'")
                     for seq in _INVALID_SEQUENCES if seq in value]
            errs += [FieldError.invalid(pp, value, f"cannot end with '{suffix}'")
                     for suffix in _INVALID_SUFFIXES if value.endswith(suffix)]
    elif kind == "ImplementationSpecific":
        if value and not value.startswith("/"):
            errs.append(FieldError.invalid(pp, value, "must be an absolute path"))
    else:
        errs.append(FieldError.not_supported(child(path, "pathType"), kind, PATH_TYPES))
    return errs + _backend(dict_at(p, "backend"), child(path, "backend"))


def _backend(backend: Obj, path: str) -> Errors:
    has_resource, has_service = "resource" in backend, "service" in backend
    if has_resource and has_service:
        return [FieldError.invalid(path, "", "cannot set both resource and service backends")]
    if has_resource:
        return _typed_reference(dict_at(backend, "resource"), child(path, "resource"))
    if not has_service:
        return [FieldError.invalid(path, "", "resource or service backend is required")]
    service = dict_at(backend, "service")
    errs: Errors = []
    name = str_at(service, "name")
    if not name:
        errs.append(FieldError.required(child(path, "service", "name")))
    else:
        errs += invalid_each(child(path, "service", "name"), name,
                             name_is_dns1035_label(name, False))
    port = dict_at(service, "port")
    port_name, number = str_at(port, "name"), int_at(port, "number")
    if port_name and number:
        errs.append(FieldError.invalid(path, "", "cannot set both port name & port number"))
    elif port_name:
        errs += invalid_each(child(path, "service", "port", "name"), port_name,
                             is_valid_port_name(port_name))
    elif number:
        errs += invalid_each(child(path, "service", "port", "number"), number,
                             is_valid_port_num(number))
    else:
        errs.append(FieldError.required(path, "port name or number is required"))
    return errs


def _typed_reference(ref: Obj, path: str) -> Errors:
    errs: Errors = []
    if ref.get("apiGroup") is not None:
        group = str(ref["apiGroup"])
        errs += invalid_each(child(path, "apiGroup"), group, is_dns1123_subdomain(group))
    for field in ("kind", "name"):
        value = str_at(ref, field)
        if not value:
            errs.append(FieldError.required(child(path, field)))
        else:
            errs += invalid_each(child(path, field), value, is_path_segment_name(value))
    return errs


# -- IngressClass -----------------------------------------------------------------------------


@validator("networking.k8s.io", "IngressClass")
def validate_ingress_class(ic: Obj) -> Errors:
    spec = dict_at(ic, "spec")
    errs: Errors = []
    controller = str_at(spec, "controller")
    if not controller:
        errs.append(FieldError.required("spec.controller"))
    else:
        if len(controller) > 250:
            errs.append(FieldError.too_long("spec.controller", "", 250))
        host, _, rest = controller.partition("/")
        if not host or not rest:
            errs.append(FieldError.invalid(
                "spec.controller", controller,
                'must be a domain-prefixed path (such as "acme.io/foo")'))
        else:
            errs += invalid_each("spec.controller", host, is_dns1123_subdomain(host))
    if isinstance(spec.get("parameters"), dict):
        errs += _parameters(spec["parameters"], "spec.parameters")
    return errs


def _parameters(params: Obj, path: str) -> Errors:
    errs = _typed_reference(params, path)
    if "scope" not in params:
        return [*errs, FieldError.required(child(path, "scope"))]
    scope = params["scope"]
    if scope not in ("Cluster", "Namespace"):
        errs.append(FieldError.not_supported(child(path, "scope"), scope, ["Cluster", "Namespace"]))
    elif scope == "Namespace":
        if "namespace" not in params:
            errs.append(FieldError.required(child(path, "namespace"),
                                            "`parameters.scope` is set to 'Namespace'"))
        else:
            ns = str(params["namespace"])
            errs += invalid_each(child(path, "namespace"), ns, name_is_dns_label(ns, False))
    elif "namespace" in params:
        errs.append(FieldError.forbidden(child(path, "namespace"),
                                         "`parameters.scope` is set to 'Cluster'"))
    return errs


@update_validator("networking.k8s.io", "IngressClass")
def validate_ingress_class_update(new: Obj, old: Obj) -> Errors:
    return validate_immutable(dict_at(new, "spec").get("controller"),
                              dict_at(old, "spec").get("controller"), "spec.controller")


# -- NetworkPolicy ----------------------------------------------------------------------------


@validator("networking.k8s.io", "NetworkPolicy")
def validate_network_policy(np: Obj) -> Errors:
    spec = dict_at(np, "spec")
    errs = validate_label_selector(dict_at(spec, "podSelector"), "spec.podSelector")
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(dicts_at(spec, direction)):
            rp = index(f"spec.{direction}", i)
            for j, port in enumerate(dicts_at(rule, "ports")):
                errs += _policy_port(port, index(child(rp, "ports"), j))
            for j, peer in enumerate(dicts_at(rule, peers)):
                errs += _peer(peer, index(child(rp, peers), j))
    types = list_at(spec, "policyTypes")
    if len(types) > 2:
        return [*errs, FieldError.invalid("spec.policyTypes", types,
                                          "may not specify more than two policyTypes")]
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            errs.append(FieldError.not_supported(index("spec.policyTypes", i), t,
                                                 ["Ingress", "Egress"]))
    return errs


def _policy_port(port: Obj, path: str) -> Errors:
    errs: Errors = []
    protocol = port.get("protocol")
    if protocol is not None and protocol not in ("TCP", "UDP", "SCTP"):
        errs.append(FieldError.not_supported(child(path, "protocol"), protocol,
                                             ["TCP", "UDP", "SCTP"]))
    value, end = port.get("port"), port.get("endPort")
    if isinstance(value, int) and not isinstance(value, bool):
        errs += invalid_each(child(path, "port"), value, is_valid_port_num(value))
        if isinstance(end, int):
            if end < value:
                errs.append(FieldError.invalid(child(path, "endPort"), end,
                                               "must be greater than or equal to `port`"))
            errs += invalid_each(child(path, "endPort"), end, is_valid_port_num(end))
    elif isinstance(value, str):
        if end is not None:
            errs.append(FieldError.invalid(child(path, "endPort"), end,
                                           "may not be specified when `port` is non-numeric"))
        errs += invalid_each(child(path, "port"), value, is_valid_port_name(value))
    elif end is not None:
        errs.append(FieldError.invalid(child(path, "endPort"), end,
                                       "may not be specified when `port` is not specified"))
    return errs


def _peer(peer: Obj, path: str) -> Errors:
    errs: Errors = []
    count = 0
    for field in ("podSelector", "namespaceSelector"):
        if field in peer:
            count += 1
            errs += validate_label_selector(dict_at(peer, field), child(path, field))
    if "ipBlock" in peer:
        count += 1
        block, bp = dict_at(peer, "ipBlock"), child(path, "ipBlock")
        cidr = str_at(block, "cidr")
        if not cidr:
            errs.append(FieldError.required(child(bp, "cidr")))
        else:
            errs += validate_cidr(cidr, child(bp, "cidr"))
            for i, ex in enumerate(list_at(block, "except")):
                errs += validate_cidr(str(ex), index(child(bp, "except"), i))
    if count == 0:
        errs.append(FieldError.required(path, "must specify a peer"))
    elif count > 1 and "ipBlock" in peer:
        errs.append(FieldError.forbidden(path, "may not specify both ipBlock and another peer"))
    return errs
