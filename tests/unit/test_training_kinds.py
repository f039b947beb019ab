"""Training jobs' pods, Services, environment, PodGroup and status rules (pure)."""

from __future__ import annotations

import json
from typing import Any

from kybernetes.controllers.training.kinds import (
    PYTORCH,
    TENSORFLOW,
    build_pod,
    build_service,
    gang_shortfall,
    pod_group,
    tf_config,
)
from kybernetes.controllers.training.status import (
    FAILED,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
    Replicas,
    count,
    set_condition,
    should_restart,
    verdict,
)


def _template(name: str = "pytorch") -> dict[str, Any]:
    return {"spec": {"containers": [{"name": name, "image": "python:3.11",
                                     "env": [{"name": "MINE", "value": "1"}]}]}}


def _pytorch(workers: int = 3, **run_policy: Any) -> dict[str, Any]:
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": "ddp", "namespace": "ml", "uid": "u1"},
            "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure",
                           "template": _template()},
                "Worker": {"replicas": workers, "restartPolicy": "OnFailure",
                           "template": _template()}}}}


def _tf() -> dict[str, Any]:
    t = _template("tensorflow")
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob",
            "metadata": {"name": "tf", "namespace": "ml", "uid": "u2"},
            "spec": {"tfReplicaSpecs": {"Chief": {"replicas": 1, "template": t},
                                        "Worker": {"replicas": 2, "template": t},
                                        "PS": {"replicas": 1, "template": t}}}}


def test_pytorch_pod_names_labels_env_and_ports() -> None:
    job = _pytorch()
    pod = build_pod(PYTORCH, job, "Worker", 2)
    md = pod["metadata"]
    assert md["name"] == "ddp-worker-2" and md["namespace"] == "ml"
    assert md["labels"] == {
        "training.kubeflow.org/operator-name": "pytorchjob-controller",
        "training.kubeflow.org/job-name": "ddp", "training.kubeflow.org/replica-type": "worker",
        "training.kubeflow.org/replica-index": "2", "scheduling.x-k8s.io/pod-group": "ddp"}
    assert md["ownerReferences"] == [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                      "name": "ddp", "uid": "u1", "controller": True,
                                      "blockOwnerDeletion": True}]
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MINE"] == "1"  # the user's come first
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["WORLD_SIZE"], env["RANK"],
            env["PET_NODE_RANK"], env["PET_NNODES"], env["PYTHONUNBUFFERED"]) == (
        "ddp-master-0", "23456", "4", "3", "3", "4", "1")
    assert c["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
    assert pod["spec"]["restartPolicy"] == "OnFailure"
    [init] = pod["spec"]["initContainers"]  # workers wait for the master's name
    assert init["name"] == "init-pytorch" and "ddp-master-0" in init["command"][-1]
    master = build_pod(PYTORCH, job, "Master", 0)
    assert master["metadata"]["labels"]["training.kubeflow.org/job-role"] == "master"
    assert "initContainers" not in master["spec"]
    assert {e["name"]: e["value"] for e in master["spec"]["containers"][0]["env"]}["RANK"] == "0"


def test_restart_scope_job_and_exit_code_leave_restarts_to_the_controller() -> None:
    assert build_pod(PYTORCH, _pytorch(restartScope="Job"), "Worker", 0)[
        "spec"]["restartPolicy"] == "Never"
    job = _pytorch()
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] = "ExitCode"
    assert build_pod(PYTORCH, job, "Worker", 0)["spec"]["restartPolicy"] == "Never"


def test_headless_service_per_replica() -> None:
    svc = build_service(PYTORCH, _pytorch(), "Worker", 1)
    assert svc["metadata"]["name"] == "ddp-worker-1"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "pytorchjob-port", "port": 23456}]
    assert svc["spec"]["selector"]["training.kubeflow.org/replica-index"] == "1"
    assert "training.kubeflow.org/job-role" not in svc["spec"]["selector"]


def test_tf_config_as_upstream_marshals_it() -> None:
    job = _tf()
    assert tf_config(job, "Worker", 1) == (
        '{"cluster":{"chief":["tf-chief-0.ml.svc:2222"],"ps":["tf-ps-0.ml.svc:2222"],'
        '"worker":["tf-worker-0.ml.svc:2222","tf-worker-1.ml.svc:2222"]},'
        '"task":{"type":"worker","index":1},"environment":"cloud"}')
    pod = build_pod(TENSORFLOW, job, "PS", 0)
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert json.loads(env["TF_CONFIG"])["task"] == {"type": "ps", "index": 0}
    assert pod["spec"]["restartPolicy"] == "Never"  # TF's default
    assert pod["metadata"]["labels"].get("training.kubeflow.org/job-role") is None
    assert build_pod(TENSORFLOW, job, "Chief", 0)["metadata"]["labels"][
        "training.kubeflow.org/job-role"] == "master"
    single = {"metadata": {"name": "one", "namespace": "ml", "uid": "u"},
              "spec": {"tfReplicaSpecs": {"Worker": {"template": _template("tensorflow")}}}}
    assert tf_config(single, "Worker", 0) is None  # not distributed


def test_pod_group_min_member() -> None:
    assert pod_group(PYTORCH, _pytorch())["spec"] == {"minMember": 4}
    job = _pytorch(schedulingPolicy={"minAvailable": 2, "scheduleTimeoutSeconds": 5})
    assert pod_group(PYTORCH, job)["spec"] == {"minMember": 2, "scheduleTimeoutSeconds": 5}
    assert pod_group(PYTORCH, job)["metadata"]["name"] == "ddp"


def test_condition_rules() -> None:
    st: dict[str, Any] = {}
    assert set_condition(st, RUNNING, "R", "running", "t1")
    assert not set_condition(st, RUNNING, "R", "other message", "t2")  # same reason
    assert set_condition(st, RESTARTING, "X", "restarting", "t3")
    assert [c["type"] for c in st["conditions"]] == [RESTARTING]  # they replace each other
    set_condition(st, RUNNING, "R", "running", "t4")
    assert set_condition(st, SUCCEEDED, "S", "done", "t5")
    assert [(c["type"], c["status"]) for c in st["conditions"]] == [
        (RUNNING, "False"), (SUCCEEDED, "True")]
    failed: dict[str, Any] = {}
    set_condition(failed, FAILED, "F", "failed", "t1")
    assert not set_condition(failed, RUNNING, "R", "running", "t2")  # Failed is final


def _pod(name: str, phase: str, code: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if code is not None:
        status["containerStatuses"] = [{"name": "pytorch", "state": {
            "terminated": {"exitCode": code}}}]
    return {"metadata": {"name": name}, "status": status}


def test_exit_code_policy() -> None:
    spec = {"restartPolicy": "ExitCode"}
    assert should_restart(PYTORCH, spec, _pod("p", "Failed", 137))  # killed: retry
    assert not should_restart(PYTORCH, spec, _pod("p", "Failed", 1))  # its own verdict
    assert should_restart(PYTORCH, {"restartPolicy": "OnFailure"}, _pod("p", "Failed", 1))
    assert not should_restart(PYTORCH, {"restartPolicy": "Never"}, _pod("p", "Failed", 137))


def test_verdicts() -> None:
    job = _pytorch(workers=2)
    running = {"Master": count(PYTORCH, job, "Master", [_pod("m", "Running")]),
               "Worker": count(PYTORCH, job, "Worker", [_pod("w0", "Running")])}
    assert [v.condition for v in verdict(PYTORCH, job, running, {})] == [RUNNING]
    done = {"Master": count(PYTORCH, job, "Master", [_pod("m", "Succeeded", 0)]),
            "Worker": Replicas(2, active=2)}
    assert [v.condition for v in verdict(PYTORCH, job, done, {})] == [SUCCEEDED]
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] = "Never"
    broken = {"Master": Replicas(1, active=1), "Worker": Replicas(2, active=1, failed=1)}
    out = verdict(PYTORCH, job, broken, {})
    assert out[-1].condition == FAILED and "1 Worker replica(s) failed" in out[-1].message

    tf = _tf()
    tf["spec"]["tfReplicaSpecs"].pop("Chief")
    pods = {"tf-worker-0": _pod("tf-worker-0", "Succeeded", 0)}
    pods["tf-worker-0"]["status"]["containerStatuses"][0]["name"] = "tensorflow"
    counted = {"PS": Replicas(1, active=1), "Worker": Replicas(2, active=1, succeeded=1)}
    assert [v.condition for v in verdict(TENSORFLOW, tf, counted, pods)] == [SUCCEEDED]
    tf["spec"]["successPolicy"] = "AllWorkers"
    assert [v.condition for v in verdict(TENSORFLOW, tf, counted, pods)] == [RUNNING]


def test_a_gang_that_could_never_fit_is_not_grouped() -> None:
    job = _tf()  # 4 replicas
    for spec in job["spec"]["tfReplicaSpecs"].values():
        spec["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    node = {"status": {"allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"}}}
    why = gang_shortfall(TENSORFLOW, job, [node])
    assert "4 pods" in why and "cpu 4 of 2" in why
    assert gang_shortfall(TENSORFLOW, job, [node, node]) == ""  # 4 cpus: it can fit
    cordoned = {**node, "spec": {"unschedulable": True}}
    assert gang_shortfall(TENSORFLOW, job, [node, cordoned]) != ""
    job["spec"]["runPolicy"] = {"schedulingPolicy": {"minAvailable": 4}}
    assert gang_shortfall(TENSORFLOW, job, [node]) == ""  # asked for: always a gang
    assert "scheduling.x-k8s.io/pod-group" not in build_pod(
        TENSORFLOW, job, "Worker", 0, gang=False)["metadata"]["labels"]
