"""The etcd backend: the :class:`~kybernetes.store.backend.Backend` protocol over etcd v3.

It speaks etcd's gRPC gateway (JSON over HTTP, ``/v3/kv/*`` and ``/v3/watch``, served by
every etcd ≥ 3.4 on its client port), so it needs no generated gRPC code. Revisions are
etcd's own; create, update and delete are transactions comparing the key's
``create_revision`` / ``mod_revision`` (compare-and-swap); watches are etcd watches from a
revision with the previous values; compaction is etcd's.

    store = await EtcdBackend.connect(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])

Several endpoints may be given: a request that cannot reach one tries the next, and
:class:`UnavailableError` (the API answers 503 with Retry-After) says none answered. A
write whose answer was lost is not retried blindly: the error says so, and etcd holds it
or not, atomically.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from kybernetes.store.backend import (
    AlreadyExistsError,
    CompactedError,
    ConflictError,
    Event,
    EventType,
    KeyValue,
    ListResult,
    NotFoundError,
    StoreError,
    UnavailableError,
    batches,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

WATCH_QUEUE = 10_000
"""Batches a watcher may fall behind by before it is dropped (it must list again)."""


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _prefix_end(prefix: str) -> str:
    """The first key after every key starting with ``prefix`` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return raw.decode("latin-1")


def _range_end(prefix: str) -> str:
    return base64.b64encode(_prefix_end(prefix).encode("latin-1")).decode()


def _kv(raw: Obj) -> KeyValue:
    return KeyValue(base64.b64decode(raw["key"]).decode(),
                    base64.b64decode(raw.get("value", "")),
                    int(raw.get("create_revision", 0)), int(raw.get("mod_revision", 0)))


class EtcdBackend:
    def __init__(self, endpoints: list[str], *, timeout: float = 10.0,
                 verify: Any = True, cert: Any = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify, cert=cert)
        self._watch_client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=None),
                                               verify=verify, cert=cert)
        self._compacted = 0
        self._watches: set[_EtcdWatch] = set()

    @classmethod
    async def connect(cls, endpoints: list[str], **kwargs: Any) -> EtcdBackend:
        """A backend whose cluster answered (raises :class:`UnavailableError`)."""
        store = cls(endpoints, **kwargs)
        try:
            await store.current_revision()
        except BaseException:
            await store.close()
            raise
        return store

    # -- transport -------------------------------------------------------------------------

    async def _call(self, path: str, body: Obj) -> Obj:
        data = orjson.dumps(body)
        errors = []
        for i in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._current + i) % len(self.endpoints)]
            try:
                r = await self._client.post(endpoint + path, content=data)
            except httpx.HTTPError as e:
                errors.append(f"{endpoint}: {e or type(e).__name__}")
                continue
            self._current = (self._current + i) % len(self.endpoints)
            out: Obj = orjson.loads(r.content) if r.content else {}
            if r.status_code != 200:
                message = str(out.get("error") or out.get("message") or r.text)
                if "required revision has been compacted" in message:
                    raise CompactedError(int(body.get("revision", 0)), self._compacted)
                if r.status_code in (502, 503, 504) or "no leader" in message:
                    errors.append(f"{endpoint}: {message}")
                    continue
                raise StoreError(f"etcd {path}: {message}")
            return out
        raise UnavailableError("etcd unavailable: " + "; ".join(errors))

    # -- reads -------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        out = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = out.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def list(self, prefix: str, *, start_after: str = "", limit: int = 0,
                   revision: int = 0) -> ListResult:
        body: Obj = {"key": _b64(start_after + "\0" if start_after else prefix),
                     "range_end": _range_end(prefix)}
        if limit:
            body["limit"] = limit
        if revision:
            if revision <= self._compacted:
                raise CompactedError(revision, self._compacted)
            body["revision"] = revision
        out = await self._call("/v3/kv/range", body)
        items = [_kv(kv) for kv in out.get("kvs") or []]
        return ListResult(items, revision or int(out["header"]["revision"]),
                          bool(out.get("more")))

    async def count(self, prefix: str) -> int:
        out = await self._call("/v3/kv/range", {"key": _b64(prefix),
                                                "range_end": _range_end(prefix),
                                                "count_only": True})
        return int(out.get("count", 0))

    async def current_revision(self) -> int:
        out = await self._call("/v3/kv/range", {"key": _b64("/"), "count_only": True})
        return int(out["header"]["revision"])

    def compacted_revision(self) -> int:
        return self._compacted

    # -- writes ------------------------------------------------------------------------------

    async def _txn(self, key: str, compare: Obj, success: Obj) -> tuple[bool, Obj]:
        out = await self._call("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "result": "EQUAL", **compare}],
            "success": [success], "failure": [{"request_range": {"key": _b64(key)}}]})
        return bool(out.get("succeeded")), out

    async def create(self, key: str, value: bytes) -> KeyValue:
        ok, out = await self._txn(key, {"target": "CREATE", "create_revision": 0},
                                  {"request_put": {"key": _b64(key), "value": _b64(value)}})
        if not ok:
            raise AlreadyExistsError(key)
        rev = int(out["header"]["revision"])
        return KeyValue(key, value, rev, rev)

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        ok, out = await self._txn(
            key, {"target": "MOD", "mod_revision": expected_revision},
            {"request_put": {"key": _b64(key), "value": _b64(value), "prev_kv": True}})
        if not ok:
            self._raise_mismatch(key, expected_revision, out)
        rev = int(out["header"]["revision"])
        prev = ((out.get("responses") or [{}])[0].get("response_put") or {}).get("prev_kv")
        created = int(prev.get("create_revision", rev)) if prev else rev
        return KeyValue(key, value, created, rev)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        request = {"request_delete_range": {"key": _b64(key), "prev_kv": True}}
        if expected_revision:
            ok, out = await self._txn(key, {"target": "MOD", "mod_revision": expected_revision},
                                      request)
            if not ok:
                self._raise_mismatch(key, expected_revision, out)
        else:
            ok, out = await self._txn(key, {"target": "CREATE", "create_revision": 0,
                                            "result": "GREATER"}, request)
            if not ok:
                raise NotFoundError(key)
        rev = int(out["header"]["revision"])
        prevs = ((out.get("responses") or [{}])[0].get("response_delete_range") or {}).get(
            "prev_kvs") or []
        if not prevs:
            raise NotFoundError(key)
        prev = _kv(prevs[0])
        return KeyValue(key, prev.value, prev.create_revision, rev)

    @staticmethod
    def _raise_mismatch(key: str, expected: int, out: Obj) -> None:
        found = ((out.get("responses") or [{}])[0].get("response_range") or {}).get("kvs")
        if not found:
            raise NotFoundError(key)
        raise ConflictError(key, expected=expected, actual=_kv(found[0]).mod_revision)

    async def compact(self, revision: int) -> None:
        if revision <= self._compacted:
            return
        try:
            await self._call("/v3/kv/compaction", {"revision": revision})
        except CompactedError:
            pass  # another server compacted further already
        self._compacted = max(self._compacted, revision)

    # -- watches -------------------------------------------------------------------------------

    async def watch(self, prefix: str, *, after_revision: int) -> _EtcdWatch:
        if after_revision < self._compacted:
            raise CompactedError(after_revision + 1, self._compacted)
        w = _EtcdWatch(self, prefix, after_revision)
        await w.start()
        self._watches.add(w)
        return w

    def close_watches(self) -> None:
        for w in list(self._watches):
            w.close()

    async def close(self) -> None:
        self.close_watches()
        await self._client.aclose()
        await self._watch_client.aclose()


def _event(raw: Obj) -> Event:
    kv = _kv(raw["kv"])
    prev = _kv(raw["prev_kv"]) if raw.get("prev_kv") else None
    if raw.get("type") == "DELETE":
        last = prev or kv
        return Event(EventType.DELETE,
                     KeyValue(kv.key, last.value, last.create_revision, kv.mod_revision), prev)
    typ = EventType.CREATE if kv.create_revision == kv.mod_revision else EventType.UPDATE
    return Event(typ, kv, prev)


class _EtcdWatch:
    """One etcd watch stream; batches of events in revision order."""

    def __init__(self, backend: EtcdBackend, prefix: str, after: int) -> None:
        self.backend = backend
        self.prefix = prefix
        self.after = after
        self.overflowed = False
        self._queue: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._started: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._started = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="etcd-watch")
        await self._started

    async def _run(self) -> None:
        """Follow the watch, reconnecting (to the next endpoint) from the last revision
        seen when the stream breaks."""
        assert self._started is not None
        next_rev = self.after + 1
        failures = 0
        try:
            while not self._closed:
                endpoint = self.backend.endpoints[self.backend._current]
                body = orjson.dumps({"create_request": {
                    "key": _b64(self.prefix), "range_end": _range_end(self.prefix),
                    "start_revision": next_rev, "prev_kv": True, "progress_notify": True}})
                try:
                    async with self.backend._watch_client.stream(
                            "POST", endpoint + "/v3/watch", content=body) as r:
                        buf = b""
                        async for chunk in r.aiter_bytes():
                            buf += chunk
                            while True:
                                msg, buf = _split_json(buf)
                                if msg is None:
                                    break
                                result = msg.get("result") or {}
                                if result.get("created") and not self._started.done():
                                    self._started.set_result(None)
                                if result.get("compact_revision") and result.get("canceled"):
                                    self._end(CompactedError(
                                        next_rev, int(result["compact_revision"])))
                                    return
                                events = [_event(e) for e in result.get("events") or []]
                                if events:
                                    failures = 0
                                    next_rev = events[-1].kv.mod_revision + 1
                                    self._put(events)
                                    if self.overflowed:
                                        return
                except httpx.HTTPError as e:
                    failures += 1
                    self.backend._current = (self.backend._current + 1) % len(
                        self.backend.endpoints)
                    if failures > 3 * len(self.backend.endpoints):
                        self._end(UnavailableError(f"etcd watch lost: {e}"))
                        return
                    await asyncio.sleep(min(0.1 * failures, 2.0))
        finally:
            if not self._started.done():
                self._started.set_exception(UnavailableError("etcd watch did not start"))
            self._queue.put_nowait(None)

    def _put(self, events: list[Event]) -> None:
        if self._queue.qsize() >= WATCH_QUEUE:
            self.overflowed = True
            self._queue.put_nowait(None)
            return
        self._queue.put_nowait(events)

    def _end(self, error: StoreError) -> None:
        log.warning("etcd watch of %s ended: %s", self.prefix, error)
        if isinstance(error, CompactedError):
            self.overflowed = True  # the consumer lists again

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return batches(self)

    async def next(self, timeout: float | None = None) -> list[Event] | None:
        if self._closed:
            return None
        try:
            batch = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return []
        if batch is None:
            self._queue.put_nowait(None)  # stays ended
        return batch

    def poll(self) -> list[Event] | None:
        out: list[Event] = []
        while not self._queue.empty():
            batch = self._queue.get_nowait()
            if batch is None:
                self._queue.put_nowait(None)
                return out or None
            out.extend(batch)
        return out

    def close(self) -> None:
        self._closed = True
        self.backend._watches.discard(self)
        if self._task is not None:
            self._task.cancel()
        self._queue.put_nowait(None)


def _split_json(buf: bytes) -> tuple[Obj | None, bytes]:
    """The first complete JSON object of a stream of them (etcd's gateway writes one per
    message, newline-separated), and the rest."""
    buf = buf.lstrip()
    if not buf:
        return None, b""
    nl = buf.find(b"\n")
    if nl >= 0:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(buf[:nl]), buf[nl + 1:]
    try:
        return orjson.loads(buf), b""
    except orjson.JSONDecodeError:
        return None, buf
