"""The embedded store: SQLite in WAL mode, kine-style.

Two tables, written in one transaction per change:

- ``log``: one row per revision (``rev`` is the cluster-wide revision). Deletes are rows
  too, carrying the last value. Watches replay from here; lists at an older revision
  are rebuilt from here.
- ``kv``: the newest value of every live key, so reads of the present need no
  GROUP BY over history.

Compare-and-swap is ``UPDATE kv ... WHERE mod_rev = ?`` inside the transaction.
Compaction never touches the newest revision of a key; it drops log rows that a newer
row of the same key at or below the compaction point supersedes, and tombstones there.

All calls run on the event loop's thread: with WAL and ``synchronous=NORMAL`` a commit
is a write() to the WAL file, which survives ``kill -9`` of the process (not a power
cut; pass ``fsync=True`` for that).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

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
CREATE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

CACHE_ENTRIES = 50_000
"""Keys whose newest value is kept in memory for point reads."""

WATCH_QUEUE_LIMIT = 10_000
"""Events a watcher may fall behind by before it is dropped and must re-list."""


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

    async def __aiter__(self) -> AsyncIterator[list[Event]]:
        while True:
            batch = await self.next()
            if batch is None:
                return
            yield batch

    async def next(self, timeout: float | None = None) -> list[Event] | None:
        """The next batch; [] when ``timeout`` passed first; None once the watch ended."""
        if timeout is None:
            batch = await self._queue.get()
        else:
            try:
                batch = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                return []
        if batch is None:
            self._queue.put_nowait(None)  # stay ended for later calls
            return None
        self._pending -= len(batch)
        return batch


class SQLiteBackend:
    """The :class:`~kybernetes.store.backend.Backend` over one SQLite file.

    >>> store = SQLiteBackend.open("/tmp/state.db")          # doctest: +SKIP
    >>> kv = await store.create("/registry/configmaps/default/a", b"{}")  # doctest: +SKIP
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._watchers: set[_Watcher] = set()
        row = db.execute("SELECT MAX(rev) FROM log").fetchone()
        self._rev: int = row[0] or 0
        self._compacted = self._meta("compacted")
        self._rev = max(self._rev, self._compacted, self._meta("revision"))
        self._committed = self._rev
        self._in_txn = False
        self._flush_scheduled = False
        self._pending: list[tuple[Event, asyncio.Future[None]]] = []
        self._checkpointer: _Checkpointer | None = None
        self._cache: dict[str, KeyValue] = {}
        """Newest values of recently used keys. This process is the file's only writer,
        so the cache is kept exact by updating it on every write."""

    @classmethod
    def open(cls, path: str | Path, *, fsync: bool = False) -> SQLiteBackend:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-16000")
        db.executescript(_SCHEMA)
        # Checkpoints fsync; they run on a thread of their own so writes never wait on
        # them (the sqlite3 module releases the GIL while SQLite works).
        db.execute("PRAGMA wal_autocheckpoint=0")
        store = cls(db)
        store._checkpointer = _Checkpointer(str(path))
        return store

    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    # -- reads ---------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        kv = self._cache.get(key)
        if kv is not None:
            return kv
        row = self._db.execute(
            "SELECT create_rev, mod_rev, value FROM kv WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        kv = KeyValue(key, row[2], row[0], row[1])
        self._remember(kv)
        return kv

    def _remember(self, kv: KeyValue) -> None:
        cache = self._cache
        if len(cache) >= CACHE_ENTRIES:
            # drop the oldest quarter (dicts keep insertion order)
            for k in list(itertools.islice(cache, CACHE_ENTRIES // 4)):
                del cache[k]
        cache[kv.key] = kv

    async def list(
        self, prefix: str, *, start_after: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        lo = start_after if start_after and start_after > prefix else prefix
        op = ">" if start_after and start_after > prefix else ">="
        hi = prefix_end(prefix)
        lim = limit + 1 if limit > 0 else -1
        if revision <= 0 or revision >= self._rev:
            rows = self._db.execute(
                f"SELECT key, create_rev, mod_rev, value FROM kv WHERE key {op} ? AND key < ? "
                "ORDER BY key LIMIT ?",
                (lo, hi, lim),
            ).fetchall()
            at = self._rev
        else:
            if revision < self._compacted:
                raise CompactedError(revision, self._compacted)
            rows = self._db.execute(
                "SELECT l.key, l.create_rev, l.rev, l.value FROM log l JOIN "
                f"(SELECT MAX(rev) AS r FROM log WHERE key {op} ? AND key < ? AND rev <= ? "
                "GROUP BY key) m ON l.rev = m.r WHERE l.type != 2 ORDER BY l.key LIMIT ?",
                (lo, hi, revision, lim),
            ).fetchall()
            at = revision
        more = limit > 0 and len(rows) > limit
        if more:
            rows = rows[:limit]
        return ListResult([KeyValue(r[0], r[3], r[1], r[2]) for r in rows], at, more)

    async def count(self, prefix: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM kv WHERE key >= ? AND key < ?", (prefix, prefix_end(prefix))
        ).fetchone()
        return int(row[0])

    async def current_revision(self) -> int:
        return self._rev

    def compacted_revision(self) -> int:
        return self._compacted

    # -- writes --------------------------------------------------------------------

    def _write(self, event: Event, kv_sql: str, kv_args: tuple[object, ...]) -> asyncio.Future[None]:
        """Add one change to the open transaction; the future resolves once it is committed.

        Changes made in the same turn of the event loop share one COMMIT (group commit),
        which is what makes concurrent writes cheap. Until then only this connection sees
        them, and watchers are told after the commit.
        """
        db = self._db
        if not self._in_txn:
            db.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        kv = event.kv
        cur = db.execute(kv_sql, kv_args)
        if cur.rowcount != 1:
            raise _CasFailed
        db.execute(
            "INSERT INTO log (rev, key, type, create_rev, prev_rev, value) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                kv.mod_revision,
                kv.key,
                int(event.type),
                kv.create_revision,
                event.prev.mod_revision if event.prev else 0,
                kv.value,
            ),
        )
        self._rev = kv.mod_revision
        if event.type == EventType.DELETE:
            self._cache.pop(kv.key, None)
        else:
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
            self._rev = self._committed
            self._cache.clear()
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(StoreError(f"commit failed: {e}"))
            return
        self._in_txn = False
        self._committed = self._rev
        events = [ev for ev, _ in pending]
        self._notify(events)
        for _, fut in pending:
            if not fut.done():
                fut.set_result(None)

    async def create(self, key: str, value: bytes) -> KeyValue:
        rev = self._rev + 1
        kv = KeyValue(key, value, rev, rev)
        try:
            done = self._write(
                Event(EventType.CREATE, kv),
                "INSERT INTO kv (key, create_rev, mod_rev, value) VALUES (?, ?, ?, ?)",
                (key, rev, rev, value),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExistsError(key) from None
        await done
        return kv

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        prev = await self.get(key)
        if prev is None:
            raise NotFoundError(key)
        if prev.mod_revision != expected_revision:
            raise ConflictError(key, expected=expected_revision, actual=prev.mod_revision)
        rev = self._rev + 1
        kv = KeyValue(key, value, prev.create_revision, rev)
        try:
            done = self._write(
                Event(EventType.UPDATE, kv, prev),
                "UPDATE kv SET mod_rev = ?, value = ? WHERE key = ? AND mod_rev = ?",
                (rev, value, key, expected_revision),
            )
        except _CasFailed:
            cur = await self.get(key)
            raise ConflictError(
                key, expected=expected_revision, actual=cur.mod_revision if cur else 0
            ) from None
        await done
        return kv

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        prev = await self.get(key)
        if prev is None:
            raise NotFoundError(key)
        if expected_revision and prev.mod_revision != expected_revision:
            raise ConflictError(key, expected=expected_revision, actual=prev.mod_revision)
        rev = self._rev + 1
        kv = KeyValue(key, prev.value, prev.create_revision, rev)
        try:
            done = self._write(
                Event(EventType.DELETE, kv, prev),
                "DELETE FROM kv WHERE key = ? AND mod_rev = ?",
                (key, prev.mod_revision),
            )
        except _CasFailed:
            raise NotFoundError(key) from None
        await done
        return kv

    # -- watch ---------------------------------------------------------------------

    def _notify(self, events: builtins.list[Event]) -> None:
        for w in tuple(self._watchers):
            batch = [e for e in events
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
        """Forget history at or below ``revision`` (never the newest revision of a key)."""
        self._flush()
        revision = min(revision, self._committed)
        if revision <= self._compacted:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # Rows superseded by a newer row of the same key at or below the point.
            db.execute(
                "DELETE FROM log WHERE rev <= ? AND rev < "
                "(SELECT MAX(n.rev) FROM log n WHERE n.key = log.key AND n.rev <= ?)",
                (revision, revision),
            )
            # Tombstones at or below the point: the key is simply absent there.
            db.execute("DELETE FROM log WHERE rev <= ? AND type = 2", (revision,))
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('compacted', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (revision,),
            )
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('revision', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (self._rev,),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._compacted = revision

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


class _CasFailed(Exception):
    pass


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
