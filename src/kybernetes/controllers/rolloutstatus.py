"""A Deployment's status: counts from its ReplicaSets and the ``Available`` and
``Progressing`` conditions, as upstream's ``syncRolloutStatus`` computes them: complete
(``NewReplicaSetAvailable``), progressing (``ReplicaSetUpdated``, lastUpdateTime moves
on), or stuck past ``progressDeadlineSeconds`` (``ProgressDeadlineExceeded``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kybernetes.api.meta import parse_time, rfc3339
from kybernetes.controllers.rollout import max_unavailable, name_of, replicas, status_count, total

Obj = dict[str, Any]

AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
FAILED_RS_CREATE = "FailedRSCreate"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

_NO_DEADLINE = 2**31 - 1


def new_condition(type_: str, status: str, reason: str, message: str, now: float) -> Obj:
    stamp = rfc3339(now)
    return {"type": type_, "status": status, "lastUpdateTime": stamp,
            "lastTransitionTime": stamp, "reason": reason, "message": message}


def get_condition(status: Obj, type_: str) -> Obj | None:
    for c in status.get("conditions") or ():
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def set_condition(status: Obj, cond: Obj) -> None:
    """Set a condition unless one of the same status and reason is there; a same-status
    one keeps its lastTransitionTime."""
    current = get_condition(status, cond["type"])
    if current is not None and current.get("status") == cond["status"] and \
            current.get("reason") == cond["reason"]:
        return
    if current is not None and current.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(cond)


def remove_condition(status: Obj, type_: str) -> None:
    conds = [c for c in status.get("conditions") or () if c.get("type") != type_]
    if conds:
        status["conditions"] = conds
    else:
        status.pop("conditions", None)


def has_progress_deadline(d: Obj) -> bool:
    value = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return value is not None and int(value) != _NO_DEADLINE


def _put(status: Obj, key: str, value: int) -> None:
    if value:
        status[key] = value


def calculate_status(all_rss: Sequence[Obj | None], new: Obj | None, d: Obj, now: float
                     ) -> Obj:
    """Counts from the ReplicaSets, the Deployment's conditions, and Available."""
    old = d.get("status") or {}
    available = total(all_rss, "availableReplicas")
    status: Obj = {}
    _put(status, "observedGeneration", int(d["metadata"].get("generation") or 0))
    _put(status, "replicas", total(all_rss, "replicas"))
    _put(status, "updatedReplicas", status_count(new, "replicas"))
    _put(status, "readyReplicas", total(all_rss, "readyReplicas"))
    _put(status, "availableReplicas", available)
    _put(status, "unavailableReplicas", max(0, total(all_rss) - available))
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = [dict(c) for c in old["conditions"]]
    if available >= replicas(d) - max_unavailable(d):
        set_condition(status, new_condition(AVAILABLE, "True", MIN_AVAILABLE,
                                            "Deployment has minimum availability.", now))
    else:
        set_condition(status, new_condition(AVAILABLE, "False", MIN_UNAVAILABLE,
                                            "Deployment does not have minimum availability.",
                                            now))
    return status


def is_complete(d: Obj, status: Obj) -> bool:
    """Every replica updated and available, and the latest spec observed."""
    want = replicas(d)
    return (int(status.get("updatedReplicas") or 0) == want
            and int(status.get("replicas") or 0) == want
            and int(status.get("availableReplicas") or 0) == want
            and int(status.get("observedGeneration") or 0)
            >= int(d["metadata"].get("generation") or 0))


def is_progressing(d: Obj, status: Obj) -> bool:
    """Whether ``status`` shows progress over the Deployment's current status."""
    old = d.get("status") or {}

    def n(s: Obj, k: str) -> int:
        return int(s.get(k) or 0)

    return (n(status, "updatedReplicas") > n(old, "updatedReplicas")
            or n(status, "replicas") - n(status, "updatedReplicas")
            < n(old, "replicas") - n(old, "updatedReplicas")
            or n(status, "readyReplicas") > n(old, "readyReplicas")
            or n(status, "availableReplicas") > n(old, "availableReplicas"))


def is_timed_out(d: Obj, status: Obj, now: float) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    deadline = int((d.get("spec") or {}).get("progressDeadlineSeconds") or 0)
    return since is not None and since + deadline < now


def _replica_failure(all_rss: Sequence[Obj | None], new: Obj | None) -> Obj | None:
    for rs in [new, *all_rss]:
        for c in ((rs or {}).get("status") or {}).get("conditions") or ():
            if c.get("type") == REPLICA_FAILURE:
                return {"type": REPLICA_FAILURE, "status": c.get("status"),
                        "lastUpdateTime": c.get("lastTransitionTime"),
                        "lastTransitionTime": c.get("lastTransitionTime"),
                        "reason": c.get("reason"), "message": c.get("message")}
    return None


def rollout_status(all_rss: Sequence[Obj | None], new: Obj | None, d: Obj, now: float
                   ) -> Obj:
    """The status after a rollout step, with Progressing updated: complete, progressing
    (lastUpdateTime moves on), or timed out past ``progressDeadlineSeconds``
    (upstream's ``syncRolloutStatus``)."""
    status = calculate_status(all_rss, new, d, now)
    name = name_of(new) if new is not None else ""
    if not has_progress_deadline(d):
        remove_condition(status, PROGRESSING)
    current = get_condition(d.get("status") or {}, PROGRESSING)
    complete = int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0) \
        and current is not None and current.get("reason") == NEW_RS_AVAILABLE
    if has_progress_deadline(d) and not complete:
        what = f'ReplicaSet "{name}"' if new is not None else f'Deployment "{name_of(d)}"'
        if is_complete(d, status):
            set_condition(status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                                f"{what} has successfully progressed.", now))
        elif is_progressing(d, status):
            cond = new_condition(PROGRESSING, "True", RS_UPDATED, f"{what} is progressing.",
                                 now)
            if current is not None:
                if current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                remove_condition(status, PROGRESSING)
            set_condition(status, cond)
        elif is_timed_out(d, status, now):
            set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT,
                                                f"{what} has timed out progressing.", now))
    failure = _replica_failure(all_rss, new)
    if failure is not None:
        set_condition(status, failure)
    else:
        remove_condition(status, REPLICA_FAILURE)
    return status


def stuck_requeue_after(d: Obj, status: Obj, now: float) -> float | None:
    """Seconds until a rollout that has not progressed would pass its deadline (None:
    nothing to check later), as upstream's ``requeueStuckDeployment``."""
    cond = get_condition(status, PROGRESSING)
    if not has_progress_deadline(d) or cond is None or is_complete(d, status) or \
            cond.get("reason") == TIMED_OUT:
        return None
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return None
    deadline = int((d.get("spec") or {}).get("progressDeadlineSeconds") or 0)
    return max(0.0, since + deadline - now)


def status_equal(a: Obj | None, b: Obj | None) -> bool:
    """Statuses equal as Go compares them (a missing count is zero)."""
    def norm(s: Obj | None) -> Obj:
        return {k: v for k, v in (s or {}).items() if v not in (0, None, [], {})}
    return norm(a) == norm(b)
