"""What the Job controller decides, as pure functions over Jobs and Pods (wire-form dicts).

- :class:`Intervals`: sets of completion indexes in the ``status.completedIndexes`` form
  (``"1,3-5"``), as upstream's ``orderedIntervals``;
- :func:`match_pod_failure_policy`: the first ``podFailurePolicy`` rule a failed pod
  matches, with upstream's messages;
- :func:`match_success_policy`: whether ``successPolicy`` is met by the succeeded indexes;
- :class:`BackoffRecord`: the exponential back-off between pod creations that failures
  cause (``10 s * 2**(failures-1)``, capped at 6 minutes);
- pod helpers: phase tests, completion index, finish time, readiness.

::

    >>> str(Intervals.parse("4,0-2", completions=10).with_indexes([3, 7]))
    '0-4,7'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kybernetes.api.meta import parse_time

Obj = dict[str, Any]

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
INDEX_FAILURE_COUNT = "batch.kubernetes.io/job-index-failure-count"
INDEX_IGNORED_FAILURE_COUNT = "batch.kubernetes.io/job-index-ignored-failure-count"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"

DEFAULT_BACKOFF = 10.0
MAX_BACKOFF = 360.0

# -- completion indexes ----------------------------------------------------------------


@dataclass(frozen=True)
class Intervals:
    """Sorted, disjoint, non-adjacent closed intervals of indexes."""

    spans: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str | None, *, completions: int) -> Intervals:
        """``"1,3-5"`` → intervals; bad parts and indexes ≥ ``completions`` are dropped,
        as upstream's ``parseIndexesFromString`` does."""
        indexes: list[int] = []
        for part in (text or "").split(","):
            lo_text, sep, hi_text = part.partition("-")
            try:
                lo = int(lo_text)
                hi = int(hi_text) if sep else lo
            except ValueError:
                continue
            if lo < 0 or hi < lo:
                continue
            indexes.extend(range(lo, min(hi, completions - 1) + 1))
        return cls().with_indexes(indexes)

    def with_indexes(self, indexes: Iterable[int]) -> Intervals:
        """These intervals plus ``indexes``."""
        points = sorted(set(indexes))
        if not points:
            return self
        merged: list[list[int]] = []
        for lo, hi in sorted([*self.spans, *((p, p) for p in points)]):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return Intervals(tuple((lo, hi) for lo, hi in merged))

    def merge(self, other: Intervals) -> Intervals:
        return self.with_indexes(i for lo, hi in other.spans for i in range(lo, hi + 1))

    def has(self, index: int) -> bool:
        return any(lo <= index <= hi for lo, hi in self.spans)

    def total(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.spans)

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.spans)

    def __bool__(self) -> bool:
        return bool(self.spans)


def first_pending_indexes(non_pending: Intervals, count: int, completions: int) -> list[int]:
    """The lowest ``count`` indexes below ``completions`` not in ``non_pending``."""
    result: list[int] = []
    candidate = 0
    for lo, hi in non_pending.spans:
        while candidate < completions and len(result) < count and candidate < lo:
            result.append(candidate)
            candidate += 1
        candidate = max(candidate, hi + 1)
    while candidate < completions and len(result) < count:
        result.append(candidate)
        candidate += 1
    return result


# -- pods --------------------------------------------------------------------------------


def phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_terminal(pod: Obj) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def is_deleting(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    """Neither terminal nor being deleted (``controller.FilterActivePods``)."""
    return not is_terminal(pod) and not is_deleting(pod)


def is_terminating(pod: Obj) -> bool:
    return is_deleting(pod) and not is_terminal(pod)


def is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def has_tracking_finalizer(pod: Obj) -> bool:
    return TRACKING_FINALIZER in ((pod.get("metadata") or {}).get("finalizers") or [])


def completion_index(pod: Obj) -> int | None:
    """The pod's ``job-completion-index`` annotation, if it is a valid index."""
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX)
    if text is None or not str(text).isdigit():
        return None
    return int(text)


def _annotation_int(pod: Obj, name: str) -> int:
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(name)
    return int(text) if text is not None and str(text).isdigit() else 0


def index_failure_count(pod: Obj) -> int:
    return _annotation_int(pod, INDEX_FAILURE_COUNT)


def index_ignored_failure_count(pod: Obj) -> int:
    return _annotation_int(pod, INDEX_IGNORED_FAILURE_COUNT)


def only_replace_failed_pods(job: Obj) -> bool:
    """``podReplacementPolicy: Failed`` (the default with a ``podFailurePolicy``)."""
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def is_pod_failed(pod: Obj, job: Obj) -> bool:
    """Failed, or (unless only failed pods are replaced) being deleted before it succeeded.

    A pod whose final deletion was asked for (grace period 0) while not Succeeded counts
    as Failed too: the node agent has stopped it, or it never ran (upstream's pod
    garbage collector marks such pods Failed)."""
    if phase(pod) == "Failed":
        return True
    md = pod.get("metadata") or {}
    if is_deleting(pod) and md.get("deletionGracePeriodSeconds") == 0 and \
            phase(pod) != "Succeeded":
        return True
    if only_replace_failed_pods(job):
        return False
    return is_deleting(pod) and phase(pod) != "Succeeded"


def finished_time(pod: Obj) -> float:
    """When the pod ended: its containers' last ``finishedAt``, else the Ready=False
    transition, else its deletion time, else its creation (``getFinishedTime``)."""
    status = pod.get("status") or {}
    latest: float | None = None
    for cs in status.get("containerStatuses") or []:
        t = parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        if t is not None and (latest is None or t > latest):
            latest = t
    if latest is not None:
        return latest
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "False":
            t = parse_time(c.get("lastTransitionTime"))
            if t is not None:
                return t
    md = pod.get("metadata") or {}
    return parse_time(md.get("deletionTimestamp")) or parse_time(md.get("creationTimestamp")) \
        or 0.0


# -- pod failure policy ------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyMatch:
    """The outcome of :func:`match_pod_failure_policy` for one failed pod."""

    count_failed: bool = True
    action: str | None = None
    """``FailJob``, ``Ignore``, ``Count``, ``FailIndex``, or None when no rule matched."""
    message: str | None = None
    """For ``FailJob``: the job's failure message."""


def _exit_code_match(statuses: list[Obj], req: Obj) -> Obj | None:
    for cs in statuses:
        term = (cs.get("state") or {}).get("terminated")
        if term is None:
            continue
        if req.get("containerName") not in (None, cs.get("name")):
            continue
        code = int(term.get("exitCode") or 0)
        if code == 0:
            continue
        values = req.get("values") or []
        if (req.get("operator") == "In" and code in values) or \
                (req.get("operator") == "NotIn" and code not in values):
            return cs
    return None


def match_pod_failure_policy(policy: Obj | None, pod: Obj) -> PolicyMatch:
    """The first rule (in order) that the failed ``pod`` matches, as upstream's
    ``matchPodFailurePolicy``: exit codes of the containers (then init containers) that
    ended non-zero, or a pod condition of the given type and status."""
    if policy is None:
        return PolicyMatch()
    md, status = pod.get("metadata") or {}, pod.get("status") or {}
    for i, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes") is not None:
            req = rule["onExitCodes"]
            cs = _exit_code_match(status.get("containerStatuses") or [], req) or \
                _exit_code_match(status.get("initContainerStatuses") or [], req)
            if cs is None:
                continue
            message = (f"Container {cs.get('name')} for pod {md.get('namespace')}/"
                       f"{md.get('name')} failed with exit code "
                       f"{cs['state']['terminated'].get('exitCode')} matching {action} rule "
                       f"at index {i}")
        elif rule.get("onPodConditions") is not None:
            cond = next((c for c in status.get("conditions") or []
                         for p in rule["onPodConditions"]
                         if c.get("type") == p.get("type")
                         and c.get("status") == (p.get("status") or "True")), None)
            if cond is None:
                continue
            message = (f"Pod {md.get('namespace')}/{md.get('name')} has condition "
                       f"{cond.get('type')} matching {action} rule at index {i}")
        else:
            continue
        if action == "Ignore":
            return PolicyMatch(count_failed=False, action="Ignore")
        if action == "FailJob":
            return PolicyMatch(action="FailJob", message=message)
        if action in ("Count", "FailIndex"):
            return PolicyMatch(action=action)
    return PolicyMatch()


def fail_job_message(job: Obj, pods: Iterable[Obj]) -> str | None:
    """The message of the first failed pod that a ``FailJob`` rule matches."""
    policy = (job.get("spec") or {}).get("podFailurePolicy")
    if policy is None:
        return None
    for pod in pods:
        if is_pod_failed(pod, job):
            message = match_pod_failure_policy(policy, pod).message
            if message is not None:
                return message
    return None


# -- success policy ----------------------------------------------------------------------


def _overlap(rule: Intervals, succeeded: Intervals) -> int:
    return sum(max(0, min(rh, sh) - max(rl, sl) + 1)
               for rl, rh in rule.spans for sl, sh in succeeded.spans)


def match_success_policy(policy: Obj | None, completions: int,
                         succeeded: Intervals) -> str | None:
    """``"Matched rules at index N"`` for the first rule the succeeded indexes meet."""
    if policy is None or not succeeded:
        return None
    for i, rule in enumerate(policy.get("rules") or []):
        count = rule.get("succeededCount")
        if rule.get("succeededIndexes") is not None:
            required = Intervals.parse(rule["succeededIndexes"], completions=completions)
            if not required:
                continue
            contains = _overlap(required, succeeded)
            if contains == required.total() or (count is not None and contains >= count):
                return f"Matched rules at index {i}"
        elif count is not None and succeeded.total() >= count:
            return f"Matched rules at index {i}"
    return None


# -- back-off between failure-caused pod creations -----------------------------------------


def backoff_delay(failures: int, *, base: float = DEFAULT_BACKOFF,
                  cap: float = MAX_BACKOFF) -> float:
    """``base * 2**(failures-1)``, capped at ``cap``; 0 without failures."""
    if failures <= 0:
        return 0.0
    delay = base
    for _ in range(1, failures):
        delay *= 2
        if delay >= cap:
            return cap
    return min(delay, cap)


@dataclass
class BackoffRecord:
    """Failures since the last success and when the last one happened (per Job)."""

    failures: int = 0
    last_failure: float | None = None

    def updated(self, new_succeeded: list[Obj], new_failed: list[Obj]) -> BackoffRecord:
        """The record after these newly finished pods (upstream's ``newBackoffRecord``)."""
        failed_times = sorted(finished_time(p) for p in new_failed)
        if not new_succeeded:
            if not failed_times:
                return BackoffRecord(self.failures, self.last_failure)
            return BackoffRecord(self.failures + len(failed_times), failed_times[-1])
        last_success = max(finished_time(p) for p in new_succeeded)
        after = [t for t in failed_times if t > last_success]
        return BackoffRecord(len(after), after[-1] if after else None)

    def remaining(self, now: float, *, base: float = DEFAULT_BACKOFF,
                  cap: float = MAX_BACKOFF) -> float:
        """Seconds to wait before creating a pod again (0: create now)."""
        if self.failures == 0 or self.last_failure is None:
            return 0.0
        delay = backoff_delay(self.failures, base=base, cap=cap)
        return max(0.0, delay - (now - self.last_failure))


@dataclass
class BackoffStore:
    """The records of all Jobs, by key (kept in memory, as upstream does)."""

    records: dict[str, BackoffRecord] = field(default_factory=dict)

    def get(self, key: str) -> BackoffRecord:
        return self.records.get(key) or BackoffRecord()

    def put(self, key: str, record: BackoffRecord) -> None:
        self.records[key] = record

    def remove(self, key: str) -> None:
        self.records.pop(key, None)


# -- conditions ----------------------------------------------------------------------------


def find_condition(job: Obj, type_: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def condition_true(job: Obj, type_: str) -> bool:
    c = find_condition(job, type_)
    return c is not None and c.get("status") == "True"


def is_finished(job: Obj) -> bool:
    """A Complete or Failed condition is True."""
    return condition_true(job, "Complete") or condition_true(job, "Failed")


def new_condition(type_: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {"type": type_, "status": status, "lastProbeTime": now,
            "lastTransitionTime": now, "reason": reason, "message": message}


def ensure_condition(conditions: list[Obj], type_: str, status: str, reason: str,
                     message: str, now: str) -> bool:
    """Set a condition in place (``ensureJobConditionStatus``); True if it changed. A
    missing condition is added only when its status is not False."""
    for i, c in enumerate(conditions):
        if c.get("type") == type_:
            if (c.get("status"), c.get("reason"), c.get("message")) != (status, reason, message):
                conditions[i] = new_condition(type_, status, reason, message, now)
                return True
            return False
    if status != "False":
        conditions.append(new_condition(type_, status, reason, message, now))
        return True
    return False
