"""The Job controller: completion indexes, pod failure and success policies, back-off,
what to create and delete, and whole syncs against an in-memory API on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.unit.batchfakes import FakeAPI

from kybernetes.aio.clock import FakeClock
from kybernetes.api.meta import rfc3339
from kybernetes.controllers.job import JobController
from kybernetes.controllers.jobpods import (
    clean_uncounted,
    generate_name,
    past_backoff_limit_on_failure,
    pod_from_template,
    pods_for_removal,
    want_active,
)
from kybernetes.controllers.jobpolicy import (
    TRACKING_FINALIZER,
    BackoffRecord,
    Intervals,
    backoff_delay,
    ensure_condition,
    first_pending_indexes,
    is_pod_failed,
    match_pod_failure_policy,
    match_success_policy,
)
from kybernetes.controllers.ttlafterfinished import expires_at

Obj = dict[str, Any]
T0 = 1_700_000_000.0


def pod(name: str = "p", *, phase: str = "Running", index: int | None = None,
        exit_code: int | None = None, container: str = "main", finished: float | None = None,
        conditions: list[Obj] | None = None, deleting: bool = False, grace: int | None = None,
        node: str = "n1", ready: bool = False, restarts: int = 0, init: bool = False,
        created: float = T0) -> Obj:
    md: Obj = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
               "creationTimestamp": rfc3339(created), "finalizers": [TRACKING_FINALIZER]}
    if index is not None:
        md["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
    if deleting:
        md["deletionTimestamp"] = rfc3339(created + 1)
        if grace is not None:
            md["deletionGracePeriodSeconds"] = grace
    state: Obj = {"running": {}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code,
                                "finishedAt": rfc3339(finished if finished is not None
                                                      else created + 10)}}
    cs = {"name": container, "state": state, "restartCount": restarts}
    conds = list(conditions or [])
    if ready:
        conds.append({"type": "Ready", "status": "True"})
    status: Obj = {"phase": phase, "conditions": conds,
                   "initContainerStatuses" if init else "containerStatuses": [cs]}
    return {"metadata": md, "spec": {"nodeName": node}, "status": status}


# -- completion indexes -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "completions", "want", "total"), [
    pytest.param("1,3-5", 10, "1,3-5", 4, id="as-written"),
    pytest.param("5,1-3", 10, "1-3,5", 4, id="sorted"),
    pytest.param("0-2,3,4", 10, "0-4", 5, id="adjacent-merged"),
    pytest.param("2-3,1-4", 10, "1-4", 4, id="overlap-merged"),
    pytest.param("1-9", 5, "1-4", 4, id="cut-at-completions"),
    pytest.param("7", 5, "", 0, id="beyond-completions"),
    pytest.param("x,2,3-a,5-4", 10, "2", 1, id="bad-parts-dropped"),
    pytest.param("", 3, "", 0, id="empty"),
    pytest.param(None, 3, "", 0, id="none"),
])
def test_intervals_parse_and_format(text: str | None, completions: int, want: str,
                                    total: int) -> None:
    """completedIndexes text round-trips in upstream's canonical form."""
    iv = Intervals.parse(text, completions=completions)
    assert str(iv) == want
    assert iv.total() == total


@pytest.mark.parametrize(("start", "add", "want"), [
    pytest.param("", [3, 1, 2], "1-3", id="from-empty"),
    pytest.param("0,4", [2], "0,2,4", id="isolated"),
    pytest.param("0,4", [1, 2, 3], "0-4", id="bridges-gap"),
    pytest.param("5-7", [8, 4], "4-8", id="extends-both-ends"),
    pytest.param("1-3", [2, 2], "1-3", id="already-there"),
])
def test_intervals_with_indexes(start: str, add: list[int], want: str) -> None:
    """Adding indexes keeps the intervals disjoint and merged."""
    iv = Intervals.parse(start, completions=100).with_indexes(add)
    assert str(iv) == want
    assert all(iv.has(i) for i in add)


@pytest.mark.parametrize(("non_pending", "count", "completions", "want"), [
    pytest.param("", 3, 5, [0, 1, 2], id="lowest-first"),
    pytest.param("0-1,3", 3, 6, [2, 4, 5], id="skips-done"),
    pytest.param("0-4", 2, 5, [], id="all-done"),
    pytest.param("1", 10, 3, [0, 2], id="bounded-by-completions"),
    pytest.param("", 0, 3, [], id="none-wanted"),
])
def test_first_pending_indexes(non_pending: str, count: int, completions: int,
                               want: list[int]) -> None:
    """Indexes to start next: the lowest not succeeded, running or failed."""
    iv = Intervals.parse(non_pending, completions=completions)
    assert first_pending_indexes(iv, count, completions) == want


# -- back-off ------------------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "base", "want"), [
    pytest.param(0, 10.0, 0.0, id="no-failure"),
    pytest.param(1, 10.0, 10.0, id="first"),
    pytest.param(2, 10.0, 20.0, id="doubles"),
    pytest.param(3, 10.0, 40.0, id="doubles-again"),
    pytest.param(6, 10.0, 320.0, id="below-cap"),
    pytest.param(7, 10.0, 360.0, id="capped-6min"),
    pytest.param(1000, 10.0, 360.0, id="many-capped"),
    pytest.param(3, 1.0, 4.0, id="test-base"),
])
def test_backoff_delay(failures: int, base: float, want: float) -> None:
    """10 s doubling per failure since the last success, capped at 6 minutes."""
    assert backoff_delay(failures, base=base) == want


@pytest.mark.parametrize(("record", "succeeded", "failed", "want"), [
    pytest.param(BackoffRecord(), [], [], BackoffRecord(), id="nothing-new"),
    pytest.param(BackoffRecord(), [], [T0 + 5, T0 + 3], BackoffRecord(2, T0 + 5),
                 id="failures-add-up"),
    pytest.param(BackoffRecord(2, T0), [], [T0 + 7], BackoffRecord(3, T0 + 7),
                 id="adds-to-old"),
    pytest.param(BackoffRecord(4, T0), [T0 + 5], [], BackoffRecord(0, None),
                 id="success-resets"),
    pytest.param(BackoffRecord(4, T0), [T0 + 5], [T0 + 2, T0 + 8, T0 + 9],
                 BackoffRecord(2, T0 + 9), id="only-failures-after-success"),
])
def test_backoff_record_updated(record: BackoffRecord, succeeded: list[float],
                                failed: list[float], want: BackoffRecord) -> None:
    """Failures after the last success count, timed by the pods' finish times."""
    done = [pod(f"s{i}", phase="Succeeded", exit_code=0, finished=t)
            for i, t in enumerate(succeeded)]
    bad = [pod(f"f{i}", phase="Failed", exit_code=1, finished=t) for i, t in enumerate(failed)]
    assert record.updated(done, bad) == want


@pytest.mark.parametrize(("record", "now", "want"), [
    pytest.param(BackoffRecord(), T0, 0.0, id="none"),
    pytest.param(BackoffRecord(1, T0), T0 + 3, 7.0, id="first-failure"),
    pytest.param(BackoffRecord(3, T0), T0 + 10, 30.0, id="third-failure"),
    pytest.param(BackoffRecord(2, T0), T0 + 25, 0.0, id="passed"),
])
def test_backoff_remaining(record: BackoffRecord, now: float, want: float) -> None:
    """What is left of the back-off since the last failure."""
    assert record.remaining(now) == want


# -- pod failure policy ------------------------------------------------------------------


def _rule(action: str, *, codes: list[int] | None = None, op: str = "In",
          container: str | None = None, conditions: list[Obj] | None = None) -> Obj:
    if conditions is not None:
        return {"action": action, "onPodConditions": conditions}
    req: Obj = {"operator": op, "values": codes or []}
    if container:
        req["containerName"] = container
    return {"action": action, "onExitCodes": req}


_DISRUPTION = [{"type": "DisruptionTarget", "status": "True"}]


@pytest.mark.parametrize(("rules", "failed", "want"), [
    pytest.param(None, pod(phase="Failed", exit_code=42), (True, None, None), id="no-policy"),
    pytest.param([_rule("FailJob", codes=[42])], pod(phase="Failed", exit_code=42),
                 (True, "FailJob", "Container main for pod ns/p failed with exit code 42 "
                                   "matching FailJob rule at index 0"), id="fail-job-in"),
    pytest.param([_rule("FailJob", codes=[1, 2], op="NotIn")],
                 pod(phase="Failed", exit_code=3),
                 (True, "FailJob", "Container main for pod ns/p failed with exit code 3 "
                                   "matching FailJob rule at index 0"), id="fail-job-not-in"),
    pytest.param([_rule("FailJob", codes=[1], op="NotIn")], pod(phase="Failed", exit_code=1),
                 (True, None, None), id="not-in-excluded"),
    pytest.param([_rule("Ignore", codes=[42], container="other")],
                 pod(phase="Failed", exit_code=42), (True, None, None),
                 id="other-container"),
    pytest.param([_rule("Count", codes=[0])], pod(phase="Failed", exit_code=0),
                 (True, None, None), id="exit-zero-never-matches"),
    pytest.param([_rule("Ignore", conditions=[{"type": "DisruptionTarget",
                                               "status": "True"}])],
                 pod(phase="Failed", exit_code=137, conditions=_DISRUPTION),
                 (False, "Ignore", None), id="ignore-disruption"),
    pytest.param([_rule("FailJob", conditions=[{"type": "DisruptionTarget",
                                                "status": "True"}])],
                 pod(phase="Failed", exit_code=137, conditions=_DISRUPTION),
                 (True, "FailJob", "Pod ns/p has condition DisruptionTarget matching FailJob "
                                   "rule at index 0"), id="fail-job-condition"),
    pytest.param([_rule("Ignore", codes=[5]), _rule("Count", codes=[42]),
                  _rule("FailJob", codes=[42])], pod(phase="Failed", exit_code=42),
                 (True, "Count", None), id="first-match-wins"),
    pytest.param([_rule("FailIndex", codes=[42])], pod(phase="Failed", exit_code=42),
                 (True, "FailIndex", None), id="fail-index"),
    pytest.param([_rule("FailJob", codes=[7])], pod(phase="Failed", exit_code=7, init=True),
                 (True, "FailJob", "Container main for pod ns/p failed with exit code 7 "
                                   "matching FailJob rule at index 0"), id="init-container"),
])
def test_match_pod_failure_policy(rules: list[Obj] | None, failed: Obj,
                                  want: tuple[bool, str | None, str | None]) -> None:
    """Rules in order, exit codes (non-zero, In/NotIn, per container) or conditions."""
    match = match_pod_failure_policy(None if rules is None else {"rules": rules}, failed)
    assert (match.count_failed, match.action, match.message) == want


@pytest.mark.parametrize(("p", "job_spec", "want"), [
    pytest.param(pod(phase="Failed"), {}, True, id="failed"),
    pytest.param(pod(phase="Succeeded"), {}, False, id="succeeded"),
    pytest.param(pod(deleting=True), {}, True, id="terminating-counts"),
    pytest.param(pod(deleting=True), {"podReplacementPolicy": "Failed"}, False,
                 id="terminating-waits-when-replacing-failed-only"),
    pytest.param(pod(deleting=True, grace=0), {"podReplacementPolicy": "Failed"}, True,
                 id="stopped-by-the-node"),
    pytest.param(pod(phase="Succeeded", deleting=True, grace=0), {}, False,
                 id="deleted-after-success"),
])
def test_is_pod_failed(p: Obj, job_spec: Obj, want: bool) -> None:
    """What counts as a failed pod under each podReplacementPolicy."""
    assert is_pod_failed(p, {"spec": job_spec}) is want


# -- success policy --------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "succeeded", "want"), [
    pytest.param([{"succeededIndexes": "0"}], "0", "Matched rules at index 0", id="leader"),
    pytest.param([{"succeededIndexes": "0-2"}], "0,2", None, id="missing-one"),
    pytest.param([{"succeededIndexes": "0-4", "succeededCount": 2}], "1,3,7",
                 "Matched rules at index 0", id="count-within-indexes"),
    pytest.param([{"succeededIndexes": "0-4", "succeededCount": 3}], "1,3,7", None,
                 id="count-within-indexes-short"),
    pytest.param([{"succeededCount": 3}], "5-7", "Matched rules at index 0", id="count-only"),
    pytest.param([{"succeededIndexes": "9"}, {"succeededCount": 1}], "2",
                 "Matched rules at index 1", id="second-rule"),
    pytest.param([{"succeededCount": 1}], "", None, id="nothing-succeeded"),
])
def test_match_success_policy(rules: list[Obj], succeeded: str, want: str | None) -> None:
    """successPolicy rules: all listed indexes, or enough of them, or enough in all."""
    iv = Intervals.parse(succeeded, completions=10)
    assert match_success_policy({"rules": rules}, 10, iv) == want


# -- what to run -------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "active", "succeeded", "want"), [
    pytest.param({"completions": 5, "parallelism": 2}, 0, 0, 2, id="parallelism-bound"),
    pytest.param({"completions": 5, "parallelism": 2}, 2, 4, 1, id="remaining-bound"),
    pytest.param({"completions": 5, "parallelism": 2}, 1, 6, 0, id="overdone"),
    pytest.param({"parallelism": 3}, 0, 0, 3, id="work-queue-start"),
    pytest.param({"parallelism": 3}, 2, 1, 2, id="work-queue-after-success"),
    pytest.param({"completions": 3, "parallelism": 0}, 0, 0, 0, id="zero-parallelism"),
])
def test_want_active(spec: Obj, active: int, succeeded: int, want: int) -> None:
    """Pods to run: parallelism, never more than the completions left."""
    assert want_active({"spec": spec}, active=active, succeeded=succeeded) == want


def test_pods_for_removal_indexed_duplicates_first() -> None:
    """Indexed: pods without a valid index and extra pods of an index go first."""
    pods = [pod("a", index=0, ready=True), pod("b", index=0), pod("c", index=9),
            pod("d", index=1, ready=True), pod("e")]
    job = {"spec": {"completionMode": "Indexed", "completions": 3}}
    names = [p["metadata"]["name"] for p in pods_for_removal(job, pods, 0)]
    assert sorted(names) == ["b", "c", "e"]  # the not-ready duplicate of index 0


def test_pods_for_removal_least_useful_first() -> None:
    """NonIndexed: unscheduled before pending before running, not ready before ready."""
    pods = [pod("ready", ready=True), pod("running"), pod("pending", phase="Pending"),
            pod("unscheduled", phase="Pending", node="")]
    names = [p["metadata"]["name"] for p in pods_for_removal({"spec": {}}, pods, 3)]
    assert names == ["unscheduled", "pending", "running"]


@pytest.mark.parametrize(("restart", "limit", "restarts", "want"), [
    pytest.param("Never", 0, 5, False, id="never-restarts-do-not-count"),
    pytest.param("OnFailure", 0, 1, True, id="zero-limit-any-restart"),
    pytest.param("OnFailure", 3, 2, False, id="below"),
    pytest.param("OnFailure", 3, 3, True, id="reached"),
])
def test_past_backoff_limit_on_failure(restart: str, limit: int, restarts: int,
                                       want: bool) -> None:
    """With restartPolicy OnFailure, container restarts count towards backoffLimit."""
    job = {"spec": {"backoffLimit": limit, "template": {"spec": {"restartPolicy": restart}}}}
    assert past_backoff_limit_on_failure(job, [pod(restarts=restarts)]) is want


# -- pods from the template ------------------------------------------------------------------


def _job(**spec: Any) -> Obj:
    return {"metadata": {"name": "train", "namespace": "ns", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"job-name": "train"}},
                                  "spec": {"containers": [{"name": "main"}],
                                           "initContainers": [{"name": "init"}]}}, **spec}}


def test_pod_from_template_non_indexed() -> None:
    """Labels from the template, the tracking finalizer, a controller reference."""
    p = pod_from_template(_job())
    md = p["metadata"]
    assert md["generateName"] == "train-" and md["labels"] == {"job-name": "train"}
    assert md["finalizers"] == [TRACKING_FINALIZER]
    assert md["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "train",
                                      "uid": "u1", "controller": True,
                                      "blockOwnerDeletion": True}]
    assert "annotations" not in md and "env" not in p["spec"]["containers"][0]


def test_pod_from_template_indexed() -> None:
    """An index: annotation, label, hostname and JOB_COMPLETION_INDEX in every container."""
    p = pod_from_template(_job(completionMode="Indexed"), index=4)
    md = p["metadata"]
    assert md["generateName"] == "train-4-"
    assert md["annotations"]["batch.kubernetes.io/job-completion-index"] == "4"
    assert md["labels"]["batch.kubernetes.io/job-completion-index"] == "4"
    assert p["spec"]["hostname"] == "train-4"
    env = {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}
    assert p["spec"]["containers"][0]["env"] == [env]
    assert p["spec"]["initContainers"][0]["env"] == [env]


def test_pod_from_template_carries_index_failures() -> None:
    """With backoffLimitPerIndex a replacement counts the failures of its index."""
    job = _job(completionMode="Indexed", backoffLimitPerIndex=2)
    failed = pod(index=1, phase="Failed", exit_code=1)
    failed["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] = "1"
    p = pod_from_template(job, index=1, replaced=failed)
    assert p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "2"


@pytest.mark.parametrize(("name", "index", "want"), [
    pytest.param("train", None, "train-", id="plain"),
    pytest.param("train", 12, "train-12-", id="indexed"),
    pytest.param("x" * 63, None, "x" * 57 + "-", id="long-cut"),
    pytest.param("x" * 63, 3, "x" * 55 + "-3-", id="long-indexed-cut"),
])
def test_generate_name(name: str, index: int | None, want: str) -> None:
    """Pod name prefixes leave room for the 5 random characters."""
    assert generate_name(name, index) == want


# -- status bookkeeping -----------------------------------------------------------------------


@pytest.mark.parametrize(("conds", "args", "changed", "want"), [
    pytest.param([], ("Suspended", "True", "JobSuspended", "Job suspended"), True,
                 [("Suspended", "True")], id="added"),
    pytest.param([], ("Suspended", "False", "JobResumed", "Job resumed"), False, [],
                 id="false-not-added"),
    pytest.param([{"type": "Suspended", "status": "True", "reason": "JobSuspended",
                   "message": "Job suspended"}],
                 ("Suspended", "False", "JobResumed", "Job resumed"), True,
                 [("Suspended", "False")], id="flipped"),
    pytest.param([{"type": "Suspended", "status": "True", "reason": "JobSuspended",
                   "message": "Job suspended"}],
                 ("Suspended", "True", "JobSuspended", "Job suspended"), False,
                 [("Suspended", "True")], id="unchanged"),
])
def test_ensure_condition(conds: list[Obj], args: tuple[str, str, str, str], changed: bool,
                          want: list[tuple[str, str]]) -> None:
    """Conditions are set in place; a False one is never added."""
    assert ensure_condition(conds, *args, "2024-01-01T00:00:00Z") is changed
    assert [(c["type"], c["status"]) for c in conds] == want


def test_clean_uncounted_moves_removed_pods_to_counters() -> None:
    """Uids whose pods lost the finalizer move into succeeded / failed."""
    status: Obj = {"succeeded": 1, "uncountedTerminatedPods": {"succeeded": ["a", "b"],
                                                               "failed": ["c"]}}
    assert clean_uncounted(status, {"b"})
    assert status == {"succeeded": 2, "failed": 1,
                      "uncountedTerminatedPods": {"succeeded": ["b"]}}
    assert not clean_uncounted(status, {"b"})


# -- whole syncs against an in-memory API ----------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0)


@pytest.fixture
def api(clock: FakeClock) -> FakeAPI:
    return FakeAPI(clock)


@pytest.fixture
async def ctl(api: FakeAPI, clock: FakeClock) -> AsyncIterator[JobController]:
    c = JobController(api, clock=clock, jobs=api.jobs, pods=api.pods)  # type: ignore[arg-type]
    c.add_handlers()
    yield c
    await c.queue.aclose()


async def sync(ctl: JobController, name: str = "j") -> float | None:
    """One reconcile of the Job; the requeue delay it asked for."""
    result = await ctl.reconcile(f"default/{name}")
    return result.requeue_after if result is not None else None


def conds(api: FakeAPI, name: str = "j") -> dict[str, Obj]:
    return {c["type"]: c for c in api.job(name)["status"].get("conditions") or []
            if c["status"] == "True"}


async def test_job_runs_to_completion(ctl: JobController, api: FakeAPI,
                                      clock: FakeClock) -> None:
    """completions 2, parallelism 1: one pod at a time, counted once, then Complete."""
    api.add_job("j", {"completions": 2, "parallelism": 1})
    await sync(ctl)
    [p1] = api.pods_of("j")
    assert api.job("j")["status"]["active"] == 1
    api.run_pod(p1)
    await sync(ctl)
    assert api.job("j")["status"]["ready"] == 1
    clock.advance(5)
    api.end_pod(p1)
    await sync(ctl)
    status = api.job("j")["status"]
    assert status["succeeded"] == 1 and status["active"] == 1
    assert TRACKING_FINALIZER not in (api.pods_of("j")[0]["metadata"].get("finalizers") or [])
    p2 = api.pods_of("j")[1]
    api.end_pod(p2)
    await sync(ctl)
    status = api.job("j")["status"]
    assert status["succeeded"] == 2 and status["active"] == 0
    assert status["completionTime"] == rfc3339(T0 + 5)
    assert set(conds(api)) == {"SuccessCriteriaMet", "Complete"}
    assert conds(api)["Complete"]["reason"] == "CompletionsReached"
    assert ("Completed", "Job completed") in api.messages()
    assert api.reasons().count("SuccessfulCreate") == 2
    await sync(ctl)  # finished: nothing more happens
    assert len(api.pods_of("j")) == 2


async def test_failures_back_off_exponentially(ctl: JobController, api: FakeAPI,
                                               clock: FakeClock) -> None:
    """Each failure delays the replacement: 10 s, then 20 s, since the pod ended."""
    api.add_job("j", {"backoffLimit": 5})
    await sync(ctl)
    api.end_pod(api.pods_of("j")[0], 1)
    assert await sync(ctl) == 10.0
    assert len(api.pods_of("j")) == 1 and api.job("j")["status"]["failed"] == 1
    clock.advance(9.5)
    assert await sync(ctl) == pytest.approx(0.5)
    clock.advance(0.5)
    await sync(ctl)
    assert len(api.pods_of("j")) == 2
    api.end_pod(api.pods_of("j")[1], 1)
    assert await sync(ctl) == 20.0
    clock.advance(20)
    await sync(ctl)
    api.end_pod(api.pods_of("j")[2], 0)  # a success resets the back-off
    await sync(ctl)
    assert "Complete" in conds(api) and api.job("j")["status"]["failed"] == 2


async def test_backoff_limit_exceeded(ctl: JobController, api: FakeAPI,
                                      clock: FakeClock) -> None:
    """More failures than backoffLimit: FailureTarget, then Failed, no new pod."""
    api.add_job("j", {"backoffLimit": 0})
    await sync(ctl)
    api.end_pod(api.pods_of("j")[0], 2)
    await sync(ctl)
    c = conds(api)
    assert c["FailureTarget"]["reason"] == c["Failed"]["reason"] == "BackoffLimitExceeded"
    assert c["Failed"]["message"] == "Job has reached the specified backoff limit"
    assert api.job("j")["status"]["failed"] == 1 and len(api.pods_of("j")) == 1
    assert "completionTime" not in api.job("j")["status"]
    assert ("BackoffLimitExceeded", "Job has reached the specified backoff limit") in \
        api.messages()


async def test_active_deadline(ctl: JobController, api: FakeAPI, clock: FakeClock) -> None:
    """activeDeadlineSeconds: a requeue at the deadline, then the pods go, DeadlineExceeded."""
    api.add_job("j", {"activeDeadlineSeconds": 30, "parallelism": 2, "completions": 4})
    assert await sync(ctl) == 30.0
    for p in api.pods_of("j"):
        api.run_pod(p)
    clock.advance(30)
    await sync(ctl)
    assert conds(api)["FailureTarget"]["reason"] == "DeadlineExceeded"
    assert all(p["metadata"].get("deletionTimestamp") for p in api.pods_of("j"))
    await sync(ctl)  # the terminating pods are counted as failed and released
    c = conds(api)
    assert c["Failed"]["reason"] == "DeadlineExceeded"
    assert c["Failed"]["message"] == "Job was active longer than specified deadline"
    assert api.job("j")["status"]["failed"] == 2 and not api.pods_of("j")


async def test_suspend_and_resume(ctl: JobController, api: FakeAPI, clock: FakeClock) -> None:
    """Suspending deletes the active pods without counting them as failed; resuming
    restarts them and the start time."""
    api.add_job("j", {"parallelism": 2, "completions": 2})
    await sync(ctl)
    assert len(api.pods_of("j")) == 2
    api.set_spec("Job", "j", suspend=True)
    await sync(ctl)
    await sync(ctl)
    status = api.job("j")["status"]
    assert conds(api)["Suspended"]["reason"] == "JobSuspended"
    assert status["active"] == 0 and not status.get("failed") and not api.pods_of("j")
    clock.advance(60)
    api.set_spec("Job", "j", suspend=False)
    await sync(ctl)
    status = api.job("j")["status"]
    assert "Suspended" not in conds(api) and status["startTime"] == rfc3339(T0 + 60)
    assert len(api.pods_of("j")) == 2 and status["active"] == 2
    assert {"Suspended", "Resumed"} <= set(api.reasons())


async def test_created_suspended_has_no_start_time(ctl: JobController, api: FakeAPI) -> None:
    """A Job created suspended starts nothing and has no start time."""
    api.add_job("j", {"suspend": True})
    await sync(ctl)
    status = api.job("j")["status"]
    assert "startTime" not in status and not api.pods_of("j")
    assert conds(api)["Suspended"]["message"] == "Job suspended"


async def test_work_queue_completes_when_all_end(ctl: JobController, api: FakeAPI) -> None:
    """No completions: once one pod succeeded no more start; Complete when all ended."""
    api.add_job("j", {"parallelism": 2, "completions": None})
    await sync(ctl)
    first, second = api.pods_of("j")
    api.end_pod(first, 0)
    await sync(ctl)
    assert len(api.pods_of("j")) == 2 and "Complete" not in conds(api)
    api.end_pod(second, 0)
    await sync(ctl)
    assert "Complete" in conds(api) and api.job("j")["status"]["succeeded"] == 2


async def test_indexed_job_completed_indexes(ctl: JobController, api: FakeAPI) -> None:
    """Indexed: one pod per index, completedIndexes in interval form, a failed index
    is retried with the same index."""
    api.add_job("j", {"completionMode": "Indexed", "completions": 4, "parallelism": 4,
                      "backoffLimit": 3})
    await sync(ctl)
    pods = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p
            for p in api.pods_of("j")}
    assert sorted(pods) == ["0", "1", "2", "3"]
    for ix in ("0", "1", "3"):
        api.end_pod(pods[ix], 0)
    api.end_pod(pods["2"], 1)
    ctl.backoff_base = 0.0
    await sync(ctl)
    status = api.job("j")["status"]
    assert status["completedIndexes"] == "0-1,3" and status["succeeded"] == 3
    assert status["failed"] == 1
    await sync(ctl)
    retry = api.pods_of("j")[-1]
    assert retry["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "2"
    api.end_pod(retry, 0)
    await sync(ctl)
    assert api.job("j")["status"]["completedIndexes"] == "0-3" and "Complete" in conds(api)


async def test_success_policy_ends_indexed_job(ctl: JobController, api: FakeAPI) -> None:
    """successPolicy met by index 0: SuccessCriteriaMet, the rest are deleted, Complete."""
    api.add_job("j", {"completionMode": "Indexed", "completions": 3, "parallelism": 3,
                      "successPolicy": {"rules": [{"succeededIndexes": "0"}]}})
    await sync(ctl)
    leader = next(p for p in api.pods_of("j") if p["metadata"]["name"].startswith("j-0-"))
    api.end_pod(leader, 0)
    await sync(ctl)
    await sync(ctl)
    c = conds(api)
    assert c["SuccessCriteriaMet"]["reason"] == c["Complete"]["reason"] == "SuccessPolicy"
    assert c["Complete"]["message"] == "Matched rules at index 0"
    status = api.job("j")["status"]
    assert status["completedIndexes"] == "0" and not status.get("failed")
    assert [p["metadata"]["name"] for p in api.pods_of("j")] == [leader["metadata"]["name"]]


async def test_pod_failure_policy_fail_job(ctl: JobController, api: FakeAPI) -> None:
    """A FailJob rule ends the Job at the first matching failure, whatever backoffLimit."""
    api.add_job("j", {"backoffLimit": 6, "podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}})
    await sync(ctl)
    p = api.pods_of("j")[0]
    api.end_pod(p, 42)
    await sync(ctl)
    c = conds(api)
    assert c["Failed"]["reason"] == "PodFailurePolicy"
    assert c["Failed"]["message"] == (f"Container main for pod default/{p['metadata']['name']}"
                                      " failed with exit code 42 matching FailJob rule at "
                                      "index 0")


async def test_pod_failure_policy_ignore(ctl: JobController, api: FakeAPI) -> None:
    """An Ignore rule: the failure is not counted and the pod is replaced at once."""
    api.add_job("j", {"backoffLimit": 0, "podFailurePolicy": {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}})
    await sync(ctl)
    api.end_pod(api.pods_of("j")[0], 137, conditions=_DISRUPTION)
    ctl.backoff_base = 0.0
    await sync(ctl)
    await sync(ctl)
    status = api.job("j")["status"]
    assert not status.get("failed") and not conds(api) and len(api.pods_of("j")) == 2


async def test_backoff_limit_per_index(ctl: JobController, api: FakeAPI) -> None:
    """backoffLimitPerIndex 0: a failed index stays failed, the others go on; the Job
    fails with FailedIndexes once every index is done."""
    api.add_job("j", {"completionMode": "Indexed", "completions": 2, "parallelism": 2,
                      "backoffLimitPerIndex": 0})
    await sync(ctl)
    first, second = sorted(api.pods_of("j"), key=lambda p: p["metadata"]["name"])
    api.end_pod(first, 1)
    await sync(ctl)
    status = api.job("j")["status"]
    assert status["failedIndexes"] == "0" and len(api.pods_of("j")) == 2
    api.end_pod(second, 0)
    await sync(ctl)
    c = conds(api)
    assert c["Failed"]["reason"] == "FailedIndexes"
    assert api.job("j")["status"]["completedIndexes"] == "1"


async def test_orphan_pod_loses_finalizer(ctl: JobController, api: FakeAPI) -> None:
    """A pod whose Job was deleted gets its tracking finalizer removed."""
    api.add_job("j", {})
    await sync(ctl)
    [p] = api.pods_of("j")
    api.jobs.remove("default/j")
    await ctl.reconcile(f"pod:default/{p['metadata']['name']}")
    assert not api.pods_of("j")[0]["metadata"].get("finalizers")


async def test_waits_for_the_cache_after_creating(ctl: JobController, api: FakeAPI) -> None:
    """Pods created but not yet seen by the informer: no second round of creations."""
    api.add_job("j", {"parallelism": 2, "completions": 2})
    ctl.expectations.expect_creations("default/j", ["default/ghost"])
    await sync(ctl)
    assert not api.pods_of("j")
    ctl.expectations.forget("default/j")
    await sync(ctl)
    assert len(api.pods_of("j")) == 2


# -- TTL after finished ----------------------------------------------------------------------


def _finished(ttl: int | None, *, completion: float | None = None, failed_at: float | None = None,
              deleting: bool = False) -> Obj:
    status: Obj = {"conditions": []}
    if completion is not None:
        status["completionTime"] = rfc3339(completion)
        status["conditions"].append({"type": "Complete", "status": "True",
                                     "lastTransitionTime": rfc3339(completion)})
    if failed_at is not None:
        status["conditions"].append({"type": "Failed", "status": "True",
                                     "lastTransitionTime": rfc3339(failed_at)})
    md: Obj = {"name": "j"}
    if deleting:
        md["deletionTimestamp"] = rfc3339(T0)
    spec = {} if ttl is None else {"ttlSecondsAfterFinished": ttl}
    return {"metadata": md, "spec": spec, "status": status}


@pytest.mark.parametrize(("job", "want"), [
    pytest.param(_finished(30, completion=T0), T0 + 30, id="complete"),
    pytest.param(_finished(0, failed_at=T0 + 5), T0 + 5, id="failed-zero-ttl"),
    pytest.param(_finished(None, completion=T0), None, id="no-ttl"),
    pytest.param(_finished(30), None, id="not-finished"),
    pytest.param(_finished(30, completion=T0, deleting=True), None, id="being-deleted"),
])
def test_ttl_expires_at(job: Obj, want: float | None) -> None:
    """A finished Job with ttlSecondsAfterFinished expires that long after it finished."""
    assert expires_at(job) == want
