"""The ``rbac.authorization.k8s.io`` group: roles, cluster roles and their bindings."""

from __future__ import annotations

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    invalid_each,
    is_path_segment_name,
    list_at,
    name_is_dns_subdomain,
    str_at,
)
from kybernetes.api.validation.labels import selector_is_valid, validate_label_selector

GROUP = "rbac.authorization.k8s.io"


def validate_policy_rule(rule: Obj, path: str, *, namespaced: bool) -> Errors:
    errs: Errors = []
    if not rule.get("verbs"):
        errs.append(FieldError.required(child(path, "verbs"),
                                        "verbs must contain at least one value"))
    urls = list_at(rule, "nonResourceURLs")
    if urls:
        if namespaced:
            errs.append(FieldError.invalid(child(path, "nonResourceURLs"), urls,
                                           "namespaced rules cannot apply to non-resource URLs"))
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            errs.append(FieldError.invalid(child(path, "nonResourceURLs"), urls,
                                           "rules cannot apply to both regular resources and "
                                           "non-resource URLs"))
        return errs
    if not rule.get("apiGroups"):
        errs.append(FieldError.required(child(path, "apiGroups"),
                                        "resource rules must supply at least one api group"))
    if not rule.get("resources"):
        errs.append(FieldError.required(child(path, "resources"),
                                        "resource rules must supply at least one resource"))
    return errs


@validator(GROUP, "Role")
def validate_role(role: Obj) -> Errors:
    errs: Errors = []
    for i, rule in enumerate(dicts_at(role, "rules")):
        errs += validate_policy_rule(rule, index("rules", i), namespaced=True)
    return errs


@validator(GROUP, "ClusterRole")
def validate_cluster_role(role: Obj) -> Errors:
    errs: Errors = []
    for i, rule in enumerate(dicts_at(role, "rules")):
        errs += validate_policy_rule(rule, index("rules", i), namespaced=False)
    aggregation = role.get("aggregationRule")
    if isinstance(aggregation, dict):
        selectors = dicts_at(aggregation, "clusterRoleSelectors")
        sp = "aggregationRule.clusterRoleSelectors"
        if not selectors:
            errs.append(FieldError.required(sp, "at least one clusterRoleSelector required if "
                                                "aggregationRule is non-nil"))
        for i, selector in enumerate(selectors):
            errs += validate_label_selector(selector, index(sp, i))
            if not selector_is_valid(selector):
                errs.append(FieldError.invalid(index(sp, i), selector, "invalid label selector."))
    return errs


def _binding(binding: Obj, *, namespaced: bool) -> Errors:
    errs: Errors = []
    ref = dict_at(binding, "roleRef")
    if ref.get("apiGroup", "") != GROUP:
        errs.append(FieldError.not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [GROUP]))
    kinds = ["Role", "ClusterRole"] if namespaced else ["ClusterRole"]
    if ref.get("kind", "") not in kinds:
        errs.append(FieldError.not_supported("roleRef.kind", ref.get("kind", ""), kinds))
    name = str_at(ref, "name")
    if not name:
        errs.append(FieldError.required("roleRef.name"))
    else:
        errs += invalid_each("roleRef.name", name, is_path_segment_name(name))
    for i, subject in enumerate(dicts_at(binding, "subjects")):
        errs += validate_subject(subject, index("subjects", i), namespaced=namespaced)
    return errs


def validate_subject(subject: Obj, path: str, *, namespaced: bool) -> Errors:
    errs: Errors = []
    name, kind = str_at(subject, "name"), str_at(subject, "kind")
    group = str_at(subject, "apiGroup")
    if not name:
        errs.append(FieldError.required(child(path, "name")))
    if kind == "ServiceAccount":
        if name:
            errs += invalid_each(child(path, "name"), name, name_is_dns_subdomain(name, False))
        if group:
            errs.append(FieldError.not_supported(child(path, "apiGroup"), group, [""]))
        if not namespaced and not subject.get("namespace"):
            errs.append(FieldError.required(child(path, "namespace")))
    elif kind in ("User", "Group"):
        if group != GROUP:
            errs.append(FieldError.not_supported(child(path, "apiGroup"), group, [GROUP]))
    else:
        errs.append(FieldError.not_supported(child(path, "kind"), kind,
                                             ["ServiceAccount", "User", "Group"]))
    return errs


@validator(GROUP, "RoleBinding")
def validate_role_binding(binding: Obj) -> Errors:
    return _binding(binding, namespaced=True)


@validator(GROUP, "ClusterRoleBinding")
def validate_cluster_role_binding(binding: Obj) -> Errors:
    return _binding(binding, namespaced=False)


def _role_ref_immutable(new: Obj, old: Obj) -> Errors:
    if dict_at(new, "roleRef") != dict_at(old, "roleRef"):
        return [FieldError.invalid("roleRef", dict_at(new, "roleRef"), "cannot change roleRef")]
    return []


update_validator(GROUP, "RoleBinding")(_role_ref_immutable)
update_validator(GROUP, "ClusterRoleBinding")(_role_ref_immutable)
