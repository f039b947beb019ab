"""Fixtures shared by unit tests: the real API server in-process, and a client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kybernetes.api.builtin import build_registry
from kybernetes.apiserver.app import APIServer, User
from kybernetes.apiserver.bootstrap import Bootstrap
from kybernetes.apiserver.context import Context
from kybernetes.client import Client, Config
from kybernetes.store.sqlite import SQLiteBackend


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[APIServer]:
    """An API server on a SQLite store of the test's own, bootstrapped, token ``t``."""
    backend = SQLiteBackend.open(tmp_path / "s.db")
    server = APIServer(Context(backend, build_registry()), tokens={"t": User("admin", ("system:masters",))})
    await Bootstrap(server, ca_pem=b"", advertise_address="127.0.0.1", port=6443).run()
    server.ready = True
    try:
        yield server
    finally:
        await backend.close()


def transport(api: APIServer) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=api)  # type: ignore[arg-type]


@pytest.fixture
async def client(api: APIServer) -> AsyncIterator[Client]:
    """A client of ``api`` (no network: ASGI in the test's event loop)."""
    async with Client(Config(server="https://kyb", token="t"), transport=transport(api)) as c:
        yield c
