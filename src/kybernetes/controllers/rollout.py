"""The arithmetic of Deployment rollouts, as pure functions over wire-form dicts.

What upstream keeps in ``pkg/controller/deployment/util`` and the rolling, recreate and
scaling steps of the controller, without I/O, so that each decision can be tested as a
table: maxSurge/maxUnavailable (surge rounds up, unavailable down, both zero means one
unavailable), how far the new ReplicaSet may grow and the old ones shrink, and
proportional scaling while a rollout is under way. Templates, hashes and revisions are in
:mod:`revisions`; the status and its conditions in :mod:`rolloutstatus`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from kybernetes.api.meta import parse_time

Obj = dict[str, Any]

ANN_DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
ANN_MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"


# -- fields ------------------------------------------------------------------------------


def replicas(obj: Obj | None) -> int:
    """``spec.replicas`` (1 when unset, as defaulted)."""
    if obj is None:
        return 0
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def status_count(obj: Obj | None, field: str) -> int:
    return int(((obj or {}).get("status") or {}).get(field) or 0)


def annotations_of(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def int_annotation(obj: Obj, key: str) -> int | None:
    try:
        return int(annotations_of(obj)[key])
    except (KeyError, ValueError):
        return None


def created(obj: Obj) -> float:
    return parse_time((obj.get("metadata") or {}).get("creationTimestamp")) or 0.0


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def active(rss: Iterable[Obj | None]) -> list[Obj]:
    """The ReplicaSets that want pods (upstream's ``FilterActiveReplicaSets``)."""
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def total(rss: Iterable[Obj | None], field: str | None = None) -> int:
    """The sum of ``spec.replicas``, or of a status count."""
    return sum(replicas(rs) if field is None else status_count(rs, field)
               for rs in rss if rs is not None)


# -- surge and unavailability ----------------------------------------------------------


def scaled_value(value: int | str | None, of: int, *, round_up: bool) -> int:
    """An int-or-percent of ``of`` (upstream's ``GetScaledValueFromIntOrPercent``)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"invalid value {value!r}: want an integer or a percentage")
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        raise ValueError(f"invalid value for IntOrString: invalid type: string is not a "
                         f"percentage: {text!r}")
    try:
        percent = int(text[:-1])
    except ValueError:
        raise ValueError(f"invalid value {text!r}: want an integer or a percentage") from None
    return -(-percent * of // 100) if round_up else percent * of // 100


def resolve_fenceposts(max_surge: int | str | None, max_unavailable: int | str | None,
                       desired: int) -> tuple[int, int]:
    """(surge, unavailable) for ``desired`` replicas; never both zero."""
    surge = scaled_value(max_surge, desired, round_up=True)
    unavailable = scaled_value(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # rounding made both zero: a surge might not fit, so allow one down
    return surge, unavailable


def _rolling(d: Obj) -> Obj | None:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        return None
    return strategy.get("rollingUpdate") or {"maxSurge": "25%", "maxUnavailable": "25%"}


def max_surge(d: Obj) -> int:
    rolling = _rolling(d)
    if rolling is None:
        return 0
    return resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"),
                              replicas(d))[0]


def max_unavailable(d: Obj) -> int:
    rolling = _rolling(d)
    if rolling is None or replicas(d) == 0:
        return 0
    unavailable = resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"),
                                     replicas(d))[1]
    return min(unavailable, replicas(d))


# -- ordering and sizes ------------------------------------------------------------------


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    """Oldest first, then by name (upstream's ``ReplicaSetsByCreationTimestamp``)."""
    return sorted(rss, key=lambda rs: (created(rs), name_of(rs)))


def by_size(rss: Iterable[Obj], *, newer_first: bool) -> list[Obj]:
    """Largest first; among equals the newer (scaling up) or the older (down) first."""
    ordered = sorted(rss, key=lambda rs: (created(rs), name_of(rs)), reverse=newer_first)
    return sorted(ordered, key=replicas, reverse=True)


def new_rs_new_replicas(d: Obj, all_rss: Sequence[Obj | None], new: Obj) -> int:
    """How large the new ReplicaSet may be now (upstream's ``NewRSNewReplicas``)."""
    if _rolling(d) is None:
        return replicas(d)
    rolling = _rolling(d) or {}
    surge = scaled_value(rolling.get("maxSurge"), replicas(d), round_up=True)
    current = total(all_rss)
    max_total = replicas(d) + surge
    if current >= max_total:
        return replicas(new)
    grow = min(max_total - current, replicas(d) - replicas(new))
    return replicas(new) + grow


def new_rs_target(d: Obj, all_rss: Sequence[Obj | None], new: Obj) -> int:
    """The size the rolling update gives the new ReplicaSet in this step."""
    if replicas(new) >= replicas(d):
        return replicas(d)
    return new_rs_new_replicas(d, all_rss, new)


def old_rs_targets(d: Obj, all_rss: Sequence[Obj | None], old_active: Sequence[Obj],
                   new: Obj) -> list[tuple[Obj, int]]:
    """(old ReplicaSet, smaller size) for this step of a rolling update: unhealthy
    replicas go first (they would block the rollout), then available ones while more
    than ``replicas - maxUnavailable`` stay available (upstream's
    ``reconcileOldReplicaSets``)."""
    if total(old_active) == 0:
        return []
    min_available = replicas(d) - max_unavailable(d)
    new_unavailable = replicas(new) - status_count(new, "availableReplicas")
    max_scaled_down = total(all_rss) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return []
    olds = by_creation(old_active)
    sizes = {id(rs): replicas(rs) for rs in olds}
    order: list[Obj] = []
    cleaned = 0
    for rs in olds:
        if cleaned >= max_scaled_down:
            break
        size, avail = sizes[id(rs)], status_count(rs, "availableReplicas")
        if size == 0 or size <= avail:
            continue
        down = min(max_scaled_down - cleaned, size - avail)
        sizes[id(rs)] = size - down
        cleaned += down
        order.append(rs)
    available = total([*olds, new], "availableReplicas")
    if available > min_available:
        to_remove, removed = available - min_available, 0
        for rs in olds:
            if removed >= to_remove:
                break
            size = sizes[id(rs)]
            if size == 0:
                continue
            down = min(size, to_remove - removed)
            sizes[id(rs)] = size - down
            removed += down
            if rs not in order:
                order.append(rs)
    return [(rs, sizes[id(rs)]) for rs in order if sizes[id(rs)] != replicas(rs)]


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    return (int_annotation(rs, ANN_DESIRED_REPLICAS) == replicas(d)
            and replicas(rs) == replicas(d)
            and status_count(rs, "availableReplicas") == replicas(d))


def find_active_or_latest(new: Obj | None, olds: Sequence[Obj]) -> Obj | None:
    """The only ReplicaSet with replicas, or the newest when none has any."""
    if new is None and not olds:
        return None
    newest_first = sorted(olds, key=lambda rs: (created(rs), name_of(rs)), reverse=True)
    live = active([*newest_first, new])
    if not live:
        return new if new is not None else newest_first[0]
    return live[0] if len(live) == 1 else None


def is_scaling_event(d: Obj, new: Obj | None, olds: Sequence[Obj]) -> bool:
    """Whether an active ReplicaSet was sized for another ``spec.replicas``."""
    for rs in active([*olds, new]):
        desired = int_annotation(rs, ANN_DESIRED_REPLICAS)
        if desired is not None and desired != replicas(d):
            return True
    return False


def _round(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _fraction(rs: Obj, d: Obj) -> int:
    if replicas(d) == 0:
        return -replicas(rs)
    max_now = replicas(d) + max_surge(d)
    max_before = int_annotation(rs, ANN_MAX_REPLICAS)
    if not max_before:
        max_before = status_count(d, "replicas")
        if max_before == 0:
            return 0
    return _round(replicas(rs) * max_now / max_before) - replicas(rs)


def _proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def proportional_targets(d: Obj, new: Obj | None, olds: Sequence[Obj]
                         ) -> list[tuple[Obj, int]]:
    """(ReplicaSet, size) for every active one when ``spec.replicas`` changed during a
    rollout: the change is shared in proportion to their sizes, leftovers to the largest
    (upstream's ``scale``)."""
    live = active([*olds, new])
    allowed = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = allowed - total(live)
    if to_add != 0:
        live = by_size(live, newer_first=to_add > 0)
    sizes: list[int] = []
    added = 0
    for rs in live:
        share = _proportion(rs, d, to_add, added)
        sizes.append(replicas(rs) + share)
        added += share
    if live and to_add != 0:
        sizes[0] = max(0, sizes[0] + to_add - added)
    return list(zip(live, sizes, strict=True))


# -- replica annotations ----------------------------------------------------------------


def replicas_annotations_need_update(rs: Obj, desired: int, max_replicas: int) -> bool:
    ann = annotations_of(rs)
    return ann.get(ANN_DESIRED_REPLICAS) != str(desired) or \
        ann.get(ANN_MAX_REPLICAS) != str(max_replicas)


def set_replicas_annotations(target: dict[str, str], desired: int, max_replicas: int) -> bool:
    changed = False
    for key, value in ((ANN_DESIRED_REPLICAS, str(desired)),
                       (ANN_MAX_REPLICAS, str(max_replicas))):
        if target.get(key) != value:
            target[key] = value
            changed = True
    return changed
