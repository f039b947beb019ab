"""What servers sharing a datastore share: sealed under the server token, refused
without it, never taken over by a second first server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kybernetes.apiserver import join
from kybernetes.store.sqlite import SQLiteBackend


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    s = SQLiteBackend.open(tmp_path / "shared.db")
    yield s
    await s.close()


def pki(tmp_path: Path, name: str, ca: bytes = b"CA-1") -> Path:
    d = tmp_path / name / "pki"
    d.mkdir(parents=True)
    for f, data in (("ca.crt", ca), ("ca.key", b"KEY-1"), ("sa.key", b"SA-1"),
                    ("admin.token", b"ADMIN"), ("encryption-config.yaml", b"enc: 1"),
                    ("apiserver.crt", b"own serving cert")):
        (d / f).write_bytes(data)
    return d


def test_sealed_data_opens_only_with_its_token() -> None:
    blob = join.seal({"ca.key": b"secret"}, "t0ken")
    assert b"secret" not in blob
    assert join.unseal(blob, "t0ken") == {"ca.key": b"secret"}
    with pytest.raises(join.JoinError, match="does not open"):
        join.unseal(blob, "wrong")


async def test_a_joining_server_gets_the_shared_files(store: SQLiteBackend,
                                                      tmp_path: Path) -> None:
    first = pki(tmp_path, "a")
    token = join.server_token(first)
    await join.publish(store, first, token)
    second = tmp_path / "b" / "pki"
    await join.fetch(store, second, token)
    for name in join.SHARED_FILES:
        assert (second / name).read_bytes() == (first / name).read_bytes()
    assert not (second / "apiserver.crt").exists()  # each makes its own
    assert (second / "ca.key").stat().st_mode & 0o777 == 0o600
    assert join.server_token(second, token) == token
    await join.fetch(store, second, token)  # a restart: the same files are fine
    with pytest.raises(join.JoinError, match="does not open"):
        await join.fetch(store, tmp_path / "c" / "pki", "not-the-token")


async def test_nothing_to_join_or_another_cluster_is_refused(store: SQLiteBackend,
                                                            tmp_path: Path) -> None:
    with pytest.raises(join.JoinError, match="holds no cluster to join"):
        await join.fetch(store, tmp_path / "x" / "pki", "t")
    first = pki(tmp_path, "a")
    await join.check_datastore(store, first)  # empty: fine
    await join.publish(store, first, join.server_token(first))
    await join.publish(store, first, join.server_token(first))  # restart: fine
    # a second "first server" with a fresh data dir must not take the datastore over
    with pytest.raises(join.JoinError, match="already holds a cluster"):
        await join.check_datastore(store, tmp_path / "fresh" / "pki")
    other = pki(tmp_path, "other", ca=b"CA-2")
    with pytest.raises(join.JoinError):
        await join.publish(store, other, join.server_token(other))
    # a data dir of another cluster cannot join this one
    with pytest.raises(join.JoinError, match="belongs to another cluster"):
        await join.fetch(store, other, join.server_token(first))
