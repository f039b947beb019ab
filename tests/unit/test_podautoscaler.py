"""The HorizontalPodAutoscaler's arithmetic: replica calculation from pod metrics (upstream's
replica calculator cases) and recorded metric series replayed through stabilization and
scaling policies, with the replica counts upstream's algorithm gives, worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.api.meta import rfc3339
from kybernetes.controllers.podautoscaler_behavior import Normalizer
from kybernetes.controllers.podautoscaler_calc import Calculator, MetricError, PodMetric

Obj = dict[str, Any]
NOW = 10_000.0


def pod(name: str, *, cpu: str = "1", ready: bool = True, phase: str = "Running",
        started: float = NOW - 3600, ready_changed: float = NOW - 3000,
        deleting: bool = False) -> Obj:
    md: Obj = {"name": name, "namespace": "ns", "labels": {"app": "m"}}
    if deleting:
        md["deletionTimestamp"] = rfc3339(NOW)
    return {"metadata": md,
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": phase, "startTime": rfc3339(started), "conditions": [
                {"type": "Ready", "status": "True" if ready else "False",
                 "lastTransitionTime": rfc3339(ready_changed)}]}}


def usage(**milli: int) -> dict[str, PodMetric]:
    return {name: PodMetric(v, NOW - 1, 15.0) for name, v in milli.items()}


CALC = Calculator()


def test_scale_up_by_utilization() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    # (300 + 500 + 700) / 3000 = 50 % against 30 % -> ceil(1.667 * 3) = 5
    assert CALC.resource_replicas(3, 30, "cpu", pods, usage(a=300, b=500, c=700), NOW) == \
        (5, 50, 500)


def test_scale_down_by_utilization() -> None:
    pods = [pod(n) for n in "abcde"]
    # 1400 / 5000 = 28 % against 50 % -> ceil(0.56 * 5) = 3
    assert CALC.resource_replicas(5, 50, "cpu", pods,
                                  usage(a=100, b=300, c=500, d=250, e=250), NOW)[:2] == (3, 28)


def test_within_tolerance_keeps_the_count() -> None:
    pods = [pod("a", cpu="900m"), pod("b"), pod("c", cpu="1100m")]
    # 3060 / 3000 = 102 % against 100 %: |1 - 1.02| <= 0.1
    assert CALC.resource_replicas(3, 100, "cpu", pods, usage(a=1010, b=1030, c=1020),
                                  NOW)[0] == 3


def test_unready_pods_count_as_zero_on_scale_up() -> None:
    # a pod that has never been ready (not ready since 10 s after it started)
    pods = [pod("a", ready=False, ready_changed=NOW - 3590), pod("b"), pod("c")]
    # ready pods: 1200 / 2000 = 60 % -> ratio 2; with the unready pod at 0:
    # 1200 / 3000 = 40 % -> ratio 1.33 -> ceil(1.33 * 3) = 4
    assert CALC.resource_replicas(3, 30, "cpu", pods, usage(a=300, b=500, c=700), NOW)[:2] \
        == (4, 60)


def test_starting_pod_without_a_full_window_since_ready_is_set_aside() -> None:
    # started 60 s ago (within the 5 min CPU initialization period), ready 5 s ago: its
    # 15 s sample predates readiness
    fresh = pod("a", started=NOW - 60, ready_changed=NOW - 5)
    pods = [fresh, pod("b"), pod("c")]
    assert CALC.resource_replicas(3, 30, "cpu", pods, usage(a=900, b=500, c=700), NOW)[:2] \
        == (4, 60)


def test_missing_metrics_count_as_full_request_on_scale_down() -> None:
    pods = [pod(n) for n in "abcd"]
    # with metrics: (100 + 100 + 100) / 3000 = 10 % vs 50 % -> scale down; the missing pod
    # counts as 100 % of its request: 1300 / 4000 = 32.5 % -> 0.65 (int 32 -> 0.64)
    # -> ceil(0.64 * 4) = 3
    assert CALC.resource_replicas(4, 50, "cpu", pods, usage(a=100, b=100, c=100), NOW)[0] == 3


def test_missing_metrics_that_would_flip_the_direction_change_nothing() -> None:
    pods = [pod(n) for n in "abcd"]
    # 1500 / 3000 = 50 % vs 45 % -> ratio 1.11 (scale up); the missing pod at 0:
    # 1500 / 4000 = 37 % -> 0.82: the direction flips -> keep 4
    assert CALC.resource_replicas(4, 45, "cpu", pods, usage(a=500, b=500, c=500), NOW)[0] == 4


def test_a_pod_that_was_ready_before_still_counts() -> None:
    # not ready now, but it became unready long after its start: its sample counts
    pods = [pod("a", ready=False, ready_changed=NOW - 100), pod("b"), pod("c")]
    assert CALC.resource_replicas(3, 30, "cpu", pods, usage(a=300, b=500, c=700), NOW)[:2] \
        == (5, 50)


def test_deleted_and_failed_pods_are_ignored() -> None:
    pods = [pod("a"), pod("b"), pod("gone", deleting=True), pod("dead", phase="Failed")]
    assert CALC.resource_replicas(4, 50, "cpu", pods,
                                  usage(a=1000, b=1000, gone=0, dead=0), NOW)[0] == 4


def test_errors_carry_upstreams_messages() -> None:
    with pytest.raises(MetricError, match="no pods returned by selector"):
        CALC.resource_replicas(1, 50, "cpu", [], usage(a=1), NOW)
    with pytest.raises(MetricError, match="did not receive metrics for targeted pods"):
        CALC.resource_replicas(1, 50, "cpu", [pod("a", phase="Pending")], usage(a=1), NOW)
    no_request = pod("a")
    no_request["spec"]["containers"][0]["resources"] = {}
    with pytest.raises(MetricError, match="missing request for cpu in container c of Pod a"):
        CALC.resource_replicas(1, 50, "cpu", [no_request], usage(a=1), NOW)


def test_plain_average_and_whole_target_metrics() -> None:
    pods = [pod("a"), pod("b")]
    # Pods metric: average 150 against 100 -> ceil(1.5 * 2) = 3
    assert CALC.plain_replicas(2, 100_000, "", pods, usage(a=100_000, b=200_000), NOW) == \
        (3, 150_000)
    # External Value target: 300 against 100 -> ratio 3 x 2 ready pods = 6
    assert CALC.usage_ratio_replicas(2, 3.0, pods) == 6
    # ... from zero replicas: the ratio alone
    assert CALC.usage_ratio_replicas(0, 2.5, []) == 3
    # AverageValue of an external metric: 450 total / 100 per pod -> 5; 225 per pod now
    assert CALC.per_pod_replicas(2, 450_000, 100_000) == (5, 225_000)
    # within tolerance: 210 / (100 x 2) = 1.05 -> keep 2
    assert CALC.per_pod_replicas(2, 210_000, 100_000) == (2, 105_000)


def _replay(steps: list[tuple[float, int]], *, behavior: Obj | None, min_replicas: int,
            max_replicas: int, start: int, target: int = 50) -> list[tuple[float, int, str]]:
    """Feed per-pod CPU usage (every pod the same, 1 CPU requested) through the calculator
    and the normalizer as the controller does each sync; returns (time, replicas, the
    AbleToScale reason) per step."""
    norm = Normalizer()
    norm.record_initial("ns/hpa", start, steps[0][0])
    current = start
    out: list[tuple[float, int, str]] = []
    for t, per_pod in steps:
        pods = [pod(f"p{i}", started=t - 3600, ready_changed=t - 3000) for i in range(current)]
        metrics = {f"p{i}": PodMetric(per_pod, t - 1, 15.0) for i in range(current)}
        desired, _, _ = CALC.resource_replicas(current, target, "cpu", pods, metrics, t)
        if behavior is None:
            desired, conds = norm.normalize("ns/hpa", current, desired, min_replicas,
                                            max_replicas, t)
        else:
            desired, conds = norm.normalize_with_behavior("ns/hpa", behavior, current, desired,
                                                          min_replicas, max_replicas, t)
        if desired != current:
            norm.store_scale_event("ns/hpa", behavior, current, desired, t)
            current = desired
        out.append((t, current, conds[0][2]))
    return out


def test_replay_without_behavior_doubles_then_waits_out_the_downscale_window() -> None:
    steps = [(0, 2500),     # 250 % of 50 %: 10 wanted, at most max(2 x 2, 4) = 4
             (15, 1250),    # 125 %: 10 wanted, at most 8
             (30, 625),     # 62 %: 10 wanted
             (45, 150),     # load gone: 3 wanted, but 10 was recommended within 300 s
             (300, 150),    # the t=0 recommendations are exactly 300 s old: still in
             (316, 150),    # t=30's 10 still inside the window
             (331, 150)]    # every 10 is older than 300 s: down to 3
    assert _replay(steps, behavior=None, min_replicas=2, max_replicas=20, start=2) == [
        (0, 4, "ReadyForNewScale"), (15, 8, "ReadyForNewScale"),
        (30, 10, "ReadyForNewScale"), (45, 10, "ScaleDownStabilized"),
        (300, 10, "ScaleDownStabilized"), (316, 10, "ScaleDownStabilized"),
        (331, 3, "ReadyForNewScale")]


def test_replay_with_behavior_policies_and_windows() -> None:
    behavior = {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 60},
            {"type": "Percent", "value": 100, "periodSeconds": 60}]},
        "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 1, "periodSeconds": 30}]},
    }
    steps = [(0, 4000),    # 400 %: 8 wanted; max(1 + 4, 1 x 2) = 5 allowed
             (15, 800),    # 8 wanted; the +4 of t=0 is inside the 60 s period: stay 5
             (61, 800),    # period over: up to 10 allowed, 8 wanted
             (76, 100),    # 2 wanted; the 60 s scale-down window still holds 8
             (122, 100),   # window passed; 1 pod per 30 s: 7
             (137, 100),   # the t=122 step is inside its period: stay 7
             (153, 100),   # period over: 6
             (168, 100),
             (184, 100)]   # 5
    assert [(t, n) for t, n, _ in _replay(steps, behavior=behavior, min_replicas=1,
                                           max_replicas=10, start=1)] == [
        (0, 5), (15, 5), (61, 8), (76, 8), (122, 7), (137, 7), (153, 6), (168, 6), (184, 5)]


def test_select_policy_min_and_disabled() -> None:
    norm = Normalizer()
    up_min = {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Min", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15}]},
        "scaleDown": {"selectPolicy": "Disabled", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    # from 10: +4 pods or +100 % -> Min picks 14
    got, conds = norm.normalize_with_behavior("k", up_min, 10, 40, 1, 100, 0.0)
    assert got == 14 and conds[1][2] == "ScaleUpLimit"
    # scale-down disabled: stays (the 300 s default window would hold it anyway)
    got, conds = norm.normalize_with_behavior("k2", up_min, 10, 2, 1, 100, 0.0)
    assert got == 10
