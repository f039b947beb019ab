"""The service proxy's userspace data path: asyncio listeners that forward connections
(and UDP datagrams) to a Service's endpoints, for agents that cannot program the kernel
(not root, or no ``nft``), or that are asked to (``--proxy-mode userspace``).

What listens, for each port of a Service that has usable endpoints:

- its ClusterIPs, when the proxy may route the service range: as root the range is made
  local (``local 10.96.0.0/12 dev lo`` in the local routing table, kube-proxy's ipvs
  mode binds its virtual IPs the same way), so a virtual IP is an address of this
  machine that nobody but this proxy listens on: nothing for it ever leaves the machine,
  and a port without a listener refuses the connection at once;
- its NodePort, and its port if it is a LoadBalancer with an address, on every address
  of the machine outside the service range (as the kernel path; k3s's service load
  balancer does the same): one listener per address, not ``0.0.0.0``, which would also
  answer on every virtual IP. Addresses that come and go are picked up within
  :data:`MAINTAIN_SECONDS`.

A port with no usable endpoint has no listener (the connection is refused, as the
kernel path's reject). A connection goes to a random usable endpoint — the client's
previous one under ``sessionAffinity: ClientIP`` — and, if that endpoint refuses, to
the next (kube-proxy's userspace mode retried the same way). Connections already
forwarded live on when their endpoint leaves, as conntrack entries do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from kybernetes.proxy.rules import Endpoint, ServicePort
from kybernetes.proxy.traffic import Traffic

log = logging.getLogger(__name__)
Obj = dict[str, Any]

CONNECT_TIMEOUT = 2.0
CONNECT_ATTEMPTS = 3
"""Endpoints tried per connection before it is given up (reset)."""
UDP_IDLE_SECONDS = 30.0
"""A UDP client's association with its endpoint ends after this long without datagrams."""
BUFFER = 256 * 1024
MAINTAIN_SECONDS = 5.0
"""How often idle UDP associations are dropped and the machine's addresses re-read."""

Key = tuple[str, str, int]
"""(protocol, address, port) of one listener."""


@dataclass
class Route:
    """Where a listener's connections go: one service port, seen from inside the cluster
    (``cluster``: its ClusterIP) or from outside (``external``: NodePort, LoadBalancer)."""

    port: ServicePort
    external: bool
    node: str
    affinity: dict[str, tuple[Endpoint, float]] = field(default_factory=dict)
    """Client IP -> (its endpoint, when that choice expires)."""

    @property
    def service(self) -> tuple[str, str]:
        ns, _, rest = self.port.name.partition("/")
        return ns, rest.split(":", 1)[0]

    def endpoints(self) -> list[Endpoint]:
        return (self.port.external_endpoints(self.node) if self.external
                else self.port.cluster_endpoints(self.node))

    def candidates(self, client: str) -> list[Endpoint]:
        """Endpoints to try for a connection from ``client``, in order."""
        eps = self.endpoints()
        random.shuffle(eps)
        timeout = self.port.affinity_timeout
        if timeout:
            now = time.monotonic()
            kept = self.affinity.get(client)
            if kept and kept[1] > now and kept[0] in eps:
                eps.remove(kept[0])
                eps.insert(0, kept[0])
        return eps[:CONNECT_ATTEMPTS]

    def chosen(self, client: str, ep: Endpoint) -> None:
        if self.port.affinity_timeout:
            self.affinity[client] = (ep, time.monotonic() + self.port.affinity_timeout)

    def failed(self, client: str, ep: Endpoint) -> None:
        kept = self.affinity.get(client)
        if kept and kept[0] == ep:
            del self.affinity[client]


def local_addresses(service_cidr: str) -> list[str]:
    """This machine's IPv4 addresses outside the service range."""
    import ipaddress

    import psutil

    services = ipaddress.ip_network(service_cidr)
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET
                   and ipaddress.ip_address(a.address) not in services})


def listeners_for(ports: list[ServicePort], *, node: str, vips: bool,
                  addresses: list[str]) -> dict[Key, Route]:
    """The listeners some Service ports need on this node (those with endpoints);
    ``addresses``: where NodePorts and load balancers listen."""
    out: dict[Key, Route] = {}
    for sp in ports:
        cluster = Route(sp, external=False, node=node)
        external = Route(sp, external=True, node=node)
        if vips and cluster.endpoints():
            for ip in sp.cluster_ips:
                out[(sp.protocol, ip, sp.port)] = cluster
        if not external.endpoints():
            continue
        for ip in addresses:
            if sp.node_port:
                out[(sp.protocol, ip, sp.node_port)] = external
            if sp.load_balancer:
                out[(sp.protocol, ip, sp.port)] = external
    return out


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the half-close on."""
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


class _Udp(asyncio.DatagramProtocol):
    """One UDP listener: each client gets a connected socket to its endpoint."""

    def __init__(self, proxy: UserspaceProxy, key: Key) -> None:
        self.proxy, self.key = proxy, key
        self.transport: asyncio.DatagramTransport | None = None
        self.clients: dict[tuple[str, int], tuple[asyncio.DatagramTransport, list[float]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        client = self.clients.get(addr)
        if client is not None:
            client[1][0] = time.monotonic()
            client[0].sendto(data)
            return
        self.proxy.spawn_task(self._open(data, addr))

    async def _open(self, data: bytes, addr: tuple[str, int]) -> None:
        route = self.proxy.routes.get(self.key)
        if route is None or self.transport is None:
            return
        loop = asyncio.get_running_loop()
        for ep in route.candidates(addr[0]):
            try:
                up, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpReply(self, addr), remote_addr=(ep.ip, ep.port))
            except OSError:
                route.failed(addr[0], ep)
                continue
            route.chosen(addr[0], ep)
            self.clients[addr] = (up, [time.monotonic()])
            self.proxy.counted(route, ep)
            up.sendto(data)
            return

    def sweep(self, now: float) -> None:
        for addr, (up, seen) in list(self.clients.items()):
            if now - seen[0] > UDP_IDLE_SECONDS:
                up.close()
                del self.clients[addr]

    def close(self) -> None:
        for up, _ in self.clients.values():
            up.close()
        self.clients.clear()
        if self.transport is not None:
            self.transport.close()


class _UdpReply(asyncio.DatagramProtocol):
    def __init__(self, listener: _Udp, client: tuple[str, int]) -> None:
        self.listener, self.client = listener, client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.listener.transport is not None:
            self.listener.transport.sendto(data, self.client)


class UserspaceProxy:
    """The listeners of one node's userspace data path; :meth:`update` reconciles them
    with the Services' current ports."""

    def __init__(self, *, node: str, traffic: Traffic, vips: bool,
                 service_cidr: str = "10.96.0.0/12",
                 addresses: Callable[[], list[str]] | None = None) -> None:
        self.node = node
        self.traffic = traffic
        self.vips = vips
        self.addresses = addresses or (lambda: local_addresses(service_cidr))
        self._ports: list[ServicePort] = []
        self._addresses: list[str] = []
        self.routes: dict[Key, Route] = {}
        self.servers: dict[Key, asyncio.AbstractServer | _Udp] = {}
        self.failed: dict[Key, str] = {}
        """Listeners that could not be opened, and why (logged once each)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintainer: asyncio.Task[None] | None = None

    def spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def update(self, ports: list[ServicePort]) -> None:
        self._ports = ports
        self._addresses = self.addresses()
        wanted = listeners_for(ports, node=self.node, vips=self.vips,
                               addresses=self._addresses)
        for key in [k for k in self.servers if k not in wanted]:
            self._close(key)
        for key, route in wanted.items():
            old = self.routes.get(key)
            if old is not None and old.port.name == route.port.name:
                route.affinity = old.affinity  # keep the clients' endpoints
            self.routes[key] = route
            if key not in self.servers:
                await self._open(key)
        for key in [k for k in self.routes if k not in wanted]:
            del self.routes[key]
        self.failed = {k: v for k, v in self.failed.items() if k in wanted}
        if self._maintainer is None:
            self._maintainer = asyncio.get_running_loop().create_task(self._maintain())

    async def _open(self, key: Key) -> None:
        proto, ip, port = key
        try:
            if proto == "tcp":
                self.servers[key] = await asyncio.start_server(
                    lambda r, w: self._serve(key, r, w), host=ip, port=port,
                    reuse_address=True, backlog=1024)
            elif proto == "udp":
                listener = _Udp(self, key)
                await asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: listener, local_addr=(ip, port))
                self.servers[key] = listener
            else:
                raise OSError(f"the userspace proxy does not forward {proto.upper()}")
        except OSError as e:
            if self.failed.get(key) != str(e):
                log.error("service %s: cannot listen on %s %s:%d: %s",
                          self.routes[key].port.name, proto.upper(), ip, port, e)
            self.failed[key] = str(e)
            return
        self.failed.pop(key, None)

    def _close(self, key: Key) -> None:
        server = self.servers.pop(key)
        server.close()

    async def _serve(self, key: Key, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        route = self.routes.get(key)
        peer = writer.get_extra_info("peername") or ("", 0)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = None
        for ep in route.candidates(peer[0]) if route is not None else []:
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(ep.ip, ep.port, limit=BUFFER), CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                assert route is not None
                route.failed(peer[0], ep)
                continue
            assert route is not None
            route.chosen(peer[0], ep)
            self.counted(route, ep)
            break
        if upstream is None:
            writer.transport.abort()  # reset: no endpoint took the connection
            return
        up_reader, up_writer = upstream
        up_sock = up_writer.get_extra_info("socket")
        if up_sock is not None:
            up_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()

    def counted(self, route: Route, ep: Endpoint) -> None:
        """One new connection (or UDP association) for the Service's request rate."""
        ns, svc = route.service
        self.traffic.add_connections(ns, svc, 1)
        if ep.pod:
            self.traffic.add_pod_requests(ns, ep.pod, 1)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTAIN_SECONDS)
            now = time.monotonic()
            for server in self.servers.values():
                if isinstance(server, _Udp):
                    server.sweep(now)
            if self.addresses() != self._addresses or self.failed:
                await self.update(self._ports)  # new addresses; listeners that failed

    async def close(self) -> None:
        for key in list(self.servers):
            self._close(key)
        self.routes.clear()
        tasks = [t for t in (self._maintainer, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._maintainer = None
