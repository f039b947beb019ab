"""Request counting for /metrics and the request rates served as external metrics."""

from __future__ import annotations

from kybernetes.api.selectors import parse_label_selector
from kybernetes.proxy.traffic import RATE_WINDOW, Traffic, request_rates


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
    provide = request_rates(_Services(), t)
    items = await provide("default", "requests_per_second", parse_label_selector("app=ml-model"))
    assert items is not None and [i["metricLabels"] for i in items] == [{"app": "ml-model"}]
    assert items[0]["value"] == "0m"
    assert [i["metricLabels"] for i in await provide(  # type: ignore[union-attr]
        "default", "requests_per_second", parse_label_selector("tier=db"))] == [
        {"app": "postgres"}]
    assert await provide("default", "queue_depth", parse_label_selector("")) is None
