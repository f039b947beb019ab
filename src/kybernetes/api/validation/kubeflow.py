"""The ``kubeflow.org`` group: the training operator's PyTorchJob and TFJob.

Mirrors training-operator v1.8/v1.9's validating webhooks
(``validator.pytorchjob.training-operator.kubeflow.org``,
``validator.tfjob.training-operator.kubeflow.org``: ``pkg/webhooks/{pytorch,tensorflow}``,
``pkg/webhooks/utils``, ``pkg/common/util/webhooks.go``) with the same field paths and
messages; every error is reported, not just the first. Our API server renders them as a 422
``PyTorchJob.kubeflow.org "x" is invalid: ...`` rather than a webhook denial.

Also checked, as the CRD's enums would: replica ``restartPolicy``, ``runPolicy.cleanPodPolicy``,
TF ``successPolicy`` and ``elasticPolicy.rdzvBackend``; our ``runPolicy.restartScope``
extension (``Replica`` or ``Job``); and each replica's pod template, as a Job's is.

Validation runs on the defaulted object here (the webhook sees it undefaulted), so a
``Master`` without ``replicas`` (defaulted to 1) and lower-case replica types (re-keyed by
defaulting) are accepted, as training-operator v1.7's in-controller validation accepted them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import update_validator, validator
from kybernetes.api.validation.common import (
    Errors,
    Obj,
    child,
    dict_at,
    index,
    is_dns1035_label,
    is_dns1123_subdomain,
    key,
    validate_immutable,
)
from kybernetes.api.validation.podspec import validate_pod_template

GROUP = "kubeflow.org"


@dataclass(frozen=True)
class TrainingKind:
    """What differs between the two kinds (shared with their defaulting)."""

    kind: str
    specs_field: str
    container: str
    port_name: str
    port: int
    restart_policy: str
    types: tuple[str, ...]
    """Canonical replica types, in the order upstream re-keys them."""


PYTORCH = TrainingKind("PyTorchJob", "pytorchReplicaSpecs", "pytorch", "pytorchjob-port",
                       23456, "OnFailure", ("Master", "Worker"))
TENSORFLOW = TrainingKind("TFJob", "tfReplicaSpecs", "tensorflow", "tfjob-port", 2222,
                          "Never", ("PS", "Worker", "Chief", "Master", "Evaluator"))
SPECS_PATH = "spec"
RESTART_POLICIES = ["Always", "OnFailure", "Never", "ExitCode"]
CLEAN_POD_POLICIES = ["All", "Running", "None"]
SUCCESS_POLICIES = ["", "AllWorkers"]
RDZV_BACKENDS = ["c10d", "etcd", "etcd-v2"]
RESTART_SCOPES = ["Replica", "Job"]
"""``runPolicy.restartScope`` (ours): restart a failed replica alone, or the whole job."""
MANAGED_BY = ["kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"]
"""``runPolicy.managedBy``: upstream's ``KubeflowJobsController`` and ``MultiKueueController``."""


def _name(job: Obj) -> Errors:
    """The webhook's DNS-1035 check; a name that is not even a DNS subdomain is refused by the
    generic metadata validation (upstream, before any webhook is called)."""
    name = dict_at(job, "metadata").get("name")
    name = name if isinstance(name, str) else ""
    if not name or is_dns1123_subdomain(name):
        return []
    msgs = is_dns1035_label(name)
    if msgs:
        return [FieldError.invalid("metadata.name", name, "should match: " + ",".join(msgs))]
    return []


def _enum(obj: Obj, field: str, path: str, supported: list[str]) -> Errors:
    value = obj.get(field)
    if value is not None and value not in supported:
        return [FieldError.not_supported(child(path, field), value, supported)]
    return []


def _run_policy(spec: Obj) -> Errors:
    path = "spec.runPolicy"
    run_policy = dict_at(spec, "runPolicy")
    errs = _enum(run_policy, "managedBy", path, MANAGED_BY)
    errs += _enum(run_policy, "cleanPodPolicy", path, CLEAN_POD_POLICIES)
    errs += _enum(run_policy, "restartScope", path, RESTART_SCOPES)
    return errs


def _replica_specs(spec: Obj, tk: TrainingKind, valid_types: tuple[str, ...]) -> Errors:
    """``utils.ValidateReplicaSpecs`` plus the restart-policy enum and the pod templates."""
    path = child(SPECS_PATH, tk.specs_field)
    specs = spec.get(tk.specs_field)
    if not isinstance(specs, dict):
        return [FieldError.required(path, "must be required")]
    errs: Errors = []
    for rtype, rspec in specs.items():
        role = key(path, rtype)
        containers_path = child(role, "template", "spec", "containers")
        if valid_types and rtype not in valid_types:
            errs.append(FieldError.not_supported(role, rtype, list(valid_types)))
        rspec = rspec if isinstance(rspec, dict) else {}
        template = dict_at(rspec, "template")
        containers = dict_at(template, "spec").get("containers")
        containers = containers if isinstance(containers, list) else []
        if not containers:
            errs.append(FieldError.required(containers_path, "must be specified"))
        own: Errors = []
        for i, c in enumerate(containers):
            c = c if isinstance(c, dict) else {}
            if not c.get("image"):
                own.append(FieldError.required(child(index(containers_path, i), "image"),
                                               "must be required"))
        if not any(isinstance(c, dict) and c.get("name") == tk.container for c in containers):
            own.append(FieldError.required(
                containers_path, f"must have at least one container with name {tk.container}"))
        errs += own
        errs += _enum(rspec, "restartPolicy", role, RESTART_POLICIES)
        if containers:
            # The pod template's own checks, less those the webhook already reported.
            reported = {e.field for e in own}
            # on the pods' defaults, which the job does not store (api.defaults.kubeflow)
            from kybernetes.api.defaults.podspec import default_pod_template

            defaulted = copy.deepcopy(template)
            default_pod_template(defaulted)
            errs += [e for e in validate_pod_template(defaulted, child(role, "template"))
                     if e.field not in reported]
    return errs


@validator(GROUP, "PyTorchJob")
def validate_pytorch_job(job: Obj) -> Errors:
    spec = dict_at(job, "spec")
    errs = _name(job) + _run_policy(spec)
    specs = dict_at(spec, PYTORCH.specs_field)
    specs_path = child(SPECS_PATH, PYTORCH.specs_field)
    elastic = spec.get("elasticPolicy")
    if isinstance(elastic, dict):
        worker_path = key(specs_path, "Worker")
        if "Worker" not in specs:
            errs.append(FieldError.required(worker_path,
                                            "must be configured if elastic policy is used"))
        else:
            replicas = dict_at(specs, "Worker").get("replicas")
            if isinstance(replicas, int) and replicas < 1:
                errs.append(FieldError.forbidden(
                    child(worker_path, "replicas"),
                    "must be at least 1 worker if elastic policy is used"))
        if elastic.get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
            errs.append(FieldError.forbidden("spec.elasticPolicy.nProcPerNode",
                                             "must not be used with spec.nprocPerNode"))
        errs += _enum(elastic, "rdzvBackend", "spec.elasticPolicy", RDZV_BACKENDS)
    errs += _replica_specs(spec, PYTORCH, PYTORCH.types)
    master = specs.get("Master")
    if "Master" in specs and (not isinstance(master, dict) or master.get("replicas") != 1):
        errs.append(FieldError.forbidden(child(key(specs_path, "Master"), "replicas"),
                                         "must be 1"))
    return errs


@validator(GROUP, "TFJob")
def validate_tf_job(job: Obj) -> Errors:
    spec = dict_at(job, "spec")
    errs = _name(job) + _run_policy(spec)
    errs += _enum(spec, "successPolicy", "spec", SUCCESS_POLICIES)
    errs += _replica_specs(spec, TENSORFLOW, ())
    specs = dict_at(spec, TENSORFLOW.specs_field)
    if sum(t in specs for t in ("Chief", "Master")) > 1:
        errs.append(FieldError.forbidden(child(SPECS_PATH, TENSORFLOW.specs_field),
                                         "must not have more than 1 Chief or Master role"))
    return errs


def _run_policy_update(new: Obj, old: Obj) -> Errors:
    """``ValidateRunPolicyUpdate``: ``managedBy`` is immutable; so is the scheduling queue
    once set (the CRD's ``self == oldSelf`` rule)."""
    new_rp = dict_at(dict_at(new, "spec"), "runPolicy")
    old_rp = dict_at(dict_at(old, "spec"), "runPolicy")
    errs = validate_immutable(new_rp.get("managedBy"), old_rp.get("managedBy"),
                              "spec.runPolicy.managedBy")
    new_q = dict_at(new_rp, "schedulingPolicy").get("queue")
    old_q = dict_at(old_rp, "schedulingPolicy").get("queue")
    if new_q is not None and old_q is not None and new_q != old_q:
        path = "spec.runPolicy.schedulingPolicy.queue"
        errs.append(FieldError.invalid(path, new_q, f"{path} is immutable"))
    return errs


@update_validator(GROUP, "PyTorchJob")
def validate_pytorch_job_update(new: Obj, old: Obj) -> Errors:
    return _run_policy_update(new, old)


@update_validator(GROUP, "TFJob")
def validate_tf_job_update(new: Obj, old: Obj) -> Errors:
    return _run_policy_update(new, old)
