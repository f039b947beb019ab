"""The metric APIs the autoscaler reads, served in-process: ``custom.metrics.k8s.io``
(request rates per pod and per Service) and ``external.metrics.k8s.io``, their paths,
errors and discovery, and the autoscaler's own metrics client against them."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from tests.unit.conftest import transport

from kybernetes.api.selectors import parse_label_selector
from kybernetes.apiserver.app import APIServer
from kybernetes.client import Client
from kybernetes.controllers.podautoscaler import MetricsClient
from kybernetes.proxy.traffic import Traffic, custom_request_rates, pod_lister, request_rates

Obj = dict[str, Any]
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
CUSTOM = "/apis/custom.metrics.k8s.io/v1beta2"
EXTERNAL = "/apis/external.metrics.k8s.io/v1beta1"


class _Services:
    def __init__(self) -> None:
        self.items: list[Obj] = [
            {"metadata": {"namespace": "default", "name": "web", "labels": {"tier": "front"}},
             "spec": {"selector": {"app": "web"}}},
            {"metadata": {"namespace": "default", "name": "db"},
             "spec": {"selector": {"app": "db"}}}]

    def list(self) -> list[Obj]:
        return self.items


def _pod(name: str, app: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}


@pytest.fixture
async def http(api: APIServer) -> Any:
    async with httpx.AsyncClient(transport=transport(api), base_url="https://kyb",
                                 headers={"Authorization": "Bearer t"}) as c:
        yield c


@pytest.fixture
async def traffic(api: APIServer, client: Client) -> Traffic:
    """Providers over three pods (web-1 served 10 requests in the last 2 s, web-2 none)
    and two Services (web: 3 requests in the last 2 s)."""
    for name, app in (("web-1", "web"), ("web-2", "web"), ("db-0", "db")):
        await client.create("v1", "pods", _pod(name, app), namespace="default")
    t = Traffic()
    now = time.time()
    t.add_pod_requests("default", "web-1", 10, now=now - 2)
    t.add_connections("default", "web", 3, now=now - 2)
    api.custom_metrics = custom_request_rates(_Services(), t, pod_lister(client),
                                              clock=lambda: now)
    api.external_metrics = request_rates(_Services(), t)
    return t


def _values(doc: Obj) -> list[tuple[str, str, str]]:
    return [(i["describedObject"]["kind"], i["describedObject"]["name"], i["value"])
            for i in doc["items"]]


async def test_without_providers_nothing_is_listed_or_served(http: httpx.AsyncClient) -> None:
    groups = [g["name"] for g in (await http.get("/apis")).json()["groups"]]
    assert "metrics.k8s.io" in groups
    assert "custom.metrics.k8s.io" not in groups and "external.metrics.k8s.io" not in groups
    for path in (CUSTOM, EXTERNAL, "/apis/custom.metrics.k8s.io",
                 f"{CUSTOM}/namespaces/default/pods/*/requests_per_second",
                 f"{EXTERNAL}/namespaces/default/requests_per_second"):
        r = await http.get(path)
        assert r.status_code == 404, path
        assert r.json()["kind"] == "Status"


async def test_custom_metrics_paths(http: httpx.AsyncClient, traffic: Traffic) -> None:
    r = await http.get(f"{CUSTOM}/namespaces/default/pods/*/requests_per_second",
                       params={"labelSelector": "app=web"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["kind"] == "MetricValueList"
    assert doc["apiVersion"] == "custom.metrics.k8s.io/v1beta2"
    assert _values(doc) == [("Pod", "web-1", "5"), ("Pod", "web-2", "0")]
    item = doc["items"][0]
    assert item["describedObject"] == {"kind": "Pod", "namespace": "default", "name": "web-1",
                                       "apiVersion": "v1"}
    assert item["metric"] == {"name": "requests_per_second"} and item["windowSeconds"] == 30

    every = await http.get(f"{CUSTOM}/namespaces/default/pods/*/requests-per-second")
    assert [v[1] for v in _values(every.json())] == ["db-0", "web-1", "web-2"]

    one = await http.get(f"{CUSTOM}/namespaces/default/services/web/requests_per_second",
                         params={"metricLabelSelector": "!code"})
    assert _values(one.json()) == [("Service", "web", "1500m")]
    assert one.json()["items"][0]["metric"] == {
        "name": "requests_per_second",
        "selector": {"matchExpressions": [{"key": "code", "operator": "DoesNotExist"}]}}
    by_label = await http.get(f"{CUSTOM}/namespaces/default/services/*/requests_per_second",
                              params={"labelSelector": "tier=front"})
    assert _values(by_label.json()) == [("Service", "web", "1500m")]
    pod = await http.get(f"{CUSTOM}/namespaces/default/pods/web-2/requests_per_second")
    assert _values(pod.json()) == [("Pod", "web-2", "0")]
    other_version = await http.get(
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/pods/*/requests_per_second")
    assert other_version.status_code == 404


@pytest.mark.parametrize(("method", "path", "params", "code", "message"), [
    ("GET", "/namespaces/default/pods/*/queue_depth", {}, 404,
     "the server could not find the metric queue_depth for pods"),
    ("GET", "/namespaces/default/deployments.apps/web/requests_per_second", {}, 404,
     "the server could not find the metric requests_per_second for deployments.apps"),
    ("GET", "/namespaces/default/pods/gone/requests_per_second", {}, 404,
     "the server could not find the metric requests_per_second for pods gone"),
    ("GET", "/namespaces/default/services/web/requests_per_second",
     {"metricLabelSelector": "code=200"}, 404,
     "the server could not find the metric requests_per_second for services web"),
    ("GET", "/nodes/n1/requests_per_second", {}, 404,
     "the server could not find the metric requests_per_second for nodes"),
    ("GET", "/namespaces/default/metrics/requests_per_second", {}, 404,
     "the server could not find the metric requests_per_second for namespaces"),
    ("GET", "/namespaces/default/pods", {}, 404,
     "the server could not find the requested resource"),
    ("GET", "/namespaces/default/pods/*/requests_per_second", {"labelSelector": "a in"}, 400,
     ""),
    ("POST", "/namespaces/default/pods/*/requests_per_second", {}, 405,
     "the server does not allow this method on the requested resource"),
])
async def test_custom_metrics_errors(http: httpx.AsyncClient, traffic: Traffic, method: str,
                                     path: str, params: dict[str, str], code: int,
                                     message: str) -> None:
    r = await http.request(method, CUSTOM + path, params=params)
    assert r.status_code == code
    status = r.json()
    assert status["kind"] == "Status" and status["code"] == code
    if message:
        assert status["message"].startswith(message)


async def test_discovery_lists_both_metric_apis(http: httpx.AsyncClient,
                                                traffic: Traffic) -> None:
    groups = {g["name"]: g for g in (await http.get("/apis")).json()["groups"]}
    assert groups["custom.metrics.k8s.io"]["preferredVersion"] == {
        "groupVersion": "custom.metrics.k8s.io/v1beta2", "version": "v1beta2"}
    assert [v["version"] for v in groups["external.metrics.k8s.io"]["versions"]] == ["v1beta1"]
    group = (await http.get("/apis/custom.metrics.k8s.io")).json()
    assert group["kind"] == "APIGroup" and group["name"] == "custom.metrics.k8s.io"

    custom = (await http.get(CUSTOM)).json()
    assert custom["kind"] == "APIResourceList"
    assert custom["groupVersion"] == "custom.metrics.k8s.io/v1beta2"
    assert custom["resources"] == [
        {"name": f"{r}/requests_per_second", "singularName": "", "namespaced": True,
         "kind": "MetricValueList", "verbs": ["get"]} for r in ("pods", "services")]
    external = (await http.get(EXTERNAL)).json()
    assert external["resources"] == [
        {"name": "requests_per_second", "singularName": "", "namespaced": True,
         "kind": "ExternalMetricValueList", "verbs": ["get"]}]

    agg = (await http.get("/apis", headers={"Accept": AGGREGATED})).json()
    by_name = {g["metadata"]["name"]: g for g in agg["items"]}
    [version] = by_name["custom.metrics.k8s.io"]["versions"]
    assert version["version"] == "v1beta2" and version["freshness"] == "Current"
    # as kube-aggregator shows an adapter's list: the metric a subresource of a parent
    # without a kind or verbs (which clients leave out)
    assert version["resources"][0] == {
        "resource": "pods", "singularResource": "", "scope": "Namespaced", "verbs": [],
        "responseKind": {"group": "", "version": "", "kind": ""},
        "subresources": [{"subresource": "requests_per_second", "verbs": ["get"],
                          "responseKind": {"group": "", "version": "",
                                           "kind": "MetricValueList"}}]}
    [ext] = by_name["external.metrics.k8s.io"]["versions"][0]["resources"]
    assert ext["resource"] == "requests_per_second" and ext["verbs"] == ["get"]
    assert ext["responseKind"]["kind"] == "ExternalMetricValueList"
    core = (await http.get("/api", headers={"Accept": AGGREGATED})).json()
    assert [g["metadata"] for g in core["items"]] == [{}]


async def test_the_autoscaler_reads_them(client: Client, traffic: Traffic) -> None:
    metrics = MetricsClient(client)
    pods = await metrics.pods("requests_per_second", "default", parse_label_selector("app=web"),
                              "")
    assert {name: m.value for name, m in pods.items()} == {"web-1": 5000, "web-2": 0}
    assert pods["web-1"].window == 30
    assert await metrics.object("requests_per_second", "default", "services", "web", "") == 1500
    assert await metrics.external("requests_per_second", "default", "app=web") == [1500]


async def test_external_metrics_errors(http: httpx.AsyncClient, traffic: Traffic) -> None:
    r = await http.get(f"{EXTERNAL}/namespaces/default/queue_depth")
    assert r.status_code == 404
    assert r.json()["message"] == \
        "the server could not find the metric queue_depth for namespace default"
    assert (await http.delete(f"{EXTERNAL}/namespaces/default/requests_per_second")
            ).status_code == 405
