"""The work queue: dedup, dirty keys, delays on a fake clock, back-off, run_workers results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from kybernetes.aio.clock import FakeClock
from kybernetes.api.errors import StatusError
from kybernetes.client import Result, ShutDown, TerminalError, WorkQueue, run_workers


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def queue(clock: FakeClock) -> AsyncIterator[WorkQueue[str]]:
    q: WorkQueue[str] = WorkQueue(clock=clock, name="test")
    yield q
    await q.aclose()


async def settle() -> None:
    """Let ready callbacks and tasks run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def eventually(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds (for at most about a second)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached within a second")


async def get_now(q: WorkQueue[str]) -> str:
    """A key that must already be available."""
    return await asyncio.wait_for(q.get(), 1.0)


# -- dedup and dirty keys ------------------------------------------------------------


async def test_dedup_while_queued(queue: WorkQueue[str]) -> None:
    """A key added twice while queued is handed out once, in FIFO order."""
    for key in ["a", "b", "a", "c", "b"]:
        queue.add(key)
    assert len(queue) == 3
    assert [await get_now(queue) for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_dirty_key_requeued_after_done(queue: WorkQueue[str]) -> None:
    """A key added while being processed waits until done, then is queued once."""
    queue.add("a")
    assert await get_now(queue) == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0 and queue.processing() == {"a"}
    queue.done("a")
    assert len(queue) == 1
    assert await get_now(queue) == "a"
    queue.done("a")
    assert len(queue) == 0 and queue.processing() == set()


async def test_one_key_never_held_by_two_getters(queue: WorkQueue[str]) -> None:
    """While one worker holds a key, another getter does not receive it."""
    queue.add("a")
    first = await get_now(queue)
    second = asyncio.ensure_future(queue.get())
    queue.add("a")
    await settle()
    assert not second.done()
    queue.done(first)
    assert await asyncio.wait_for(second, 1.0) == "a"
    queue.done("a")


async def test_waiting_getters_woken_in_order(queue: WorkQueue[str]) -> None:
    """Blocked getters are woken one per added key."""
    getters = [asyncio.ensure_future(queue.get()) for _ in range(3)]
    await settle()
    queue.add("x")
    queue.add("y")
    await settle()
    assert sorted(g.result() for g in getters if g.done()) == ["x", "y"]
    queue.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.gather(*getters)


async def test_cancelled_getter_passes_wakeup_on(queue: WorkQueue[str]) -> None:
    """A getter cancelled after being woken does not swallow the key."""
    g1 = asyncio.ensure_future(queue.get())
    g2 = asyncio.ensure_future(queue.get())
    await settle()
    queue.add("a")
    g1.cancel()  # woken and cancelled in the same loop iteration
    await settle()
    assert g1.cancelled()
    assert await asyncio.wait_for(g2, 1.0) == "a"
    queue.done("a")


# -- delays --------------------------------------------------------------------------


async def test_add_after_waits_on_the_clock(queue: WorkQueue[str], clock: FakeClock) -> None:
    """add_after hands the key out only once the clock has moved on by the delay."""
    queue.add_after("a", 5.0)
    queue.add_after("b", 2.0)
    assert queue.pending_delayed() == 2
    await settle()
    clock.advance(1.9)
    await settle()
    assert len(queue) == 0
    clock.advance(0.1)
    assert await get_now(queue) == "b"
    clock.advance(2.9)
    await settle()
    assert len(queue) == 0
    clock.advance(0.1)
    assert await get_now(queue) == "a"
    assert queue.pending_delayed() == 0


@pytest.mark.parametrize(
    ("delays", "ready_at"),
    [
        pytest.param([10.0, 2.0], 2.0, id="earlier-wins"),
        pytest.param([2.0, 10.0], 2.0, id="later-ignored"),
        pytest.param([3.0, 0.0], 0.0, id="zero-adds-now"),
    ],
)
async def test_add_after_keeps_earliest(queue: WorkQueue[str], clock: FakeClock,
                                        delays: list[float], ready_at: float) -> None:
    """A key delayed twice becomes ready at the earlier time."""
    for d in delays:
        queue.add_after("a", d)
    await settle()
    if ready_at:
        clock.advance(ready_at - 0.01)
        await settle()
        assert len(queue) == 0
        clock.advance(0.01)
    assert await get_now(queue) == "a"


async def test_add_after_while_queued_is_deduplicated(queue: WorkQueue[str],
                                                      clock: FakeClock) -> None:
    """A delayed key that is already queued when it becomes ready is not doubled."""
    queue.add("a")
    queue.add_after("a", 1.0)
    clock.advance(1.0)
    await settle()
    assert len(queue) == 1


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        pytest.param(1, 0.005, id="first"),
        pytest.param(2, 0.01, id="second"),
        pytest.param(5, 0.08, id="fifth"),
        pytest.param(30, 1000.0, id="capped"),
    ],
)
async def test_rate_limit_delays(queue: WorkQueue[str], clock: FakeClock, failures: int,
                                 delay: float) -> None:
    """The n-th rate-limited add waits 5 ms * 2**(n-1), at most 1000 s."""
    for _ in range(failures - 1):
        queue.add_rate_limited("a")
        clock.advance(1000.0)
        assert await get_now(queue) == "a"
        queue.done("a")
    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == failures
    await settle()
    clock.advance(delay * 0.99)
    await settle()
    assert len(queue) == 0
    clock.advance(delay * 0.02)
    assert await get_now(queue) == "a"
    queue.done("a")


async def test_forget_resets_backoff(queue: WorkQueue[str], clock: FakeClock) -> None:
    """forget starts the key's back-off again from 5 ms."""
    for _ in range(4):
        queue.add_rate_limited("a")
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    queue.add_rate_limited("b")
    queue.add_rate_limited("a")
    clock.advance(0.005)
    assert {await get_now(queue), await get_now(queue)} == {"a", "b"}


# -- shutdown ------------------------------------------------------------------------


async def test_shutdown_drains_then_raises(queue: WorkQueue[str], clock: FakeClock) -> None:
    """After shutdown queued keys are still handed out; then get raises ShutDown."""
    queue.add("a")
    queue.add_after("late", 1.0)
    queue.shutdown()
    queue.add("b")
    queue.add_rate_limited("c")
    assert queue.shutting_down and queue.pending_delayed() == 0
    assert await get_now(queue) == "a"
    clock.advance(10.0)
    with pytest.raises(ShutDown):
        await get_now(queue)


async def test_shutdown_wakes_blocked_getter(queue: WorkQueue[str]) -> None:
    """A getter blocked on an empty queue gets ShutDown."""
    getter = asyncio.ensure_future(queue.get())
    await settle()
    queue.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(getter, 1.0)


# -- run_workers ---------------------------------------------------------------------


Outcome = Callable[[str], Result | None]


def raises(exc: Exception) -> Outcome:
    def fail(key: str) -> Result | None:
        raise exc

    return fail


@pytest.mark.parametrize(
    ("outcome", "requeues", "delayed", "expect_again_after"),
    [
        pytest.param(lambda k: None, 0, 0, None, id="success-forgets"),
        pytest.param(lambda k: Result(), 0, 0, None, id="empty-result-forgets"),
        pytest.param(raises(RuntimeError("boom")), 1, 1, 0.005, id="error-rate-limited"),
        pytest.param(raises(StatusError.conflict("pods", "p", "stale")), 1, 1, 0.005,
                     id="conflict-rate-limited"),
        pytest.param(lambda k: Result(requeue=True), 1, 1, 0.005, id="requeue-rate-limited"),
        pytest.param(lambda k: Result(requeue_after=30.0), 0, 1, 30.0, id="requeue-after"),
        pytest.param(raises(TerminalError("bad spec")), 0, 0, None, id="terminal-error"),
    ],
)
async def test_run_workers_results(queue: WorkQueue[str], clock: FakeClock, outcome: Outcome,
                                   requeues: int, delayed: int,
                                   expect_again_after: float | None) -> None:
    """Each reconcile outcome leads to the controller-runtime queue action."""
    calls: list[str] = []
    first = asyncio.Event()

    async def reconcile(key: str) -> Result | None:
        calls.append(key)
        if len(calls) > 1:
            return None
        first.set()
        return outcome(key)

    queue.add_rate_limited("k")
    clock.advance(1.0)
    queue.forget("k")  # as if that earlier attempt had been forgotten
    workers = asyncio.ensure_future(run_workers(queue, reconcile, name="test"))
    await asyncio.wait_for(first.wait(), 1.0)
    await settle()
    assert queue.num_requeues("k") == requeues
    assert queue.pending_delayed() == delayed
    if expect_again_after is not None:
        clock.advance(expect_again_after * 0.99)
        await settle()
        assert calls == ["k"]
        clock.advance(expect_again_after * 0.02)
        await eventually(lambda: len(calls) == 2)
    else:
        clock.advance(2000.0)
        await settle()
        assert calls == ["k"]
    queue.shutdown()
    await asyncio.wait_for(workers, 1.0)


async def test_run_workers_never_reconciles_a_key_twice_at_once(queue: WorkQueue[str]) -> None:
    """With many workers, one key is never reconciled concurrently; dirty keys run again."""
    in_flight: set[str] = set()
    overlaps: list[str] = []
    runs: dict[str, int] = {}
    gate = asyncio.Event()

    async def reconcile(key: str) -> None:
        if key in in_flight:
            overlaps.append(key)
        in_flight.add(key)
        runs[key] = runs.get(key, 0) + 1
        await gate.wait()
        in_flight.discard(key)

    for key in "abc":
        queue.add(key)
    workers = asyncio.ensure_future(run_workers(queue, reconcile, workers=4))
    await settle()
    assert in_flight == {"a", "b", "c"}
    queue.add("a")  # marked dirty: must wait for the running reconcile
    await settle()
    assert runs == {"a": 1, "b": 1, "c": 1}
    gate.set()
    await eventually(lambda: runs.get("a") == 2 and not in_flight)
    assert overlaps == []
    queue.shutdown()
    await asyncio.wait_for(workers, 1.0)


async def test_run_workers_cancelled(queue: WorkQueue[str]) -> None:
    """Cancelling run_workers cancels its workers and releases the key being processed."""
    started = asyncio.Event()

    async def reconcile(key: str) -> None:
        started.set()
        await asyncio.Event().wait()

    queue.add("a")
    workers = asyncio.ensure_future(run_workers(queue, reconcile, workers=2))
    await asyncio.wait_for(started.wait(), 1.0)
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
    assert queue.processing() == set()
