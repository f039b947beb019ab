"""KindCache: admission's in-process mirror of quotas and limit ranges sees every
acknowledged write, across namespaces, deletes and a dropped watch."""

from __future__ import annotations

from pathlib import Path

import pytest

from kybernetes.apiserver.watchcache import KindCache
from kybernetes.store import EventType
from kybernetes.store.sqlite import SQLiteBackend

P = "/registry/resourcequotas/"


@pytest.fixture
async def store(tmp_path: Path) -> SQLiteBackend:
    s = SQLiteBackend.open(tmp_path / "s.db")
    yield s  # type: ignore[misc]
    await s.close()


async def test_poll_returns_delivered_events_without_waiting(store: SQLiteBackend) -> None:
    w = await store.watch(P, after_revision=0)
    assert w.poll() == []
    await store.create(P + "a/q1", b"1")
    await store.create("/registry/configmaps/a/c", b"x")
    kv = await store.create(P + "b/q2", b"2")
    events = w.poll()
    assert events is not None
    assert [(e.type, e.kv.key) for e in events] == [(EventType.CREATE, P + "a/q1"),
                                                    (EventType.CREATE, P + "b/q2")]
    assert events[-1].kv.mod_revision == kv.mod_revision
    assert w.poll() == []
    w.close()
    assert w.poll() is None


async def test_cache_sees_each_acknowledged_write(store: SQLiteBackend) -> None:
    await store.create(P + "team-a/before", b"0")
    cache = KindCache(store, P)
    assert [kv.key for kv in await cache.items("team-a")] == [P + "team-a/before"]
    assert await cache.items("team-b") == []
    # writes after the first lookup: each is visible to the very next lookup
    b1 = await store.create(P + "team-b/q1", b"1")
    assert [kv.value for kv in await cache.items("team-b")] == [b"1"]
    await store.update(P + "team-b/q1", b"1'", expected_revision=b1.mod_revision)
    got = await cache.items("team-b")
    assert [kv.value for kv in got] == [b"1'"]
    await store.delete(P + "team-b/q1")
    assert await cache.items("team-b") == []
    # a namespace whose name is a prefix of another's is not mixed up with it
    await store.create(P + "team-bb/q", b"x")
    assert await cache.items("team-b") == []
    assert len(await cache.items("team-bb")) == 1
    # other kinds never show up
    await store.create("/registry/resourcequotasx/team-a/q", b"x")
    assert [kv.key for kv in await cache.items("team-a")] == [P + "team-a/before"]
    cache.close()


async def test_cache_relists_after_its_watch_ended(store: SQLiteBackend) -> None:
    cache = KindCache(store, P)
    assert await cache.items("ns") == []
    store.close_watches()  # as on overflow or shutdown: the watch ends
    await store.create(P + "ns/q", b"1")
    assert [kv.value for kv in await cache.items("ns")] == [b"1"]
    cache.close()
