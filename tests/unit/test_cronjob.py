"""The CronJob controller: cron parsing and next times (time zones, DST), missed
schedules, concurrency policies, history limits — on a fake clock, no waiting."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from tests.unit.batchfakes import FakeAPI

from kybernetes.aio.clock import FakeClock
from kybernetes.api.meta import rfc3339
from kybernetes.controllers.cron import ScheduleError, parse_schedule
from kybernetes.controllers.cronjob import (
    CronJobController,
    Missed,
    go_rfc3339,
    job_from_template,
    job_name,
    jobs_to_remove,
    most_recent_schedule_time,
    next_schedule_delay,
    rfc1123z,
)

Obj = dict[str, Any]
NY = ZoneInfo("America/New_York")


def at(*args: int, tz: Any = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def show(t: float | None, tz: Any = UTC) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, tz).isoformat()


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "minute", "hour", "dom", "month", "dow"), [
    pytest.param("*/15 * * * *", {0, 15, 30, 45}, set(range(24)), set(range(1, 32)),
                 set(range(1, 13)), set(range(7)), id="step"),
    pytest.param("5,10-12 9-17/4 1,15 * *", {5, 10, 11, 12}, {9, 13, 17}, {1, 15},
                 set(range(1, 13)), set(range(7)), id="lists-ranges-steps"),
    pytest.param("0 0 * jan-mar,DEC sun,sat", {0}, {0}, set(range(1, 32)), {1, 2, 3, 12},
                 {0, 6}, id="names"),
    pytest.param("30 4/6 * * *", {30}, {4, 10, 16, 22}, set(range(1, 32)),
                 set(range(1, 13)), set(range(7)), id="start-slash-step"),
    pytest.param("@hourly", {0}, set(range(24)), set(range(1, 32)), set(range(1, 13)),
                 set(range(7)), id="hourly"),
    pytest.param("@daily", {0}, {0}, set(range(1, 32)), set(range(1, 13)), set(range(7)),
                 id="daily"),
    pytest.param("@midnight", {0}, {0}, set(range(1, 32)), set(range(1, 13)), set(range(7)),
                 id="midnight"),
    pytest.param("@weekly", {0}, {0}, set(range(1, 32)), set(range(1, 13)), {0}, id="weekly"),
    pytest.param("@monthly", {0}, {0}, {1}, set(range(1, 13)), set(range(7)), id="monthly"),
    pytest.param("@yearly", {0}, {0}, {1}, {1}, set(range(7)), id="yearly"),
    pytest.param("@annually", {0}, {0}, {1}, {1}, set(range(7)), id="annually"),
])
def test_parse_fields(spec: str, minute: set[int], hour: set[int], dom: set[int],
                      month: set[int], dow: set[int]) -> None:
    """Each field's values, as robfig/cron's standard parser sees them."""
    s = parse_schedule(spec)
    assert (s.minute, s.hour, s.day_of_month, s.month, s.day_of_week) == \
        (minute, hour, dom, month, dow)


@pytest.mark.parametrize(("spec", "tz", "message"), [
    pytest.param("61 * * * *", None, "end of range (61) above maximum (59): 61", id="range"),
    pytest.param("* * * *", None, "expected exactly 5 fields, found 4: [* * * *]",
                 id="four-fields"),
    pytest.param("@fortnightly", None, "unrecognized descriptor: @fortnightly",
                 id="descriptor"),
    pytest.param("0 0 * * *", "Mars/Olympus", "unknown time zone Mars/Olympus", id="zone"),
    pytest.param("*/0 * * * *", None, "step of range should be a positive number: */0",
                 id="zero-step"),
])
def test_parse_errors(spec: str, tz: str | None, message: str) -> None:
    """Bad schedules and zones are refused with upstream's messages."""
    with pytest.raises(ScheduleError, match="^" + re.escape(message)):
        parse_schedule(spec, tz)


# -- next activation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "tz", "after", "want"), [
    pytest.param("*/15 * * * *", None, at(2024, 3, 5, 10, 7, 30), "2024-03-05T10:15:00+00:00",
                 id="next-quarter"),
    pytest.param("*/15 * * * *", None, at(2024, 3, 5, 10, 15), "2024-03-05T10:30:00+00:00",
                 id="strictly-after"),
    pytest.param("0 0 * * *", None, at(2024, 12, 31, 23, 59), "2025-01-01T00:00:00+00:00",
                 id="year-wrap"),
    pytest.param("0 0 29 2 *", None, at(2024, 3, 1), "2028-02-29T00:00:00+00:00",
                 id="leap-day"),
    pytest.param("0 12 1 * mon", None, at(2024, 1, 1, 13), "2024-01-08T12:00:00+00:00",
                 id="dom-or-dow"),
    pytest.param("0 12 */2 * mon", None, at(2024, 1, 1, 13), "2024-01-03T12:00:00+00:00",
                 id="stepped-dom-is-restricted"),
    pytest.param("0 12 * * mon", None, at(2024, 1, 2), "2024-01-08T12:00:00+00:00",
                 id="dom-star-means-and"),
    pytest.param("0 9 * * *", "Asia/Kolkata", at(2024, 6, 1), "2024-06-01T03:30:00+00:00",
                 id="half-hour-zone"),
    pytest.param("0 9 * * *", "America/New_York", at(2024, 1, 15), "2024-01-15T14:00:00+00:00",
                 id="winter-offset"),
    pytest.param("0 9 * * *", "America/New_York", at(2024, 7, 15), "2024-07-15T13:00:00+00:00",
                 id="summer-offset"),
    pytest.param("30 2 * * *", "America/New_York", at(2021, 3, 13, 3, tz=NY),
                 "2021-03-15T06:30:00+00:00", id="dst-gap-skips-the-day"),
    pytest.param("30 1 * * *", "America/New_York", at(2021, 11, 6, 1, 30, tz=NY),
                 "2021-11-07T05:30:00+00:00", id="dst-overlap-first"),
    pytest.param("30 1 * * *", "America/New_York", at(2021, 11, 7, 5, 30),
                 "2021-11-07T06:30:00+00:00", id="dst-overlap-again"),
    pytest.param("0 0 * * *", "Europe/London", at(2024, 3, 30, 12),
                 "2024-03-31T00:00:00+00:00", id="midnight-before-spring-forward"),
    pytest.param("@every 90s", None, at(2024, 1, 1, 0, 0, 10), "2024-01-01T00:01:40+00:00",
                 id="every"),
    pytest.param("0 0 30 2 *", None, at(2024, 1, 1), None, id="never"),
])
def test_next(spec: str, tz: str | None, after: float, want: str | None) -> None:
    """robfig's Next, Go's time arithmetic included (DST gaps and overlaps)."""
    assert show(parse_schedule(spec, tz).next(after)) == want


def test_tz_prefix_in_schedule() -> None:
    """``TZ=`` in the schedule works as timeZone does."""
    s = parse_schedule("TZ=Asia/Tokyo 0 9 * * *")
    assert show(s.next(at(2024, 5, 31, 12))) == "2024-06-01T00:00:00+00:00"


# -- missed schedules --------------------------------------------------------------------------


def cronjob(schedule: str = "*/5 * * * *", *, created: float = at(2024, 1, 1),
            last: float | None = None, name: str = "cj", **spec: Any) -> Obj:
    status: Obj = {}
    if last is not None:
        status["lastScheduleTime"] = rfc3339(last)
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "default", "uid": "cj-uid",
                         "creationTimestamp": rfc3339(created)},
            "spec": {"schedule": schedule, "concurrencyPolicy": "Allow",
                     "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
                     "jobTemplate": {"metadata": {"labels": {"team": "ml"}}, "spec": {
                         "template": {"spec": {"restartPolicy": "OnFailure", "containers": [
                             {"name": "main", "image": "busybox"}]}}}}, **spec},
            "status": status}


T = at(2024, 1, 1)


@pytest.mark.parametrize(("cj", "now", "want_recent", "want_missed"), [
    pytest.param(cronjob(), T + 120, None, Missed.NONE, id="not-yet"),
    pytest.param(cronjob(), T + 300, T + 300, Missed.NONE, id="exactly-due"),
    pytest.param(cronjob(), T + 400, T + 300, Missed.NONE, id="one-due"),
    pytest.param(cronjob(), T + 1000, T + 900, Missed.FEW, id="few-missed-latest-wins"),
    pytest.param(cronjob(last=T + 900), T + 1000, None, Missed.NONE, id="already-done"),
    pytest.param(cronjob(), T + 300 * 100, T + 300 * 100, Missed.FEW, id="hundred"),
    pytest.param(cronjob(), T + 300 * 101, T + 300 * 101, Missed.MANY, id="too-many"),
    pytest.param(cronjob(startingDeadlineSeconds=200), T + 300 * 500 + 10, T + 300 * 500,
                 Missed.NONE, id="deadline-limits-the-search"),
    pytest.param(cronjob("30 6-16/4 * * 1-5"), at(2024, 1, 5, 16),
                 at(2024, 1, 5, 14, 30), Missed.FEW, id="irregular-schedule"),
])
def test_most_recent_schedule_time(cj: Obj, now: float, want_recent: float | None,
                                   want_missed: Missed) -> None:
    """The latest schedule time since the last one (or creation), and how many passed."""
    _, recent, missed = most_recent_schedule_time(
        cj, now, parse_schedule(cj["spec"]["schedule"]), include_deadline=True)
    assert (show(recent), missed) == (show(want_recent), want_missed)


def test_most_recent_schedule_time_impossible() -> None:
    """A schedule that never fires is an error, as upstream reports it."""
    cj = cronjob("59 23 31 2 *")
    with pytest.raises(ScheduleError, match="less than 1 second"):
        most_recent_schedule_time(cj, T + 10**8, parse_schedule("59 23 31 2 *"),
                                  include_deadline=False)


@pytest.mark.parametrize(("cj", "now", "want"), [
    pytest.param(cronjob(), T + 10, 290.1, id="until-first"),
    pytest.param(cronjob(last=T + 300), T + 301, 299.1, id="after-a-run"),
    pytest.param(cronjob(), T + 1000, 200.1, id="after-missed-ones"),
])
def test_next_schedule_delay(cj: Obj, now: float, want: float) -> None:
    """The next look is the next schedule time plus 100 ms."""
    delay = next_schedule_delay(cj, now, parse_schedule(cj["spec"]["schedule"]))
    assert delay == pytest.approx(want)


# -- jobs from the template ----------------------------------------------------------------------


def test_job_from_template() -> None:
    """Name in minutes since the epoch, scheduled-timestamp annotation, controller ref."""
    cj = cronjob(timeZone="Europe/Paris")
    job = job_from_template(cj, at(2024, 1, 1, 12))
    md = job["metadata"]
    assert md["name"] == f"cj-{int(at(2024, 1, 1, 12)) // 60}" == "cj-28401840"
    assert md["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] == \
        "2024-01-01T13:00:00+01:00"
    assert md["labels"] == {"team": "ml"}
    assert md["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob",
                                      "name": "cj", "uid": "cj-uid", "controller": True,
                                      "blockOwnerDeletion": True}]
    assert job["spec"] == cj["spec"]["jobTemplate"]["spec"]


@pytest.mark.parametrize(("t", "tz", "want"), [
    pytest.param(at(2024, 1, 1, 12), None, "2024-01-01T12:00:00Z", id="utc"),
    pytest.param(at(2024, 7, 1, 12), "America/New_York", "2024-07-01T08:00:00-04:00",
                 id="zone"),
])
def test_go_rfc3339(t: float, tz: str | None, want: str) -> None:
    """Timestamps as Go formats them in the CronJob's zone."""
    assert go_rfc3339(t, tz) == want


def test_rfc1123z() -> None:
    """MissSchedule's time format."""
    assert rfc1123z(at(2024, 3, 5, 10, 0)) == "Tue, 05 Mar 2024 10:00:00 +0000"


def _finished_job(name: str, start: float | None) -> Obj:
    status: Obj = {"conditions": [{"type": "Complete", "status": "True"}]}
    if start is not None:
        status["startTime"] = rfc3339(start)
    return {"metadata": {"name": name}, "status": status}


@pytest.mark.parametrize(("starts", "limit", "want"), [
    pytest.param({"a": 3, "b": 1, "c": 2}, 1, ["b", "c"], id="oldest-first"),
    pytest.param({"a": 3, "b": 1}, 3, [], id="within-limit"),
    pytest.param({"a": None, "b": 1, "c": 1}, 1, ["b", "c"], id="unstarted-last-ties-by-name"),
    pytest.param({"a": 1, "b": 2}, 0, ["a", "b"], id="keep-none"),
])
def test_jobs_to_remove(starts: dict[str, int | None], limit: int, want: list[str]) -> None:
    """History limits remove the finished Jobs that started first."""
    jobs = [_finished_job(n, None if s is None else T + s) for n, s in starts.items()]
    assert [j["metadata"]["name"] for j in jobs_to_remove(jobs, limit)] == want


def test_job_name_is_stable() -> None:
    """The same scheduled time always gives the same Job name (no duplicates)."""
    assert job_name(cronjob(), T + 59) == job_name(cronjob(), T) == f"cj-{int(T) // 60}"


# -- whole syncs against an in-memory API ------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T)


@pytest.fixture
def api(clock: FakeClock) -> FakeAPI:
    return FakeAPI(clock)


@pytest.fixture
async def ctl(api: FakeAPI, clock: FakeClock) -> AsyncIterator[CronJobController]:
    c = CronJobController(api, clock=clock, jobs=api.jobs,  # type: ignore[arg-type]
                          cronjobs=api.cronjobs)  # type: ignore[arg-type]
    c.add_handlers()
    yield c
    await c.queue.aclose()


def add(api: FakeAPI, cj: Obj) -> None:
    api.cronjobs.store(cj)
    cj["metadata"]["resourceVersion"] = "1"


async def sync(ctl: CronJobController, name: str = "cj") -> float | None:
    result = await ctl.reconcile(f"default/{name}")
    return result.requeue_after if result is not None else None


def status(api: FakeAPI, name: str = "cj") -> Obj:
    return api.cronjobs.get(f"default/{name}")["status"]  # type: ignore[index]


def job_names(api: FakeAPI) -> list[str]:
    return sorted(j["metadata"]["name"] for j in api.jobs.list())


def complete(api: FakeAPI, name: str, *, at_time: float, type_: str = "Complete") -> None:
    job = api.job(name)
    job["status"] = {"startTime": rfc3339(at_time - 5), "conditions": [
        {"type": type_, "status": "True"}]}
    if type_ == "Complete":
        job["status"]["completionTime"] = rfc3339(at_time)
    api.jobs.store(job)


async def test_creates_a_job_on_schedule(ctl: CronJobController, api: FakeAPI,
                                         clock: FakeClock) -> None:
    """Nothing before the first time; then one Job, recorded in the status, once."""
    add(api, cronjob())
    assert await sync(ctl) == pytest.approx(300.1)
    assert not api.jobs.list()
    clock.advance(300)
    assert await sync(ctl) == pytest.approx(300.1)
    name = f"cj-{int(T + 300) // 60}"
    assert job_names(api) == [name]
    st = status(api)
    assert st["lastScheduleTime"] == rfc3339(T + 300)
    assert [a["name"] for a in st["active"]] == [name]
    assert ("SuccessfulCreate", f"Created job {name}") in api.messages()
    clock.advance(10)
    await sync(ctl)
    assert job_names(api) == [name]


async def test_finished_job_leaves_active(ctl: CronJobController, api: FakeAPI,
                                          clock: FakeClock) -> None:
    """A completed Job leaves the active list and sets lastSuccessfulTime."""
    add(api, cronjob())
    clock.advance(300)
    await sync(ctl)
    [name] = job_names(api)
    clock.advance(20)
    complete(api, name, at_time=clock.now())
    await sync(ctl)
    st = status(api)
    assert "active" not in st and st["lastSuccessfulTime"] == rfc3339(T + 320)
    assert ("SawCompletedJob", f"Saw completed job: {name}, condition: Complete") in \
        api.messages()


@pytest.mark.parametrize(("policy", "want_jobs", "want_reason"), [
    pytest.param("Allow", 2, None, id="allow-overlaps"),
    pytest.param("Forbid", 1, "JobAlreadyActive", id="forbid-skips"),
    pytest.param("Replace", 1, "SuccessfulDelete", id="replace-deletes-old"),
])
async def test_concurrency_policy(ctl: CronJobController, api: FakeAPI, clock: FakeClock,
                                  policy: str, want_jobs: int, want_reason: str | None) -> None:
    """A run still active at the next time: Allow starts another, Forbid waits,
    Replace deletes the running one and starts the new one."""
    add(api, cronjob(concurrencyPolicy=policy))
    clock.advance(300)
    await sync(ctl)
    first = job_names(api)[0]
    clock.advance(300)
    await sync(ctl)
    assert len(api.jobs.list()) == want_jobs
    if want_reason:
        assert want_reason in api.reasons()
    st = status(api)
    if policy == "Forbid":
        assert [a["name"] for a in st["active"]] == [first]
        assert st["lastScheduleTime"] == rfc3339(T + 300)
    else:
        assert st["lastScheduleTime"] == rfc3339(T + 600)
    if policy == "Replace":
        assert first not in job_names(api)
        assert [a["name"] for a in st["active"]] == job_names(api)


async def test_starting_deadline_missed(ctl: CronJobController, api: FakeAPI,
                                        clock: FakeClock) -> None:
    """A schedule time older than startingDeadlineSeconds is not run (MissSchedule)."""
    add(api, cronjob(startingDeadlineSeconds=30))
    clock.advance(300 + 45)
    await sync(ctl)
    assert not api.jobs.list()
    clock.advance(300 - 45 + 10)
    await sync(ctl)
    assert len(api.jobs.list()) == 1


async def test_late_but_within_deadline(ctl: CronJobController, api: FakeAPI,
                                        clock: FakeClock) -> None:
    """Late, but within startingDeadlineSeconds: it runs, with the scheduled time."""
    add(api, cronjob(startingDeadlineSeconds=60))
    clock.advance(300 + 45)
    await sync(ctl)
    assert job_names(api) == [f"cj-{int(T + 300) // 60}"]


async def test_too_many_missed(ctl: CronJobController, api: FakeAPI, clock: FakeClock) -> None:
    """More than 100 missed times: a warning, and only the most recent one runs."""
    add(api, cronjob())
    clock.advance(300 * 150 + 20)
    await sync(ctl)
    assert "TooManyMissedTimes" in api.reasons()
    assert job_names(api) == [f"cj-{int(T + 300 * 150) // 60}"]


async def test_suspended_creates_nothing(ctl: CronJobController, api: FakeAPI,
                                         clock: FakeClock) -> None:
    """suspend: no Job and no requeue."""
    add(api, cronjob(suspend=True))
    clock.advance(3000)
    assert await sync(ctl) is None
    assert not api.jobs.list()


async def test_history_limits(ctl: CronJobController, api: FakeAPI, clock: FakeClock) -> None:
    """Beyond successfulJobsHistoryLimit / failedJobsHistoryLimit the oldest go."""
    add(api, cronjob(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1))
    names = []
    for i in range(5):
        clock.advance(300)
        await sync(ctl)
        name = f"cj-{int(T + 300 * (i + 1)) // 60}"
        names.append(name)
        complete(api, name, at_time=clock.now() + 1, type_="Failed" if i < 2 else "Complete")
        await sync(ctl)
    assert job_names(api) == sorted([names[1], names[3], names[4]])
    assert api.reasons().count("SuccessfulDelete") == 2


async def test_missing_active_job(ctl: CronJobController, api: FakeAPI,
                                  clock: FakeClock) -> None:
    """An active Job that no longer exists leaves the list (MissingJob)."""
    add(api, cronjob())
    clock.advance(300)
    await sync(ctl)
    [name] = job_names(api)
    api.jobs.remove(f"default/{name}")
    await sync(ctl)
    assert "active" not in status(api)
    assert ("MissingJob", f"Active job went missing: {name}") in api.messages()


async def test_unparseable_schedule(ctl: CronJobController, api: FakeAPI) -> None:
    """A bad schedule: a warning event, no requeue."""
    add(api, cronjob("not a schedule"))
    assert await sync(ctl) is None
    assert "UnparseableSchedule" in api.reasons()


async def test_time_zone(ctl: CronJobController, api: FakeAPI, clock: FakeClock) -> None:
    """timeZone: the schedule is read in that zone; the annotation carries its offset."""
    add(api, cronjob("0 9 * * *", timeZone="Asia/Kolkata"))
    delay = await sync(ctl)
    assert delay == pytest.approx(3.5 * 3600 + 0.1)  # 09:00 IST is 03:30 UTC
    clock.advance(delay or 0)
    await sync(ctl)
    [job] = api.jobs.list()
    assert job["metadata"]["annotations"][
        "batch.kubernetes.io/cronjob-scheduled-timestamp"] == "2024-01-01T09:00:00+05:30"
