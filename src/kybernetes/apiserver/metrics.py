"""Prometheus metrics of the API server (names follow kube-apiserver's).

prometheus_client is slow to import, so the metrics are created on first use.
"""

from __future__ import annotations

import functools
import time
from bisect import bisect_left
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
        that run in this process — scheduler, controllers — register there).

        The request and store families (most of the page: a dozen buckets for each label
        set) are written here directly from the accumulators, in the text format
        prometheus_client writes, at a fraction of its cost per line."""
        from prometheus_client import REGISTRY, generate_latest

        if not self.loaded:
            self._load()
        return (self._render_own().encode() + bytes(generate_latest(self.registry)) +
                bytes(generate_latest(REGISTRY)))

    def _render_own(self) -> str:
        out: list[str] = []
        add = out.append
        go = _go
        add(f"# HELP apiserver_request_total {_REQUESTS_HELP}\n"
            "# TYPE apiserver_request_total counter\n")
        merged: dict[tuple[str, ...], _Histogram] = {}
        for (*labels, code), (count, hist) in sorted(self._requests.items()):
            names = _labels(_REQUEST_LABELS, labels)
            add(f'apiserver_request_total{{{names},code="{code}"}} {go(count)}\n')
            into = merged.get(key := tuple(labels))
            if into is None:
                into = merged[key] = _Histogram(_REQUEST_BUCKETS)
            into.counts = [a + b for a, b in zip(into.counts, hist.counts, strict=True)]
            into.sum += hist.sum
        add(f"# HELP apiserver_request_duration_seconds {_DURATION_HELP}\n"
            "# TYPE apiserver_request_duration_seconds histogram\n")
        for key, hist in merged.items():
            _histogram_lines(add, "apiserver_request_duration_seconds",
                             _labels(_REQUEST_LABELS, key), hist)
        add(f"# HELP etcd_request_duration_seconds {_STORE_HELP}\n"
            "# TYPE etcd_request_duration_seconds histogram\n")
        for (op, typ), hist in sorted(self._store.items()):
            _histogram_lines(add, "etcd_request_duration_seconds",
                             _labels(("operation", "type"), (op, typ)), hist)
        return "".join(out)


_REQUESTS_HELP = ("Counter of apiserver requests broken out for each verb, group, version, "
                  "resource and HTTP response code.")
_DURATION_HELP = ("Response latency distribution in seconds for each verb, group, version, "
                  "resource and subresource.")
_STORE_HELP = "Store request latency in seconds for each operation and object type."


def _labels(names: tuple[str, ...], values: Any) -> str:
    return ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True))


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _go(value: float) -> str:
    """A sample's value as Prometheus' Go formatting writes it (``1.234567e+06`` from a
    million on)."""
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        return f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.") + f"e+0{dot - 1}"
    return text


def _histogram_lines(add: Any, name: str, labels: str, hist: _Histogram) -> None:
    go = _go
    total = 0
    for bound, n in zip(_le_strings(hist.bounds), hist.counts, strict=True):
        total += n
        add(f'{name}_bucket{{{labels},le="{bound}"}} {go(total)}\n')
    add(f"{name}_count{{{labels}}} {go(total)}\n{name}_sum{{{labels}}} {go(hist.sum)}\n")


@functools.cache
def _le_strings(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*map(_le, bounds), "+Inf")


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
