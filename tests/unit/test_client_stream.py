"""The lean watch-stream reader against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from kybernetes.api.errors import StatusError
from kybernetes.apiserver.http import HTTPServer
from kybernetes.client import Client, Config
from kybernetes.client.stream import stream_lines

EVENTS = [{"type": "ADDED", "object": {"metadata": {"name": f"o{i}"}}} for i in range(5)]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/missing":
        body = orjson.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "NotFound", "message": "nope", "code": 404})
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    data = b"".join(orjson.dumps(e) + b"\n" for e in EVENTS)
    # cut the stream at awkward places: mid-line, and several lines per chunk
    for piece in (data[:7], data[7:60], data[60:61], data[61:]):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    srv = HTTPServer(app)
    await srv.start("127.0.0.1", 0)
    assert srv._server is not None
    port = srv._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await srv.stop(grace=0.5)


async def test_lines_survive_any_chunking(server: str) -> None:
    """Events split across and packed into chunks come out one line each."""
    lines = [orjson.loads(line) async for line in stream_lines(
        server, "/watch", {"watch": "true"}, headers={}, ssl_context=None)]
    assert lines == EVENTS


async def test_error_status_raises(server: str) -> None:
    """A non-2xx answer raises the Status it carries."""
    with pytest.raises(StatusError) as e:
        async for _ in stream_lines(server, "/missing", {}, headers={}, ssl_context=None):
            pass
    assert e.value.code == 404 and e.value.reason == "NotFound"


async def test_client_watch_uses_the_stream(server: str) -> None:
    """Client.watch over the network yields WatchEvents from the lean reader."""
    async with Client(Config(server=server)) as c:
        events = [ev async for ev in c.watch("v1", "configmaps", namespace="default")]
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == \
        [("ADDED", f"o{i}") for i in range(5)]


async def test_pool_reuses_connections_and_reads_both_body_framings(server: str) -> None:
    """Plain requests: chunked and Content-Length bodies, errors as StatusError, and one
    kept-alive connection serving request after request."""
    from kybernetes.client.stream import HTTPPool

    pool = HTTPPool(server, ssl_context=None, headers={"Accept": "application/json"}, size=2)
    try:
        for _ in range(3):
            status, headers, body = await pool.request("GET", "/watch", {}, {}, None)
            assert status == 200 and body.count(b"\n") == len(EVENTS)
        assert len(pool._idle) == 1  # the same connection every time
        status, headers, body = await pool.request("GET", "/missing", {}, {}, None)
        assert status == 404 and orjson.loads(body)["reason"] == "NotFound"
        assert headers["content-type"] == "application/json"
        # a kept-alive connection the server has dropped is replaced, the request retried
        pool._idle[0].writer.transport.abort()
        await asyncio.sleep(0)
        pool._idle[0].reader.feed_eof()
        status, _, _ = await pool.request("GET", "/watch", {}, {}, None)
        assert status == 200
    finally:
        await pool.aclose()
    async with Client(Config(server=server)) as c:
        with pytest.raises(StatusError) as e:
            await c.request("GET", "/missing")
        assert e.value.code == 404 and e.value.reason == "NotFound"


async def test_pool_survives_the_server_closing_every_idle_connection() -> None:
    """After a burst the pool holds several kept-alive connections; the server's idle
    sweep closes them all at once; the next requests still succeed (a CI failure: two
    stale connections in a row used to fail the request)."""
    from kybernetes.client.stream import HTTPPool

    srv = HTTPServer(app, keep_alive_timeout=0.4)
    await srv.start("127.0.0.1", 0)
    assert srv._server is not None
    url = f"http://127.0.0.1:{srv._server.sockets[0].getsockname()[1]}"
    pool = HTTPPool(url, ssl_context=None, headers={}, size=4)
    try:
        await asyncio.gather(*(pool.request("GET", "/watch", {}, {}, None) for _ in range(4)))
        assert len(pool._idle) == 4
        for _ in range(100):  # the sweep closes all four
            if not srv.connections:
                break
            await asyncio.sleep(0.05)
        assert not srv.connections
        for _ in range(3):
            status, _, _ = await pool.request("GET", "/watch", {}, {}, None)
            assert status == 200
        # also when the closes have not reached the client's readers yet
        await asyncio.gather(*(pool.request("GET", "/watch", {}, {}, None) for _ in range(4)))
        for conn in pool._idle:
            conn.writer.transport.abort()
        status, _, _ = await pool.request("GET", "/watch", {}, {}, None)
        assert status == 200
    finally:
        await pool.aclose()
        await srv.stop(grace=0.5)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connecting is refused


async def test_a_client_moves_to_the_next_server_when_one_is_down(server: str) -> None:
    """Several API servers of one cluster: the unreachable one is skipped, for requests
    and for watches, and the client stays on the one that answers."""
    dead = f"http://127.0.0.1:{_closed_port()}"
    cfg = Config.for_server(f"{dead},{server}")
    assert (cfg.server, cfg.fallback_servers) == (dead, [server])
    async with Client(cfg) as c:
        with pytest.raises(StatusError) as e:  # answered: by the live server
            await c.request("GET", "/missing")
        assert e.value.code == 404
        assert c._pool is not None and c._pool.server == server
        names = [e.object["metadata"]["name"] async for e in c.watch("v1", "pods")]
        assert names == [e["object"]["metadata"]["name"] for e in EVENTS]
    async with Client(Config.for_server(dead)) as c:
        with pytest.raises(OSError):
            await c.request("GET", "/anything")
