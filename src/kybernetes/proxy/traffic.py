"""Request counts and latencies per Service (and per Ingress backend), for ``/metrics``
and for the request rates the HPA scales on.

Counting is a dict update per request; the Prometheus families are built only when
scraped (a collector registered once per process). :meth:`Traffic.rate` is the request
rate of a Service over the last :data:`RATE_WINDOW` seconds (one-second buckets).
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

RATE_WINDOW = 30
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class _Series:
    count: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    codes: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Traffic:
    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str, str], _Series] = {}
        """(namespace, service, path kind, ingress) -> counts; kind: ``ingress``/``service``."""
        self._seconds: dict[tuple[str, str], deque[list[float]]] = {}
        """(namespace, service) -> [second, requests] buckets, newest last."""
        self._first: dict[tuple[str, str], float] = {}
        """When each Service was first counted."""

    def record(self, namespace: str, service: str, status: int, seconds: float, *,
               ingress: str = "", via: str = "ingress", now: float | None = None,
               requests: int = 1) -> None:
        s = self.series.get((namespace, service, via, ingress))
        if s is None:
            s = self.series[(namespace, service, via, ingress)] = _Series()
        s.count += requests
        s.codes[str(status)] += requests
        if status >= 500 or status == 0:
            s.errors += requests
        s.latency_sum += seconds
        s.buckets[bisect.bisect_left(BUCKETS, seconds)] += requests
        self._count(namespace, service, requests, now)

    def _count(self, namespace: str, service: str, requests: int, now: float | None) -> None:
        second = float(int(now if now is not None else time.time()))
        self._first.setdefault((namespace, service), second)
        window = self._seconds.get((namespace, service))
        if window is None:
            window = self._seconds[(namespace, service)] = deque()
        if window and window[-1][0] == second:
            window[-1][1] += requests
        else:
            window.append([second, float(requests)])
        while window and window[0][0] <= second - RATE_WINDOW:
            window.popleft()

    def add_connections(self, namespace: str, service: str, new: int, *,
                        now: float | None = None) -> None:
        """New connections the kernel path DNATed for a Service (each counts as one
        request: the kernel sees connections, not requests)."""
        if new <= 0:
            return
        s = self.series.get((namespace, service, "service", ""))
        if s is None:
            s = self.series[(namespace, service, "service", "")] = _Series()
        s.count += new
        self._count(namespace, service, new, now)

    def rate(self, namespace: str, service: str, *, now: float | None = None) -> float:
        """Requests per second over the last :data:`RATE_WINDOW` seconds, or since the
        Service's first request if that is more recent (the current, partial second
        left out)."""
        second = int(now if now is not None else time.time())
        window = self._seconds.get((namespace, service)) or deque()
        done = [(s, n) for s, n in window if second - RATE_WINDOW <= s < second]
        if not done:
            return 0.0
        first = self._first.get((namespace, service), done[0][0])
        span = min(RATE_WINDOW, max(1, second - int(first)))
        return sum(n for _, n in done) / span

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            HistogramMetricFamily,
        )

        requests = CounterMetricFamily(
            "kybernetes_service_requests", "Requests to Services, by the path they took "
            "(ingress: HTTP requests through the ingress controller; service: new "
            "connections through the kernel path) and status code.",
            labels=["namespace", "service", "via", "ingress", "code"])
        errors = CounterMetricFamily(
            "kybernetes_service_request_errors", "Requests answered 5xx or failed.",
            labels=["namespace", "service", "via", "ingress"])
        latency = HistogramMetricFamily(
            "kybernetes_service_request_duration_seconds",
            "Time from a request to its response's head, through the ingress controller.",
            labels=["namespace", "service", "ingress"])
        for (ns, svc, via, ing), s in sorted(self.series.items()):
            if via == "service":
                requests.add_metric([ns, svc, via, ing, ""], s.count)
                continue
            for code, n in sorted(s.codes.items()):
                requests.add_metric([ns, svc, via, ing, code], n)
            errors.add_metric([ns, svc, via, ing], s.errors)
            cumulative, acc = [], 0
            for bound, n in zip([*map(str, BUCKETS), "+Inf"], s.buckets, strict=True):
                acc += n
                cumulative.append((bound, acc))
            latency.add_metric([ns, svc, ing], cumulative, s.latency_sum)
        yield requests
        yield errors
        yield latency


_REGISTERED: list[Traffic] = []


def shared() -> Traffic:
    """The process's one :class:`Traffic`, registered with prometheus_client's registry
    (so the API server's ``/metrics`` shows it when they share a process)."""
    if not _REGISTERED:
        from prometheus_client import REGISTRY

        traffic = Traffic()
        REGISTRY.register(traffic)
        _REGISTERED.append(traffic)
    return _REGISTERED[0]


REQUEST_RATE_METRICS = ("requests_per_second", "requests-per-second")


def request_rates(services: Any, traffic: Traffic) -> Any:
    """The provider of the external metric ``requests_per_second`` (for
    ``external.metrics.k8s.io``): one value per Service of the namespace whose pod
    selector or own labels the metric's selector matches, the Service's request rate over
    the last :data:`RATE_WINDOW` seconds (ingress requests plus kernel-path connections)."""

    async def provide(namespace: str, metric: str, selector: Any) -> list[dict[str, Any]] | None:
        if metric.lower() not in REQUEST_RATE_METRICS:
            return None
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        items = []
        for svc in services.list():
            meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
            if meta.get("namespace") != namespace:
                continue
            pods = spec.get("selector") or {}
            if not (selector.matches(pods) or selector.matches(meta.get("labels") or {})):
                continue
            rate = traffic.rate(namespace, meta.get("name", ""), now=now)
            items.append({"metricName": metric, "metricLabels": dict(pods),
                          "timestamp": stamp, "value": f"{round(rate * 1000)}m"})
        return items

    return provide
