"""A lean reader for watch streams: HTTP/1.1 over an asyncio (TLS) connection.

Watches are the busiest thing a controller reads (one event per change of every object
it follows), so they skip the general-purpose HTTP client: one connection per watch, the
response's chunked body split into newline-delimited events, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from urllib.parse import urlencode, urlsplit

from kybernetes.api.errors import StatusError

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
        buf = b""
        async for chunk in _body_chunks(reader, resp_headers):
            buf += chunk
            if b"\n" not in chunk:
                continue
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
        if buf.strip():
            yield buf
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise StreamError(f"watch stream broken: {e}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


__all__ = ["StatusError", "StreamError", "stream_lines"]
