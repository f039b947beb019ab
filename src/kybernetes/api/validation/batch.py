"""The ``batch`` group: Jobs and CronJobs."""

from __future__ import annotations

import re
from typing import Any

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation import cron
from kybernetes.api.validation.apps import SELECTOR_MISMATCH
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    dicts_at,
    index,
    is_dns1123_label,
    list_at,
    max_len_error,
    str_at,
    validate_enum,
    validate_immutable,
    validate_nonnegative,
    validate_qualified_name,
)
from kybernetes.api.validation.labels import (
    selector_matches,
    validate_label_selector,
)
from kybernetes.api.validation.podspec import validate_pod_template

LEGACY_UID_LABEL, UID_LABEL = "controller-uid", "batch.kubernetes.io/controller-uid"
LEGACY_NAME_LABEL, NAME_LABEL = "job-name", "batch.kubernetes.io/job-name"
MAX_INDEXED_PARALLELISM = 100_000
_ACTIONS = ["Count", "FailIndex", "FailJob", "Ignore"]


# -- Job --------------------------------------------------------------------------------------


@validator("batch", "Job")
def validate_job(job: Obj) -> Errors:
    meta, spec = dict_at(job, "metadata"), dict_at(job, "spec")
    errs = _generated_selector(job)
    errs += validate_job_spec(spec, "spec")
    if spec.get("selector") is None:
        errs.append(FieldError.required("spec.selector"))
    else:
        errs += validate_label_selector(spec["selector"], "spec.selector")
    labels = dict_at(dict_at(spec, "template"), "metadata").get("labels") or {}
    if selector_matches(spec.get("selector"), labels) is False:
        errs.append(FieldError.invalid("spec.template.metadata.labels", labels, SELECTOR_MISMATCH))
    completions = spec.get("completions")
    if spec.get("completionMode") == "Indexed" and isinstance(completions, int) and completions > 0:
        hostname = f"{meta.get('name', '')}-{completions - 1}"
        if is_dns1123_label(hostname):
            errs.append(FieldError.invalid("metadata.name", meta.get("name", ""),
                                           "will not able to create pod with invalid DNS label: "
                                           + hostname))
    return errs


def _has_label(labels: Obj, k: str, expected: str) -> Errors:
    p = f"spec.template.metadata.labels[{k}]"
    if k not in labels:
        return [FieldError.required(p, f"must be '{expected}'")]
    if labels[k] != expected:
        return [FieldError.invalid(p, labels, f"must be '{expected}'")]
    return []


def _generated_selector(job: Obj) -> Errors:
    spec = dict_at(job, "spec")
    if spec.get("manualSelector") is True or spec.get("selector") is None:
        return []
    meta = dict_at(job, "metadata")
    uid, name = str_at(meta, "uid"), str_at(meta, "name")
    errs: Errors = []
    if not uid:
        errs.append(FieldError.required("metadata.uid"))
    labels = dict_at(dict_at(spec, "template"), "metadata").get("labels") or {}
    errs += _has_label(labels, LEGACY_UID_LABEL, uid)
    errs += _has_label(labels, LEGACY_NAME_LABEL, name)
    expected = {LEGACY_UID_LABEL: uid, LEGACY_NAME_LABEL: name}
    if UID_LABEL in labels or NAME_LABEL in labels:
        errs += _has_label(labels, UID_LABEL, uid)
        errs += _has_label(labels, NAME_LABEL, name)
        expected.update({UID_LABEL: uid, NAME_LABEL: name})
    if selector_matches(spec["selector"], expected) is False:
        errs.append(FieldError.invalid("spec.selector", spec["selector"],
                                       "`selector` not auto-generated"))
    return errs


def validate_job_spec(spec: Obj, path: str) -> Errors:
    """``validateJobSpec``: counts, completion mode, failure policy and the pod template."""
    errs: Errors = []
    for field in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit",
                  "ttlSecondsAfterFinished", "backoffLimitPerIndex", "maxFailedIndexes"):
        if spec.get(field) is not None:
            errs += validate_nonnegative(spec[field], child(path, field))
    if spec.get("maxFailedIndexes") is not None and spec.get("backoffLimitPerIndex") is None:
        errs.append(FieldError.required(child(path, "backoffLimitPerIndex"),
                                        "when maxFailedIndexes is specified"))
    if spec.get("managedBy") is not None:
        errs += _managed_by(str(spec["managedBy"]), child(path, "managedBy"))
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        errs.append(FieldError.not_supported(child(path, "completionMode"), mode,
                                             ["NonIndexed", "Indexed"]))
    if mode == "Indexed":
        errs += _indexed(spec, path)
    else:
        for field in ("backoffLimitPerIndex", "maxFailedIndexes"):
            if spec.get(field) is not None:
                errs.append(FieldError.invalid(child(path, field), spec[field],
                                               "requires indexed completion mode"))
    if isinstance(spec.get("podFailurePolicy"), dict):
        errs += _pod_failure_policy(spec, child(path, "podFailurePolicy"))
    if spec.get("successPolicy") is not None and mode != "Indexed":
        errs.append(FieldError.invalid(child(path, "successPolicy"), spec["successPolicy"],
                                       "requires indexed completion mode"))
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None:
        allowed = ["Failed"] if spec.get("podFailurePolicy") is not None \
            else ["Failed", "TerminatingOrFailed"]
        if replacement not in allowed:
            errs.append(FieldError.not_supported(child(path, "podReplacementPolicy"), replacement,
                                                 allowed))
    errs += validate_pod_template(spec.get("template"), child(path, "template"))
    restart = str_at(dict_at(dict_at(spec, "template"), "spec"), "restartPolicy")
    rp = child(path, "template", "spec", "restartPolicy")
    if restart in ("Always", ""):
        errs.append(FieldError.required(rp, 'valid values: "OnFailure", "Never"'))
    elif restart not in ("OnFailure", "Never"):
        errs.append(FieldError.not_supported(rp, restart, ["OnFailure", "Never"]))
    elif spec.get("podFailurePolicy") is not None and restart != "Never":
        errs.append(FieldError.invalid(rp, restart,
                                       'only "Never" is supported when podFailurePolicy is '
                                       "specified"))
    return errs


def _managed_by(value: str, path: str) -> Errors:
    errs: Errors = []
    host, _, rest = value.partition("/")
    if not host or not rest:
        errs.append(FieldError.invalid(path, value,
                                       'must be a domain-prefixed path (such as "acme.io/foo")'))
    if len(value) > 63:
        errs.append(FieldError.too_long(path, "", 63))
    return errs


def _indexed(spec: Obj, path: str) -> Errors:
    errs: Errors = []
    completions, parallelism = spec.get("completions"), spec.get("parallelism")
    max_failed = spec.get("maxFailedIndexes")
    if completions is None:
        errs.append(FieldError.required(child(path, "completions"),
                                        "when completion mode is Indexed"))
    if isinstance(parallelism, int) and parallelism > MAX_INDEXED_PARALLELISM:
        errs.append(FieldError.invalid(child(path, "parallelism"), parallelism,
                                       "must be less than or equal to 100000 when completion mode "
                                       "is Indexed"))
    if isinstance(completions, int) and isinstance(max_failed, int) and max_failed > completions:
        errs.append(FieldError.invalid(child(path, "maxFailedIndexes"), max_failed,
                                       "must be less than or equal to completions"))
    return errs


def _pod_failure_policy(spec: Obj, path: str) -> Errors:
    errs: Errors = []
    rules = dicts_at(dict_at(spec, "podFailurePolicy"), "rules")
    rp = child(path, "rules")
    if len(rules) > 20:
        errs.append(FieldError.too_many(rp, len(rules), 20))
    template_spec = dict_at(dict_at(spec, "template"), "spec")
    containers = {str_at(c, "name") for c in dicts_at(template_spec, "containers")
                  + dicts_at(template_spec, "initContainers")}
    for i, rule in enumerate(rules):
        p = index(rp, i)
        action = str_at(rule, "action")
        if not action:
            errs.append(FieldError.required(child(p, "action"), "valid values: "
                                            + _go_quoted_list(_ACTIONS)))
        elif action == "FailIndex":
            if spec.get("backoffLimitPerIndex") is None:
                errs.append(FieldError.invalid(child(p, "action"), action,
                                               "requires the backoffLimitPerIndex to be set"))
        elif action not in _ACTIONS:
            errs.append(FieldError.not_supported(child(p, "action"), action, _ACTIONS))
        if isinstance(rule.get("onExitCodes"), dict):
            errs += _on_exit_codes(rule["onExitCodes"], child(p, "onExitCodes"), containers)
        for j, pattern in enumerate(dicts_at(rule, "onPodConditions")):
            pp = index(child(p, "onPodConditions"), j)
            errs += validate_qualified_name(str_at(pattern, "type"), child(pp, "type"))
            errs += validate_enum(str_at(pattern, "status"), child(pp, "status"),
                                  ["False", "True", "Unknown"])
        has_codes, has_conditions = "onExitCodes" in rule, bool(rule.get("onPodConditions"))
        if has_codes and has_conditions:
            errs.append(FieldError.invalid(p, rule, "specifying both OnExitCodes and "
                                                    "OnPodConditions is not supported"))
        if not has_codes and not has_conditions:
            errs.append(FieldError.invalid(p, rule, "specifying one of OnExitCodes and "
                                                    "OnPodConditions is required"))
    return errs


def _go_quoted_list(values: list[str]) -> str:
    return "[" + " ".join(f'"{v}"' for v in values) + "]"


def _on_exit_codes(req: Obj, path: str, containers: set[str]) -> Errors:
    errs: Errors = []
    op = str_at(req, "operator")
    if not op:
        errs.append(FieldError.required(child(path, "operator"),
                                        "valid values: " + _go_quoted_list(["In", "NotIn"])))
    elif op not in ("In", "NotIn"):
        errs.append(FieldError.not_supported(child(path, "operator"), op, ["In", "NotIn"]))
    if req.get("containerName") is not None and req["containerName"] not in containers:
        errs.append(FieldError.invalid(child(path, "containerName"), req["containerName"],
                                       "must be one of the container or initContainer names in "
                                       "the pod template"))
    values = list_at(req, "values")
    vp = child(path, "values")
    if not values:
        errs.append(FieldError.invalid(vp, values, "at least one value is required"))
    elif len(values) > 255:
        errs.append(FieldError.too_many(vp, len(values), 255))
    for j, v in enumerate(values):
        if op == "In" and v == 0:
            errs.append(FieldError.invalid(index(vp, j), v, "must not be 0 for the In operator"))
        if v in values[:j]:
            errs.append(FieldError.duplicate(index(vp, j), v))
    if values != sorted(values, key=lambda x: x if isinstance(x, int) else 0):
        errs.append(FieldError.invalid(vp, values, "must be ordered"))
    return errs


_SCHEDULING = ("nodeSelector", "tolerations", "schedulingGates")


@update_validator("batch", "Job")
def validate_job_update(new: Obj, old: Obj) -> Errors:
    spec, old_spec = dict_at(new, "spec"), dict_at(old, "spec")
    errs: Errors = []
    if spec.get("completionMode") == "Indexed":
        if spec.get("completions") != old_spec.get("completions") and \
                spec.get("completions") is not None and \
                spec.get("completions") != spec.get("parallelism"):
            errs.append(FieldError.invalid("spec.completions", spec["completions"],
                                           "can only be modified in tandem with spec.parallelism"))
    else:
        errs += validate_immutable(spec.get("completions"), old_spec.get("completions"),
                                   "spec.completions")
    errs += validate_immutable(spec.get("selector"), old_spec.get("selector"), "spec.selector")
    errs += validate_immutable(_mutable_template(spec, old_spec), old_spec.get("template"),
                               "spec.template")
    for field in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy",
                  "successPolicy"):
        errs += validate_immutable(spec.get(field), old_spec.get(field), f"spec.{field}")
    return errs


def _mutable_template(spec: Obj, old_spec: Obj) -> Any:
    """A suspended Job that never started may change its scheduling directives and labels."""
    template = spec.get("template")
    if old_spec.get("suspend") is not True or not isinstance(template, dict):
        return template
    old_template = dict_at(old_spec, "template")
    merged = {**template, "metadata": dict(dict_at(template, "metadata"))}
    merged_spec = dict(dict_at(template, "spec"))
    for field in _SCHEDULING:
        _copy(dict_at(old_template, "spec"), merged_spec, field)
    affinity = dict(dict_at(merged_spec, "affinity"))
    _copy(dict_at(dict_at(old_template, "spec"), "affinity"), affinity, "nodeAffinity")
    if affinity:
        merged_spec["affinity"] = affinity
    else:
        merged_spec.pop("affinity", None)
    for field in ("labels", "annotations"):
        _copy(dict_at(old_template, "metadata"), merged["metadata"], field)
    merged["spec"] = merged_spec
    return merged


def _copy(src: Obj, dst: Obj, field: str) -> None:
    if field in src:
        dst[field] = src[field]
    else:
        dst.pop(field, None)


# -- CronJob ----------------------------------------------------------------------------------

_TZ_PART = re.compile(r"^[A-Za-z.\-_0-9+]{1,14}$")


@validator("batch", "CronJob")
def validate_cron_job(cj: Obj) -> Errors:
    spec = dict_at(cj, "spec")
    name = str_at(dict_at(cj, "metadata"), "name")
    errs: Errors = []
    schedule = str_at(spec, "schedule")
    if not schedule:
        errs.append(FieldError.required("spec.schedule"))
    else:
        try:
            cron.parse(schedule)
        except ValueError as e:
            errs.append(FieldError.invalid("spec.schedule", schedule, str(e)))
        if "TZ" in schedule:
            errs.append(FieldError.invalid("spec.schedule", schedule, "cannot use TZ or CRON_TZ in "
                                           "schedule, use timeZone field instead"))
    if spec.get("startingDeadlineSeconds") is not None:
        errs += validate_nonnegative(spec["startingDeadlineSeconds"],
                                     "spec.startingDeadlineSeconds")
    if "timeZone" in spec:
        errs += _time_zone(spec["timeZone"], "spec.timeZone")
    errs += validate_enum(str_at(spec, "concurrencyPolicy"), "spec.concurrencyPolicy",
                          ["Allow", "Forbid", "Replace"])
    errs += validate_job_template(dict_at(spec, "jobTemplate"), "spec.jobTemplate")
    for field in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if spec.get(field) is not None:
            errs += validate_nonnegative(spec[field], f"spec.{field}")
    if len(name) > 52:
        # The controller appends an 11-character suffix to make Job names (63 at most).
        errs.append(FieldError.invalid("metadata.name", name, max_len_error(52)))
    return errs


def _time_zone(tz: Any, path: str) -> Errors:
    tz = str(tz)
    if not tz:
        return [FieldError.invalid(path, tz, "timeZone must be nil or non-empty string")]
    for part in tz.split("/"):
        if part in (".", "..") or part.startswith("-") or not _TZ_PART.match(part):
            return [FieldError.invalid(path, tz, f"unknown time zone {tz}")]
    if tz.lower() == "local":
        return [FieldError.invalid(path, tz, "timeZone must be an explicit time zone as defined in "
                                             "https://www.iana.org/time-zones")]
    if not cron.valid_time_zone(tz):
        return [FieldError.invalid(path, tz, f"unknown time zone {tz}")]
    return []


def validate_job_template(template: Obj, path: str) -> Errors:
    spec = dict_at(template, "spec")
    errs = validate_job_spec(spec, child(path, "spec"))
    if spec.get("selector") is not None:
        errs.append(FieldError.invalid(child(path, "spec", "selector"), spec["selector"],
                                       "`selector` will be auto-generated"))
    if spec.get("manualSelector") is True:
        errs.append(FieldError.not_supported(child(path, "spec", "manualSelector"), True,
                                             ["nil", "false"]))
    return errs
