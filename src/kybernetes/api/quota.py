"""ResourceQuota arithmetic over plain dicts, shared by the API server's quota admission
and the resource quota controller (upstream's ``pkg/quota/v1`` and its core evaluators).

Quantities are kept as ``(value, format)`` pairs so that sums print as Kubernetes prints
them (``1Gi + 512Mi`` is ``1536Mi``; a zero takes the other operand's format).

>>> pretty(add(parse_list({"requests.memory": "1Gi"}), parse_list({"requests.memory": "512Mi"})))
'requests.memory=1536Mi'
>>> sorted(pod_usage({"spec": {"containers": [{"name": "c", "resources": {
...     "requests": {"cpu": "500m", "nvidia.com/gpu": "1"}}}]}}))
['count/pods', 'cpu', 'pods', 'requests.cpu', 'requests.nvidia.com/gpu']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from kybernetes.api import quantity

Obj = dict[str, Any]
Q = tuple[Fraction, str]
Usage = dict[str, Q]

ZERO: Q = (Fraction(0), quantity.DECIMAL_SI)

# resources whose quota requires every container to name them (upstream's validationSet)
_VALIDATION_SET = {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu",
                   "limits.memory"}
_COMPUTE = ("cpu", "memory", "ephemeral-storage")
_NATIVE_PREFIXES = ("kubernetes.io/", "requests.", "limits.")
_LEGACY_COUNTS = {"pods", "services", "configmaps", "secrets", "persistentvolumeclaims",
                  "replicationcontrollers", "resourcequotas"}
"""Resources whose objects a quota may count under their bare name (``pods: 10``)."""


def parse_list(rl: Mapping[str, Any] | None) -> Usage:
    out: Usage = {}
    for k, v in (rl or {}).items():
        try:
            out[k] = quantity.parse_with_format(v)
        except ValueError:
            continue
    return out


def to_list(u: Mapping[str, Q]) -> dict[str, str]:
    return {k: quantity.format_quantity(v, fmt) for k, (v, fmt) in sorted(u.items())}


def qadd(a: Q, b: Q) -> Q:
    return (a[0] + b[0], b[1] if a[0] == 0 else a[1])


def add(a: Mapping[str, Q], b: Mapping[str, Q]) -> Usage:
    out = dict(a)
    for k, v in b.items():
        out[k] = qadd(out[k], v) if k in out else v
    return out


def mask(u: Mapping[str, Q], names: Iterable[str]) -> Usage:
    keep = set(names)
    return {k: v for k, v in u.items() if k in keep}


def pretty(u: Mapping[str, Q]) -> str:
    """``name=quantity`` pairs, sorted, comma-joined (upstream's ``prettyPrint``)."""
    return ",".join(f"{k}={quantity.format_quantity(v, fmt)}" for k, (v, fmt) in sorted(u.items()))


def exceeded(used: Mapping[str, Q], hard: Mapping[str, Q]) -> list[str]:
    """The resources of ``used`` above their ``hard`` limit (those without one pass)."""
    return sorted(k for k, (v, _) in used.items() if k in hard and v > hard[k][0])


def _is_extended(name: str) -> bool:
    return "/" in name and not name.startswith(_NATIVE_PREFIXES)


def _container_usage(requests: Mapping[str, Q], limits: Mapping[str, Q]) -> Usage:
    """upstream's ``podComputeUsageHelper`` for one container (or a pod's totals)."""
    out: Usage = {}
    for name in _COMPUTE:
        if name in requests:
            out[f"requests.{name}"] = requests[name]
            out[name] = requests[name]
        if name in limits:
            out[f"limits.{name}"] = limits[name]
    for name, q in requests.items():
        if _is_extended(name):
            out[f"requests.{name}"] = q
    return out


def _resources(c: Mapping[str, Any]) -> tuple[Usage, Usage]:
    r = c.get("resources") or {}
    return parse_list(r.get("requests")), parse_list(r.get("limits"))


def _qmax(a: Q | None, b: Q) -> Q:
    return b if a is None or b[0] > a[0] else a


def pod_totals(pod: Mapping[str, Any]) -> tuple[Usage, Usage]:
    """The pod's effective requests and limits: the sum over its containers, raised to
    the largest init container, plus its overhead."""
    spec = pod.get("spec") or {}
    requests: Usage = {}
    limits: Usage = {}
    for c in spec.get("containers") or []:
        req, lim = _resources(c)
        requests = add(requests, req)
        limits = add(limits, lim)
    for c in spec.get("initContainers") or []:
        req, lim = _resources(c)
        for k, v in req.items():
            requests[k] = _qmax(requests.get(k), v)
        for k, v in lim.items():
            limits[k] = _qmax(limits.get(k), v)
    overhead = parse_list(spec.get("overhead"))
    if overhead:
        requests = add(requests, overhead)
        limits = add(limits, {k: v for k, v in overhead.items() if k in limits})
    return requests, limits


def pod_counts(pod: Mapping[str, Any]) -> bool:
    """Whether a pod counts against compute quota (upstream's ``QuotaV1Pod``): terminal
    pods do not."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def pod_usage(pod: Mapping[str, Any]) -> Usage:
    one: Q = (Fraction(1), quantity.DECIMAL_SI)
    out: Usage = {"count/pods": one}
    if not pod_counts(pod):
        return out
    out["pods"] = one
    requests, limits = pod_totals(pod)
    out.update(_container_usage(requests, limits))
    return out


def pod_constraints(required: Iterable[str], pod: Mapping[str, Any]) -> str:
    """``must specify ...`` when a quota constrains cpu or memory that a container does not
    state; "" when every container does (upstream's ``podEvaluator.Constraints``)."""
    needed = set(required) & _VALIDATION_SET
    if not needed:
        return ""
    spec = pod.get("spec") or {}
    missing: dict[str, set[str]] = {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        have = set(_container_usage(*_resources(c)))
        for name in needed - have:
            missing.setdefault(name, set()).add(str(c.get("name", "")))
    if not missing:
        return ""
    return "must specify " + "; ".join(f"{name} for: {','.join(sorted(missing[name]))}"
                                       for name in sorted(missing))


def claim_usage(claim: Mapping[str, Any]) -> Usage:
    one: Q = (Fraction(1), quantity.DECIMAL_SI)
    out: Usage = {"count/persistentvolumeclaims": one, "persistentvolumeclaims": one}
    spec = claim.get("spec") or {}
    storage = parse_list((spec.get("resources") or {}).get("requests")).get("storage")
    if storage is not None:
        out["requests.storage"] = storage
        cls = spec.get("storageClassName")
        if cls:
            prefix = f"{cls}.storageclass.storage.k8s.io/"
            out[prefix + "requests.storage"] = storage
            out[prefix + "persistentvolumeclaims"] = one
    return out


def service_usage(svc: Mapping[str, Any]) -> Usage:
    one: Q = (Fraction(1), quantity.DECIMAL_SI)
    out: Usage = {"count/services": one, "services": one}
    spec = svc.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    if kind == "LoadBalancer":
        out["services.loadbalancers"] = one
    if kind in ("NodePort", "LoadBalancer"):
        ports = len(spec.get("ports") or [])
        if kind == "NodePort" or spec.get("allocateLoadBalancerNodePorts", True) is not False:
            out["services.nodeports"] = (Fraction(ports), quantity.DECIMAL_SI)
    return out


def count_name(plural: str, group: str) -> str:
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def object_usage(plural: str, group: str, obj: Mapping[str, Any]) -> Usage:
    """What one object of ``plural.group`` uses."""
    if group == "":
        if plural == "pods":
            return pod_usage(obj)
        if plural == "persistentvolumeclaims":
            return claim_usage(obj)
        if plural == "services":
            return service_usage(obj)
    one: Q = (Fraction(1), quantity.DECIMAL_SI)
    out: Usage = {count_name(plural, group): one}
    if group == "" and plural in _LEGACY_COUNTS:
        out[plural] = one
    return out


def matching(plural: str, group: str, names: Iterable[str]) -> list[str]:
    """The quota resources among ``names`` that objects of ``plural.group`` can use."""
    own = count_name(plural, group)
    out = []
    for n in names:
        if n == own or (group == "" and n == plural and plural in _LEGACY_COUNTS):
            out.append(n)
        elif group == "" and plural == "pods" and (
                n in ("cpu", "memory", "ephemeral-storage") or n.startswith(("requests.",
                                                                             "limits."))):
            if n != "requests.storage":
                out.append(n)
        elif group == "" and (_claim_resource(plural, n) or _service_resource(plural, n)):
            out.append(n)
    return out


def _claim_resource(plural: str, n: str) -> bool:
    return plural == "persistentvolumeclaims" and (
        n == "requests.storage"
        or n.endswith((".storageclass.storage.k8s.io/requests.storage",
                       ".storageclass.storage.k8s.io/persistentvolumeclaims")))


def _service_resource(plural: str, n: str) -> bool:
    return plural == "services" and n in ("services.loadbalancers", "services.nodeports")


def resource_of(name: str) -> tuple[str, str] | None:
    """(plural, group) of the objects a quota resource name counts, for the controller."""
    if name.startswith("count/"):
        plural, _, group = name[len("count/"):].partition(".")
        return plural, group
    if name in _LEGACY_COUNTS:
        return name, ""
    if name in ("services.loadbalancers", "services.nodeports"):
        return "services", ""
    if name == "requests.storage" or ".storageclass.storage.k8s.io/" in name:
        return "persistentvolumeclaims", ""
    if name in ("cpu", "memory", "ephemeral-storage") or name.startswith(("requests.",
                                                                          "limits.")):
        return "pods", ""
    return None


def used_by(hard_names: Iterable[str], usages: Iterable[Mapping[str, Q]]) -> Usage:
    """The status.used of a quota with ``hard_names``, given the usage of each object it
    may count (absent resources are ``0``)."""
    names = list(hard_names)
    total: Usage = {n: ZERO for n in names}
    for u in usages:
        total = add(total, mask(u, names))
    return total
