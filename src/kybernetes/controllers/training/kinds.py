"""What a Kubeflow training job's pods and Services are: pure functions over a
``kubeflow.org/v1`` PyTorchJob or TFJob, as the training operator (v1.8/1.9) builds them.

- pods ``<job>-<type>-<index>`` (type lower-cased), labelled
  ``training.kubeflow.org/{operator-name,job-name,replica-type,replica-index}`` (and
  ``job-role: master`` on the master-role pods) and ``scheduling.x-k8s.io/pod-group``;
- one headless Service per pod, of the same name, on the default container's ports;
- PyTorch's rendezvous environment (``MASTER_ADDR``/``MASTER_PORT``/``WORLD_SIZE``/``RANK``,
  ``PET_*``, ``PYTHONUNBUFFERED``) in every container, and TF's ``TF_CONFIG`` in the first
  ``tensorflow`` container.

>>> job = {"metadata": {"name": "ddp", "namespace": "ml", "uid": "u1"},
...        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 3}}}}
>>> [e["value"] for e in pytorch_env(job, "Worker", 2) if e["name"] in ("RANK", "WORLD_SIZE")]
['4', '3']
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from kybernetes.api import quantity
from kybernetes.api.scheduling import pod_requests, resource_list

Obj = dict[str, Any]

GROUP_VERSION = "kubeflow.org/v1"
LABEL_PREFIX = "training.kubeflow.org/"
OPERATOR_NAME = LABEL_PREFIX + "operator-name"
JOB_NAME = LABEL_PREFIX + "job-name"
REPLICA_TYPE = LABEL_PREFIX + "replica-type"
REPLICA_INDEX = LABEL_PREFIX + "replica-index"
JOB_ROLE = LABEL_PREFIX + "job-role"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
RESTARTS_ANNOTATION = "training.kybernetes.io/replica-restarts"
"""On a pod: how many times its replica was restarted before it (our restart budget)."""
JOB_RESTARTS_ANNOTATION = "training.kybernetes.io/job-restarts"
"""On a pod: how many times the whole job was restarted before it (``restartScope: Job``)."""


@dataclass(frozen=True)
class JobKind:
    kind: str
    plural: str
    specs_field: str
    container: str
    port_name: str
    port: int
    operator: str
    types: tuple[str, ...]
    """Replica types, in the order upstream walks them."""
    default_restart: str

    def specs(self, job: Obj) -> dict[str, Obj]:
        specs = (job.get("spec") or {}).get(self.specs_field) or {}
        return {t: s or {} for t, s in specs.items() if isinstance(s, dict) or s is None}

    def ordered_types(self, job: Obj) -> list[str]:
        specs = self.specs(job)
        known = [t for t in self.types if t in specs]
        return known + sorted(t for t in specs if t not in self.types)


PYTORCH = JobKind("PyTorchJob", "pytorchjobs", "pytorchReplicaSpecs", "pytorch",
                  "pytorchjob-port", 23456, "pytorchjob-controller", ("Master", "Worker"),
                  "OnFailure")
TENSORFLOW = JobKind("TFJob", "tfjobs", "tfReplicaSpecs", "tensorflow", "tfjob-port", 2222,
                     "tfjob-controller", ("Chief", "Evaluator", "Master", "PS", "Worker"),
                     "Never")
KINDS = {k.plural: k for k in (PYTORCH, TENSORFLOW)}


def kind_of(job: Obj) -> JobKind:
    return PYTORCH if job.get("kind") == "PyTorchJob" or \
        PYTORCH.specs_field in (job.get("spec") or {}) else TENSORFLOW


def replicas(spec: Obj) -> int:
    value = spec.get("replicas")
    return 1 if value is None else int(value)


def restart_policy(kind: JobKind, spec: Obj) -> str:
    return str(spec.get("restartPolicy") or kind.default_restart)


def run_policy(job: Obj) -> Obj:
    return (job.get("spec") or {}).get("runPolicy") or {}


def restart_scope(job: Obj) -> str:
    return str(run_policy(job).get("restartScope") or "Replica")


def pod_name(job: Obj, rtype: str, index: int) -> str:
    name = (job.get("metadata") or {}).get("name", "")
    return f"{name}-{rtype.lower()}-{index}".replace("/", "-")


def selector_labels(kind: JobKind, job: Obj, rtype: str | None = None,
                    index: int | None = None) -> dict[str, str]:
    labels = {OPERATOR_NAME: kind.operator,
              JOB_NAME: (job.get("metadata") or {}).get("name", "").replace("/", "-")}
    if rtype is not None:
        labels[REPLICA_TYPE] = rtype.lower()
    if index is not None:
        labels[REPLICA_INDEX] = str(index)
    return labels


def replica_selector(kind: JobKind, job: Obj, rtype: str) -> str:
    """``status.replicaStatuses[type].selector``: the replica type's pods (keys sorted)."""
    labels = selector_labels(kind, job, rtype)
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def is_master_role(kind: JobKind, job: Obj, rtype: str, index: int) -> bool:
    if kind is PYTORCH:
        return rtype == "Master"
    specs = kind.specs(job)
    if "Chief" in specs or "Master" in specs:
        return rtype in ("Chief", "Master")
    return rtype == "Worker" and index == 0


def owner_reference(kind: JobKind, job: Obj) -> Obj:
    md = job["metadata"]
    return {"apiVersion": GROUP_VERSION, "kind": kind.kind, "name": md["name"],
            "uid": md["uid"], "controller": True, "blockOwnerDeletion": True}


def _default_container(kind: JobKind, pod_spec: Obj) -> Obj | None:
    containers = pod_spec.get("containers") or []
    named = [c for c in containers if c.get("name") == kind.container]
    return named[0] if named else (containers[0] if containers else None)


def container_port(kind: JobKind, spec: Obj) -> int:
    """The default port of a replica type's default container (its numbered default)."""
    tmpl = ((spec.get("template") or {}).get("spec") or {})
    container = _default_container(kind, tmpl) or {}
    for p in container.get("ports") or []:
        if p.get("name") == kind.port_name and p.get("containerPort"):
            return int(p["containerPort"])
    return kind.port


def _env(name: str, value: str) -> Obj:
    return {"name": name, "value": value}


def pytorch_env(job: Obj, rtype: str, index: int) -> list[Obj]:
    """PyTorch's rendezvous variables for one replica (upstream's ``SetPodEnv``)."""
    specs = PYTORCH.specs(job)
    spec = job.get("spec") or {}
    env = [_env("PYTHONUNBUFFERED", "1")]
    total = sum(replicas(s) for s in specs.values())
    if "Master" in specs:
        master = pod_name(job, "Master", 0)
        port = str(container_port(PYTORCH, specs["Master"]))
        nproc = str(spec.get("nprocPerNode") or "auto")
        per_node = int(nproc) if nproc.isdigit() else 1
        rank = index if rtype == "Master" else index + 1
        env += [_env("MASTER_PORT", port), _env("PET_MASTER_PORT", port),
                _env("MASTER_ADDR", master), _env("PET_MASTER_ADDR", master),
                _env("WORLD_SIZE", str(total * per_node)), _env("RANK", str(rank)),
                _env("PET_NPROC_PER_NODE", nproc), _env("PET_NODE_RANK", str(rank))]
    elastic = spec.get("elasticPolicy")
    if elastic:
        worker = specs.get("Worker") or {}
        host = elastic.get("rdzvHost") or pod_name(job, "Worker", 0)
        rdzv_port = elastic.get("rdzvPort") or container_port(PYTORCH, worker)
        low = elastic.get("minReplicas", replicas(worker))
        high = elastic.get("maxReplicas", replicas(worker))
        env += [_env("PET_RDZV_ENDPOINT", f"{host}:{rdzv_port}"),
                _env("PET_RDZV_BACKEND", str(elastic.get("rdzvBackend") or "c10d")),
                _env("PET_NNODES", f"{low}:{high}")]
        if elastic.get("maxRestarts") is not None:
            env.append(_env("PET_MAX_RESTARTS", str(elastic["maxRestarts"])))
        if elastic.get("rdzvId"):
            env.append(_env("PET_RDZV_ID", str(elastic["rdzvId"])))
        conf = elastic.get("rdzvConf") or []
        if conf:
            env.append(_env("PET_RDZV_CONF", ",".join(f"{c.get('key')}={c.get('value')}"
                                                      for c in conf)))
    else:
        env.append(_env("PET_NNODES", str(total)))
    return env


def tf_config(job: Obj, rtype: str, index: int) -> str | None:
    """``TF_CONFIG`` for one replica (upstream's ``genTFConfigJSONStr``); None for a job of
    one replica (not distributed)."""
    specs = TENSORFLOW.specs(job)
    if sum(replicas(s) for s in specs.values()) == 1:
        return None
    md = job.get("metadata") or {}
    ns = md.get("namespace") or "default"
    cluster = {}
    for t in TENSORFLOW.ordered_types(job):
        port = container_port(TENSORFLOW, specs[t])
        cluster[t.lower()] = [f"{pod_name(job, t, i)}.{ns}.svc:{port}"
                              for i in range(replicas(specs[t]))]
    # as Go marshals upstream's struct: cluster (keys sorted), task, environment
    return json.dumps({"cluster": dict(sorted(cluster.items())),
                       "task": {"type": rtype.lower(), "index": index},
                       "environment": "cloud"}, separators=(",", ":"))


MASTER_WAIT = ("err=1; for i in $(seq 100); do if getent hosts {master} >/dev/null; "
               "then err=0 && break; fi; echo waiting for master; sleep 1; done; exit $err")


def build_pod(kind: JobKind, job: Obj, rtype: str, index: int, *, replica_restarts: int = 0,
              job_restarts: int = 0, gang: bool = True) -> Obj:
    """The pod of replica ``rtype``/``index`` (``gang``: a member of the job's PodGroup)."""
    spec = kind.specs(job)[rtype]
    template = copy.deepcopy(spec.get("template") or {})
    meta = template.get("metadata") or {}
    pod_spec = template.get("spec") or {}
    md = job["metadata"]
    name = pod_name(job, rtype, index)
    labels = dict(meta.get("labels") or {})
    labels.update(selector_labels(kind, job, rtype, index))
    if is_master_role(kind, job, rtype, index):
        labels[JOB_ROLE] = "master"
    if gang:
        labels[POD_GROUP_LABEL] = md["name"]
    annotations = dict(meta.get("annotations") or {})
    annotations[RESTARTS_ANNOTATION] = str(replica_restarts)
    annotations[JOB_RESTARTS_ANNOTATION] = str(job_restarts)
    policy = restart_policy(kind, spec)
    if restart_scope(job) == "Job" or policy == "ExitCode":
        # the controller restarts (all) replicas itself: the node agent must not
        pod_spec["restartPolicy"] = "Never"
    else:
        pod_spec["restartPolicy"] = policy
    if kind is PYTORCH:
        extra = pytorch_env(job, rtype, index)
        for c in pod_spec.get("containers") or []:
            c["env"] = [*(c.get("env") or []), *extra]
        if rtype == "Worker" and "Master" in kind.specs(job):
            master = pod_name(job, "Master", 0)
            pod_spec["initContainers"] = [*(pod_spec.get("initContainers") or []), {
                "name": "init-pytorch", "image": "alpine:3.10",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", MASTER_WAIT.format(master=master)],
                "resources": {"limits": {"cpu": "100m", "memory": "20Mi"},
                              "requests": {"cpu": "50m", "memory": "10Mi"}}}]
    else:
        config = tf_config(job, rtype, index)
        target = next((c for c in pod_spec.get("containers") or []
                       if c.get("name") == kind.container), None)
        if config is not None and target is not None:
            target["env"] = [*(target.get("env") or []), _env("TF_CONFIG", config)]
    container = _default_container(kind, pod_spec)
    if container is not None and not any(p.get("name") == kind.port_name
                                         for p in container.get("ports") or []):
        container["ports"] = [*(container.get("ports") or []),
                              {"name": kind.port_name, "containerPort": kind.port}]
    priority = (run_policy(job).get("schedulingPolicy") or {}).get("priorityClass")
    if priority and not pod_spec.get("priorityClassName"):
        pod_spec["priorityClassName"] = priority
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": md.get("namespace") or "default",
                         "labels": labels, "annotations": annotations,
                         "ownerReferences": [owner_reference(kind, job)],
                         **({"finalizers": meta["finalizers"]} if meta.get("finalizers")
                            else {})},
            "spec": pod_spec}


def build_service(kind: JobKind, job: Obj, rtype: str, index: int) -> Obj:
    """The headless Service that names replica ``rtype``/``index`` in DNS."""
    spec = kind.specs(job)[rtype]
    container = _default_container(kind, (spec.get("template") or {}).get("spec") or {}) or {}
    ports = [{"name": p["name"], "port": int(p["containerPort"])}
             for p in container.get("ports") or [] if p.get("name") and p.get("containerPort")]
    if not any(p["name"] == kind.port_name for p in ports):
        ports.append({"name": kind.port_name, "port": kind.port})
    labels = selector_labels(kind, job, rtype, index)
    md = job["metadata"]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": pod_name(job, rtype, index),
                         "namespace": md.get("namespace") or "default",
                         "labels": dict(labels),
                         "ownerReferences": [owner_reference(kind, job)]},
            "spec": {"clusterIP": "None", "selector": labels, "ports": ports}}


def pod_group(kind: JobKind, job: Obj) -> Obj:
    """The job's gang: a ``scheduling.x-k8s.io/v1alpha1`` PodGroup named after it."""
    md = job["metadata"]
    policy = run_policy(job).get("schedulingPolicy") or {}
    total = sum(replicas(s) for s in kind.specs(job).values())
    spec: Obj = {"minMember": int(policy["minAvailable"]) if policy.get("minAvailable")
                 is not None else total}
    if policy.get("minResources"):
        spec["minResources"] = dict(policy["minResources"])
    if policy.get("scheduleTimeoutSeconds") is not None:
        spec["scheduleTimeoutSeconds"] = int(policy["scheduleTimeoutSeconds"])
    return {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": md["name"], "namespace": md.get("namespace") or "default",
                         "annotations": dict(md.get("annotations") or {}),
                         "ownerReferences": [owner_reference(kind, job)]},
            "spec": spec}


def gang_shortfall(kind: JobKind, job: Obj, nodes: list[Obj]) -> str:
    """Why a gang of all the job's replicas could never be placed at once (together
    they request more than the schedulable nodes have in all), or ''. Such a job is
    scheduled pod by pod, as it would be without gang scheduling, rather than wait
    forever. A job that sets ``schedulingPolicy.minAvailable`` is always grouped."""
    if (run_policy(job).get("schedulingPolicy") or {}).get("minAvailable") is not None:
        return ""
    need: dict[str, int] = {}
    pods = 0
    for rtype in kind.ordered_types(job):
        for index in range(replicas(kind.specs(job)[rtype])):
            pod = build_pod(kind, job, rtype, index)
            for c in (pod["spec"].get("containers") or []) + (
                    pod["spec"].get("initContainers") or []):
                res = c.get("resources") or {}
                c["resources"] = {**res, "requests": {**(res.get("limits") or {}),
                                                      **(res.get("requests") or {})}}
            for r, n in pod_requests(pod).items():
                need[r] = need.get(r, 0) + n
            pods += 1
    have: dict[str, int] = {}
    for node in nodes:
        if (node.get("spec") or {}).get("unschedulable"):
            continue
        for r, n in resource_list((node.get("status") or {}).get("allocatable")).items():
            have[r] = have.get(r, 0) + n
    short = sorted(r for r, n in need.items() if n > have.get(r, 0) and r != "pods")
    if not short or not have:
        return ""
    what = ", ".join(f"{r} {format_amount(r, need[r])} of {format_amount(r, have.get(r, 0))}"
                     for r in short)
    return (f"the job's {pods} pods together request more than all schedulable nodes "
            f"have ({what}): scheduling them without a PodGroup, as they fit")


def format_amount(resource: str, amount: int) -> str:
    """An amount as :mod:`kybernetes.api.scheduling` counts it (cpu in millicores), as a
    quantity."""
    if resource == "cpu":
        return quantity.format_quantity(Fraction(amount, 1000))
    if resource in ("memory", "ephemeral-storage"):
        return quantity.format_quantity(Fraction(amount), quantity.BINARY_SI)
    return str(amount)
