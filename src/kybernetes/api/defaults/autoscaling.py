"""Defaults of HorizontalPodAutoscalers in their stored ``autoscaling/v2`` form."""

from __future__ import annotations

import copy
from typing import Any

from kybernetes.api.strategy import defaulter

Obj = dict[str, Any]

DEFAULT_CPU_UTILIZATION = 80
# Applied only when a behavior is given: the rules that repeat the classic HPA behaviour.
SCALE_UP_RULES: Obj = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                 {"type": "Percent", "value": 100, "periodSeconds": 15}],
}
SCALE_DOWN_RULES: Obj = {
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


def _rules(given: Any, defaults: Obj) -> Obj:
    rules = copy.deepcopy(defaults)
    if isinstance(given, dict):
        for field in ("selectPolicy", "stabilizationWindowSeconds", "policies", "tolerance"):
            if given.get(field) is not None:
                rules[field] = given[field]
    return rules


@defaulter("autoscaling", "HorizontalPodAutoscaler")
def default_hpa(hpa: Obj) -> None:
    spec = hpa.get("spec")
    if not isinstance(spec, dict):
        spec = hpa["spec"] = {}
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        behavior["scaleUp"] = _rules(behavior.get("scaleUp"), SCALE_UP_RULES)
        behavior["scaleDown"] = _rules(behavior.get("scaleDown"), SCALE_DOWN_RULES)
