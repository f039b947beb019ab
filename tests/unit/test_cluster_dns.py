"""Cluster DNS: the records it answers from Services and EndpointSlices, over real
sockets on loopback, and forwarding of other names."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSRecord

from kybernetes.proxy.dns import ClusterDNS, Records
from kybernetes.proxy.service import SERVICE_INDEX, _slice_service

Obj = dict[str, Any]


class Cache:
    """The part of an Informer the DNS reads."""

    def __init__(self, objs: list[Obj]) -> None:
        self.objs = objs

    def get(self, key: str) -> Obj | None:
        return next((o for o in self.objs
                     if f"{o['metadata']['namespace']}/{o['metadata']['name']}" == key), None)

    def list(self) -> list[Obj]:
        return self.objs

    def by_index(self, name: str, value: str) -> list[Obj]:
        assert name == SERVICE_INDEX
        return [o for o in self.objs if value in _slice_service(o)]


def service(name: str, ns: str = "default", **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def slice_(svc: str, endpoints: list[Obj], ports: list[Obj], ns: str = "default") -> Obj:
    return {"metadata": {"name": f"{svc}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports}


SERVICES = [
    service("ml-model", clusterIP="10.96.0.20", clusterIPs=["10.96.0.20"],
            ports=[{"name": "http", "port": 80, "protocol": "TCP"}]),
    service("web", ns="train", clusterIP="None",
            ports=[{"name": "rdzv", "port": 29400, "protocol": "TCP"}]),
    service("db", type="ExternalName", externalName="db.example.com"),
]
SLICES = [slice_("web", [
    {"addresses": ["10.42.0.5"], "hostname": "web-0", "conditions": {"ready": True}},
    {"addresses": ["10.42.0.6"], "hostname": "web-1", "conditions": {"ready": True}},
    {"addresses": ["10.42.0.7"], "hostname": "web-2", "conditions": {"ready": False}}],
    [{"name": "rdzv", "port": 29400, "protocol": "TCP"}], ns="train")]


def records() -> Records:
    return Records(Cache(SERVICES), Cache(SLICES), SERVICE_INDEX)  # type: ignore[arg-type]


def answers(name: str, qtype: int = QTYPE.A) -> tuple[int, list[str]]:
    found = records().lookup(name, qtype)
    assert found is not None, f"{name} would be forwarded"
    rcode, rrs = found
    return rcode, sorted(str(rr.rdata) for rr in rrs)


def test_service_names() -> None:
    assert answers("ml-model.default.svc.cluster.local.") == (RCODE.NOERROR, ["10.96.0.20"])
    assert answers("ML-Model.default.svc.cluster.local") == (RCODE.NOERROR, ["10.96.0.20"])
    assert answers("ml-model.default.svc.cluster.local.", QTYPE.AAAA) == (RCODE.NOERROR, [])
    assert answers("nope.default.svc.cluster.local.") == (RCODE.NXDOMAIN, [])
    assert answers("default.svc.cluster.local.") == (RCODE.NOERROR, [])
    assert answers("something.cluster.local.") == (RCODE.NXDOMAIN, [])
    assert answers("db.default.svc.cluster.local.") == (RCODE.NOERROR, ["db.example.com."])


def test_headless_services_answer_their_ready_pods_and_hostnames() -> None:
    assert answers("web.train.svc.cluster.local.") == (RCODE.NOERROR,
                                                       ["10.42.0.5", "10.42.0.6"])
    assert answers("web-1.web.train.svc.cluster.local.") == (RCODE.NOERROR, ["10.42.0.6"])
    assert answers("web-2.web.train.svc.cluster.local.") == (RCODE.NXDOMAIN, [])  # not ready
    assert answers("_rdzv._tcp.web.train.svc.cluster.local.", QTYPE.SRV) == (
        RCODE.NOERROR, ["0 50 29400 web-0.web.train.svc.cluster.local.",
                        "0 50 29400 web-1.web.train.svc.cluster.local."])
    assert answers("_http._tcp.ml-model.default.svc.cluster.local.", QTYPE.SRV) == (
        RCODE.NOERROR, ["0 100 80 ml-model.default.svc.cluster.local."])
    assert answers("_grpc._tcp.ml-model.default.svc.cluster.local.", QTYPE.SRV)[0] == \
        RCODE.NXDOMAIN


def test_pod_and_reverse_names() -> None:
    assert answers("10-42-0-9.default.pod.cluster.local.") == (RCODE.NOERROR, ["10.42.0.9"])
    assert answers("20.0.96.10.in-addr.arpa.", QTYPE.PTR) == (
        RCODE.NOERROR, ["ml-model.default.svc.cluster.local."])
    assert answers("6.0.42.10.in-addr.arpa.", QTYPE.PTR) == (
        RCODE.NOERROR, ["web-1.web.train.svc.cluster.local."])
    assert answers("99.0.96.10.in-addr.arpa.", QTYPE.PTR) == (RCODE.NXDOMAIN, [])
    assert records().lookup("example.com.", QTYPE.A) is None
    assert records().lookup("1.2.0.192.in-addr.arpa.", QTYPE.PTR) is None


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_udp_and_tcp_port() -> int:
    """A port free for both protocols (the server binds both on one number)."""
    for _ in range(50):
        port = _free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")


class _Upstream(asyncio.DatagramProtocol):
    """A resolver standing in for the host's: every name is 192.0.2.7."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        q = DNSRecord.parse(data)
        reply = q.reply()
        reply.add_answer(*RR.fromZone(f"{q.q.qname} 60 A 192.0.2.7"))
        self.transport.sendto(reply.pack(), addr)  # type: ignore[attr-defined]


async def _ask(port: int, name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    data = await asyncio.to_thread(q.send, "127.0.0.1", port, tcp=tcp, timeout=3)
    return DNSRecord.parse(data)


async def test_served_over_udp_and_tcp_and_forwarded() -> None:
    upstream_port = _free_udp_port()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        _Upstream, local_addr=("127.0.0.1", upstream_port))
    port = _free_udp_and_tcp_port()
    dns = ClusterDNS(records(), address="127.0.0.1", port=port, upstreams=["127.0.0.1"],
                     upstream_port=upstream_port)
    await dns.start()
    try:
        r = await _ask(port, "web-0.web.train.svc.cluster.local")
        assert (r.header.rcode, [str(a.rdata) for a in r.rr]) == (RCODE.NOERROR, ["10.42.0.5"])
        assert r.header.aa == 1
        r = await _ask(port, "web.train.svc.cluster.local", tcp=True)
        assert sorted(str(a.rdata) for a in r.rr) == ["10.42.0.5", "10.42.0.6"]
        r = await _ask(port, "missing.train.svc.cluster.local")
        assert r.header.rcode == RCODE.NXDOMAIN
        r = await _ask(port, "example.com")
        assert [str(a.rdata) for a in r.rr] == ["192.0.2.7"]
        dns.upstreams = []
        assert (await _ask(port, "example.org")).header.rcode == RCODE.SERVFAIL
    finally:
        await dns.stop()
        transport.close()
