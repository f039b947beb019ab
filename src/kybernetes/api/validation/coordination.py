"""The ``coordination.k8s.io`` group: Leases."""

from __future__ import annotations

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import validator
from kybernetes.api.validation.common import IS_NEGATIVE, Errors, Obj, dict_at


@validator("coordination.k8s.io", "Lease")
def validate_lease(lease: Obj) -> Errors:
    spec = dict_at(lease, "spec")
    errs: Errors = []
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, int) and duration <= 0:
        errs.append(FieldError.invalid("spec.leaseDurationSeconds", duration,
                                       "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if isinstance(transitions, int) and transitions < 0:
        errs.append(FieldError.invalid("spec.leaseTransitions", transitions, IS_NEGATIVE))
    if spec.get("preferredHolder") and not spec.get("strategy"):
        errs.append(FieldError.forbidden("spec.preferredHolder",
                                         "may only be specified if `strategy` is defined"))
    return errs
