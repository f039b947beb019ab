"""Defaults of the Kubeflow training operator's ``kubeflow.org/v1`` PyTorchJob and TFJob.

Mirrors training-operator v1.8/v1.9 ``SetDefaults_PyTorchJob`` / ``SetDefaults_TFJob``
(``pkg/apis/kubeflow.org/v1/{pytorch,tensorflow}_defaults.go``, ``defaulting_utils.go``)
plus the CRD's ``runPolicy.suspend`` default, in upstream's order:

- ``runPolicy.cleanPodPolicy`` ``None`` (and ``runPolicy.suspend`` ``false``); TF
  ``successPolicy`` ``""``;
- replica-type keys re-spelled canonically (``master`` -> ``Master``, ``ps`` -> ``PS``...);
- per replica spec: ``replicas`` 1, ``restartPolicy`` (PyTorch ``OnFailure``, TF
  ``Never``);
- PyTorch ``elasticPolicy`` min/max replicas and ``nprocPerNode`` ``"auto"``.

Upstream applies these in memory in its controller; we store them, as for built-in kinds —
all but those inside the pod templates: the default port (``pytorchjob-port``/23456,
``tfjob-port``/2222 on the container named ``pytorch``/``tensorflow``) is added to each pod
the controller makes (:mod:`kybernetes.controllers.training.kinds`), and the pod-spec
defaults when the API server creates it. Stored in the job, they would change its
``containers`` lists, so that every ``kubectl apply`` of the unchanged manifest (a JSON
merge patch, which replaces lists) would report ``configured``. Our
``runPolicy.restartScope`` extension has no default written (absent means ``Replica``).
"""

from __future__ import annotations

from typing import Any

from kybernetes.api.strategy import defaulter
from kybernetes.api.validation.kubeflow import PYTORCH, TENSORFLOW, TrainingKind

Obj = dict[str, Any]

DEFAULT_NPROC_PER_NODE = "auto"


def _dict(parent: Obj, name: str) -> Obj:
    value = parent.get(name)
    if not isinstance(value, dict):
        value = parent[name] = {}
    return value


def _run_policy(spec: Obj) -> None:
    run_policy = _dict(spec, "runPolicy")
    if run_policy.get("cleanPodPolicy") is None:
        run_policy["cleanPodPolicy"] = "None"
    if run_policy.get("suspend") is None:
        run_policy["suspend"] = False


def normalise_keys(specs: Obj, types: tuple[str, ...]) -> None:
    """``setTypeNameToCamelCase`` for each canonical type: the first key equal to it but for
    case is re-keyed (in place, keeping its position; it replaces an exact-case entry)."""
    for canonical in types:
        for k in list(specs):
            if k != canonical and k.lower() == canonical.lower():
                items = [(canonical if kk == k else kk, v) for kk, v in specs.items()
                         if kk != canonical]
                specs.clear()
                specs.update(items)
                break


def default_container_index(containers: list[Any], name: str) -> int:
    """The index of the container called ``name``, else 0 (``getDefaultContainerIndex``)."""
    for i, c in enumerate(containers):
        if isinstance(c, dict) and c.get("name") == name:
            return i
    return 0


def _replica_specs(spec: Obj, tk: TrainingKind) -> Obj:
    specs = spec.get(tk.specs_field)
    if not isinstance(specs, dict):
        return {}
    normalise_keys(specs, tk.types)
    for rspec in specs.values():
        if not isinstance(rspec, dict):
            continue
        if rspec.get("replicas") is None:
            rspec["replicas"] = 1
        if not rspec.get("restartPolicy"):
            rspec["restartPolicy"] = tk.restart_policy
    return specs


@defaulter("kubeflow.org", "PyTorchJob")
def default_pytorch_job(job: Obj) -> None:
    spec = _dict(job, "spec")
    _run_policy(spec)
    specs = _replica_specs(spec, PYTORCH)
    elastic = spec.get("elasticPolicy")
    if isinstance(elastic, dict):
        lo, hi = elastic.get("minReplicas"), elastic.get("maxReplicas")
        if lo is not None and hi is None:
            elastic["maxReplicas"] = lo
        elif hi is not None and lo is None:
            elastic["minReplicas"] = hi
        elif lo is None and hi is None and isinstance(specs.get("Worker"), dict):
            # no Worker: upstream would dereference nil; validation rejects the job
            elastic["minReplicas"] = elastic["maxReplicas"] = specs["Worker"]["replicas"]
    if spec.get("nprocPerNode") is None and (
            not isinstance(elastic, dict) or elastic.get("nProcPerNode") is None):
        spec["nprocPerNode"] = DEFAULT_NPROC_PER_NODE


@defaulter("kubeflow.org", "TFJob")
def default_tf_job(job: Obj) -> None:
    spec = _dict(job, "spec")
    _run_policy(spec)
    if spec.get("successPolicy") is None:
        spec["successPolicy"] = ""
    _replica_specs(spec, TENSORFLOW)
