"""Conversions between versions that share storage.

- ``autoscaling/v1`` HorizontalPodAutoscaler <-> the stored ``autoscaling/v2`` form.
  Metrics v1 cannot express travel in the ``autoscaling.alpha.kubernetes.io/*``
  annotations, as upstream does, so a round trip through v1 loses nothing.
- ``events.k8s.io/v1`` Event <-> the stored core ``v1`` Event.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import orjson

Obj = dict[str, Any]

_METRICS_ANN = "autoscaling.alpha.kubernetes.io/metrics"
_CURRENT_ANN = "autoscaling.alpha.kubernetes.io/current-metrics"
_CONDITIONS_ANN = "autoscaling.alpha.kubernetes.io/conditions"
_BEHAVIOR_ANN = "autoscaling.alpha.kubernetes.io/behavior"


def _is_cpu_utilization(m: Obj) -> bool:
    return (m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu"
            and m.get("resource", {}).get("target", {}).get("type") == "Utilization")


def hpa_v1_to_v2(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v2"
    meta = out.setdefault("metadata", {})
    ann = dict(meta.get("annotations") or {})
    spec = out.get("spec") or {}
    v2spec: Obj = {k: v for k, v in spec.items() if k != "targetCPUUtilizationPercentage"}
    metrics: list[Obj] = []
    if _METRICS_ANN in ann:
        with contextlib.suppress(orjson.JSONDecodeError):
            metrics.extend(orjson.loads(ann.pop(_METRICS_ANN)))
    if "targetCPUUtilizationPercentage" in spec:
        metrics = [m for m in metrics if not _is_cpu_utilization(m)]
        metrics.insert(0, {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization",
            "averageUtilization": spec["targetCPUUtilizationPercentage"]}}})
    if metrics:
        v2spec["metrics"] = metrics
    if _BEHAVIOR_ANN in ann:
        with contextlib.suppress(orjson.JSONDecodeError):
            v2spec["behavior"] = orjson.loads(ann.pop(_BEHAVIOR_ANN))
    out["spec"] = v2spec
    status = out.get("status")
    if status is not None:
        v2status: Obj = {k: v for k, v in status.items()
                         if k != "currentCPUUtilizationPercentage"}
        current: list[Obj] = []
        if _CURRENT_ANN in ann:
            with contextlib.suppress(orjson.JSONDecodeError):
                current.extend(orjson.loads(ann.pop(_CURRENT_ANN)))
        if "currentCPUUtilizationPercentage" in status and not any(
                c.get("type") == "Resource" and c.get("resource", {}).get("name") == "cpu"
                for c in current):
            current.insert(0, {"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": status["currentCPUUtilizationPercentage"]}}})
        if current:
            v2status["currentMetrics"] = current
        if _CONDITIONS_ANN in ann:
            with contextlib.suppress(orjson.JSONDecodeError):
                v2status["conditions"] = orjson.loads(ann.pop(_CONDITIONS_ANN))
        out["status"] = v2status
    for k in (_CURRENT_ANN, _CONDITIONS_ANN):
        ann.pop(k, None)
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    return out


def hpa_v2_to_v1(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v1"
    meta = out.setdefault("metadata", {})
    ann = dict(meta.get("annotations") or {})
    spec = out.get("spec") or {}
    v1spec: Obj = {k: v for k, v in spec.items() if k not in ("metrics", "behavior")}
    others: list[Obj] = []
    for m in spec.get("metrics") or []:
        if _is_cpu_utilization(m) and "targetCPUUtilizationPercentage" not in v1spec:
            v1spec["targetCPUUtilizationPercentage"] = m["resource"]["target"].get(
                "averageUtilization")
        else:
            others.append(m)
    if others:
        ann[_METRICS_ANN] = orjson.dumps(others).decode()
    if spec.get("behavior"):
        ann[_BEHAVIOR_ANN] = orjson.dumps(spec["behavior"]).decode()
    out["spec"] = v1spec
    status = out.get("status")
    if status is not None:
        v1status: Obj = {k: v for k, v in status.items()
                         if k not in ("currentMetrics", "conditions")}
        other_current: list[Obj] = []
        for c in status.get("currentMetrics") or []:
            cur = c.get("resource", {}).get("current", {})
            if (c.get("type") == "Resource" and c.get("resource", {}).get("name") == "cpu"
                    and "averageUtilization" in cur
                    and "currentCPUUtilizationPercentage" not in v1status):
                v1status["currentCPUUtilizationPercentage"] = cur["averageUtilization"]
            else:
                other_current.append(c)
        if other_current:
            ann[_CURRENT_ANN] = orjson.dumps(other_current).decode()
        if status.get("conditions"):
            ann[_CONDITIONS_ANN] = orjson.dumps(status["conditions"]).decode()
        v1status.setdefault("currentReplicas", 0)
        v1status.setdefault("desiredReplicas", 0)
        out["status"] = v1status
    if ann:
        meta["annotations"] = ann
    return out


_EVENT_RENAMES = (  # events.k8s.io/v1 name, core v1 name
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)


def event_v1_to_core(obj: Obj) -> Obj:
    out = {k: v for k, v in obj.items()}
    out["apiVersion"] = "v1"
    for new, old in _EVENT_RENAMES:
        out.pop(new, None)
        if new in obj:
            out[old] = obj[new]
    return out


def event_core_to_v1(obj: Obj) -> Obj:
    out = {k: v for k, v in obj.items()}
    out["apiVersion"] = "events.k8s.io/v1"
    for new, old in _EVENT_RENAMES:
        out.pop(old, None)
        if old in obj:
            out[new] = obj[old]
    return out
