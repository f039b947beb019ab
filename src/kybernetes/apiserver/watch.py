"""Watch streams: newline-delimited JSON events over a chunked response."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.selectors import FieldSelector, LabelSelector
from kybernetes.apiserver import codec, tables
from kybernetes.apiserver.objects import ObjectStore
from kybernetes.store import CompactedError, Event, EventType

Obj = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

BOOKMARK_INTERVAL = 10.0
_TYPES = {EventType.CREATE: "ADDED", EventType.UPDATE: "MODIFIED", EventType.DELETE: "DELETED"}


class WatchStream:
    """One client's watch of one resource (optionally one namespace, filtered)."""

    def __init__(self, store: ObjectStore, ns: str, *, label: LabelSelector,
                 field: FieldSelector, fmt: str = "", include: str = "Metadata",
                 bookmarks: bool = False, now: Callable[[], float]) -> None:
        self.store = store
        self.ns = ns
        self.label = label
        self.field = field
        self.fmt = fmt  # "" | "Table" | "PartialObjectMetadata"
        self.include = include
        self.bookmarks = bookmarks
        self.now = now
        self.filtering = not label.empty or not field.empty
        self._memo_key = (id(store.res), fmt, include)
        self._sent_columns = False

    def _stored(self, event: Event, prev: bool = False) -> Obj:
        """Decoded stored object for the event (shared by all watchers; never mutate)."""
        key = "prev" if prev else "obj"
        obj = event.memo.get(key)
        if obj is None:
            kv = event.prev if prev else event.kv
            assert kv is not None
            obj = event.memo[key] = codec.load_stored(kv.value, kv.mod_revision)
        return obj

    def encode(self, typ: str, obj: Obj) -> bytes:
        if self.fmt == "Table":
            body: Any = tables.table(self.store.res, [obj], self.now(), include=self.include,
                                     with_columns=True)
            self._sent_columns = True
        elif self.fmt == "PartialObjectMetadata":
            body = tables.partial(obj)
        else:
            body = obj
        return orjson.dumps({"type": typ, "object": body}) + b"\n"

    def line(self, event: Event) -> bytes | None:
        typ = _TYPES[event.type]
        if self.filtering:
            cur = self._stored(event)
            now_match = self.store.selected(cur, self.label, self.field)
            if event.type == EventType.CREATE or event.type == EventType.DELETE:
                if not now_match:
                    return None
            else:
                was = event.prev is not None and self.store.selected(
                    self._stored(event, prev=True), self.label, self.field)
                if now_match and not was:
                    typ = "ADDED"
                elif was and not now_match:
                    typ = "DELETED"
                elif not now_match:
                    return None
        key = (self._memo_key, typ)
        data = event.memo.get(key)
        if data is None:
            if not self.store.converted and not self.fmt:
                kv = event.kv
                data = b'{"type":"%s","object":%s}\n' % (
                    typ.encode(), codec.with_revision(kv.value, kv.mod_revision))
            else:
                data = self.encode(typ, self.store.view(self._stored(event)))
            event.memo[key] = data
        return data

    def bookmark(self, revision: int) -> bytes:
        res = self.store.res
        obj = {"kind": res.kind, "apiVersion": res.api_version,
               "metadata": {"resourceVersion": str(revision)}}
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    async def initial(self, send: Send, *, tag: int | None = None) -> int:
        """Send the current state as ADDED events; returns the revision it was read at.
        With ``tag``, each line also carries ``"r": tag`` (several watches in one
        stream, as the dashboard reads them)."""
        page = await self.store.list(self.ns, label=self.label, field=self.field)
        buf: list[bytes] = []
        for kv in page.kvs:
            if self.store.converted or self.fmt:
                line = self.encode("ADDED", self.store.kv_object(kv))
            else:
                line = b'{"type":"ADDED","object":%s}\n' % codec.with_revision(
                    kv.value, kv.mod_revision)
            buf.append(line if tag is None else b'{"r":%d,%s' % (tag, line[1:]))
            if len(buf) >= 256:
                await send({"type": "http.response.body", "body": b"".join(buf),
                            "more_body": True})
                buf = []
        if buf:
            await send({"type": "http.response.body", "body": b"".join(buf), "more_body": True})
        return page.revision

    async def run(self, send: Send, receive: Receive, *, start: str, timeout: float) -> None:
        backend = self.store.ctx.backend
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json" if not self.fmt else
             tables.TABLE_CONTENT_TYPE.encode()),
            (b"cache-control", b"no-cache, private"),
        ]})
        # flush the headers now: clients wait for them before reading events
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        if start in ("", "0"):
            after = await self.initial(send)
        else:
            after = int(start)
        try:
            watcher = await backend.watch(self.store.res.key_prefix(self.ns),
                                          after_revision=after)
        except CompactedError as e:
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": f"too old resource version: {after} ({e.compacted})",
                      "reason": "Expired", "code": 410}
            await send({"type": "http.response.body",
                        "body": orjson.dumps({"type": "ERROR", "object": status}) + b"\n",
                        "more_body": False})
            return

        async def wait_disconnect() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    watcher.close()
                    return

        guard = spawn(wait_disconnect(), name="watch-disconnect")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wait = min(remaining, BOOKMARK_INTERVAL) if self.bookmarks else remaining
                batch = await watcher.next(wait)
                if batch is None:
                    break
                if not batch:
                    if self.bookmarks and loop.time() < deadline:
                        rev = await backend.current_revision()
                        await send({"type": "http.response.body", "body": self.bookmark(rev),
                                    "more_body": True})
                    continue
                out = [line for ev in batch if (line := self.line(ev)) is not None]
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out),
                                "more_body": True})
        finally:
            watcher.close()
            await cancel_and_wait(guard)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
