"""One container: name, image, ports, env, mounts, probes, resources, security context.

:func:`validate_container_common` is what regular, init and ephemeral containers share;
probes and lifecycle hooks are checked by the caller, since which containers may have them
depends on the list they are in.
"""

from __future__ import annotations

import re
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
    is_config_map_key,
    is_env_var_name,
    is_http_header_name,
    is_valid_port_name,
    is_valid_port_num,
    name_is_dns_subdomain,
    str_at,
    validate_dns1123_label,
    validate_enum,
    validate_nonnegative,
    validate_qualified_name,
)
from kybernetes.api.validation.resources import validate_requirements
from kybernetes.api.validation.volumes import PULL_POLICIES, validate_local_descending_path

PROTOCOLS = ["SCTP", "TCP", "UDP"]
TERMINATION_MESSAGE_POLICIES = ["File", "FallbackToLogsOnError"]
ENV_FIELD_PATHS = ["metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
                   "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
                   "status.podIPs"]
_CONVERTIBLE_FIELD_PATHS = frozenset([*ENV_FIELD_PATHS, "metadata.annotations", "metadata.labels",
                                      "spec.restartPolicy", "spec.schedulerName", "status.phase"])
RESOURCE_FIELD_PATHS = ["limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu",
                        "requests.ephemeral-storage", "requests.memory"]
_SUBSCRIPT = re.compile(r"^(.+)\['(.*)'\]$")
MAX_UID = 0xFFFFFFFF


def validate_port_num_or_name(port: Any, path: str) -> Errors:
    if isinstance(port, int) and not isinstance(port, bool):
        return invalid_each(path, port, is_valid_port_num(port))
    if isinstance(port, str):
        return invalid_each(path, port, is_valid_port_name(port))
    return [FieldError.invalid(path, port, "must be an integer or a port name")]


def _validate_ports(ports: list[Obj], path: str) -> Errors:
    errs: Errors = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = index(path, i)
        name = str_at(port, "name")
        if name:
            msgs = is_valid_port_name(name)
            if msgs:
                errs += invalid_each(child(p, "name"), name, msgs)
            elif name in names:
                errs.append(FieldError.duplicate(child(p, "name"), name))
            else:
                names.add(name)
        container_port = int_at(port, "containerPort")
        if container_port == 0:
            errs.append(FieldError.required(child(p, "containerPort")))
        else:
            errs += invalid_each(child(p, "containerPort"), container_port,
                                 is_valid_port_num(container_port))
        host_port = int_at(port, "hostPort")
        if host_port:
            errs += invalid_each(child(p, "hostPort"), host_port, is_valid_port_num(host_port))
        errs += validate_enum(str_at(port, "protocol"), child(p, "protocol"), PROTOCOLS)
    return errs


# -- environment ------------------------------------------------------------------------------


def _validate_field_selector(ref: Obj, path: str, allowed: list[str]) -> Errors:
    api_version, field_path = str_at(ref, "apiVersion"), str_at(ref, "fieldPath")
    if not api_version:
        return [FieldError.required(child(path, "apiVersion"))]
    if not field_path:
        return [FieldError.required(child(path, "fieldPath"))]
    m = _SUBSCRIPT.match(field_path)
    error = ""
    if api_version != "v1":
        error = f"unsupported pod version: {api_version}"
    elif m and m.group(1) not in ("metadata.annotations", "metadata.labels"):
        error = f"field label does not support subscript: {field_path}"
    elif not m and field_path not in _CONVERTIBLE_FIELD_PATHS:
        error = f"field label not supported: {field_path}"
    if error:
        return [FieldError.invalid(child(path, "fieldPath"), field_path,
                                   f"error converting fieldPath: {error}")]
    if m:
        subscript = m.group(2)
        if m.group(1) == "metadata.annotations":
            subscript = subscript.lower()
        return validate_qualified_name(subscript, path)
    if field_path not in allowed:
        return [FieldError.not_supported(child(path, "fieldPath"), field_path, sorted(allowed))]
    return []


def validate_resource_field_selector(ref: Obj, path: str, *, volume: bool) -> Errors:
    resource = str_at(ref, "resource")
    if volume and not ref.get("containerName"):
        return [FieldError.required(child(path, "containerName"))]
    if not resource:
        return [FieldError.required(child(path, "resource"))]
    if resource not in RESOURCE_FIELD_PATHS and \
            not resource.startswith(("requests.hugepages-", "limits.hugepages-")):
        return [FieldError.not_supported(child(path, "resource"), resource, RESOURCE_FIELD_PATHS)]
    return []


def _key_selector(sel: Obj, path: str) -> Errors:
    name = str_at(sel, "name")
    errs = invalid_each(child(path, "name"), name, name_is_dns_subdomain(name, False))
    k = str_at(sel, "key")
    if not k:
        errs.append(FieldError.required(child(path, "key")))
    else:
        errs += invalid_each(child(path, "key"), k, is_config_map_key(k))
    return errs


def _validate_env(env: list[Obj], path: str) -> Errors:
    errs: Errors = []
    for i, var in enumerate(env):
        p = index(path, i)
        name = str_at(var, "name")
        if not name:
            errs.append(FieldError.required(child(p, "name")))
        else:
            errs += invalid_each(child(p, "name"), name, is_env_var_name(name))
        if "valueFrom" not in var:
            continue
        src, vp = dict_at(var, "valueFrom"), child(p, "valueFrom")
        count = 0
        if "fieldRef" in src:
            count += 1
            errs += _validate_field_selector(dict_at(src, "fieldRef"), child(vp, "fieldRef"),
                                             ENV_FIELD_PATHS)
        if "resourceFieldRef" in src:
            count += 1
            errs += validate_resource_field_selector(dict_at(src, "resourceFieldRef"),
                                                     child(vp, "resourceFieldRef"), volume=False)
        for ref in ("configMapKeyRef", "secretKeyRef"):
            if ref in src:
                count += 1
                errs += _key_selector(dict_at(src, ref), child(vp, ref))
        if count == 0:
            errs.append(FieldError.invalid(vp, "", "must specify one of: `fieldRef`, "
                                           "`resourceFieldRef`, `configMapKeyRef` or "
                                           "`secretKeyRef`"))
        elif var.get("value"):
            errs.append(FieldError.invalid(vp, "",
                                           "may not be specified when `value` is not empty"))
        elif count > 1:
            errs.append(FieldError.invalid(vp, "", "may not have more than one field specified at "
                                                   "a time"))
    return errs


def _validate_env_from(sources: list[Obj], path: str) -> Errors:
    errs: Errors = []
    for i, src in enumerate(sources):
        p = index(path, i)
        prefix = str_at(src, "prefix")
        if prefix:
            errs += invalid_each(child(p, "prefix"), prefix, is_env_var_name(prefix))
        count = 0
        for ref in ("configMapRef", "secretRef"):
            if ref in src:
                count += 1
                name = str_at(dict_at(src, ref), "name")
                if not name:
                    errs.append(FieldError.required(child(p, ref, "name")))
                else:
                    errs += invalid_each(child(p, ref, "name"), name,
                                         name_is_dns_subdomain(name, True))
        if count == 0:
            errs.append(FieldError.invalid(path, "", "must specify one of: `configMapRef` or "
                                                     "`secretRef`"))
        elif count > 1:
            errs.append(FieldError.invalid(path, "", "may not have more than one field specified "
                                                     "at a time"))
    return errs


# -- mounts -------------------------------------------------------------------------------------


def _validate_mounts(c: Obj, volumes: dict[str, Obj], path: str) -> Errors:
    errs: Errors = []
    devices = {str_at(d, "name"): str_at(d, "devicePath") for d in dicts_at(c, "volumeDevices")}
    privileged = dict_at(c, "securityContext").get("privileged") is True
    seen: set[str] = set()
    for i, m in enumerate(dicts_at(c, "volumeMounts")):
        p = index(path, i)
        name, mount_path = str_at(m, "name"), str_at(m, "mountPath")
        if not name:
            errs.append(FieldError.required(child(p, "name")))
        if name not in volumes:
            errs.append(FieldError.not_found(child(p, "name"), name))
        if not mount_path:
            errs.append(FieldError.required(child(p, "mountPath")))
        if mount_path in seen:
            errs.append(FieldError.invalid(child(p, "mountPath"), mount_path, "must be unique"))
        seen.add(mount_path)
        if name in devices:
            errs.append(FieldError.invalid(child(p, "name"), name,
                                           "must not already exist in volumeDevices"))
        if mount_path in devices.values():
            errs.append(FieldError.invalid(child(p, "mountPath"), mount_path,
                                           "must not already exist as a path in volumeDevices"))
        if m.get("subPath"):
            errs += validate_local_descending_path(m["subPath"], child(path, "subPath"))
        if m.get("subPathExpr"):
            if m.get("subPath"):
                errs.append(FieldError.invalid(child(p, "subPathExpr"), m["subPathExpr"],
                                               "subPathExpr and subPath are mutually exclusive"))
            errs += validate_local_descending_path(m["subPathExpr"], child(path, "subPathExpr"))
        propagation = m.get("mountPropagation")
        if propagation is not None:
            pp = child(path, "mountPropagation")
            if propagation not in ("Bidirectional", "HostToContainer", "None"):
                errs.append(FieldError.not_supported(pp, propagation,
                                                     ["Bidirectional", "HostToContainer", "None"]))
            if propagation == "Bidirectional" and not privileged:
                errs.append(FieldError.forbidden(pp, "Bidirectional mount propagation is available "
                                                     "only to privileged containers"))
        errs += _recursive_read_only(m, child(path, "recursiveReadOnly"))
    return errs


def _recursive_read_only(m: Obj, path: str) -> Errors:
    rro = m.get("recursiveReadOnly")
    if rro is None or rro == "Disabled":
        return []
    if rro not in ("Enabled", "IfPossible"):
        return [FieldError.not_supported(path, rro, ["Disabled", "Enabled", "IfPossible"])]
    errs = []
    if not m.get("readOnly"):
        errs.append(FieldError.forbidden(path, "may only be specified when readOnly is true"))
    if m.get("mountPropagation") not in (None, "None"):
        errs.append(FieldError.forbidden(path, "may only be specified when mountPropagation is "
                                               "None or not specified"))
    return errs


def _validate_devices(c: Obj, volumes: dict[str, Obj], path: str) -> Errors:
    errs: Errors = []
    mounts = {str_at(m, "name"): str_at(m, "mountPath") for m in dicts_at(c, "volumeMounts")}
    names: set[str] = set()
    paths: set[str] = set()
    for i, d in enumerate(dicts_at(c, "volumeDevices")):
        p = index(path, i)
        name, dev_path = str_at(d, "name"), str_at(d, "devicePath")
        if not name:
            errs.append(FieldError.required(child(p, "name")))
        if name in names:
            errs.append(FieldError.invalid(child(p, "name"), name, "must be unique"))
        vol = volumes.get(name)
        if vol is not None and "persistentVolumeClaim" not in vol and "ephemeral" not in vol:
            errs.append(FieldError.invalid(child(p, "name"), name, "can only use volume source "
                                           "type of PersistentVolumeClaim or Ephemeral for block "
                                           "mode"))
        if vol is None:
            errs.append(FieldError.not_found(child(p, "name"), name))
        if not dev_path:
            errs.append(FieldError.required(child(p, "devicePath")))
        if dev_path in paths:
            errs.append(FieldError.invalid(child(p, "devicePath"), dev_path, "must be unique"))
        if ".." in dev_path.split("/"):
            errs.append(FieldError.invalid(child(p, "devicePath"), dev_path,
                                           "can not contain backsteps ('..')"))
        else:
            paths.add(dev_path)
        if name in mounts:
            errs.append(FieldError.invalid(child(p, "name"), name,
                                           "must not already exist in volumeMounts"))
        if dev_path in mounts.values():
            errs.append(FieldError.invalid(child(p, "devicePath"), dev_path,
                                           "must not already exist as a path in volumeMounts"))
        if name:
            names.add(name)
    return errs


# -- probes and lifecycle hooks ----------------------------------------------------------------


def _validate_handler(h: Obj, path: str, grace: int | None, kinds: tuple[str, ...]) -> Errors:
    errs: Errors = []
    count = 0
    for kind in kinds:
        if kind not in h:
            continue
        kp = child(path, kind)
        if count:
            errs.append(FieldError.forbidden(kp, "may not specify more than 1 handler type"))
            continue
        count += 1
        action = dict_at(h, kind)
        if kind == "exec" and not action.get("command"):
            errs.append(FieldError.required(child(kp, "command")))
        elif kind == "httpGet":
            if not action.get("path"):
                errs.append(FieldError.required(child(kp, "path")))
            errs += validate_port_num_or_name(action.get("port", 0), child(kp, "port"))
            scheme = str_at(action, "scheme")
            if scheme not in ("HTTP", "HTTPS"):
                errs.append(FieldError.not_supported(child(kp, "scheme"), scheme,
                                                     ["HTTP", "HTTPS"]))
            for header in dicts_at(action, "httpHeaders"):
                errs += invalid_each(child(kp, "httpHeaders"), str_at(header, "name"),
                                     is_http_header_name(str_at(header, "name")))
        elif kind in ("tcpSocket", "grpc"):
            errs += validate_port_num_or_name(action.get("port", 0), child(kp, "port"))
        elif kind == "sleep":
            seconds = int_at(action, "seconds")
            if grace is not None and (seconds <= 0 or seconds > grace):
                errs.append(FieldError.invalid(
                    kp, seconds, "must be greater than 0 and less than "
                    f"terminationGracePeriodSeconds ({grace}). Enable "
                    "AllowPodLifecycleSleepActionZeroValue feature gate for zero sleep."))
    if not count:
        errs.append(FieldError.required(path, "must specify a handler type"))
    return errs


def validate_probe(probe: Any, path: str, grace: int | None, kind: str) -> Errors:
    """``kind`` is liveness, readiness or startup."""
    if not isinstance(probe, dict):
        return []
    errs = _validate_handler(probe, path, grace, ("exec", "httpGet", "tcpSocket", "grpc"))
    for f in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
              "failureThreshold"):
        errs += validate_nonnegative(probe.get(f, 0), child(path, f))
    tgps = probe.get("terminationGracePeriodSeconds")
    if isinstance(tgps, int) and tgps <= 0:
        errs.append(FieldError.invalid(child(path, "terminationGracePeriodSeconds"), tgps,
                                       "must be greater than 0"))
    if kind in ("liveness", "startup") and probe.get("successThreshold", 0) != 1:
        errs.append(FieldError.invalid(child(path, "successThreshold"),
                                       probe.get("successThreshold", 0), "must be 1"))
    if kind == "readiness" and tgps is not None:
        errs.append(FieldError.invalid(child(path, "terminationGracePeriodSeconds"), tgps,
                                       "must not be set for readinessProbes"))
    return errs


def validate_lifecycle(lifecycle: Obj, path: str, grace: int | None) -> Errors:
    errs: Errors = []
    for hook in ("postStart", "preStop"):
        if hook in lifecycle:
            errs += _validate_handler(dict_at(lifecycle, hook), child(path, hook), grace,
                                      ("exec", "httpGet", "tcpSocket", "sleep"))
    return errs


# -- security context ----------------------------------------------------------------------------


def validate_id(value: Any, path: str) -> Errors:
    if isinstance(value, int) and not 0 <= value <= MAX_UID:
        return [FieldError.invalid(path, value, inclusive_range_error(0, MAX_UID))]
    return []


def validate_seccomp_profile(profile: Any, path: str) -> Errors:
    if not isinstance(profile, dict):
        return []
    kind = str_at(profile, "type")
    errs: Errors = []
    if not kind:
        errs.append(FieldError.required(child(path, "type"),
                                        "type is required when seccompProfile is set"))
    elif kind not in ("Localhost", "RuntimeDefault", "Unconfined"):
        errs.append(FieldError.not_supported(child(path, "type"), kind,
                                             ["Localhost", "RuntimeDefault", "Unconfined"]))
    if kind == "Localhost":
        if "localhostProfile" not in profile:
            errs.append(FieldError.required(child(path, "localhostProfile"),
                                            "must be set when seccomp type is Localhost"))
        else:
            errs += validate_local_descending_path(str_at(profile, "localhostProfile"),
                                                   child(path, "localhostProfile"))
    elif "localhostProfile" in profile:
        errs.append(FieldError.invalid(child(path, "localhostProfile"), profile,
                                       "can only be set when seccomp type is Localhost"))
    return errs


def _validate_security_context(sc: Any, path: str) -> Errors:
    if not isinstance(sc, dict):
        return []
    errs = validate_id(sc.get("runAsUser"), child(path, "runAsUser"))
    errs += validate_id(sc.get("runAsGroup"), child(path, "runAsGroup"))
    if "procMount" in sc and sc["procMount"] not in ("Default", "Unmasked"):
        errs.append(FieldError.not_supported(child(path, "procMount"), sc["procMount"],
                                             ["Default", "Unmasked"]))
    errs += validate_seccomp_profile(sc.get("seccompProfile"), child(path, "seccompProfile"))
    if sc.get("allowPrivilegeEscalation") is False:
        if sc.get("privileged") is True:
            errs.append(FieldError.invalid(path, sc, "cannot set `allowPrivilegeEscalation` to "
                                                     "false and `privileged` to true"))
        if "CAP_SYS_ADMIN" in (dict_at(sc, "capabilities").get("add") or []):
            errs.append(FieldError.invalid(path, sc, "cannot set `allowPrivilegeEscalation` to "
                                                     "false and `capabilities.Add` CAP_SYS_ADMIN"))
    return errs


def _validate_resize_policy(policies: list[Obj], path: str, restart_policy: str) -> Errors:
    errs: Errors = []
    seen: set[str] = set()
    for i, p in enumerate(policies):
        name, policy = str_at(p, "resourceName"), str_at(p, "restartPolicy")
        if name in seen:
            errs.append(FieldError.duplicate(index(path, i), name))
        seen.add(name)
        errs += validate_enum(name, path, ["cpu", "memory"])
        errs += validate_enum(policy, path, ["NotRequired", "RestartContainer"])
        if restart_policy == "Never" and policy != "NotRequired":
            errs.append(FieldError.invalid(path, policy,
                                           "must be 'NotRequired' when `restartPolicy` is 'Never'"))
    return errs


def validate_container_common(c: Obj, volumes: dict[str, Obj], path: str, *,
                              restart_policy: str, claims: frozenset[str]) -> Errors:
    """``validateContainerCommon``: what every kind of container must satisfy."""
    name = str_at(c, "name")
    errs: Errors = []
    if not name:
        errs.append(FieldError.required(child(path, "name")))
    else:
        errs += validate_dns1123_label(name, child(path, "name"))
    if not c.get("image"):
        errs.append(FieldError.required(child(path, "image")))
    errs += validate_enum(str_at(c, "terminationMessagePolicy"),
                          child(path, "terminationMessagePolicy"), TERMINATION_MESSAGE_POLICIES)
    errs += _validate_ports(dicts_at(c, "ports"), child(path, "ports"))
    errs += _validate_env(dicts_at(c, "env"), child(path, "env"))
    errs += _validate_env_from(dicts_at(c, "envFrom"), child(path, "envFrom"))
    errs += _validate_mounts(c, volumes, child(path, "volumeMounts"))
    errs += _validate_devices(c, volumes, child(path, "volumeDevices"))
    errs += validate_enum(str_at(c, "imagePullPolicy"), child(path, "imagePullPolicy"),
                          PULL_POLICIES)
    errs += validate_requirements(c.get("resources"), child(path, "resources"), claims=claims)
    errs += _validate_resize_policy(dicts_at(c, "resizePolicy"), child(path, "resizePolicy"),
                                    restart_policy)
    errs += _validate_security_context(c.get("securityContext"), child(path, "securityContext"))
    return errs
