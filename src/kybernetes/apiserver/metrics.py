"""Prometheus metrics of the API server (names follow kube-apiserver's)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request_total", "Counter of apiserver requests broken out for each verb, "
            "group, version, resource and HTTP response code.",
            ["verb", "group", "version", "resource", "subresource", "code"],
            registry=self.registry)
        self.latency = Histogram(
            "apiserver_request_duration_seconds", "Response latency distribution in seconds for "
            "each verb, group, version, resource and subresource.",
            ["verb", "group", "version", "resource", "subresource"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
            registry=self.registry)
        self.watches = Gauge(
            "apiserver_longrunning_requests", "Gauge of all active long-running apiserver "
            "requests broken out by verb, group, version, resource.",
            ["verb", "group", "version", "resource"], registry=self.registry)
        self.watch_events = Counter(
            "apiserver_watch_events_total", "Number of events sent in watch clients",
            ["group", "version", "kind"], registry=self.registry)
        self.store_latency = Histogram(
            "etcd_request_duration_seconds", "Store request latency in seconds for each "
            "operation and object type.", ["operation", "type"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
            registry=self.registry)
        self.objects = Gauge(
            "apiserver_storage_objects", "Number of stored objects at the time of last check "
            "split by kind.", ["resource"], registry=self.registry)

        self._children: dict[tuple[str, str, str, str, str, int], tuple[Any, Any]] = {}

    def observe(self, verb: str, group: str, version: str, resource: str, subresource: str,
                code: int, seconds: float) -> None:
        """Count one request and its latency (label children are cached: this is hot)."""
        key = (verb, group, version, resource, subresource, code)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self.requests.labels(verb, group, version, resource, subresource, str(code)),
                self.latency.labels(verb, group, version, resource, subresource))
        pair[0].inc()
        pair[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
