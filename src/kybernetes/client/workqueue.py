"""A rate-limited work queue of keys, and the worker loop that drains it into a reconciler.

Semantics follow client-go's workqueue:

- a key added while it waits in the queue is kept once;
- a key added while a worker holds it is marked dirty and queued again on :meth:`done`,
  so one key is never handed to two workers at once;
- :meth:`add_rate_limited` waits ``5 ms * 2**failures`` (capped at 1000 s) per key,
  until :meth:`forget` resets it; :meth:`add_after` waits a fixed delay.

::

    queue: WorkQueue[str] = WorkQueue()
    informer.add_handler(on_add=lambda o: queue.add(object_key(o)))

    async def reconcile(key: str) -> Result | None:
        ...
        return Result(requeue_after=30)

    await run_workers(queue, reconcile, workers=4)   # until queue.shutdown()
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kybernetes.aio.backoff import Backoff
from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_all, spawn
from kybernetes.api.errors import StatusError

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """:meth:`WorkQueue.get` was called on a queue that is shut down and empty."""


class WorkQueue(Generic[K]):
    """Deduplicating FIFO of keys with delayed and rate-limited adds."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, backoff: Backoff | None = None,
                 name: str = "workqueue") -> None:
        self.name = name
        self._clock = clock
        self._backoff = backoff or Backoff(base=0.005, cap=1000.0)
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False
        # Delayed adds: a heap of (ready_at, seq, key); ``_ready_at`` keeps each key's
        # earliest time so that a later add_after cannot postpone an earlier one.
        self._delayed: list[tuple[float, int, K]] = []
        self._ready_at: dict[K, float] = {}
        self._seq = itertools.count()
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = float("inf")

    def __len__(self) -> int:
        """Keys waiting to be handed out (not counting delayed or in-progress ones)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def processing(self) -> set[K]:
        """Keys handed out by :meth:`get` and not yet :meth:`done`."""
        return set(self._processing)

    def pending_delayed(self) -> int:
        """Keys waiting for their delay to pass."""
        return len(self._ready_at)

    # -- adding --------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue ``key`` unless it is already queued (ignored after :meth:`shutdown`)."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done()
        self._queue.append(key)
        self._wake_one()

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` once ``delay`` seconds have passed on the queue's clock."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready_at = self._clock.monotonic() + delay
        if self._ready_at.get(key, float("inf")) <= ready_at:
            return
        self._ready_at[key] = ready_at
        heapq.heappush(self._delayed, (ready_at, next(self._seq), key))
        if ready_at < self._timer_at:
            self._arm(ready_at)

    def add_rate_limited(self, key: K) -> None:
        """Queue ``key`` after its per-key back-off (5 ms, doubling, capped at 1000 s)."""
        if self._shutting_down:
            return
        self.add_after(key, self._backoff.next(key))

    def forget(self, key: K) -> None:
        """Reset ``key``'s back-off (call after it was processed successfully)."""
        self._backoff.forget(key)

    def num_requeues(self, key: K) -> int:
        """How many rate-limited adds ``key`` has had since it was last forgotten."""
        return self._backoff.failures(key)

    # -- taking ----------------------------------------------------------------------

    async def get(self) -> K:
        """The next key; the caller must call :meth:`done` with it. Raises :class:`ShutDown`."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake_one()  # pass the wake-up we got on to another getter
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: K) -> None:
        """Mark ``key`` finished; if it was added meanwhile, queue it again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake_one()

    def shutdown(self) -> None:
        """Refuse new keys, drop delayed ones, and let :meth:`get` drain what is queued."""
        self._shutting_down = True
        self._delayed.clear()
        self._ready_at.clear()
        self._disarm()
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    # -- the delay timer -------------------------------------------------------------

    def _arm(self, ready_at: float) -> None:
        self._disarm()
        self._timer_at = ready_at
        self._timer = spawn(self._wait_until(ready_at), name=f"{self.name}:delay")

    def _disarm(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
        self._timer_at = float("inf")

    async def _wait_until(self, ready_at: float) -> None:
        remaining = ready_at - self._clock.monotonic()
        if remaining > 0:
            await self._clock.sleep(remaining)
        self._timer = None
        self._timer_at = float("inf")
        self._release_ready()

    def _release_ready(self) -> None:
        now = self._clock.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            ready_at, _, key = heapq.heappop(self._delayed)
            if self._ready_at.get(key) == ready_at:
                del self._ready_at[key]
                self.add(key)
        if self._delayed:
            self._arm(self._delayed[0][0])

    async def aclose(self) -> None:
        """Shut down and wait for the delay timer task to end."""
        timer = self._timer
        self.shutdown()
        await cancel_all([timer] if timer is not None else [])


@dataclass(frozen=True)
class Result:
    """What a reconcile asks for: ``requeue_after`` seconds, or a rate-limited ``requeue``."""

    requeue: bool = False
    requeue_after: float = 0.0


class TerminalError(Exception):
    """A reconcile failure that retrying cannot fix: logged, and the key is forgotten."""


Reconciler = Callable[[K], Awaitable[Result | None]]


async def run_workers(queue: WorkQueue[K], reconcile: Reconciler[K], *, workers: int = 1,
                      name: str = "controller") -> None:
    """Run ``workers`` tasks feeding keys to ``reconcile`` until the queue shuts down.

    As controller-runtime does: an exception → :meth:`WorkQueue.add_rate_limited` (a 409
    Conflict, a write from a stale cache, quietly);
    ``Result(requeue_after=s)`` → forget the back-off and requeue after ``s``;
    ``Result(requeue=True)`` → rate-limited requeue; otherwise → forget.
    Cancelling this coroutine cancels the workers.
    """
    tasks = [spawn(_worker(queue, reconcile, name), name=f"{name}:worker-{i}")
             for i in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_all(tasks)


async def _worker(queue: WorkQueue[K], reconcile: Reconciler[K], name: str) -> None:
    while True:
        try:
            key = await queue.get()
        except ShutDown:
            return
        try:
            result = await reconcile(key)
        except asyncio.CancelledError:
            queue.done(key)
            raise
        except TerminalError as e:
            log.error("%s: %s: %s (not retrying)", name, key, e)
            queue.forget(key)
        except StatusError as e:
            if e.code == 409:  # written from a stale cache: look again once it caught up
                log.debug("%s: %s: %s", name, key, e.message)
            else:
                log.exception("%s: reconciling %s failed (retry %d)", name, key,
                              queue.num_requeues(key) + 1)
            queue.add_rate_limited(key)
        except Exception:
            log.exception("%s: reconciling %s failed (retry %d)", name, key,
                          queue.num_requeues(key) + 1)
            queue.add_rate_limited(key)
        else:
            if result is not None and result.requeue_after > 0:
                queue.forget(key)
                queue.add_after(key, result.requeue_after)
            elif result is not None and result.requeue:
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
        queue.done(key)
