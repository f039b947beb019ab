"""Cluster DNS, served by each node for the pods it runs (what CoreDNS's ``kubernetes``
plugin answers), on UDP and TCP port 53 of the node's pod gateway address.

Names under ``svc.<domain>`` (``cluster.local``)::

    <svc>.<ns>.svc                A     the ClusterIP; a headless Service's ready endpoints
    <svc>.<ns>.svc                CNAME an ExternalName Service's ``externalName``
    <host>.<svc>.<ns>.svc         A     a headless Service's endpoint whose ``hostname`` is
                                        <host> (a StatefulSet pod, or a pod with a
                                        ``subdomain``), or whose dashed IP is <host>
    _<port>._<proto>.<svc>.<ns>.svc SRV each named port: the Service's name, or for a
                                        headless Service each endpoint's name
    <a-b-c-d>.<ns>.pod            A     a.b.c.d (CoreDNS's ``pods insecure``)
    <d.c.b.a>.in-addr.arpa        PTR   a Service's ClusterIP, an endpoint's name

Other names in the cluster domain, and reverse names in the pod and service ranges, are
NXDOMAIN; an existing name without records of the asked type is an empty NOERROR answer.
Everything else is forwarded to the host's resolvers (``/etc/resolv.conf``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dnslib import (
    AAAA,
    CNAME,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SRV,
    A,
    DNSRecord,
)

from kybernetes.client import Informer, object_key

log = logging.getLogger(__name__)
Obj = dict[str, Any]

TTL = 5
UPSTREAM_TIMEOUT = 2.0
IP_FREEBIND = 15
"""Linux's IP_FREEBIND: bind to the gateway address before its bridge exists."""
_LOCAL_RANGES = (ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_network("10.96.0.0/12"))


def host_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    try:
        text = resolv_conf.read_text()
    except OSError:
        return []
    return [parts[1] for line in text.splitlines()
            if len(parts := line.split()) >= 2 and parts[0] == "nameserver"]


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


class Records:
    """The cluster's records, read from the Service and EndpointSlice informers."""

    def __init__(self, services: Informer, slices: Informer, slice_index: str, *,
                 domain: str = "cluster.local") -> None:
        self.services = services
        self.slices = slices
        self.slice_index = slice_index
        self.domain = domain.strip(".").lower()

    def _endpoints(self, svc: Obj) -> Iterable[tuple[str, str, Obj]]:
        """(address, name label, slice) of the Service's ready endpoints (all of them
        with ``publishNotReadyAddresses``)."""
        publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        for s in self.slices.by_index(self.slice_index, object_key(svc)):
            if s.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
                continue
            for e in s.get("endpoints") or []:
                if not publish and (e.get("conditions") or {}).get("ready") is False:
                    continue
                for addr in e.get("addresses") or []:
                    yield addr, (e.get("hostname") or _dashed(addr)).lower(), s

    @staticmethod
    def _rr(name: str, ip: str) -> RR:
        if ":" in ip:
            return RR(name, QTYPE.AAAA, rdata=AAAA(ip), ttl=TTL)
        return RR(name, QTYPE.A, rdata=A(ip), ttl=TTL)

    def lookup(self, qname: str, qtype: int) -> tuple[int, list[RR]] | None:
        """(rcode, answers) for a name of the cluster, or None for one to forward."""
        name = qname.rstrip(".").lower()
        if name.endswith(".in-addr.arpa"):
            return self._reverse(qname, name)
        if name != self.domain and not name.endswith("." + self.domain):
            return None
        labels = name[: -len(self.domain)].rstrip(".").split(".") if name != self.domain else []
        if not labels or labels == ["svc"] or labels == ["pod"]:
            return RCODE.NOERROR, []
        if labels[-1] == "pod":
            return self._pod(qname, labels[:-1], qtype)
        if labels[-1] != "svc":
            return RCODE.NXDOMAIN, []
        labels = labels[:-1]
        if len(labels) == 1:  # a namespace
            return RCODE.NOERROR, []
        svc = self.services.get(f"{labels[-1]}/{labels[-2]}")
        if svc is None:
            return RCODE.NXDOMAIN, []
        spec = svc.get("spec") or {}
        headless = spec.get("clusterIP") == "None"
        if len(labels) == 2:
            return self._service(qname, svc, qtype, headless)
        if len(labels) == 3 and headless:
            ips = [ip for ip, host, _ in self._endpoints(svc) if host == labels[0]]
            if not ips:
                return RCODE.NXDOMAIN, []
            return RCODE.NOERROR, [self._rr(qname, ip) for ip in ips
                                   if (":" in ip) == (qtype == QTYPE.AAAA)
                                   and qtype in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY)]
        if len(labels) == 4 and labels[0].startswith("_") and labels[1].startswith("_"):
            return self._srv(qname, svc, labels[0][1:], labels[1][1:], qtype, headless)
        return RCODE.NXDOMAIN, []

    def _service(self, qname: str, svc: Obj, qtype: int,
                 headless: bool) -> tuple[int, list[RR]]:
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            target = str(spec.get("externalName") or "").rstrip(".") + "."
            return RCODE.NOERROR, [RR(qname, QTYPE.CNAME, rdata=CNAME(target), ttl=TTL)]
        if qtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY):
            if qtype == QTYPE.SRV:
                return self._srv_all(qname, svc, headless)
            return RCODE.NOERROR, []
        if headless:
            ips = list(dict.fromkeys(ip for ip, _, _ in self._endpoints(svc)))
        else:
            ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
        want_v6 = qtype == QTYPE.AAAA
        return RCODE.NOERROR, [self._rr(qname, ip) for ip in ips
                               if qtype == QTYPE.ANY or (":" in ip) == want_v6]

    def _srv_targets(self, svc: Obj, port_name: str, protocol: str,
                     headless: bool) -> list[tuple[int, str]]:
        meta = svc["metadata"]
        base = f"{meta['name']}.{meta.get('namespace', '')}.svc.{self.domain}."
        if not headless:
            return [(int(p["port"]), base) for p in (svc.get("spec") or {}).get("ports") or []
                    if (p.get("name") or "") == port_name
                    and (p.get("protocol") or "TCP").lower() == protocol]
        out = []
        for _ip, host, s in self._endpoints(svc):
            for p in s.get("ports") or []:
                if (p.get("name") or "") == port_name and \
                        (p.get("protocol") or "TCP").lower() == protocol and p.get("port"):
                    out.append((int(p["port"]), f"{host}.{base}"))
        return list(dict.fromkeys(out))

    def _srv(self, qname: str, svc: Obj, port_name: str, protocol: str, qtype: int,
             headless: bool) -> tuple[int, list[RR]]:
        targets = self._srv_targets(svc, port_name, protocol, headless)
        if not targets:
            return RCODE.NXDOMAIN, []
        if qtype not in (QTYPE.SRV, QTYPE.ANY):
            return RCODE.NOERROR, []
        return RCODE.NOERROR, [RR(qname, QTYPE.SRV, rdata=SRV(0, 100 // len(targets), port,
                                                              target), ttl=TTL)
                               for port, target in targets]

    def _srv_all(self, qname: str, svc: Obj, headless: bool) -> tuple[int, list[RR]]:
        out = []
        for p in (svc.get("spec") or {}).get("ports") or []:
            if p.get("name"):
                out += self._srv(qname, svc, p["name"], (p.get("protocol") or "TCP").lower(),
                                 QTYPE.SRV, headless)[1]
        return RCODE.NOERROR, out

    def _pod(self, qname: str, labels: list[str], qtype: int) -> tuple[int, list[RR]]:
        if len(labels) != 2:
            return RCODE.NXDOMAIN, []
        try:
            ip = ipaddress.ip_address(labels[0].replace("-", "."))
        except ValueError:
            return RCODE.NXDOMAIN, []
        if qtype not in (QTYPE.A, QTYPE.ANY):
            return RCODE.NOERROR, []
        return RCODE.NOERROR, [self._rr(qname, str(ip))]

    def _reverse(self, qname: str, name: str) -> tuple[int, list[RR]] | None:
        parts = name[: -len(".in-addr.arpa")].split(".")
        try:
            ip = ipaddress.ip_address(".".join(reversed(parts)))
        except ValueError:
            return None
        if not any(ip in net for net in _LOCAL_RANGES):
            return None
        names = []
        for svc in self.services.list():
            spec = svc.get("spec") or {}
            meta = svc["metadata"]
            base = f"{meta['name']}.{meta.get('namespace', '')}.svc.{self.domain}."
            if str(ip) in (spec.get("clusterIPs") or [spec.get("clusterIP")]):
                names.append(base)
            elif spec.get("clusterIP") == "None":
                names += [f"{host}.{base}" for addr, host, _ in self._endpoints(svc)
                          if addr == str(ip)]
        if not names:
            return RCODE.NXDOMAIN, []
        return RCODE.NOERROR, [RR(qname, QTYPE.PTR, rdata=PTR(n), ttl=TTL) for n in names]


class ClusterDNS:
    """The DNS server: answers the cluster's names, forwards the rest."""

    def __init__(self, records: Records, *, address: str, port: int = 53,
                 upstreams: list[str] | None = None, upstream_port: int = 53) -> None:
        self.records = records
        self.address = address
        self.port = port
        self.upstreams = upstreams if upstreams is not None else host_nameservers()
        self.upstream_port = upstream_port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        udp.bind((self.address, self.port))
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), sock=udp)
        self._udp = transport
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        tcp.bind((self.address, self.port))
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        log.info("cluster DNS on %s:%d (forwarding to %s)", self.address, self.port,
                 ", ".join(self.upstreams) or "nobody")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
            self._tcp = None

    async def resolve(self, data: bytes, *, limit: int | None = 512) -> bytes | None:
        """The answer to one query in wire format (None: drop it)."""
        try:
            request = DNSRecord.parse(data)
        except Exception:  # anything malformed is dropped, as servers do
            return None
        if request.header.qr or not request.questions:
            return None
        q = request.q
        found = self.records.lookup(str(q.qname), q.qtype)
        if found is None:
            return await self._forward(request, data)
        rcode, answers = found
        reply = request.reply()
        reply.header.rcode = rcode
        for rr in answers:
            reply.add_answer(rr)
        packed: bytes = reply.pack()
        if limit is not None:
            size = max(limit, next((int(rr.rclass) for rr in request.ar
                                    if rr.rtype == QTYPE.OPT), 0))
            if len(packed) > size:
                reply = request.reply()
                reply.header.tc = 1
                packed = reply.pack()
        return packed

    async def _forward(self, request: DNSRecord, data: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        for upstream in self.upstreams:
            sock = socket.socket(socket.AF_INET6 if ":" in upstream else socket.AF_INET,
                                 socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (upstream, self.upstream_port))
                await loop.sock_sendall(sock, data)
                answer: bytes = await asyncio.wait_for(loop.sock_recv(sock, 65535),
                                                       UPSTREAM_TIMEOUT)
                return answer
            except (OSError, TimeoutError) as e:
                log.debug("upstream %s: %s", upstream, e)
            finally:
                sock.close()
        reply = request.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return bytes(reply.pack())

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                answer = await self.resolve(await reader.readexactly(size), limit=None)
                if answer is None:
                    break
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDNS) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _answer(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = await self.server.resolve(data)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)
