"""The HorizontalPodAutoscaler's replica calculator: from metric values to a replica count.

Pure functions over pods (wire-form dicts) and metric values, with upstream's arithmetic
(``pkg/controller/podautoscaler/replica_calculator.go``): values are integers in
thousandths (``MilliValue``), utilization is a truncated integer percentage, a ratio
within the tolerance (0.1) changes nothing, and the count is ``ceil(ratio × pods)``.
For per-pod metrics, pods are grouped first: deleted and failed pods are ignored, pending
ones and (for CPU) ones not ready or still starting are set aside, and pods without a
sample are missing. Missing pods count as 100 % of the target when scaling down and 0 %
when scaling up, set-aside pods as 0 % on scale-up; if that reverses the direction or
brings the ratio within tolerance, nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kybernetes.api import quantity
from kybernetes.api.meta import parse_time

Obj = dict[str, Any]

TOLERANCE = 0.1
CPU_INITIALIZATION_PERIOD = 300.0
"""--horizontal-pod-autoscaler-cpu-initialization-period (5 min)."""
INITIAL_READINESS_DELAY = 30.0
"""--horizontal-pod-autoscaler-initial-readiness-delay (30 s)."""


class MetricError(Exception):
    """A metric could not be turned into a replica count (the message is upstream's)."""


@dataclass(frozen=True, slots=True)
class PodMetric:
    value: int
    """In thousandths of the unit (millicores for CPU)."""
    timestamp: float = 0.0
    window: float = 0.0


PodMetrics = dict[str, PodMetric]
"""Pod name -> its sample."""


@dataclass(frozen=True, slots=True)
class Calculator:
    tolerance: float = TOLERANCE
    cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD
    initial_readiness_delay: float = INITIAL_READINESS_DELAY

    # -- Resource / ContainerResource metrics --------------------------------------------

    def resource_replicas(self, current: int, target_utilization: int, resource: str,
                          pods: Sequence[Obj], metrics: PodMetrics, now: float,
                          container: str = "") -> tuple[int, int, int]:
        """(replicas, utilization %, raw average usage in thousandths) for a Utilization
        target."""
        metrics, ready, unready, missing = self._usable(pods, metrics, resource, now)
        requests = pod_requests(pods, container, resource)
        ratio, utilization, raw = utilization_ratio(metrics, requests, target_utilization)
        scale_up_with_unready = bool(unready) and ratio > 1.0
        if not scale_up_with_unready and not missing:
            if abs(1.0 - ratio) <= self.tolerance:
                return current, utilization, raw
            return math.ceil(ratio * ready), utilization, raw
        if missing:
            if ratio < 1.0:
                fallback = max(100, target_utilization)
                for name in missing:
                    metrics[name] = PodMetric(requests[name] * fallback // 100)
            elif ratio > 1.0:
                for name in missing:
                    metrics[name] = PodMetric(0)
        if scale_up_with_unready:
            for name in unready:
                metrics[name] = PodMetric(0)
        new_ratio, _, _ = utilization_ratio(metrics, requests, target_utilization)
        return self._recomputed(current, ratio, new_ratio, len(metrics)), utilization, raw

    def raw_resource_replicas(self, current: int, target_usage: int, resource: str,
                              pods: Sequence[Obj], metrics: PodMetrics,
                              now: float) -> tuple[int, int]:
        """(replicas, average usage) for an AverageValue target of a resource."""
        return self.plain_replicas(current, target_usage, resource, pods, metrics, now)

    # -- Pods metrics ---------------------------------------------------------------------

    def plain_replicas(self, current: int, target_usage: int, resource: str,
                       pods: Sequence[Obj], metrics: PodMetrics, now: float) -> tuple[int, int]:
        """(replicas, average usage) for a per-pod average (Pods metrics, AverageValue of a
        resource); ``resource`` is "" for custom metrics (no CPU start-up rules)."""
        metrics, ready, unready, missing = self._usable(pods, metrics, resource, now)
        ratio, usage = usage_ratio(metrics, target_usage)
        scale_up_with_unready = bool(unready) and ratio > 1.0
        if not scale_up_with_unready and not missing:
            if abs(1.0 - ratio) <= self.tolerance:
                return current, usage
            return math.ceil(ratio * ready), usage
        if missing:
            fill = target_usage if ratio < 1.0 else 0
            if ratio != 1.0:
                for name in missing:
                    metrics[name] = PodMetric(fill)
        if scale_up_with_unready:
            for name in unready:
                metrics[name] = PodMetric(0)
        new_ratio, _ = usage_ratio(metrics, target_usage)
        return self._recomputed(current, ratio, new_ratio, len(metrics)), usage

    def _usable(self, pods: Sequence[Obj], metrics: PodMetrics, resource: str, now: float
                ) -> tuple[PodMetrics, int, set[str], set[str]]:
        """(the samples of ready pods, ready count, unready, missing)."""
        if not pods:
            raise MetricError("no pods returned by selector while calculating replica count")
        metrics = dict(metrics)
        ready, unready, missing, ignored = self.group_pods(pods, metrics, resource, now)
        for name in (*ignored, *unready):
            metrics.pop(name, None)
        if not metrics:
            raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
        return metrics, ready, unready, missing

    def _recomputed(self, current: int, ratio: float, new_ratio: float, n: int) -> int:
        if abs(1.0 - new_ratio) <= self.tolerance or (ratio < 1.0 < new_ratio) or \
                (ratio > 1.0 > new_ratio):
            return current  # the direction flipped, or the change is within tolerance
        replicas = math.ceil(new_ratio * n)
        if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
            return current
        return replicas

    # -- Object and External metrics ------------------------------------------------------

    def usage_ratio_replicas(self, current: int, ratio: float, pods: Sequence[Obj]) -> int:
        """Replicas for a whole-target value (Object / External ``Value`` targets)."""
        if current == 0:
            return math.ceil(ratio)  # scale from zero by the ratio alone
        if abs(1.0 - ratio) <= self.tolerance:
            return current
        if not pods:
            raise MetricError("unable to calculate ready pods: no pods returned by selector "
                              "while calculating replica count")
        return math.ceil(ratio * ready_pod_count(pods))

    def per_pod_replicas(self, status_replicas: int, usage: int,
                         target_per_pod: int) -> tuple[int, int]:
        """(replicas, usage per pod) for an ``AverageValue`` target of an Object or
        External metric: the total divided among the current replicas."""
        replicas = status_replicas
        ratio = usage / (target_per_pod * replicas) if replicas else math.inf
        if abs(1.0 - ratio) > self.tolerance:
            replicas = math.ceil(usage / target_per_pod)
        per_pod = math.ceil(usage / status_replicas) if status_replicas else usage
        return replicas, per_pod

    # -- grouping -------------------------------------------------------------------------

    def group_pods(self, pods: Iterable[Obj], metrics: Mapping[str, PodMetric], resource: str,
                   now: float) -> tuple[int, set[str], set[str], set[str]]:
        """(ready count, unready, missing, ignored) as upstream's ``groupPods``."""
        ready = 0
        unready: set[str] = set()
        missing: set[str] = set()
        ignored: set[str] = set()
        for pod in pods:
            md, status = pod.get("metadata") or {}, pod.get("status") or {}
            name = md.get("name", "")
            phase = status.get("phase")
            if md.get("deletionTimestamp") or phase == "Failed":
                ignored.add(name)
                continue
            if phase == "Pending":
                unready.add(name)
                continue
            metric = metrics.get(name)
            if metric is None:
                missing.add(name)
                continue
            if resource == "cpu" and self._cpu_unready(status, metric, now):
                unready.add(name)
                continue
            ready += 1
        return ready, unready, missing, ignored

    def _cpu_unready(self, status: Obj, metric: PodMetric, now: float) -> bool:
        cond = next((c for c in status.get("conditions") or ()
                     if c.get("type") == "Ready"), None)
        started = parse_time(status.get("startTime"))
        if cond is None or started is None:
            return True
        changed = parse_time(cond.get("lastTransitionTime")) or 0.0
        if started + self.cpu_initialization_period > now:
            # still starting: unready, or no full sample window since readiness changed
            return bool(cond.get("status") == "False" or metric.timestamp < changed + metric.window)
        # afterwards, only a pod that has never been ready is set aside
        return bool(cond.get("status") == "False" and
                    started + self.initial_readiness_delay > changed)


def ready_pod_count(pods: Iterable[Obj]) -> int:
    """Running pods whose Ready condition is True."""
    n = 0
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ()):
            n += 1
    return n


def pod_requests(pods: Iterable[Obj], container: str, resource: str) -> dict[str, int]:
    """Pod name -> the sum of its containers' requests of ``resource`` (thousandths);
    restartable init containers (sidecars) count too; a container without one is an
    error."""
    out: dict[str, int] = {}
    for pod in pods:
        spec = pod.get("spec") or {}
        name = (pod.get("metadata") or {}).get("name", "")
        containers = [*(spec.get("containers") or ()),
                      *(c for c in spec.get("initContainers") or ()
                        if c.get("restartPolicy") == "Always")]
        total = 0
        for c in containers:
            if container and c.get("name") != container:
                continue
            req = ((c.get("resources") or {}).get("requests") or {}).get(resource)
            if req is None:
                raise MetricError(f"missing request for {resource} in container "
                                  f"{c.get('name', '')} of Pod {name}")
            total += quantity.milli_value(req)
        out[name] = total
    return out


def utilization_ratio(metrics: Mapping[str, PodMetric], requests: Mapping[str, int],
                      target_utilization: int) -> tuple[float, int, int]:
    """(usage ratio, utilization %, raw average) over the pods that have a request."""
    total = requested = n = 0
    for name, metric in metrics.items():
        req = requests.get(name)
        if req is None:
            continue
        total += metric.value
        requested += req
        n += 1
    if requested == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = total * 100 // requested
    return utilization / target_utilization, utilization, total // n


def usage_ratio(metrics: Mapping[str, PodMetric], target_usage: int) -> tuple[float, int]:
    """(ratio of the average to the target, the average), the average truncated."""
    total = sum(m.value for m in metrics.values())
    n = len(metrics)
    average = total // n if total >= 0 else -(-total // n)  # Go's division truncates
    return average / target_usage, average
