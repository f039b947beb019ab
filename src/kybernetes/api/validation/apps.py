"""The ``apps`` group: Deployments, ReplicaSets, StatefulSets, DaemonSets, revisions."""

from __future__ import annotations

import re
from typing import Any

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    invalid_each,
    is_valid_percent,
    str_at,
    validate_immutable,
    validate_nonnegative,
)
from kybernetes.api.validation.labels import (
    selector_is_empty,
    selector_matches,
    validate_annotations,
    validate_label_selector,
    validate_labels,
)
from kybernetes.api.validation.podspec import validate_pod_template

SELECTOR_MISMATCH = "`selector` does not match template `labels`"


# -- shared by the workload kinds ------------------------------------------------------------


def validate_selector(spec: Obj, owner: str, *, required: bool = True) -> Errors:
    """``spec.selector`` present (if required), well formed and not empty."""
    selector = spec.get("selector")
    if selector is None:
        return [FieldError.required("spec.selector")] if required else []
    errs = validate_label_selector(selector, "spec.selector")
    if selector_is_empty(selector):
        errs.append(FieldError.invalid("spec.selector", selector,
                                       f"empty selector is invalid for {owner}"))
    return errs


def validate_template_matches(spec: Obj, *, invalid_detail: str | None = "invalid label selector"
                              ) -> Errors:
    """The selector selects the template's labels (``ValidatePodTemplateSpecFor*``)."""
    selector = spec.get("selector")
    labels = dict_at(dict_at(spec, "template"), "metadata").get("labels") or {}
    matches = selector_matches(selector, labels)
    if matches is None:
        if invalid_detail is None:
            return []
        return [FieldError.invalid("spec.selector", selector, invalid_detail)]
    if not selector_is_empty(selector) and not matches:
        return [FieldError.invalid("spec.template.metadata.labels", labels, SELECTOR_MISMATCH)]
    return []


def validate_restart_always(spec: Obj, owner: str) -> Errors:
    template_spec = dict_at(dict_at(spec, "template"), "spec")
    errs: Errors = []
    restart = str_at(template_spec, "restartPolicy")
    if restart != "Always":
        errs.append(FieldError.not_supported("spec.template.spec.restartPolicy", restart,
                                             ["Always"]))
    if "activeDeadlineSeconds" in template_spec:
        errs.append(FieldError.forbidden("spec.template.spec.activeDeadlineSeconds",
                                         f"activeDeadlineSeconds in {owner} is not Supported"))
    return errs


def percent_value(value: Any) -> int | None:
    if isinstance(value, str) and not is_valid_percent(value):
        return int(value[:-1])
    return None


def int_or_percent_value(value: Any) -> int:
    pct = percent_value(value)
    if pct is not None:
        return pct
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value) else 0


def validate_positive_int_or_percent(value: Any, path: str) -> Errors:
    if isinstance(value, str):
        return invalid_each(path, value, is_valid_percent(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return validate_nonnegative(value, path)
    return [FieldError.invalid(path, value, "must be an integer or percentage (e.g '5%%')")]


def not_more_than_100_percent(value: Any, path: str) -> Errors:
    pct = percent_value(value)
    if pct is not None and pct > 100:
        return [FieldError.invalid(path, value, "must not be greater than 100%")]
    return []


def _selector_immutable(new: Obj, old: Obj) -> Errors:
    return validate_immutable(dict_at(new, "spec").get("selector"),
                              dict_at(old, "spec").get("selector"), "spec.selector")


def _replica_set_like(spec: Obj, owner: str) -> Errors:
    errs = validate_nonnegative(spec.get("replicas", 0), "spec.replicas")
    errs += validate_nonnegative(spec.get("minReadySeconds", 0), "spec.minReadySeconds")
    errs += validate_selector(spec, owner)
    matching = validate_template_matches(spec)
    errs += matching
    if matching and matching[0].field == "spec.selector":
        return errs  # an unusable selector: upstream stops before the template
    errs += validate_pod_template(spec.get("template"), "spec.template")
    return errs + validate_restart_always(spec, "ReplicaSet")


# -- Deployment -------------------------------------------------------------------------------


@validator("apps", "Deployment")
def validate_deployment(deploy: Obj) -> Errors:
    spec = dict_at(deploy, "spec")
    errs = _replica_set_like(spec, "deployment")
    errs += _validate_strategy(dict_at(spec, "strategy"), "spec.strategy")
    limit = spec.get("revisionHistoryLimit")
    if limit is not None:
        errs += validate_nonnegative(limit, "spec.revisionHistoryLimit")
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is not None:
        errs += validate_nonnegative(deadline, "spec.progressDeadlineSeconds")
        if isinstance(deadline, int) and deadline <= int(spec.get("minReadySeconds") or 0):
            errs.append(FieldError.invalid("spec.progressDeadlineSeconds", deadline,
                                           "must be greater than minReadySeconds"))
    return errs


def _validate_strategy(strategy: Obj, path: str) -> Errors:
    kind = strategy.get("type", "")
    if kind == "Recreate":
        if "rollingUpdate" in strategy:
            return [FieldError.forbidden(child(path, "rollingUpdate"),
                                         "may not be specified when strategy `type` is 'Recreate'")]
        return []
    if kind == "RollingUpdate":
        if "rollingUpdate" not in strategy:
            return [FieldError.required(child(path, "rollingUpdate"),
                                        "this should be defaulted and never be nil")]
        ru, rp = dict_at(strategy, "rollingUpdate"), child(path, "rollingUpdate")
        unavailable, surge = ru.get("maxUnavailable", 0), ru.get("maxSurge", 0)
        errs = validate_positive_int_or_percent(unavailable, child(rp, "maxUnavailable"))
        errs += validate_positive_int_or_percent(surge, child(rp, "maxSurge"))
        if int_or_percent_value(unavailable) == 0 and int_or_percent_value(surge) == 0:
            errs.append(FieldError.invalid(child(rp, "maxUnavailable"), unavailable,
                                           "may not be 0 when `maxSurge` is 0"))
        return errs + not_more_than_100_percent(unavailable, child(rp, "maxUnavailable"))
    return [FieldError.not_supported(path, strategy, ["Recreate", "RollingUpdate"])]


@update_validator("apps", "Deployment")
def validate_deployment_update(new: Obj, old: Obj) -> Errors:
    return _selector_immutable(new, old)


# -- ReplicaSet -------------------------------------------------------------------------------


@validator("apps", "ReplicaSet")
def validate_replica_set(rs: Obj) -> Errors:
    return _replica_set_like(dict_at(rs, "spec"), "deployment")


@update_validator("apps", "ReplicaSet")
def validate_replica_set_update(new: Obj, old: Obj) -> Errors:
    return _selector_immutable(new, old)


# -- StatefulSet ------------------------------------------------------------------------------


@validator("apps", "StatefulSet")
def validate_stateful_set(sts: Obj) -> Errors:
    spec = dict_at(sts, "spec")
    errs: Errors = []
    policy = spec.get("podManagementPolicy", "")
    if not policy:
        errs.append(FieldError.required("spec.podManagementPolicy"))
    elif policy not in ("OrderedReady", "Parallel"):
        errs.append(FieldError.invalid("spec.podManagementPolicy", policy,
                                       "must be 'OrderedReady' or 'Parallel'"))
    errs += _stateful_set_strategy(dict_at(spec, "updateStrategy"))
    retention = spec.get("persistentVolumeClaimRetentionPolicy")
    if isinstance(retention, dict):
        for field in ("whenDeleted", "whenScaled"):
            value = retention.get(field, "")
            if value not in ("Retain", "Delete"):
                errs.append(FieldError.not_supported(
                    f"spec.persistentVolumeClaimRetentionPolicy.{field}", value,
                    ["Retain", "Delete"]))
    errs += validate_nonnegative(spec.get("replicas", 0), "spec.replicas")
    errs += validate_nonnegative(spec.get("minReadySeconds", 0), "spec.minReadySeconds")
    if isinstance(spec.get("ordinals"), dict):
        errs += validate_nonnegative(spec["ordinals"].get("start", 0), "spec.ordinals.start")
    errs += validate_selector(spec, "statefulset")
    matching = validate_template_matches(spec, invalid_detail="")
    errs += matching
    if not (matching and matching[0].field == "spec.selector"):
        # Upstream checks only the template's metadata here, not its pod spec.
        meta = dict_at(dict_at(spec, "template"), "metadata")
        errs += validate_labels(meta.get("labels"), "spec.template.labels")
        errs += validate_annotations(meta.get("annotations"), "spec.template.annotations")
    return errs + validate_restart_always(spec, "StatefulSet")


def _stateful_set_strategy(strategy: Obj) -> Errors:
    kind = strategy.get("type", "")
    path = "spec.updateStrategy"
    if not kind:
        return [FieldError.required(path)]
    if kind == "OnDelete":
        if "rollingUpdate" in strategy:
            return [FieldError.invalid(child(path, "rollingUpdate"), strategy["rollingUpdate"],
                                       "only allowed for updateStrategy 'RollingUpdate'")]
        return []
    if kind != "RollingUpdate":
        return [FieldError.invalid(path, strategy, "must be 'RollingUpdate' or 'OnDelete'")]
    if not isinstance(strategy.get("rollingUpdate"), dict):
        return []
    ru, rp = strategy["rollingUpdate"], child(path, "rollingUpdate")
    errs = validate_nonnegative(ru.get("partition", 0), child(rp, "partition"))
    if "maxUnavailable" in ru:
        value, mp = ru["maxUnavailable"], child(rp, "maxUnavailable")
        errs += validate_positive_int_or_percent(value, mp)
        if int_or_percent_value(value) == 0:
            errs.append(FieldError.invalid(mp, value, "cannot be 0"))
        errs += not_more_than_100_percent(value, mp)
    return errs


_STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy",
                "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


@update_validator("apps", "StatefulSet")
def validate_stateful_set_update(new: Obj, old: Obj) -> Errors:
    spec, old_spec = dict_at(new, "spec"), dict_at(old, "spec")
    if {k: v for k, v in spec.items() if k not in _STS_MUTABLE} != \
            {k: v for k, v in old_spec.items() if k not in _STS_MUTABLE}:
        return [FieldError.forbidden("spec", "updates to statefulset spec for fields other than "
                                     "'replicas', 'ordinals', 'template', 'updateStrategy', "
                                     "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
                                     "are forbidden")]
    return []


# -- DaemonSet --------------------------------------------------------------------------------


@validator("apps", "DaemonSet")
def validate_daemon_set(ds: Obj) -> Errors:
    spec = dict_at(ds, "spec")
    errs = validate_label_selector(spec.get("selector"), "spec.selector")
    errs += validate_template_matches(spec, invalid_detail=None)
    if selector_is_empty(spec.get("selector")):
        errs.append(FieldError.invalid("spec.selector", spec["selector"],
                                       "empty selector is invalid for daemonset"))
    errs += validate_pod_template(spec.get("template"), "spec.template")
    errs += validate_restart_always(spec, "DaemonSet")
    errs += validate_nonnegative(spec.get("minReadySeconds", 0), "spec.minReadySeconds")
    errs += validate_nonnegative(spec.get("templateGeneration", 0), "spec.templateGeneration")
    errs += _daemon_set_strategy(dict_at(spec, "updateStrategy"), "spec.updateStrategy")
    if spec.get("revisionHistoryLimit") is not None:
        errs += validate_nonnegative(spec["revisionHistoryLimit"], "spec.revisionHistoryLimit")
    return errs


def _daemon_set_strategy(strategy: Obj, path: str) -> Errors:
    kind = strategy.get("type", "")
    if kind == "OnDelete":
        return []
    if kind != "RollingUpdate":
        return [FieldError.not_supported(path, strategy, ["RollingUpdate", "OnDelete"])]
    if "rollingUpdate" not in strategy:
        return [FieldError.required(child(path, "rollingUpdate"))]
    ru, rp = dict_at(strategy, "rollingUpdate"), child(path, "rollingUpdate")
    unavailable, surge = ru.get("maxUnavailable", 0), ru.get("maxSurge", 0)
    errs = validate_positive_int_or_percent(unavailable, child(rp, "maxUnavailable"))
    errs += validate_positive_int_or_percent(surge, child(rp, "maxSurge"))
    errs += not_more_than_100_percent(unavailable, child(rp, "maxUnavailable"))
    errs += not_more_than_100_percent(surge, child(rp, "maxSurge"))
    has_unavailable = int_or_percent_value(unavailable) != 0
    has_surge = int_or_percent_value(surge) != 0
    if has_unavailable and has_surge:
        errs.append(FieldError.invalid(child(rp, "maxSurge"), surge,
                                       "may not be set when maxUnavailable is non-zero"))
    elif not has_unavailable and not has_surge:
        errs.append(FieldError.required(child(rp, "maxUnavailable"),
                                        "cannot be 0 when maxSurge is 0"))
    return errs


@update_validator("apps", "DaemonSet")
def validate_daemon_set_update(new: Obj, old: Obj) -> Errors:
    return _selector_immutable(new, old)


# -- ControllerRevision -----------------------------------------------------------------------


@validator("apps", "ControllerRevision")
def validate_controller_revision(rev: Obj) -> Errors:
    errs: Errors = []
    if rev.get("data") is None:
        errs.append(FieldError.required("data", "data is mandatory"))
    return errs + validate_nonnegative(rev.get("revision", 0), "revision")


@update_validator("apps", "ControllerRevision")
def validate_controller_revision_update(new: Obj, old: Obj) -> Errors:
    return validate_immutable(new.get("data"), old.get("data"), "data")
