"""The embedded store: SQLite in WAL mode, etcd's model on one table.

Every change appends one row to ``log`` whose ``rev`` is the new cluster-wide revision;
deletes append a tombstone carrying the last value. Nothing is updated in place. The
newest revision of every live key is kept in memory (etcd's key index): a dict for point
lookups and a sorted list of keys for prefix lists, rebuilt from ``log`` at start-up.
A write is therefore one append to one B-tree, and several writes in the same turn of
the event loop share one COMMIT.

Compare-and-swap is checked against the in-memory index, which only this process
changes. Lists at an older revision are rebuilt by walking back the changes made since.
Compaction drops rows that a newer row of the same key at or below the compaction point
supersedes, and tombstones there; the newest row of every key is never dropped.

All calls run on the event loop's thread: with WAL and ``synchronous=NORMAL`` a commit is
a write() to the WAL file, which survives ``kill -9`` of the process (not a power cut;
pass ``fsync=True`` for that). Checkpoints, which fsync, run on a thread of their own.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from sortedcontainers import SortedList

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
    batches,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    type INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

CACHE_ENTRIES = 50_000
"""Values of recently used keys kept in memory."""

WATCH_QUEUE_LIMIT = 10_000
"""Events a watcher may fall behind by before it is dropped and must re-list."""

_DELETE = int(EventType.DELETE)
_CHUNK = 500


def _bucket(key: str) -> str:
    """``/registry/pods/`` for ``/registry/pods/ns/name``: watchers are grouped by it."""
    i = key.find("/", 10)
    return key[:i + 1] if i > 0 else key


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class _Watcher:
    def __init__(self, store: SQLiteBackend, prefix: str, after: int) -> None:
        self._store = store
        self.prefix = prefix
        self.after = after
        """Events at or below this revision were replayed (or predate the watch)."""
        b = _bucket(prefix)
        self.bucket = b if prefix.startswith(b) and b.endswith("/") and len(b) > 10 else None
        """The resource segment every watched key starts with (None: several)."""
        self.end = prefix_end(prefix)
        self._queue: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self._pending = 0
        self.overflowed = False
        self.closed = False

    def push(self, events: list[Event]) -> None:
        if self.closed:
            return
        self._pending += len(events)
        if self._pending > WATCH_QUEUE_LIMIT:
            self.overflowed = True
            self.close()
            return
        self._queue.put_nowait(events)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._store._watchers.discard(self)
            self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return batches(self)

    async def next(self, timeout: float | None = None) -> list[Event] | None:
        """The next batch; [] when ``timeout`` passed first; None once the watch ended."""
        if timeout is None:
            batch = await self._queue.get()
        else:
            try:
                # asyncio.timeout: wait_for (3.11) can lose a cancellation that arrives
                # together with a batch, and a cancelled watch would then never end
                async with asyncio.timeout(timeout):
                    batch = await self._queue.get()
            except TimeoutError:
                return []
        if batch is None:
            self._queue.put_nowait(None)  # stay ended for later calls
            return None
        self._pending -= len(batch)
        return batch

    def poll(self) -> list[Event] | None:
        out: list[Event] = []
        queue = self._queue
        while not queue.empty():
            batch = queue.get_nowait()
            if batch is None:
                queue.put_nowait(None)
                return out or None
            self._pending -= len(batch)
            out += batch
        return out


class SQLiteBackend:
    """The :class:`~kybernetes.store.backend.Backend` over one SQLite file.

    >>> store = SQLiteBackend.open("/tmp/state.db")          # doctest: +SKIP
    >>> kv = await store.create("/registry/configmaps/default/a", b"{}")  # doctest: +SKIP
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._watchers: set[_Watcher] = set()
        self._compacted = self._meta("compacted")
        self._index: dict[str, tuple[int, int]] = {}
        """Live keys: (create_revision, mod_revision)."""
        self._keys: SortedList = SortedList()
        self._cache: dict[str, tuple[str, bytes, int, int]] = {}
        """Newest values of recently used keys, as plain tuples: unlike KeyValue (a tuple
        subclass) those leave the cyclic garbage collector's books, so a big cache adds
        nothing to its pauses."""
        self._rev = 0
        self._load_index()
        self._committed = self._rev
        self._in_txn = False
        self._flush_scheduled = False
        self._pending: list[tuple[Event, asyncio.Future[None]]] = []
        self._checkpointer: _Checkpointer | None = None

    @classmethod
    def open(cls, path: str | Path, *, fsync: bool = False) -> SQLiteBackend:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-16000")
        db.executescript(_SCHEMA)
        db.execute("PRAGMA wal_autocheckpoint=0")
        store = cls(db)
        store._checkpointer = _Checkpointer(str(path))
        return store

    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _load_index(self) -> None:
        """Rebuild the key index from the log (start-up, or after a failed commit)."""
        index: dict[str, tuple[int, int]] = {}
        rev = 0
        for key, r, typ, crev in self._db.execute(
                "SELECT key, rev, type, create_rev FROM log ORDER BY rev"):
            if typ == _DELETE:
                index.pop(key, None)
            else:
                index[key] = (crev, r)
            rev = r
        self._index = index
        self._keys = SortedList(index)
        self._cache.clear()
        self._rev = max(rev, self._compacted, self._meta("revision"))

    # -- reads ---------------------------------------------------------------------

    def _value(self, rev: int) -> bytes:
        row = self._db.execute("SELECT value FROM log WHERE rev = ?", (rev,)).fetchone()
        if row is None:
            raise StoreError(f"revision {rev} is missing from the log")
        return bytes(row[0])

    def _values(self, revs: list[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for i in range(0, len(revs), _CHUNK):
            chunk = revs[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for r, v in self._db.execute(
                    f"SELECT rev, value FROM log WHERE rev IN ({marks})", chunk):
                out[r] = v
        return out

    async def get(self, key: str) -> KeyValue | None:
        hit = self._cache.get(key)
        if hit is not None:
            return KeyValue(*hit)
        entry = self._index.get(key)
        if entry is None:
            return None
        kv = KeyValue(key, self._value(entry[1]), entry[0], entry[1])
        self._remember(kv)
        return kv

    def _remember(self, kv: KeyValue) -> None:
        cache = self._cache
        if len(cache) >= CACHE_ENTRIES:
            # drop the oldest quarter (dicts keep insertion order)
            for k in list(itertools.islice(cache, CACHE_ENTRIES // 4)):
                del cache[k]
        cache[kv.key] = (kv.key, kv.value, kv.create_revision, kv.mod_revision)

    def _range(self, prefix: str, start_after: str) -> Iterable[str]:
        hi = prefix_end(prefix)
        keys: Iterable[str]
        if start_after and start_after >= prefix:
            keys = self._keys.irange(start_after, hi, inclusive=(False, False))
        else:
            keys = self._keys.irange(prefix, hi, inclusive=(True, False))
        return keys

    async def list(
        self, prefix: str, *, start_after: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        if revision <= 0 or revision >= self._rev:
            return self._list_now(prefix, start_after, limit)
        if revision < self._compacted:
            raise CompactedError(revision, self._compacted)
        return self._list_at(prefix, start_after, limit, revision)

    def _list_now(self, prefix: str, start_after: str, limit: int) -> ListResult:
        keys = list(itertools.islice(self._range(prefix, start_after),
                                     limit + 1 if limit > 0 else None))
        more = limit > 0 and len(keys) > limit
        if more:
            keys = keys[:limit]
        index, cache = self._index, self._cache
        items: list[KeyValue | None] = []
        missing: list[int] = []
        for k in keys:
            hit = cache.get(k)
            if hit is None:
                missing.append(index[k][1])
                items.append(None)
            else:
                items.append(KeyValue(*hit))
        if missing:
            values = self._values(missing)
            for i, k in enumerate(keys):
                if items[i] is None:
                    crev, mrev = index[k]
                    items[i] = KeyValue(k, values[mrev], crev, mrev)
        return ListResult(items, self._rev, more)  # type: ignore[arg-type]

    def _list_at(self, prefix: str, start_after: str, limit: int, revision: int) -> ListResult:
        """The state at ``revision``: today's, with the changes since walked back."""
        hi = prefix_end(prefix)
        first_change: dict[str, int] = {}
        for key, prev in self._db.execute(
                "SELECT key, prev_rev FROM log WHERE rev > ? AND key >= ? AND key < ? "
                "ORDER BY rev", (revision, prefix, hi)):
            first_change.setdefault(key, prev)
        state: dict[str, int] = {}
        for key in self._range(prefix, ""):
            if key not in first_change:
                state[key] = self._index[key][1]
        for key, prev in first_change.items():
            if prev:
                state[key] = prev
        keys = sorted(k for k in state if not start_after or k > start_after)
        more = limit > 0 and len(keys) > limit
        if more:
            keys = keys[:limit]
        revs = [state[k] for k in keys]
        rows: dict[int, tuple[int, bytes]] = {}
        for i in range(0, len(revs), _CHUNK):
            chunk = revs[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for r, crev, v in self._db.execute(
                    f"SELECT rev, create_rev, value FROM log WHERE rev IN ({marks})", chunk):
                rows[r] = (crev, v)
        items = []
        for k, r in zip(keys, revs, strict=True):
            if r not in rows:
                raise CompactedError(revision, self._compacted)
            items.append(KeyValue(k, rows[r][1], rows[r][0], r))
        return ListResult(items, revision, more)

    async def count(self, prefix: str) -> int:
        return sum(1 for _ in self._range(prefix, ""))

    async def current_revision(self) -> int:
        return self._rev

    def compacted_revision(self) -> int:
        return self._compacted

    # -- writes --------------------------------------------------------------------

    def _write(self, event: Event) -> asyncio.Future[None]:
        """Append one change to the open transaction; the future resolves once it is
        committed. Changes made in the same turn of the event loop share one COMMIT
        (group commit). Until then only this connection sees them, and watchers are
        told after the commit."""
        db = self._db
        if not self._in_txn:
            db.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        kv = event.kv
        db.execute(
            "INSERT INTO log (rev, key, type, create_rev, prev_rev, value) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (kv.mod_revision, kv.key, int(event.type), kv.create_revision,
             event.prev.mod_revision if event.prev else 0, kv.value))
        self._rev = kv.mod_revision
        if event.type == EventType.DELETE:
            self._cache.pop(kv.key, None)
            del self._index[kv.key]
            self._keys.remove(kv.key)
        else:
            if event.type == EventType.CREATE:
                self._keys.add(kv.key)
            self._index[kv.key] = (kv.create_revision, kv.mod_revision)
            self._cache.pop(kv.key, None)
            self._remember(kv)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if not self._in_txn:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            log.error("store commit failed: %s", e)
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._in_txn = False
            self._load_index()
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(StoreError(f"commit failed: {e}"))
            return
        self._in_txn = False
        self._committed = self._rev
        self._notify([ev for ev, _ in pending])
        for _, fut in pending:
            if not fut.done():
                fut.set_result(None)

    async def create(self, key: str, value: bytes) -> KeyValue:
        if key in self._index:
            raise AlreadyExistsError(key)
        rev = self._rev + 1
        kv = KeyValue(key, value, rev, rev)
        await self._write(Event(EventType.CREATE, kv))
        return kv

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        prev = await self.get(key)
        if prev is None:
            raise NotFoundError(key)
        if prev.mod_revision != expected_revision:
            raise ConflictError(key, expected=expected_revision, actual=prev.mod_revision)
        kv = KeyValue(key, value, prev.create_revision, self._rev + 1)
        await self._write(Event(EventType.UPDATE, kv, prev))
        return kv

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        prev = await self.get(key)
        if prev is None:
            raise NotFoundError(key)
        if expected_revision and prev.mod_revision != expected_revision:
            raise ConflictError(key, expected=expected_revision, actual=prev.mod_revision)
        kv = KeyValue(key, prev.value, prev.create_revision, self._rev + 1)
        await self._write(Event(EventType.DELETE, kv, prev))
        return kv

    # -- watch ---------------------------------------------------------------------

    def _notify(self, events: builtins.list[Event]) -> None:
        if not self._watchers:
            return
        by_bucket: dict[str, builtins.list[Event]] = {}
        for e in events:
            by_bucket.setdefault(_bucket(e.kv.key), []).append(e)
        for w in tuple(self._watchers):
            if w.bucket is not None:
                candidates = by_bucket.get(w.bucket)
                if not candidates:
                    continue
            else:
                candidates = events
            batch = [e for e in candidates
                     if w.prefix <= e.kv.key < w.end and e.kv.mod_revision > w.after]
            if batch:
                w.push(batch)

    async def watch(self, prefix: str, *, after_revision: int) -> _Watcher:
        if after_revision < self._compacted:
            raise CompactedError(after_revision, self._compacted)
        # Replay what is committed and subscribe without yielding to the loop in between,
        # so no event can fall into the gap: changes not committed yet reach the watcher
        # when their commit does.
        w = _Watcher(self, prefix, max(after_revision, self._committed))
        if after_revision < self._committed:
            rows = self._db.execute(
                "SELECT l.rev, l.key, l.type, l.create_rev, l.value, p.rev, p.create_rev, "
                "p.value FROM log l LEFT JOIN log p ON p.rev = l.prev_rev AND l.prev_rev > 0 "
                "WHERE l.rev > ? AND l.rev <= ? AND l.key >= ? AND l.key < ? ORDER BY l.rev",
                (after_revision, self._committed, prefix, w.end),
            ).fetchall()
            events = []
            for rev, key, typ, crev, value, prev_rev, prev_crev, prev_value in rows:
                prev = KeyValue(key, prev_value, prev_crev, prev_rev) if prev_rev else None
                events.append(Event(EventType(typ), KeyValue(key, value, crev, rev), prev))
            if events:
                w.push(events)
        self._watchers.add(w)
        return w

    # -- maintenance ---------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Forget history at or below ``revision`` (never the newest revision of a key).

        The rows to drop are found on a thread (a GROUP BY over the old part of the log),
        then deleted in small transactions so that writes are never held up for long.
        """
        self._flush()
        revision = min(revision, self._committed)
        if revision <= self._compacted:
            return
        path = self._db.execute("PRAGMA database_list").fetchone()[2]
        doomed = await asyncio.to_thread(_superseded, path, revision)
        # mark first: reads below the point now fail rather than see partial history
        self._compacted = revision
        for i in range(0, len(doomed), _CHUNK):
            chunk = doomed[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            self._flush()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"DELETE FROM log WHERE rev IN ({marks})", chunk)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            await asyncio.sleep(0)
        self._flush()
        for name, value in (("compacted", revision), ("revision", self._committed)):
            self._db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    def close_watches(self) -> None:
        """End every open watch (their consumers see the stream end)."""
        for w in tuple(self._watchers):
            w.close()

    async def close(self) -> None:
        self._flush()
        self.close_watches()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._db.close()


def _superseded(path: str, revision: int) -> list[int]:
    """Revisions at or below ``revision`` that compaction may drop."""
    db = sqlite3.connect(path)
    try:
        return [r for (r,) in db.execute(
            "SELECT rev FROM log WHERE rev <= ? AND (type = 2 OR rev NOT IN "
            "(SELECT MAX(rev) FROM log WHERE rev <= ? GROUP BY key))", (revision, revision))]
    finally:
        db.close()


class _Checkpointer:
    """Copies the WAL into the database file every ``interval`` seconds, off the loop."""

    def __init__(self, path: str, interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:  # busy or locked: next time
                    log.debug("checkpoint skipped: %s", e)
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
