"""Leader election on a Lease, against the real API server in-process, on a fake clock."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.unit.conftest import transport

from kybernetes.aio.clock import FakeClock
from kybernetes.apiserver.app import APIServer
from kybernetes.cli.main import parse_duration
from kybernetes.client import Client, Config
from kybernetes.client.leaderelection import LeaderElector

Obj = dict[str, Any]
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LEASES = ("coordination.k8s.io/v1", "leases")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def elector(client: Client, clock: FakeClock, identity: str, **kwargs: Any) -> LeaderElector:
    return LeaderElector(client, identity=identity, lease_duration=15, renew_deadline=10,
                         retry_period=2, jitter=0, clock=clock, **kwargs)


async def lease(client: Client) -> Obj:
    return await client.get(*LEASES, "kube-controller-manager", namespace="kube-system")


async def pump(clock: FakeClock, seconds: float, *, step: float = 0.5) -> None:
    """Advance the fake clock in steps, letting in-flight requests finish in between."""
    for _ in range(round(seconds / step)):
        clock.advance(step)
        for _ in range(30):
            await asyncio.sleep(0)


async def until(cond: Callable[[], Awaitable[bool]] | Callable[[], bool],
                timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = cond()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- one attempt ------------------------------------------------------------------------------


async def test_first_candidate_creates_the_lease(client: Client, clock: FakeClock) -> None:
    """No Lease yet: it is created with this holder, MicroTimes, transitions 0, an event."""
    a = elector(client, clock, "host_a")
    await a.acquire()
    assert a.is_leader
    spec = (await lease(client))["spec"]
    assert spec["holderIdentity"] == "host_a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert MICRO.match(spec["renewTime"]) and MICRO.match(spec["acquireTime"])
    events = (await client.list("v1", "events", namespace="kube-system"))["items"]
    became = [e for e in events if e["reason"] == "LeaderElection"]
    assert [e["message"] for e in became] == ["host_a became leader"]
    assert became[0]["involvedObject"]["kind"] == "Lease"
    assert became[0]["involvedObject"]["name"] == "kube-controller-manager"


async def test_renewal_keeps_acquire_time_and_transitions(client: Client,
                                                          clock: FakeClock) -> None:
    """The holder's renewals move renewTime only."""
    a = elector(client, clock, "host_a")
    assert await a.try_acquire_or_renew()
    first = (await lease(client))["spec"]
    clock.advance(2)
    assert await a.try_acquire_or_renew()
    spec = (await lease(client))["spec"]
    assert spec["acquireTime"] == first["acquireTime"]
    assert spec["renewTime"] > first["renewTime"]
    assert spec["leaseTransitions"] == 0


async def test_standby_waits_a_lease_duration_of_its_own_clock(client: Client,
                                                               clock: FakeClock) -> None:
    """A held lease is taken over only after it stayed unchanged for leaseDurationSeconds,
    measured locally; then holder and transitions change."""
    a = elector(client, clock, "host_a")
    b = elector(client, clock, "host_b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    for _ in range(10):  # a renews: b never gets it, however long it waits
        clock.advance(2)
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    clock.advance(14)  # a is gone: 14 s of silence are not enough...
    assert not await b.try_acquire_or_renew()
    clock.advance(1.5)  # ...15 are
    assert await b.try_acquire_or_renew()
    spec = (await lease(client))["spec"]
    assert spec["holderIdentity"] == "host_b"
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"]
    assert not await a.try_acquire_or_renew()  # a is back: b's lease is fresh to a


async def test_holder_clock_is_not_trusted(client: Client, clock: FakeClock) -> None:
    """A renewTime far in the past (a holder with a skewed clock) does not expire the lease
    early: the standby still waits a full duration from when it first saw the record."""
    skewed = FakeClock(start=1_000_000.0)
    a = elector(client, skewed, "host_a")
    b = elector(client, clock, "host_b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(10)
    assert not await b.try_acquire_or_renew()
    clock.advance(6)
    assert await b.try_acquire_or_renew()


async def test_the_lease_duration_of_the_record_counts(client: Client,
                                                       clock: FakeClock) -> None:
    """The standby waits the holder's leaseDurationSeconds, not its own."""
    a = LeaderElector(client, identity="host_a", lease_duration=4, renew_deadline=3,
                      retry_period=1, jitter=0, clock=clock)
    b = elector(client, clock, "host_b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(4.5)
    assert await b.try_acquire_or_renew()


async def test_conflict_means_somebody_else_won(api: APIServer, client: Client,
                                                clock: FakeClock) -> None:
    """Two standbys take over an expired lease at once: the compare-and-swap lets one win."""
    a = elector(client, clock, "host_a")
    assert await a.try_acquire_or_renew()
    b = elector(client, clock, "host_b")
    racing = RacingClient(Config(server="https://kyb", token="t"), transport=transport(api))
    c = elector(racing, clock, "host_c")
    assert not await b.try_acquire_or_renew()
    assert not await c.try_acquire_or_renew()
    clock.advance(16)
    racing.before_update = b.try_acquire_or_renew  # b writes between c's read and write
    try:
        assert not await c.try_acquire_or_renew()
    finally:
        await racing.aclose()
    spec = (await lease(client))["spec"]
    assert spec["holderIdentity"] == "host_b"
    assert spec["leaseTransitions"] == 1


class RacingClient(Client):
    before_update: Callable[[], Awaitable[bool]] | None = None

    async def update(self, *args: Any, **kwargs: Any) -> Obj:
        if self.before_update is not None:
            assert await self.before_update()
        return await super().update(*args, **kwargs)


def test_durations_are_checked() -> None:
    """leaseDuration > renewDeadline > 1.2 x retryPeriod, as client-go requires."""
    dummy = Client(Config(server="https://kyb"))
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(dummy, lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="retry period"):
        LeaderElector(dummy, lease_duration=15, renew_deadline=2, retry_period=2)


# -- the whole run -----------------------------------------------------------------------------


class Hooks:
    def __init__(self) -> None:
        self.log: list[str] = []

    async def started(self) -> None:
        self.log.append("started")

    async def stopped(self) -> None:
        self.log.append("stopped")


async def test_cancelled_leader_releases_and_standby_takes_over_at_once(
        client: Client, clock: FakeClock) -> None:
    """A clean stop: stopped-leading hook, holder emptied with a 1 s duration, and the
    standby acquires without waiting for the old lease to expire."""
    hooks = Hooks()
    a = elector(client, clock, "host_a", on_started_leading=hooks.started,
                on_stopped_leading=hooks.stopped)
    run = asyncio.create_task(a.run())
    await until(lambda: hooks.log == ["started"])
    b = elector(client, clock, "host_b")
    assert not await b.try_acquire_or_renew()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert hooks.log == ["started", "stopped"]
    spec = (await lease(client))["spec"]
    assert not spec.get("holderIdentity")
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    await b.acquire()  # at once: no clock advance needed
    assert (await lease(client))["spec"]["leaseTransitions"] == 1
    messages = {e["message"] for e in
                (await client.list("v1", "events", namespace="kube-system"))["items"]}
    assert {"host_a became leader", "host_a stopped leading",
            "host_b became leader"} <= messages


async def test_leadership_is_lost_after_the_renew_deadline(api: APIServer,
                                                           clock: FakeClock) -> None:
    """Renewals that fail for renewDeadline end the run with the stopped-leading hook."""
    flaky = FlakyClient(Config(server="https://kyb", token="t"), transport=transport(api))
    hooks = Hooks()
    a = elector(flaky, clock, "host_a", on_started_leading=hooks.started,
                on_stopped_leading=hooks.stopped)
    run = asyncio.create_task(a.run())
    try:
        await until(lambda: hooks.log == ["started"])
        await pump(clock, 6)  # renewals succeed
        assert not run.done()
        flaky.down = True
        await pump(clock, 8)  # failing, but within the deadline
        assert not run.done()
        await pump(clock, 4)
        await until(run.done)
        assert hooks.log == ["started", "stopped"]
        run.result()  # returned, not raised
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await flaky.aclose()


async def test_a_stolen_lease_ends_leadership(client: Client, clock: FakeClock) -> None:
    """Somebody else's name in the lease: the leader stops at its next renewal."""
    hooks = Hooks()
    a = elector(client, clock, "host_a", on_started_leading=hooks.started,
                on_stopped_leading=hooks.stopped)
    run = asyncio.create_task(a.run())
    try:
        await until(lambda: hooks.log == ["started"])
        obj = await lease(client)
        obj["spec"]["holderIdentity"] = "intruder"
        await client.update(*LEASES, obj, namespace="kube-system")
        await pump(clock, 2)
        await until(run.done)
        assert hooks.log == ["started", "stopped"]
        assert (await lease(client))["spec"]["holderIdentity"] == "intruder"
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


class FlakyClient(Client):
    down = False

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise ConnectionError("connection refused")
        return await super().request(*args, **kwargs)


@pytest.mark.parametrize("text,seconds", [
    pytest.param("15s", 15.0, id="seconds"),
    pytest.param("1m30s", 90.0, id="compound"),
    pytest.param("500ms", 0.5, id="millis"),
    pytest.param("2", 2.0, id="bare-number"),
    pytest.param("1.5h", 5400.0, id="fraction"),
])
def test_go_durations(text: str, seconds: float) -> None:
    """--leader-elect-* take Go durations, as kube-controller-manager's flags."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "15x", "1m 2s", "-1s"])
def test_bad_go_durations(text: str) -> None:
    """Anything else is refused."""
    with pytest.raises(ValueError):
        parse_duration(text)


async def test_release_after_a_renewal_whose_answer_was_lost(client: Client,
                                                             clock: FakeClock) -> None:
    """The lease changed since the leader last read it (a renewal went through but its
    answer was cut off): release reads it again and still gives it up."""
    a = elector(client, clock, "host_a")
    await a.acquire()
    current = await lease(client)
    current["spec"]["renewTime"] = current["spec"]["acquireTime"]  # a write a did not see
    await client.update(*LEASES, current, namespace="kube-system")
    assert await a.release()
    spec = (await lease(client))["spec"]
    assert not spec.get("holderIdentity") and spec["leaseDurationSeconds"] == 1
    # taken over by another meanwhile (a did not see it): nothing is taken from it
    await a.acquire()
    b = elector(client, clock, "host_b")
    assert not await b.try_acquire_or_renew()  # b sees a's lease...
    clock.advance(16)
    assert await b.try_acquire_or_renew()  # ... expire, and takes it
    assert a.is_leader  # as far as a knows
    assert await a.release()
    assert (await lease(client))["spec"]["holderIdentity"] == "host_b"
