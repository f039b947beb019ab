"""The ``scheduling.k8s.io`` group: PriorityClasses."""

from __future__ import annotations

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import Errors, Obj, int_at, str_at, validate_immutable
from kybernetes.api.validation.podspec import PREEMPTION_POLICIES

HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_PREFIX = "system-"
# The classes the API server creates at start-up; only these may use the system- prefix.
SYSTEM_PRIORITY_CLASSES = {"system-node-critical": 2_000_001_000,
                           "system-cluster-critical": 2_000_000_000}


@validator("scheduling.k8s.io", "PriorityClass")
def validate_priority_class(pc: Obj) -> Errors:
    name = str_at(pc.get("metadata"), "name")
    value = int_at(pc, "value")
    errs: Errors = []
    if name.startswith(SYSTEM_PREFIX):
        problem = ""
        if name not in SYSTEM_PRIORITY_CLASSES:
            problem = f"{name} is not a known system priority class"
        elif value != SYSTEM_PRIORITY_CLASSES[name]:
            problem = f"value of {name} PriorityClass must be {SYSTEM_PRIORITY_CLASSES[name]}"
        elif pc.get("globalDefault"):
            problem = f"globalDefault of {name} PriorityClass must be false"
        if problem:
            errs.append(FieldError.forbidden(
                "metadata.name", f"priority class names with '{SYSTEM_PREFIX}' prefix are reserved "
                f"for system use only. error: {problem}"))
    elif value > HIGHEST_USER_DEFINABLE_PRIORITY:
        errs.append(FieldError.forbidden("value", "maximum allowed value of a user defined "
                                         f"priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"))
    if "preemptionPolicy" in pc:
        policy = str_at(pc, "preemptionPolicy")
        if not policy:
            errs.append(FieldError.required("preemptionPolicy"))
        elif policy not in PREEMPTION_POLICIES:
            errs.append(FieldError.not_supported("preemptionPolicy", policy, PREEMPTION_POLICIES))
    return errs


@update_validator("scheduling.k8s.io", "PriorityClass")
def validate_priority_class_update(new: Obj, old: Obj) -> Errors:
    errs: Errors = []
    if new.get("value", 0) != old.get("value", 0):
        errs.append(FieldError.forbidden("value", "may not be changed in an update."))
    return errs + validate_immutable(new.get("preemptionPolicy"), old.get("preemptionPolicy"),
                                     "preemptionPolicy")
