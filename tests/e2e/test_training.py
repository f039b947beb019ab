"""Kubeflow training jobs on a real node: pytorchjob.yaml's four processes all-reduce and
train DDP with gloo to Succeeded; tfjob.yaml's seven replicas each see the TF_CONFIG of
1 chief, 4 workers and 2 ps; cleanPodPolicy All removes pods and Services; a worker
killed mid-training under ``restartScope: Job`` restarts every replica and the job still
succeeds; a spent restart budget fails the job with a clear message; a job in the
Kubeflow SDK's serialised form, created with the kubernetes client, runs unchanged."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from tests.e2e.cluster import SCENARIOS, Cluster, agent_cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
    reason="training pods find each other by DNS on their own addresses: needs root and "
           "the CNI plugins (Debian containernetworking-plugins)")]

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:  # pragma: no cover
    HAVE_TORCH = False
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="the DDP scenarios need torch "
                                 "(pip install torch==2.13.0, a dev dependency)")


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from agent_cluster(tmp_path_factory.mktemp("training"))


def state(c: Cluster, plural: str, name: str) -> str:
    conds = c.kubectl_json("get", plural, name).get("status", {}).get("conditions") or []
    true = [x["type"] for x in conds if x.get("status") == "True"]
    return true[-1] if true else ""


def wait_finished(c: Cluster, plural: str, name: str, timeout: float = 150) -> str:
    return str(wait_for(f"{plural}/{name} to finish", lambda: (s := state(c, plural, name))
                        in ("Succeeded", "Failed") and s, timeout=timeout, every=0.5))


def pods_of(c: Cluster, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = c.kubectl_json(
        "get", "pods", "-l", f"training.kubeflow.org/job-name={job}")["items"]
    return items


def _all_succeeded(c: Cluster, job: str) -> dict[str, dict[str, Any]] | None:
    """The job's pods by name once every replica has succeeded."""
    pods = {p["metadata"]["name"]: p for p in pods_of(c, job)}
    specs = c.kubectl_json("get", "pytorchjobs,tfjobs")["items"]
    [spec] = [j["spec"] for j in specs if j["metadata"]["name"] == job]
    want = sum(r.get("replicas", 1) for r in (spec.get("pytorchReplicaSpecs") or
                                              spec.get("tfReplicaSpecs")).values())
    done = len(pods) == want and all(p["status"].get("phase") == "Succeeded"
                                     for p in pods.values())
    return pods if done else None


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", [])}


def _master_restarted(c: Cluster, job: str) -> dict[str, Any] | None:
    pod = c.kubectl_json("get", "pods", f"{job}-master-0") if f"pod/{job}-master-0" in \
        c.kubectl("get", "pods", "-o", "name").stdout else {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return pod if statuses and statuses[0].get("restartCount") else None


def run_until_trained(c: Cluster, attempts: int = 3) -> None:
    """Apply pytorchjob.yaml until it succeeds. torch 2.13 (CPU) now and then crashes
    in its own exit, after the training and ``destroy_process_group`` (``terminate
    called without an active exception``, then SIGSEGV; seen on this node under CPU
    load in about one run of ten, not reproduced with plain local processes); the
    master, restarted in place
    as ``OnFailure`` says, then waits for workers that are done. Only that crash, after
    the final loss was printed, earns another attempt."""
    for _ in range(attempts):
        c.kubectl("apply", "-f", str(SCENARIOS / "pytorchjob.yaml"))
        wait_for("ddp-linear to finish or its master to restart", lambda: state(
            c, "pytorchjobs", "ddp-linear") in ("Succeeded", "Failed") or _master_restarted(
            c, "ddp-linear"), timeout=150, every=0.5)
        if state(c, "pytorchjobs", "ddp-linear") == "Succeeded":
            return
        master = _master_restarted(c, "ddp-linear")
        assert master is not None, c.kubectl("describe", "pytorchjob", "ddp-linear").stdout
        last = master["status"]["containerStatuses"][0]["lastState"]["terminated"]
        before = c.kubectl("logs", "--previous", "ddp-linear-master-0").stdout
        assert last["exitCode"] in (134, 139) and "final_loss=" in before, (last, before)
        c.kubectl("delete", "pytorchjob", "ddp-linear", "--wait=true")
        wait_for("the crashed run's pods to go", lambda: pods_of(c, "ddp-linear") == [],
                 timeout=60)
    raise AssertionError(f"pytorchjob.yaml did not succeed in {attempts} attempts")


@needs_torch
def test_pytorchjob_scenario_trains_ddp_to_success(c: Cluster) -> None:
    try:
        _check_pytorchjob_scenario(c)
    finally:
        c.kubectl("delete", "-f", str(SCENARIOS / "pytorchjob.yaml"), "--ignore-not-found")


def _check_pytorchjob_scenario(c: Cluster) -> None:
    run_until_trained(c)
    out = c.kubectl("get", "pytorchjobs").stdout
    assert re.search(r"ddp-linear\s+Succeeded", out), out
    log = c.kubectl("logs", "ddp-linear-master-0").stdout
    m = re.search(r"world=4 final_loss=([0-9.]+)", log)
    assert m and float(m.group(1)) < 0.01, log

    # (the job succeeds with its master; a worker may still be ending, or, if torch
    # crashed in its exit, be restarted in place: see run_until_trained)
    pods = {p["metadata"]["name"]: p for p in pods_of(c, "ddp-linear")}
    assert set(pods) == {"ddp-linear-master-0", *(f"ddp-linear-worker-{i}" for i in range(3))}
    worker = pods["ddp-linear-worker-1"]
    env = env_of(worker)
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["WORLD_SIZE"], env["RANK"],
            env["PYTHONUNBUFFERED"]) == ("ddp-linear-master-0", "23456", "4", "2", "1")
    labels = worker["metadata"]["labels"]
    assert labels["training.kubeflow.org/replica-type"] == "worker"
    assert labels["training.kubeflow.org/replica-index"] == "1"
    assert labels["scheduling.x-k8s.io/pod-group"] == "ddp-linear"
    assert pods["ddp-linear-master-0"]["metadata"]["labels"][
        "training.kubeflow.org/job-role"] == "master"
    svc = c.kubectl_json("get", "service", "ddp-linear-worker-1")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["port"] == 23456
    status = c.kubectl_json("get", "pytorchjob", "ddp-linear")["status"]
    assert status["replicaStatuses"]["Master"]["succeeded"] == 1
    workers = status["replicaStatuses"]["Worker"]
    assert workers["succeeded"] + workers["active"] + workers["failed"] == 3, workers
    assert status["completionTime"] and status["startTime"]
    reasons = c.kubectl("get", "events", "--field-selector",
                        "involvedObject.name=ddp-linear").stdout
    assert "SuccessfulCreatePod" in reasons and "PyTorchJobSucceeded" in reasons


def test_tfjob_scenario_gives_every_replica_its_tf_config(c: Cluster) -> None:
    c.kubectl("apply", "-f", str(SCENARIOS / "tfjob.yaml"))
    assert wait_finished(c, "tfjobs", "distributed-training") == "Succeeded", \
        c.kubectl("describe", "tfjob", "distributed-training").stdout
    # the job succeeds with its chief; the other replicas finish as they get room
    pods = wait_for("every replica to finish", lambda: _all_succeeded(
        c, "distributed-training"), timeout=120)
    assert len(pods) == 7
    for name, pod in pods.items():
        cfg = json.loads(env_of(pod)["TF_CONFIG"])
        cluster = cfg["cluster"]
        assert {k: len(v) for k, v in cluster.items()} == {"chief": 1, "worker": 4, "ps": 2}
        assert cluster["worker"][2] == "distributed-training-worker-2.default.svc:2222"
        rtype, _, index = name.removeprefix("distributed-training-").rpartition("-")
        assert cfg["task"] == {"type": rtype, "index": int(index)}
        assert cfg["environment"] == "cloud"
        log = c.kubectl("logs", name).stdout
        assert f"'type': '{rtype}', 'index': {index}" in log, (name, log)
    assert "chief sees" in c.kubectl("logs", "distributed-training-chief-0").stdout
    # its pods request 3.5 cpus: on a smaller node a gang of all 7 could never be placed,
    # so they were scheduled as they fit, and an event says why
    [node] = c.kubectl_json("get", "nodes")["items"]
    cpus = node["status"]["allocatable"]["cpu"]
    small = (int(cpus[:-1]) / 1000 if cpus.endswith("m") else float(cpus)) < 3.5
    events = c.kubectl("get", "events", "--field-selector",
                       "involvedObject.name=distributed-training").stdout
    assert ("GangNeverFits" in events) == small, events
    c.kubectl("delete", "-f", str(SCENARIOS / "tfjob.yaml"))


def _job(name: str, script: str, *, workers: int = 3, run_policy: dict[str, Any] | None = None,
         restart: str = "OnFailure") -> str:
    """A PyTorchJob running ``script`` (mounted from a ConfigMap) on a master and workers."""
    template = {"spec": {"containers": [{
        "name": "pytorch", "image": "python:3.11", "command": ["python", "/code/train.py"],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "volumeMounts": [{"name": "code", "mountPath": "/code"}]}],
        "volumes": [{"name": "code", "configMap": {"name": f"{name}-code"}}]}}
    docs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-code"},
         "data": {"train.py": script}},
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name},
         "spec": {"runPolicy": run_policy or {}, "pytorchReplicaSpecs": {
             "Master": {"replicas": 1, "restartPolicy": restart, "template": template},
             "Worker": {"replicas": workers, "restartPolicy": restart, "template": template}}}}]
    return yaml.safe_dump_all(docs)


LONG_DDP = """
import os, time, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
dist.init_process_group(backend="gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DDP(torch.nn.Linear(3, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
g = torch.Generator().manual_seed(rank)
for step in range(STEPS):
    x = torch.rand(64, 3, generator=g) * 2 - 1
    y = x @ torch.tensor([[0.5], [-1.25], [2.0]]) + 0.1
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0:
        print("step", step, flush=True)
    time.sleep(0.05)
if rank == 0:
    print(f"final_loss={loss.item():.6f}")
dist.destroy_process_group()
"""


def _kill_rank(job: str, rank: int) -> int:
    """SIGKILL the training process of ``rank`` (found by its environment), as an OOM
    kill or a crash would end it."""
    want = {f"RANK={rank}".encode(), f"MASTER_ADDR={job}-master-0".encode()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = set((proc / "environ").read_bytes().split(b"\0"))
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if want <= environ and b"train.py" in cmdline:
            os.kill(int(proc.name), signal.SIGKILL)
            return int(proc.name)
    raise AssertionError(f"no training process of rank {rank} of {job}")


@needs_torch
def test_restart_scope_job_restarts_every_replica(c: Cluster) -> None:
    c.kubectl("apply", "-f", "-", input=_job(
        "gang-restart", LONG_DDP.replace("STEPS", "200"),
        run_policy={"restartScope": "Job", "backoffLimit": 3}))
    first = wait_for("all four replicas training", lambda: (
        pods := pods_of(c, "gang-restart")) and len(pods) == 4 and all(
        p["status"].get("phase") == "Running" for p in pods) and "step 10" in c.kubectl(
        "logs", "gang-restart-master-0", check=False).stdout and
        {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}, timeout=120, every=0.5)
    _kill_rank("gang-restart", 2)  # worker 1
    wait_for("the job to restart", lambda: any(
        x["type"] == "Restarting" for x in c.kubectl_json("get", "pytorchjob", "gang-restart")
        .get("status", {}).get("conditions", [])), timeout=30)
    assert wait_finished(c, "pytorchjobs", "gang-restart", timeout=180) == "Succeeded", \
        c.kubectl("describe", "pytorchjob", "gang-restart").stdout
    pods = pods_of(c, "gang-restart")
    assert len(pods) == 4
    runs = {p["metadata"]["annotations"]["training.kybernetes.io/job-restarts"]
            for p in pods}
    for p in pods:  # every replica is a new pod of the job's next run
        assert p["metadata"]["uid"] != first[p["metadata"]["name"]]
    # one run after the kill (another if torch crashed in its exit: see run_until_trained)
    assert len(runs) == 1 and int(runs.pop()) >= 1
    assert "final_loss=" in c.kubectl("logs", "gang-restart-master-0").stdout
    c.kubectl("delete", "pytorchjob", "gang-restart")


FAILING = """
import os, sys, time
if os.environ["RANK"] == "2":
    sys.exit(3)
time.sleep(300)  # the others wait for rank 2, as a collective would
"""


def test_spent_restart_budget_fails_the_job(c: Cluster) -> None:
    c.kubectl("apply", "-f", "-", input=_job(
        "budget", FAILING, run_policy={"restartScope": "Job", "backoffLimit": 1}))
    assert wait_finished(c, "pytorchjobs", "budget", timeout=120) == "Failed"
    job = c.kubectl_json("get", "pytorchjob", "budget")
    failed = next(x for x in job["status"]["conditions"] if x["type"] == "Failed")
    assert failed["reason"] == "PyTorchJobFailed"
    assert "backoff limit" in failed["message"] and "1 restart(s) of at most 1" in \
        failed["message"], failed
    # it restarted once (Running then replaced the Restarting condition, as upstream)
    events = c.kubectl("get", "events", "--field-selector", "involvedObject.name=budget").stdout
    assert events.count("PyTorchJobRestarting") == 1, events
    wait_for("the failed job's pods to go", lambda: pods_of(c, "budget") == [], timeout=60)
    c.kubectl("delete", "pytorchjob", "budget")


def test_clean_pod_policy_all_and_sdk_format(c: Cluster) -> None:
    """A job as the Kubeflow SDK sends it (its models serialised by the kubernetes
    client: camelCase, no nulls), created with CustomObjectsApi; ``cleanPodPolicy: All``
    removes its pods and Services once it succeeded."""
    env_check = ("import os; assert os.environ['WORLD_SIZE'] == '2'; "
                 "print('rank', os.environ['RANK'])")
    container = {"name": "pytorch", "image": "python:3.11",
                 "command": ["python", "-c", env_check]}
    body = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": "sdk-job", "namespace": "default"},
            "spec": {"runPolicy": {"cleanPodPolicy": "All"},
                     "pytorchReplicaSpecs": {
                         "Master": {"replicas": 1, "restartPolicy": "OnFailure",
                                    "template": {"metadata": {"annotations": {
                                        "sidecar.istio.io/inject": "false"}},
                                        "spec": {"containers": [container]}}},
                         "Worker": {"replicas": 1, "restartPolicy": "OnFailure",
                                    "template": {"metadata": {"annotations": {
                                        "sidecar.istio.io/inject": "false"}},
                                        "spec": {"containers": [container]}}}}}}
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(c.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object("kubeflow.org", "v1", "default", "pytorchjobs",
                                               body)
        done = wait_for("the SDK job to succeed", lambda: any(
            x["type"] == "Succeeded" and x["status"] == "True" for x in (
                custom.get_namespaced_custom_object("kubeflow.org", "v1", "default",
                                                    "pytorchjobs", "sdk-job")
                .get("status", {}).get("conditions") or [])), timeout=90)
        assert done
        wait_for("cleanPodPolicy All to remove the pods and Services", lambda: (
            pods_of(c, "sdk-job") == [] and not [
                s for s in c.kubectl_json("get", "services")["items"]
                if s["metadata"]["name"].startswith("sdk-job-")]), timeout=60)
        custom.delete_namespaced_custom_object("kubeflow.org", "v1", "default", "pytorchjobs",
                                               "sdk-job")


SLEEPER = "import time\ntime.sleep(300)\n"


def test_suspend_resume_deadline_and_ttl(c: Cluster) -> None:
    """``suspend`` keeps a job's pods from running (condition Suspended) until it is
    resumed; ``activeDeadlineSeconds`` fails a job that runs too long, deleting its pods;
    ``ttlSecondsAfterFinished`` deletes a finished job."""
    c.kubectl("apply", "-f", "-", input=_job(
        "later", SLEEPER, workers=1, run_policy={"suspend": True}))
    wait_for("the Suspended condition", lambda: state(c, "pytorchjobs", "later") == "Suspended")
    assert pods_of(c, "later") == []
    c.kubectl("patch", "pytorchjob", "later", "--type=merge",
              "-p", '{"spec": {"runPolicy": {"suspend": false}}}')
    wait_for("the resumed job's pods", lambda: len(pods_of(c, "later")) == 2)
    job = c.kubectl_json("get", "pytorchjob", "later")
    suspended = next(x for x in job["status"]["conditions"] if x["type"] == "Suspended")
    assert (suspended["status"], suspended["reason"]) == ("False", "PyTorchJobResumed")
    c.kubectl("delete", "pytorchjob", "later")

    c.kubectl("apply", "-f", "-", input=_job(
        "deadline", SLEEPER, workers=1,
        run_policy={"activeDeadlineSeconds": 3, "ttlSecondsAfterFinished": 4}))
    assert wait_finished(c, "pytorchjobs", "deadline", timeout=60) == "Failed"
    failed = next(x for x in c.kubectl_json("get", "pytorchjob", "deadline")["status"][
        "conditions"] if x["type"] == "Failed")
    assert "active longer than specified deadline" in failed["message"], failed
    wait_for("the job's pods to go", lambda: pods_of(c, "deadline") == [], timeout=60)
    wait_for("the TTL to delete the job", lambda: "deadline" not in c.kubectl(
        "get", "pytorchjobs", "-o", "name").stdout, timeout=30)


def test_no_training_pods_left(c: Cluster) -> None:
    """Deleting the jobs took their pods (owner references), so no process is left."""
    wait_for("every training pod to go", lambda: not [
        p for p in c.kubectl_json("get", "pods")["items"]
        if "training.kubeflow.org/job-name" in p["metadata"].get("labels", {})], timeout=60)
