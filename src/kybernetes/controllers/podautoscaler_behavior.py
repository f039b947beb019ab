"""How far and how fast a HorizontalPodAutoscaler may move: stabilization and scaling rules.

Upstream's normalization (``horizontal.go``), with the clock passed in so that recorded
metric series can be replayed: every recommendation is remembered per autoscaler; without
``spec.behavior`` a scale-down takes the highest recommendation of the last 5 minutes and
a scale-up is capped at max(2 × current, 4); with a behavior, the scale-up and scale-down
windows bound the recommendation from both sides and each direction's policies (``Pods``
or ``Percent`` per ``periodSeconds``, combined by ``selectPolicy`` Max/Min/Disabled) cap
the change against the scale events of their period. Each step also yields the
AbleToScale and ScalingLimited conditions' reasons and messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

DOWNSCALE_STABILIZATION = 300.0
"""--horizontal-pod-autoscaler-downscale-stabilization (5 min)."""
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0

Condition = tuple[str, str, str, str]
"""(type, status, reason, message)."""


@dataclass(slots=True)
class _ScaleEvent:
    change: int
    at: float
    outdated: bool = False


@dataclass(slots=True)
class _History:
    recommendations: list[tuple[int, float]] = field(default_factory=list)
    """(recommended replicas, when)."""
    up: list[_ScaleEvent] = field(default_factory=list)
    down: list[_ScaleEvent] = field(default_factory=list)


@dataclass
class Normalizer:
    """Per-autoscaler memory of recommendations and scale events."""

    downscale_stabilization: float = DOWNSCALE_STABILIZATION
    _history: dict[str, _History] = field(default_factory=dict)

    def forget(self, key: str) -> None:
        self._history.pop(key, None)

    def record_initial(self, key: str, current: int, now: float) -> None:
        """The replica count first seen counts as a recommendation."""
        h = self._history.setdefault(key, _History())
        if not h.recommendations:
            h.recommendations.append((current, now))

    # -- without spec.behavior ------------------------------------------------------------

    def normalize(self, key: str, current: int, desired: int, min_replicas: int,
                  max_replicas: int, now: float) -> tuple[int, list[Condition]]:
        stabilized = self._stabilize(key, desired, now)
        conds: list[Condition] = []
        if stabilized != desired:
            conds.append(("AbleToScale", "True", "ScaleDownStabilized",
                          "recent recommendations were higher than current one, applying "
                          "the highest recent recommendation"))
        else:
            conds.append(("AbleToScale", "True", "ReadyForNewScale",
                          "recommended size matches current size"))
        out, reason, message = _with_rules(current, stabilized, min_replicas, max_replicas)
        conds.append(("ScalingLimited", "False" if out == stabilized else "True", reason,
                      message))
        return out, conds

    def _stabilize(self, key: str, desired: int, now: float) -> int:
        h = self._history.setdefault(key, _History())
        cutoff = now - self.downscale_stabilization
        best = desired
        old = -1
        for i, (rec, at) in enumerate(h.recommendations):
            if at < cutoff:
                old = i
            elif rec > best:
                best = rec
        if old >= 0:
            h.recommendations[old] = (desired, now)
        else:
            h.recommendations.append((desired, now))
        return best

    # -- with spec.behavior ---------------------------------------------------------------

    def normalize_with_behavior(self, key: str, behavior: Obj, current: int, desired: int,
                                min_replicas: int, max_replicas: int,
                                now: float) -> tuple[int, list[Condition]]:
        up = behavior.get("scaleUp") or {}
        down = behavior.get("scaleDown") or {}
        up_window = up.get("stabilizationWindowSeconds")
        down_window = down.get("stabilizationWindowSeconds")
        stabilized, reason, message = self._stabilize_with_behavior(
            key, current, desired, now,
            up_window=float(up_window if up_window is not None else 0),
            down_window=float(down_window if down_window is not None
                              else self.downscale_stabilization))
        conds: list[Condition] = []
        if stabilized != desired:
            conds.append(("AbleToScale", "True", reason, message))
        else:
            conds.append(("AbleToScale", "True", "ReadyForNewScale",
                          "recommended size matches current size"))
        out, reason, message = self._with_behavior_rate(key, up, down, current, stabilized,
                                                        min_replicas, max_replicas, now)
        conds.append(("ScalingLimited", "False" if out == stabilized else "True", reason,
                      message))
        return out, conds

    def _stabilize_with_behavior(self, key: str, current: int, desired: int, now: float, *,
                                 up_window: float, down_window: float) -> tuple[int, str, str]:
        h = self._history.setdefault(key, _History())
        up_cutoff, down_cutoff = now - up_window, now - down_window
        up_rec = down_rec = desired
        old = -1
        for i, (rec, at) in enumerate(h.recommendations):
            if at > up_cutoff:
                up_rec = min(rec, up_rec)
            if at > down_cutoff:
                down_rec = max(rec, down_rec)
            if at < up_cutoff and at < down_cutoff:
                old = i
        recommendation = max(current, up_rec)
        recommendation = min(recommendation, down_rec)
        if old >= 0:
            h.recommendations[old] = (desired, now)
        else:
            h.recommendations.append((desired, now))
        if desired >= current:
            return (recommendation, "ScaleUpStabilized", "recent recommendations were lower "
                    "than current one, applying the lowest recent recommendation")
        return (recommendation, "ScaleDownStabilized", "recent recommendations were higher "
                "than current one, applying the highest recent recommendation")

    def _with_behavior_rate(self, key: str, up: Obj, down: Obj, current: int, desired: int,
                            min_replicas: int, max_replicas: int,
                            now: float) -> tuple[int, str, str]:
        h = self._history.setdefault(key, _History())
        if desired > current:
            limit = max(scale_up_limit(current, h.up, h.down, up, now), current)
            allowed, reason, message = _up_bound(limit, max_replicas)
            if desired > allowed:
                return allowed, reason, message
        elif desired < current:
            limit = min(scale_down_limit(current, h.up, h.down, down, now), current)
            if min_replicas < limit:
                allowed, reason, message = limit, "ScaleDownLimit", (
                    "the desired replica count is decreasing faster than the maximum scale rate")
            else:
                allowed, reason, message = min_replicas, "TooFewReplicas", (
                    "the desired replica count is less than the minimum replica count")
            if desired < allowed:
                return allowed, reason, message
        return desired, "DesiredWithinRange", "the desired count is within the acceptable range"

    def store_scale_event(self, key: str, behavior: Obj | None, before: int, after: int,
                          now: float) -> None:
        """Remember a rescale for the rate policies (only autoscalers with a behavior)."""
        if behavior is None:
            return
        h = self._history.setdefault(key, _History())
        if after > before:
            events, rules, change = h.up, behavior.get("scaleUp") or {}, after - before
        else:
            events, rules, change = h.down, behavior.get("scaleDown") or {}, before - after
        longest = max((int(p.get("periodSeconds") or 0) for p in rules.get("policies") or ()),
                      default=0)
        old = -1
        for i, e in enumerate(events):
            if e.at < now - longest:
                e.outdated = True
            if e.outdated:
                old = i
        event = _ScaleEvent(change, now)
        if old >= 0:
            events[old] = event
        else:
            events.append(event)


def _with_rules(current: int, desired: int, min_replicas: int,
                max_replicas: int) -> tuple[int, str, str]:
    """The classic limits: at most max(2 × current, 4), within [min, max]."""
    up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    allowed, reason, message = _up_bound(up_limit, max_replicas)
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas", (
            "the desired replica count is less than the minimum replica count")
    if desired > allowed:
        return allowed, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def _up_bound(rate_limit: int, max_replicas: int) -> tuple[int, str, str]:
    """The highest count allowed, and what would be limiting a count above it."""
    if max_replicas > rate_limit:
        return rate_limit, "ScaleUpLimit", (
            "the desired replica count is increasing faster than the maximum scale rate")
    return max_replicas, "TooManyReplicas", (
        "the desired replica count is more than the maximum replica count")


def _changed_in_period(period: float, events: list[_ScaleEvent], now: float) -> int:
    cutoff = now - period
    return sum(e.change for e in events if e.at > cutoff)


def scale_up_limit(current: int, up: list[_ScaleEvent], down: list[_ScaleEvent], rules: Obj,
                   now: float) -> int:
    """The most replicas the scale-up policies allow now."""
    return _policy_limit(current, up, down, rules, now, up_direction=True)


def scale_down_limit(current: int, up: list[_ScaleEvent], down: list[_ScaleEvent], rules: Obj,
                     now: float) -> int:
    """The fewest replicas the scale-down policies allow now."""
    return _policy_limit(current, up, down, rules, now, up_direction=False)


def _policy_limit(current: int, up: list[_ScaleEvent], down: list[_ScaleEvent], rules: Obj,
                  now: float, *, up_direction: bool) -> int:
    """Each policy's bound from the replicas at the start of its period; ``Max`` picks
    the one allowing the biggest change, ``Min`` the smallest."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    biggest_change = select != "Min"
    pick = max if biggest_change == up_direction else min
    result: int | None = None
    for p in rules.get("policies") or ():
        period = float(p.get("periodSeconds") or 0)
        start = current - _changed_in_period(period, up, now) + \
            _changed_in_period(period, down, now)
        value = int(p.get("value") or 0)
        if p.get("type") == "Pods":
            proposed = start + value if up_direction else start - value
        elif up_direction:  # Percent, rounded up, or a small target would never grow
            proposed = math.ceil(start * (1 + value / 100))
        else:  # truncated, as Go's int32()
            proposed = int(start * (1 - value / 100))
        result = proposed if result is None else pick(result, proposed)
    if result is None:  # no policies: Go's starting value of the fold
        return -(2**31) if pick is max else 2**31 - 1
    return result
