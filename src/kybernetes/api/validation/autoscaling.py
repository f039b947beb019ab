"""HorizontalPodAutoscalers, validated in their stored ``autoscaling/v2`` form."""

from __future__ import annotations

from collections.abc import Callable

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import validator
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    int_at,
    invalid_each,
    is_path_segment_name,
    str_at,
    validate_dns1123_label,
)
from kybernetes.api.validation.resources import parse, validate_container_resource_name

MAX_PERIOD_SECONDS = 1800
MAX_STABILIZATION_WINDOW_SECONDS = 3600
METRIC_SOURCES = {"Object": "object", "Pods": "pods", "Resource": "resource",
                  "External": "external", "ContainerResource": "containerResource"}
_SOURCE_TYPES = sorted(METRIC_SOURCES)


@validator("autoscaling", "HorizontalPodAutoscaler")
def validate_hpa(hpa: Obj) -> Errors:
    return _validate_spec(dict_at(hpa, "spec"), min_replicas_lower_bound=1)


def _validate_spec(spec: Obj, *, min_replicas_lower_bound: int) -> Errors:
    errs: Errors = []
    min_replicas = spec.get("minReplicas")
    max_replicas = int_at(spec, "maxReplicas")
    if isinstance(min_replicas, int) and min_replicas < min_replicas_lower_bound:
        errs.append(FieldError.invalid(
            "spec.minReplicas", min_replicas,
            f"must be greater than or equal to {min_replicas_lower_bound}"))
    if max_replicas < 1:
        errs.append(FieldError.invalid("spec.maxReplicas", max_replicas, "must be greater than 0"))
    if isinstance(min_replicas, int) and max_replicas < min_replicas:
        errs.append(FieldError.invalid("spec.maxReplicas", max_replicas,
                                       "must be greater than or equal to `minReplicas`"))
    errs += validate_object_reference(dict_at(spec, "scaleTargetRef"), "spec.scaleTargetRef")
    metrics = dicts_at(spec, "metrics")
    for i, metric in enumerate(metrics):
        errs += _metric(metric, index("spec.metrics", i))
    if min_replicas == 0 and not any(m.get("type") in ("Object", "External") for m in metrics):
        errs.append(FieldError.forbidden("spec.metrics", "must specify at least one Object or "
                                         "External metric to support scaling to zero replicas"))
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        for direction in ("scaleUp", "scaleDown"):
            if isinstance(behavior.get(direction), dict):
                errs += _scaling_rules(behavior[direction], f"spec.behavior.{direction}")
    return errs


def validate_object_reference(ref: Obj, path: str) -> Errors:
    errs: Errors = []
    for field in ("kind", "name"):
        value = str_at(ref, field)
        if not value:
            errs.append(FieldError.required(child(path, field)))
        else:
            errs += invalid_each(child(path, field), value, is_path_segment_name(value))
    return errs


def _scaling_rules(rules: Obj, path: str) -> Errors:
    errs: Errors = []
    window = rules.get("stabilizationWindowSeconds")
    if isinstance(window, int) and window < 0:
        errs.append(FieldError.invalid(child(path, "stabilizationWindowSeconds"), window,
                                       "must be greater than or equal to zero"))
    if isinstance(window, int) and window > MAX_STABILIZATION_WINDOW_SECONDS:
        errs.append(FieldError.invalid(child(path, "stabilizationWindowSeconds"), window,
                                       "must be less than or equal to "
                                       f"{MAX_STABILIZATION_WINDOW_SECONDS}"))
    select = rules.get("selectPolicy")
    if select is not None and select not in ("Disabled", "Max", "Min"):
        errs.append(FieldError.not_supported(child(path, "selectPolicy"), select,
                                             ["Disabled", "Max", "Min"]))
    policies = dicts_at(rules, "policies")
    if not policies:
        errs.append(FieldError.required(child(path, "policies"),
                                        "must specify at least one Policy"))
    for i, policy in enumerate(policies):
        p = index(child(path, "policies"), i)
        if policy.get("type") not in ("Pods", "Percent"):
            errs.append(FieldError.not_supported(child(p, "type"), policy.get("type", ""),
                                                 ["Percent", "Pods"]))
        value, period = int_at(policy, "value"), int_at(policy, "periodSeconds")
        if value <= 0:
            errs.append(FieldError.invalid(child(p, "value"), value, "must be greater than zero"))
        if period <= 0:
            errs.append(FieldError.invalid(child(p, "periodSeconds"), period,
                                           "must be greater than zero"))
        if period > MAX_PERIOD_SECONDS:
            errs.append(FieldError.invalid(child(p, "periodSeconds"), period,
                                           f"must be less than or equal to {MAX_PERIOD_SECONDS}"))
    return errs


def _metric(metric: Obj, path: str) -> Errors:
    errs: Errors = []
    kind = str_at(metric, "type")
    if not kind:
        errs.append(FieldError.required(child(path, "type"), "must specify a metric source type"))
    if kind not in METRIC_SOURCES:
        errs.append(FieldError.not_supported(child(path, "type"), kind, _SOURCE_TYPES))
    present = [f for f in ("object", "external", "pods", "resource", "containerResource")
               if isinstance(metric.get(f), dict)]
    if present:
        first = present[0]
        errs += _SOURCE_CHECKS[first](metric[first], child(path, first))
    expected = METRIC_SOURCES.get(kind)
    if expected is not None:
        if expected not in present:
            errs.append(FieldError.required(
                child(path, expected), "must populate information for the given metric source"))
    else:
        errs.append(FieldError.not_supported(child(path, "type"), kind, _SOURCE_TYPES))
    if len(present) != 1:
        errs += [FieldError.forbidden(child(path, f), "must populate the given metric source only")
                 for f in present if f != expected]
    return errs


def _target(target: Obj, path: str) -> Errors:
    errs: Errors = []
    kind = str_at(target, "type")
    if not kind:
        errs.append(FieldError.required(child(path, "type"), "must specify a metric target type"))
    if kind not in ("Utilization", "Value", "AverageValue"):
        errs.append(FieldError.invalid(child(path, "type"), kind,
                                       "must be either Utilization, Value, or AverageValue"))
    for field in ("value", "averageValue"):
        if field in target:
            v = parse(target[field])
            if v is None or v <= 0:
                errs.append(FieldError.invalid(child(path, field), target[field],
                                               "must be positive"))
    utilization = target.get("averageUtilization")
    if isinstance(utilization, int) and utilization < 1:
        errs.append(FieldError.invalid(child(path, "averageUtilization"), utilization,
                                       "must be greater than 0"))
    return errs


def _metric_identifier(metric: Obj, path: str) -> Errors:
    name = str_at(metric, "name")
    if not name:
        return [FieldError.required(child(path, "name"), "must specify a metric name")]
    return invalid_each(child(path, "name"), name, is_path_segment_name(name))


def _object_source(src: Obj, path: str) -> Errors:
    target = dict_at(src, "target")
    errs = validate_object_reference(dict_at(src, "describedObject"),
                                     child(path, "describedObject"))
    errs += _metric_identifier(dict_at(src, "metric"), child(path, "metric"))
    errs += _target(target, child(path, "target"))
    if "value" not in target and "averageValue" not in target:
        errs.append(FieldError.required(child(path, "target", "averageValue"),
                                        "must set either a target value or averageValue"))
    return errs


def _external_source(src: Obj, path: str) -> Errors:
    target = dict_at(src, "target")
    errs = _metric_identifier(dict_at(src, "metric"), child(path, "metric"))
    errs += _target(target, child(path, "target"))
    if "value" not in target and "averageValue" not in target:
        errs.append(FieldError.required(child(path, "target", "averageValue"), "must set either a "
                                        "target value for metric or a per-pod target"))
    if "value" in target and "averageValue" in target:
        errs.append(FieldError.forbidden(child(path, "target", "value"), "may not set both a "
                                         "target value for metric and a per-pod target"))
    return errs


def _pods_source(src: Obj, path: str) -> Errors:
    target = dict_at(src, "target")
    errs = _metric_identifier(dict_at(src, "metric"), child(path, "metric"))
    errs += _target(target, child(path, "target"))
    if "averageValue" not in target:
        errs.append(FieldError.required(child(path, "target", "averageValue"),
                                        "must specify a positive target averageValue"))
    return errs


def _resource_source(src: Obj, path: str, *, container: bool = False) -> Errors:
    target = dict_at(src, "target")
    errs: Errors = []
    name = str_at(src, "name")
    if not name:
        errs.append(FieldError.required(child(path, "name"), "must specify a resource name"))
    elif container:
        errs += validate_container_resource_name(name, child(path, "name"))
    if container:
        c = str_at(src, "container")
        if not c:
            errs.append(FieldError.required(child(path, "container"), "must specify a container"))
        else:
            errs += validate_dns1123_label(c, child(path, "container"))
    errs += _target(target, child(path, "target"))
    if "averageUtilization" not in target and "averageValue" not in target:
        errs.append(FieldError.required(child(path, "target", "averageUtilization"),
                                        "must set either a target raw value or a target "
                                        "utilization"))
    if "averageUtilization" in target and "averageValue" in target:
        errs.append(FieldError.forbidden(child(path, "target", "averageValue"),
                                         "may not set both a target raw value and a target "
                                         "utilization"))
    return errs


def _container_resource_source(src: Obj, path: str) -> Errors:
    return _resource_source(src, path, container=True)


_SOURCE_CHECKS: dict[str, Callable[[Obj, str], Errors]] = {
    "object": _object_source,
    "external": _external_source,
    "pods": _pods_source,
    "resource": _resource_source,
    "containerResource": _container_resource_source,
}
