"""Pod updates: only images, deadlines, tolerations and scheduling gates may change."""

from __future__ import annotations

import difflib

import orjson

from kybernetes.api.errors import FieldError
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dicts_at,
    inclusive_range_error,
    index,
    str_at,
)
from kybernetes.api.validation.placement import validate_tolerations

_MAX_INT32 = 2**31 - 1

UPDATABLE_POD_FIELDS = ",".join([
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
])


def validate_pod_spec_update(new: Obj, old: Obj) -> Errors:
    """``ValidatePodUpdate`` for the spec: only images, deadlines, tolerations may change."""
    errs: Errors = []
    for field in ("containers", "initContainers"):
        new_list, old_list = dicts_at(new, field), dicts_at(old, field)
        p = child("spec", field)
        if len(new_list) != len(old_list):
            return [*errs, FieldError.forbidden(p, "pod updates may not add or remove containers")]
        for i, c in enumerate(new_list):
            image = str_at(c, "image")
            if not image:
                errs.append(FieldError.required(child(index(p, i), "image")))
            if image != image.strip():
                errs.append(FieldError.invalid(child(index(p, i), "image"), image,
                                               "must not have leading or trailing whitespace"))
    deadline, old_deadline = new.get("activeDeadlineSeconds"), old.get("activeDeadlineSeconds")
    dp = "spec.activeDeadlineSeconds"
    if isinstance(deadline, int):
        if not 0 <= deadline <= _MAX_INT32:
            return [*errs, FieldError.invalid(dp, deadline, inclusive_range_error(0, _MAX_INT32))]
        if isinstance(old_deadline, int) and old_deadline < deadline:
            return [*errs, FieldError.invalid(dp, deadline,
                                              "must be less than or equal to previous value")]
    elif old_deadline is not None:
        errs.append(FieldError.invalid(dp, deadline, "must not update from a positive integer to "
                                                     "nil value"))
    errs += _only_added_tolerations(dicts_at(new, "tolerations"), dicts_at(old, "tolerations"))
    old_gates = {str_at(g, "name") for g in dicts_at(old, "schedulingGates")}
    for i, gate in enumerate(dicts_at(new, "schedulingGates")):
        if str_at(gate, "name") not in old_gates:
            errs.append(FieldError.forbidden(
                child(index("spec.schedulingGates", i), "name"),
                "only deletion is allowed, but found new scheduling gate "
                f"'{str_at(gate, 'name')}'"))
    if old.get("schedulingGates"):
        errs += _only_added_node_selectors(new, old)
    if new == old:
        return errs
    munged = _munge(new, old)
    if munged != old:
        errs.append(FieldError.forbidden("spec", "pod updates may not change fields other than "
                                         f"{UPDATABLE_POD_FIELDS}\n{_diff(old, munged)}"))
    return errs


def _munge(new: Obj, old: Obj) -> Obj:
    munged = orjson.loads(orjson.dumps(new))
    for field in ("containers", "initContainers"):
        for c, o in zip(munged.get(field) or [], old.get(field) or [], strict=False):
            if isinstance(c, dict) and isinstance(o, dict):
                if "image" in o:
                    c["image"] = o["image"]
                else:
                    c.pop("image", None)
    for field in ("activeDeadlineSeconds", "schedulingGates", "tolerations"):
        if field in old:
            munged[field] = old[field]
        else:
            munged.pop(field, None)
    grace, old_grace = munged.get("terminationGracePeriodSeconds"), \
        old.get("terminationGracePeriodSeconds")
    if isinstance(old_grace, int) and old_grace < 0 and grace == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    if old.get("schedulingGates"):
        # Gated pods may gain node selectors and node affinity.
        for field in ("nodeSelector", "affinity"):
            if field in old:
                munged[field] = old[field]
            else:
                munged.pop(field, None)
    result: Obj = munged
    return result


def _only_added_node_selectors(new: Obj, old: Obj) -> Errors:
    """Gated pods may gain node selectors, but not change or lose them."""
    selectors = new.get("nodeSelector") or {}
    for k, v in (old.get("nodeSelector") or {}).items():
        if selectors.get(k) != v:
            return [FieldError.invalid("spec.nodeSelector", selectors, "only additions to "
                                       "spec.nodeSelector are allowed (no mutations or deletions)")]
    return []


def _diff(old: Obj, new: Obj) -> str:
    a = orjson.dumps(old, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()
    b = orjson.dumps(new, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()
    return "\n".join(line for line in difflib.unified_diff(a, b, "old", "new", n=1, lineterm="")
                     if not line.startswith(("---", "+++")))


def _only_added_tolerations(new: list[Obj], old: list[Obj]) -> Errors:
    for o in old:
        base = {k: v for k, v in o.items() if k != "tolerationSeconds"}
        if not any({k: v for k, v in n.items() if k != "tolerationSeconds"} == base for n in new):
            return [FieldError.forbidden("spec.tolerations", "existing toleration can not be "
                                         "modified except its tolerationSeconds")]
    return validate_tolerations(new, "spec.tolerations")
