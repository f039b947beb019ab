"""Defaulting fills in what kube-apiserver fills in, and nothing it leaves out."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from kybernetes.api.defaults.podspec import image_pull_policy, round_up_to_milli
from kybernetes.api.strategy import Strategy

Obj = dict[str, Any]
UID = "0f6d2c8a-1111-4a5b-9c1d-000000000001"


def create(obj: Obj, *, has_status: bool = True) -> Obj:
    """Default and prepare ``obj`` as a create request does."""
    obj = copy.deepcopy(obj)
    group = obj["apiVersion"].rpartition("/")[0]
    obj.setdefault("metadata", {}).setdefault("uid", UID)
    strategy = Strategy(group, obj["kind"], has_status=has_status)
    strategy.default(obj)
    strategy.prepare_create(obj)
    return obj


POD_SPEC_DEFAULTS = {
    "dnsPolicy": "ClusterFirst",
    "restartPolicy": "Always",
    "securityContext": {},
    "terminationGracePeriodSeconds": 30,
    "schedulerName": "default-scheduler",
}
CONTAINER_DEFAULTS = {
    "imagePullPolicy": "IfNotPresent",
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}


def template(**spec: Any) -> Obj:
    return {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "python:3.11"}], **spec}}


def test_pod() -> None:
    """A bare Pod gets pod, container, probe, volume and status defaults."""
    pod = create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": [{
            "name": "app", "image": "python:3.11",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
            "readinessProbe": {"httpGet": {"port": 80}},
            "livenessProbe": {"grpc": {"port": 9000}, "periodSeconds": 5},
        }],
        "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "scratch"},
                    {"name": "host", "hostPath": {"path": "/var/log"}}],
    }})
    spec = pod["spec"]
    assert {k: spec[k] for k in POD_SPEC_DEFAULTS} == POD_SPEC_DEFAULTS
    assert spec["enableServiceLinks"] is True
    c = spec["containers"][0]
    assert {k: c[k] for k in CONTAINER_DEFAULTS} == CONTAINER_DEFAULTS
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["env"][0]["valueFrom"]["fieldRef"] == {"fieldPath": "metadata.name",
                                                    "apiVersion": "v1"}
    assert c["resources"]["requests"] == {"cpu": "500m", "memory": "128Mi"}
    assert c["readinessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                   "timeoutSeconds": 1, "periodSeconds": 10,
                                   "successThreshold": 1, "failureThreshold": 3}
    assert c["livenessProbe"]["grpc"] == {"port": 9000, "service": ""}
    assert c["livenessProbe"]["periodSeconds"] == 5
    assert spec["volumes"] == [
        {"name": "cfg", "configMap": {"name": "c", "defaultMode": 420}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "host", "hostPath": {"path": "/var/log", "type": ""}},
    ]
    assert pod["status"] == {"phase": "Pending", "qosClass": "Guaranteed"}


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        pytest.param({}, "BestEffort", id="best-effort"),
        pytest.param({"requests": {"cpu": "100m"}}, "Burstable", id="burstable"),
        pytest.param({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed", id="guaranteed"),
        pytest.param({"requests": {"cpu": "1", "memory": "1Gi"},
                      "limits": {"cpu": "2", "memory": "1Gi"}}, "Burstable", id="unequal"),
        pytest.param({"requests": {"cpu": "1000m", "memory": "1024Mi"},
                      "limits": {"cpu": 1, "memory": "1Gi"}}, "Guaranteed",
                     id="equal-in-other-notations"),
        pytest.param({"requests": {"cpu": ["1"]}}, "BestEffort", id="not-a-quantity"),
    ],
)
def test_pod_qos_class(resources: Obj, qos: str) -> None:
    """The QoS class is computed after requests default to limits."""
    pod = create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "app", "image": "busybox", "resources": resources}]}})
    assert pod["status"]["qosClass"] == qos


def test_templates_do_not_get_pod_only_defaults() -> None:
    """Upstream defaults enableServiceLinks and requests only on Pods, not templates."""
    deploy = create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                     "spec": {"template": template()}})
    spec = deploy["spec"]["template"]["spec"]
    assert "enableServiceLinks" not in spec
    assert {k: spec[k] for k in POD_SPEC_DEFAULTS} == POD_SPEC_DEFAULTS


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        pytest.param("busybox", "Always", id="no-tag"),
        pytest.param("busybox:latest", "Always", id="latest"),
        pytest.param("python:3.11", "IfNotPresent", id="tag"),
        pytest.param("localhost:5000/model", "Always", id="registry-port-no-tag"),
        pytest.param("localhost:5000/model:v2", "IfNotPresent", id="registry-port-tag"),
        pytest.param("busybox@sha256:" + "a" * 64, "IfNotPresent", id="digest"),
        pytest.param("", "IfNotPresent", id="empty"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    """Always for :latest or no tag, IfNotPresent otherwise."""
    assert image_pull_policy(image) == policy


@pytest.mark.parametrize(
    ("given", "rounded"),
    [
        pytest.param("100u", "1m", id="micro-up-to-milli"),
        pytest.param("1500m", "1500m", id="already-milli"),
        pytest.param("1Gi", "1Gi", id="binary"),
        pytest.param(2, 2, id="int"),
    ],
)
def test_resource_rounding(given: Any, rounded: Any) -> None:
    """Quantities finer than a milli-unit round up to one."""
    assert round_up_to_milli(given) == rounded


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [
        pytest.param("Deployment", {}, {
            "replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}},
                     id="deployment"),
        pytest.param("Deployment", {"strategy": {"type": "Recreate"}},
                     {"strategy": {"type": "Recreate"}}, id="deployment-recreate"),
        pytest.param("ReplicaSet", {}, {"replicas": 1}, id="replicaset"),
        pytest.param("StatefulSet", {}, {
            "replicas": 1, "podManagementPolicy": "OrderedReady", "revisionHistoryLimit": 10,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                                                     "whenScaled": "Retain"}},
                     id="statefulset"),
        pytest.param("DaemonSet", {}, {
            "revisionHistoryLimit": 10,
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}},
                     id="daemonset"),
    ],
)
def test_apps(kind: str, spec: Obj, expected: Obj) -> None:
    """Workload specs get their replicas, strategies and history limits."""
    obj = create({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w"},
                  "spec": {**spec, "template": template()}})
    assert {k: obj["spec"][k] for k in expected} == expected


def test_statefulset_claim_templates() -> None:
    """Claim templates get a volume mode and a Pending phase, as upstream shows them."""
    sts = create({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                  "spec": {"template": template(), "volumeClaimTemplates": [
                      {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}})
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["volumeMode"] == "Filesystem"
    assert claim["status"] == {"phase": "Pending"}


def test_job_selector_and_defaults() -> None:
    """A new Job selects its own uid and gets completions, backoff and policies."""
    job = create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
                  "spec": {"template": template(restartPolicy="Never")}})
    spec = job["spec"]
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}}
    generated = {"job-name": "train", "batch.kubernetes.io/job-name": "train",
                 "controller-uid": UID, "batch.kubernetes.io/controller-uid": UID}
    assert spec["template"]["metadata"]["labels"] == {"app": "web", **generated}
    assert job["metadata"]["labels"] == {"app": "web"}
    assert {k: spec[k] for k in ("completions", "parallelism", "backoffLimit", "completionMode",
                                 "suspend", "podReplacementPolicy")} == {
        "completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
        "suspend": False, "podReplacementPolicy": "TerminatingOrFailed"}


def test_job_without_template_labels() -> None:
    """A Job whose template has no labels is labelled with the generated ones."""
    job = create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
                  "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                      {"name": "pi", "image": "perl"}]}}}})
    assert job["metadata"]["labels"] == job["spec"]["template"]["metadata"]["labels"] == {
        "job-name": "pi", "batch.kubernetes.io/job-name": "pi",
        "controller-uid": UID, "batch.kubernetes.io/controller-uid": UID}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"parallelism": 3}, {"parallelism": 3}, id="parallel-without-completions"),
        pytest.param({"completions": 5}, {"completions": 5, "parallelism": 1},
                     id="completions-only"),
        pytest.param({"manualSelector": True, "selector": {"matchLabels": {"app": "web"}}},
                     {"selector": {"matchLabels": {"app": "web"}}}, id="manual-selector"),
        pytest.param({"podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [
            {"type": "DisruptionTarget"}]}]}},
                     {"podReplacementPolicy": "Failed", "podFailurePolicy": {"rules": [
                         {"action": "Ignore", "onPodConditions": [
                             {"type": "DisruptionTarget", "status": "True"}]}]}},
                     id="pod-failure-policy"),
        pytest.param({"backoffLimitPerIndex": 1, "completionMode": "Indexed", "completions": 2},
                     {"backoffLimit": 2**31 - 1}, id="backoff-per-index"),
    ],
)
def test_job_variants(spec: Obj, expected: Obj) -> None:
    """Completions, selectors and backoff follow SetDefaults_Job."""
    job = create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                  "spec": {**spec, "template": template(restartPolicy="Never")}})
    assert {k: job["spec"].get(k) for k in expected} == expected


def test_cron_job() -> None:
    """CronJobs get policies and history limits; their job template only pod defaults."""
    cj = create({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
                 "spec": {"schedule": "@daily", "jobTemplate": {"spec": {
                     "template": template(restartPolicy="OnFailure")}}}})
    spec = cj["spec"]
    assert {k: spec[k] for k in ("concurrencyPolicy", "suspend", "successfulJobsHistoryLimit",
                                 "failedJobsHistoryLimit")} == {
        "concurrencyPolicy": "Allow", "suspend": False, "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1}
    job_spec = spec["jobTemplate"]["spec"]
    assert "backoffLimit" not in job_spec
    assert job_spec["template"]["spec"]["schedulerName"] == "default-scheduler"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"ports": [{"port": 80}]}, {
            "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}, id="cluster-ip"),
        pytest.param({"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": "http"}]}, {
            "externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": True,
            "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}, id="load-balancer"),
        pytest.param({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}, {
            "clusterIPs": ["10.96.0.10"], "ipFamilies": ["IPv4"]}, id="cluster-ips-synced"),
        pytest.param({"clusterIP": "None"}, {
            "clusterIPs": ["None"], "ipFamilyPolicy": "RequireDualStack"},
                     id="headless-without-selector"),
        pytest.param({"sessionAffinity": "ClientIP"}, {
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}},
                     id="client-ip-affinity"),
        pytest.param({"type": "ExternalName", "externalName": "db.example.com"}, {
            "type": "ExternalName", "ipFamilies": None, "internalTrafficPolicy": None},
                     id="external-name"),
    ],
)
def test_service(spec: Obj, expected: Obj) -> None:
    """Services get types, policies, target ports and IP families."""
    svc = create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec})
    assert {k: svc["spec"].get(k) for k in expected} == expected


def test_namespace() -> None:
    """A new Namespace is Active, finalized by kubernetes and labelled with its name."""
    ns = create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    assert ns["status"] == {"phase": "Active"}
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}


def test_secret() -> None:
    """Secrets are Opaque by default and stringData is merged into data."""
    secret = create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                     "data": {"a": base64.b64encode(b"old").decode()},
                     "stringData": {"a": "new", "b": "token"}}, has_status=False)
    assert secret["type"] == "Opaque"
    assert "stringData" not in secret
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {"a": b"new",
                                                                           "b": b"token"}


def test_persistent_volumes() -> None:
    """Volumes and claims get a volume mode, reclaim policy and Pending phase."""
    pv = create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"},
                 "spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data"}}})
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["volumeMode"] == "Filesystem"
    assert pv["spec"]["hostPath"]["type"] == ""
    assert pv["status"] == {"phase": "Pending"}
    pvc = create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                  "metadata": {"name": "c"}, "spec": {}})
    assert pvc["spec"] == {"volumeMode": "Filesystem"}
    assert pvc["status"] == {"phase": "Pending"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"maxReplicas": 5}, {"minReplicas": 1, "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 80}}}]}, id="metrics-and-min"),
        pytest.param({"maxReplicas": 5, "behavior": {"scaleDown": {
            "stabilizationWindowSeconds": 60}}}, {"behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                    {"type": "Pods", "value": 4, "periodSeconds": 15},
                    {"type": "Percent", "value": 100, "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": 100,
                                            "periodSeconds": 15}]}}}, id="partial-behavior"),
        pytest.param({"maxReplicas": 5}, {"behavior": None}, id="no-behavior"),
    ],
)
def test_hpa(spec: Obj, expected: Obj) -> None:
    """HPAs get minReplicas, a CPU target, and full behavior only when some is given."""
    hpa = create({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                  "metadata": {"name": "h"}, "spec": spec})
    assert {k: hpa["spec"].get(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("obj", "path", "expected"),
    [
        pytest.param({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}},
                     ("spec",), {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                                 "egress": [{"ports": [{"port": 53, "protocol": "TCP"}]}]},
                     id="network-policy"),
        pytest.param({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                      "spec": {"controller": "example.com/ingress", "parameters": {
                          "kind": "Config", "name": "c"}}},
                     ("spec", "parameters"), {"kind": "Config", "name": "c", "scope": "Cluster"},
                     id="ingress-class"),
        pytest.param({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "value": 5},
                     ("preemptionPolicy",), "PreemptLowerPriority", id="priority-class"),
        pytest.param({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                      "provisioner": "example.com/disk"},
                     ("volumeBindingMode",), "Immediate", id="storage-class"),
        pytest.param({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "addressType": "IPv4", "ports": [{"port": 80}]},
                     ("ports",), [{"port": 80, "name": "", "protocol": "TCP"}],
                     id="endpoint-slice"),
        pytest.param({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                      "roleRef": {"kind": "Role", "name": "r"},
                      "subjects": [{"kind": "User", "name": "u"},
                                   {"kind": "ServiceAccount", "name": "sa"}]},
                     ("subjects",), [{"kind": "User", "name": "u",
                                      "apiGroup": "rbac.authorization.k8s.io"},
                                     {"kind": "ServiceAccount", "name": "sa"}],
                     id="role-binding"),
        pytest.param({"apiVersion": "v1", "kind": "LimitRange", "spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}},
                     ("spec", "limits"), [{"type": "Container", "max": {"cpu": "2"},
                                           "min": {"memory": "64Mi"}, "default": {"cpu": "2"},
                                           "defaultRequest": {"cpu": "2", "memory": "64Mi"}}],
                     id="limit-range"),
    ],
)
def test_other_kinds(obj: Obj, path: tuple[str, ...], expected: Any) -> None:
    """NetworkPolicy, IngressClass, PriorityClass, StorageClass, EndpointSlice, RBAC, limits."""
    value: Any = create({**obj, "metadata": {"name": "x"}}, has_status=False)
    for k in path:
        value = value[k]
    assert value == expected


def test_custom_resource_definition() -> None:
    """CRDs get singular, listKind, a None conversion and their stored version."""
    crd = create({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                  "metadata": {"name": "widgets.example.com"}, "spec": {
                      "group": "example.com", "scope": "Namespaced",
                      "names": {"plural": "widgets", "kind": "Widget"},
                      "versions": [{"name": "v1beta1", "served": True, "storage": False},
                                   {"name": "v1", "served": True, "storage": True}]}})
    assert crd["spec"]["names"] == {"plural": "widgets", "kind": "Widget",
                                    "singular": "widget", "listKind": "WidgetList"}
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    assert crd["status"] == {"storedVersions": ["v1"]}


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
            {"name": "a", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}]}}, id="pod"),
        pytest.param({"apiVersion": "apps/v1", "kind": "Deployment",
                      "spec": {"template": template()}}, id="deployment"),
        pytest.param({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 1}]}},
                     id="service"),
        pytest.param({"apiVersion": "batch/v1", "kind": "Job",
                      "spec": {"template": template(restartPolicy="Never")}}, id="job"),
    ],
)
def test_defaulting_is_idempotent(obj: Obj) -> None:
    """Defaulting an already defaulted object changes nothing."""
    once = create({**obj, "metadata": {"name": "x"}})
    group = obj["apiVersion"].rpartition("/")[0]
    twice = copy.deepcopy(once)
    Strategy(group, obj["kind"], has_status=True).default(twice)
    assert twice == once


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"apiVersion": "v1", "kind": "PersistentVolume",
                      "spec": {"hostPath": {"path": "/d"}}}, id="pv"),
        pytest.param({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": {}}, id="pvc"),
        pytest.param({"apiVersion": "v1", "kind": "Namespace"}, id="namespace"),
        pytest.param({"apiVersion": "v1", "kind": "Service",
                      "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 1}]}}, id="service"),
        pytest.param({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "a", "image": "b"}]}}}},
                     id="job-without-template-labels"),
        pytest.param({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                      "spec": {"names": {"kind": "W"}, "versions": [{"name": "v1",
                                                                     "storage": True}]}},
                     id="crd"),
    ],
)
def test_create_hooks_and_defaults_commute(obj: Obj) -> None:
    """Defaulting before or after the create preparation gives the same object."""
    results = []
    for default_first in (True, False):
        o = copy.deepcopy({**obj, "metadata": {"name": "x", "uid": UID}})
        strategy = Strategy(obj["apiVersion"].rpartition("/")[0], obj["kind"], has_status=True)
        if default_first:
            strategy.default(o)
        strategy.prepare_create(o)
        if not default_first:
            strategy.default(o)
        results.append(o)
    assert results[0] == results[1]
