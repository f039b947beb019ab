"""Server-side Table printing: the columns and cells ``kubectl get`` shows.

kube-apiserver converts objects to a ``meta.k8s.io/v1`` Table when a client asks for
``application/json;as=Table;v=v1;g=meta.k8s.io``. This module holds the per-kind part of
that conversion, following ``pkg/printers/internalversion/printers.go`` (v1.32); the API
server wraps it in the Table envelope::

    table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
             "columnDefinitions": columns("apps", "Deployment"),
             "rows": [{"cells": cells("apps", "Deployment", d, now), "object": ...}]}

Like kube-apiserver, every row carries the ``-o wide`` cells too (``priority: 1``
columns); kubectl hides them unless asked. Kinds without a printer upstream (Role,
ClusterRole, LimitRange, CustomResourceDefinition, anything unknown) get the default
``Name`` + ``Created At`` table. Custom resources use :func:`crd_columns` and
:func:`crd_cells` over the CRD version's ``additionalPrinterColumns``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kybernetes.api import conversion, jsonpath, quantity

__all__ = [
    "cells",
    "columns",
    "crd_cells",
    "crd_columns",
    "human_duration",
    "row_conditions",
    "short_human_duration",
]

Obj = dict[str, Any]
RowFn = Callable[[Obj, float], list[Any]]

# --------------------------------------------------------------------------- durations


def _duration_parts(seconds: float) -> tuple[int, int] | str:
    """Go's Duration (whole nanoseconds) and its truncated seconds, or a verdict."""
    nanos = round(seconds * 1e9)
    whole = int(nanos / 1e9)  # truncates toward zero, as Go's int(d.Seconds())
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    return nanos, whole


def human_duration(seconds: float) -> str:
    """A duration with 2-3 significant figures, as apimachinery's ``HumanDuration``.

    >>> human_duration(5), human_duration(200), human_duration(3 * 86400 + 7200)
    ('5s', '3m20s', '3d2h')
    """
    parts = _duration_parts(seconds)
    if isinstance(parts, str):
        return parts
    nanos, secs = parts
    if secs < 120:
        return f"{secs}s"
    minutes = nanos // 60_000_000_000
    if minutes < 10:
        s = secs % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = nanos // 3_600_000_000_000
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def short_human_duration(seconds: float) -> str:
    """A duration in one unit, as apimachinery's ``ShortHumanDuration`` (``"3m"``)."""
    parts = _duration_parts(seconds)
    if isinstance(parts, str):
        return parts
    nanos, secs = parts
    if secs < 60:
        return f"{secs}s"
    if (minutes := nanos // 60_000_000_000) < 60:
        return f"{minutes}m"
    if (hours := nanos // 3_600_000_000_000) < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


# --------------------------------------------------------------------------- time

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_ZERO_TIME = "0001-01-01T00:00:00Z"


def _parse_time(value: Any) -> float | None:
    """Seconds since the epoch for an RFC 3339 timestamp; None for null or Go's zero time.

    Raises ValueError for text that is not RFC 3339.
    """
    if value is None or value == "" or value == "null":
        return None
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    text = value.replace("t", "T").replace("z", "Z").replace("Z", "+00:00")
    head, dot, tail = text.partition(".")
    if dot:  # Python takes at most 6 fractional digits
        digits = re.match(r"\d+", tail)
        assert digits is not None
        text = f"{head}.{digits.group()[:6].ljust(6, '0')}{tail[digits.end():]}"
    when = datetime.fromisoformat(text)
    try:
        if when.astimezone(UTC).replace(tzinfo=None) == datetime(1, 1, 1):
            return None
    except OverflowError:  # before year 1 in UTC: earlier than Go's zero time
        return None
    return when.timestamp()


def _time_or_none(value: Any) -> float | None:
    try:
        return _parse_time(value)
    except ValueError:
        return None


def _since(value: Any, now: float) -> str:
    """``translateTimestampSince``: the age of a timestamp, ``<unknown>`` when unset."""
    t = _time_or_none(value)
    return "<unknown>" if t is None else human_duration(now - t)


def _age(obj: Obj, now: float) -> str:
    return _since(_meta(obj).get("creationTimestamp"), now)


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class _Col:
    name: str
    type: str
    doc: str  # literal text, or "@<definition>.<field>" into the OpenAPI descriptions
    priority: int = 0
    format: str = ""


def _wide(name: str, doc: str, type_: str = "string") -> _Col:
    return _Col(name, type_, doc, priority=1)


_NAME = _Col("Name", "string", "@meta.v1.ObjectMeta.name", format="name")
_AGE = _Col("Age", "string", "@meta.v1.ObjectMeta.creationTimestamp")
_AGE_DATE = _Col("Age", "date", "@meta.v1.ObjectMeta.creationTimestamp")  # custom resources
_CONTAINERS = _wide("Containers", "Names of each container in the template.")
_IMAGES = _wide("Images", "Images referenced by each container in the template.")


@functools.cache
def _describe(doc: str) -> str:
    """Resolve an ``@definition.field`` reference to the field's API documentation."""
    if not doc.startswith("@"):
        return doc
    from kybernetes.api.schema import builtin_definitions

    definition, _, field = doc[1:].rpartition(".")
    prefix = "io.k8s.apimachinery.pkg.apis." if definition.startswith("meta.") else "io.k8s.api."
    defs = builtin_definitions()
    name = prefix + definition
    if name not in defs:
        return ""
    prop = (defs.get(name).get("properties") or {}).get(field) or {}
    text = str(prop.get("description") or "")
    # Go's SwaggerDoc() has no generated enum list; the OpenAPI text does.
    return text.split("\n\nPossible enum values:")[0]


def _definition(col: _Col) -> dict[str, Any]:
    return {"name": col.name, "type": col.type, "format": col.format,
            "description": _describe(col.doc), "priority": col.priority}


_TABLES: dict[tuple[str, str], tuple[tuple[_Col, ...], RowFn]] = {}


def _table(group: str, kind: str, *cols: _Col) -> Callable[[RowFn], RowFn]:
    def register(fn: RowFn) -> RowFn:
        _TABLES[(group, kind)] = (cols, fn)
        return fn
    return register


_DEFAULT_COLUMNS = (_NAME, _Col("Created At", "date", "@meta.v1.ObjectMeta.creationTimestamp"))


def _default_row(obj: Obj, now: float) -> list[Any]:
    t = _time_or_none(_meta(obj).get("creationTimestamp"))
    created = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
               if t is not None else _ZERO_TIME)
    return [_name(obj), created]


def _lookup(group: str, kind: str) -> tuple[tuple[_Col, ...], RowFn]:
    if group == "events.k8s.io" and kind == "Event":
        group = ""
    return _TABLES.get((group, kind), (_DEFAULT_COLUMNS, _default_row))


def columns(group: str, kind: str) -> list[dict[str, Any]]:
    """The Table ``columnDefinitions`` for a built-in kind (or the default table).

    >>> [c["name"] for c in columns("", "ConfigMap")]
    ['Name', 'Data', 'Age']
    """
    return [_definition(c) for c in _lookup(group, kind)[0]]


def cells(group: str, kind: str, obj: Obj, now: float) -> list[Any]:
    """One row's cells for ``obj`` (its wire form), aligned with :func:`columns`.

    ``now`` is the current time in seconds since the epoch; ages are relative to it.
    """
    if group == "events.k8s.io" and kind == "Event":
        obj = conversion.event_v1_to_core(obj)
    elif group == "autoscaling" and obj.get("apiVersion") == "autoscaling/v1":
        obj = conversion.hpa_v1_to_v2(obj)
    return _lookup(group, kind)[1](obj, now)


def row_conditions(group: str, kind: str, obj: Obj) -> list[dict[str, str]]:
    """A row's ``conditions``: upstream marks finished pods ``Completed``."""
    if group != "" or kind != "Pod":
        return []
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed",
                 "message": "The pod failed."}]
    return []


# --------------------------------------------------------------------------- helpers


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name") or "")


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _deleting(obj: Obj) -> bool:
    return _meta(obj).get("deletionTimestamp") is not None


def _qty(value: Any, missing: str = "0") -> str:
    """A quantity's canonical string (Go's ``Quantity.String()``)."""
    if value is None:
        return missing
    try:
        return quantity.canonical(value)
    except (ValueError, TypeError, ZeroDivisionError):
        return str(value)


def _format_labels(labels: Any) -> str:
    """``labels.FormatLabels``: sorted ``k=v`` pairs, ``<none>`` when empty."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


_SELECTOR_OPS = {"In": " in ", "NotIn": " notin ", "Exists": "", "DoesNotExist": ""}


def _selector_string(selector: Any) -> str | None:
    """A LabelSelector as ``labels.Selector.String()`` writes it; None when invalid."""
    if not selector:
        return ""
    reqs: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        reqs.append((key, f"{key}={value}"))
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
        if op not in _SELECTOR_OPS:
            return None
        if op in ("Exists", "DoesNotExist"):
            if values:
                return None
            reqs.append((key, ("!" if op == "DoesNotExist" else "") + key))
        else:
            if not values:
                return None
            reqs.append((key, f"{key}{_SELECTOR_OPS[op]}({','.join(sorted(values))})"))
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs)


def _format_selector(selector: Any) -> str:
    """``metav1.FormatLabelSelector``: ``<none>`` when empty, ``<error>`` when invalid."""
    text = _selector_string(selector)
    if text is None:
        return "<error>"
    return text or "<none>"


def _containers(template_spec: Obj) -> tuple[str, str]:
    cs = template_spec.get("containers") or []
    return (",".join(str(c.get("name", "")) for c in cs),
            ",".join(str(c.get("image", "")) for c in cs))


def _template_spec(obj: Obj) -> Obj:
    return (_spec(obj).get("template") or {}).get("spec") or {}


def _has_condition(conditions: Any, type_: str) -> bool:
    """The first condition of ``type_`` is True (``hasJobCondition``)."""
    for c in conditions or []:
        if c.get("type") == type_:
            return bool(c.get("status") == "True")
    return False


def _list_with_more(items: list[str], count: int, limit: int, empty: str) -> str:
    text = ",".join(items[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


def _join_host_port(host: str, port: Any) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- core/v1


def _latest(current: float | None, candidate: Any) -> float | None:
    t = _time_or_none(candidate)
    if t is not None and (current is None or t > current):
        return t
    return current


def _finished_at(status: Obj) -> Any:
    terminated = (status.get("lastState") or {}).get("terminated")
    return None if terminated is None else terminated.get("finishedAt")


def _pod_condition_true(conditions: Any, type_: str) -> bool:
    for c in conditions or []:
        if c.get("type") == type_:
            return bool(c.get("status") == "True")
    return False


@_table(
    "", "Pod", _NAME,
    _Col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    _Col("Status", "string", "The aggregate status of the containers in this pod."),
    _Col("Restarts", "string", "The number of times the containers in this pod have been "
         "restarted and when the last container in this pod has restarted."),
    _AGE,
    _wide("IP", "@core.v1.PodStatus.podIP"),
    _wide("Node", "@core.v1.PodSpec.nodeName"),
    _wide("Nominated Node", "@core.v1.PodStatus.nominatedNodeName"),
    _wide("Readiness Gates", "@core.v1.PodSpec.readinessGates"),
)
def _pod(pod: Obj, now: float) -> list[Any]:
    spec, status = _spec(pod), _status(pod)
    conditions = status.get("conditions") or []
    init_specs = spec.get("initContainers") or []
    sidecars = {c.get("name") for c in init_specs if c.get("restartPolicy") == "Always"}
    total = len(spec.get("containers") or []) + len(sidecars)
    ready = restarts = sidecar_restarts = 0
    last_restart: float | None = None
    last_sidecar_restart: float | None = None

    phase = str(status.get("phase") or "")
    reason = str(status.get("reason") or phase)
    for c in conditions:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += _int(cs.get("restartCount"))
        last_restart = _latest(last_restart, _finished_at(cs))
        sidecar = cs.get("name") in sidecars
        if sidecar:
            sidecar_restarts += _int(cs.get("restartCount"))
            last_sidecar_restart = _latest(last_sidecar_restart, _finished_at(cs))
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and _int(terminated.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        initializing = True
        if terminated is not None:
            if terminated.get("reason"):
                reason = f"Init:{terminated['reason']}"
            elif _int(terminated.get("signal")):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{_int(terminated.get('exitCode'))}"
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        break

    if not initializing or _pod_condition_true(conditions, "Initialized"):
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += _int(cs.get("restartCount"))
            last_restart = _latest(last_restart, _finished_at(cs))
            state = cs.get("state") or {}
            terminated, waiting = state.get("terminated"), state.get("waiting")
            if waiting is not None and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif terminated is not None and terminated.get("reason"):
                reason = str(terminated["reason"])
            elif terminated is not None:
                signal = _int(terminated.get("signal"))
                reason = (f"Signal:{signal}" if signal
                          else f"ExitCode:{_int(terminated.get('exitCode'))}")
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _pod_condition_true(conditions, "Ready") else "NotReady"

    if _deleting(pod) and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif _deleting(pod) and phase not in ("Failed", "Succeeded"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"

    pod_ips = status.get("podIPs") or []
    pod_ip = (pod_ips[0].get("ip") if pod_ips else status.get("podIP")) or "<none>"
    gates = spec.get("readinessGates") or []
    readiness = "<none>"
    if gates:
        met = sum(1 for g in gates if _pod_condition_true(conditions, g.get("conditionType")))
        readiness = f"{met}/{len(gates)}"
    return [_name(pod), f"{ready}/{total}", reason, restarts_text, _age(pod, now),
            pod_ip, spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", readiness]


@_table(
    "", "Node", _NAME,
    _Col("Status", "string", "The status of the node"),
    _Col("Roles", "string", "The roles of the node"),
    _AGE,
    _Col("Version", "string", "@core.v1.NodeSystemInfo.kubeletVersion"),
    _wide("Internal-IP", "@core.v1.NodeStatus.addresses"),
    _wide("External-IP", "@core.v1.NodeStatus.addresses"),
    _wide("OS-Image", "@core.v1.NodeSystemInfo.osImage"),
    _wide("Kernel-Version", "@core.v1.NodeSystemInfo.kernelVersion"),
    _wide("Container-Runtime", "@core.v1.NodeSystemInfo.containerRuntimeVersion"),
)
def _node(node: Obj, now: float) -> list[Any]:
    status = _status(node)
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    states = ["Ready" if ready[-1].get("status") == "True" else "NotReady"] if ready else ["Unknown"]
    if _spec(node).get("unschedulable"):
        states.append("SchedulingDisabled")
    roles: set[str] = set()
    for key, value in (_meta(node).get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            if role := key[len("node-role.kubernetes.io/"):]:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        for a in status.get("addresses") or []:
            if a.get("type") == kind:
                return str(a.get("address", ""))
        return "<none>"

    return [_name(node), ",".join(states), ",".join(sorted(roles)) or "<none>", _age(node, now),
            info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def _load_balancer_ips(status: Obj) -> str:
    seen = {i.get("ip") or i.get("hostname") for i in
            (status.get("loadBalancer") or {}).get("ingress") or []}
    # The server prints wide, so the list is never clipped to 16 characters.
    return ",".join(sorted(s for s in seen if s))


def _service_external_ip(svc: Obj) -> str:
    spec = _spec(svc)
    svc_type, external = spec.get("type"), spec.get("externalIPs") or []
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if svc_type == "LoadBalancer":
        lb = _load_balancer_ips(_status(svc))
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + list(external))
        return lb or "<pending>"
    if svc_type == "ExternalName":
        return str(spec.get("externalName", ""))
    return "<unknown>"


@_table(
    "", "Service", _NAME,
    _Col("Type", "string", "@core.v1.ServiceSpec.type"),
    _Col("Cluster-IP", "string", "@core.v1.ServiceSpec.clusterIP"),
    _Col("External-IP", "string", "@core.v1.ServiceSpec.externalIPs"),
    _Col("Port(s)", "string", "@core.v1.ServiceSpec.ports"),
    _AGE,
    _wide("Selector", "@core.v1.ServiceSpec.selector"),
)
def _service(svc: Obj, now: float) -> list[Any]:
    spec = _spec(svc)
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ports = []
    for p in spec.get("ports") or []:
        proto = p.get("protocol") or "TCP"
        node_port = _int(p.get("nodePort"))
        ports.append(f"{_int(p.get('port'))}:{node_port}/{proto}" if node_port > 0
                     else f"{_int(p.get('port'))}/{proto}")
    return [_name(svc), str(spec.get("type") or ""), cluster_ips[0] if cluster_ips else "<none>",
            _service_external_ip(svc), ",".join(ports) or "<none>", _age(svc, now),
            _format_labels(spec.get("selector"))]


@_table("", "Endpoints", _NAME, _Col("Endpoints", "string", "@core.v1.Endpoints.subsets"), _AGE)
def _endpoints(ep: Obj, now: float) -> list[Any]:
    subsets = ep.get("subsets") or []
    if not subsets:
        return [_name(ep), "<none>", _age(ep, now)]
    items: list[str] = []
    count = 0
    for ss in subsets:
        addresses = [str(a.get("ip", "")) for a in ss.get("addresses") or []]
        ports = ss.get("ports") or []
        if not ports:
            count += len(addresses)
            items.extend(addresses[: max(0, 3 - len(items))])
            continue
        for port in ports:
            count += len(addresses)
            items.extend(_join_host_port(ip, _int(port.get("port")))
                         for ip in addresses[: max(0, 3 - len(items))])
    text = ",".join(items)
    if count > 3:
        text = f"{text} + {count - 3} more..."
    return [_name(ep), text, _age(ep, now)]


@_table("", "ConfigMap", _NAME, _Col("Data", "string", "@core.v1.ConfigMap.data"), _AGE)
def _configmap(cm: Obj, now: float) -> list[Any]:
    return [_name(cm), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), _age(cm, now)]


@_table("", "Secret", _NAME, _Col("Type", "string", "@core.v1.Secret.type"),
        _Col("Data", "string", "@core.v1.Secret.data"), _AGE)
def _secret(secret: Obj, now: float) -> list[Any]:
    return [_name(secret), str(secret.get("type") or ""), len(secret.get("data") or {}),
            _age(secret, now)]


def _event_source(event: Obj) -> str:
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    instance = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {instance}" if instance else str(component)


@_table(
    "", "Event",
    _Col("Last Seen", "string", "@core.v1.Event.lastTimestamp"),
    _Col("Type", "string", "@core.v1.Event.type"),
    _Col("Reason", "string", "@core.v1.Event.reason"),
    _Col("Object", "string", "@core.v1.Event.involvedObject"),
    _wide("Subobject", "@core.v1.ObjectReference.fieldPath"),
    _wide("Source", "@core.v1.Event.source"),
    _Col("Message", "string", "@core.v1.Event.message"),
    _wide("First Seen", "@core.v1.Event.firstTimestamp"),
    _wide("Count", "@core.v1.Event.count"),
    _Col("Name", "string", "@meta.v1.ObjectMeta.name", priority=1, format="name"),
)
def _event(event: Obj, now: float) -> list[Any]:
    first = (_since(event.get("firstTimestamp"), now)
             if _time_or_none(event.get("firstTimestamp")) is not None
             else _since(event.get("eventTime"), now))
    last = (_since(event.get("lastTimestamp"), now)
            if _time_or_none(event.get("lastTimestamp")) is not None else first)
    count = _int(event.get("count"))
    series = event.get("series")
    if series is not None:
        last = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events from the events.k8s.io API have no count
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    return [last, str(event.get("type") or ""), str(event.get("reason") or ""), target,
            str(involved.get("fieldPath") or ""), _event_source(event),
            str(event.get("message") or "").strip(), first, count, _name(event)]


@_table("", "Namespace", _NAME, _Col("Status", "string", "The status of the namespace"), _AGE)
def _namespace(ns: Obj, now: float) -> list[Any]:
    return [_name(ns), str(_status(ns).get("phase") or ""), _age(ns, now)]


@_table("", "ServiceAccount", _NAME,
        _Col("Secrets", "string", "@core.v1.ServiceAccount.secrets"), _AGE)
def _service_account(sa: Obj, now: float) -> list[Any]:
    return [_name(sa), len(sa.get("secrets") or []), _age(sa, now)]


def _access_modes(modes: Any) -> str:
    present = set(modes or [])
    short = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
             ("ReadWriteOncePod", "RWOP"))
    return ",".join(abbr for mode, abbr in short if mode in present)


_STORAGE_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"


def _storage_class_of(obj: Obj) -> str:
    annotations = _meta(obj).get("annotations") or {}
    if _STORAGE_CLASS_ANNOTATION in annotations:
        return str(annotations[_STORAGE_CLASS_ANNOTATION])
    return str(_spec(obj).get("storageClassName") or "")


@_table(
    "", "PersistentVolume", _NAME,
    _Col("Capacity", "string", "@core.v1.PersistentVolumeSpec.capacity"),
    _Col("Access Modes", "string", "@core.v1.PersistentVolumeSpec.accessModes"),
    _Col("Reclaim Policy", "string", "@core.v1.PersistentVolumeSpec.persistentVolumeReclaimPolicy"),
    _Col("Status", "string", "@core.v1.PersistentVolumeStatus.phase"),
    _Col("Claim", "string", "@core.v1.PersistentVolumeSpec.claimRef"),
    _Col("StorageClass", "string", "StorageClass of the pv"),
    _Col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
    _Col("Reason", "string", "@core.v1.PersistentVolumeStatus.reason"),
    _AGE,
    _wide("VolumeMode", "@core.v1.PersistentVolumeSpec.volumeMode"),
)
def _persistent_volume(pv: Obj, now: float) -> list[Any]:
    spec, status = _spec(pv), _status(pv)
    claim = spec.get("claimRef")
    claim_text = f"{claim.get('namespace', '')}/{claim.get('name', '')}" if claim else ""
    phase = "Terminating" if _deleting(pv) else str(status.get("phase") or "")
    return [_name(pv), _qty((spec.get("capacity") or {}).get("storage")),
            _access_modes(spec.get("accessModes")),
            str(spec.get("persistentVolumeReclaimPolicy") or ""), phase, claim_text,
            _storage_class_of(pv), spec.get("volumeAttributesClassName") or "<unset>",
            str(status.get("reason") or ""), _age(pv, now), spec.get("volumeMode") or "<unset>"]


@_table(
    "", "PersistentVolumeClaim", _NAME,
    _Col("Status", "string", "@core.v1.PersistentVolumeClaimStatus.phase"),
    _Col("Volume", "string", "@core.v1.PersistentVolumeClaimSpec.volumeName"),
    _Col("Capacity", "string", "@core.v1.PersistentVolumeClaimStatus.capacity"),
    _Col("Access Modes", "string", "@core.v1.PersistentVolumeClaimStatus.accessModes"),
    _Col("StorageClass", "string", "StorageClass of the pvc"),
    _Col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
    _AGE,
    _wide("VolumeMode", "@core.v1.PersistentVolumeClaimSpec.volumeMode"),
)
def _persistent_volume_claim(pvc: Obj, now: float) -> list[Any]:
    spec, status = _spec(pvc), _status(pvc)
    phase = "Terminating" if _deleting(pvc) else str(status.get("phase") or "")
    capacity = modes = ""
    if spec.get("volumeName"):
        modes = _access_modes(status.get("accessModes"))
        capacity = _qty((status.get("capacity") or {}).get("storage"))
    return [_name(pvc), phase, str(spec.get("volumeName") or ""), capacity, modes,
            _storage_class_of(pvc), spec.get("volumeAttributesClassName") or "<unset>",
            _age(pvc, now), spec.get("volumeMode") or "<unset>"]


@_table(
    "", "ResourceQuota", _NAME,
    _Col("Request", "string", "Request represents a minimum amount of cpu/memory that a "
         "container may consume."),
    _Col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container "
         "may use independent of contention on the node."),
    _AGE,
)
def _resource_quota(quota: Obj, now: float) -> list[Any]:
    status = _status(quota)
    hard, used = status.get("hard") or {}, status.get("used") or {}
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        column = limits if resource.split(".")[0] == "limits" and "." in resource else requests
        column.append(f"{resource}: {_qty(used.get(resource))}/{_qty(hard[resource])}")
    return [_name(quota), ", ".join(requests), ", ".join(limits), _age(quota, now)]


# --------------------------------------------------------------------------- apps/v1


def _replicas(obj: Obj) -> int:
    return _int(_spec(obj).get("replicas"), 1)


@_table(
    "apps", "Deployment", _NAME,
    _Col("Ready", "string", "Number of the pod with ready state"),
    _Col("Up-to-date", "string", "@apps.v1.DeploymentStatus.updatedReplicas"),
    _Col("Available", "string", "@apps.v1.DeploymentStatus.availableReplicas"),
    _AGE, _CONTAINERS, _IMAGES,
    _wide("Selector", "@apps.v1.DeploymentSpec.selector"),
)
def _deployment(d: Obj, now: float) -> list[Any]:
    status = _status(d)
    selector = _selector_string(_spec(d).get("selector"))
    names, images = _containers(_template_spec(d))
    return [_name(d), f"{_int(status.get('readyReplicas'))}/{_replicas(d)}",
            _int(status.get("updatedReplicas")), _int(status.get("availableReplicas")),
            _age(d, now), names, images, "<invalid>" if selector is None else selector]


@_table(
    "apps", "ReplicaSet", _NAME,
    _Col("Desired", "integer", "@apps.v1.ReplicaSetSpec.replicas"),
    _Col("Current", "integer", "@apps.v1.ReplicaSetStatus.replicas"),
    _Col("Ready", "integer", "@apps.v1.ReplicaSetStatus.readyReplicas"),
    _AGE, _CONTAINERS, _IMAGES,
    _wide("Selector", "@apps.v1.ReplicaSetSpec.selector"),
)
def _replica_set(rs: Obj, now: float) -> list[Any]:
    status = _status(rs)
    names, images = _containers(_template_spec(rs))
    return [_name(rs), _replicas(rs), _int(status.get("replicas")),
            _int(status.get("readyReplicas")), _age(rs, now), names, images,
            _format_selector(_spec(rs).get("selector"))]


@_table(
    "apps", "StatefulSet", _NAME,
    _Col("Ready", "string", "Number of the pod with ready state"),
    _AGE, _CONTAINERS, _IMAGES,
)
def _stateful_set(sts: Obj, now: float) -> list[Any]:
    names, images = _containers(_template_spec(sts))
    return [_name(sts), f"{_int(_status(sts).get('readyReplicas'))}/{_replicas(sts)}",
            _age(sts, now), names, images]


@_table(
    "apps", "DaemonSet", _NAME,
    _Col("Desired", "integer", "@apps.v1.DaemonSetStatus.desiredNumberScheduled"),
    _Col("Current", "integer", "@apps.v1.DaemonSetStatus.currentNumberScheduled"),
    _Col("Ready", "integer", "@apps.v1.DaemonSetStatus.numberReady"),
    _Col("Up-to-date", "integer", "@apps.v1.DaemonSetStatus.updatedNumberScheduled"),
    _Col("Available", "integer", "@apps.v1.DaemonSetStatus.numberAvailable"),
    _Col("Node Selector", "string", "@core.v1.PodSpec.nodeSelector"),
    _AGE, _CONTAINERS, _IMAGES,
    _wide("Selector", "@apps.v1.DaemonSetSpec.selector"),
)
def _daemon_set(ds: Obj, now: float) -> list[Any]:
    status, template = _status(ds), _template_spec(ds)
    names, images = _containers(template)
    counts = [_int(status.get(k)) for k in ("desiredNumberScheduled", "currentNumberScheduled",
                                            "numberReady", "updatedNumberScheduled",
                                            "numberAvailable")]
    return [_name(ds), *counts, _format_labels(template.get("nodeSelector")), _age(ds, now),
            names, images, _format_selector(_spec(ds).get("selector"))]


def _group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


@_table(
    "apps", "ControllerRevision", _NAME,
    _Col("Controller", "string", "Controller of the object"),
    _Col("Revision", "string", "@apps.v1.ControllerRevision.revision"),
    _AGE,
)
def _controller_revision(cr: Obj, now: float) -> list[Any]:
    controller = "<none>"
    for ref in _meta(cr).get("ownerReferences") or []:
        if ref.get("controller"):
            kind, group = str(ref.get("kind") or ""), _group_of(str(ref.get("apiVersion") or ""))
            group_kind = f"{kind}.{group}" if group else kind
            controller = f"{group_kind.lower()}/{ref.get('name', '')}" if group_kind else str(
                ref.get("name", ""))
            break
    return [_name(cr), controller, _int(cr.get("revision")), _age(cr, now)]


# --------------------------------------------------------------------------- batch/v1


@_table(
    "batch", "Job", _NAME,
    _Col("Status", "string", "Status of the job."),
    _Col("Completions", "string", "@batch.v1.JobStatus.succeeded"),
    _Col("Duration", "string", "Time required to complete the job."),
    _AGE, _CONTAINERS, _IMAGES,
    _wide("Selector", "@batch.v1.JobSpec.selector"),
)
def _job(job: Obj, now: float) -> list[Any]:
    spec, status = _spec(job), _status(job)
    succeeded = _int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_int(spec['completions'])}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec['parallelism'])}"
    else:
        completions = f"{succeeded}/1"
    start, end = _time_or_none(status.get("startTime")), _time_or_none(status.get("completionTime"))
    duration = ("" if start is None else human_duration((now if end is None else end) - start))
    conditions = status.get("conditions")
    if _has_condition(conditions, "Complete"):
        state = "Complete"
    elif _has_condition(conditions, "Failed"):
        state = "Failed"
    elif _deleting(job):
        state = "Terminating"
    elif _has_condition(conditions, "Suspended"):
        state = "Suspended"
    elif _has_condition(conditions, "FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    names, images = _containers(_template_spec(job))
    return [_name(job), state, completions, duration, _age(job, now), names, images,
            _format_selector(spec.get("selector"))]


@_table(
    "batch", "CronJob", _NAME,
    _Col("Schedule", "string", "@batch.v1.CronJobSpec.schedule"),
    _Col("Timezone", "string", "@batch.v1.CronJobSpec.timeZone"),
    _Col("Suspend", "boolean", "@batch.v1.CronJobSpec.suspend"),
    _Col("Active", "integer", "@batch.v1.CronJobStatus.active"),
    _Col("Last Schedule", "string", "@batch.v1.CronJobStatus.lastScheduleTime"),
    _AGE, _CONTAINERS, _IMAGES,
    _wide("Selector", "@batch.v1.JobSpec.selector"),
)
def _cron_job(cj: Obj, now: float) -> list[Any]:
    spec, status = _spec(cj), _status(cj)
    last = status.get("lastScheduleTime")
    suspend = spec.get("suspend")
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    names, images = _containers((job_spec.get("template") or {}).get("spec") or {})
    return [_name(cj), str(spec.get("schedule") or ""), spec.get("timeZone") or "<none>",
            "<unset>" if suspend is None else "True" if suspend else "False",
            len(status.get("active") or []), "<none>" if last is None else _since(last, now),
            _age(cj, now), names, images, _format_selector(job_spec.get("selector"))]


# --------------------------------------------------------------------------- autoscaling


def _metric_text(spec: Obj, status: Obj | None) -> str:
    kind = spec.get("type")
    if kind in ("External", "Object"):
        key = kind.lower()
        target = (spec.get(key) or {}).get("target") or {}
        source = None if status is None else status.get(key)
        current = (source or {}).get("current") or {}
        if target.get("averageValue") is not None:
            cur = "<unknown>"
            if source is not None and current.get("averageValue") is not None:
                cur = _qty(current["averageValue"])
            return f"{cur}/{_qty(target['averageValue'])} (avg)"
        cur = "<unknown>" if source is None else _qty(current.get("value"), "<nil>")
        return f"{cur}/{_qty(target.get('value'), '<nil>')}"
    if kind == "Pods":
        target = (spec.get("pods") or {}).get("target") or {}
        cur = "<unknown>"
        if status is not None and status.get("pods") is not None:
            cur = _qty(((status["pods"].get("current")) or {}).get("averageValue"), "<nil>")
        return f"{cur}/{_qty(target.get('averageValue'), '<nil>')}"
    if kind in ("Resource", "ContainerResource"):
        key = "resource" if kind == "Resource" else "containerResource"
        source = spec.get(key) or {}
        target = source.get("target") or {}
        name = source.get("name", "")
        current_source = None if status is None else status.get(key)
        current = (current_source or {}).get("current") or {}
        if target.get("averageValue") is not None:
            cur = "<unknown>"
            if current_source is not None:
                cur = _qty(current.get("averageValue"), "<nil>")
            return f"{name}: {cur}/{_qty(target['averageValue'])}"
        cur = "<unknown>"
        if current_source is not None and current.get("averageUtilization") is not None:
            cur = f"{current['averageUtilization']}%"
        util = target.get("averageUtilization")
        return f"{name}: {cur}/{'<auto>' if util is None else f'{util}%'}"
    return "<unknown type>"


def _hpa_metrics(specs: list[Obj], statuses: list[Obj]) -> str:
    if not specs:
        return "<none>"
    texts = [_metric_text(s, statuses[i] if i < len(statuses) else None)
             for i, s in enumerate(specs)]
    if len(texts) > 2:
        return f"{', '.join(texts[:2])} + {len(texts) - 2} more..."
    return ", ".join(texts)


@_table(
    "autoscaling", "HorizontalPodAutoscaler", _NAME,
    _Col("Reference", "string", "@autoscaling.v2.HorizontalPodAutoscalerSpec.scaleTargetRef"),
    _Col("Targets", "string", "@autoscaling.v2.HorizontalPodAutoscalerSpec.metrics"),
    _Col("MinPods", "string", "@autoscaling.v2.HorizontalPodAutoscalerSpec.minReplicas"),
    _Col("MaxPods", "string", "@autoscaling.v2.HorizontalPodAutoscalerSpec.maxReplicas"),
    _Col("Replicas", "string", "@autoscaling.v2.HorizontalPodAutoscalerStatus.currentReplicas"),
    _AGE,
)
def _hpa(hpa: Obj, now: float) -> list[Any]:
    spec, status = _spec(hpa), _status(hpa)
    ref = spec.get("scaleTargetRef") or {}
    min_replicas = spec.get("minReplicas")
    return [_name(hpa), f"{ref.get('kind', '')}/{ref.get('name', '')}",
            _hpa_metrics(spec.get("metrics") or [], status.get("currentMetrics") or []),
            "<unset>" if min_replicas is None else str(min_replicas),
            _int(spec.get("maxReplicas")), _int(status.get("currentReplicas")), _age(hpa, now)]


# --------------------------------------------------------------------------- networking


@_table(
    "networking.k8s.io", "Ingress", _NAME,
    _Col("Class", "string", "The name of the IngressClass resource that should be used for "
         "additional configuration"),
    _Col("Hosts", "string", "Hosts that incoming requests are matched against before the "
         "ingress rule"),
    _Col("Address", "string", "Address is a list containing ingress points for the "
         "load-balancer"),
    _Col("Ports", "string", "Ports of TLS configurations that open"),
    _AGE,
)
def _ingress(ing: Obj, now: float) -> list[Any]:
    spec = _spec(ing)
    rules = spec.get("rules") or []
    hosts: list[str] = []
    more = False
    for rule in rules:  # as formatHosts: rules without a host are skipped, yet counted
        more = more or len(hosts) == 3
        if not more and rule.get("host"):
            hosts.append(str(rule["host"]))
    host_text = ",".join(hosts) or "*"
    if more:
        host_text = f"{host_text} + {len(rules) - 3} more..."
    return [_name(ing), spec.get("ingressClassName") or "<none>", host_text,
            _load_balancer_ips(_status(ing)), "80, 443" if spec.get("tls") else "80",
            _age(ing, now)]


@_table(
    "networking.k8s.io", "IngressClass", _NAME,
    _Col("Controller", "string", "Controller that is responsible for handling this class"),
    _Col("Parameters", "string", "A reference to a resource with additional parameters"),
    _AGE,
)
def _ingress_class(ic: Obj, now: float) -> list[Any]:
    spec = _spec(ic)
    params = spec.get("parameters")
    text = "<none>"
    if params:
        text = str(params.get("kind") or "")
        if params.get("apiGroup") is not None:
            text += f".{params['apiGroup']}"
        text += f"/{params.get('name', '')}"
    return [_name(ic), str(spec.get("controller") or ""), text, _age(ic, now)]


@_table("networking.k8s.io", "NetworkPolicy", _NAME,
        _Col("Pod-Selector", "string", "@networking.v1.NetworkPolicySpec.podSelector"), _AGE)
def _network_policy(np: Obj, now: float) -> list[Any]:
    return [_name(np), _format_selector(_spec(np).get("podSelector") or {}), _age(np, now)]


@_table(
    "discovery.k8s.io", "EndpointSlice", _NAME,
    _Col("AddressType", "string", "@discovery.v1.EndpointSlice.addressType"),
    _Col("Ports", "string", "@discovery.v1.EndpointSlice.ports"),
    _Col("Endpoints", "string", "@discovery.v1.EndpointSlice.endpoints"),
    _AGE,
)
def _endpoint_slice(es: Obj, now: float) -> list[Any]:
    ports = es.get("ports") or []
    port_texts = [str(p["port"]) if p.get("port") is not None
                  else str(p["name"]) if p.get("name") is not None else "*" for p in ports]
    addresses = [str(a) for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    return [_name(es), str(es.get("addressType") or ""),
            _list_with_more(port_texts, len(port_texts), 3, "<unset>"),
            _list_with_more(addresses, len(addresses), 3, "<unset>"), _age(es, now)]


# --------------------------------------------------------------------------- other groups


@_table(
    "policy", "PodDisruptionBudget", _NAME,
    _Col("Min Available", "string", "The minimum number of pods that must be available."),
    _Col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
    _Col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at "
         "this time."),
    _AGE,
)
def _pdb(pdb: Obj, now: float) -> list[Any]:
    spec = _spec(pdb)
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [_name(pdb), "N/A" if min_available is None else str(min_available),
            "N/A" if max_unavailable is None else str(max_unavailable),
            _int(_status(pdb).get("disruptionsAllowed")), _age(pdb, now)]


@_table(
    "scheduling.k8s.io", "PriorityClass", _NAME,
    _Col("Value", "integer", "@scheduling.v1.PriorityClass.value"),
    _Col("Global-Default", "boolean", "@scheduling.v1.PriorityClass.globalDefault"),
    _AGE,
    _Col("PreemptionPolicy", "string", "@scheduling.v1.PriorityClass.preemptionPolicy"),
)
def _priority_class(pc: Obj, now: float) -> list[Any]:
    return [_name(pc), _int(pc.get("value")), bool(pc.get("globalDefault")), _age(pc, now),
            str(pc.get("preemptionPolicy") or "")]


@_table("certificates.k8s.io", "CertificateSigningRequest", _NAME, _AGE,
        _Col("SignerName", "string", "@certificates.v1.CertificateSigningRequestSpec.signerName"),
        _Col("Requestor", "string", "Name of the user that created the request."),
        _Col("RequestedDuration", "string",
             "@certificates.v1.CertificateSigningRequestSpec.expirationSeconds"),
        _Col("Condition", "string", "Whether the request is approved, denied, issued or "
             "pending."))
def _csr(csr: Obj, now: float) -> list[Any]:
    spec, status = _spec(csr), _status(csr)
    types = [str(c.get("type")) for c in status.get("conditions") or []
             if isinstance(c, dict) and c.get("type") in ("Approved", "Denied", "Failed")]
    words: list[str] = [t for t in ("Approved", "Denied", "Failed") if t in types]
    if status.get("certificate"):
        words.append("Issued")
    secs = spec.get("expirationSeconds")
    return [_name(csr), _age(csr, now), str(spec.get("signerName") or ""),
            str(spec.get("username") or ""),
            short_human_duration(float(secs)) if isinstance(secs, int) else "<none>",
            ",".join(words) or "Pending"]


@_table("coordination.k8s.io", "Lease", _NAME,
        _Col("Holder", "string", "@coordination.v1.LeaseSpec.holderIdentity"), _AGE)
def _lease(lease: Obj, now: float) -> list[Any]:
    return [_name(lease), str(_spec(lease).get("holderIdentity") or ""), _age(lease, now)]


def _subjects(subjects: Any) -> tuple[str, str, str]:
    users: list[str] = []
    groups: list[str] = []
    service_accounts: list[str] = []
    for s in subjects or []:
        kind = s.get("kind")
        if kind == "ServiceAccount":
            service_accounts.append(f"{s.get('namespace', '')}/{s.get('name', '')}")
        elif kind == "User":
            users.append(str(s.get("name", "")))
        elif kind == "Group":
            groups.append(str(s.get("name", "")))
    return ", ".join(users), ", ".join(groups), ", ".join(service_accounts)


def _binding(binding: Obj, now: float) -> list[Any]:
    ref = binding.get("roleRef") or {}
    return [_name(binding), f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(binding, now),
            *_subjects(binding.get("subjects"))]


for _kind, _who in (("RoleBinding", "roleBinding"), ("ClusterRoleBinding", "clusterRoleBinding")):
    _table(
        "rbac.authorization.k8s.io", _kind, _NAME,
        _Col("Role", "string", f"@rbac.v1.{_kind}.roleRef"),
        _AGE,
        _wide("Users", f"Users in the {_who}"),
        _wide("Groups", f"Groups in the {_who}"),
        _wide("ServiceAccounts", f"ServiceAccounts in the {_who}"),
    )(_binding)


_DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                              "storageclass.beta.kubernetes.io/is-default-class")


@_table(
    "storage.k8s.io", "StorageClass", _NAME,
    _Col("Provisioner", "string", "@storage.v1.StorageClass.provisioner"),
    _Col("ReclaimPolicy", "string", "@storage.v1.StorageClass.reclaimPolicy"),
    _Col("VolumeBindingMode", "string", "@storage.v1.StorageClass.volumeBindingMode"),
    _Col("AllowVolumeExpansion", "string", "@storage.v1.StorageClass.allowVolumeExpansion"),
    _AGE,
)
def _storage_class(sc: Obj, now: float) -> list[Any]:
    annotations = _meta(sc).get("annotations") or {}
    name = _name(sc)
    if any(annotations.get(a) == "true" for a in _DEFAULT_CLASS_ANNOTATIONS):
        name += " (default)"
    return [name, str(sc.get("provisioner") or ""), sc.get("reclaimPolicy") or "Delete",
            sc.get("volumeBindingMode") or "Immediate", bool(sc.get("allowVolumeExpansion")),
            _age(sc, now)]


# --------------------------------------------------------------------------- custom resources

_CRD_DEFAULT_COLUMNS = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]


def _printer_columns(declared: list[Obj] | None) -> list[Obj]:
    """``serveDefaultColumnsIfEmpty``: a CRD without columns prints its age."""
    return list(declared) if declared else _CRD_DEFAULT_COLUMNS


def crd_columns(additional_printer_columns: list[Obj] | None) -> list[dict[str, Any]]:
    """The columns of a custom resource: Name, then the CRD's printer columns.

    >>> [c["name"] for c in crd_columns([])]
    ['Name', 'Age']
    """
    out = [_definition(_NAME)]
    if not additional_printer_columns:
        return [*out, _definition(_AGE_DATE)]
    for col in additional_printer_columns:
        path = col.get("jsonPath", "")
        description = col.get("description") or (
            f"Custom resource definition column (in JSONPath format): {path}")
        out.append({"name": col.get("name", ""), "type": col.get("type", "string"),
                    "format": col.get("format", ""), "description": description,
                    "priority": _int(col.get("priority"))})
    return out


def crd_cells(additional_printer_columns: list[Obj] | None, obj: Obj, now: float) -> list[Any]:
    """One custom resource's cells, aligned with :func:`crd_columns`.

    Each column takes the first value its JSONPath selects; a path that selects nothing,
    fails, or yields a value of the wrong type gives a null cell, as upstream.
    """
    row: list[Any] = [_name(obj)]
    for col in _printer_columns(additional_printer_columns):
        try:
            found = jsonpath.find(obj, "{" + str(col.get("jsonPath", "")) + "}")
        except jsonpath.JSONPathError:
            found = []
        if not found:
            row.append(None)
            continue
        row.append(_crd_cell(str(col.get("type", "string")), found[0], now))
    return row


def _crd_cell(column_type: str, value: Any, now: float) -> Any:
    if column_type == "string":
        return "<no value>" if value is None else jsonpath.format_value(value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if column_type == "integer" and is_number:
        return int(value) if math.isfinite(value) else None
    if column_type == "number" and is_number:
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        try:
            when = _parse_time(value)
        except ValueError:
            return "<invalid>"
        return "<unknown>" if when is None else human_duration(now - when)
    return None
