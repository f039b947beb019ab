"""What the Endpoints and EndpointSlice controllers share: which pods belong in a
Service's endpoints, the port a Service port resolves to on a pod, and which Services
select a pod.

Upstream's ``endpointutil`` and ``podutil.FindPort``: a pod is an endpoint once it has an
IP and is not terminal (Succeeded/Failed); a pod being deleted only where terminating
endpoints are wanted. A numeric ``targetPort`` is taken as is; a named one is looked up
among the pod's container ports (and restartable init containers) with the Service
port's protocol.
"""

from __future__ import annotations

from typing import Any

from kybernetes.api.meta import parse_time, rfc3339
from kybernetes.client import NAMESPACE_INDEX, Informer, object_key

Obj = dict[str, Any]

TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
HEADLESS = "service.kubernetes.io/headless"


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_ip(pod: Obj) -> str:
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if ip:
        return str(ip)
    ips = status.get("podIPs") or []
    return str(ips[0].get("ip") or "") if ips else ""


def should_be_in_endpoints(pod: Obj, *, include_terminating: bool) -> bool:
    """Upstream's ``ShouldPodBeInEndpoints``."""
    if is_terminal(pod) or not pod_ip(pod):
        return False
    return include_terminating or not (pod.get("metadata") or {}).get("deletionTimestamp")


def find_port(pod: Obj, svc_port: Obj) -> int | None:
    """The pod port ``svc_port``'s targetPort names (upstream's ``FindPort``), or None."""
    target = svc_port.get("targetPort")
    if target is None or target == "" or target == 0:
        target = svc_port.get("port")
    if isinstance(target, int):
        return target
    protocol = svc_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or []
                   if c.get("restartPolicy") == "Always"]
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def should_set_hostname(pod: Obj, service: Obj) -> bool:
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == service["metadata"]["name"] \
        and pod["metadata"].get("namespace") == service["metadata"].get("namespace")


def target_ref(pod: Obj) -> Obj:
    md = pod["metadata"]
    return {"kind": "Pod", "namespace": md.get("namespace"), "name": md["name"],
            "uid": md.get("uid")}


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def services_for_pod(services: Informer, pod: Obj) -> set[str]:
    """Keys of the Services (with a selector) in the pod's namespace that select it."""
    md = pod.get("metadata") or {}
    labels = md.get("labels") or {}
    return {object_key(s) for s in services.by_index(NAMESPACE_INDEX, md.get("namespace") or "")
            if (sel := (s.get("spec") or {}).get("selector")) and selector_matches(sel, labels)}


def selected_pods(pods: Informer, service: Obj) -> list[Obj]:
    """The pods in the Service's namespace its (non-empty) selector matches."""
    selector = (service.get("spec") or {}).get("selector") or {}
    ns = service["metadata"].get("namespace") or ""
    return sorted((p for p in pods.by_index(NAMESPACE_INDEX, ns)
                   if selector_matches(selector, p["metadata"].get("labels") or {})),
                  key=lambda p: str(p["metadata"]["name"]))


def _last_change(obj: Obj) -> float | None:
    """When an object last changed as far as endpoints care: a pod's newest condition
    transition, a Service's creation (upstream's ``getLastUpdateTime``)."""
    times = [parse_time(c.get("lastTransitionTime"))
             for c in (obj.get("status") or {}).get("conditions") or []]
    known = [t for t in times if t is not None]
    if known:
        return max(known)
    return parse_time((obj.get("metadata") or {}).get("creationTimestamp"))


def trigger_time(service: Obj, pods: list[Obj]) -> str | None:
    """The ``last-change-trigger-time`` annotation: the newest change among the Service
    and its pods, or None when none is known."""
    times = [t for o in [service, *pods] if (t := _last_change(o)) is not None]
    return rfc3339(max(times)) if times else None


def service_labels(service: Obj) -> dict[str, str]:
    """The Service's labels, plus the headless label when its clusterIP is None."""
    labels = dict(service["metadata"].get("labels") or {})
    labels.pop(HEADLESS, None)
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS] = ""
    return labels
