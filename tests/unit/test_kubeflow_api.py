"""Kubeflow ``kubeflow.org/v1`` PyTorchJob and TFJob: defaults as training-operator v1.8/1.9
sets them, and its validating webhooks' checks, at the same field paths with the same
messages."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kybernetes.api.builtin import build_registry
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Registry
from kybernetes.api.validation import validate_metadata, validate_metadata_update

Obj = dict[str, Any]
SCENARIOS = Path(__file__).resolve().parents[2].parent / "shared" / "scenarios"
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
PT = "spec.pytorchReplicaSpecs"
TF = "spec.tfReplicaSpecs"
_REGISTRY: Registry | None = None


def registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def _strategy(obj: Obj) -> Any:
    group, _, version = obj["apiVersion"].rpartition("/")
    res = registry().by_kind(group, version, obj["kind"])
    assert res is not None and res.strategy is not None
    return res.strategy


def create(obj: Obj) -> tuple[Obj, list[str]]:
    """Run ``obj`` through create as the API server does: default, prepare, validate."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("uid", "0f6d2c8a-1111-4a5b-9c1d-000000000001")
    meta.setdefault("namespace", "default")
    strategy = _strategy(obj)
    strategy.default(obj)
    strategy.prepare_create(obj)
    errs = validate_metadata(strategy.group, strategy.kind, obj, namespaced=True)
    errs += strategy.validate(obj)
    return obj, [str(e) for e in errs]


def defaulted(obj: Obj) -> Obj:
    out, errs = create(obj)
    assert errs == []
    return out


def update(old: Obj, change: Callable[[Obj], None]) -> list[str]:
    stored = defaulted(old)
    new = copy.deepcopy(stored)
    change(new)
    strategy = _strategy(new)
    strategy.default(new)
    strategy.prepare_update(new, stored)
    errs = validate_metadata_update(new, stored) + strategy.validate_update(new, stored)
    return [str(e) for e in errs]


def container(name: str = "pytorch", **extra: Any) -> Obj:
    return {"name": name, "image": "python:3.11", **extra}


def replica(*containers: Obj, **extra: Any) -> Obj:
    return {"template": {"spec": {"containers": list(containers or [container()])}}, **extra}


def pytorch_job(specs: Obj | None = None, name: str = "ddp", **spec: Any) -> Obj:
    if specs is None:
        specs = {"Master": replica(replicas=1), "Worker": replica(replicas=2)}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name},
            "spec": {"pytorchReplicaSpecs": specs, **spec}}


def tf_replica(*containers: Obj, **extra: Any) -> Obj:
    return replica(*(containers or [container("tensorflow")]), **extra)


def tf_job(specs: Obj | None = None, name: str = "dist", **spec: Any) -> Obj:
    if specs is None:
        specs = {"Chief": tf_replica(), "Worker": tf_replica(replicas=2), "PS": tf_replica()}
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": name},
            "spec": {"tfReplicaSpecs": specs, **spec}}


def containers_of(job: Obj, rtype: str) -> list[Obj]:
    field = "pytorchReplicaSpecs" if job["kind"] == "PyTorchJob" else "tfReplicaSpecs"
    containers: list[Obj] = job["spec"][field][rtype]["template"]["spec"]["containers"]
    return containers


# -- defaults ---------------------------------------------------------------------------------


def test_pytorch_defaults() -> None:
    job = defaulted(pytorch_job({"Master": replica(), "Worker": replica()}))
    spec = job["spec"]
    assert spec["runPolicy"] == {"cleanPodPolicy": "None", "suspend": False}
    assert spec["nprocPerNode"] == "auto"
    assert "elasticPolicy" not in spec
    for rtype in ("Master", "Worker"):
        rspec = spec["pytorchReplicaSpecs"][rtype]
        assert rspec["replicas"] == 1
        assert rspec["restartPolicy"] == "OnFailure"
        # no pod defaults are stored (kubectl apply would see changed lists): the
        # controller's pods get the default port, the API server the pod defaults
        assert rspec["template"] == replica()["template"]


def test_tf_defaults() -> None:
    job = defaulted(tf_job({"Worker": tf_replica(), "PS": tf_replica(replicas=2)}))
    spec = job["spec"]
    assert spec["runPolicy"] == {"cleanPodPolicy": "None", "suspend": False}
    assert spec["successPolicy"] == ""
    assert "nprocPerNode" not in spec
    for rtype, replicas in (("Worker", 1), ("PS", 2)):
        rspec = spec["tfReplicaSpecs"][rtype]
        assert rspec["replicas"] == replicas
        assert rspec["restartPolicy"] == "Never"
        assert rspec["template"] == tf_replica()["template"]


def test_given_values_are_kept() -> None:
    job = defaulted(pytorch_job(
        {"Master": replica(replicas=1, restartPolicy="ExitCode"),
         "Worker": replica(replicas=0, restartPolicy="Never")},
        runPolicy={"cleanPodPolicy": "All", "suspend": True, "backoffLimit": 3},
        nprocPerNode="2"))
    spec = job["spec"]
    assert spec["runPolicy"] == {"cleanPodPolicy": "All", "suspend": True, "backoffLimit": 3}
    assert spec["nprocPerNode"] == "2"
    assert spec["pytorchReplicaSpecs"]["Master"]["restartPolicy"] == "ExitCode"
    assert spec["pytorchReplicaSpecs"]["Worker"] == {**spec["pytorchReplicaSpecs"]["Worker"],
                                                     "replicas": 0, "restartPolicy": "Never"}
    tf = defaulted(tf_job(successPolicy="AllWorkers"))
    assert tf["spec"]["successPolicy"] == "AllWorkers"


def test_restart_scope_is_not_defaulted() -> None:
    """Absent means Replica, and nothing is written, so objects round-trip unchanged."""
    job = defaulted(pytorch_job())
    assert "restartScope" not in job["spec"]["runPolicy"]
    job = defaulted(pytorch_job(runPolicy={"restartScope": "Job"}))
    assert job["spec"]["runPolicy"]["restartScope"] == "Job"


def _pod(job: Obj, rtype: str) -> Obj:
    """The pod the training controller makes for replica 0 of ``rtype``."""
    from kybernetes.controllers.training.kinds import build_pod, kind_of

    job = copy.deepcopy(job)
    job["metadata"]["uid"] = "u1"
    return build_pod(kind_of(job), job, rtype, 0)


def test_default_port_goes_to_the_default_named_container() -> None:
    sidecar = container("sidecar", ports=[{"containerPort": 9000}])
    job = defaulted(pytorch_job({"Master": replica(sidecar, container(), replicas=1)}))
    side, main = _pod(job, "Master")["spec"]["containers"]
    assert side["ports"] == [{"containerPort": 9000}]
    assert main["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]


def test_default_port_goes_to_the_first_container_when_none_is_named() -> None:
    """Upstream appends it to container 0 (validation then rejects the missing name)."""
    job, errs = create(tf_job({"Worker": tf_replica(container("a"), container("b"))}))
    a, b = _pod(job, "Worker")["spec"]["containers"]
    assert a["ports"] == [{"name": "tfjob-port", "containerPort": 2222}]
    assert "ports" not in b
    assert errs == [f"{TF}[Worker].template.spec.containers: Required value: must have at "
                    "least one container with name tensorflow"]


def test_existing_default_port_is_kept() -> None:
    ports = [{"name": "pytorchjob-port", "containerPort": 29500}]
    job = defaulted(pytorch_job({"Master": replica(container(ports=ports), replicas=1)}))
    assert _pod(job, "Master")["spec"]["containers"][0]["ports"] == ports
    # a port with the default number but another name does not count
    ports = [{"name": "rdzv", "containerPort": 23456}]
    job = defaulted(pytorch_job({"Master": replica(container(ports=ports), replicas=1)}))
    assert [p["name"] for p in _pod(job, "Master")["spec"]["containers"][0]["ports"]] == [
        "rdzv", "pytorchjob-port"]


def test_replica_type_keys_are_normalised() -> None:
    job = defaulted(pytorch_job({"master": replica(replicas=1), "WORKER": replica()}))
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master", "Worker"]
    job = defaulted(tf_job({"chief": tf_replica(), "ps": tf_replica(), "worker": tf_replica(),
                            "evaluator": tf_replica()}))
    assert list(job["spec"]["tfReplicaSpecs"]) == ["Chief", "PS", "Worker", "Evaluator"]


def test_unknown_tf_types_are_kept_and_defaulted() -> None:
    """TF validates no type names; unknown ones get the per-replica defaults too."""
    job = defaulted(tf_job({"Worker": tf_replica(), "Trainer": tf_replica()}))
    trainer = job["spec"]["tfReplicaSpecs"]["Trainer"]
    assert trainer["replicas"] == 1 and trainer["restartPolicy"] == "Never"


def test_misspelt_key_replaces_the_canonical_one() -> None:
    """As upstream's delete-then-set: the re-keyed spec overwrites an exact-case entry."""
    job = defaulted(tf_job({"PS": tf_replica(replicas=5), "ps": tf_replica(replicas=2)}))
    assert list(job["spec"]["tfReplicaSpecs"]) == ["PS"]
    assert job["spec"]["tfReplicaSpecs"]["PS"]["replicas"] == 2


@pytest.mark.parametrize(("elastic", "workers", "expected"), [
    ({}, 3, {"minReplicas": 3, "maxReplicas": 3}),
    ({}, None, {"minReplicas": 1, "maxReplicas": 1}),
    ({"minReplicas": 2}, 3, {"minReplicas": 2, "maxReplicas": 2}),
    ({"maxReplicas": 5}, 3, {"minReplicas": 5, "maxReplicas": 5}),
    ({"minReplicas": 1, "maxReplicas": 4}, 3, {"minReplicas": 1, "maxReplicas": 4}),
])
def test_elastic_policy_bounds(elastic: Obj, workers: int | None, expected: Obj) -> None:
    worker = replica() if workers is None else replica(replicas=workers)
    job = defaulted(pytorch_job({"Worker": worker}, elasticPolicy=dict(elastic)))
    assert job["spec"]["elasticPolicy"] == expected
    assert job["spec"]["nprocPerNode"] == "auto"


def test_nproc_per_node_not_defaulted_beside_the_deprecated_field() -> None:
    job = defaulted(pytorch_job({"Worker": replica()}, elasticPolicy={"nProcPerNode": 4}))
    assert "nprocPerNode" not in job["spec"]


@pytest.mark.parametrize("job", [pytorch_job(), tf_job()], ids=["pytorch", "tf"])
def test_defaulting_is_idempotent(job: Obj) -> None:
    once = defaulted(job)
    assert defaulted(once) == once


def test_defaults_tolerate_missing_pieces() -> None:
    """A spec without templates or containers is defaulted without failing; validation then
    says what is missing."""
    job, errs = create(pytorch_job({"Worker": {}, "Master": None}))
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"] == {"replicas": 1,
                                                            "restartPolicy": "OnFailure"}
    assert errs


# -- validation -------------------------------------------------------------------------------

MASTER_CONTAINERS = f"{PT}[Master].template.spec.containers"


@pytest.mark.parametrize(("obj", "expected"), [
    pytest.param(pytorch_job(), [], id="valid"),
    pytest.param(pytorch_job({"Worker": replica(replicas=4)}), [], id="workers-only"),
    pytest.param(pytorch_job(name="00ddp"), [
        f'metadata.name: Invalid value: "00ddp": should match: {DNS1035_MSG}'], id="name"),
    pytest.param(pytorch_job(name="a" * 64), [
        f'metadata.name: Invalid value: "{"a" * 64}": should match: must be no more than 63 '
        "characters"], id="name-length"),
    pytest.param(pytorch_job(name="my.ddp"), [
        f'metadata.name: Invalid value: "my.ddp": should match: {DNS1035_MSG}'], id="name-dot"),
    pytest.param(pytorch_job({}), [], id="empty-map-is-not-nil"),
    pytest.param({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                  "metadata": {"name": "ddp"}, "spec": {}},
                 [f"{PT}: Required value: must be required"], id="no-replica-specs"),
    pytest.param(pytorch_job({"Chief": replica()}), [
        f'{PT}[Chief]: Unsupported value: "Chief": supported values: "Master", "Worker"'],
        id="type"),
    pytest.param(pytorch_job({"Master": {"replicas": 1, "template": {"spec": {}}}}), [
        f"{MASTER_CONTAINERS}: Required value: must be specified",
        f"{MASTER_CONTAINERS}: Required value: must have at least one container with name "
        "pytorch"], id="no-containers"),
    pytest.param(pytorch_job({"Master": replica({"name": "pytorch"}, replicas=1)}), [
        f"{MASTER_CONTAINERS}[0].image: Required value: must be required"], id="no-image"),
    pytest.param(pytorch_job({"Master": replica(container("main"), replicas=1)}), [
        f"{MASTER_CONTAINERS}: Required value: must have at least one container with name "
        "pytorch"], id="no-pytorch-container"),
    pytest.param(pytorch_job({"Master": replica(replicas=2)}), [
        f"{PT}[Master].replicas: Forbidden: must be 1"], id="master-replicas-2"),
    pytest.param(pytorch_job({"Master": replica(replicas=0)}), [
        f"{PT}[Master].replicas: Forbidden: must be 1"], id="master-replicas-0"),
    pytest.param(pytorch_job({"Master": replica(replicas=1, restartPolicy="Sometimes")}), [
        f'{PT}[Master].restartPolicy: Unsupported value: "Sometimes": supported values: '
        '"Always", "OnFailure", "Never", "ExitCode"'], id="restart-policy"),
    pytest.param(pytorch_job(runPolicy={"cleanPodPolicy": "Some"}), [
        'spec.runPolicy.cleanPodPolicy: Unsupported value: "Some": supported values: "All", '
        '"Running", "None"'], id="clean-pod-policy"),
    pytest.param(pytorch_job(runPolicy={"restartScope": "Pod"}), [
        'spec.runPolicy.restartScope: Unsupported value: "Pod": supported values: "Replica", '
        '"Job"'], id="restart-scope"),
    pytest.param(pytorch_job(runPolicy={"restartScope": "Replica"}), [], id="restart-scope-ok"),
    pytest.param(pytorch_job(runPolicy={"managedBy": "me.io/controller"}), [
        'spec.runPolicy.managedBy: Unsupported value: "me.io/controller": supported values: '
        '"kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"'], id="managed-by"),
    pytest.param(pytorch_job(runPolicy={"managedBy": "kueue.x-k8s.io/multikueue"}), [],
                 id="managed-by-kueue"),
    pytest.param(pytorch_job({"Master": replica(replicas=1)}, elasticPolicy={}), [
        f"{PT}[Worker]: Required value: must be configured if elastic policy is used"],
        id="elastic-without-worker"),
    pytest.param(pytorch_job({"Worker": replica(replicas=0)}, elasticPolicy={}), [
        f"{PT}[Worker].replicas: Forbidden: must be at least 1 worker if elastic policy is "
        "used"], id="elastic-zero-workers"),
    pytest.param(pytorch_job({"Worker": replica()}, nprocPerNode="2",
                             elasticPolicy={"nProcPerNode": 2}), [
        "spec.elasticPolicy.nProcPerNode: Forbidden: must not be used with spec.nprocPerNode"],
        id="nproc-twice"),
    pytest.param(pytorch_job({"Worker": replica()}, elasticPolicy={"rdzvBackend": "zk"}), [
        'spec.elasticPolicy.rdzvBackend: Unsupported value: "zk": supported values: "c10d", '
        '"etcd", "etcd-v2"'], id="rdzv-backend"),
    pytest.param(pytorch_job({"Master": replica(container(volumeMounts=[
        {"name": "code", "mountPath": "/code"}]), replicas=1)}), [
        f'{MASTER_CONTAINERS}[0].volumeMounts[0].name: Not found: "code"'], id="pod-template"),
    pytest.param(pytorch_job({"Master": replica(container(), container(), replicas=1)}), [
        f'{MASTER_CONTAINERS}[1].name: Duplicate value: "pytorch"'], id="pod-template-names"),
    pytest.param(pytorch_job({"Chief": replica(container("main", image=""))}), [
        f'{PT}[Chief]: Unsupported value: "Chief": supported values: "Master", "Worker"',
        f"{PT}[Chief].template.spec.containers[0].image: Required value: must be required",
        f"{PT}[Chief].template.spec.containers: Required value: must have at least one "
        "container with name pytorch"], id="all-errors-reported"),
])
def test_pytorch_validation(obj: Obj, expected: list[str]) -> None:
    assert create(obj)[1] == expected


@pytest.mark.parametrize(("obj", "expected"), [
    pytest.param(tf_job(), [], id="valid"),
    pytest.param(tf_job({"Trainer": tf_replica()}), [], id="types-not-validated"),
    pytest.param(tf_job(name="1-dist"), [
        f'metadata.name: Invalid value: "1-dist": should match: {DNS1035_MSG}'], id="name"),
    pytest.param({"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": "d"},
                  "spec": {}}, [f"{TF}: Required value: must be required"], id="no-specs"),
    pytest.param(tf_job({"Chief": tf_replica(), "Master": tf_replica()}), [
        f"{TF}: Forbidden: must not have more than 1 Chief or Master role"], id="chief-master"),
    pytest.param(tf_job({"PS": {"replicas": 1}}), [
        f"{TF}[PS].template.spec.containers: Required value: must be specified",
        f"{TF}[PS].template.spec.containers: Required value: must have at least one container "
        "with name tensorflow"], id="no-template"),
    pytest.param(tf_job({"Worker": tf_replica(container("pytorch"))}), [
        f"{TF}[Worker].template.spec.containers: Required value: must have at least one "
        "container with name tensorflow"], id="no-tensorflow-container"),
    pytest.param(tf_job(successPolicy="ChiefOnly"), [
        'spec.successPolicy: Unsupported value: "ChiefOnly": supported values: "", '
        '"AllWorkers"'], id="success-policy"),
    pytest.param(tf_job(runPolicy={"restartScope": "Job", "cleanPodPolicy": "Running"}), [],
                 id="restart-scope-job"),
])
def test_tf_validation(obj: Obj, expected: list[str]) -> None:
    assert create(obj)[1] == expected


def test_validation_sees_defaulted_replica_specs() -> None:
    """Validation runs after defaulting here (the webhook sees the object undefaulted): an
    omitted Master replicas is 1, lower-case types are re-keyed; an explicit wrong count is
    still refused."""
    assert create(pytorch_job({"Master": replica(), "worker": replica()}))[1] == []
    assert create(pytorch_job({"master": replica(replicas=3)}))[1] == [
        f"{PT}[Master].replicas: Forbidden: must be 1"]


def test_rendered_as_an_invalid_status() -> None:
    """Several errors aggregate as upstream's ``ToAggregate``, inside a 422 Status."""
    obj = pytorch_job({"Master": replica(container("main"), replicas=2)})
    errs = _strategy(obj).validate(defaulted_unchecked(obj))
    status = StatusError.invalid("PyTorchJob", "ddp", errs, "kubeflow.org").status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"] == (
        'PyTorchJob.kubeflow.org "ddp" is invalid: ['
        f"{MASTER_CONTAINERS}: Required value: must have at least one container with name "
        f"pytorch, {PT}[Master].replicas: Forbidden: must be 1]")
    assert {c["field"] for c in status["details"]["causes"]} == {
        MASTER_CONTAINERS, f"{PT}[Master].replicas"}


def defaulted_unchecked(obj: Obj) -> Obj:
    return create(obj)[0]


# -- updates ----------------------------------------------------------------------------------


def _set_run_policy(**values: Any) -> Callable[[Obj], None]:
    def change(job: Obj) -> None:
        job["spec"]["runPolicy"].update(values)
    return change


def _set_queue(queue: str) -> Callable[[Obj], None]:
    def change(job: Obj) -> None:
        job["spec"]["runPolicy"]["schedulingPolicy"] = {"queue": queue}
    return change


def test_managed_by_is_immutable() -> None:
    managed = pytorch_job(runPolicy={"managedBy": "kubeflow.org/training-operator"})
    assert update(managed, _set_run_policy(managedBy="kueue.x-k8s.io/multikueue")) == [
        'spec.runPolicy.managedBy: Invalid value: "kueue.x-k8s.io/multikueue": field is '
        "immutable"]
    assert update(tf_job(), _set_run_policy(managedBy="kubeflow.org/training-operator")) == [
        'spec.runPolicy.managedBy: Invalid value: "kubeflow.org/training-operator": field is '
        "immutable"]


def test_scheduling_queue_is_immutable_once_set() -> None:
    queued = tf_job(runPolicy={"schedulingPolicy": {"queue": "a"}})
    assert update(queued, _set_queue("b")) == [
        'spec.runPolicy.schedulingPolicy.queue: Invalid value: "b": '
        "spec.runPolicy.schedulingPolicy.queue is immutable"]
    assert update(tf_job(), _set_queue("b")) == []


def test_updates_revalidate_the_spec() -> None:
    def scale_master(job: Obj) -> None:
        job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    assert update(pytorch_job(), scale_master) == [f"{PT}[Master].replicas: Forbidden: must be 1"]
    assert update(pytorch_job(), _set_run_policy(restartScope="Job", suspend=True)) == []


# -- the shared scenarios ---------------------------------------------------------------------


def _kubeflow_docs() -> list[Any]:
    docs = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("kubeflow.org"):
                docs.append(pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}"))
    return docs


@pytest.mark.parametrize("doc", _kubeflow_docs())
def test_scenarios_are_valid(doc: Obj) -> None:
    obj, errs = create(doc)
    assert errs == []
    assert create(obj) == (obj, [])  # defaulted objects stay valid and unchanged
