"""Prometheus metrics of the API server (names follow kube-apiserver's).

prometheus_client is slow to import, so the metrics are created on first use.
"""

from __future__ import annotations

import time
from typing import Any

from kybernetes.store import Backend, KeyValue, ListResult, Watch


class Metrics:
    def __init__(self) -> None:
        self.loaded = False
        self._children: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def _load(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.loaded = True
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
        self.store_latency = Histogram(
            "etcd_request_duration_seconds", "Store request latency in seconds for each "
            "operation and object type.", ["operation", "type"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
            registry=self.registry)

    def observe(self, verb: str, group: str, version: str, resource: str, subresource: str,
                code: int, seconds: float) -> None:
        """Count one request and its latency (label children are cached: this is hot)."""
        key = (verb, group, version, resource, subresource, code)
        pair = self._children.get(key)
        if pair is None:
            if not self.loaded:
                self._load()
            pair = self._children[key] = (
                self.requests.labels(verb, group, version, resource, subresource, str(code)),
                self.latency.labels(verb, group, version, resource, subresource))
        pair[0].inc()
        pair[1].observe(seconds)

    def watch_gauge(self, group: str, version: str, resource: str) -> Any:
        if not self.loaded:
            self._load()
        return self.watches.labels("WATCH", group, version, resource)

    def observe_store(self, operation: str, key: str, seconds: float) -> None:
        parts = key.split("/", 3)
        typ = parts[2] if len(parts) > 2 else ""
        ck = ("store", operation, typ)
        child = self._children.get(ck)
        if child is None:
            if not self.loaded:
                self._load()
            child = self._children[ck] = (self.store_latency.labels(operation, typ),)
        child[0].observe(seconds)

    def render(self) -> bytes:
        """The API server's metrics, then the process-wide registry's (the components
        that run in this process — scheduler, controllers — register there)."""
        from prometheus_client import REGISTRY, generate_latest

        if not self.loaded:
            self._load()
        return bytes(generate_latest(self.registry)) + bytes(generate_latest(REGISTRY))


class TimedBackend:
    """A :class:`~kybernetes.store.Backend` that records each call's latency."""

    def __init__(self, backend: Backend, metrics: Metrics) -> None:
        self.backend = backend
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:  # the rest of the protocol, untimed
        return getattr(self.backend, name)

    async def get(self, key: str) -> KeyValue | None:
        # point reads are mostly memory hits: timing them would cost more than they do
        return await self.backend.get(key)

    async def list(self, prefix: str, *, start_after: str = "", limit: int = 0,
                   revision: int = 0) -> ListResult:
        t = time.perf_counter()
        try:
            return await self.backend.list(prefix, start_after=start_after, limit=limit,
                                           revision=revision)
        finally:
            self.metrics.observe_store("list", prefix, time.perf_counter() - t)

    async def create(self, key: str, value: bytes) -> KeyValue:
        t = time.perf_counter()
        try:
            return await self.backend.create(key, value)
        finally:
            self.metrics.observe_store("create", key, time.perf_counter() - t)

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        t = time.perf_counter()
        try:
            return await self.backend.update(key, value, expected_revision=expected_revision)
        finally:
            self.metrics.observe_store("update", key, time.perf_counter() - t)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        t = time.perf_counter()
        try:
            return await self.backend.delete(key, expected_revision=expected_revision)
        finally:
            self.metrics.observe_store("delete", key, time.perf_counter() - t)

    async def watch(self, prefix: str, *, after_revision: int) -> Watch:
        return await self.backend.watch(prefix, after_revision=after_revision)
