"""The ``scheduling.x-k8s.io`` group: coscheduling PodGroups (gang scheduling).

scheduler-plugins has no webhook for PodGroups: its CRD's schema is all the checking
there is. The schema is applied here too; on top of it, the counts a scheduler reads
must not be negative and ``minResources`` must hold valid resource quantities.
"""

from __future__ import annotations

from kybernetes.api.podgroup import GROUP, KIND
from kybernetes.api.strategy import validator
from kybernetes.api.validation.common import Errors, Obj, dict_at, key, validate_nonnegative
from kybernetes.api.validation.resources import (
    validate_quantity_value,
    validate_resource_name,
)


@validator(GROUP, KIND)
def validate_pod_group(pg: Obj) -> Errors:
    spec = dict_at(pg, "spec")
    errs: Errors = []
    errs += validate_nonnegative(spec.get("minMember"), "spec.minMember")
    errs += validate_nonnegative(spec.get("scheduleTimeoutSeconds"),
                                 "spec.scheduleTimeoutSeconds")
    for name, value in dict_at(spec, "minResources").items():
        path = key("spec.minResources", name)
        errs += validate_resource_name(name, path)
        errs += validate_quantity_value(name, value, path)
    return errs
