"""Request counts and latencies per Service (and per Ingress backend), for ``/metrics``
and for the request rates the HPA scales on.

Counting is a dict update per request; the Prometheus families are built only when
scraped (a collector registered once per process). :meth:`Traffic.rate` is the request
rate of a Service over the last :data:`RATE_WINDOW` seconds (one-second buckets), and
:meth:`Traffic.pod_rate` the same for one pod (the endpoint that served the requests),
which the ``Pods`` metrics of an autoscaler average.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

from kybernetes.api.quantity import format_quantity
from kybernetes.api.selectors import EVERYTHING, LabelSelector

if TYPE_CHECKING:
    from kybernetes.client import Client

RATE_WINDOW = 30
POD_FORGET_AFTER = 3600
"""A pod that served nothing for this long is forgotten (pods come and go, Services
stay): its window and first-request time are dropped, so that a deleted pod's counts do
not stay forever. One that serves again is counted as new."""
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class _Series:
    count: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    codes: dict[str, int] = field(default_factory=lambda: defaultdict(int))


_Window = deque[list[float]]
"""[second, requests] buckets, oldest first."""


class _Windows:
    """Requests per key over the last :data:`RATE_WINDOW` seconds, in one-second buckets,
    and when each key was first counted (a new key's rate is over the time since then,
    so that a Service's or pod's first burst is not diluted over a full window)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], _Window] = {}
        self.first: dict[tuple[str, str], float] = {}

    def add(self, key: tuple[str, str], requests: int, now: float | None) -> float:
        second = float(int(now if now is not None else time.time()))
        self.first.setdefault(key, second)
        window = self.seconds.get(key)
        if window is None:
            window = self.seconds[key] = deque()
        if window and window[-1][0] == second:
            window[-1][1] += requests
        else:
            window.append([second, float(requests)])
        while window and window[0][0] <= second - RATE_WINDOW:
            window.popleft()
        return second

    def rate(self, key: tuple[str, str], now: float | None) -> float:
        second = int(now if now is not None else time.time())
        window = self.seconds.get(key) or deque()
        done = [(s, n) for s, n in window if second - RATE_WINDOW <= s < second]
        if not done:
            return 0.0
        first = self.first.get(key, done[0][0])
        span = min(RATE_WINDOW, max(1, second - int(first)))
        return sum(n for _, n in done) / span

    def forget_idle(self, second: float, idle: float) -> None:
        """Drop the keys that counted nothing in the last ``idle`` seconds."""
        for key in [k for k, w in self.seconds.items() if not w or w[-1][0] <= second - idle]:
            del self.seconds[key]
            self.first.pop(key, None)


class Traffic:
    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str, str], _Series] = {}
        """(namespace, service, path kind, ingress) -> counts; kind: ``ingress``/``service``."""
        self._services = _Windows()
        """(namespace, service) -> its request rate window."""
        self._pods = _Windows()
        """(namespace, pod) -> the request rate window of the pod that served them."""
        self._pods_pruned = 0.0

    def record(self, namespace: str, service: str, status: int, seconds: float, *,
               ingress: str = "", via: str = "ingress", now: float | None = None,
               requests: int = 1, pod: str = "") -> None:
        """Requests answered for a Service (``pod``: the endpoint's pod that answered,
        when the path knows it, so that the pod's rate counts them too)."""
        s = self.series.get((namespace, service, via, ingress))
        if s is None:
            s = self.series[(namespace, service, via, ingress)] = _Series()
        s.count += requests
        s.codes[str(status)] += requests
        if status >= 500 or status == 0:
            s.errors += requests
        s.latency_sum += seconds
        s.buckets[bisect.bisect_left(BUCKETS, seconds)] += requests
        self._services.add((namespace, service), requests, now)
        if pod:
            self.add_pod_requests(namespace, pod, requests, now=now)

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
        self._services.add((namespace, service), new, now)

    def add_pod_requests(self, namespace: str, pod: str, new: int, *,
                         now: float | None = None) -> None:
        """Requests (or kernel-path connections, see
        :func:`kybernetes.proxy.rules.endpoint_connections`) one pod served."""
        if new <= 0 or not pod:
            return
        second = self._pods.add((namespace, pod), new, now)
        if second - self._pods_pruned >= RATE_WINDOW:
            self._pods_pruned = second
            self._pods.forget_idle(second, POD_FORGET_AFTER)

    def rate(self, namespace: str, service: str, *, now: float | None = None) -> float:
        """Requests per second over the last :data:`RATE_WINDOW` seconds, or since the
        Service's first request if that is more recent (the current, partial second
        left out)."""
        return self._services.rate((namespace, service), now)

    def pod_rate(self, namespace: str, pod: str, *, now: float | None = None) -> float:
        """What :meth:`rate` is for a Service, for the requests one pod served."""
        return self._pods.rate((namespace, pod), now)

    def totals(self) -> dict[tuple[str, str], tuple[int, int, float, int]]:
        """(namespace, service) → requests, errors, seconds spent answering the timed
        ones, and how many were timed (the kernel path counts connections, untimed),
        since the process started, over every path and ingress."""
        out: dict[tuple[str, str], tuple[int, int, float, int]] = {}
        for (ns, svc, _via, _ingress), s in self.series.items():
            n, e, secs, timed = out.get((ns, svc), (0, 0, 0.0, 0))
            out[(ns, svc)] = (n + s.count, e + s.errors, secs + s.latency_sum,
                              timed + sum(s.buckets))
        return out

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
"""The names the request rate answers to (an HPA written for another adapter may use
either); discovery lists the first."""

Obj = dict[str, Any]
ListPods = Callable[[str, LabelSelector], Awaitable[list[Obj]]]
"""(namespace, label selector) -> the pods of the namespace it matches."""


class _Listing(Protocol):
    def list(self) -> list[Obj]: ...


def _stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def rate_quantity(rate: float) -> str:
    """A rate as a canonical quantity in thousandths (``1.5`` -> ``"1500m"``, ``0`` ->
    ``"0"``), as the metric APIs' values are."""
    return format_quantity(Fraction(round(rate * 1000), 1000))


class ServiceRequestRates:
    """The provider of the external metric ``requests_per_second`` (for
    ``external.metrics.k8s.io``): one value per Service of the namespace whose pod
    selector or own labels the metric's selector matches, the Service's request rate over
    the last :data:`RATE_WINDOW` seconds (ingress requests plus kernel-path connections)."""

    metrics = REQUEST_RATE_METRICS[:1]
    """What discovery lists."""

    def __init__(self, services: _Listing, traffic: Traffic) -> None:
        self.services = services
        self.traffic = traffic

    async def __call__(self, namespace: str, metric: str,
                       selector: LabelSelector) -> list[Obj] | None:
        if metric.lower() not in REQUEST_RATE_METRICS:
            return None
        now = time.time()
        stamp = _stamp(now)
        items = []
        for svc in self.services.list():
            meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
            if meta.get("namespace") != namespace:
                continue
            pods = spec.get("selector") or {}
            if not (selector.matches(pods) or selector.matches(meta.get("labels") or {})):
                continue
            rate = self.traffic.rate(namespace, meta.get("name", ""), now=now)
            items.append({"metricName": metric, "metricLabels": dict(pods),
                          "timestamp": stamp, "value": f"{round(rate * 1000)}m"})
        return items


def request_rates(services: _Listing, traffic: Traffic) -> ServiceRequestRates:
    """The ``external.metrics.k8s.io`` provider (see :class:`ServiceRequestRates`)."""
    return ServiceRequestRates(services, traffic)


class PodAndServiceRequestRates:
    """The provider of the custom metric ``requests_per_second`` (for
    ``custom.metrics.k8s.io``), over the last :data:`RATE_WINDOW` seconds:

    - for ``services``: a Service's request rate (the external metric's value), for an
      HPA ``Object`` metric; ``services/*`` selects Services by their own labels;
    - for ``pods``: the requests each pod served (ingress requests to its address, plus
      kernel-path connections DNATed to it), for an HPA ``Pods`` metric. Every pod the
      selector matches has a value, ``0`` if it served nothing: a new pod that has no
      traffic yet counts as idle, which is what it is.

    The series carry no labels: a ``metricLabelSelector`` that needs one matches none.
    """

    metrics = (("pods", REQUEST_RATE_METRICS[0]), ("services", REQUEST_RATE_METRICS[0]))
    """(resource, metric) pairs discovery lists."""

    def __init__(self, services: _Listing, traffic: Traffic, list_pods: ListPods, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.services = services
        self.traffic = traffic
        self.list_pods = list_pods
        self.clock = clock

    async def __call__(self, namespace: str, resource: str, name: str, metric: str,
                       selector: LabelSelector,
                       metric_selector: LabelSelector) -> list[Obj] | None:
        """Values for object ``name`` of ``resource`` (``*``: those ``selector``
        matches); None: no such metric for that resource."""
        if metric.lower() not in REQUEST_RATE_METRICS or not namespace or \
                resource not in ("pods", "services"):
            return None
        if not metric_selector.matches({}):
            return []
        now = self.clock()
        if resource == "services":
            kind = "Service"
            rates = {}
            for svc in self.services.list():
                meta = svc.get("metadata") or {}
                if meta.get("namespace") != namespace or (
                        name == "*" and not selector.matches(meta.get("labels") or {})):
                    continue
                n = meta.get("name", "")
                rates[n] = self.traffic.rate(namespace, n, now=now)
        else:
            kind = "Pod"
            pods = await self.list_pods(namespace, selector if name == "*" else EVERYTHING)
            names = [(p.get("metadata") or {}).get("name", "") for p in pods]
            rates = {n: self.traffic.pod_rate(namespace, n, now=now) for n in names}
        stamp = _stamp(now)
        return [{"describedObject": {"kind": kind, "namespace": namespace, "name": n,
                                     "apiVersion": "v1"},
                 "metric": {"name": metric}, "timestamp": stamp, "windowSeconds": RATE_WINDOW,
                 "value": rate_quantity(rate)}
                for n, rate in sorted(rates.items()) if name in ("*", n)]


def custom_request_rates(services: _Listing, traffic: Traffic, list_pods: ListPods, *,
                         clock: Callable[[], float] = time.time) -> PodAndServiceRequestRates:
    """The ``custom.metrics.k8s.io`` provider (see :class:`PodAndServiceRequestRates`);
    ``list_pods`` lists the pods a ``pods/*`` request selects (:func:`pod_lister`)."""
    return PodAndServiceRequestRates(services, traffic, list_pods, clock=clock)


def pod_lister(client: Client) -> ListPods:
    """A :data:`ListPods` that asks the API server (the provider runs in the API server's
    process, which keeps no pod cache of its own; an HPA asks once per sync period)."""

    async def list_pods(namespace: str, selector: LabelSelector) -> list[Obj]:
        doc = await client.list_all("v1", "pods", namespace=namespace,
                                    label_selector=str(selector) or None)
        return list(doc.get("items") or [])

    return list_pods
