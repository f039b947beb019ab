"""Request counting for /metrics and the request rates served as external and custom
metrics (per Service and per pod)."""

from __future__ import annotations

import time
from typing import Any

from kybernetes.api.selectors import LabelSelector, parse_label_selector
from kybernetes.apiserver.custommetrics import CustomMetrics
from kybernetes.apiserver.externalmetrics import ExternalMetrics
from kybernetes.proxy.traffic import (
    POD_FORGET_AFTER,
    RATE_WINDOW,
    Traffic,
    custom_request_rates,
    rate_quantity,
    request_rates,
)


def test_rate_over_the_window_and_since_the_first_request() -> None:
    t = Traffic()
    for second in range(1000, 1010):  # 10 s at 20 requests per second
        for _ in range(20):
            t.record("default", "web", 200, 0.01, now=second + 0.5)
    assert t.rate("default", "web", now=1010.2) == 20.0  # 10 s of history: 200 / 10
    assert t.rate("default", "web", now=1000 + RATE_WINDOW) == 200 / RATE_WINDOW
    assert t.rate("default", "web", now=1010 + 2 * RATE_WINDOW) == 0.0
    t.add_connections("default", "web", 60, now=1100.0)
    assert t.rate("default", "web", now=1101.0) == 60 / RATE_WINDOW
    assert t.rate("default", "other", now=1101.0) == 0.0


def test_metrics_families() -> None:
    t = Traffic()
    t.record("ns", "web", 200, 0.004, ingress="ns/ing")
    t.record("ns", "web", 503, 0.2, ingress="ns/ing")
    t.add_connections("ns", "web", 5)
    families = {f.name: f for f in t.collect()}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("kybernetes_service_requests_total", (
        ("code", "503"), ("ingress", "ns/ing"), ("namespace", "ns"), ("service", "web"),
        ("via", "ingress")))] == 1
    assert samples[("kybernetes_service_requests_total", (
        ("code", ""), ("ingress", ""), ("namespace", "ns"), ("service", "web"),
        ("via", "service")))] == 5
    assert samples[("kybernetes_service_request_errors_total", (
        ("ingress", "ns/ing"), ("namespace", "ns"), ("service", "web"), ("via", "ingress")))] == 1
    assert samples[("kybernetes_service_request_duration_seconds_bucket", (
        ("ingress", "ns/ing"), ("le", "0.005"), ("namespace", "ns"), ("service", "web")))] == 1


class _Services:
    def list(self) -> list[dict[str, object]]:
        return [{"metadata": {"namespace": "default", "name": "ml-model"},
                 "spec": {"selector": {"app": "ml-model"}}},
                {"metadata": {"namespace": "default", "name": "db", "labels": {"tier": "db"}},
                 "spec": {"selector": {"app": "postgres"}}},
                {"metadata": {"namespace": "other", "name": "ml-model"},
                 "spec": {"selector": {"app": "ml-model"}}}]


async def test_requests_per_second_by_selector() -> None:
    t = Traffic()
    provide: ExternalMetrics = request_rates(_Services(), t)
    items = await provide("default", "requests_per_second", parse_label_selector("app=ml-model"))
    assert items is not None and [i["metricLabels"] for i in items] == [{"app": "ml-model"}]
    assert items[0]["value"] == "0m"
    assert [i["metricLabels"] for i in await provide(  # type: ignore[union-attr]
        "default", "requests_per_second", parse_label_selector("tier=db"))] == [
        {"app": "postgres"}]
    assert await provide("default", "queue_depth", parse_label_selector("")) is None


def test_pod_rates_over_the_window_and_idle_pods_forgotten() -> None:
    t = Traffic()
    for second in range(1000, 1010):  # web-1 answers 20 requests a second, via the ingress
        for _ in range(20):
            t.record("default", "web", 200, 0.01, now=second + 0.5, pod="web-1")
    t.add_pod_requests("default", "web-2", 30, now=1005.0)  # kernel-path connections
    assert t.pod_rate("default", "web-1", now=1010.2) == 20.0
    assert t.pod_rate("default", "web-2", now=1010.2) == 30 / 5
    assert t.rate("default", "web", now=1010.2) == 20.0  # the Service's rate is unchanged
    assert t.pod_rate("other", "web-1", now=1010.2) == 0.0
    assert t.pod_rate("default", "web-1", now=1010 + RATE_WINDOW) == 0.0
    # an hour without requests: the pod is forgotten (by the next count of any pod)
    t.add_pod_requests("default", "web-3", 1, now=1010.0 + POD_FORGET_AFTER)
    assert ("default", "web-1") not in t._pods.seconds
    assert ("default", "web-1") not in t._pods.first
    assert ("default", "web-3") in t._pods.seconds


def test_rate_quantities() -> None:
    assert [rate_quantity(r) for r in (0.0, 1.5, 2.0, 0.0004, 12.3456)] == [
        "0", "1500m", "2", "0", "12346m"]


def _pod(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name, "labels": labels}}


class _Pods:
    def __init__(self) -> None:
        self.pods = [_pod("web-1", app="web"), _pod("web-2", app="web"), _pod("db-0", app="db")]
        self.asked: list[str] = []

    async def __call__(self, namespace: str, selector: LabelSelector) -> list[dict[str, Any]]:
        self.asked.append(str(selector))
        return [p for p in self.pods if p["metadata"]["namespace"] == namespace
                and selector.matches(p["metadata"]["labels"])]


async def test_custom_request_rates_for_pods_and_services() -> None:
    t = Traffic()
    now = time.time()
    t.add_pod_requests("default", "web-1", 10, now=now - 2)  # 10 in the 2 s since the first
    t.add_connections("default", "ml-model", 3, now=now - 2)
    pods = _Pods()
    provide: CustomMetrics = custom_request_rates(_Services(), t, pods, clock=lambda: now)
    everything, app_web = parse_label_selector(""), parse_label_selector("app=web")

    items = await provide("default", "pods", "*", "requests_per_second", app_web, everything)
    assert items is not None
    assert [(i["describedObject"]["name"], i["value"]) for i in items] == [
        ("web-1", "5"), ("web-2", "0")]  # a pod without traffic is idle, not missing
    assert items[0]["describedObject"] == {"kind": "Pod", "namespace": "default",
                                           "name": "web-1", "apiVersion": "v1"}
    assert items[0]["metric"] == {"name": "requests_per_second"}
    assert items[0]["windowSeconds"] == RATE_WINDOW
    assert items[0]["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    assert pods.asked == ["app=web"]

    one = await provide("default", "pods", "db-0", "requests-per-second", app_web, everything)
    assert one is not None and [(i["describedObject"]["name"], i["value"]) for i in one] == [
        ("db-0", "0")]  # a named object: the label selector does not apply
    assert await provide("default", "pods", "gone", "requests_per_second", everything,
                         everything) == []

    svc = await provide("default", "services", "ml-model", "requests_per_second",
                        everything, everything)
    assert svc is not None and [(i["describedObject"]["kind"], i["value"]) for i in svc] == [
        ("Service", "1500m")]
    by_label = await provide("default", "services", "*", "requests_per_second",
                             parse_label_selector("tier=db"), everything)
    assert by_label is not None and [i["describedObject"]["name"] for i in by_label] == ["db"]

    assert await provide("default", "pods", "*", "queue_depth", everything, everything) is None
    assert await provide("default", "deployments.apps", "web", "requests_per_second",
                         everything, everything) is None
    assert await provide("", "nodes", "n1", "requests_per_second", everything,
                         everything) is None
    # the series carry no labels: a metric selector that needs one matches nothing
    assert await provide("default", "pods", "*", "requests_per_second", app_web,
                         parse_label_selector("code=200")) == []
    assert await provide("default", "pods", "*", "requests_per_second", app_web,
                         parse_label_selector("!code")) == items
