"""Server-side Table columns and cells, as kube-apiserver 1.32 prints them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kybernetes.api import printers

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW_TS = NOW.timestamp()
Obj = dict[str, Any]


def ago(seconds: float) -> str:
    """An RFC 3339 timestamp ``seconds`` before NOW."""
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, age: float = 600, **extra: Any) -> Obj:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(age), **extra}


def names(group: str, kind: str) -> list[tuple[str, int]]:
    return [(c["name"], c["priority"]) for c in printers.columns(group, kind)]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(-5, "<invalid>", id="future"),
        pytest.param(-1.5, "0s", id="clock-skew"),
        pytest.param(0, "0s", id="zero"),
        pytest.param(5, "5s", id="seconds"),
        pytest.param(119.9, "119s", id="under-two-minutes"),
        pytest.param(120, "2m", id="two-minutes"),
        pytest.param(200, "3m20s", id="minutes-seconds"),
        pytest.param(600, "10m", id="ten-minutes"),
        pytest.param(179 * 60 + 59, "179m", id="under-three-hours"),
        pytest.param(3 * 3600, "3h", id="hours"),
        pytest.param(3 * 3600 + 5 * 60, "3h5m", id="hours-minutes"),
        pytest.param(47 * 3600, "47h", id="under-two-days"),
        pytest.param(2 * 86400, "2d", id="days"),
        pytest.param(3 * 86400 + 7200, "3d2h", id="days-hours"),
        pytest.param(100 * 86400, "100d", id="many-days"),
        pytest.param(730 * 86400, "2y", id="two-years"),
        pytest.param(733 * 86400, "2y3d", id="years-days"),
        pytest.param(9 * 365 * 86400, "9y", id="many-years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    """human_duration matches apimachinery's HumanDuration."""
    assert printers.human_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(59, "59s", id="seconds"),
        pytest.param(200, "3m", id="minutes"),
        pytest.param(5 * 3600, "5h", id="hours"),
        pytest.param(40 * 86400, "40d", id="days"),
        pytest.param(800 * 86400, "2y", id="years"),
    ],
)
def test_short_human_duration(seconds: float, text: str) -> None:
    """short_human_duration matches apimachinery's ShortHumanDuration."""
    assert printers.short_human_duration(seconds) == text


# --------------------------------------------------------------------------- columns


@pytest.mark.parametrize(
    ("group", "kind", "expected"),
    [
        pytest.param("", "Pod", [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0),
                                 ("Age", 0), ("IP", 1), ("Node", 1), ("Nominated Node", 1),
                                 ("Readiness Gates", 1)], id="pod"),
        pytest.param("", "Node", [("Name", 0), ("Status", 0), ("Roles", 0), ("Age", 0),
                                  ("Version", 0), ("Internal-IP", 1), ("External-IP", 1),
                                  ("OS-Image", 1), ("Kernel-Version", 1),
                                  ("Container-Runtime", 1)], id="node"),
        pytest.param("", "Service", [("Name", 0), ("Type", 0), ("Cluster-IP", 0),
                                     ("External-IP", 0), ("Port(s)", 0), ("Age", 0),
                                     ("Selector", 1)], id="service"),
        pytest.param("", "Event", [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0),
                                   ("Subobject", 1), ("Source", 1), ("Message", 0),
                                   ("First Seen", 1), ("Count", 1), ("Name", 1)], id="event"),
        pytest.param("events.k8s.io", "Event", [("Last Seen", 0), ("Type", 0), ("Reason", 0),
                                                ("Object", 0), ("Subobject", 1), ("Source", 1),
                                                ("Message", 0), ("First Seen", 1), ("Count", 1),
                                                ("Name", 1)], id="events-k8s-io"),
        pytest.param("apps", "Deployment", [("Name", 0), ("Ready", 0), ("Up-to-date", 0),
                                            ("Available", 0), ("Age", 0), ("Containers", 1),
                                            ("Images", 1), ("Selector", 1)], id="deployment"),
        pytest.param("batch", "Job", [("Name", 0), ("Status", 0), ("Completions", 0),
                                      ("Duration", 0), ("Age", 0), ("Containers", 1),
                                      ("Images", 1), ("Selector", 1)], id="job"),
        pytest.param("batch", "CronJob", [("Name", 0), ("Schedule", 0), ("Timezone", 0),
                                          ("Suspend", 0), ("Active", 0), ("Last Schedule", 0),
                                          ("Age", 0), ("Containers", 1), ("Images", 1),
                                          ("Selector", 1)], id="cronjob"),
        pytest.param("autoscaling", "HorizontalPodAutoscaler",
                     [("Name", 0), ("Reference", 0), ("Targets", 0), ("MinPods", 0),
                      ("MaxPods", 0), ("Replicas", 0), ("Age", 0)], id="hpa"),
        pytest.param("scheduling.k8s.io", "PriorityClass",
                     [("Name", 0), ("Value", 0), ("Global-Default", 0), ("Age", 0),
                      ("PreemptionPolicy", 0)], id="priorityclass"),
        pytest.param("rbac.authorization.k8s.io", "Role", [("Name", 0), ("Created At", 0)],
                     id="role-default"),
        pytest.param("", "LimitRange", [("Name", 0), ("Created At", 0)], id="limitrange-default"),
        pytest.param("apiextensions.k8s.io", "CustomResourceDefinition",
                     [("Name", 0), ("Created At", 0)], id="crd-default"),
        pytest.param("example.com", "Widget", [("Name", 0), ("Created At", 0)], id="unknown"),
    ],
)
def test_columns(group: str, kind: str, expected: list[tuple[str, int]]) -> None:
    """Column names and -o wide priorities follow printers.go."""
    assert names(group, kind) == expected


def test_column_definition_fields() -> None:
    """Each definition carries name, type, format, description and priority."""
    pod = printers.columns("", "Pod")
    assert pod[0] == {
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": pod[0]["description"],
    }
    assert pod[0]["description"].startswith("Name must be unique within a namespace.")
    assert pod[3]["type"] == "string"
    assert pod[5]["description"] == ("podIP address allocated to the pod. Routable at least "
                                     "within the cluster. Empty if not yet allocated.")
    created = printers.columns("rbac.authorization.k8s.io", "ClusterRole")[1]
    assert created["type"] == "date"
    assert created["description"].startswith("CreationTimestamp is a timestamp")
    service_type = printers.columns("", "Service")[1]["description"]
    assert "Possible enum values" not in service_type


def test_columns_are_fresh_copies() -> None:
    """Mutating returned definitions does not leak into later calls."""
    printers.columns("", "Pod")[0]["name"] = "Mangled"
    assert printers.columns("", "Pod")[0]["name"] == "Name"


BUILTIN_KINDS = [
    ("", "Pod"), ("", "Node"), ("", "Service"), ("", "Endpoints"), ("", "ConfigMap"),
    ("", "Secret"), ("", "Event"), ("", "Namespace"), ("", "ServiceAccount"),
    ("", "PersistentVolume"), ("", "PersistentVolumeClaim"), ("", "ResourceQuota"),
    ("", "LimitRange"), ("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"),
    ("apps", "DaemonSet"), ("apps", "ControllerRevision"), ("batch", "Job"),
    ("batch", "CronJob"), ("autoscaling", "HorizontalPodAutoscaler"),
    ("networking.k8s.io", "Ingress"), ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "NetworkPolicy"), ("policy", "PodDisruptionBudget"),
    ("scheduling.k8s.io", "PriorityClass"), ("coordination.k8s.io", "Lease"),
    ("discovery.k8s.io", "EndpointSlice"), ("events.k8s.io", "Event"),
    ("rbac.authorization.k8s.io", "Role"), ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"), ("storage.k8s.io", "StorageClass"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
]


@pytest.mark.parametrize(("group", "kind"), BUILTIN_KINDS,
                         ids=[f"{g or 'core'}-{k}" for g, k in BUILTIN_KINDS])
def test_every_builtin_kind_prints_a_bare_object(group: str, kind: str) -> None:
    """A bare object of every served kind gives one cell per described column."""
    obj = {"metadata": {"name": "x"}}
    assert len(printers.cells(group, kind, obj, NOW_TS)) == len(printers.columns(group, kind))
    assert all(c["description"] for c in printers.columns(group, kind))


# --------------------------------------------------------------------------- pods


def container_status(name: str, *, ready: bool = True, restarts: int = 0,
                     state: Obj | None = None, last: Obj | None = None, **extra: Any) -> Obj:
    return {"name": name, "ready": ready, "restartCount": restarts,
            "state": state or {"running": {"startedAt": ago(3000)}},
            "lastState": last or {}, "image": f"{name}:1", **extra}


def pod(*statuses: Obj, phase: str = "Running", init: list[Obj] | None = None,
        init_statuses: list[Obj] | None = None, conditions: list[Obj] | None = None,
        deleted: bool = False, **status: Any) -> Obj:
    metadata = meta("trainer-0", age=3600)
    if deleted:
        metadata["deletionTimestamp"] = ago(10)
    spec: Obj = {"containers": [{"name": s["name"], "image": s["image"]} for s in statuses]
                 or [{"name": "main", "image": "main:1"}], "nodeName": "gpu-1"}
    if init is not None:
        spec["initContainers"] = init
    out_status: Obj = {"phase": phase, "containerStatuses": list(statuses),
                       "podIPs": [{"ip": "10.42.0.7"}], "podIP": "10.42.0.7", **status}
    if init_statuses is not None:
        out_status["initContainerStatuses"] = init_statuses
    if conditions is not None:
        out_status["conditions"] = conditions
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
            "status": out_status}


READY_CONDITIONS = [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]
RESTARTED = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": ago(300)}}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            pod(container_status("main", restarts=3, last=RESTARTED),
                container_status("logger"), conditions=READY_CONDITIONS),
            ["trainer-0", "2/2", "Running", "3 (5m ago)", "60m"],
            id="running-with-restarts"),
        pytest.param(
            pod(container_status("main"), conditions=READY_CONDITIONS, deleted=True),
            ["trainer-0", "1/1", "Terminating", "0", "60m"],
            id="terminating"),
        pytest.param(
            pod(container_status("main", ready=False, restarts=5, last={"terminated": {
                "exitCode": 1, "reason": "Error", "finishedAt": ago(45)}},
                state={"waiting": {"reason": "CrashLoopBackOff",
                                   "message": "back-off 2m40s restarting failed container"}})),
            ["trainer-0", "0/1", "CrashLoopBackOff", "5 (45s ago)", "60m"],
            id="crashloopbackoff"),
        pytest.param(
            pod(container_status("main", ready=False, state={
                "waiting": {"reason": "ContainerCreating"}}), phase="Pending"),
            ["trainer-0", "0/1", "ContainerCreating", "0", "60m"],
            id="container-creating"),
        pytest.param(
            {"metadata": meta("queued", age=30), "spec": {"containers": [{"name": "main"}]},
             "status": {"phase": "Pending", "conditions": [
                 {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}},
            ["queued", "0/1", "Pending", "0", "30s"],
            id="pending-unschedulable"),
        pytest.param(
            {"metadata": meta("gated", age=30), "spec": {"containers": [{"name": "main"}]},
             "status": {"phase": "Pending", "conditions": [
                 {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}},
            ["gated", "0/1", "SchedulingGated", "0", "30s"],
            id="scheduling-gated"),
        pytest.param(
            pod(container_status("main", ready=False, state={"terminated": {
                "exitCode": 0, "reason": "Completed", "finishedAt": ago(60)}}),
                phase="Succeeded"),
            ["trainer-0", "0/1", "Completed", "0", "60m"],
            id="completed"),
        pytest.param(
            pod(container_status("main", ready=False, state={"terminated": {
                "exitCode": 2, "reason": "Error"}}), phase="Failed"),
            ["trainer-0", "0/1", "Error", "0", "60m"],
            id="error"),
        pytest.param(
            pod(container_status("main", ready=False, state={"terminated": {"exitCode": 3}}),
                phase="Failed"),
            ["trainer-0", "0/1", "ExitCode:3", "0", "60m"],
            id="exit-code-without-reason"),
        pytest.param(
            pod(container_status("main", ready=False, state={"terminated": {
                "exitCode": 0, "reason": "Completed"}}),
                container_status("server"), conditions=READY_CONDITIONS),
            ["trainer-0", "1/2", "Running", "0", "60m"],
            id="completed-container-but-one-running"),
        pytest.param(
            pod(container_status("main", ready=False, state={"waiting": {
                "reason": "PodInitializing"}}), phase="Pending",
                init=[{"name": "fetch-weights", "image": "curl"}],
                init_statuses=[container_status("fetch-weights", ready=False)]),
            ["trainer-0", "0/1", "Init:0/1", "0", "60m"],
            id="init-running"),
        pytest.param(
            pod(container_status("main", ready=False, state={"waiting": {
                "reason": "PodInitializing"}}), phase="Pending",
                init=[{"name": "fetch-weights", "image": "curl"}],
                init_statuses=[container_status("fetch-weights", ready=False, restarts=2, state={
                    "waiting": {"reason": "CrashLoopBackOff"}}, last={"terminated": {
                        "exitCode": 1, "finishedAt": ago(20)}})]),
            ["trainer-0", "0/1", "Init:CrashLoopBackOff", "2 (20s ago)", "60m"],
            id="init-crashloop"),
        pytest.param(
            pod(container_status("main", ready=False, state={"waiting": {
                "reason": "PodInitializing"}}), phase="Pending",
                init=[{"name": "migrate", "image": "db"}],
                init_statuses=[container_status("migrate", ready=False, state={
                    "terminated": {"exitCode": 1, "signal": 9}})]),
            ["trainer-0", "0/1", "Init:Signal:9", "0", "60m"],
            id="init-killed-by-signal"),
        pytest.param(
            pod(container_status("main"),
                init=[{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}],
                init_statuses=[container_status("proxy", started=True, restarts=1,
                                                last={"terminated": {"exitCode": 1,
                                                                     "finishedAt": ago(90)}})],
                conditions=READY_CONDITIONS),
            ["trainer-0", "2/2", "Running", "1 (90s ago)", "60m"],
            id="sidecar-counted"),
        pytest.param(
            pod(container_status("main"), conditions=READY_CONDITIONS, deleted=True,
                reason="NodeLost"),
            ["trainer-0", "1/1", "Unknown", "0", "60m"],
            id="node-lost-deleted"),
        pytest.param(
            pod(container_status("main", ready=False, state={"terminated": {
                "exitCode": 0, "reason": "Completed"}}), phase="Succeeded", deleted=True),
            ["trainer-0", "0/1", "Completed", "0", "60m"],
            id="deleted-after-success"),
        pytest.param(
            pod(container_status("main", ready=False), phase="Failed", reason="Evicted"),
            ["trainer-0", "0/1", "Evicted", "0", "60m"],
            id="evicted"),
    ],
)
def test_pod_cells(obj: Obj, expected: list[Any]) -> None:
    """READY, STATUS, RESTARTS and AGE follow upstream's printPod."""
    assert printers.cells("", "Pod", obj, NOW_TS)[:5] == expected


def test_pod_wide_cells() -> None:
    """The wide cells give IP, node, nominated node and readiness gates."""
    obj = pod(container_status("main"), conditions=[
        *READY_CONDITIONS, {"type": "example.com/lb-ready", "status": "True"}])
    obj["spec"]["readinessGates"] = [{"conditionType": "example.com/lb-ready"},
                                     {"conditionType": "example.com/warm"}]
    assert printers.cells("", "Pod", obj, NOW_TS)[5:] == ["10.42.0.7", "gpu-1", "<none>", "1/2"]
    bare = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    assert printers.cells("", "Pod", bare, NOW_TS) == [
        "p", "0/1", "", "0", "<unknown>", "<none>", "<none>", "<none>", "<none>"]


@pytest.mark.parametrize(
    ("phase", "conditions"),
    [
        pytest.param("Running", [], id="running"),
        pytest.param("Succeeded", [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                    "message": "The pod has completed successfully."}],
                     id="succeeded"),
        pytest.param("Failed", [{"type": "Completed", "status": "True", "reason": "Failed",
                                 "message": "The pod failed."}], id="failed"),
    ],
)
def test_pod_row_conditions(phase: str, conditions: list[Obj]) -> None:
    """Finished pods carry the Completed row condition."""
    assert printers.row_conditions("", "Pod", {"status": {"phase": phase}}) == conditions


# --------------------------------------------------------------------------- other kinds

TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
                                    {"name": "exporter", "image": "exporter:0.15"}]}}


def hpa_v2() -> Obj:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta("web"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": 70}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {
                    "type": "Utilization", "averageUtilization": 80}}},
                {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                                          "target": {"type": "AverageValue",
                                                     "averageValue": "100"}}},
            ],
        },
        "status": {"currentReplicas": 3, "desiredReplicas": 3, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": 45, "averageValue": "450m"}}},
        ]},
    }


CASES = [
    pytest.param(
        "apps", "Deployment",
        {"metadata": meta("web", age=300),
         "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [
             {"key": "tier", "operator": "In", "values": ["gpu", "cpu"]}]}, "template": TEMPLATE},
         "status": {"replicas": 4, "updatedReplicas": 1, "readyReplicas": 2,
                    "availableReplicas": 2, "unavailableReplicas": 2}},
        ["web", "2/3", 1, 2, "5m", "nginx,exporter", "nginx:1.27,exporter:0.15",
         "app=web,tier in (cpu,gpu)"],
        id="deployment-mid-rollout"),
    pytest.param(
        "apps", "ReplicaSet",
        {"metadata": meta("web-7d4b9c"), "spec": {"replicas": 3, "selector": {
            "matchLabels": {"app": "web", "pod-template-hash": "7d4b9c"}}, "template": TEMPLATE},
         "status": {"replicas": 3, "readyReplicas": 1}},
        ["web-7d4b9c", 3, 3, 1, "10m", "nginx,exporter", "nginx:1.27,exporter:0.15",
         "app=web,pod-template-hash=7d4b9c"],
        id="replicaset"),
    pytest.param(
        "apps", "StatefulSet",
        {"metadata": meta("db"), "spec": {"replicas": 3, "template": TEMPLATE},
         "status": {"readyReplicas": 2}},
        ["db", "2/3", "10m", "nginx,exporter", "nginx:1.27,exporter:0.15"],
        id="statefulset"),
    pytest.param(
        "apps", "DaemonSet",
        {"metadata": meta("node-exporter"),
         "spec": {"selector": {"matchLabels": {"app": "ne"}}, "template": {"spec": {
             "nodeSelector": {"kubernetes.io/os": "linux"},
             "containers": [{"name": "ne", "image": "ne:1"}]}}},
         "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                    "updatedNumberScheduled": 3, "numberAvailable": 2}},
        ["node-exporter", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "10m", "ne", "ne:1", "app=ne"],
        id="daemonset"),
    pytest.param(
        "apps", "ControllerRevision",
        {"metadata": meta("db-5f7c", ownerReferences=[
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": True}]),
         "revision": 2},
        ["db-5f7c", "statefulset.apps/db", 2, "10m"],
        id="controllerrevision"),
    pytest.param(
        "batch", "Job",
        {"metadata": meta("train", age=4000),
         "spec": {"completions": 1, "parallelism": 1, "selector": {"matchLabels": {
             "batch.kubernetes.io/controller-uid": "abc"}}, "template": TEMPLATE},
         "status": {"succeeded": 1, "startTime": ago(3900), "completionTime": ago(3900 - 754),
                    "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                   {"type": "Complete", "status": "True"}]}},
        ["train", "Complete", "1/1", "12m", "66m", "nginx,exporter", "nginx:1.27,exporter:0.15",
         "batch.kubernetes.io/controller-uid=abc"],
        id="job-complete"),
    pytest.param(
        "batch", "Job",
        {"metadata": meta("sweep", age=100),
         "spec": {"parallelism": 4, "template": TEMPLATE},
         "status": {"active": 4, "startTime": ago(95)}},
        ["sweep", "Running", "0/1 of 4", "95s", "100s", "nginx,exporter",
         "nginx:1.27,exporter:0.15", "<none>"],
        id="job-running-parallel"),
    pytest.param(
        "batch", "Job",
        {"metadata": meta("flaky"), "spec": {"completions": 5, "template": TEMPLATE},
         "status": {"succeeded": 2, "failed": 7, "startTime": ago(500), "conditions": [
             {"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}},
        ["flaky", "Failed", "2/5", "8m20s", "10m", "nginx,exporter", "nginx:1.27,exporter:0.15",
         "<none>"],
        id="job-failed"),
    pytest.param(
        "batch", "CronJob",
        {"metadata": meta("retrain", age=86400 * 3),
         "spec": {"schedule": "0 3 * * *", "suspend": False, "jobTemplate": {"spec": {
             "template": {"spec": {"containers": [{"name": "t", "image": "trainer:2"}]}}}}},
         "status": {"active": [{"name": "retrain-1"}], "lastScheduleTime": ago(3 * 3600)}},
        ["retrain", "0 3 * * *", "<none>", "False", 1, "3h", "3d", "t", "trainer:2", "<none>"],
        id="cronjob"),
    pytest.param("autoscaling", "HorizontalPodAutoscaler", hpa_v2(),
                 ["web", "Deployment/web", "cpu: 45%/70%, memory: <unknown>/80% + 1 more...",
                  "2", 10, 3, "10m"],
                 id="hpa-v2-three-metrics"),
    pytest.param(
        "autoscaling", "HorizontalPodAutoscaler",
        {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": meta("api"),
         "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}, "maxReplicas": 5,
                  "targetCPUUtilizationPercentage": 80},
         "status": {"currentReplicas": 1, "desiredReplicas": 1,
                    "currentCPUUtilizationPercentage": 12}},
        ["api", "Deployment/api", "cpu: 12%/80%", "<unset>", 5, 1, "10m"],
        id="hpa-v1"),
    pytest.param(
        "autoscaling", "HorizontalPodAutoscaler",
        {"metadata": meta("queue"),
         "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "worker"}, "minReplicas": 1,
                  "maxReplicas": 20, "metrics": [
                      {"type": "External", "external": {"metric": {"name": "queue_depth"},
                                                        "target": {"averageValue": "30"}}},
                      {"type": "Object", "object": {"metric": {"name": "rps"},
                                                    "target": {"value": "2k"}}}]},
         "status": {"currentReplicas": 4, "currentMetrics": [
             {"type": "External", "external": {"current": {"averageValue": "25"}}},
             {"type": "Object", "object": {"current": {"value": "1500"}}}]}},
        ["queue", "Deployment/worker", "25/30 (avg), 1500/2k", "1", 20, 4, "10m"],
        id="hpa-external-and-object"),
    pytest.param(
        "", "Service",
        {"metadata": meta("inference"),
         "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.15", "clusterIPs": ["10.43.0.15"],
                  "selector": {"app": "inference", "tier": "gpu"},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 31380,
                             "protocol": "TCP"},
                            {"name": "grpc", "port": 9000, "nodePort": 31900,
                             "protocol": "TCP"}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}}},
        ["inference", "LoadBalancer", "10.43.0.15", "192.168.1.240", "80:31380/TCP,9000:31900/TCP",
         "10m", "app=inference,tier=gpu"],
        id="service-loadbalancer"),
    pytest.param(
        "", "Service",
        {"metadata": meta("pending-lb"),
         "spec": {"type": "LoadBalancer", "clusterIPs": ["10.43.0.16"],
                  "ports": [{"port": 443, "protocol": "TCP", "nodePort": 30443}]}},
        ["pending-lb", "LoadBalancer", "10.43.0.16", "<pending>", "443:30443/TCP", "10m",
         "<none>"],
        id="service-loadbalancer-pending"),
    pytest.param(
        "", "Service",
        {"metadata": meta("kubernetes"),
         "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.1",
                  "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
        ["kubernetes", "ClusterIP", "10.43.0.1", "<none>", "443/TCP", "10m", "<none>"],
        id="service-clusterip"),
    pytest.param(
        "", "Service",
        {"metadata": meta("headless"), "spec": {"type": "ClusterIP", "clusterIP": "None",
                                                "clusterIPs": ["None"]}},
        ["headless", "ClusterIP", "None", "<none>", "<none>", "10m", "<none>"],
        id="service-headless"),
    pytest.param(
        "", "Service",
        {"metadata": meta("db"), "spec": {"type": "ExternalName",
                                          "externalName": "db.example.com"}},
        ["db", "ExternalName", "<none>", "db.example.com", "<none>", "10m", "<none>"],
        id="service-externalname"),
    pytest.param(
        "", "Node",
        {"metadata": meta("gpu-1", age=86400 * 12, labels={
            "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "",
            "kubernetes.io/hostname": "gpu-1"}),
         "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                   {"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                                  {"type": "Hostname", "address": "gpu-1"}],
                    "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Ubuntu 24.04 LTS",
                                 "kernelVersion": "6.8.0-45-generic",
                                 "containerRuntimeVersion": "kybernetes://0.1.0"}}},
        ["gpu-1", "Ready", "control-plane,worker", "12d", "v1.32.0", "192.168.1.10", "<none>",
         "Ubuntu 24.04 LTS", "6.8.0-45-generic", "kybernetes://0.1.0"],
        id="node-ready-with-roles"),
    pytest.param(
        "", "Node",
        {"metadata": meta("cpu-2", labels={"kubernetes.io/role": "inference"}),
         "spec": {"unschedulable": True},
         "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
        ["cpu-2", "NotReady,SchedulingDisabled", "inference", "10m", "", "<none>", "<none>",
         "<unknown>", "<unknown>", "<unknown>"],
        id="node-cordoned-notready"),
    pytest.param("", "Node", {"metadata": meta("new")},
                 ["new", "Unknown", "<none>", "10m", "", "<none>", "<none>", "<unknown>",
                  "<unknown>", "<unknown>"],
                 id="node-without-conditions"),
    pytest.param(
        "", "Endpoints",
        {"metadata": meta("web"), "subsets": [
            {"addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}],
             "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]}]},
        ["web", "10.42.0.5:8080,10.42.0.6:8080,10.42.0.5:9090 + 1 more...", "10m"],
        id="endpoints"),
    pytest.param("", "Endpoints", {"metadata": meta("none")}, ["none", "<none>", "10m"],
                 id="endpoints-empty"),
    pytest.param(
        "", "ConfigMap",
        {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}},
        ["cfg", 3, "10m"], id="configmap"),
    pytest.param(
        "", "Secret",
        {"metadata": meta("tls"), "type": "kubernetes.io/tls",
         "data": {"tls.crt": "", "tls.key": ""}},
        ["tls", "kubernetes.io/tls", 2, "10m"], id="secret"),
    pytest.param("", "Namespace", {"metadata": meta("ml"), "status": {"phase": "Active"}},
                 ["ml", "Active", "10m"], id="namespace"),
    pytest.param("", "ServiceAccount", {"metadata": meta("default")}, ["default", 0, "10m"],
                 id="serviceaccount"),
    pytest.param(
        "", "Event",
        {"metadata": meta("trainer-0.17c"), "type": "Warning", "reason": "BackOff",
         "message": "Back-off restarting failed container main\n",
         "involvedObject": {"kind": "Pod", "name": "trainer-0", "fieldPath": "spec.containers{main}"},
         "source": {"component": "kubelet", "host": "gpu-1"},
         "firstTimestamp": ago(3600), "lastTimestamp": ago(30), "count": 14},
        ["30s", "Warning", "BackOff", "pod/trainer-0", "spec.containers{main}", "kubelet, gpu-1",
         "Back-off restarting failed container main", "60m", 14, "trainer-0.17c"],
        id="event-core"),
    pytest.param(
        "", "Event",
        {"metadata": meta("sched.1"), "type": "Normal", "reason": "Scheduled",
         "message": "Successfully assigned default/p to gpu-1",
         "involvedObject": {"kind": "Pod", "name": "p"}, "reportingComponent": "default-scheduler",
         "eventTime": "2024-05-01T11:59:50.123456Z", "firstTimestamp": None,
         "lastTimestamp": None},
        ["9s", "Normal", "Scheduled", "pod/p", "", "default-scheduler",
         "Successfully assigned default/p to gpu-1", "9s", 1, "sched.1"],
        id="event-singleton-eventtime"),
    pytest.param(
        "events.k8s.io", "Event",
        {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": meta("hpa.2"),
         "type": "Normal", "reason": "SuccessfulRescale", "note": "New size: 4",
         "regarding": {"kind": "HorizontalPodAutoscaler", "name": "web"},
         "reportingController": "horizontal-pod-autoscaler", "reportingInstance": "cp-1",
         "eventTime": ago(600), "series": {"count": 3, "lastObservedTime": ago(120)}},
        ["2m", "Normal", "SuccessfulRescale", "horizontalpodautoscaler/web", "",
         "horizontal-pod-autoscaler, cp-1", "New size: 4", "10m", 3, "hpa.2"],
        id="event-events-k8s-io-series"),
    pytest.param(
        "", "PersistentVolume",
        {"metadata": meta("pv-1"), "spec": {
            "capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local",
            "volumeMode": "Filesystem", "claimRef": {"namespace": "ml", "name": "weights"}},
         "status": {"phase": "Bound"}},
        ["pv-1", "100Gi", "RWO,ROX", "Retain", "Bound", "ml/weights", "local", "<unset>", "",
         "10m", "Filesystem"],
        id="persistentvolume"),
    pytest.param(
        "", "PersistentVolumeClaim",
        {"metadata": meta("weights"), "spec": {
            "volumeName": "pv-1", "storageClassName": "local", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "50Gi"}}, "volumeMode": "Filesystem"},
         "status": {"phase": "Bound", "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteOnce"]}},
        ["weights", "Bound", "pv-1", "100Gi", "RWO", "local", "<unset>", "10m", "Filesystem"],
        id="persistentvolumeclaim-bound"),
    pytest.param(
        "", "PersistentVolumeClaim",
        {"metadata": meta("scratch", annotations={
            "volume.beta.kubernetes.io/storage-class": "fast"}),
         "spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}},
        ["scratch", "Pending", "", "", "", "fast", "<unset>", "10m", "<unset>"],
        id="persistentvolumeclaim-pending"),
    pytest.param(
        "", "ResourceQuota",
        {"metadata": meta("gpu-quota"), "status": {
            "hard": {"requests.cpu": "8", "requests.nvidia.com/gpu": "4", "limits.memory": "64Gi",
                     "pods": "20"},
            "used": {"requests.cpu": "2500m", "limits.memory": "8Gi", "pods": "3"}}},
        ["gpu-quota", "pods: 3/20, requests.cpu: 2500m/8, requests.nvidia.com/gpu: 0/4",
         "limits.memory: 8Gi/64Gi", "10m"],
        id="resourcequota"),
    pytest.param(
        "networking.k8s.io", "Ingress",
        {"metadata": meta("web"), "spec": {
            "ingressClassName": "kybernetes",
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {},
                      {"host": "d.example.com"}, {"host": "e.example.com"}],
            "tls": [{"hosts": ["a.example.com"]}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.241"},
                                                 {"hostname": "lb.example.com"}]}}},
        ["web", "kybernetes", "a.example.com,b.example.com,d.example.com + 2 more...",
         "192.168.1.241,lb.example.com", "80, 443", "10m"],
        id="ingress"),
    pytest.param(
        "networking.k8s.io", "Ingress",
        {"metadata": meta("catch-all"), "spec": {"rules": [{}], "defaultBackend": {}}},
        ["catch-all", "<none>", "*", "", "80", "10m"],
        id="ingress-no-hosts"),
    pytest.param(
        "networking.k8s.io", "IngressClass",
        {"metadata": meta("kybernetes"), "spec": {
            "controller": "kybernetes.io/ingress", "parameters": {
                "apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external"}}},
        ["kybernetes", "kybernetes.io/ingress", "IngressParameters.k8s.example.com/external",
         "10m"],
        id="ingressclass"),
    pytest.param(
        "networking.k8s.io", "NetworkPolicy",
        {"metadata": meta("deny"), "spec": {"podSelector": {}}}, ["deny", "<none>", "10m"],
        id="networkpolicy-all-pods"),
    pytest.param(
        "discovery.k8s.io", "EndpointSlice",
        {"metadata": meta("web-abc"), "addressType": "IPv4",
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["10.42.0.6"]}]},
        ["web-abc", "IPv4", "8080", "10.42.0.5,10.42.0.6", "10m"],
        id="endpointslice"),
    pytest.param(
        "policy", "PodDisruptionBudget",
        {"metadata": meta("web"), "spec": {"minAvailable": "50%"},
         "status": {"disruptionsAllowed": 1}},
        ["web", "50%", "N/A", 1, "10m"], id="pdb"),
    pytest.param(
        "scheduling.k8s.io", "PriorityClass",
        {"metadata": meta("training-high"), "value": 100000, "globalDefault": False,
         "preemptionPolicy": "PreemptLowerPriority"},
        ["training-high", 100000, False, "10m", "PreemptLowerPriority"], id="priorityclass"),
    pytest.param(
        "coordination.k8s.io", "Lease",
        {"metadata": meta("gpu-1"), "spec": {"holderIdentity": "gpu-1",
                                             "leaseDurationSeconds": 40}},
        ["gpu-1", "gpu-1", "10m"], id="lease"),
    pytest.param(
        "rbac.authorization.k8s.io", "RoleBinding",
        {"metadata": meta("editors"), "roleRef": {"kind": "ClusterRole", "name": "edit"},
         "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ml-team"},
                      {"kind": "ServiceAccount", "namespace": "ml", "name": "trainer"},
                      {"kind": "User", "name": "bob"}]},
        ["editors", "ClusterRole/edit", "10m", "alice, bob", "ml-team", "ml/trainer"],
        id="rolebinding"),
    pytest.param(
        "storage.k8s.io", "StorageClass",
        {"metadata": meta("local", annotations={
            "storageclass.kubernetes.io/is-default-class": "true"}),
         "provisioner": "kybernetes.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"},
        ["local (default)", "kybernetes.io/local-path", "Delete", "WaitForFirstConsumer", False,
         "10m"],
        id="storageclass-default"),
    pytest.param(
        "rbac.authorization.k8s.io", "ClusterRole",
        {"metadata": {"name": "view", "creationTimestamp": "2024-04-30T08:15:00Z"}},
        ["view", "2024-04-30T08:15:00Z"], id="clusterrole-default-table"),
    pytest.param("example.com", "Widget", {"metadata": {"name": "w"}},
                 ["w", "0001-01-01T00:00:00Z"], id="default-table-without-timestamp"),
]


@pytest.mark.parametrize(("group", "kind", "obj", "expected"), CASES)
def test_cells(group: str, kind: str, obj: Obj, expected: list[Any]) -> None:
    """Each kind's row matches what kube-apiserver 1.32 returns (wide cells included)."""
    row = printers.cells(group, kind, obj, NOW_TS)
    assert row == expected
    assert len(row) == len(printers.columns(group, kind))


def test_cells_do_not_mutate_input() -> None:
    """Printing (including version conversion) leaves the object untouched."""
    obj = hpa_v2()
    obj["apiVersion"] = "autoscaling/v1"
    before = repr(obj)
    printers.cells("autoscaling", "HorizontalPodAutoscaler", obj, NOW_TS)
    assert repr(obj) == before


# --------------------------------------------------------------------------- custom resources

TRAINING_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Workers", "type": "integer", "jsonPath": ".spec.workers",
     "description": "Number of worker replicas"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.loss", "priority": 1},
    {"name": "Preemptible", "type": "boolean", "jsonPath": ".spec.preemptible"},
    {"name": "Started", "type": "date", "jsonPath": ".status.startTime"},
    {"name": "GPUs", "type": "string", "jsonPath": ".spec.resources"},
]


def training_job(**status: Any) -> Obj:
    return {
        "apiVersion": "ml.example.com/v1", "kind": "TrainingJob",
        "metadata": meta("llama-ft", age=7200),
        "spec": {"workers": 4.0, "preemptible": True, "resources": {"nvidia.com/gpu": 8}},
        "status": {"phase": "Running", "loss": 1, "startTime": ago(3 * 3600 + 120),
                   "conditions": [{"type": "Scheduled", "status": "True"},
                                  {"type": "Ready", "status": "False"}], **status},
    }


def test_crd_columns() -> None:
    """Name comes first, then the declared columns with their type, format and priority."""
    cols = printers.crd_columns(TRAINING_COLUMNS)
    assert [(c["name"], c["type"], c["priority"]) for c in cols] == [
        ("Name", "string", 0), ("Phase", "string", 0), ("Ready", "string", 0),
        ("Workers", "integer", 0), ("Loss", "number", 1), ("Preemptible", "boolean", 0),
        ("Started", "date", 0), ("GPUs", "string", 0)]
    assert cols[0]["format"] == "name"
    assert cols[1]["description"] == (
        "Custom resource definition column (in JSONPath format): .status.phase")
    assert cols[3]["description"] == "Number of worker replicas"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(training_job(),
                     ["llama-ft", "Running", "False", 4, 1.0, True, "3h2m", '{"nvidia.com/gpu":8}'],
                     id="all-columns"),
        pytest.param({"metadata": {"name": "empty"}},
                     ["empty", None, None, None, None, None, None, None],
                     id="missing-fields-are-null"),
        pytest.param(training_job(startTime="yesterday", phase=3, loss="high"),
                     ["llama-ft", "3", "False", 4, None, True, "<invalid>",
                      '{"nvidia.com/gpu":8}'],
                     id="wrong-types"),
        pytest.param(training_job(conditions=[{"status": "True"}]),
                     ["llama-ft", "Running", None, 4, 1.0, True, "3h2m", '{"nvidia.com/gpu":8}'],
                     id="filter-error-is-null"),
    ],
)
def test_crd_cells(obj: Obj, expected: list[Any]) -> None:
    """Cells evaluate each JSONPath and convert the first value to the column type."""
    assert printers.crd_cells(TRAINING_COLUMNS, obj, NOW_TS) == expected


def test_crd_without_printer_columns() -> None:
    """A CRD with no additionalPrinterColumns prints Name and an Age date column."""
    cols = printers.crd_columns([])
    assert [(c["name"], c["type"]) for c in cols] == [("Name", "string"), ("Age", "date")]
    assert cols[1]["description"].startswith("CreationTimestamp is a timestamp")
    assert printers.crd_cells(None, training_job(), NOW_TS) == ["llama-ft", "120m"]
    assert printers.crd_cells([], {"metadata": {"name": "x"}}, NOW_TS) == ["x", None]
