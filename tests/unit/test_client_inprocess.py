"""The client's in-process transport: an ASGI app called directly, as ``kyb server``'s own
components call its API."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest

from kybernetes.api.errors import StatusError
from kybernetes.client import inprocess
from kybernetes.client.inprocess import InProcessPool
from kybernetes.client.kubeconfig import Config
from kybernetes.client.rest import Client

Message = dict[str, Any]


class App:
    """Echoes requests; ``/slow`` finishes after a pause; ``/stream`` sends lines until
    the client goes; ``/denied`` answers 403."""

    def __init__(self) -> None:
        self.finished: list[str] = []
        self.disconnected = asyncio.Event()
        self.sent = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        first = await receive()
        if path == "/slow":
            await asyncio.sleep(0.05)
        if path == "/denied":
            body = orjson.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "message": "forbidden here", "reason": "Forbidden",
                                 "code": 403})
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            watcher = asyncio.ensure_future(receive())
            for i in range(1000):
                if watcher.done():
                    break
                # a line split over two chunks, and two lines in one
                await send({"type": "http.response.body", "body": b'{"n": %d' % i,
                            "more_body": True})
                await send({"type": "http.response.body", "body": b"}\n\n", "more_body": True})
                self.sent += 1
                await asyncio.sleep(0)
            msg = await watcher
            if msg["type"] == "http.disconnect":
                self.disconnected.set()
            self.finished.append(path)
            return
        echo = {"method": scope["method"], "path": path,
                "query": scope["query_string"].decode(),
                "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                "body": first["body"].decode()}
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"Content-Type", b"application/json"), (b"X-Extra", b"1")]})
        await send({"type": "http.response.body", "body": orjson.dumps(echo)})
        self.finished.append(path)


async def test_a_request_reaches_the_app_as_from_the_network() -> None:
    """Method, path, query, headers (the client's token included) and body arrive; the
    answer's status, headers (lower-cased) and body come back."""
    pool = InProcessPool(App(), "https://127.0.0.1:6443",
                         headers={"Authorization": "Bearer t0k"})
    code, headers, body = await pool.request("POST", "/api/v1/x", {"dryRun": "All"},
                                             {"Content-Type": "application/json"}, b'{"a":1}')
    assert code == 201 and headers["x-extra"] == "1"
    echo = orjson.loads(body)
    assert echo["method"] == "POST" and echo["path"] == "/api/v1/x"
    assert echo["query"] == "dryRun=All" and echo["body"] == '{"a":1}'
    assert echo["headers"]["authorization"] == "Bearer t0k"
    assert echo["headers"]["content-length"] == "7"


async def test_a_caller_that_gives_up_does_not_cut_the_server_short() -> None:
    """As behind a connection, the request runs to its end in a task of its own."""
    app = App()
    pool = InProcessPool(app, "https://x", headers={})
    call = asyncio.ensure_future(pool.request("GET", "/slow", {}, {}, None))
    await asyncio.sleep(0.01)
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.1)
    assert app.finished == ["/slow"]


async def test_a_stream_yields_whole_lines_and_ends_when_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines are put together across chunks; a reader that falls behind holds the app
    back; closing the iterator is the client going away."""
    monkeypatch.setattr(inprocess, "_STREAM_CHUNKS", 8)
    app = App()
    pool = InProcessPool(app, "https://x", headers={})
    lines = pool.stream_lines("/stream", {})
    got = [orjson.loads(await anext(lines)) for _ in range(3)]
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
    await asyncio.sleep(0.05)  # the app runs ahead only as far as the buffer allows
    assert app.sent < 3 + 8
    await lines.aclose()
    await asyncio.wait_for(app.disconnected.wait(), 1)
    assert app.finished == ["/stream"] and app.sent < 1000


async def test_an_error_answer_is_a_status_error() -> None:
    """Through the Client: a non-2xx answer raises StatusError, for a request or a watch."""
    client = Client(Config(server="https://127.0.0.1:1", token="t"), app=App())
    with pytest.raises(StatusError) as e:
        await client.request("GET", "/denied")
    assert e.value.code == 403 and "forbidden here" in e.value.message
    pool = InProcessPool(App(), "https://x", headers={})
    with pytest.raises(StatusError):
        await anext(pool.stream_lines("/denied", {}))
    await client.aclose()
