"""The store backends (SQLite, and a real etcd): revisions, compare-and-swap, watch replay
without gaps, compaction."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.etcd import etcd_cluster, etcd_server

from kybernetes.store import (
    AlreadyExistsError,
    CompactedError,
    ConflictError,
    EventType,
    NotFoundError,
)
from kybernetes.store.backend import Backend
from kybernetes.store.etcd import EtcdBackend
from kybernetes.store.sqlite import SQLiteBackend


@pytest.fixture(params=["sqlite", "etcd", pytest.param("etcd3", marks=pytest.mark.slow)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The same suite against both backends: SQLite, and a real etcd started here (one
    member, and a 3-member cluster reached through all three endpoints)."""
    if request.param == "sqlite":
        s: Backend = SQLiteBackend.open(tmp_path / "s.db")
        yield s
        await s.close()
        return
    if request.param == "etcd3":
        with etcd_cluster(tmp_path / "etcd3") as cluster:
            e3 = await EtcdBackend.connect(cluster.urls)
            yield e3
            await e3.close()
        return
    with etcd_server(tmp_path / "etcd") as url:
        e = await EtcdBackend.connect([url])
        yield e
        await e.close()


async def rev0(store: Backend) -> int:
    """The revision of a fresh store (0 for SQLite; etcd starts at 1)."""
    return await store.current_revision()


async def test_revisions_are_cluster_wide(store: Backend) -> None:
    """Each write gets the next revision, whatever the key."""
    r = await rev0(store)
    a = await store.create("/registry/cm/ns/a", b"1")
    b = await store.create("/registry/pods/ns/b", b"2")
    a2 = await store.update("/registry/cm/ns/a", b"3", expected_revision=a.mod_revision)
    assert (a.mod_revision, b.mod_revision, a2.mod_revision) == (r + 1, r + 2, r + 3)
    assert a2.create_revision == r + 1
    assert await store.current_revision() == r + 3


async def test_compare_and_swap(store: Backend) -> None:
    """Creates of existing keys and updates from a stale revision fail; nothing changes."""
    r = await rev0(store)
    kv = await store.create("/k", b"v1")
    with pytest.raises(AlreadyExistsError):
        await store.create("/k", b"again")
    await store.update("/k", b"v2", expected_revision=kv.mod_revision)
    with pytest.raises(ConflictError):
        await store.update("/k", b"v3", expected_revision=kv.mod_revision)
    with pytest.raises(ConflictError):
        await store.delete("/k", expected_revision=kv.mod_revision)
    with pytest.raises(NotFoundError):
        await store.update("/missing", b"x", expected_revision=1)
    got = await store.get("/k")
    assert got is not None and got.value == b"v2"
    assert await store.current_revision() == r + 2


async def test_list_prefix_limit_and_revision(store: Backend) -> None:
    """Lists are in key order, paginate, and can read the past."""
    for name in ("c", "a", "b"):
        await store.create(f"/registry/cm/{name}", name.encode())
    await store.create("/registry/cmx/other", b"x")
    page = await store.list("/registry/cm/", limit=2)
    assert [kv.key for kv in page.items] == ["/registry/cm/a", "/registry/cm/b"] and page.more
    rest = await store.list("/registry/cm/", start_after=page.items[-1].key, limit=2)
    assert [kv.key for kv in rest.items] == ["/registry/cm/c"] and not rest.more
    at = await store.current_revision()
    await store.delete("/registry/cm/a")
    b = await store.get("/registry/cm/b")
    assert b is not None
    await store.update("/registry/cm/b", b"B", expected_revision=b.mod_revision)
    past = await store.list("/registry/cm/", revision=at)
    assert [(kv.key, kv.value) for kv in past.items] == [
        ("/registry/cm/a", b"a"), ("/registry/cm/b", b"b"), ("/registry/cm/c", b"c")]
    now = await store.list("/registry/cm/")
    assert [(kv.key, kv.value) for kv in now.items] == [
        ("/registry/cm/b", b"B"), ("/registry/cm/c", b"c")]


async def test_watch_replays_then_streams_without_gaps(store: Backend) -> None:
    """A watch from revision N gets every later event once, in order, then live ones."""
    r = await rev0(store)
    for i in range(5):
        await store.create(f"/w/{i}", b"%d" % i)
    w = await store.watch("/w/", after_revision=r + 2)
    await store.delete("/w/0")
    await store.create("/other/x", b"ignored")
    kv = await store.get("/w/4")
    assert kv is not None
    await store.update("/w/4", b"four", expected_revision=kv.mod_revision)
    seen = []
    while len(seen) < 5:
        batch = await asyncio.wait_for(w.next(), 2)
        assert batch
        seen.extend((e.type, e.kv.key, e.revision) for e in batch)
    w.close()
    assert seen == [(EventType.CREATE, "/w/2", r + 3), (EventType.CREATE, "/w/3", r + 4),
                    (EventType.CREATE, "/w/4", r + 5), (EventType.DELETE, "/w/0", r + 6),
                    (EventType.UPDATE, "/w/4", r + 8)]


async def test_delete_event_carries_last_value(store: Backend) -> None:
    """A DELETE event has the deleted value and the deletion's revision."""
    r = await rev0(store)
    await store.create("/d", b"last")
    w = await store.watch("/d", after_revision=await store.current_revision())
    await store.delete("/d")
    batch = await asyncio.wait_for(w.next(), 2)
    assert batch is not None
    ev = batch[0]
    assert (ev.type, ev.kv.value, ev.revision) == (EventType.DELETE, b"last", r + 2)
    assert ev.prev is not None and ev.prev.mod_revision == r + 1
    w.close()


async def test_compaction(store: Backend) -> None:
    """Below the compacted revision reads fail; the newest value of every key survives."""
    r = await rev0(store)
    await store.create("/c/keep", b"old")
    for i in range(10):
        kv = await store.get("/c/keep")
        assert kv is not None
        await store.update("/c/keep", b"v%d" % i, expected_revision=kv.mod_revision)
    await store.create("/c/gone", b"x")
    await store.delete("/c/gone")
    await store.compact(r + 8)
    assert store.compacted_revision() == r + 8
    with pytest.raises(CompactedError):
        await store.watch("/c/", after_revision=r + 3)
    with pytest.raises(CompactedError):
        await store.list("/c/", revision=r + 5)
    past = await store.list("/c/", revision=r + 9)
    assert [(kv.key, kv.value) for kv in past.items] == [("/c/keep", b"v7")]
    w = await store.watch("/c/", after_revision=r + 8)
    seen: list[int] = []
    while len(seen) < 5:  # etcd may deliver the replay in several batches
        batch = await asyncio.wait_for(w.next(), 2)
        assert batch
        seen.extend(e.revision for e in batch)
    assert seen == [r + 9, r + 10, r + 11, r + 12, r + 13]
    w.close()


async def test_slow_watcher_is_dropped(store: Backend,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher that falls too far behind is ended (and must re-list), not buffered forever."""
    import kybernetes.store.etcd as etcd_mod
    import kybernetes.store.sqlite as sqlite_mod

    monkeypatch.setattr(sqlite_mod, "WATCH_QUEUE_LIMIT", 3)
    monkeypatch.setattr(etcd_mod, "WATCH_QUEUE", 3)
    w = await store.watch("/s/", after_revision=await store.current_revision())
    for i in range(5):
        await store.create(f"/s/{i}", b"x")
    for _ in range(100):  # etcd's events arrive a moment after the writes
        if w.overflowed:
            break
        await asyncio.sleep(0.02)
    assert w.overflowed
    batches = [b async for b in w]
    assert sum(len(b) for b in batches) <= 3


def test_acknowledged_writes_survive_kill(tmp_path: Path) -> None:
    """Writes acknowledged before the process is SIGKILLed are there after reopening."""
    db = tmp_path / "k.db"
    script = textwrap.dedent(f"""
        import asyncio, os, signal, sys
        from kybernetes.store.sqlite import SQLiteBackend
        async def main():
            s = SQLiteBackend.open({str(db)!r})
            for i in range(500):
                await s.create(f"/k/{{i}}", b"v")
            print("acked", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9 and "acked" in proc.stdout

    async def check() -> None:
        s = SQLiteBackend.open(db)
        page = await s.list("/k/")
        assert len(page.items) == 500
        assert await s.current_revision() == 500
        await s.close()

    asyncio.run(check())


async def test_list_at_revision_sees_deletes_and_recreates(store: Backend) -> None:
    """The past is rebuilt exactly: deleted, re-created and updated keys at each revision."""
    r = await rev0(store)
    a = await store.create("/p/a", b"a1")                       # 1
    await store.create("/p/b", b"b1")                           # 2
    await store.delete("/p/a")                                  # 3
    await store.create("/p/a", b"a2")                           # 4
    b = await store.get("/p/b")
    assert b is not None and a.mod_revision == r + 1
    await store.update("/p/b", b"b2", expected_revision=b.mod_revision)  # 5
    await store.create("/p/c", b"c1")                           # 6
    expect = {
        1: [("/p/a", b"a1")],
        2: [("/p/a", b"a1"), ("/p/b", b"b1")],
        3: [("/p/b", b"b1")],
        4: [("/p/a", b"a2"), ("/p/b", b"b1")],
        5: [("/p/a", b"a2"), ("/p/b", b"b2")],
    }
    for rev, items in expect.items():
        got = await store.list("/p/", revision=r + rev)
        assert [(kv.key, kv.value) for kv in got.items] == items, rev
        assert got.revision == r + rev
    page = await store.list("/p/", revision=r + 4, limit=1)
    assert [kv.key for kv in page.items] == ["/p/a"] and page.more
    page = await store.list("/p/", revision=r + 4, start_after="/p/a", limit=1)
    assert [kv.key for kv in page.items] == ["/p/b"] and not page.more


async def test_reopen_rebuilds_the_index(tmp_path: Path) -> None:
    """After a restart the newest value of every key, and deletions, are as before."""
    s = SQLiteBackend.open(tmp_path / "r.db")
    await s.create("/r/a", b"1")
    kv = await s.create("/r/b", b"1")
    await s.update("/r/b", b"2", expected_revision=kv.mod_revision)
    await s.delete("/r/a")
    await s.close()
    s = SQLiteBackend.open(tmp_path / "r.db")
    assert await s.get("/r/a") is None
    b = await s.get("/r/b")
    assert b is not None and (b.value, b.create_revision, b.mod_revision) == (b"2", 2, 3)
    assert await s.current_revision() == 4
    assert [kv.key for kv in (await s.list("/r/")).items] == ["/r/b"]
    await s.close()


async def test_concurrent_writes_share_commits(store: Backend) -> None:
    """Writes issued together get consecutive revisions and each is acknowledged once."""
    r = await rev0(store)
    kvs = await asyncio.gather(*(store.create(f"/g/{i}", b"x") for i in range(50)))
    assert sorted(kv.mod_revision for kv in kvs) == list(range(r + 1, r + 51))
    w = await store.watch("/g/", after_revision=r)
    seen: list[int] = []
    while len(seen) < 50:
        batch = await asyncio.wait_for(w.next(), 2)
        assert batch
        seen.extend(e.revision for e in batch)
    assert seen == list(range(r + 1, r + 51))
    w.close()
