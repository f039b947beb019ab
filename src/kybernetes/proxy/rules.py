"""What the service proxy installs: Services and their EndpointSlices turned into one
nftables table of DNAT rules, as kube-proxy's nftables mode does.

Pure functions, no I/O: :func:`service_ports` reads a Service and its slices into
:class:`ServicePort` values, :func:`render` turns those into an ``nft -f`` script.

The table (``ip kybernetes_<id>``, one per node agent on the machine)::

    nat-prerouting, nat-output (dstnat)   -> services
    services: ClusterIP . proto . port    -> svc-N        (random over the endpoints)
              local address, proto . port -> ext-N        (NodePort, LoadBalancer port)
    ext-N:    mark for masquerade (unless externalTrafficPolicy: Local), then svc-N / local-N
    ep-N-M:   mark hairpin traffic, remember the client (sessionAffinity), DNAT
    nat-postrouting (srcnat): masquerade what was marked
    filter-output, filter-forward: reject what is still addressed to the service range
              (no such Service, port or endpoint; on output, unless a userspace proxy on
              the machine made it local and listens there); filter-input: refuse packets for
              127.0.0.0/8 that come from outside (localhost NodePorts need
              ``route_localnet`` on the pod bridges)

Only ready endpoints receive traffic; when none is ready, serving endpoints that are
terminating do (upstream's fallback, so a rolling update does not drop connections).

Each sync replaces the chains in one transaction; the session-affinity sets keep their
names (a hash of service port and endpoint) and so their entries across syncs, as do the
named counters of new connections (read for the request rates): one per service port,
and one per endpoint of it (the connections each pod served, for per-pod rates;
:func:`endpoint_connections` turns two readings into those).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

MASQ_MARK = 0x4000
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
DEFAULT_AFFINITY_TIMEOUT = 10800
TABLE_PREFIX = "kybernetes_"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str = ""
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    pod: str = ""
    """The pod behind the address (the slice endpoint's ``targetRef``), if a pod."""


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with what the proxy needs to route it."""

    name: str
    """``namespace/service:port-name`` (``namespace/service`` for an unnamed port)."""
    protocol: str
    port: int
    cluster_ips: tuple[str, ...] = ()
    node_port: int = 0
    load_balancer: bool = False
    """The port is also served on every local address (a LoadBalancer with an ingress)."""
    external_local: bool = False
    internal_local: bool = False
    affinity_timeout: int = 0
    endpoints: tuple[Endpoint, ...] = ()

    def usable(self) -> list[Endpoint]:
        ready = [e for e in self.endpoints if e.ready]
        return ready or [e for e in self.endpoints if e.serving and e.terminating]

    def cluster_endpoints(self, node: str) -> list[Endpoint]:
        eps = self.usable()
        return [e for e in eps if e.node == node] if self.internal_local else eps

    def external_endpoints(self, node: str) -> list[Endpoint]:
        eps = self.usable()
        return [e for e in eps if e.node == node] if self.external_local else eps


def _ipv4(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


def service_ports(service: Obj, slices: list[Obj]) -> list[ServicePort]:
    """The ports of ``service`` the proxy routes, with their endpoints from ``slices``
    (the Service's EndpointSlices). Headless and ExternalName Services have none."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return []
    ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP") or ""])
           if ip and ip != "None" and _ipv4(ip)]
    svc_type = spec.get("type") or "ClusterIP"
    has_lb = svc_type == "LoadBalancer" and any(
        i.get("ip") for i in ((service.get("status") or {}).get("loadBalancer") or {})
        .get("ingress") or [])
    if not ips:
        return []
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    out = []
    base = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    for p in spec.get("ports") or []:
        proto = PROTOCOLS.get(p.get("protocol") or "TCP")
        if proto is None or not p.get("port"):
            continue
        port_name = p.get("name") or ""
        endpoints = []
        for s in slices:
            if s.get("addressType", "IPv4") != "IPv4":
                continue
            target = next((sp.get("port") for sp in s.get("ports") or []
                           if (sp.get("name") or "") == port_name
                           and (sp.get("protocol") or "TCP") == (p.get("protocol") or "TCP")),
                          None)
            if not target:
                continue
            for e in s.get("endpoints") or []:
                cond = e.get("conditions") or {}
                ready = cond.get("ready") is not False
                serving = cond["serving"] if cond.get("serving") is not None else ready
                ref = e.get("targetRef") or {}
                pod = str(ref.get("name") or "") if ref.get("kind") == "Pod" else ""
                for addr in e.get("addresses") or []:
                    endpoints.append(Endpoint(addr, int(target), e.get("nodeName") or "",
                                              ready, bool(serving),
                                              bool(cond.get("terminating")), pod))
        endpoints.sort(key=lambda e: (ipaddress.ip_address(e.ip), e.port))
        out.append(ServicePort(
            name=f"{base}:{port_name}" if port_name else base, protocol=proto,
            port=int(p["port"]), cluster_ips=tuple(ips),
            node_port=int(p.get("nodePort") or 0) if svc_type in ("NodePort",
                                                                 "LoadBalancer") else 0,
            load_balancer=has_lb,
            external_local=spec.get("externalTrafficPolicy") == "Local",
            internal_local=spec.get("internalTrafficPolicy") == "Local",
            affinity_timeout=affinity, endpoints=tuple(dict.fromkeys(endpoints))))
    return out


@dataclass(frozen=True)
class EndpointCounter:
    """What one endpoint's named counter counts: the new connections to ``ip`` through a
    port of Service ``namespace/service``, served by ``pod`` (empty if not a pod)."""

    namespace: str
    service: str
    ip: str
    pod: str = ""


@dataclass
class Installed:
    """What the last sync left in the table: its chains, affinity sets and counters."""

    chains: set[str] = field(default_factory=set)
    sets: set[str] = field(default_factory=set)
    counters: dict[str, str] = field(default_factory=dict)
    """Named counter -> the ``namespace/service`` whose new connections it counts."""
    endpoint_counters: dict[str, EndpointCounter] = field(default_factory=dict)
    """Named counter -> the endpoint whose new connections it counts."""


def endpoint_connections(installed: Installed, before: Mapping[str, int],
                         now: Mapping[str, int]) -> dict[tuple[str, str], int]:
    """The new connections each pod served between two readings of the table's counters
    (name -> packets; the nat chains see only a connection's first packet), as
    ``(namespace, pod) -> count``. A counter first read now counts from now on; one
    that went down was recreated (the table started afresh) and counts from zero."""
    out: dict[tuple[str, str], int] = {}
    for name, packets in now.items():
        ep = installed.endpoint_counters.get(name)
        prior = before.get(name)
        if ep is None or not ep.pod or prior is None:
            continue
        new = packets - prior if packets >= prior else packets
        if new > 0:
            out[(ep.namespace, ep.pod)] = out.get((ep.namespace, ep.pod), 0) + new
    return out


BASE_CHAINS = {
    "nat-prerouting": "type nat hook prerouting priority -100; policy accept;",
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority 100; policy accept;",
    "filter-input": "type filter hook input priority 0; policy accept;",
    "filter-output": "type filter hook output priority 0; policy accept;",
    "filter-forward": "type filter hook forward priority 0; policy accept;",
}


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'").replace("\\", "/")[:120] + '"'


def _endpoint_id(sp: ServicePort, ep: Endpoint) -> str:
    key = f"{sp.name}/{sp.protocol}/{sp.affinity_timeout}/{ep.ip}:{ep.port}"
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _affinity_set(sp: ServicePort, ep: Endpoint) -> str:
    return f"aff-{_endpoint_id(sp, ep)}"


def _counter(sp: ServicePort) -> str:
    return "cnt-" + hashlib.sha1(f"{sp.name}/{sp.protocol}".encode()).hexdigest()[:12]


def _endpoint_counter(sp: ServicePort, ep: Endpoint) -> str:
    """Unlike the chain's name, not tied to the session affinity: changing that must not
    restart the count."""
    key = f"{sp.name}/{sp.protocol}/{ep.ip}:{ep.port}"
    return "cnt-ep-" + hashlib.sha1(key.encode()).hexdigest()[:12]


@dataclass
class _Builder:
    node: str
    chains: dict[str, list[str]] = field(default_factory=dict)
    sets: dict[str, int] = field(default_factory=dict)
    """Affinity set name -> its timeout."""
    counters: dict[str, str] = field(default_factory=dict)
    endpoint_counters: dict[str, EndpointCounter] = field(default_factory=dict)
    vips: list[str] = field(default_factory=list)
    local_ports: dict[tuple[str, int], str] = field(default_factory=dict)

    def endpoint_chain(self, sp: ServicePort, ep: Endpoint) -> str:
        name = f"ep-{_endpoint_id(sp, ep)}"
        if name in self.chains:
            return name
        counter = _counter(sp)
        service = sp.name.split(":", 1)[0]
        self.counters[counter] = service
        per_endpoint = _endpoint_counter(sp, ep)
        ns, _, svc = service.partition("/")
        self.endpoint_counters[per_endpoint] = EndpointCounter(ns, svc, ep.ip, ep.pod)
        rules = [f"counter name {counter}", f"counter name {per_endpoint}",
                 f"ip saddr {ep.ip} meta mark set meta mark | {MASQ_MARK:#x}"]
        if sp.affinity_timeout:
            aff = _affinity_set(sp, ep)
            self.sets[aff] = sp.affinity_timeout
            rules.append(f"update @{aff} {{ ip saddr }}")
        rules.append(f"meta l4proto {sp.protocol} dnat to {ep.ip}:{ep.port}")
        self.chains[name] = rules
        return name

    def balance(self, name: str, sp: ServicePort, eps: list[Endpoint]) -> str:
        """A chain spreading new connections at random over ``eps`` (after the client's
        remembered endpoint, with session affinity)."""
        targets = [self.endpoint_chain(sp, e) for e in eps]
        rules = []
        if sp.affinity_timeout:
            rules += [f"ip saddr @{_affinity_set(sp, e)} goto {t}"
                      for e, t in zip(eps, targets, strict=True)]
        if len(targets) == 1:
            rules.append(f"goto {targets[0]}")
        else:
            arms = ", ".join(f"{i} : goto {t}" for i, t in enumerate(targets))
            rules.append(f"numgen random mod {len(targets)} vmap {{ {arms} }}")
        self.chains[name] = rules
        return name

    def add(self, index: int, sp: ServicePort) -> None:
        comment = f"comment {_quote(sp.name)}"
        cluster = sp.cluster_endpoints(self.node)
        svc = self.balance(f"svc-{index}", sp, cluster) if cluster else ""
        if svc:
            self.vips += [f"{ip} . {sp.protocol} . {sp.port} : goto {svc}"
                          for ip in sp.cluster_ips]
        external_ports = [p for p in (sp.node_port, sp.port if sp.load_balancer else 0) if p]
        if not external_ports:
            return
        external = sp.external_endpoints(self.node)
        ext = f"ext-{index}"
        rules = [f"ip saddr 127.0.0.0/8 meta mark set meta mark | {MASQ_MARK:#x} {comment}"]
        if not external:
            rules.append("drop")
        elif sp.external_local:
            rules.append(f"goto {self.balance(f'local-{index}', sp, external)}")
        else:
            rules.append(f"meta mark set meta mark | {MASQ_MARK:#x}")
            rules.append(f"goto {svc or self.balance(f'svc-{index}', sp, external)}")
        self.chains[ext] = rules
        for port in external_ports:
            self.local_ports.setdefault((sp.protocol, port), ext)


def render(ports: list[ServicePort], *, table: str, node: str, service_cidr: str,
           previous: Installed | None = None) -> tuple[str, Installed]:
    """The ``nft -f`` script that makes ``table`` route ``ports``, and what it leaves
    installed. With ``previous`` (the last sync's :class:`Installed`), the chains are
    replaced in place and the affinity sets kept; without, the table starts afresh."""
    b = _Builder(node)
    for i, sp in enumerate(sorted(ports, key=lambda p: (p.name, p.protocol, p.port))):
        b.add(i, sp)
    services = []
    if b.vips:
        services.append("ip daddr . meta l4proto . th dport vmap { " + ", ".join(b.vips) + " }")
    if b.local_ports:
        arms = ", ".join(f"{proto} . {port} : goto {chain}"
                         for (proto, port), chain in sorted(b.local_ports.items()))
        # (not the service range: a userspace proxy of another server on the machine may
        # have made it local, and its virtual IPs are no node address)
        services.append(f"fib daddr type local ip daddr != {service_cidr} "
                        f"meta l4proto . th dport vmap {{ {arms} }}")
    chains: dict[str, list[str]] = {
        "nat-prerouting": ["jump services"],
        "nat-output": ["jump services"],
        "nat-postrouting": [f"meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade"],
        "filter-input": ['iifname != "lo" ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 '
                         "ct state != { established, related } drop"],
        "filter-output": [f"ip daddr {service_cidr} fib daddr type != local reject"],
        "filter-forward": [f"ip daddr {service_cidr} reject"],
        "services": services,
        **b.chains,
    }
    t = f"ip {table}"
    lines = [f"add table {t}"]
    if previous is None:
        lines += [f"delete table {t}", f"add table {t}"]
    old = previous or Installed()
    # first empty every chain still there (so that none is referenced any more), then
    # drop those no longer wanted, then fill the rest
    lines += [f"flush chain {t} {c}" for c in sorted(old.chains)]
    lines += [f"delete chain {t} {c}" for c in sorted(old.chains - chains.keys())]
    for name, timeout in sorted(b.sets.items()):
        lines.append(f"add set {t} {name} {{ type ipv4_addr; flags dynamic,timeout; "
                     f"timeout {timeout}s; }}")
    lines += [f"delete set {t} {s}" for s in sorted(old.sets - b.sets.keys())]
    counters = b.counters.keys() | b.endpoint_counters.keys()
    lines += [f"add counter {t} {c}" for c in sorted(counters)]
    lines += [f"delete counter {t} {c}" for c in sorted(
        (old.counters.keys() | old.endpoint_counters.keys()) - counters)]
    for name in chains:
        base = BASE_CHAINS.get(name)
        lines.append(f"add chain {t} {name}" + (f" {{ {base} }}" if base else ""))
    for name, rules in chains.items():
        lines += [f"add rule {t} {name} {rule}" for rule in rules]
    return "\n".join(lines) + "\n", Installed(set(chains), set(b.sets), dict(b.counters),
                                            dict(b.endpoint_counters))
