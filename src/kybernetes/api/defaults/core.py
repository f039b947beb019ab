"""Defaults of the core (``v1``) kinds, and their create/update preparation.

Besides ``pkg/apis/core/v1/defaults.go`` this holds the parts of the upstream registry
strategies that clients observe: a new Namespace is ``Active`` with the ``kubernetes``
finalizer, a new Pod is ``Pending`` with its QoS class, and Service updates keep the cluster
IPs and node ports the server allocated when the client leaves them out.
"""

from __future__ import annotations

import base64
from typing import Any

from kybernetes.api.defaults.podspec import (
    default_pod,
    default_pvc_spec,
    default_volume_sources,
    round_up_to_milli,
)
from kybernetes.api.strategy import defaulter, on_create, on_update
from kybernetes.api.validation.resources import qos_class

Obj = dict[str, Any]

DEFAULT_CLIENT_IP_AFFINITY_SECONDS = 10800
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    return spec


def _status(obj: Obj) -> Obj:
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    return status


# -- Pod --------------------------------------------------------------------------------------


@defaulter("", "Pod")
def default_pod_object(pod: Obj) -> None:
    default_pod(pod)
    status = _status(pod)
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", qos_class(pod.get("spec")))


@on_create("", "Pod")
def prepare_pod_create(pod: Obj) -> None:
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    # upstream's PrepareForCreate: whatever status the client sent, a new pod is Pending
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    if spec.get("schedulingGates"):
        conditions = _status(pod).setdefault("conditions", [])
        if not any(c.get("type") == "PodScheduled" for c in conditions if isinstance(c, dict)):
            conditions.append({
                "type": "PodScheduled", "status": "False", "reason": "SchedulingGated",
                "message": "Scheduling is blocked due to non-empty scheduling gates",
                "lastProbeTime": None, "lastTransitionTime": None})


# -- Service ----------------------------------------------------------------------------------


def externally_accessible(spec: Obj) -> bool:
    kind = spec.get("type")
    return kind in ("LoadBalancer", "NodePort") or (kind == "ClusterIP"
                                                    and bool(spec.get("externalIPs")))


@defaulter("", "Service")
def default_service(svc: Obj) -> None:
    spec = _spec(svc)
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        config = spec.get("sessionAffinityConfig")
        client_ip = config.get("clientIP") if isinstance(config, dict) else None
        if not isinstance(client_ip, dict) or client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {
                "clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_AFFINITY_SECONDS}}
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    for port in spec.get("ports") or []:
        if not isinstance(port, dict):
            continue
        if not port.get("protocol"):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port", 0)
    if externally_accessible(spec) and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and \
            spec["type"] in ("NodePort", "LoadBalancer", "ClusterIP"):
        spec["internalTrafficPolicy"] = "Cluster"
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
        for ingress in (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []:
            if isinstance(ingress, dict) and ingress.get("ip") and "ipMode" not in ingress:
                ingress["ipMode"] = "VIP"
    if spec.get("clusterIP") and not spec.get("clusterIPs") and spec["type"] != "ExternalName":
        spec["clusterIPs"] = [spec["clusterIP"]]
    _default_ip_families(spec)


def _default_ip_families(spec: Obj) -> None:
    """A single-stack IPv4 cluster: families follow the cluster IPs, else IPv4."""
    if spec.get("type") == "ExternalName":
        return
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    headless = ips == ["None"]
    if not spec.get("ipFamilies"):
        families = ["IPv6" if ":" in str(ip) else "IPv4" for ip in ips if ip != "None"]
        spec["ipFamilies"] = families or ["IPv4"]
    if spec.get("ipFamilyPolicy") is None:
        dual = headless and not spec.get("selector")
        spec["ipFamilyPolicy"] = "RequireDualStack" if dual else "SingleStack"


@on_create("", "Service")
def prepare_service_create(svc: Obj) -> None:
    svc["status"] = {"loadBalancer": {}}
    spec = _spec(svc)
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]


def _needs_node_port(spec: Obj) -> bool:
    return spec.get("type") == "NodePort" or (
        spec.get("type") == "LoadBalancer"
        and spec.get("allocateLoadBalancerNodePorts") is not False)


@on_update("", "Service")
def prepare_service_update(new: Obj, old: Obj) -> None:
    """Keep allocated values a client left out, then sync ``clusterIP`` and ``clusterIPs``."""
    spec, old_spec = _spec(new), old.get("spec") or {}
    if "ExternalName" not in (spec.get("type", "ClusterIP"), old_spec.get("type", "ClusterIP")):
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = old_spec["clusterIPs"]
        for field in ("ipFamilies", "ipFamilyPolicy"):
            if field not in spec and field in old_spec:
                spec[field] = old_spec[field]
    if _needs_node_port(spec) and _needs_node_port(old_spec):
        old_ports = {p.get("name", ""): p.get("nodePort", 0) for p in old_spec.get("ports") or []}
        used = {p.get("nodePort") for p in spec.get("ports") or [] if p.get("nodePort")}
        for port in spec.get("ports") or []:
            previous = old_ports.get(port.get("name", ""), 0)
            if not port.get("nodePort") and previous and previous not in used:
                port["nodePort"] = previous
    if spec.get("type") == "LoadBalancer" and old_spec.get("type") == "LoadBalancer" and \
            spec.get("externalTrafficPolicy") == "Local" and \
            old_spec.get("externalTrafficPolicy") == "Local" and \
            not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]
    _drop_type_dependent_fields(new, old_spec)
    old_ips = old_spec.get("clusterIPs") or []
    same_ip = spec.get("clusterIP") == old_spec.get("clusterIP")
    if old_ips and not spec.get("clusterIPs") and same_ip:
        spec["clusterIPs"] = old_ips
    if spec.get("clusterIP") != old_spec.get("clusterIP") and spec.get("clusterIPs") == old_ips:
        if old_spec.get("clusterIP") and not spec.get("clusterIP"):
            spec.pop("clusterIPs", None)
        elif spec.get("clusterIP"):
            spec["clusterIPs"] = [spec["clusterIP"]]


def _drop_type_dependent_fields(new: Obj, old_spec: Obj) -> None:
    """Fields the old type needed (and the client did not touch) go when the type changes."""
    spec = new["spec"]

    def drop_if_same(*fields: str) -> None:
        if all(spec.get(f) == old_spec.get(f) for f in fields):
            for f in fields:
                spec.pop(f, None)

    if old_spec.get("type", "ClusterIP") != "ExternalName" and spec.get("type") == "ExternalName":
        drop_if_same("clusterIP", "clusterIPs")
        drop_if_same("ipFamilies")
        drop_if_same("ipFamilyPolicy")
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    if _needs_node_port(old_spec) and not _needs_node_port(spec) and \
            [p.get("nodePort") for p in ports] == \
            [p.get("nodePort") for p in old_spec.get("ports") or []]:
        for port in ports:
            port.pop("nodePort", None)
    was_lb, is_lb = old_spec.get("type") == "LoadBalancer", spec.get("type") == "LoadBalancer"
    if was_lb and not is_lb:
        drop_if_same("allocateLoadBalancerNodePorts")
        drop_if_same("loadBalancerClass")
        if old_spec.get("externalTrafficPolicy") == "Local":
            drop_if_same("healthCheckNodePort")
    if externally_accessible(old_spec) and not externally_accessible(spec):
        drop_if_same("externalTrafficPolicy")
    if not is_lb and isinstance(new.get("status"), dict) and "loadBalancer" in new["status"]:
        new["status"]["loadBalancer"] = {}


# -- Namespace --------------------------------------------------------------------------------


@defaulter("", "Namespace")
def default_namespace(ns: Obj) -> None:
    name = (ns.get("metadata") or {}).get("name")
    if name:
        ns["metadata"].setdefault("labels", {})[NAMESPACE_NAME_LABEL] = name
    status = _status(ns)
    if not status.get("phase"):
        status["phase"] = "Active"


@on_create("", "Namespace")
def prepare_namespace_create(ns: Obj) -> None:
    """New namespaces are Active and carry the ``kubernetes`` finalizer."""
    ns["status"] = {"phase": "Active"}
    finalizers = _spec(ns).setdefault("finalizers", [])
    if "kubernetes" not in finalizers:
        finalizers.append("kubernetes")


# -- Secret and ConfigMap ---------------------------------------------------------------------


@defaulter("", "Secret")
def default_secret(secret: Obj) -> None:
    if not secret.get("type"):
        secret["type"] = "Opaque"
    # The v1 conversion merges stringData into data (stringData wins) before storing.
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = secret.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


# -- storage ----------------------------------------------------------------------------------


@on_create("", "PersistentVolume")
@on_create("", "PersistentVolumeClaim")
def default_pending_phase(obj: Obj) -> None:
    """Volumes and claims start Pending (also a create hook: creating resets the status)."""
    status = _status(obj)
    if not status.get("phase"):
        status["phase"] = "Pending"


@defaulter("", "PersistentVolume")
def default_persistent_volume(pv: Obj) -> None:
    spec = _spec(pv)
    if not spec.get("persistentVolumeReclaimPolicy"):
        spec["persistentVolumeReclaimPolicy"] = "Retain"
    spec.setdefault("volumeMode", "Filesystem")
    default_volume_sources(spec)
    default_pending_phase(pv)


@defaulter("", "PersistentVolumeClaim")
def default_persistent_volume_claim(pvc: Obj) -> None:
    default_pvc_spec(_spec(pvc))
    default_pending_phase(pvc)


# -- Endpoints, LimitRange, Node ---------------------------------------------------------------


@defaulter("", "Endpoints")
def default_endpoints(ep: Obj) -> None:
    for subset in ep.get("subsets") or []:
        for port in (subset.get("ports") or []) if isinstance(subset, dict) else []:
            if isinstance(port, dict) and not port.get("protocol"):
                port["protocol"] = "TCP"


@defaulter("", "LimitRange")
def default_limit_range(lr: Obj) -> None:
    """Container limits: default limit from max, default request from limit or min."""
    for item in (lr.get("spec") or {}).get("limits") or []:
        if not isinstance(item, dict) or item.get("type") != "Container":
            continue
        for field in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            if isinstance(item.get(field), dict):
                item[field] = {k: round_up_to_milli(v) for k, v in item[field].items()}
        default = item.setdefault("default", {})
        request = item.setdefault("defaultRequest", {})
        for k, v in (item.get("max") or {}).items():
            default.setdefault(k, v)
        for k, v in default.items():
            request.setdefault(k, v)
        for k, v in (item.get("min") or {}).items():
            request.setdefault(k, v)


@defaulter("", "Node")
def default_node(node: Obj) -> None:
    status = node.get("status")
    if isinstance(status, dict) and "allocatable" not in status and \
            isinstance(status.get("capacity"), dict):
        status["allocatable"] = dict(status["capacity"])
