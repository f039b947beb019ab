"""Services: ports, types, cluster IPs and their immutability.

The API server allocates cluster IPs and node ports; these checks see the result (node
ports outside 30000-32767 are rejected with the allocator's message).
"""

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
    is_valid_port_num,
    list_at,
    parse_ip,
    str_at,
    validate_cidr,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_enum,
    validate_ip,
    validate_non_special_ip,
    validate_qualified_name,
)
from kybernetes.api.validation.containers import PROTOCOLS, validate_port_num_or_name
from kybernetes.api.validation.labels import validate_labels

SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
NODE_PORT_RANGE = (30000, 32767)
MAX_CLIENT_IP_AFFINITY_SECONDS = 86400
_SPEC = "spec"


def is_headless(svc: Obj) -> bool:
    ips = list_at(dict_at(svc, "spec"), "clusterIPs")
    return len(ips) == 1 and ips[0] == "None"


def externally_accessible(spec: Obj) -> bool:
    return spec.get("type") in ("LoadBalancer", "NodePort") or \
        (spec.get("type") == "ClusterIP" and bool(spec.get("externalIPs")))


@validator("", "Service")
def validate_service(svc: Obj) -> Errors:
    spec = dict_at(svc, "spec")
    kind = str_at(spec, "type")
    headless = is_headless(svc)
    errs: Errors = []
    ports = dicts_at(spec, "ports")
    if not ports and not headless and kind != "ExternalName":
        errs.append(FieldError.required("spec.ports"))
    errs += _type_specific(spec, kind, headless)
    names: set[str] = set()
    for i, port in enumerate(ports):
        errs += _validate_port(port, index("spec.ports", i), len(ports) > 1, names)
    if "selector" in spec:
        errs += validate_labels(spec.get("selector"), "spec.selector")
    affinity = str_at(spec, "sessionAffinity")
    errs += validate_enum(affinity, "spec.sessionAffinity", ["ClientIP", "None"])
    if affinity == "ClientIP":
        errs += _client_ip_config(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
    elif affinity == "None" and "sessionAffinityConfig" in spec:
        errs.append(FieldError.forbidden("spec.sessionAffinityConfig",
                                         "must not be set when session affinity is None"))
    errs += validate_cluster_ips(spec, headless)
    for i, ip in enumerate(list_at(spec, "externalIPs")):
        p = index("spec.externalIPs", i)
        errs += validate_ip(str(ip), p) or validate_non_special_ip(str(ip), p)
    errs += validate_enum(kind, "spec.type", SERVICE_TYPES)
    errs += _node_ports(spec, ports, kind)
    errs += _source_ranges(svc, spec, kind)
    if "allocateLoadBalancerNodePorts" in spec and kind != "LoadBalancer":
        errs.append(FieldError.forbidden("spec.allocateLoadBalancerNodePorts",
                                         "may only be used when `type` is 'LoadBalancer'"))
    if kind == "LoadBalancer" and "allocateLoadBalancerNodePorts" not in spec:
        errs.append(FieldError.required("allocateLoadBalancerNodePorts"))
    if "loadBalancerClass" in spec:
        if kind == "LoadBalancer":
            errs += validate_qualified_name(str(spec["loadBalancerClass"]),
                                            "spec.loadBalancerClass")
        else:
            errs.append(FieldError.forbidden("spec.loadBalancerClass",
                                             "may only be used when `type` is 'LoadBalancer'"))
    errs += _traffic_policies(spec, kind)
    return errs


def _type_specific(spec: Obj, kind: str, headless: bool) -> Errors:
    ips = list_at(spec, "clusterIPs")
    if kind in ("LoadBalancer", "NodePort") and headless:
        return [FieldError.invalid("spec.clusterIPs[0]", ips[0],
                                   f"may not be set to 'None' for {kind} services")]
    if kind != "ExternalName":
        return []
    errs: Errors = []
    for field in ("clusterIPs", "ipFamilies"):
        if spec.get(field):
            errs.append(FieldError.forbidden(child(_SPEC, field),
                                             "may not be set for ExternalName services"))
    if "ipFamilyPolicy" in spec:
        errs.append(FieldError.forbidden("spec.ipFamilyPolicy",
                                         "may not be set for ExternalName services"))
    cname = str_at(spec, "externalName").removesuffix(".")
    if cname:
        errs += validate_dns1123_subdomain(cname, "spec.externalName")
    else:
        errs.append(FieldError.required("spec.externalName"))
    return errs


def _validate_port(port: Obj, path: str, require_name: bool, names: set[str]) -> Errors:
    errs: Errors = []
    name = str_at(port, "name")
    if require_name and not name:
        errs.append(FieldError.required(child(path, "name")))
    elif name:
        errs += validate_dns1123_label(name, child(path, "name"))
        if name in names:
            errs.append(FieldError.duplicate(child(path, "name"), name))
        names.add(name)
    number = int_at(port, "port")
    errs += invalid_each(child(path, "port"), number, is_valid_port_num(number))
    errs += validate_enum(str_at(port, "protocol"), child(path, "protocol"), PROTOCOLS)
    errs += validate_port_num_or_name(port.get("targetPort", 0), child(path, "targetPort"))
    if "appProtocol" in port:
        errs += validate_qualified_name(str(port["appProtocol"]), child(path, "appProtocol"))
    return errs


def _client_ip_config(config: object, path: str) -> Errors:
    reason = "when session affinity type is ClientIP"
    if not isinstance(config, dict):
        return [FieldError.required(path, reason)]
    if not isinstance(config.get("clientIP"), dict):
        return [FieldError.required(child(path, "clientIP"), reason)]
    timeout = config["clientIP"].get("timeoutSeconds")
    tp = child(path, "clientIP", "timeoutSeconds")
    if timeout is None:
        return [FieldError.required(tp, reason)]
    if not isinstance(timeout, int) or not 0 < timeout <= MAX_CLIENT_IP_AFFINITY_SECONDS:
        return [FieldError.invalid(tp, timeout, "must be greater than 0 and less than "
                                                f"{MAX_CLIENT_IP_AFFINITY_SECONDS}")]
    return []


def validate_cluster_ips(spec: Obj, headless: bool) -> Errors:
    """``ValidateServiceClusterIPsRelatedFields``: clusterIP(s), families and policy agree."""
    if spec.get("type") == "ExternalName":
        return []
    errs: Errors = []
    cluster_ip, ips = str_at(spec, "clusterIP"), [str(ip) for ip in list_at(spec, "clusterIPs")]
    families = [str(f) for f in list_at(spec, "ipFamilies")]
    if cluster_ip:
        if not ips:
            errs.append(FieldError.required("spec.clusterIPs"))
        elif ips[0] != cluster_ip:
            errs.append(FieldError.invalid("spec.clusterIPs", ips, "first value must match "
                                                                   "`clusterIP`"))
    elif ips:
        errs.append(FieldError.invalid("spec.clusterIPs", ips, "must be empty when `clusterIP` "
                                                               "is not specified"))
    for i, fam in enumerate(families):
        if fam not in ("IPv4", "IPv6"):
            errs.append(FieldError.not_supported(index("spec.ipFamilies", i), fam,
                                                 ["IPv4", "IPv6"]))
        if fam in families[:i]:
            errs.append(FieldError.duplicate(index("spec.ipFamilies", i), fam))
    policy = spec.get("ipFamilyPolicy")
    policies = ["PreferDualStack", "RequireDualStack", "SingleStack"]
    if policy is not None and policy not in policies:
        errs.append(FieldError.not_supported("spec.ipFamilyPolicy", policy, policies))
    bad_ips = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                bad_ips = True
                errs.append(FieldError.invalid("spec.clusterIPs", ips,
                                               "'None' must be the first and only value"))
            continue
        ip_errs = validate_ip(ip, index("spec.clusterIPs", i))
        bad_ips |= bool(ip_errs)
        errs += ip_errs
    if len(ips) > 2:
        errs.append(FieldError.invalid("spec.clusterIPs", ips, "may only hold up to 2 values"))
    if bad_ips:
        return errs
    versions = {getattr(parse_ip(ip), "version", 0) for ip in ips}
    if len(ips) > 1 and len(versions) != len(ips):
        errs.append(FieldError.invalid("spec.clusterIPs", ips,
                                       "may specify no more than one IP for each IP family"))
    if not headless:
        for i, (ip, fam) in enumerate(zip(ips, families, strict=False)):
            v6 = getattr(parse_ip(ip), "version", 4) == 6
            if fam == "IPv4" and v6:
                errs.append(FieldError.invalid(index("spec.clusterIPs", i), ip,
                                               f"expected an IPv4 value as indicated by "
                                               f"`ipFamilies[{i}]`"))
            if fam == "IPv6" and not v6:
                errs.append(FieldError.invalid(index("spec.clusterIPs", i), ip,
                                               f"expected an IPv6 value as indicated by "
                                               f"`ipFamilies[{i}]`"))
    return errs


def _node_ports(spec: Obj, ports: list[Obj], kind: str) -> Errors:
    errs: Errors = []
    seen_node: set[tuple[str, int]] = set()
    seen_port: set[tuple[str, int]] = set()
    lo, hi = NODE_PORT_RANGE
    for i, port in enumerate(ports):
        p = index("spec.ports", i)
        node_port, protocol = int_at(port, "nodePort"), str_at(port, "protocol")
        if node_port and kind == "ClusterIP":
            errs.append(FieldError.forbidden(child(p, "nodePort"),
                                             "may not be used when `type` is 'ClusterIP'"))
        if node_port and kind in ("NodePort", "LoadBalancer") and not lo <= node_port <= hi:
            errs.append(FieldError.invalid(child(p, "nodePort"), node_port,
                                           "provided port is not in the valid range. The range of "
                                           f"valid ports is {lo}-{hi}"))
        if node_port:
            if (protocol, node_port) in seen_node:
                errs.append(FieldError.duplicate(child(p, "nodePort"), node_port))
            seen_node.add((protocol, node_port))
    for i, port in enumerate(ports):
        k = (str_at(port, "protocol"), int_at(port, "port"))
        if k in seen_port:
            errs.append(FieldError.duplicate(index("spec.ports", i),
                                             {"port": k[1], "protocol": k[0]}))
        seen_port.add(k)
    return errs


def _source_ranges(svc: Obj, spec: Obj, kind: str) -> Errors:
    errs: Errors = []
    ranges = list_at(spec, "loadBalancerSourceRanges")
    annotation = "service.beta.kubernetes.io/load-balancer-source-ranges"
    annotations = dict_at(dict_at(svc, "metadata"), "annotations")
    if ranges:
        p = "spec.LoadBalancerSourceRanges"
        if kind != "LoadBalancer":
            errs.append(FieldError.forbidden(p, "may only be used when `type` is 'LoadBalancer'"))
        for i, value in enumerate(ranges):
            errs += validate_cidr(str(value).strip(), index(p, i))
    elif annotation in annotations:
        p = f"metadata.annotations[{annotation}]"
        if kind != "LoadBalancer":
            errs.append(FieldError.forbidden(p, "may only be used when `type` is 'LoadBalancer'"))
        value = str(annotations[annotation]).strip()
        for cidr in value.split(",") if value else []:
            errs += validate_cidr(cidr.strip(), p)
    return errs


def _traffic_policies(spec: Obj, kind: str) -> Errors:
    errs: Errors = []
    external = str_at(spec, "externalTrafficPolicy")
    if not externally_accessible(spec):
        if external:
            errs.append(FieldError.invalid("spec.externalTrafficPolicy", external,
                                           "may only be set for externally-accessible services"))
    else:
        errs += validate_enum(external, "spec.externalTrafficPolicy", ["Cluster", "Local"])
    health = int_at(spec, "healthCheckNodePort")
    if kind == "LoadBalancer" and external == "Local":
        if not health:
            errs.append(FieldError.required("spec.healthCheckNodePort"))
        else:
            errs += invalid_each("spec.healthCheckNodePort", health, is_valid_port_num(health))
    elif health:
        errs.append(FieldError.invalid("spec.healthCheckNodePort", health,
                                       "may only be set when `type` is 'LoadBalancer' and "
                                       "`externalTrafficPolicy` is 'Local'"))
    internal = spec.get("internalTrafficPolicy")
    if internal is None:
        if kind in ("NodePort", "LoadBalancer", "ClusterIP"):
            errs.append(FieldError.required("spec.internalTrafficPolicy"))
    elif internal not in ("Cluster", "Local"):
        errs.append(FieldError.not_supported("spec.internalTrafficPolicy", internal,
                                             ["Cluster", "Local"]))
    distribution = spec.get("trafficDistribution")
    if distribution is not None and distribution != "PreferClose":
        errs.append(FieldError.not_supported("spec.trafficDistribution", distribution,
                                             ["PreferClose"]))
    return errs


@update_validator("", "Service")
def validate_service_update(new: Obj, old: Obj) -> Errors:
    spec, old_spec = dict_at(new, "spec"), dict_at(old, "spec")
    if "ExternalName" in (spec.get("type"), old_spec.get("type")):
        return []
    errs: Errors = []
    if not (is_headless(new) and is_headless(old)):
        errs += _upgrade_downgrade(spec, old_spec, "clusterIPs", "clusterIP")
    if is_headless(new) == is_headless(old) and not is_headless(new):
        errs += _upgrade_downgrade(spec, old_spec, "ipFamilies", "ipFamily")
    if old_spec.get("type") == "LoadBalancer" and spec.get("type") == "LoadBalancer" and \
            spec.get("loadBalancerClass") != old_spec.get("loadBalancerClass"):
        errs.append(FieldError.invalid("spec.loadBalancerClass", spec.get("loadBalancerClass"),
                                       "may not change once set"))
    if _needs_health_check(spec) and _needs_health_check(old_spec) and \
            spec.get("healthCheckNodePort") != old_spec.get("healthCheckNodePort"):
        errs.append(FieldError.forbidden("spec.healthCheckNodePort", "field is immutable"))
    return errs


def _needs_health_check(spec: Obj) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _upgrade_downgrade(spec: Obj, old_spec: Obj, field: str, singular: str) -> Errors:
    """Primary values may not change; a secondary may be added or (to SingleStack) released."""
    new, old = list_at(spec, field), list_at(old_spec, field)
    p = f"spec.{field}"
    errs: Errors = []
    if len(new) == len(old):
        for i, value in enumerate(old):
            if value != new[i]:
                errs.append(FieldError.invalid(index(p, 0 if field == "ipFamilies" else i), new,
                                               "may not change once set"))
    elif len(old) > len(new):
        if not list_at(spec, "clusterIPs"):
            errs.append(FieldError.invalid(index(p, 0), new,
                                           f"primary {singular} can not be unset"))
        if new and old and new[0] != old[0]:
            errs.append(FieldError.invalid(index(p, 0), new, "may not change once set"))
        if len(new) == 1 and spec.get("ipFamilyPolicy") != "SingleStack":
            errs.append(FieldError.invalid("spec.ipFamilyPolicy", spec.get("ipFamilyPolicy"),
                                           "must be set to 'SingleStack' when releasing the "
                                           f"secondary {singular}"))
    elif old and new[0] != old[0]:
        errs.append(FieldError.invalid(index(p, 0), new, "may not change once set"))
    return errs
