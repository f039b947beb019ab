"""What controllers ask of pods: active, ready, available, and which to delete first.

The ranking is upstream's ``ActivePodsWithRanks``: when a ReplicaSet has too many pods
it deletes, in order, those not yet on a node, then pending before unknown before
running, not ready before ready, a lower ``controller.kubernetes.io/pod-deletion-cost``
first, those on nodes crowded with related pods first, the ones ready for the shortest
time, more restarts, and then the newest.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from kybernetes.api.meta import parse_time

Obj = dict[str, Any]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def is_active(pod: Obj) -> bool:
    """Not finished and not being deleted (upstream's ``IsPodActive``)."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and \
        not (pod.get("metadata") or {}).get("deletionTimestamp")


def condition(obj: Obj, type_: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def is_ready(pod: Obj) -> bool:
    c = condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def ready_since(pod: Obj) -> float | None:
    """When the pod last became ready, or None when it is not ready."""
    c = condition(pod, "Ready")
    if c is None or c.get("status") != "True":
        return None
    return parse_time(c.get("lastTransitionTime"))


def is_available(pod: Obj, min_ready_seconds: int, now: float) -> bool:
    """Ready for at least ``min_ready_seconds`` (upstream's ``IsPodAvailable``)."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + min_ready_seconds < now


def available_at(pod: Obj, min_ready_seconds: int) -> float | None:
    """When a ready pod becomes available (None when it is not ready)."""
    since = ready_since(pod)
    return None if since is None else since + min_ready_seconds


def _deletion_cost(pod: Obj) -> int:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _restarts(pod: Obj) -> int:
    return max((int(s.get("restartCount") or 0)
                for s in (pod.get("status") or {}).get("containerStatuses") or ()), default=0)


def _created(pod: Obj) -> float | None:
    return parse_time((pod.get("metadata") or {}).get("creationTimestamp"))


def _newer_first(a: float | None, b: float | None) -> int:
    """-1 when ``a`` comes first: an unknown time, then the later one."""
    if a == b:
        return 0
    if a is None:
        return -1
    if b is None:
        return 1
    return -1 if a > b else 1


def _compare(a: tuple[Obj, int], b: tuple[Obj, int]) -> int:
    (pa, rank_a), (pb, rank_b) = a, b
    sa, sb = pa.get("spec") or {}, pb.get("spec") or {}
    node_a, node_b = bool(sa.get("nodeName")), bool(sb.get("nodeName"))
    if node_a != node_b:
        return -1 if not node_a else 1
    phase_a = _PHASE_ORDER.get((pa.get("status") or {}).get("phase") or "", 0)
    phase_b = _PHASE_ORDER.get((pb.get("status") or {}).get("phase") or "", 0)
    if phase_a != phase_b:
        return -1 if phase_a < phase_b else 1
    ready_a, ready_b = is_ready(pa), is_ready(pb)
    if ready_a != ready_b:
        return -1 if not ready_a else 1
    cost_a, cost_b = _deletion_cost(pa), _deletion_cost(pb)
    if cost_a != cost_b:
        return -1 if cost_a < cost_b else 1
    if rank_a != rank_b:
        return -1 if rank_a > rank_b else 1
    if ready_a and ready_b:
        order = _newer_first(ready_since(pa), ready_since(pb))
        if order:
            return order
    restarts_a, restarts_b = _restarts(pa), _restarts(pb)
    if restarts_a != restarts_b:
        return -1 if restarts_a > restarts_b else 1
    order = _newer_first(_created(pa), _created(pb))
    if order:
        return order
    name_a = str((pa.get("metadata") or {}).get("name", ""))
    name_b = str((pb.get("metadata") or {}).get("name", ""))
    return (name_a > name_b) - (name_a < name_b)


def rank_for_deletion(pods: Sequence[Obj], related: Iterable[Obj] = ()) -> list[Obj]:
    """``pods`` in the order they should be deleted. ``related`` are the active pods of
    every ReplicaSet with the same controller: a pod sharing its node with more of them
    goes first, spreading what remains."""
    on_node = Counter(str((p.get("spec") or {}).get("nodeName") or "")
                      for p in related if is_active(p))
    ranked = [(p, on_node[str((p.get("spec") or {}).get("nodeName") or "")])
              if (p.get("spec") or {}).get("nodeName") else (p, 0) for p in pods]
    ranked.sort(key=functools.cmp_to_key(_compare))
    return [p for p, _ in ranked]


def pods_to_delete(pods: Sequence[Obj], count: int, related: Iterable[Obj] = ()
                   ) -> list[Obj]:
    """The ``count`` pods to delete first (upstream's ``getPodsToDelete``)."""
    if count <= 0:
        return []
    if count >= len(pods):
        return list(pods)
    return rank_for_deletion(pods, related)[:count]
