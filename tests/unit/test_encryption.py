"""Encryption at rest (kybernetes.store.encryption) over a real SQLite store."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from kybernetes.store import EventType
from kybernetes.store.encryption import (
    PREFIX,
    ConfigError,
    DecryptError,
    EncryptedBackend,
    load_config,
    new_config_text,
    parse_config,
)
from kybernetes.store.sqlite import SQLiteBackend

KEY1 = base64.b64encode(b"1" * 32).decode()
KEY2 = base64.b64encode(b"2" * 32).decode()
SECRET = b'{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}'


def config(*keys: tuple[str, str], identity_first: bool = False) -> dict[str, object]:
    providers: list[object] = [{"aesgcm": {"keys": [{"name": n, "secret": s}
                                                     for n, s in keys]}}, {"identity": {}}]
    if identity_first:
        providers.reverse()
    return {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
            "resources": [{"resources": ["secrets"], "providers": providers}]}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    s = SQLiteBackend.open(tmp_path / "state.db")
    try:
        yield s
    finally:
        await s.close()


async def test_secrets_are_stored_encrypted_and_read_in_clear(store: SQLiteBackend,
                                                              tmp_path: Path) -> None:
    enc = EncryptedBackend(store, parse_config(config(("key1", KEY1))))
    kv = await enc.create("/registry/secrets/ns/a", SECRET)
    assert kv.value == SECRET
    raw = await store.get("/registry/secrets/ns/a")
    assert raw is not None and raw.value.startswith(PREFIX + b"key1:")
    assert b"aHVudGVyMg" not in raw.value
    got = await enc.get("/registry/secrets/ns/a")
    assert got is not None and got.value == SECRET
    await enc.create("/registry/configmaps/ns/c", b'{"data":{"x":"visible"}}')
    assert (await store.get("/registry/configmaps/ns/c")).value == b'{"data":{"x":"visible"}}'
    page = await enc.list("/registry/")
    assert [kv.value for kv in page.items] == [b'{"data":{"x":"visible"}}', SECRET]
    await store.close()
    assert b"aHVudGVyMg" not in b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))


async def test_watchers_see_clear_values(store: SQLiteBackend) -> None:
    enc = EncryptedBackend(store, parse_config(config(("key1", KEY1))))
    watch = await enc.watch("/registry/secrets/", after_revision=await store.current_revision())
    kv = await enc.create("/registry/secrets/ns/a", SECRET)
    await enc.update("/registry/secrets/ns/a", SECRET.replace(b"aHVu", b"bmV3"),
                     expected_revision=kv.mod_revision)
    events = []
    while len(events) < 2:
        batch = await watch.next(2)
        assert batch, "no events"
        events.extend(batch)
    assert [e.type for e in events] == [EventType.CREATE, EventType.UPDATE]
    assert events[0].kv.value == SECRET
    assert events[1].prev is not None and events[1].prev.value == SECRET
    watch.close()


async def test_rotation_reads_old_values_and_writes_with_the_new_key(
        store: SQLiteBackend) -> None:
    old = EncryptedBackend(store, parse_config(config(("key1", KEY1))))
    kv = await old.create("/registry/secrets/ns/a", SECRET)
    await store.create("/registry/secrets/ns/plain", SECRET)  # from before encryption
    rotated = EncryptedBackend(store, parse_config(config(("key2", KEY2), ("key1", KEY1))))
    assert (await rotated.get("/registry/secrets/ns/a")).value == SECRET
    assert (await rotated.get("/registry/secrets/ns/plain")).value == SECRET  # identity
    await rotated.update("/registry/secrets/ns/a", SECRET, expected_revision=kv.mod_revision)
    assert (await store.get("/registry/secrets/ns/a")).value.startswith(PREFIX + b"key2:")
    only_new = EncryptedBackend(store, parse_config(config(("key2", KEY2))))
    assert (await only_new.get("/registry/secrets/ns/a")).value == SECRET
    await old.create("/registry/secrets/ns/b", SECRET)
    with pytest.raises(DecryptError, match="no configured key 'key1'"):
        await only_new.get("/registry/secrets/ns/b")


async def test_a_value_moved_to_another_key_does_not_decrypt(store: SQLiteBackend) -> None:
    enc = EncryptedBackend(store, parse_config(config(("key1", KEY1))))
    await enc.create("/registry/secrets/ns/a", SECRET)
    raw = await store.get("/registry/secrets/ns/a")
    await store.create("/registry/secrets/ns/stolen", raw.value)
    with pytest.raises(DecryptError, match="does not decrypt"):
        await enc.get("/registry/secrets/ns/stolen")


def test_identity_first_writes_in_clear() -> None:
    cfg = parse_config(config(("key1", KEY1), identity_first=True))
    enc = EncryptedBackend(None, cfg)  # type: ignore[arg-type]
    assert enc.encrypt("/registry/secrets/ns/a", SECRET) == SECRET


@pytest.mark.parametrize(("doc", "message"), [
    ({"kind": "Other"}, "not an apiserver.config.k8s.io/v1 EncryptionConfiguration"),
    (config(("key1", base64.b64encode(b"short").decode())), "must be 16, 24 or 32 bytes"),
    (config(("a:b", KEY1)), "a name without ':' is required"),
    ({"kind": "EncryptionConfiguration", "resources": [
        {"resources": ["secrets"], "providers": [{"kms": {}}]}]}, "unsupported provider 'kms'"),
    ({"kind": "EncryptionConfiguration", "resources": [
        {"resources": ["secrets"], "providers": []}]}, "at least one is required"),
])
def test_bad_configs_are_refused(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_a_new_config_has_a_fresh_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(new_config_text())
    cfg = load_config(p)
    (provider, identity) = cfg.resources["secrets"]
    assert len(provider.keys[0][1]) == 32 and identity.identity
    assert yaml.safe_load(new_config_text()) != yaml.safe_load(p.read_text())
