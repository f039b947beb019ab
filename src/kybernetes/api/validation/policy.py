"""The ``policy`` group: PodDisruptionBudgets."""

from __future__ import annotations

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import validator
from kybernetes.api.validation.apps import (
    not_more_than_100_percent,
    validate_positive_int_or_percent,
)
from kybernetes.api.validation.common import Errors, Obj, dict_at
from kybernetes.api.validation.labels import validate_label_selector

EVICTION_POLICIES = ["AlwaysAllow", "IfHealthyBudget"]


@validator("policy", "PodDisruptionBudget")
def validate_pod_disruption_budget(pdb: Obj) -> Errors:
    spec = dict_at(pdb, "spec")
    errs: Errors = []
    if "minAvailable" in spec and "maxUnavailable" in spec:
        errs.append(FieldError.invalid("spec", spec, "minAvailable and maxUnavailable cannot be "
                                                     "both set"))
    for field in ("minAvailable", "maxUnavailable"):
        if field in spec:
            errs += validate_positive_int_or_percent(spec[field], f"spec.{field}")
            errs += not_more_than_100_percent(spec[field], f"spec.{field}")
    errs += validate_label_selector(spec.get("selector"), "spec.selector")
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in EVICTION_POLICIES:
        errs.append(FieldError.not_supported("spec.unhealthyPodEvictionPolicy", policy,
                                             EVICTION_POLICIES))
    return errs
