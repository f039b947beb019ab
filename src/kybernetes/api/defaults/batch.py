"""Defaults of Jobs and CronJobs, and the selector a new Job gets.

On create a Job (unless ``manualSelector: true``) is given a selector on its own uid and
matching template labels, as upstream's ``PrepareForCreate`` does; the API server sets
``metadata.uid`` before the create hooks run. Works whether defaulting runs before the hook
(as upstream, where defaulting happens at decoding) or after it.
"""

from __future__ import annotations

from typing import Any

from kybernetes.api.defaults.podspec import default_pod_template
from kybernetes.api.strategy import defaulter, on_create

Obj = dict[str, Any]

LEGACY_UID_LABEL, UID_LABEL = "controller-uid", "batch.kubernetes.io/controller-uid"
LEGACY_NAME_LABEL, NAME_LABEL = "job-name", "batch.kubernetes.io/job-name"
DEFAULT_BACKOFF_LIMIT = 6
MAX_INT32 = 2**31 - 1


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    return spec


@on_create("batch", "Job")
def generate_job_selector(job: Obj) -> None:
    spec = _spec(job)
    if spec.get("manualSelector") is True:
        return
    meta = job.get("metadata") or {}
    name, uid = str(meta.get("name", "")), str(meta.get("uid", ""))
    template = spec.get("template")
    if not isinstance(template, dict):
        template = spec["template"] = {}
    template_meta = template.setdefault("metadata", {})
    labels = template_meta.get("labels")
    unlabelled = not isinstance(labels, dict)
    if not isinstance(labels, dict):
        labels = template_meta["labels"] = {}
    # Labels the user set are kept; a conflict is then reported by validation.
    for k in (LEGACY_NAME_LABEL, NAME_LABEL):
        labels.setdefault(k, name)
    for k in (LEGACY_UID_LABEL, UID_LABEL):
        labels.setdefault(k, uid)
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        selector = spec["selector"] = {}
    match = selector.get("matchLabels")
    if not isinstance(match, dict):
        match = selector["matchLabels"] = {}
    match.setdefault(UID_LABEL, uid)
    # Job labels default to the template's (SetDefaults_Job). A template without labels of its
    # own ends up with the generated ones, which upstream copies when it next reads the Job.
    if unlabelled and not meta.get("labels"):
        job.setdefault("metadata", {})["labels"] = dict(labels)


def _default_pod_failure_policy(spec: Obj) -> None:
    policy = spec.get("podFailurePolicy")
    for rule in (policy.get("rules") or []) if isinstance(policy, dict) else []:
        for pattern in (rule.get("onPodConditions") or []) if isinstance(rule, dict) else []:
            if isinstance(pattern, dict) and not pattern.get("status"):
                pattern["status"] = "True"


@defaulter("batch", "Job")
def default_job(job: Obj) -> None:
    spec = _spec(job)
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        per_index = spec.get("backoffLimitPerIndex") is not None
        spec["backoffLimit"] = MAX_INT32 if per_index else DEFAULT_BACKOFF_LIMIT
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    meta = job.setdefault("metadata", {})
    if template_labels is not None and not meta.get("labels"):
        meta["labels"] = dict(template_labels)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    _default_pod_failure_policy(spec)
    if spec.get("podReplacementPolicy") is None:
        has_policy = spec.get("podFailurePolicy") is not None
        spec["podReplacementPolicy"] = "Failed" if has_policy else "TerminatingOrFailed"
    default_pod_template(spec.get("template"))


@defaulter("batch", "CronJob")
def default_cron_job(cj: Obj) -> None:
    spec = _spec(cj)
    if not spec.get("concurrencyPolicy"):
        spec["concurrencyPolicy"] = "Allow"
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job_spec = (spec.get("jobTemplate") or {}).get("spec")
    if isinstance(job_spec, dict):
        _default_pod_failure_policy(job_spec)
        default_pod_template(job_spec.get("template"))
