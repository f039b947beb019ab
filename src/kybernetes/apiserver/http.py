"""A lean HTTP/1.1 server (httptools on the running loop, uvloop in ``kyb server``) for
ASGI applications.

Why not uvicorn: the API server answers tens of thousands of small requests per second on
one core, and per-request overhead decides the figure. This server writes a complete
response (status line, headers, body) with one ``transport.write`` — one TLS record, one
syscall — instead of two, skips per-header validation of what our own code produces, and
keeps the bookkeeping to what Kubernetes clients use: keep-alive, request bodies, chunked
streaming for watches with write back-pressure, and ``Upgrade`` handed to a WebSocket
handler.

    server = HTTPServer(app, ssl_context=ctx)
    await server.start("127.0.0.1", 6443)
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import httptools

log = logging.getLogger(__name__)

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

_STATUS = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 304: b"Not Modified", 400: b"Bad Request",
    401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    406: b"Not Acceptable", 409: b"Conflict", 410: b"Gone", 413: b"Request Entity Too Large",
    415: b"Unsupported Media Type", 422: b"Unprocessable Entity", 429: b"Too Many Requests",
    500: b"Internal Server Error", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}
_WRITE_HIGH = 256 * 1024


class _Date:
    """The Date header, formatted once a second."""

    value = b""
    second = 0

    @classmethod
    def header(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.value = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return cls.value


class _Cycle:
    """One request and its response."""

    __slots__ = ("body", "body_done", "chunked", "conn", "disconnected", "final_sent", "head",
                 "headers", "keep_alive", "message_event", "response_done", "scope", "started",
                 "status")

    def __init__(self, conn: _Connection, scope: dict[str, Any], keep_alive: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.body_done = False
        self.message_event = asyncio.Event()
        self.disconnected = False
        self.started = False
        self.response_done = False
        self.chunked = False
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = scope["method"] == "HEAD"
        self.final_sent = False

    async def receive(self) -> dict[str, Any]:
        if self.final_sent:
            # the body was handed out: the next message is the client going away
            while not (self.disconnected or self.response_done):
                self.message_event.clear()
                await self.message_event.wait()
            return {"type": "http.disconnect"}
        while not self.body and not self.body_done:
            self.conn.resume_reading()
            self.message_event.clear()
            await self.message_event.wait()
            if self.disconnected:
                return {"type": "http.disconnect"}
        data = b"".join(self.body)
        self.body.clear()
        more = not self.body_done
        self.final_sent = not more
        return {"type": "http.request", "body": data, "more_body": more}

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected:
            return
        typ = message["type"]
        if typ == "http.response.start":
            self.status = message["status"]
            self.headers = message.get("headers") or []
            return
        if typ != "http.response.body":
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        transport = self.conn.transport
        if transport is None:
            return
        if not self.started:
            self.started = True
            parts = [b"HTTP/1.1 ", str(self.status).encode(), b" ",
                     _STATUS.get(self.status, b"Unknown"), b"\r\n", _Date.header()]
            has_length = False
            for name, value in self.headers:
                if name == b"content-length":
                    has_length = True
                parts += (name, b": ", value, b"\r\n")
            if not has_length:
                if more:
                    self.chunked = True
                    parts.append(b"transfer-encoding: chunked\r\n")
                else:
                    parts += (b"content-length: ", str(len(body)).encode(), b"\r\n")
            if not self.keep_alive:
                parts.append(b"connection: close\r\n")
            parts.append(b"\r\n")
            if self.head:
                pass  # a HEAD response has no body, streamed or not
            elif self.chunked:
                if body:
                    parts += (b"%x\r\n" % len(body), body, b"\r\n")
                if not more:
                    parts.append(b"0\r\n\r\n")
            else:
                parts.append(body)
            transport.write(b"".join(parts))
        elif self.head:
            pass
        elif self.chunked:
            out = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                out += b"0\r\n\r\n"
            if out:
                transport.write(out)
        elif body and not self.head:
            transport.write(body)
        if not more:
            self.response_done = True
            self.message_event.set()
            self.conn.on_response_done(self)
        elif transport.get_write_buffer_size() > _WRITE_HIGH:
            await self.conn.drain()


_running: set[asyncio.Task[None]] = set()
"""The tasks answering requests. The event loop holds its tasks only weakly: a request
waiting on a future that nothing else holds (a stream from a node agent, say) would be
garbage collected mid-answer ("Task was destroyed but it is pending")."""


def _start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    task = loop.create_task(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)


class _Connection(asyncio.Protocol):
    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.cycle: _Cycle | None = None
        self.queue: list[_Cycle] = []
        self.reading = True
        self._drain: asyncio.Future[None] | None = None
        self.client: tuple[str, int] | None = None
        self.peercert: Any = None
        self.last_active = time.monotonic()
        self.upgrading = False
        self._early: list[bytes] = []
        self.tunnel: Callable[[bytes | None], None] | None = None
        """After an upgrade: receives the client's bytes (None when it has gone)."""

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are duck-typed
        peer = transport.get_extra_info("peername")
        self.client = (peer[0], peer[1]) if peer else None
        # a client certificate the TLS handshake verified against the cluster CA
        self.peercert = transport.get_extra_info("peercert") \
            if self.server.ssl_context is not None else None
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel(None)
        for cycle in [self.cycle, *self.queue]:
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
        self.transport = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        if self.upgrading:
            self._early.append(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            if self.upgrading:
                offset = e.args[0] if e.args else len(data)
                self._upgrade(data[offset:])
        except httptools.HttpParserError:
            self._error(400, b"Invalid HTTP request")

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            await self._drain

    def resume_reading(self) -> None:
        if not self.reading and self.transport is not None:
            self.reading = True
            self.transport.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parsed = httptools.parse_url(self.url)
        raw_path = parsed.path
        method = self.parser.get_method().decode("ascii")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https" if self.server.ssl_context is not None else "http",
            "path": unquote(raw_path.decode("latin-1")) if b"%" in raw_path
            else raw_path.decode("latin-1"),
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": "",
            "headers": self.headers,
            "client": self.client,
            "server": None,
            "kyb.peercert": self.peercert,
        }
        upgrade = self.parser.should_upgrade()
        if upgrade and self.server.upgrade_handler is not None:
            self.upgrading = True
            self._upgrade_scope = scope
            return
        # without an upgrade handler the app answers (an error) and the connection closes
        cycle = _Cycle(self, scope, self.parser.should_keep_alive() and not upgrade)
        if self.transport is not None and (b"expect", b"100-continue") in self.headers:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.cycle is None:
            self.cycle = cycle
            _start(self.loop, self._run(cycle))
        else:  # pipelined: answered in order
            self.queue.append(cycle)
            if self.reading and self.transport is not None:
                self.reading = False
                self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.queue[-1] if self.queue else self.cycle
        if cycle is not None and not cycle.response_done:
            cycle.body.append(body)
            cycle.message_event.set()

    def on_message_complete(self) -> None:
        if self.upgrading:
            return
        cycle = self.queue[-1] if self.queue else self.cycle
        if cycle is not None:
            cycle.body_done = True
            cycle.message_event.set()

    # -- running requests --------------------------------------------------------------------

    async def _run(self, cycle: _Cycle) -> None:
        self.server.active += 1
        try:
            await self.server.app(cycle.scope, cycle.receive, cycle.send)
        except Exception:
            log.exception("unhandled error in the application")
            if not cycle.started:
                await cycle.send({"type": "http.response.start", "status": 500, "headers": []})
                await cycle.send({"type": "http.response.body", "body": b""})
            elif self.transport is not None:
                self.transport.close()
        finally:
            self.server.active -= 1
        if not cycle.response_done and self.transport is not None and not cycle.disconnected:
            if not cycle.started:
                await cycle.send({"type": "http.response.start", "status": 500, "headers": []})
            await cycle.send({"type": "http.response.body", "body": b""})

    def on_response_done(self, cycle: _Cycle) -> None:
        if self.transport is None:
            return
        if not cycle.keep_alive or self.server.stopping:
            self.transport.close()
            return
        self.cycle = None
        if self.queue:
            self.cycle = self.queue.pop(0)
            _start(self.loop, self._run(self.cycle))
        else:
            self.resume_reading()
            self.last_active = time.monotonic()

    def _error(self, status: int, text: bytes) -> None:
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, _STATUS.get(status, b"Error"), len(text), text))
            self.transport.close()

    def _upgrade(self, rest: bytes) -> None:
        handler = self.server.upgrade_handler
        scope = getattr(self, "_upgrade_scope", None)
        if handler is None or scope is None or self.transport is None:
            self._error(400, b"Upgrade not supported")
            return
        self.server.connections.discard(self)
        self._early = [rest] if rest else []
        self.server.tunnels.add(self)
        task = self.loop.create_task(handler(scope, self))
        _running.add(task)
        task.add_done_callback(_running.discard)
        task.add_done_callback(lambda _: self.server.tunnels.discard(self))

    def take_early_bytes(self) -> bytes:
        """Bytes the client sent after its upgrade request, before a tunnel was set."""
        data = b"".join(self._early)
        self._early = []
        return data


class HTTPServer:
    """Serves an ASGI app over HTTP/1.1 (TLS when given a context)."""

    def __init__(self, app: ASGIApp, *, ssl_context: ssl.SSLContext | None = None,
                 keep_alive_timeout: float = 120.0,
                 upgrade_handler: Callable[[dict[str, Any], Any], Coroutine[Any, Any, None]]
                 | None = None) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.keep_alive_timeout = keep_alive_timeout
        self.upgrade_handler = upgrade_handler
        self.connections: set[_Connection] = set()
        self.tunnels: set[_Connection] = set()
        self.active = 0
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, backlog: int = 2048) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, ssl=self.ssl_context, backlog=backlog,
            reuse_address=True)
        self._sweeper = loop.create_task(self._close_idle())

    async def _close_idle(self) -> None:
        """Close keep-alive connections idle for longer than the timeout (one sweep every
        few seconds rather than a timer per request)."""
        while True:
            await asyncio.sleep(min(10.0, self.keep_alive_timeout / 2))
            limit = time.monotonic() - self.keep_alive_timeout
            for conn in list(self.connections):
                if conn.cycle is None and conn.last_active < limit and \
                        conn.transport is not None:
                    conn.transport.close()

    async def stop(self, *, grace: float = 2.0) -> None:
        """Stop listening; let running requests finish for ``grace`` seconds, then close."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.cycle is None and conn.transport is not None:
                conn.transport.close()
        deadline = time.monotonic() + grace
        while self.active and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.05)
        for conn in [*self.connections, *self.tunnels]:
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
