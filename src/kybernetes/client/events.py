"""Events about objects, as components record them (``core/v1`` Events).

The same event (object, type, reason, message) repeated within ten minutes updates the
first one's ``count`` and ``lastTimestamp`` instead of adding another, as client-go's
recorder aggregates them; ``kubectl describe`` then shows ``(x3 over 2m)``.

:meth:`EventRecorder.post` sends in the background, in order, as client-go's broadcaster
does: a component's work never waits for its events (the node agent starts pods faster).
With ``hold``, sending also waits while the component is busy (for at most ``HOLD_MAX``
seconds an event); each event keeps the time it was posted at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339
from kybernetes.client.rest import Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]

REPEAT_WINDOW = 600.0
_MAX_REMEMBERED = 4096
QUEUE_LIMIT = 1000
"""Events waiting to be sent beyond this are dropped (client-go's broadcaster: 1000)."""
HOLD_MAX = 3.0


_Posted = tuple[Obj, str, str, str, str, float]
"""An event waiting to be sent: (object, type, reason, message, field path, posted at)."""


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str = "", *,
                 hold: Callable[[], bool] | None = None) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.hold = hold
        """While this says so, posted events wait (up to ``HOLD_MAX`` seconds each)."""
        self._seen: dict[tuple[str, ...], tuple[float, str, str, int]] = {}
        """key -> (first seen, event namespace, event name, count)."""
        self._queue: asyncio.Queue[_Posted] | None = None
        self._sender: asyncio.Task[None] | None = None

    def post(self, obj: Obj, typ: str, reason: str, message: str, *,
             field_path: str = "") -> None:
        """:meth:`emit` in the background (in order; dropped if too many are waiting)."""
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_LIMIT)
            self._sender = spawn(self._send(self._queue), name=f"events:{self.component}")
        try:
            self._queue.put_nowait((obj, typ, reason, message, field_path, time.time()))
        except asyncio.QueueFull:
            log.warning("dropping event %s for %s: %d waiting", reason,
                        (obj.get("metadata") or {}).get("name"), QUEUE_LIMIT)

    async def _send(self, queue: asyncio.Queue[_Posted]) -> None:
        while True:
            obj, typ, reason, message, field_path, at = await queue.get()
            try:
                while self.hold is not None and self.hold() and \
                        time.time() - at < HOLD_MAX:  # noqa: ASYNC110 - a predicate, polled
                    await asyncio.sleep(0.05)
                await self.emit(obj, typ, reason, message, field_path=field_path, at=at)
            except Exception as e:  # the API server is away: the event is lost, as upstream
                log.debug("event %s not sent: %s", reason, e)
            finally:
                queue.task_done()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Send what :meth:`post` queued (for at most ``timeout`` seconds), then stop."""
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._queue.join()
        await cancel_and_wait(self._sender)
        self._queue = self._sender = None

    async def emit(self, obj: Obj, typ: str, reason: str, message: str, *,
                   field_path: str = "", at: float = 0.0) -> None:
        """Record the event now (``at``: when it happened, if earlier)."""
        md = obj.get("metadata") or {}
        api_version = obj.get("apiVersion") or "v1"
        ns = md.get("namespace") or "default"
        key = (md.get("uid", ""), md.get("name", ""), typ, reason, message, field_path)
        now = time.monotonic()
        stamp = rfc3339(at or time.time())
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < REPEAT_WINDOW:
            _, ev_ns, ev_name, count = seen
            try:
                await self.client.patch("v1", "events", ev_name, {
                    "count": count + 1, "lastTimestamp": stamp}, namespace=ev_ns)
                self._seen[key] = (seen[0], ev_ns, ev_name, count + 1)
                return
            except StatusError as e:
                if e.code != 404:
                    log.debug("event %s for %s: %s", reason, md.get("name"), e.message)
                    return
        involved: Obj = {"apiVersion": api_version, "kind": obj.get("kind", ""),
                         "name": md.get("name"), "uid": md.get("uid"),
                         "resourceVersion": md.get("resourceVersion", "")}
        if md.get("namespace"):
            involved["namespace"] = md["namespace"]
        if field_path:
            involved["fieldPath"] = field_path
        name = f"{md.get('name')}.{time.time_ns():x}"
        source: Obj = {"component": self.component}
        if self.host:
            source["host"] = self.host
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": name, "namespace": ns},
              "involvedObject": involved, "reason": reason, "message": message, "type": typ,
              "source": source, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
              "reportingComponent": self.component, "reportingInstance": self.host}
        try:
            await self.client.create("v1", "events", ev, namespace=ns)
        except StatusError as e:
            log.debug("event %s for %s: %s", reason, md.get("name"), e.message)
            return
        if len(self._seen) >= _MAX_REMEMBERED:
            cutoff = now - REPEAT_WINDOW
            self._seen = {k: v for k, v in self._seen.items() if v[0] > cutoff}
            if len(self._seen) >= _MAX_REMEMBERED:
                self._seen.clear()
        self._seen[key] = (now, ns, name, 1)
