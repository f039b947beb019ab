"""The HTTP/1.1 server (kybernetes.apiserver.http) over real loopback TCP, with raw requests."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from kybernetes.apiserver import http as http_module
from kybernetes.apiserver.http import HTTPServer

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# -- a tiny ASGI application ---------------------------------------------------------------


class App:
    """Routes by path; records what it saw so tests can look."""

    def __init__(self) -> None:
        self.disconnected = asyncio.Event()
        self.streaming = asyncio.Event()
        self.finished: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        handler = getattr(self, "route_" + path.strip("/").split("/")[0].replace("-", "_"),
                          self.route_echo)
        await handler(scope, receive, send)
        self.finished.append(path)

    async def route_echo(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers with what it received (JSON), in one body message with content-length."""
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = orjson.dumps({
            "method": scope["method"], "path": scope["path"],
            "raw_path": scope["raw_path"].decode(), "query": scope["query_string"].decode(),
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": b"".join(chunks).decode(), "messages": len(chunks)})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def route_slow(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers after a pause (without content-length: the server adds it)."""
        await asyncio.sleep(0.1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slow:" + scope["query_string"]})

    async def route_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Five body messages with more_body, then an empty final one."""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"part%d;" % i,
                        "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def route_forever(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Streams a line every 20 ms until the client goes away."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()  # the (empty) request body

        async def wait_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()

        gone = asyncio.get_running_loop().create_task(wait_gone(), name="test-wait-gone")
        try:
            while not gone.done():
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                self.streaming.set()
                await asyncio.sleep(0.02)
        finally:
            gone.cancel()

    async def route_orphan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Waits on a future only the request's own task holds (as a stream from a node
        agent can be), resolved later through a weak reference."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        ref = weakref.ref(fut)

        def resolve() -> None:
            f = ref()
            if f is not None and not f.done():
                f.set_result(b"survived")

        loop.call_later(0.3, resolve)
        body = await fut
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def route_boom(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Fails before answering."""
        raise RuntimeError("boom")

    async def route_silent(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Returns without answering."""

    async def route_halfway(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starts a stream, then fails."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("halfway")

    async def route_status(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers with the status code named in the query, empty body."""
        await send({"type": "http.response.start", "status": int(scope["query_string"]),
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


# -- fixtures and a raw HTTP client ----------------------------------------------------------


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
async def server(app: App) -> AsyncIterator[HTTPServer]:
    srv = HTTPServer(app)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop(grace=0.5)


def port_of(server: HTTPServer) -> int:
    """The port a server started on port 0 listens on."""
    assert isinstance(server._server, asyncio.Server)
    port: int = server._server.sockets[0].getsockname()[1]
    return port


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def conn(server: HTTPServer) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    try:
        yield reader, writer
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes,
                 chunks: list[bytes]) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.chunks = chunks

    def json(self) -> Any:
        return orjson.loads(self.body)


async def read_response(reader: asyncio.StreamReader, *, head: bool = False,
                        timeout: float = 2.0) -> Response:
    """Read one response: status line, headers, then a content-length or chunked body."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")[:-2]
    version, code, *_ = status_line.split(" ")
    assert version == "HTTP/1.1"
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"duplicate header {name}"
        headers[name.lower()] = value.strip()
    chunks: list[bytes] = []
    if head:
        body = b""
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await asyncio.wait_for(reader.readline(), timeout)).strip(), 16)
            data = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
            assert data.endswith(b"\r\n")
            if size == 0:
                break
            chunks.append(data[:-2])
        body = b"".join(chunks)
    else:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])),
                                      timeout)
    return Response(int(code), headers, body, chunks)


def request(method: str, path: str, body: bytes = b"", *, headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def assert_closed(reader: asyncio.StreamReader, timeout: float = 2.0) -> None:
    """The server closed the connection (EOF or reset, nothing more to read)."""
    try:
        rest = await asyncio.wait_for(reader.read(), timeout)
    except ConnectionError:
        return
    assert rest == b""


# -- requests and responses ------------------------------------------------------------------


async def test_a_waiting_request_survives_garbage_collection(conn: Conn) -> None:
    """The server holds the tasks answering requests: a full collection while one waits
    must not destroy it (the event loop only holds tasks weakly)."""
    import gc

    reader, writer = conn
    writer.write(request("GET", "/orphan"))
    await asyncio.sleep(0.1)
    gc.collect()
    resp = await read_response(reader)
    assert (resp.status, resp.body) == (200, b"survived")


async def test_keep_alive_serves_two_requests(server: HTTPServer, conn: Conn) -> None:
    """Two requests on one connection both get answers; the connection stays open."""
    reader, writer = conn
    for i in range(2):
        writer.write(request("GET", f"/echo?n={i}"))
        r = await read_response(reader)
        assert r.status == 200
        assert r.json()["query"] == f"n={i}"
        assert "connection" not in r.headers
        assert r.headers["date"].endswith("GMT")
    assert len(server.connections) == 1


async def test_scope_carries_path_query_and_headers(conn: Conn) -> None:
    """The ASGI scope has the decoded path, the raw path, the query and lower-cased headers."""
    reader, writer = conn
    writer.write(request("GET", "/echo/a%20b?x=1&y=%2F", headers="X-Custom: Value\r\n"))
    r = (await read_response(reader)).json()
    assert r["path"] == "/echo/a b"
    assert r["raw_path"] == "/echo/a%20b"
    assert r["query"] == "x=1&y=%2F"
    assert r["headers"]["x-custom"] == "Value"
    assert r["method"] == "GET"


async def test_content_length_request_body(conn: Conn) -> None:
    """A body with content-length reaches the app whole."""
    reader, writer = conn
    writer.write(request("POST", "/echo", b'{"hello": "world"}'))
    r = (await read_response(reader)).json()
    assert r["body"] == '{"hello": "world"}'
    assert r["method"] == "POST"


async def test_large_body_in_many_segments(conn: Conn) -> None:
    """A body arriving in several TCP segments is delivered in order."""
    reader, writer = conn
    body = bytes(range(97, 123)) * 20_000  # 520 kB of a-z
    writer.write(request("PUT", "/echo", headers=f"Content-Length: {len(body)}\r\n"))
    for i in range(0, len(body), 65_536):
        writer.write(body[i:i + 65_536])
        await writer.drain()
        await asyncio.sleep(0)
    r = await read_response(reader)
    assert r.json()["body"] == body.decode()


async def test_chunked_request_body(conn: Conn) -> None:
    """A chunked request body is de-chunked for the app, across several writes."""
    reader, writer = conn
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"5\r\nhello\r\n")
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(b"6\r\n world\r\n0\r\n\r\n")
    r = await read_response(reader)
    assert r.json()["body"] == "hello world"
    writer.write(request("GET", "/echo?after"))
    assert (await read_response(reader)).json()["query"] == "after"


async def test_streaming_response_is_chunked(conn: Conn) -> None:
    """Body messages with more_body go out as separate chunks, ended by a zero chunk."""
    reader, writer = conn
    writer.write(request("GET", "/stream"))
    r = await read_response(reader)
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers
    assert r.body == b"part0;part1;part2;part3;part4;"
    assert r.chunks == [b"part%d;" % i for i in range(5)]
    writer.write(request("GET", "/echo"))
    assert (await read_response(reader)).status == 200


async def test_response_without_length_gets_one(conn: Conn) -> None:
    """A single body message without content-length is sent with one, not chunked."""
    reader, writer = conn
    writer.write(request("GET", "/slow?q"))
    r = await read_response(reader)
    assert r.headers["content-length"] == str(len(b"slow:q"))
    assert "transfer-encoding" not in r.headers
    assert r.body == b"slow:q"


async def test_head_sends_headers_only(conn: Conn) -> None:
    """HEAD answers the headers a GET would, without the body; the connection stays usable."""
    reader, writer = conn
    writer.write(request("GET", "/echo"))
    get = await read_response(reader)
    writer.write(request("HEAD", "/echo"))
    head = await read_response(reader, head=True)
    assert head.status == 200
    assert int(head.headers["content-length"]) == len(get.body) + 1  # "HEAD" vs "GET"
    writer.write(request("GET", "/echo?next"))
    assert (await read_response(reader)).json()["query"] == "next"


async def test_head_of_streaming_response_has_no_body(conn: Conn) -> None:
    """HEAD of a streamed response sends no chunks either."""
    reader, writer = conn
    writer.write(request("HEAD", "/stream"))
    head = await read_response(reader, head=True)
    assert head.status == 200
    writer.write(request("GET", "/echo?next"))
    r = await read_response(reader)
    assert r.status == 200 and r.json()["query"] == "next"


async def test_connection_close(conn: Conn) -> None:
    """Connection: close is honoured: the answer says so and the server closes."""
    reader, writer = conn
    writer.write(request("GET", "/echo", headers="Connection: close\r\n"))
    r = await read_response(reader)
    assert r.status == 200
    assert r.headers["connection"] == "close"
    await assert_closed(reader)


async def test_http10_closes_by_default(conn: Conn) -> None:
    """An HTTP/1.0 request without keep-alive gets its answer, then the connection closes."""
    reader, writer = conn
    writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
    r = await read_response(reader)
    assert r.status == 200
    await assert_closed(reader)


async def test_pipelined_requests_answered_in_order(conn: Conn) -> None:
    """Requests sent back to back are answered in order, even when the first is slower."""
    reader, writer = conn
    writer.write(request("GET", "/slow?first") + request("POST", "/echo?second", b"body-2")
                 + request("GET", "/echo?third"))
    first = await read_response(reader)
    second = await read_response(reader)
    third = await read_response(reader)
    assert first.body == b"slow:first"
    assert second.json()["query"] == "second" and second.json()["body"] == "body-2"
    assert third.json()["query"] == "third"


@pytest.mark.parametrize("raw", [
    pytest.param(b"GARBAGE\r\n\r\n", id="garbage"),
    pytest.param(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", id="bad-header"),
    pytest.param(b"POST /echo HTTP/1.1\r\nContent-Length: nope\r\n\r\n", id="bad-length"),
    pytest.param(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 id="bad-chunk"),
])
async def test_malformed_request_is_400_and_close(conn: Conn, raw: bytes) -> None:
    """A request the parser rejects gets 400 and the connection is closed."""
    reader, writer = conn
    writer.write(raw)
    r = await read_response(reader)
    assert r.status == 400
    assert r.headers["connection"] == "close"
    await assert_closed(reader)


async def test_app_error_is_500_and_connection_survives(conn: Conn) -> None:
    """An exception before the response starts is a 500; the connection stays usable."""
    reader, writer = conn
    writer.write(request("GET", "/boom"))
    r = await read_response(reader)
    assert r.status == 500
    writer.write(request("GET", "/echo?after"))
    assert (await read_response(reader)).json()["query"] == "after"


async def test_app_without_response_is_500(conn: Conn) -> None:
    """An app that returns without answering gets a 500 sent for it."""
    reader, writer = conn
    writer.write(request("GET", "/silent"))
    assert (await read_response(reader)).status == 500


async def test_app_failing_mid_stream_cuts_the_connection(conn: Conn) -> None:
    """A stream that fails after it started ends without the last chunk: the client sees EOF."""
    reader, writer = conn
    writer.write(request("GET", "/halfway"))
    data = await asyncio.wait_for(reader.read(), 2)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"7\r\npartial\r\n")


async def test_upgrade_without_handler_goes_to_the_app(conn: Conn) -> None:
    """With no upgrade handler the app answers an Upgrade request; then the connection closes."""
    reader, writer = conn
    writer.write(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                 b"Upgrade: websocket\r\n\r\n")
    r = await read_response(reader)
    assert r.status == 200
    assert r.json()["headers"]["upgrade"] == "websocket"
    assert r.headers["connection"] == "close"
    await assert_closed(reader)


async def test_expect_continue(conn: Conn) -> None:
    """Expect: 100-continue gets an interim 100 before the client sends its body."""
    reader, writer = conn
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    assert (await read_response(reader)).json()["body"] == "hello"


async def test_upgrade_is_handed_to_the_handler(app: App) -> None:
    """An Upgrade request goes to the upgrade handler with its scope and any early bytes."""
    seen: list[tuple[str, bytes]] = []

    async def handler(scope: Scope, conn: Any) -> None:
        seen.append((scope["path"], conn.take_early_bytes()))
        conn.transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        conn.transport.close()

    srv = HTTPServer(app, upgrade_handler=handler)
    await srv.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(srv))
        writer.write(b"GET /ws?x=1 HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\n\r\nearly")
        assert await asyncio.wait_for(reader.read(), 2) == \
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        writer.close()
        assert seen == [("/ws", b"early")]
    finally:
        await srv.stop(grace=0.5)


@pytest.mark.parametrize(("code", "reason"), [
    pytest.param(201, "Created", id="201"),
    pytest.param(409, "Conflict", id="409"),
    pytest.param(422, "Unprocessable Entity", id="422"),
    pytest.param(429, "Too Many Requests", id="429"),
])
async def test_status_line_reason(conn: Conn, code: int, reason: str) -> None:
    """The status line carries the standard reason phrase."""
    reader, writer = conn
    writer.write(request("GET", f"/status?{code}"))
    line = (await asyncio.wait_for(reader.readline(), 2)).decode()
    assert line == f"HTTP/1.1 {code} {reason}\r\n"


async def test_one_write_per_response(server: HTTPServer, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    """A non-streaming response (status line, headers, body) is one transport write."""
    writes: list[bytes] = []

    class CountingTransport:
        def __init__(self, inner: asyncio.Transport) -> None:
            self._inner = inner

        def write(self, data: bytes) -> None:
            writes.append(bytes(data))
            self._inner.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    original = http_module._Connection.connection_made

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        original(self, CountingTransport(transport))  # type: ignore[arg-type]

    monkeypatch.setattr(http_module._Connection, "connection_made", connection_made)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    try:
        writer.write(request("POST", "/echo", b"x" * 10_000))
        r = await read_response(reader)
        assert len(writes) == 1
        assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert writes[0].endswith(r.body)
        writer.write(request("GET", "/slow?x"))
        await read_response(reader)
        assert len(writes) == 2
    finally:
        writer.close()
        await writer.wait_closed()


# -- disconnects, idle connections and stopping -----------------------------------------------


async def test_client_disconnect_reaches_app(app: App, server: HTTPServer) -> None:
    """When the client goes away mid-stream the app's receive() says http.disconnect."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(request("GET", "/forever"))
    r_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert b"transfer-encoding: chunked" in r_head
    await asyncio.wait_for(app.streaming.wait(), 2)
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(app.disconnected.wait(), 2)
    await asyncio.sleep(0.05)
    assert "/forever" in app.finished


async def test_idle_connections_are_closed_after_timeout(app: App) -> None:
    """A keep-alive connection idle past keep_alive_timeout is closed by the sweeper."""
    srv = HTTPServer(app, keep_alive_timeout=0.2)
    await srv.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(srv))
        writer.write(request("GET", "/echo"))
        await read_response(reader)
        await assert_closed(reader, timeout=2.0)
        writer.close()
    finally:
        await srv.stop(grace=0.5)


async def test_stop_with_idle_connection(app: App) -> None:
    """stop() closes idle keep-alive connections and returns promptly."""
    srv = HTTPServer(app)
    await srv.start("127.0.0.1", 0)
    port = port_of(srv)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("GET", "/echo"))
    await read_response(reader)
    started = time.monotonic()
    await srv.stop(grace=2.0)
    assert time.monotonic() - started < 0.5
    await assert_closed(reader)
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_stop_lets_a_running_request_finish(app: App) -> None:
    """A request in flight when stop() is called still gets its answer, then the close."""
    srv = HTTPServer(app)
    await srv.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(srv))
    writer.write(request("GET", "/slow?inflight"))
    await asyncio.sleep(0.03)
    await srv.stop(grace=2.0)
    r = await read_response(reader)
    assert r.body == b"slow:inflight"
    await assert_closed(reader)
    writer.close()


async def test_stop_with_streaming_response_respects_grace(app: App) -> None:
    """stop() waits at most its grace period for a never-ending stream, then cuts it."""
    srv = HTTPServer(app)
    await srv.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(srv))
    writer.write(request("GET", "/forever"))
    await asyncio.wait_for(app.streaming.wait(), 2)
    started = time.monotonic()
    await srv.stop(grace=0.3)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.0
    await asyncio.wait_for(app.disconnected.wait(), 2)
    while await asyncio.wait_for(reader.read(65_536), 2):
        pass
    writer.close()
    assert not srv.connections
