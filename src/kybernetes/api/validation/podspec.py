"""Pod specs and pod templates, shared by Pods and every workload kind.

    errs = validate_pod_template(deploy["spec"].get("template"), "spec.template")

Expects defaulted objects (as the API server validates them): a missing
``terminationGracePeriodSeconds`` or ``imagePullPolicy`` is reported as required.
"""

from __future__ import annotations

from typing import Any

from kybernetes.api.errors import FieldError
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    inclusive_range_error,
    index,
    int_at,
    invalid_each,
    list_at,
    name_is_dns_subdomain,
    str_at,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_enum,
    validate_ip,
    validate_qualified_name,
)
from kybernetes.api.validation.containers import (
    validate_container_common,
    validate_id,
    validate_lifecycle,
    validate_probe,
    validate_seccomp_profile,
)
from kybernetes.api.validation.labels import (
    validate_annotations,
    validate_labels,
)
from kybernetes.api.validation.placement import (
    validate_affinity,
    validate_scheduling_gates,
    validate_tolerations,
    validate_topology_spread,
)
from kybernetes.api.validation.resources import validate_requirements
from kybernetes.api.validation.volumes import validate_volumes

RESTART_POLICIES = ["Always", "OnFailure", "Never"]
DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
PREEMPTION_POLICIES = ["PreemptLowerPriority", "Never"]
_MAX_INT32 = 2**31 - 1
_PROBES = (("livenessProbe", "liveness"), ("readinessProbe", "readiness"),
           ("startupProbe", "startup"))


def validate_pod_template(template: Any, path: str) -> Errors:
    """``ValidatePodTemplateSpec``: template labels, annotations and pod spec."""
    template = template if isinstance(template, dict) else {}
    meta = dict_at(template, "metadata")
    errs = validate_labels(meta.get("labels"), child(path, "labels"))
    errs += validate_annotations(meta.get("annotations"), child(path, "annotations"))
    spec = dict_at(template, "spec")
    errs += validate_pod_spec(spec, child(path, "spec"))
    if spec.get("ephemeralContainers"):
        errs.append(FieldError.forbidden(child(path, "spec", "ephemeralContainers"),
                                         "ephemeral containers not allowed in pod template"))
    return errs


def validate_pod_spec(spec: Obj, path: str, *, pod_name: str = "", is_pod: bool = False) -> Errors:
    errs: Errors = []
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is None:
        errs.append(FieldError.required(child(path, "terminationGracePeriodSeconds")))
    grace_value = grace if isinstance(grace, int) else None
    volumes, vol_errs = validate_volumes(dicts_at(spec, "volumes"), child(path, "volumes"),
                                         pod_name=pod_name, is_pod=is_pod)
    errs += vol_errs
    claims, claim_errs = _validate_resource_claims(dicts_at(spec, "resourceClaims"),
                                                   child(path, "resourceClaims"))
    errs += claim_errs
    restart = str_at(spec, "restartPolicy")
    common = {"restart_policy": restart, "claims": claims}
    errs += _validate_containers(spec, volumes, child(path, "containers"), grace_value, common)
    errs += _validate_init_containers(spec, volumes, child(path, "initContainers"), grace_value,
                                      common)
    errs += _validate_ephemeral_containers(spec, volumes, child(path, "ephemeralContainers"),
                                           common)
    errs += _host_network_ports(spec, path, is_pod)
    errs += validate_enum(restart, child(path, "restartPolicy"), RESTART_POLICIES)
    errs += validate_enum(str_at(spec, "dnsPolicy"), child(path, "dnsPolicy"), DNS_POLICIES)
    errs += validate_labels(spec.get("nodeSelector"), child(path, "nodeSelector"))
    errs += _validate_pod_security_context(dict_at(spec, "securityContext"),
                                           child(path, "securityContext"))
    for i, ref in enumerate(dicts_at(spec, "imagePullSecrets")):
        if set(ref) - {"name"}:
            errs.append(FieldError.invalid(index(child(path, "imagePullSecrets"), i), ref,
                                           "only name may be set"))
    errs += validate_affinity(dict_at(spec, "affinity"), child(path, "affinity"))
    errs += _validate_dns_config(spec, child(path, "dnsConfig"))
    for i, gate in enumerate(dicts_at(spec, "readinessGates")):
        errs += validate_qualified_name(str_at(gate, "conditionType"),
                                        child(index(child(path, "readinessGates"), i),
                                              "conditionType"))
    errs += validate_scheduling_gates(dicts_at(spec, "schedulingGates"),
                                       child(path, "schedulingGates"))
    errs += validate_topology_spread(dicts_at(spec, "topologySpreadConstraints"),
                                      child(path, "topologySpreadConstraints"))
    for field, fn in (("serviceAccountName", name_is_dns_subdomain),
                      ("nodeName", name_is_dns_subdomain)):
        if spec.get(field):
            errs += invalid_each(child(path, field), spec[field], fn(str(spec[field]), False))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and not 1 <= deadline <= _MAX_INT32:
        errs.append(FieldError.invalid(child(path, "activeDeadlineSeconds"), deadline,
                                       inclusive_range_error(1, _MAX_INT32)))
    for field in ("hostname", "subdomain"):
        if spec.get(field):
            errs += validate_dns1123_label(str(spec[field]), child(path, field))
    errs += validate_tolerations(dicts_at(spec, "tolerations"), child(path, "tolerations"))
    for i, alias in enumerate(dicts_at(spec, "hostAliases")):
        ap = index(child(path, "hostAliases"), i)
        errs += validate_ip(str_at(alias, "ip"), child(ap, "ip"))
        for j, host in enumerate(list_at(alias, "hostnames")):
            errs += validate_dns1123_subdomain(str(host), index(child(ap, "hostnames"), j))
    if spec.get("priorityClassName"):
        errs += invalid_each(child(path, "priorityClassName"), spec["priorityClassName"],
                             name_is_dns_subdomain(str(spec["priorityClassName"]), False))
    if "runtimeClassName" in spec:
        errs += invalid_each(child(path, "runtimeClassName"), spec["runtimeClassName"],
                             name_is_dns_subdomain(str(spec["runtimeClassName"]), False))
    if "preemptionPolicy" in spec:
        errs += validate_enum(str_at(spec, "preemptionPolicy"), child(path, "preemptionPolicy"),
                              PREEMPTION_POLICIES)
    if "overhead" in spec:
        errs += validate_requirements({"limits": spec.get("overhead")}, child(path, "overhead"))
    if "os" in spec:
        errs += _validate_os(dict_at(spec, "os"), child(path, "os"))
    if spec.get("nodeName") and spec.get("schedulingGates"):
        errs.append(FieldError.forbidden(child(path, "nodeName"),
                                         "cannot be set until all schedulingGates have been "
                                         "cleared"))
    return errs


# -- containers -----------------------------------------------------------------------------


def _validate_containers(spec: Obj, volumes: dict[str, Obj], path: str, grace: int | None,
                         common: dict[str, Any]) -> Errors:
    containers = dicts_at(spec, "containers")
    if not containers:
        return [FieldError.required(path)]
    errs: Errors = []
    names: set[str] = set()
    for i, c in enumerate(containers):
        p = index(path, i)
        errs += validate_container_common(c, volumes, p, **common)
        name = str_at(c, "name")
        if name in names:
            errs.append(FieldError.duplicate(child(p, "name"), name))
        names.add(name)
        if "lifecycle" in c:
            errs += validate_lifecycle(dict_at(c, "lifecycle"), child(p, "lifecycle"), grace)
        for field, kind in _PROBES:
            errs += validate_probe(c.get(field), child(p, field), grace, kind)
        if "restartPolicy" in c:
            errs.append(FieldError.forbidden(child(p, "restartPolicy"),
                                             "may not be set for non-init containers"))
    return errs + _host_port_conflicts(containers, path)


def _validate_init_containers(spec: Obj, volumes: dict[str, Obj], path: str, grace: int | None,
                              common: dict[str, Any]) -> Errors:
    errs: Errors = []
    names = {str_at(c, "name") for c in dicts_at(spec, "containers")}
    for i, c in enumerate(dicts_at(spec, "initContainers")):
        p = index(path, i)
        errs += validate_container_common(c, volumes, p, **common)
        sidecar = False
        if "restartPolicy" in c:
            if c["restartPolicy"] != "Always":
                errs.append(FieldError.not_supported(child(p, "restartPolicy"), c["restartPolicy"],
                                                     ["Always"]))
            sidecar = c["restartPolicy"] == "Always"
        name = str_at(c, "name")
        if name in names:
            errs.append(FieldError.duplicate(child(p, "name"), name))
        elif name:
            names.add(name)
        errs += _host_port_conflicts([c], path)
        if sidecar:
            if "lifecycle" in c:
                errs += validate_lifecycle(dict_at(c, "lifecycle"), child(p, "lifecycle"), grace)
            for field, kind in _PROBES:
                errs += validate_probe(c.get(field), child(p, field), grace, kind)
        else:
            for field in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if field in c:
                    errs.append(FieldError.forbidden(child(p, field), "may not be set for init "
                                                     "containers without restartPolicy=Always"))
        if c.get("resizePolicy"):
            errs.append(FieldError.invalid(child(p, "resizePolicy"), c["resizePolicy"],
                                           "must not be set for init containers"))
    return errs


_EPHEMERAL_FORBIDDEN = ("ports", "resources", "livenessProbe", "readinessProbe", "startupProbe",
                        "lifecycle")


def _validate_ephemeral_containers(spec: Obj, volumes: dict[str, Obj], path: str,
                                   common: dict[str, Any]) -> Errors:
    errs: Errors = []
    others = {str_at(c, "name") for c in dicts_at(spec, "containers") + dicts_at(spec,
                                                                                "initContainers")}
    names = set(others)
    for i, c in enumerate(dicts_at(spec, "ephemeralContainers")):
        p = index(path, i)
        errs += validate_container_common(c, volumes, p, **common)
        name = str_at(c, "name")
        if name in names:
            errs.append(FieldError.duplicate(child(p, "name"), name))
        names.add(name)
        target = str_at(c, "targetContainerName")
        if target and target not in others:
            errs.append(FieldError.not_found(child(p, "targetContainerName"), target))
        for field in _EPHEMERAL_FORBIDDEN:
            if c.get(field):
                errs.append(FieldError.forbidden(child(p, field),
                                                 "cannot be set for an Ephemeral Container"))
        for j, m in enumerate(dicts_at(c, "volumeMounts")):
            for field in ("subPath", "subPathExpr"):
                if m.get(field):
                    errs.append(FieldError.forbidden(
                        child(index(child(p, "volumeMounts"), j), field),
                        "cannot be set for an Ephemeral Container"))
    return errs


def _host_port_conflicts(containers: list[Obj], path: str) -> Errors:
    errs: Errors = []
    seen: set[str] = set()
    for ci, c in enumerate(containers):
        for pi, port in enumerate(dicts_at(c, "ports")):
            host_port = int_at(port, "hostPort")
            if not host_port:
                continue
            k = f"{str_at(port, 'protocol')}/{str_at(port, 'hostIP')}/{host_port}"
            if k in seen:
                errs.append(FieldError.duplicate(
                    child(index(child(index(path, ci), "ports"), pi), "hostPort"), k))
            seen.add(k)
    return errs


def _host_network_ports(spec: Obj, path: str, is_pod: bool) -> Errors:
    if not spec.get("hostNetwork"):
        return []
    errs: Errors = []
    for i, c in enumerate(dicts_at(spec, "containers")):
        for j, port in enumerate(dicts_at(c, "ports")):
            hp, cp = int_at(port, "hostPort"), int_at(port, "containerPort")
            if (is_pod or hp != 0) and hp != cp:
                errs.append(FieldError.invalid(
                    child(index(child(index(child(path, "containers"), i), "ports"), j),
                          "hostPort"), hp, "must match `containerPort` when `hostNetwork` is true"))
    return errs


def _validate_resource_claims(claims: list[Obj], path: str) -> tuple[frozenset[str], Errors]:
    errs: Errors = []
    names: set[str] = set()
    for i, claim in enumerate(claims):
        p = index(path, i)
        name = str_at(claim, "name")
        if not name:
            errs.append(FieldError.required(child(p, "name")))
        elif name in names:
            errs.append(FieldError.duplicate(child(p, "name"), name))
        else:
            errs += validate_dns1123_label(name, child(p, "name"))
            names.add(name)
        sources = [k for k in ("resourceClaimName", "resourceClaimTemplateName") if k in claim]
        if len(sources) > 1:
            errs.append(FieldError.invalid(p, claim, "at most one of `resourceClaimName` or "
                                                     "`resourceClaimTemplateName` may be "
                                                     "specified"))
        if not sources:
            errs.append(FieldError.invalid(p, claim, "must specify one of: `resourceClaimName`, "
                                                     "`resourceClaimTemplateName`"))
    return frozenset(names), errs


# -- pod-level settings ---------------------------------------------------------------------


def _validate_pod_security_context(sc: Obj, path: str) -> Errors:
    errs = validate_id(sc.get("fsGroup"), child(path, "fsGroup"))
    errs += validate_id(sc.get("runAsUser"), child(path, "runAsUser"))
    errs += validate_id(sc.get("runAsGroup"), child(path, "runAsGroup"))
    for i, gid in enumerate(list_at(sc, "supplementalGroups")):
        errs += validate_id(gid, index(child(path, "supplementalGroups"), i))
    names: set[str] = set()
    for i, sysctl in enumerate(dicts_at(sc, "sysctls")):
        name, p = str_at(sysctl, "name"), child(index(child(path, "sysctls"), i), "name")
        if not name:
            errs.append(FieldError.required(p))
        elif name in names:
            errs.append(FieldError.duplicate(p, name))
        names.add(name)
    policy = sc.get("fsGroupChangePolicy")
    if policy is not None and policy not in ("Always", "OnRootMismatch"):
        errs.append(FieldError.not_supported(child(path, "fsGroupChangePolicy"), policy,
                                             ["Always", "OnRootMismatch"]))
    return errs + validate_seccomp_profile(sc.get("seccompProfile"), child(path, "seccompProfile"))


def _validate_dns_config(spec: Obj, path: str) -> Errors:
    config = spec.get("dnsConfig")
    if spec.get("dnsPolicy") == "None":
        if not isinstance(config, dict):
            return [FieldError.required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
        if not config.get("nameservers"):
            return [FieldError.required(child(path, "nameservers"), "must provide at least one DNS "
                                        "nameserver when `dnsPolicy` is None")]
    if not isinstance(config, dict):
        return []
    errs: Errors = []
    servers = list_at(config, "nameservers")
    searches = [str(s) for s in list_at(config, "searches")]
    if len(servers) > 3:
        errs.append(FieldError.invalid(child(path, "nameservers"), servers,
                                       "must not have more than 3 nameservers"))
    for i, ns in enumerate(servers):
        errs += validate_ip(str(ns), index(child(path, "nameservers"), i))
    if len(searches) > 32:
        errs.append(FieldError.invalid(child(path, "searches"), searches,
                                       "must not have more than 32 search paths"))
    if len(" ".join(searches)) > 2048:
        errs.append(FieldError.invalid(child(path, "searches"), searches, "must not have more "
                                       "than 2048 characters (including spaces) in the search "
                                       "list"))
    for i, search in enumerate(searches):
        errs += validate_dns1123_subdomain(search.removesuffix("."),
                                           index(child(path, "searches"), i))
    for i, option in enumerate(dicts_at(config, "options")):
        if not option.get("name"):
            errs.append(FieldError.required(index(child(path, "options"), i), "must not be empty"))
    return errs


def _validate_os(os_: Obj, path: str) -> Errors:
    name = str_at(os_, "name")
    if not name:
        return [FieldError.required(child(path, "name"), "cannot be empty")]
    if name not in ("linux", "windows"):
        return [FieldError.not_supported(path, name, ["linux", "windows"])]
    return []


