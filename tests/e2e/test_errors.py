"""Bad input gets the error a Kubernetes user would recognise, and changes nothing."""

from __future__ import annotations

import orjson
import pytest

from tests.e2e.cluster import Cluster

pytestmark = pytest.mark.slow


def _revision(cluster: Cluster, namespace: str) -> list[tuple[str, str, str]]:
    """What the namespace holds: (kind, name, resourceVersion) of every object we write."""
    out = []
    with cluster.http() as c:
        for path in ("/api/v1/namespaces/{ns}/configmaps", "/apis/apps/v1/namespaces/{ns}/deployments"):
            for item in c.get(path.format(ns=namespace)).json()["items"]:
                md = item["metadata"]
                out.append((item.get("kind", ""), md["name"], md["resourceVersion"]))
    return sorted(out)


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx
{extra}"""


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [bad\n",
                     "error converting YAML to JSON", id="malformed-yaml"),
        pytest.param(DEPLOYMENT.format(name="web", replicas=1, extra="        foo: bar\n"),
                     'strict decoding error: unknown field "spec.template.spec.containers[0].foo"',
                     id="unknown-field-strict"),
        pytest.param(DEPLOYMENT.format(name="web", replicas=-1, extra=""),
                     'The Deployment "web" is invalid: spec.replicas: Invalid value: -1: must be '
                     "greater than or equal to 0", id="negative-replicas"),
        pytest.param(DEPLOYMENT.format(name="a" * 254, replicas=1, extra=""),
                     "metadata.name: Invalid value: \"" + "a" * 254 + "\": must be no more than "
                     "253 characters", id="name-too-long"),
        pytest.param(DEPLOYMENT.format(name="web", replicas=1, extra="").replace(
            "apps/v1", "apps/v1beta1"),
                     'no matches for kind "Deployment" in version "apps/v1beta1"',
                     id="wrong-apiversion"),
    ],
)
def test_bad_manifests(cluster: Cluster, namespace: str, manifest: str, expected: str) -> None:
    """Each bad manifest fails with the familiar message and writes nothing."""
    before = _revision(cluster, namespace)
    proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert _revision(cluster, namespace) == before
    assert cluster.kubectl_json("get", "deploy", "-n", namespace)["items"] == []


def test_unknown_field_warns_by_default(cluster: Cluster, namespace: str) -> None:
    """fieldValidation=Warn stores the object without the field and warns."""
    with cluster.http() as c:
        r = c.post(f"/api/v1/namespaces/{namespace}/configmaps",
                   params={"fieldValidation": "Warn"},
                   json={"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "warned"}, "data": {"a": "1"}, "bogus": 1})
        assert r.status_code == 201
        assert r.headers["warning"] == '299 - "unknown field \\"bogus\\""'
        assert "bogus" not in r.json()
        r = c.post(f"/api/v1/namespaces/{namespace}/configmaps",
                   params={"fieldValidation": "Ignore"},
                   json={"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "ignored"}, "bogus": 1})
        assert r.status_code == 201 and "warning" not in r.headers


def test_conflicting_update(cluster: Cluster, namespace: str) -> None:
    """An update with a stale resourceVersion is a 409 Conflict and changes nothing."""
    cluster.kubectl("create", "configmap", "c", "--from-literal=v=1", "-n", namespace)
    stale = cluster.kubectl_json("get", "cm", "c", "-n", namespace)
    cluster.kubectl("patch", "cm", "c", "-n", namespace, "--type=merge", "-p",
                    '{"data":{"v":"2"}}')
    stale["data"]["v"] = "3"
    proc = cluster.kubectl("replace", "-n", namespace, "-f", "-",
                           input=orjson.dumps(stale).decode(), check=False)
    assert proc.returncode != 0
    assert 'Operation cannot be fulfilled on configmaps "c": the object has been modified; ' \
           "please apply your changes to the latest version and try again" in proc.stderr
    assert cluster.kubectl_json("get", "cm", "c", "-n", namespace)["data"]["v"] == "2"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "code", "reason"),
    [
        pytest.param("POST", "/api/v1/namespaces/{ns}/configmaps", b"{not json",
                     {"Content-Type": "application/json"}, 400, "BadRequest", id="malformed"),
        pytest.param("GET", "/api/v1/namespaces/{ns}/foos", b"", {}, 404, "NotFound",
                     id="unknown-resource"),
        pytest.param("GET", "/api/v1/namespaces/{ns}/configmaps/missing", b"", {}, 404,
                     "NotFound", id="missing-object"),
        pytest.param("POST", "/api/v1/namespaces/{ns}/configmaps",
                     b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"kube-root-ca.crt"}}',
                     {"Content-Type": "application/json"}, 409, "AlreadyExists", id="exists"),
        pytest.param("POST", "/api/v1/namespaces/{ns}/configmaps",
                     b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},'
                     b'"data":{"x":"' + b"x" * (4 * 1024 * 1024) + b'"}}',
                     {"Content-Type": "application/json"}, 413, "RequestEntityTooLarge",
                     id="too-large"),
        pytest.param("POST", "/api/v1/namespaces/{ns}/configmaps", b"<xml/>",
                     {"Content-Type": "application/xml"}, 415, "UnsupportedMediaType",
                     id="media-type"),
        pytest.param("POST", "/api/v1/namespaces/{ns}/configmaps",
                     b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}',
                     {"Content-Type": "application/json"}, 422, "Invalid", id="invalid"),
    ],
)
def test_status_errors(cluster: Cluster, namespace: str, method: str, path: str, body: bytes,
                       headers: dict[str, str], code: int, reason: str) -> None:
    """Every failure is a metav1.Status with the right code and reason; nothing is stored."""
    before = _revision(cluster, namespace)
    with cluster.http() as c:
        r = c.request(method, path.format(ns=namespace), content=body or None, headers=headers)
    assert r.status_code == code
    status = r.json()
    assert status["kind"] == "Status" and status["status"] == "Failure"
    assert status["reason"] == reason and status["code"] == code
    assert _revision(cluster, namespace) == before
