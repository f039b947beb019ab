"""The fields each kind can be selected by (``fieldSelector=``), as upstream defines them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]


def _get(obj: Obj, *path: str) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _s(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _pod(obj: Obj) -> dict[str, str]:
    return {
        "spec.nodeName": _s(_get(obj, "spec", "nodeName")),
        "spec.restartPolicy": _s(_get(obj, "spec", "restartPolicy")),
        "spec.schedulerName": _s(_get(obj, "spec", "schedulerName")),
        "spec.serviceAccountName": _s(_get(obj, "spec", "serviceAccountName")),
        "spec.hostNetwork": _s(bool(_get(obj, "spec", "hostNetwork"))),
        "status.phase": _s(_get(obj, "status", "phase")),
        "status.podIP": _s(_get(obj, "status", "podIP")),
        "status.nominatedNodeName": _s(_get(obj, "status", "nominatedNodeName")),
    }


def _event(obj: Obj) -> dict[str, str]:
    io = obj.get("involvedObject") or obj.get("regarding") or {}
    src = obj.get("source") or obj.get("deprecatedSource") or {}
    return {
        "involvedObject.kind": _s(io.get("kind")),
        "involvedObject.namespace": _s(io.get("namespace")),
        "involvedObject.name": _s(io.get("name")),
        "involvedObject.uid": _s(io.get("uid")),
        "involvedObject.apiVersion": _s(io.get("apiVersion")),
        "involvedObject.resourceVersion": _s(io.get("resourceVersion")),
        "involvedObject.fieldPath": _s(io.get("fieldPath")),
        "regarding.kind": _s(io.get("kind")),
        "regarding.namespace": _s(io.get("namespace")),
        "regarding.name": _s(io.get("name")),
        "regarding.uid": _s(io.get("uid")),
        "reason": _s(obj.get("reason")),
        "reportingComponent": _s(obj.get("reportingComponent") or obj.get("reportingController")),
        "source": _s(src.get("component")),
        "type": _s(obj.get("type")),
    }


_EXTRA: dict[tuple[str, str], Callable[[Obj], dict[str, str]]] = {
    ("", "Pod"): _pod,
    ("", "Event"): _event,
    ("events.k8s.io", "Event"): _event,
    ("", "Node"): lambda o: {"spec.unschedulable": _s(bool(_get(o, "spec", "unschedulable")))},
    ("", "Namespace"): lambda o: {"status.phase": _s(_get(o, "status", "phase"))},
    ("", "Secret"): lambda o: {"type": _s(o.get("type"))},
    ("", "Service"): lambda o: {"spec.clusterIP": _s(_get(o, "spec", "clusterIP")),
                                "spec.type": _s(_get(o, "spec", "type"))},
    ("", "PersistentVolumeClaim"): lambda o: {
        "spec.volumeName": _s(_get(o, "spec", "volumeName"))},
    ("", "PersistentVolume"): lambda o: {
        "spec.storageClassName": _s(_get(o, "spec", "storageClassName"))},
    ("apps", "ReplicaSet"): lambda o: {"status.replicas": _s(_get(o, "status", "replicas"))},
    ("batch", "Job"): lambda o: {"status.successful": _s(_get(o, "status", "succeeded") or 0)},
    ("certificates.k8s.io", "CertificateSigningRequest"): lambda o: {
        "spec.signerName": _s(_get(o, "spec", "signerName"))},
}


def field_values(group: str, kind: str, obj: Obj, *, namespaced: bool) -> dict[str, str]:
    """The selectable fields of ``obj`` with their string values."""
    meta = obj.get("metadata") or {}
    out = {"metadata.name": _s(meta.get("name"))}
    if namespaced:
        out["metadata.namespace"] = _s(meta.get("namespace"))
    extra = _EXTRA.get((group, kind))
    if extra is not None:
        out.update(extra(obj))
    return out


def supported_fields(group: str, kind: str, *, namespaced: bool) -> set[str]:
    """Names of the selectable fields of a kind (others are rejected with 400)."""
    return set(field_values(group, kind, {}, namespaced=namespaced))
