"""Prometheus metrics of the API server (names follow kube-apiserver's).

prometheus_client is slow to import, so the metrics are created on first use.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from kybernetes.store import Backend, KeyValue, ListResult, Watch

_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)
_STORE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
_REQUEST_LABELS = ("verb", "group", "version", "resource", "subresource")


class _Histogram:
    """One label set's buckets: plain ints, no locks — the server is one event loop, and
    prometheus_client's locked children cost more than the requests they count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    def __init__(self) -> None:
        self.loaded = False
        self._requests: dict[tuple[str, str, str, str, str, int], list[Any]] = {}
        """(verb, group, version, resource, subresource, code) -> [count, latency]"""
        self._store: dict[tuple[str, str], _Histogram] = {}

    def _load(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.loaded = True
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.watches = Gauge(
            "apiserver_longrunning_requests", "Gauge of all active long-running apiserver "
            "requests broken out by verb, group, version, resource.",
            ["verb", "group", "version", "resource"], registry=self.registry)

    def observe(self, verb: str, group: str, version: str, resource: str, subresource: str,
                code: int, seconds: float) -> None:
        """Count one request and its latency (this is hot)."""
        key = (verb, group, version, resource, subresource, code)
        entry = self._requests.get(key)
        if entry is None:
            entry = self._requests[key] = [0, _Histogram(_REQUEST_BUCKETS)]
        entry[0] += 1
        entry[1].observe(seconds)

    def watch_gauge(self, group: str, version: str, resource: str) -> Any:
        if not self.loaded:
            self._load()
        return self.watches.labels("WATCH", group, version, resource)

    def observe_store(self, operation: str, key: str, seconds: float) -> None:
        parts = key.split("/", 3)
        ck = (operation, parts[2] if len(parts) > 2 else "")
        hist = self._store.get(ck)
        if hist is None:
            hist = self._store[ck] = _Histogram(_STORE_BUCKETS)
        hist.observe(seconds)

    def render(self) -> bytes:
        """The API server's metrics, then the process-wide registry's (the components
        that run in this process — scheduler, controllers — register there)."""
        from prometheus_client import REGISTRY, generate_latest

        if not self.loaded:
            self._load()
        return bytes(generate_latest(self.registry)) + bytes(generate_latest(REGISTRY))


class _Collector:
    """Renders :class:`Metrics`' accumulators as kube-apiserver's metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily(
            "apiserver_request_total", "Counter of apiserver requests broken out for each "
            "verb, group, version, resource and HTTP response code.",
            labels=[*_REQUEST_LABELS, "code"])
        latency = HistogramMetricFamily(
            "apiserver_request_duration_seconds", "Response latency distribution in seconds "
            "for each verb, group, version, resource and subresource.", labels=_REQUEST_LABELS)
        merged: dict[tuple[str, ...], _Histogram] = {}
        for (*labels, code), (count, hist) in sorted(self.metrics._requests.items()):
            requests.add_metric([*labels, str(code)], count)
            into = merged.setdefault(tuple(labels), _Histogram(_REQUEST_BUCKETS))
            into.counts = [a + b for a, b in zip(into.counts, hist.counts, strict=True)]
            into.sum += hist.sum
        for key, hist in merged.items():
            latency.add_metric(list(key), hist.cumulative(), hist.sum)
        store = HistogramMetricFamily(
            "etcd_request_duration_seconds", "Store request latency in seconds for each "
            "operation and object type.", labels=["operation", "type"])
        for (op, typ), hist in sorted(self.metrics._store.items()):
            store.add_metric([op, typ], hist.cumulative(), hist.sum)
        yield requests
        yield latency
        yield store


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
