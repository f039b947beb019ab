"""The userspace service proxy over real loopback sockets: spread over the endpoints,
session affinity, a refusing endpoint skipped, ports without endpoints refused, an
endpoint that leaves getting no new connections while open ones live on, half-close,
UDP, and the listeners a Service needs."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import pytest

from kybernetes.proxy.rules import Endpoint, ServicePort
from kybernetes.proxy.traffic import Traffic
from kybernetes.proxy.userspace import UserspaceProxy, listeners_for, local_addresses

LOOPBACK = "127.0.0.1"


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Backends:
    """TCP servers on loopback that answer their name (after the client's half-close
    when the request asks for it), and UDP ones that echo with their name."""

    def __init__(self) -> None:
        self.servers: list[Any] = []
        self.udp: list[asyncio.DatagramTransport] = []

    async def tcp(self, name: str) -> Endpoint:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            first = await reader.read(100)
            if first.startswith(b"eof"):
                rest = await reader.read()  # until the client's FIN arrives
                writer.write(f"{name}:{len(first + rest)}".encode())
            else:
                writer.write(name.encode())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.servers.append(server)
        return Endpoint("127.0.0.1", server.sockets[0].getsockname()[1], node="n1")

    async def udp_echo(self, name: str) -> Endpoint:
        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(name.encode() + b":" + data, addr)

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Echo, local_addr=("127.0.0.1", 0))
        self.udp.append(transport)
        return Endpoint("127.0.0.1", transport.get_extra_info("sockname")[1], node="n1")

    def close(self) -> None:
        for s in self.servers:
            s.close()
        for t in self.udp:
            t.close()


@pytest.fixture
async def backends() -> Any:
    b = _Backends()
    yield b
    b.close()


async def _ask(port: int, data: bytes = b"hi", *, eof: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if eof:
        writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_spread_affinity_and_refusing_endpoints(backends: _Backends) -> None:
    eps = [await backends.tcp(f"b{i}") for i in range(3)]
    dead = Endpoint("127.0.0.1", _free_port(), node="n1")  # nobody listens: refused
    node_port = _free_port()
    traffic = Traffic()
    proxy = UserspaceProxy(node="n1", traffic=traffic, vips=False,
                           addresses=lambda: [LOOPBACK])
    sp = ServicePort("default/web", "tcp", 80, ("10.96.0.9",), node_port=node_port,
                     endpoints=(*eps, dead))
    try:
        await proxy.update([sp])
        assert set(proxy.servers) == {("tcp", LOOPBACK, node_port)}  # no VIP without vips
        got = Counter([await _ask(node_port) for _ in range(300)])
        assert set(got) == {b"b0", b"b1", b"b2"}, got  # the refusing one is skipped
        assert sum(got.values()) == 300
        assert min(got.values()) > 60, got
        assert traffic.series[("default", "web", "service", "")].count == 300

        sticky = ServicePort("default/web", "tcp", 80, ("10.96.0.9",), node_port=node_port,
                             affinity_timeout=60, endpoints=tuple(eps))
        await proxy.update([sticky])
        assert len({await _ask(node_port) for _ in range(30)}) == 1
    finally:
        await proxy.close()
    with pytest.raises(ConnectionRefusedError):
        await _ask(node_port)


async def test_endpoint_leaving_and_no_endpoints(backends: _Backends) -> None:
    eps = [await backends.tcp(f"b{i}") for i in range(2)]
    node_port = _free_port()
    proxy = UserspaceProxy(node="n1", traffic=Traffic(), vips=False,
                           addresses=lambda: [LOOPBACK])

    def port(*endpoints: Endpoint) -> ServicePort:
        return ServicePort("default/web", "tcp", 80, ("10.96.0.9",), node_port=node_port,
                           endpoints=endpoints)

    try:
        await proxy.update([port(*eps)])
        # a connection open before its endpoint leaves lives on (half-close passes)
        reader, writer = await asyncio.open_connection("127.0.0.1", node_port)
        writer.write(b"eof-first")
        await asyncio.sleep(0.05)
        gone = eps[0]
        unready = Endpoint(gone.ip, gone.port, node="n1", ready=False, serving=False)
        await proxy.update([port(unready, eps[1])])
        writer.write(b"-more")
        writer.write_eof()
        first = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert first in (b"b0:14", b"b1:14")
        assert {await _ask(node_port) for _ in range(40)} == {b"b1"}

        await proxy.update([port(unready)])
        assert proxy.servers == {}
        with pytest.raises(ConnectionRefusedError):
            await _ask(node_port)
    finally:
        await proxy.close()


async def test_udp_through_a_node_port(backends: _Backends) -> None:
    ep = await backends.udp_echo("u0")
    node_port = _free_port(socket.SOCK_DGRAM)
    proxy = UserspaceProxy(node="n1", traffic=Traffic(), vips=False,
                           addresses=lambda: [LOOPBACK])
    sp = ServicePort("default/dns", "udp", 53, ("10.96.0.10",), node_port=node_port,
                     endpoints=(ep,))
    try:
        await proxy.update([sp])
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                answers.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", node_port))
        for i in range(3):
            transport.sendto(f"q{i}".encode())
            assert await asyncio.wait_for(answers.get(), 5) == f"u0:q{i}".encode()
        transport.close()
        listener = proxy.servers[("udp", LOOPBACK, node_port)]
        assert not isinstance(listener, asyncio.AbstractServer)
        assert len(listener.clients) == 1  # one association per client
    finally:
        await proxy.close()


def test_listeners_a_service_needs() -> None:
    ready = Endpoint("10.42.0.5", 8080, node="n1")
    elsewhere = Endpoint("10.42.1.5", 8080, node="n2")
    sp = ServicePort("default/web:http", "tcp", 80, ("10.96.0.9",), node_port=30080,
                     load_balancer=True, external_local=True, endpoints=(elsewhere,))
    # externalTrafficPolicy: Local with no local endpoint: only the ClusterIP listens
    assert set(listeners_for([sp], node="n1", vips=True, addresses=[LOOPBACK])) == {
        ("tcp", "10.96.0.9", 80)}
    assert listeners_for([sp], node="n1", vips=False, addresses=[LOOPBACK]) == {}
    both = ServicePort("default/web:http", "tcp", 80, ("10.96.0.9",), node_port=30080,
                       load_balancer=True, endpoints=(ready, elsewhere))
    routes = listeners_for([both], node="n1", vips=True, addresses=[LOOPBACK])
    assert set(routes) == {("tcp", "10.96.0.9", 80), ("tcp", LOOPBACK, 30080),
                           ("tcp", LOOPBACK, 80)}
    assert not routes[("tcp", "10.96.0.9", 80)].external
    assert routes[("tcp", LOOPBACK, 30080)].external
    assert routes[("tcp", LOOPBACK, 30080)].service == ("default", "web")


def test_local_addresses_leave_the_service_range_out() -> None:
    addresses = local_addresses("10.96.0.0/12")
    assert LOOPBACK in addresses
    assert local_addresses("127.0.0.0/8") == [a for a in addresses if not a.startswith("127.")]
