"""Semantic validation reports what kube-apiserver reports, path and message alike."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kybernetes.api.builtin import build_registry
from kybernetes.api.registry import Registry
from kybernetes.api.validation import cron, validate_metadata, validate_metadata_update
from kybernetes.api.validation.common import is_dns1123_subdomain

Obj = dict[str, Any]
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")

SCENARIOS = Path(__file__).resolve().parents[2].parent / "shared" / "scenarios"
_REGISTRY: Registry | None = None


def registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def create(obj: Obj) -> tuple[Obj, list[str]]:
    """Run an object through create as the API server does: default, prepare, validate."""
    obj = copy.deepcopy(obj)
    group, _, version = obj["apiVersion"].rpartition("/")
    res = registry().by_kind(group, version, obj["kind"])
    assert res is not None and res.strategy is not None
    meta = obj.setdefault("metadata", {})
    meta.setdefault("uid", "0f6d2c8a-1111-4a5b-9c1d-000000000001")
    if res.namespaced:
        meta.setdefault("namespace", "default")
    strategy = res.strategy
    strategy.default(obj)
    strategy.prepare_create(obj)
    errs = validate_metadata(strategy.group, strategy.kind, obj, namespaced=res.namespaced)
    errs += strategy.validate(obj)
    return obj, [str(e) for e in errs]


def update(old: Obj, change: Any) -> list[str]:
    """Create ``old``, apply ``change`` to a copy, and validate the update."""
    stored, errs = create(old)
    assert errs == []
    new = copy.deepcopy(stored)
    change(new)
    group, _, version = new["apiVersion"].rpartition("/")
    res = registry().by_kind(group, version, new["kind"])
    assert res is not None and res.strategy is not None
    res.strategy.default(new)
    res.strategy.prepare_update(new, stored)
    errs_ = validate_metadata_update(new, stored) + res.strategy.validate_update(new, stored)
    return [str(e) for e in errs_]


def container(**extra: Any) -> Obj:
    return {"name": "app", "image": "python:3.11", **extra}


def deployment(**spec: Any) -> Obj:
    base: Obj = {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [container()]}},
    }
    base.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": base}


def pod(*containers: Obj, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": list(containers) or [container()], **spec}}


def job(**template_spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
            "spec": {"template": {"spec": {"containers": [container()], **template_spec}}}}


def cron_job(schedule: str, **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": schedule, **spec, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [container()]}}}}}}


def service(**spec: Any) -> Obj:
    base: Obj = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": base}


def crd(name: str = "widgets.example.com", **spec: Any) -> Obj:
    base: Obj = {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}],
    }
    base.update(spec)
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name}, "spec": base}


# -- the upstream messages that matter most ---------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(deployment(replicas=-1),
                     ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
                     id="negative-replicas"),
        pytest.param(deployment(template={"metadata": {"labels": {"app": "other"}},
                                          "spec": {"containers": [container()]}}),
                     ['spec.template.metadata.labels: Invalid value: {"app":"other"}: '
                      "`selector` does not match template `labels`"],
                     id="selector-does-not-match-template"),
        pytest.param(deployment(template={"metadata": {"labels": {"app": "web"}},
                                          "spec": {"containers": [{"name": "app"}]}}),
                     ["spec.template.spec.containers[0].image: Required value"],
                     id="missing-image"),
        pytest.param({**deployment(), "metadata": {"name": "a" * 254}},
                     [f'metadata.name: Invalid value: "{"a" * 254}": '
                      "must be no more than 253 characters"],
                     id="name-too-long"),
        pytest.param({**deployment(), "metadata": {"name": "MyApp"}},
                     [f'metadata.name: Invalid value: "MyApp": {SUBDOMAIN_MSG}'],
                     id="name-with-uppercase"),
        pytest.param(pod(container(resources={"requests": {"cpu": "600m"},
                                              "limits": {"cpu": "500m"}})),
                     ['spec.containers[0].resources.requests: Invalid value: "600m": '
                      "must be less than or equal to cpu limit of 500m"],
                     id="requests-above-limits"),
        pytest.param(cron_job("*/1 * * *"),
                     ['spec.schedule: Invalid value: "*/1 * * *": '
                      "expected exactly 5 fields, found 4: [*/1 * * *]"],
                     id="cron-missing-field"),
        pytest.param(cron_job("61 * * * *"),
                     ['spec.schedule: Invalid value: "61 * * * *": '
                      "end of range (61) above maximum (59): 61"],
                     id="cron-minute-out-of-range"),
        pytest.param(job(restartPolicy="Always"),
                     ['spec.template.spec.restartPolicy: Required value: valid values: '
                      '"OnFailure", "Never"'],
                     id="job-restart-always"),
        pytest.param(job(),
                     ['spec.template.spec.restartPolicy: Required value: valid values: '
                      '"OnFailure", "Never"'],
                     id="job-restart-defaulted-to-always"),
        pytest.param(service(ports=[{"port": 70000, "targetPort": 8080}]),
                     ["spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, "
                      "inclusive"],
                     id="service-port-out-of-range"),
        pytest.param(crd(name="gadgets.example.com"),
                     ['metadata.name: Invalid value: "gadgets.example.com": '
                      'must be spec.names.plural+"."+spec.group'],
                     id="crd-name-mismatch"),
    ],
)
def test_upstream_messages(obj: Obj, expected: list[str]) -> None:
    """The errors read exactly as kube-apiserver words them."""
    assert create(obj)[1] == expected


# -- metadata -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "kind", "meta", "namespaced", "expected"),
    [
        pytest.param("apps", "Deployment", {"namespace": "default"}, True,
                     ["metadata.name: Required value: name or generateName is required"],
                     id="name-required"),
        pytest.param("apps", "Deployment", {"generateName": "web-", "namespace": "default"}, True,
                     [], id="generate-name-suffices"),
        pytest.param("", "Service", {"name": "1web", "namespace": "default"}, True,
                     [f'metadata.name: Invalid value: "1web": {DNS1035_MSG}'],
                     id="service-name-dns1035"),
        pytest.param("", "Namespace", {"name": "a.b"}, False,
                     ['metadata.name: Invalid value: "a.b": must not contain dots'],
                     id="namespace-name-label"),
        pytest.param("rbac.authorization.k8s.io", "ClusterRole", {"name": "system:viewer"}, False,
                     [], id="rbac-names-are-path-segments"),
        pytest.param("rbac.authorization.k8s.io", "Role", {"name": "a/b", "namespace": "x"},
                     True, ["metadata.name: Invalid value: \"a/b\": may not contain '/'"],
                     id="rbac-name-with-slash"),
        pytest.param("apps", "Deployment", {"name": "web"}, True,
                     ["metadata.namespace: Required value"], id="namespace-required"),
        pytest.param("scheduling.k8s.io", "PriorityClass", {"name": "p", "namespace": "x"}, False,
                     ["metadata.namespace: Forbidden: not allowed on this type"],
                     id="namespace-forbidden"),
        pytest.param("", "ConfigMap", {"name": "c", "namespace": "default",
                                       "labels": {"app": "x" * 64}}, True,
                     [f'metadata.labels: Invalid value: "{"x" * 64}": '
                      "must be no more than 63 characters"],
                     id="label-value-too-long"),
        pytest.param("", "ConfigMap", {"name": "c", "namespace": "default",
                                       "annotations": {"big": "x" * (256 * 1024)}}, True,
                     ["metadata.annotations: Too long: may not be more than 262144 bytes"],
                     id="annotations-too-large"),
        pytest.param("", "ConfigMap", {"name": "c", "namespace": "default",
                                       "finalizers": ["cleanup"]}, True,
                     ['metadata.finalizers[0]: Invalid value: "cleanup": name is neither a '
                      "standard finalizer name nor is it fully qualified"],
                     id="finalizer-not-qualified"),
        pytest.param("example.com", "Widget", {"name": "w", "namespace": "default",
                                               "finalizers": ["cleanup"]}, True,
                     [], id="custom-resource-finalizer"),
        pytest.param("", "Pod", {"name": "p", "namespace": "default", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1",
             "controller": True},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2",
             "controller": True}]}, True,
                     ['metadata.ownerReferences: Invalid value: [{"apiVersion":"apps/v1",'
                      '"controller":true,"kind":"ReplicaSet","name":"a","uid":"1"},'
                      '{"apiVersion":"apps/v1","controller":true,"kind":"ReplicaSet","name":"b",'
                      '"uid":"2"}]: Only one reference can have Controller set to true. Found '
                      '"true" in references for ReplicaSet/a and ReplicaSet/b'],
                     id="two-controllers"),
        pytest.param("", "Pod", {"name": "p", "namespace": "default", "ownerReferences": [
            {"apiVersion": "", "kind": "ReplicaSet", "name": "a", "uid": "1"}]}, True,
                     ['metadata.ownerReferences.apiVersion: Invalid value: "": '
                      "version must not be empty"],
                     id="owner-without-version"),
    ],
)
def test_metadata(group: str, kind: str, meta: Obj, namespaced: bool, expected: list[str]) -> None:
    """Names, namespaces, labels, annotations, owners and finalizers follow ObjectMeta rules."""
    obj = {"metadata": meta}
    assert [str(e) for e in validate_metadata(group, kind, obj, namespaced=namespaced)] == expected


def test_metadata_update_is_immutable() -> None:
    """Identity fields may not change on update."""
    old = {"apiVersion": "v1", "metadata": {"name": "a", "namespace": "n", "uid": "1"}}
    new = {"apiVersion": "v1", "metadata": {"name": "b", "namespace": "n", "uid": "1"}}
    assert [str(e) for e in validate_metadata_update(new, old)] == [
        'metadata.name: Invalid value: "b": field is immutable']


# -- pods and templates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(pod(container(name="Web")),
                     ['spec.containers[0].name: Invalid value: "Web": a lowercase RFC 1123 label '
                      "must consist of lower case alphanumeric characters or '-', and must start "
                      "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
                      "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"],
                     id="container-name"),
        pytest.param(pod(container(), container()),
                     ['spec.containers[1].name: Duplicate value: "app"'], id="duplicate-names"),
        pytest.param(pod(container(), initContainers=[container()]),
                     ['spec.initContainers[0].name: Duplicate value: "app"'],
                     id="init-container-name-clash"),
        pytest.param({**pod(), "spec": {"containers": []}},
                     ["spec.containers: Required value"], id="no-containers"),
        pytest.param(pod(container(ports=[{"containerPort": 0}, {"containerPort": 8080,
                                                                  "protocol": "HTTP"}])),
                     ["spec.containers[0].ports[0].containerPort: Required value",
                      'spec.containers[0].ports[1].protocol: Unsupported value: "HTTP": '
                      'supported values: "SCTP", "TCP", "UDP"'],
                     id="ports"),
        pytest.param(pod(container(volumeMounts=[{"name": "data", "mountPath": "/data"}])),
                     ['spec.containers[0].volumeMounts[0].name: Not found: "data"'],
                     id="mount-of-missing-volume"),
        pytest.param(pod(volumes=[{"name": "a", "emptyDir": {}, "hostPath": {"path": "/x"}}]),
                     ["spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume "
                      "type"],
                     id="volume-with-two-sources"),
        pytest.param(pod(volumes=[{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]),
                     ['spec.volumes[1].name: Duplicate value: "a"'], id="duplicate-volumes"),
        pytest.param(pod(restartPolicy="Sometimes"),
                     ['spec.restartPolicy: Unsupported value: "Sometimes": supported values: '
                      '"Always", "OnFailure", "Never"'],
                     id="restart-policy"),
        pytest.param(pod(tolerations=[{"key": "gpu", "operator": "Maybe"}]),
                     ['spec.tolerations[0].operator: Unsupported value: "Maybe": supported '
                      'values: "Equal", "Exists"'],
                     id="toleration-operator"),
        pytest.param(pod(nodeSelector={"disk": "ssd!"}),
                     ['spec.nodeSelector: Invalid value: "ssd!": a valid label must be an empty '
                      "string or consist of alphanumeric characters, '-', '_' or '.', and must "
                      "start and end with an alphanumeric character (e.g. 'MyValue',  or "
                      "'my_value',  or '12345', regex used for validation is "
                      "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"],
                     id="node-selector-value"),
        pytest.param(pod(container(livenessProbe={"exec": {"command": ["true"]},
                                                  "successThreshold": 2})),
                     ["spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: "
                      "must be 1"],
                     id="liveness-success-threshold"),
        pytest.param(pod(container(readinessProbe={"periodSeconds": 5})),
                     ["spec.containers[0].readinessProbe: Required value: must specify a "
                      "handler type"],
                     id="probe-without-handler"),
        pytest.param(pod(container(resources={"requests": {"nvidia.com/gpu": "1"}})),
                     ["spec.containers[0].resources.limits: Required value: Limit must be set "
                      "for non overcommitable resources"],
                     id="gpu-without-limit"),
        pytest.param(pod(container(resources={"limits": {"cpu": "-1"}})),
                     ['spec.containers[0].resources.limits[cpu]: Invalid value: "-1": must be '
                      "greater than or equal to 0",
                      'spec.containers[0].resources.requests[cpu]: Invalid value: "-1": must be '
                      "greater than or equal to 0"],
                     id="negative-quantity"),
        pytest.param(pod(container(env=[{"name": "A", "valueFrom": {}}])),
                     ['spec.containers[0].env[0].valueFrom: Invalid value: "": must specify one '
                      "of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"],
                     id="env-value-from-empty"),
        pytest.param(pod(container(env=[{"name": "A", "valueFrom": {
            "fieldRef": {"fieldPath": "spec.nodeNam"}}}])),
                     ['spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Invalid value: '
                      '"spec.nodeNam": error converting fieldPath: field label not supported: '
                      "spec.nodeNam"],
                     id="env-field-path"),
    ],
)
def test_pod(obj: Obj, expected: list[str]) -> None:
    """Pod specs: containers, ports, volumes, probes, resources, scheduling fields."""
    assert create(obj)[1] == expected


def test_pod_update_may_only_change_images() -> None:
    """Changing anything but images, deadlines and tolerations is forbidden."""
    errs = update(pod(), lambda p: p["spec"]["containers"][0].update(command=["sh"]))
    assert len(errs) == 1
    assert errs[0].startswith(
        "spec: Forbidden: pod updates may not change fields other than "
        "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
        "`spec.tolerations` (only additions to existing tolerations),"
        "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
        "negative)\n")
    assert update(pod(), lambda p: p["spec"]["containers"][0].update(image="python:3.12")) == []


# -- workloads ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(deployment(selector=None),
                     ["spec.selector: Required value",
                      'spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` '
                      "does not match template `labels`"],
                     id="deployment-without-selector"),
        pytest.param(deployment(selector={}),
                     ["spec.selector: Invalid value: {}: empty selector is invalid for "
                      "deployment"],
                     id="empty-selector"),
        pytest.param(deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": 0, "maxUnavailable": 0}}),
                     ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 "
                      "when `maxSurge` is 0"],
                     id="rolling-update-zero-zero"),
        pytest.param(deployment(strategy={"type": "Recreate", "rollingUpdate": {}}),
                     ["spec.strategy.rollingUpdate: Forbidden: may not be specified when "
                      "strategy `type` is 'Recreate'"],
                     id="recreate-with-rolling-update"),
        pytest.param(deployment(template={"metadata": {"labels": {"app": "web"}}, "spec": {
            "restartPolicy": "Never", "containers": [container()]}}),
                     ['spec.template.spec.restartPolicy: Unsupported value: "Never": supported '
                      'values: "Always"'],
                     id="deployment-restart-never"),
        pytest.param({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                      "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                               "podManagementPolicy": "Random",
                               "template": {"metadata": {"labels": {"app": "db"}},
                                            "spec": {"containers": [container()]}}}},
                     ['spec.podManagementPolicy: Invalid value: "Random": must be '
                      "'OrderedReady' or 'Parallel'"],
                     id="statefulset-pod-management"),
        pytest.param({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                      "spec": {"selector": {"matchLabels": {"app": "agent"}},
                               "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {
                                   "maxUnavailable": 1, "maxSurge": 1}},
                               "template": {"metadata": {"labels": {"app": "agent"}},
                                            "spec": {"containers": [container()]}}}},
                     ["spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be "
                      "set when maxUnavailable is non-zero"],
                     id="daemonset-surge-and-unavailable"),
        pytest.param({**job(restartPolicy="Never"), "spec": {
            "parallelism": -1, "template": {"spec": {"restartPolicy": "Never",
                                                     "containers": [container()]}}}},
                     ["spec.parallelism: Invalid value: -1: must be greater than or equal to 0"],
                     id="job-negative-parallelism"),
        pytest.param(cron_job("@hourly", concurrencyPolicy="Sometimes"),
                     ['spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: '
                      '"Allow", "Forbid", "Replace"'],
                     id="cronjob-concurrency-policy"),
        pytest.param(cron_job("0 3 * * *", timeZone="Mars/Olympus"),
                     ['spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone '
                      "Mars/Olympus"],
                     id="cronjob-time-zone"),
        pytest.param(cron_job("0 3 * * *", timeZone="Europe/Paris"), [], id="cronjob-valid-tz"),
    ],
)
def test_workloads(obj: Obj, expected: list[str]) -> None:
    """Deployments, StatefulSets, DaemonSets, Jobs and CronJobs."""
    assert create(obj)[1] == expected


def test_deployment_selector_is_immutable() -> None:
    """apps/v1 selectors cannot change after create."""
    def change(d: Obj) -> None:
        d["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
        d["spec"]["template"]["metadata"]["labels"]["tier"] = "x"

    assert update(deployment(), change) == [
        'spec.selector: Invalid value: {"matchLabels":{"app":"web","tier":"x"}}: '
        "field is immutable"]


def test_job_template_is_immutable() -> None:
    """A running Job's pod template cannot change."""
    errs = update(job(restartPolicy="Never"),
                  lambda j: j["spec"]["template"]["spec"]["containers"][0].update(image="x:1"))
    assert len(errs) == 1 and errs[0].startswith("spec.template: Invalid value: ")
    assert errs[0].endswith(": field is immutable")


# -- services and networking ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(service(ports=[{"port": 80}, {"port": 81}]),
                     ["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"],
                     id="names-required-with-several-ports"),
        pytest.param(service(ports=[{"port": 80, "protocol": "HTTP"}]),
                     ['spec.ports[0].protocol: Unsupported value: "HTTP": supported values: '
                      '"SCTP", "TCP", "UDP"'],
                     id="port-protocol"),
        pytest.param(service(type="NodePort", ports=[{"port": 80, "nodePort": 80}]),
                     ["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the "
                      "valid range. The range of valid ports is 30000-32767"],
                     id="node-port-range"),
        pytest.param(service(type="ExternalName", ports=[]),
                     ["spec.externalName: Required value"], id="external-name-required"),
        pytest.param(service(clusterIP="10.0.0.300"),
                     ['spec.clusterIPs[0]: Invalid value: "10.0.0.300": must be a valid IP '
                      "address, (e.g. 10.9.8.7 or 2001:db8::ffff)"],
                     id="bad-cluster-ip"),
        pytest.param(service(clusterIP="None", ports=[]), [], id="headless-without-ports"),
        pytest.param(service(sessionAffinity="Sticky"),
                     ['spec.sessionAffinity: Unsupported value: "Sticky": supported values: '
                      '"ClientIP", "None"'],
                     id="session-affinity"),
        pytest.param({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                      "metadata": {"name": "ing"}, "spec": {"rules": [{"http": {"paths": [
                          {"path": "api", "pathType": "Prefix",
                           "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                          {"path": "/x", "backend": {"service": {"name": "web",
                                                                  "port": {"number": 80}}}}]}}]}},
                     ['spec.rules[0].http.paths[0].path: Invalid value: "api": must be an '
                      "absolute path",
                      "spec.rules[0].http.paths[1].pathType: Required value: pathType must be "
                      "specified"],
                     id="ingress-paths"),
        pytest.param({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                      "metadata": {"name": "ing"}, "spec": {}},
                     ["spec: Invalid value: []: either `defaultBackend` or `rules` must be "
                      "specified"],
                     id="ingress-empty"),
        pytest.param({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": "np"}, "spec": {"podSelector": {}, "ingress": [
                          {"from": [{}]}]}},
                     ["spec.ingress[0].from[0]: Required value: must specify a peer"],
                     id="network-policy-empty-peer"),
    ],
)
def test_services_and_networking(obj: Obj, expected: list[str]) -> None:
    """Services, Ingresses and NetworkPolicies."""
    assert create(obj)[1] == expected


def test_cluster_ip_may_not_change() -> None:
    """Once set, a Service's cluster IP is fixed."""
    errs = update(service(clusterIP="10.96.0.10"),
                  lambda s: s["spec"].update(clusterIP="10.96.0.11", clusterIPs=["10.96.0.11"]))
    assert errs == ['spec.clusterIPs[0]: Invalid value: ["10.96.0.11"]: may not change once set']


def test_service_update_keeps_allocated_values() -> None:
    """An apply that omits clusterIP and nodePort keeps the allocated ones."""
    old = service(type="NodePort", clusterIP="10.96.0.10", ports=[{"port": 80,
                                                                   "nodePort": 30080}])

    def drop(s: Obj) -> None:
        s["spec"].pop("clusterIP")
        s["spec"].pop("clusterIPs")
        s["spec"]["ports"][0].pop("nodePort")

    assert update(old, drop) == []


def _set(path: str, value: Any) -> Any:
    """A change that sets the dotted ``path`` of an object to ``value``."""
    def change(obj: Obj) -> None:
        *parents, last = path.split(".")
        for part in parents:
            obj = obj.setdefault(part, {})
        obj[last] = value
    return change


@pytest.mark.parametrize(
    ("old", "change", "expected"),
    [
        pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                      "immutable": True, "data": {"a": "1"}}, _set("data.a", "2"),
                     ["data: Forbidden: field is immutable when `immutable` is set"],
                     id="immutable-configmap"),
        pytest.param({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
                     _set("type", "kubernetes.io/basic-auth"),
                     ["data[username]: Required value", "data[password]: Required value",
                      'type: Invalid value: "kubernetes.io/basic-auth": field is immutable'],
                     id="secret-type"),
        pytest.param({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                      "metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                          "resources": {"requests": {
                                                              "storage": "1Gi"}}}},
                     _set("spec.accessModes", ["ReadWriteMany"]),
                     ["spec: Forbidden: spec is immutable after creation except "
                      "resources.requests and volumeAttributesClassName for bound claims"],
                     id="pvc-spec"),
        pytest.param({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                      "metadata": {"name": "p"}, "value": 10}, _set("value", 20),
                     ["value: Forbidden: may not be changed in an update."], id="priority-value"),
        pytest.param({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                      "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                               "template": {"metadata": {"labels": {"app": "db"}},
                                            "spec": {"containers": [container()]}}}},
                     _set("spec.serviceName", "other"),
                     ["spec: Forbidden: updates to statefulset spec for fields other than "
                      "'replicas', 'ordinals', 'template', 'updateStrategy', "
                      "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are "
                      "forbidden"],
                     id="statefulset-service-name"),
        pytest.param({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                      "metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "r"}},
                     _set("roleRef.name", "s"),
                     ['roleRef: Invalid value: {"apiGroup":"rbac.authorization.k8s.io",'
                      '"kind":"Role","name":"s"}: cannot change roleRef'],
                     id="role-ref"),
        pytest.param(crd(), _set("spec.names.plural", "gizmos"),
                     ['metadata.name: Invalid value: "widgets.example.com": must be '
                      'spec.names.plural+"."+spec.group',
                      'spec.names.plural: Invalid value: "gizmos": field is immutable'],
                     id="crd-plural"),
        pytest.param(service(type="NodePort", clusterIP="10.96.0.10",
                             ports=[{"port": 80, "nodePort": 30080}]),
                     lambda s: s["spec"].update(type="ExternalName",
                                                externalName="db.example.com"),
                     [], id="service-to-external-name"),
    ],
)
def test_updates(old: Obj, change: Any, expected: list[str]) -> None:
    """Immutable fields and allowed transitions on update."""
    assert update(old, change) == expected


# -- the other groups ------------------------------------------------------------------------------


def _other(api: str, kind: str, body: Obj, name: str = "x") -> Obj:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, **body}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(_other("v1", "ConfigMap", {"data": {"bad key": "v"}}),
                     ['data[bad key]: Invalid value: "bad key": a valid config key must consist '
                      "of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                      "'KEY_NAME',  or 'key-name', regex used for validation is "
                      "'[-._a-zA-Z0-9]+')"],
                     id="configmap-key"),
        pytest.param(_other("v1", "ConfigMap", {"data": {"big": "x" * (1024 * 1024 + 1)}}),
                     ["Too long: may not be more than 1048576 bytes"], id="configmap-too-large"),
        pytest.param(_other("v1", "Secret", {"type": "kubernetes.io/tls", "data": {}}),
                     ["data[tls.crt]: Required value", "data[tls.key]: Required value"],
                     id="tls-secret-keys"),
        pytest.param(_other("v1", "PersistentVolumeClaim", {"spec": {"resources": {}}}),
                     ["spec.accessModes: Required value: at least 1 access mode is required",
                      "spec.resources[storage]: Required value"],
                     id="pvc-required"),
        pytest.param(_other("v1", "ResourceQuota", {"spec": {"hard": {"pods": "1.5",
                                                                      "gpus": "1"}}}),
                     ['spec.hard[pods]: Invalid value: "1500m": must be an integer',
                      'spec.hard[gpus]: Invalid value: "gpus": must be a standard resource type '
                      "or fully qualified",
                      'spec.hard[gpus]: Invalid value: "gpus": must be a standard resource for '
                      "quota"],
                     id="quota-names-and-values"),
        pytest.param(_other("autoscaling/v2", "HorizontalPodAutoscaler", {"spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 5, "maxReplicas": 2}}),
                     ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to "
                      "`minReplicas`"],
                     id="hpa-max-below-min"),
        pytest.param(_other("autoscaling/v2", "HorizontalPodAutoscaler", {"spec": {
            "scaleTargetRef": {"kind": "Deployment"}, "minReplicas": 0, "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 0}}}]}}),
                     ["spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
                      "spec.scaleTargetRef.name: Required value",
                      "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: "
                      "must be greater than 0",
                      "spec.metrics: Forbidden: must specify at least one Object or External "
                      "metric to support scaling to zero replicas"],
                     id="hpa-target-and-utilization"),
        pytest.param(_other("policy/v1", "PodDisruptionBudget", {"spec": {
            "minAvailable": 1, "maxUnavailable": 1}}),
                     ['spec: Invalid value: {"maxUnavailable":1,"minAvailable":1}: minAvailable '
                      "and maxUnavailable cannot be both set"],
                     id="pdb-both-set"),
        pytest.param(_other("scheduling.k8s.io/v1", "PriorityClass", {"value": 2_000_000_000}),
                     ["value: Forbidden: maximum allowed value of a user defined priority is "
                      "1000000000"],
                     id="priority-too-high"),
        pytest.param(_other("scheduling.k8s.io/v1", "PriorityClass",
                            {"value": 1, "preemptionPolicy": "Sometimes"}),
                     ['preemptionPolicy: Unsupported value: "Sometimes": supported values: '
                      '"PreemptLowerPriority", "Never"'],
                     id="priority-preemption-policy"),
        pytest.param(_other("rbac.authorization.k8s.io/v1", "ClusterRole", {"rules": [
            {"apiGroups": [""], "resources": ["pods"]}]}),
                     ["rules[0].verbs: Required value: verbs must contain at least one value"],
                     id="rbac-verbs-required"),
        pytest.param(_other("rbac.authorization.k8s.io/v1", "RoleBinding", {
            "roleRef": {"kind": "Secret", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}),
                     ['roleRef.kind: Unsupported value: "Secret": supported values: "Role", '
                      '"ClusterRole"'],
                     id="rbac-role-ref-kind"),
        pytest.param(_other("storage.k8s.io/v1", "StorageClass", {}),
                     ["provisioner: Required value"], id="storage-class-provisioner"),
        pytest.param(_other("coordination.k8s.io/v1", "Lease", {"spec": {
            "leaseDurationSeconds": 0}}),
                     ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"],
                     id="lease-duration"),
        pytest.param(_other("discovery.k8s.io/v1", "EndpointSlice", {
            "addressType": "IPv5", "endpoints": [{"addresses": ["10.0.0.1"]}]}),
                     ['addressType: Unsupported value: "IPv5": supported values: "FQDN", "IPv4", '
                      '"IPv6"'],
                     id="endpointslice-address-type"),
        pytest.param(_other("discovery.k8s.io/v1", "EndpointSlice", {
            "addressType": "IPv4", "endpoints": [{"addresses": ["fe80::1"]}]}),
                     ['endpoints[0].addresses[0]: Invalid value: "fe80::1": must be a valid IPv4 '
                      "address"],
                     id="endpointslice-address"),
    ],
)
def test_other_groups(obj: Obj, expected: list[str]) -> None:
    """Config, storage, autoscaling, policy, scheduling, RBAC, coordination, discovery."""
    assert create(obj)[1] == expected


# -- CustomResourceDefinitions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(crd(group="example", name="widgets.example"),
                     ['spec.group: Invalid value: "example": should be a domain with at least '
                      "one dot"],
                     id="group-without-dot"),
        pytest.param(crd(scope="Global"),
                     ['spec.scope: Unsupported value: "Global": supported values: "Cluster", '
                      '"Namespaced"'],
                     id="scope"),
        pytest.param(crd(versions=[]),
                     ["spec.versions: Required value: must have at least one version",
                      "status.storedVersions: Invalid value: []: must have at least one stored "
                      "version"],
                     id="no-versions"),
        pytest.param(crd(versions=[{"name": "v1", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"properties": {"spec": {"properties": {}}}}}}]),
                     ["spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required "
                      "value: must not be empty for specified object fields",
                      "spec.versions[0].schema.openAPIV3Schema.type: Required value: must not "
                      "be empty at the root"],
                     id="not-structural"),
        pytest.param(crd(versions=[{"name": "v1", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "port": {"x-kubernetes-int-or-string": True}}}}}]),
                     [], id="preserve-unknown-and-int-or-string"),
        pytest.param(crd(versions=[{"name": "v1", "served": True, "storage": False, "schema": {
            "openAPIV3Schema": {"type": "object"}}}]),
                     ['spec.versions: Invalid value: [{"name":"v1","schema":{"openAPIV3Schema":'
                      '{"type":"object"}},"served":true,"storage":false}]: must have exactly one '
                      "version marked as storage version",
                      "status.storedVersions: Invalid value: []: must have at least one stored "
                      "version"],
                     id="no-storage-version"),
        pytest.param(crd(names={"plural": "widgets", "kind": "Widget", "listKind": "Widget"}),
                     ['spec.names.listKind: Invalid value: "Widget": kind and listKind may not be '
                      "the same"],
                     id="kind-equals-list-kind"),
    ],
)
def test_custom_resource_definitions(obj: Obj, expected: list[str]) -> None:
    """CRD names, versions and structural schemas."""
    assert create(obj)[1] == expected


# -- cron schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "minutes", "weekdays"),
    [
        pytest.param("*/15 * * * *", [0, 15, 30, 45], list(range(7)), id="step"),
        pytest.param("5,10 9-17 * * mon-fri", [5, 10], [1, 2, 3, 4, 5], id="lists-and-names"),
        pytest.param("@hourly", [0], list(range(7)), id="descriptor"),
        pytest.param("30 2 * * 0", [30], [0], id="sunday"),
    ],
)
def test_cron_parses(schedule: str, minutes: list[int], weekdays: list[int]) -> None:
    """Standard 5-field schedules and descriptors parse to the expected sets."""
    parsed = cron.parse(schedule)
    assert sorted(parsed.minute) == minutes
    assert sorted(parsed.day_of_week) == weekdays


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        pytest.param("* * * * 7", "end of range (7) above maximum (6): 7", id="weekday-7"),
        pytest.param("a * * * *", 'failed to parse int from a: strconv.Atoi: parsing "a": '
                                  "invalid syntax", id="not-a-number"),
        pytest.param("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1",
                     id="reversed-range"),
        pytest.param("*/0 * * * *", "step of range should be a positive number: */0",
                     id="zero-step"),
        pytest.param("@sometimes", "unrecognized descriptor: @sometimes", id="descriptor"),
        pytest.param("0 0 0 * *", "beginning of range (0) below minimum (1): 0", id="day-zero"),
    ],
)
def test_cron_rejects(schedule: str, message: str) -> None:
    """Malformed schedules fail with robfig/cron's messages."""
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(
            ")", r"\)").replace("*", r"\*").replace("[", r"\[")):
        cron.parse(schedule)


# -- scenarios ----------------------------------------------------------------------------------


def _scenario_docs() -> list[Any]:
    docs = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and not doc["apiVersion"].startswith("kubeflow.org"):
                name = f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"
                docs.append(pytest.param(doc, id=name))
    return docs


@pytest.mark.parametrize("doc", _scenario_docs())
def test_scenarios_are_valid(doc: Obj) -> None:
    """Every manifest users write on day one passes defaulting and validation."""
    obj, errs = create(doc)
    assert errs == []
    assert create(obj)[1] == []  # defaulted objects stay valid when defaulted again


def test_subdomain_message_helper() -> None:
    """The DNS-1123 subdomain message is upstream's, word for word."""
    assert is_dns1123_subdomain("Bad") == [SUBDOMAIN_MSG]
