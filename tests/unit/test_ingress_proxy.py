"""The ingress controller's proxying over real loopback sockets: keep-alive, bodies
both ways (chunked and by length), streaming responses, Upgrade pipes, retries on a
refused endpoint, 404/503, and the forwarded headers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kybernetes.proxy.ingress import IngressController
from kybernetes.proxy.ingress_rules import Backend, Path, Routes
from kybernetes.proxy.traffic import Traffic


class _Endpoints:
    def __init__(self, eps: list[tuple[str, int]]) -> None:
        self.eps = eps

    def pick(self, _b: Backend) -> list[tuple[str, int]]:
        return self.eps

    def pod(self, namespace: str, ip: str) -> str:
        return f"{namespace}/web-0 at {ip}"


async def _backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echoes what it got; /stream sends chunks with pauses; /ws upgrades and echoes."""
    while True:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
        except asyncio.IncompleteReadError:
            break
        lines = head.split("\r\n")
        method, path, _ = lines[0].split(" ")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while (size := int((await reader.readuntil(b"\r\n")).strip(), 16)):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            await reader.readexactly(2)
        if path == "/ws":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            while data := await reader.read(100):
                writer.write(data.upper())
            break
        if path == "/stream":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"one", b"two"):
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            continue
        reply = f"{method} {path} xff={headers.get('x-forwarded-for')} " \
                f"host={headers.get('host')} body=".encode() + body
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: " + str(len(reply)).encode() +
                     b"\r\n\r\n" + reply)
        await writer.drain()
        break  # an HTTP/1.0 server: one request per connection
    writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    if "content-length" in headers:
        return lines[0], headers, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while (size := int((await reader.readuntil(b"\r\n")).strip(), 16)):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readexactly(2)
    return lines[0], headers, body


@pytest.fixture
async def proxy() -> Any:
    backend = await asyncio.start_server(_backend, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]
    refused = await asyncio.start_server(_backend, "127.0.0.1", 0)
    dead = refused.sockets[0].getsockname()[1]
    refused.close()
    await refused.wait_closed()
    ctl = IngressController.__new__(IngressController)
    ctl.traffic = Traffic()
    ctl.endpoints = _Endpoints([("127.0.0.1", dead), ("127.0.0.1", port)])  # type: ignore[assignment]
    ctl.routes = Routes(hosts={"": [Path("/none", "Prefix", Backend("ns", "empty", 80)),
                                    Path("/", "Prefix", Backend("ns", "web", 80, "ns/ing"))]})
    ctl.random = lambda: 0.5
    server = await asyncio.start_server(ctl._serve, "127.0.0.1", 0)
    yield ctl, server.sockets[0].getsockname()[1]
    server.close()
    backend.close()


async def test_keep_alive_bodies_and_forwarded_headers(proxy: Any) -> None:
    ctl, port = proxy
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /a HTTP/1.1\r\nHost: ml.example\r\nContent-Length: 5\r\n\r\nhello")
    status, headers, body = await _read_response(reader)
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "keep-alive"
    assert body == b"POST /a xff=127.0.0.1 host=ml.example body=hello"
    # the same connection again, a chunked request body this time
    writer.write(b"POST /b HTTP/1.1\r\nHost: ml.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    status, _, body = await _read_response(reader)
    assert body.endswith(b"body=abcde")
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await _read_response(reader)
    assert headers["transfer-encoding"] == "chunked" and body == b"onetwo"
    writer.close()
    series = ctl.traffic.series[("ns", "web", "ingress", "ns/ing")]
    assert series.count == 3 and series.codes == {"200": 3}
    # each request is also the pod's that answered it (the live endpoint, not the dead one)
    pod_window = ctl.traffic._pods.seconds[("ns", "ns/web-0 at 127.0.0.1")]
    assert sum(n for _, n in pod_window) == 3


async def test_upgrade_becomes_a_pipe(proxy: Any) -> None:
    _, port = proxy
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"PING"
    writer.close()


async def test_no_endpoint_is_503_and_no_route_404(proxy: Any) -> None:
    ctl, port = proxy
    ctl.endpoints = _Endpoints([])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _read_response(reader))[0] == "HTTP/1.1 503 Service Unavailable"
    ctl.routes = Routes()
    writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _read_response(reader))[0] == "HTTP/1.1 404 Not Found"
    writer.close()
