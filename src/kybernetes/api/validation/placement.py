"""Where pods may run: tolerations, node selectors, affinity, topology spread, gates."""

from __future__ import annotations

from kybernetes.api.errors import FieldError
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    int_at,
    invalid_each,
    is_label_value,
    list_at,
    name_is_dns_label,
    name_is_dns_subdomain,
    str_at,
    validate_qualified_name,
)
from kybernetes.api.validation.labels import validate_label_name, validate_label_selector

TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]



def validate_tolerations(tolerations: list[Obj], path: str) -> Errors:
    errs: Errors = []
    for i, t in enumerate(tolerations):
        p = index(path, i)
        k, op, value, effect = (str_at(t, "key"), str_at(t, "operator"), str_at(t, "value"),
                                str_at(t, "effect"))
        if k:
            errs += validate_label_name(k, child(p, "key"))
        if not k and op != "Exists":
            errs.append(FieldError.invalid(child(p, "operator"), op, "operator must be Exists when "
                                           '`key` is empty, which means "match all values and all '
                                           'keys"'))
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.append(FieldError.invalid(child(p, "effect"), effect, "effect must be 'NoExecute' "
                                           "when `tolerationSeconds` is set"))
        if op in ("Equal", ""):
            msgs = is_label_value(value)
            if msgs:
                errs.append(FieldError.invalid(child(p, "operator"), value, ";".join(msgs)))
        elif op == "Exists":
            if value:
                errs.append(FieldError.invalid(child(p, "operator"), value,
                                               "value must be empty when `operator` is 'Exists'"))
        else:
            errs.append(FieldError.not_supported(child(p, "operator"), op, ["Equal", "Exists"]))
        if effect and effect not in TAINT_EFFECTS:
            errs.append(FieldError.not_supported(child(p, "effect"), effect, TAINT_EFFECTS))
    return errs


def _node_selector_requirement(req: Obj, path: str, allow_invalid_values: bool) -> Errors:
    errs: Errors = []
    op, values = str_at(req, "operator"), list_at(req, "values")
    if op in ("In", "NotIn"):
        if not values:
            errs.append(FieldError.required(child(path, "values"),
                                            "must be specified when `operator` is 'In' or 'NotIn'"))
    elif op in ("Exists", "DoesNotExist"):
        if values:
            errs.append(FieldError.forbidden(child(path, "values"), "may not be specified when "
                                             "`operator` is 'Exists' or 'DoesNotExist'"))
    elif op in ("Gt", "Lt"):
        if len(values) != 1:
            errs.append(FieldError.required(child(path, "values"), "must be specified single "
                                            "value when `operator` is 'Lt' or 'Gt'"))
    else:
        errs.append(FieldError.invalid(child(path, "operator"), op,
                                       "not a valid selector operator"))
    errs += validate_label_name(str_at(req, "key"), child(path, "key"))
    if not allow_invalid_values:
        for i, v in enumerate(values):
            errs += invalid_each(index(child(path, "values"), i), v, is_label_value(str(v)))
    return errs


def validate_node_selector_term(term: Obj, path: str, *, allow_invalid_values: bool) -> Errors:
    errs: Errors = []
    for j, req in enumerate(dicts_at(term, "matchExpressions")):
        errs += _node_selector_requirement(req, index(child(path, "matchExpressions"), j),
                                           allow_invalid_values)
    for j, req in enumerate(dicts_at(term, "matchFields")):
        p = index(child(path, "matchFields"), j)
        values = list_at(req, "values")
        if str_at(req, "operator") in ("In", "NotIn"):
            if len(values) != 1:
                errs.append(FieldError.required(child(p, "values"), "must be only one value when "
                                                "`operator` is 'In' or 'NotIn' for node field "
                                                "selector"))
        else:
            errs.append(FieldError.invalid(child(p, "operator"), str_at(req, "operator"),
                                           "not a valid selector operator"))
        if str_at(req, "key") != "metadata.name":
            errs.append(FieldError.invalid(child(p, "key"), str_at(req, "key"),
                                           "not a valid field selector key"))
        else:
            for i, v in enumerate(values):
                errs += invalid_each(index(child(p, "values"), i), v,
                                     name_is_dns_subdomain(str(v), False))
    return errs


def validate_node_selector(selector: Obj, path: str) -> Errors:
    terms = dicts_at(selector, "nodeSelectorTerms")
    tp = child(path, "nodeSelectorTerms")
    if not terms:
        return [FieldError.required(tp, "must have at least one node selector term")]
    errs: Errors = []
    for i, term in enumerate(terms):
        errs += validate_node_selector_term(term, index(tp, i), allow_invalid_values=False)
    return errs


def _weight(term: Obj, path: str) -> Errors:
    w = int_at(term, "weight")
    if w <= 0 or w > 100:
        return [FieldError.invalid(child(path, "weight"), w, "must be in the range 1-100")]
    return []


def _pod_affinity_term(term: Obj, path: str) -> Errors:
    errs = validate_label_selector(term.get("labelSelector"), child(path, "labelSelector"))
    errs += validate_label_selector(term.get("namespaceSelector"), child(path, "namespaceSelector"))
    for ns in list_at(term, "namespaces"):
        errs += invalid_each(child(path, "namespace"), ns, name_is_dns_label(str(ns), False))
    for field in ("matchLabelKeys", "mismatchLabelKeys"):
        keys = list_at(term, field)
        if keys and "labelSelector" not in term:
            errs.append(FieldError.forbidden(child(path, field),
                                             "must not be specified when labelSelector is not set"))
            continue
        for i, k in enumerate(keys):
            errs += validate_label_name(str(k), index(child(path, field), i))
    topology = str_at(term, "topologyKey")
    if not topology:
        errs.append(FieldError.required(child(path, "topologyKey"), "can not be empty"))
    return errs + validate_label_name(topology, child(path, "topologyKey"))


def validate_affinity(affinity: Obj, path: str) -> Errors:
    errs: Errors = []
    node = dict_at(affinity, "nodeAffinity")
    np = child(path, "nodeAffinity")
    required = "requiredDuringSchedulingIgnoredDuringExecution"
    preferred = "preferredDuringSchedulingIgnoredDuringExecution"
    if required in node:
        errs += validate_node_selector(dict_at(node, required), child(np, required))
    for i, term in enumerate(dicts_at(node, preferred)):
        tp = index(child(np, preferred), i)
        errs += _weight(term, tp)
        errs += validate_node_selector_term(dict_at(term, "preference"), child(tp, "preference"),
                                            allow_invalid_values=True)
    for kind in ("podAffinity", "podAntiAffinity"):
        pa, pp = dict_at(affinity, kind), child(path, kind)
        for i, term in enumerate(dicts_at(pa, required)):
            errs += _pod_affinity_term(term, index(child(pp, required), i))
        for i, term in enumerate(dicts_at(pa, preferred)):
            tp = index(child(pp, preferred), i)
            errs += _weight(term, tp)
            errs += _pod_affinity_term(dict_at(term, "podAffinityTerm"),
                                       child(tp, "podAffinityTerm"))
    return errs


def validate_topology_spread(constraints: list[Obj], path: str) -> Errors:
    errs: Errors = []
    for i, c in enumerate(constraints):
        p = index(path, i)
        skew = int_at(c, "maxSkew")
        if skew <= 0:
            errs.append(FieldError.invalid(child(p, "maxSkew"), skew, "must be greater than zero"))
        if not c.get("topologyKey"):
            errs.append(FieldError.required(child(p, "topologyKey"), "can not be empty"))
        action = str_at(c, "whenUnsatisfiable")
        if action not in ("DoNotSchedule", "ScheduleAnyway"):
            errs.append(FieldError.not_supported(child(p, "whenUnsatisfiable"), action,
                                                 ["DoNotSchedule", "ScheduleAnyway"]))
        pair = (c.get("topologyKey"), action)
        if any((o.get("topologyKey"), o.get("whenUnsatisfiable")) == pair
               for o in constraints[i + 1:]):
            errs.append(FieldError.duplicate(child(p, "{topologyKey, whenUnsatisfiable}"),
                                             f"{{{pair[0]}, {pair[1]}}}"))
        if "minDomains" in c:
            md = int_at(c, "minDomains")
            if md <= 0:
                errs.append(FieldError.invalid(child(p, "minDomains"), md,
                                               "must be greater than zero"))
            if action != "DoNotSchedule":
                errs.append(FieldError.invalid(
                    child(p, "minDomains"), md,
                    f"can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"))
        for field in ("nodeAffinityPolicy", "nodeTaintsPolicy"):
            if field in c and c[field] not in ("Honor", "Ignore"):
                errs.append(FieldError.not_supported(child(p, field), c[field],
                                                     ["Honor", "Ignore"]))
        keys = list_at(c, "matchLabelKeys")
        if keys and "labelSelector" not in c:
            errs.append(FieldError.forbidden(child(p, "matchLabelKeys"),
                                             "must not be specified when labelSelector is not set"))
        for j, k in enumerate(keys):
            errs += validate_label_name(str(k), index(child(p, "matchLabelKeys"), j))
        errs += validate_label_selector(c.get("labelSelector"), child(p, "labelSelector"))
    return errs


def validate_scheduling_gates(gates: list[Obj], path: str) -> Errors:
    errs: Errors = []
    seen: set[str] = set()
    for i, gate in enumerate(gates):
        name = str_at(gate, "name")
        errs += validate_qualified_name(name, index(path, i))
        if name in seen:
            errs.append(FieldError.duplicate(index(path, i), name))
        seen.add(name)
    return errs
