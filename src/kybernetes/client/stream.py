"""Lean HTTP/1.1 over asyncio (TLS) connections: watch streams and a keep-alive pool.

Watches are the busiest thing a controller reads (one event per change of every object
it follows), and a node agent's requests (status, events) its busiest writes: both skip
the general-purpose HTTP client, whose bookkeeping cost more CPU than the API server
spent answering. One connection per watch, its chunked body split into newline-delimited
events; plain requests share a bounded pool of kept-alive connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from urllib.parse import urlencode, urlsplit

from kybernetes.api.errors import StatusError

log = logging.getLogger(__name__)

_MAX_HEADER = 64 * 1024


class StreamError(Exception):
    pass


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise StreamError("connection closed before the response headers") from None
    except asyncio.LimitOverrunError:
        raise StreamError("response headers too long") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise StreamError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body_chunks(reader: asyncio.StreamReader, headers: Mapping[str, str]
                       ) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                with contextlib.suppress(asyncio.IncompleteReadError):
                    await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while chunk := await reader.read(65536):
            yield chunk


async def lines_of(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """Each non-blank line of a body that arrives in ``chunks``."""
    buf = b""
    async for chunk in chunks:
        buf += chunk
        if b"\n" not in chunk:
            continue
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buf.strip():
        yield buf


async def stream_lines(server: str, path: str, params: Mapping[str, str], *,
                       headers: Mapping[str, str], ssl_context: ssl.SSLContext | None
                       ) -> AsyncGenerator[bytes, None]:
    """GET ``path`` and yield each line of the response body (a non-2xx raises
    :class:`StatusError` from the body). Closing the iterator closes the connection."""
    from kybernetes.client.rest import error_from_response

    url = urlsplit(server)
    host = url.hostname or "localhost"
    port = url.port or (443 if url.scheme == "https" else 80)
    tls = ssl_context if url.scheme == "https" else None
    reader, writer = await asyncio.open_connection(
        host, port, ssl=tls, server_hostname=host if tls else None, limit=_MAX_HEADER)
    try:
        target = path + ("?" + urlencode(params) if params else "")
        head = [f"GET {target} HTTP/1.1", f"Host: {url.netloc}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        status, resp_headers = await _read_headers(reader)
        if not 200 <= status < 300:
            body = b"".join([c async for c in _body_chunks(reader, resp_headers)])
            raise error_from_response(status, body, resp_headers)
        async with contextlib.aclosing(lines_of(_body_chunks(reader, resp_headers))) as lines:
            async for line in lines:
                yield line
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise StreamError(f"watch stream broken: {e}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HTTPPool:
    """Requests over at most ``size`` kept-alive connections to one server; a burst waits
    for a free connection instead of opening (and TLS-handshaking) one per request.

    Given several servers (API servers of one cluster), it uses the first until it cannot
    connect to it, then the next one that answers."""

    def __init__(self, server: str | Sequence[str], *, ssl_context: ssl.SSLContext | None,
                 headers: Mapping[str, str], size: int = 16, timeout: float = 30.0) -> None:
        self.servers = [server] if isinstance(server, str) else list(server)
        self._ssl = ssl_context
        self._use(0)
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.timeout = timeout
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    def _use(self, index: int) -> None:
        self._current = index
        url = urlsplit(self.servers[index])
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.netloc = url.netloc
        self.tls = self._ssl if url.scheme == "https" else None
        self.prefix = url.path.rstrip("/")

    @property
    def server(self) -> str:
        """The server in use."""
        return self.servers[self._current]

    async def _open(self) -> _Conn:
        for tried in range(len(self.servers)):
            host, port, tls = self.host, self.port, self.tls
            try:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None,
                    limit=_MAX_HEADER)
                return _Conn(reader, writer)
            except OSError as e:
                if tried == len(self.servers) - 1:
                    raise
                if (host, port) == (self.host, self.port):  # no other request moved on
                    log.warning("API server %s unreachable (%s): trying %s", self.server, e,
                                self.servers[(self._current + 1) % len(self.servers)])
                    idle, self._idle = self._idle, []
                    for conn in idle:
                        conn.close()
                    self._use((self._current + 1) % len(self.servers))
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, params: Mapping[str, str],
                      headers: Mapping[str, str], body: bytes | None
                      ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request."""
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        head = [f"{method} {target} HTTP/1.1\r\nHost: {self.netloc}\r\n", self.headers]
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}\r\n")
        data = ("".join(head) + "\r\n").encode("latin-1") + (body or b"")
        async with self._slots:
            for attempt in (0, 1):
                while self._idle and self._idle[-1].reader.at_eof():
                    self._idle.pop().close()  # the server closed it while it sat idle
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self._open()
                try:
                    conn.writer.write(data)
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a
                    # cancellation that arrives as the response does
                    async with asyncio.timeout(self.timeout):
                        status, resp_headers, resp_body = await self._response(conn, method)
                except (asyncio.IncompleteReadError, ConnectionError, StreamError) as e:
                    conn.close()
                    if reused and attempt == 0:
                        # the server had closed a kept-alive connection; its idle sweep
                        # closes all that sat as long, so the others go too: a new one
                        idle, self._idle = self._idle, []
                        for other in idle:
                            other.close()
                        continue
                    raise StreamError(f"{method} {path}: {e or type(e).__name__}") from None
                except BaseException:
                    conn.close()
                    raise
                if resp_headers.get("connection", "").lower() == "close" or self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)
                return status, resp_headers, resp_body
        raise AssertionError("unreachable")

    async def _response(self, conn: _Conn, method: str) -> tuple[int, dict[str, str], bytes]:
        status, headers = await _read_headers(conn.reader)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if "chunked" not in headers.get("transfer-encoding", "").lower() and \
                "content-length" not in headers:
            headers["connection"] = "close"  # the body ends with the connection
        body = b"".join([c async for c in _body_chunks(conn.reader, headers)])
        return status, headers, body

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            # no TLS close handshake to wait for: the server may be stopping too (in the
            # same process, it may never answer)
            conn.writer.transport.abort()


__all__ = ["HTTPPool", "StatusError", "StreamError", "stream_lines"]
