"""Resource names and quantities: container requirements, quotas, limit ranges.

Follows ``pkg/apis/core/helper``: names without a ``/`` (or with ``kubernetes.io/``) are
native; anything else must be an extended resource such as ``nvidia.com/gpu``, which may
not be overcommitted (its request must equal its limit).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

from kybernetes.api import quantity
from kybernetes.api.errors import NOT_FOUND, FieldError
from kybernetes.api.validation.common import (
    IS_NEGATIVE,
    Errors,
    child,
    index,
    invalid_each,
    is_qualified_name,
    validate_dns1123_label,
)

STANDARD_CONTAINER_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})
STANDARD_RESOURCES = frozenset({
    "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage",
    "pods", "resourcequotas", "services", "replicationcontrollers", "secrets", "configmaps",
    "persistentvolumeclaims", "storage", "requests.storage", "services.nodeports",
    "services.loadbalancers",
})
STANDARD_QUOTA_RESOURCES = frozenset({
    "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory", "requests.storage",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage",
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers",
})
INTEGER_RESOURCES = frozenset({
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers",
})
STANDARD_LIMIT_TYPES = frozenset({"Pod", "Container", "PersistentVolumeClaim"})


def is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def is_hugepages(name: str) -> bool:
    return name.startswith("hugepages-")


def is_quota_hugepages(name: str) -> bool:
    return name.startswith(("hugepages-", "requests.hugepages-"))


def is_extended(name: str) -> bool:
    if is_native(name) or name.startswith("requests."):
        return False
    return not is_qualified_name("requests." + name)


def is_overcommit_allowed(name: str) -> bool:
    return is_native(name) and not is_hugepages(name)


def is_integer_resource(name: str) -> bool:
    return name in INTEGER_RESOURCES or is_extended(name)


@functools.lru_cache(maxsize=4096)
def _parse(value: str | int | float) -> tuple[Fraction, str] | None:
    try:
        return quantity.parse_with_format(value)
    except (ValueError, TypeError, ZeroDivisionError):
        return None


def parse_with_format(value: Any) -> tuple[Fraction, str] | None:
    """A quantity's exact value and format, or ``None`` when it does not parse (cached: the
    same few quantities recur in every pod)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return _parse(value)


def parse(value: Any) -> Fraction | None:
    """A quantity's exact value, or ``None`` when it does not parse."""
    parsed = parse_with_format(value)
    return parsed[0] if parsed else None


def text(value: Any) -> str:
    """A quantity as Go's ``Quantity.String()`` prints it (the canonical form)."""
    parsed = parse_with_format(value)
    return quantity.format_quantity(*parsed) if parsed else str(value)


def validate_resource_name(name: str, path: str) -> Errors:
    errs = invalid_each(path, name, is_qualified_name(name))
    if errs:
        return errs
    if "/" not in name and not (name in STANDARD_RESOURCES or is_quota_hugepages(name)):
        return [FieldError.invalid(path, name,
                                   "must be a standard resource type or fully qualified")]
    return []


def validate_container_resource_name(name: str, path: str) -> Errors:
    errs = validate_resource_name(name, path)
    if "/" not in name:
        if not (name in STANDARD_CONTAINER_RESOURCES or is_hugepages(name)):
            errs.append(FieldError.invalid(path, name,
                                           "must be a standard resource for containers"))
    elif not is_native(name) and not is_extended(name):
        errs.append(FieldError.invalid(path, name,
                                       "doesn't follow extended resource name standard"))
    return errs


def validate_quota_resource_name(name: str, path: str) -> Errors:
    errs = validate_resource_name(name, path)
    if "/" not in name and not (name in STANDARD_QUOTA_RESOURCES or is_quota_hugepages(name)):
        errs.append(FieldError.invalid(path, name, "must be a standard resource for quota"))
    return errs


def validate_quantity_value(name: str, value: Any, path: str) -> Errors:
    """``ValidateResourceQuantityValue``: not negative, whole for countable resources."""
    v = parse(value)
    if v is None:
        return [FieldError.invalid(path, value, "must be a valid resource quantity")]
    errs = []
    if v < 0:
        errs.append(FieldError.invalid(path, text(value), IS_NEGATIVE))
    if is_integer_resource(name) and math.ceil(v * 1000) % 1000 != 0:
        errs.append(FieldError.invalid(path, text(value), "must be an integer"))
    return errs


def validate_positive_quantity(value: Any, path: str) -> Errors:
    v = parse(value)
    if v is None or v <= 0:
        return [FieldError.invalid(path, text(value), "must be greater than zero")]
    return []


def validate_requirements(req: Any, path: str, *, claims: frozenset[str] = frozenset()) -> Errors:
    """A container's ``resources``: valid names and values, requests within limits."""
    req = req if isinstance(req, dict) else {}
    limits = req.get("limits") if isinstance(req.get("limits"), dict) else {}
    requests = req.get("requests") if isinstance(req.get("requests"), dict) else {}
    assert isinstance(limits, dict) and isinstance(requests, dict)
    lim_path, req_path = child(path, "limits"), child(path, "requests")
    errs: Errors = []
    compute = hugepages = False
    for name, value in limits.items():
        p = f"{lim_path}[{name}]"
        errs += validate_container_resource_name(name, p)
        errs += validate_quantity_value(name, value, p)
        compute |= name in ("cpu", "memory")
        hugepages |= is_hugepages(name)
    for name, value in requests.items():
        p = f"{req_path}[{name}]"
        errs += validate_container_resource_name(name, p)
        errs += validate_quantity_value(name, value, p)
        if name in limits:
            r, lim = parse(value), parse(limits[name])
            if r is not None and lim is not None:
                if r != lim and not is_overcommit_allowed(name):
                    errs.append(FieldError.invalid(
                        req_path, text(value),
                        f"must be equal to {name} limit of {text(limits[name])}"))
                elif r > lim:
                    errs.append(FieldError.invalid(
                        req_path, text(value),
                        f"must be less than or equal to {name} limit of {text(limits[name])}"))
        elif not is_overcommit_allowed(name):
            errs.append(FieldError.required(lim_path,
                                            "Limit must be set for non overcommitable resources"))
        compute |= name in ("cpu", "memory")
        hugepages |= is_hugepages(name)
    if hugepages and not compute:
        errs.append(FieldError.forbidden(path, "HugePages require cpu or memory"))
    errs += _validate_claims(req.get("claims"), child(path, "claims"), claims)
    return errs


def _validate_claims(claims: Any, path: str, pod_claims: frozenset[str]) -> Errors:
    errs: Errors = []
    seen: set[str] = set()
    for i, claim in enumerate(claims if isinstance(claims, list) else []):
        name = str(claim.get("name", "")) if isinstance(claim, dict) else ""
        p = index(path, i)
        if not name:
            errs.append(FieldError.required(p))
            continue
        request = str(claim.get("request", ""))
        k = f"{name}/{request}" if request else name
        if request:
            errs += validate_dns1123_label(request, child(p, "request"))
        if name in seen or k in seen:
            errs.append(FieldError.duplicate(p, k))
        seen.update({name, k})
        if name not in pod_claims:
            detail = "must be one of the names in pod.spec.resourceClaims"
            detail += ": " + ", ".join(sorted(pod_claims)) if pod_claims else " which is empty"
            errs.append(FieldError(NOT_FOUND, p, name, detail))
    return errs


_QOS_NAMES = ("cpu", "memory")


def qos_class(spec: Any) -> str:
    """``qos.ComputePodQOS``: BestEffort, Guaranteed or Burstable, from cpu and memory."""
    spec = spec if isinstance(spec, dict) else {}
    shapes: list[tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]] = []
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        res = c.get("resources") if isinstance(c, dict) else None
        res = res if isinstance(res, dict) else {}
        requests, limits = res.get("requests"), res.get("limits")
        shapes.append((
            tuple((k, v) for k, v in requests.items() if k in _QOS_NAMES)
            if isinstance(requests, dict) else (),
            tuple((k, v) for k, v in limits.items() if k in _QOS_NAMES)
            if isinstance(limits, dict) else ()))
    try:
        return _qos_of(tuple(shapes))
    except TypeError:  # a value that is no quantity (a list, say): not remembered
        return _qos_of.__wrapped__(tuple(shapes))


@functools.lru_cache(maxsize=1024)
def _qos_of(shapes: tuple[tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]],
                          ...]) -> str:
    """The QoS class of containers with these cpu and memory (requests, limits) (pods of
    one template share it: worked out once)."""
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for container_requests, container_limits in shapes:
        for name, value in container_requests:
            v = parse(value)
            if v is not None and v > 0:
                requests[name] = requests.get(name, Fraction(0)) + v
        found = set()
        for name, value in container_limits:
            v = parse(value)
            if v is not None and v > 0:
                found.add(name)
                limits[name] = limits.get(name, Fraction(0)) + v
        if found != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(n) == v for n, v in requests.items()) \
            and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"
