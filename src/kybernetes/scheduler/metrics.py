"""The scheduler's Prometheus metrics, with kube-scheduler's names; served on the API
server's ``/metrics`` (the process-wide registry)."""

from __future__ import annotations

from typing import Any

_BUCKETS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
            2.048, 4.096, 8.192, 16.384)
_shared: dict[str, Any] = {}


def _collectors() -> dict[str, Any]:
    """Created once per process (several schedulers in one process share them)."""
    if not _shared:
        from prometheus_client import Counter, Gauge, Histogram

        _shared["attempts"] = Counter(
            "scheduler_schedule_attempts", "Number of attempts to schedule pods, by the "
            "result. 'unschedulable' means a pod could not be scheduled, while 'error' means "
            "an internal scheduler problem.", ["result", "profile"])
        _shared["attempt_duration"] = Histogram(
            "scheduler_scheduling_attempt_duration_seconds", "Scheduling attempt latency in "
            "seconds (scheduling algorithm + binding)", ["result", "profile"], buckets=_BUCKETS)
        _shared["sli"] = Histogram(
            "scheduler_pod_scheduling_sli_duration_seconds", "E2e latency for a pod being "
            "scheduled, from the time the pod enters the scheduling queue.", ["attempts"],
            buckets=_BUCKETS)
        _shared["pending"] = Gauge(
            "scheduler_pending_pods", "Number of pending pods, by the queue type.", ["queue"])
    return _shared


class SchedulerMetrics:
    def __init__(self) -> None:
        self._c = _collectors()
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def attempt(self, result: str, profile: str, seconds: float) -> None:
        key = (result, profile)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self._c["attempts"].labels(result, profile),
                                           self._c["attempt_duration"].labels(result, profile))
        child[0].inc()
        child[1].observe(seconds)

    def scheduled(self, seconds: float, attempts: int) -> None:
        self._c["sli"].labels(str(min(attempts, 15))).observe(seconds)

    def pending(self, counts: dict[str, int]) -> None:
        g = self._c["pending"]
        for queue, n in counts.items():
            g.labels(queue).set(n)
