"""NetworkPolicies (networking.k8s.io/v1) compiled to nftables rules for one node's pods.

:func:`compile_rules` turns the cluster's policies, pods and namespaces (plain dicts, as
the informers cache them) into what each pod of this node may receive and send
(:class:`PodRules`); :func:`render` turns those into an ``nft -f`` script that replaces
the node's table in one transaction. Both are pure.

Upstream's semantics:

- a pod is isolated for ingress (egress) once a policy of its namespace selects it and
  lists that type in ``policyTypes`` (defaulted to Ingress, plus Egress when the policy
  has egress rules); a pod no policy isolates accepts (sends) anything;
- what an isolated pod accepts is the union of the rules of every policy selecting it;
  a rule matches when one of its peers and one of its ports match (no ``from``/``to``:
  any peer; no ``ports``: any port of any protocol);
- a peer is a ``podSelector`` (pods of the policy's namespace), a ``namespaceSelector``
  (every pod of the namespaces it selects), both (the pods the first selects in those
  namespaces) or an ``ipBlock`` (``cidr`` less its ``except`` ranges);
- a port is a protocol (TCP when not given), a number (through ``endPort``) or the name
  of a container port of the pod receiving the connection (for egress, each
  destination pod's own number for that name);
- pods have IPv4 addresses only: while one of the node's pods is isolated, IPv6 from
  its pods (their link-local addresses) is dropped but for ICMPv6 (neighbour discovery);
- replies of allowed connections pass, a pod can always reach itself (through a
  Service's virtual IP, which sends it back to itself), and traffic between a pod and
  its own node is always allowed (probes, the cluster DNS on the node's pod gateway):
  the node's traffic never crosses the ``forward`` hook the table filters on.

The table (``inet``) hooks ``forward`` after the service proxy's DNAT (priority -100),
so a connection to a Service is judged by the pod it reaches. Pods of one node talk
across their bridge (layer 2): the bridge hands those frames to the ``inet`` hooks only
with ``br_netfilter`` on (``bridge-nf-call-iptables``, or the bridge's own
``nf_call_iptables``, ``nf_call_ip6tables``), which the enforcer turns on for its bridge.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kybernetes.api.selectors import EVERYTHING, LabelSelector, SelectorError, from_label_selector

Obj = dict[str, Any]

PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
TABLE_PREFIX = "kybernetes_netpol_"
FINISHED = ("Succeeded", "Failed")


def table_name(bridge: str) -> str:
    """The table of the node whose pods sit on ``bridge`` (``kyb0a2a0000`` ->
    ``kybernetes_netpol_0a2a0000``): two agents on one machine have two."""
    return TABLE_PREFIX + bridge.removeprefix("kyb")


@dataclass(frozen=True)
class PodInfo:
    """What policies look at in a pod: where it is, its labels and its named ports."""

    namespace: str
    name: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    ports: tuple[tuple[str, str, int], ...] = ()
    """Named container ports: (name, protocol, number)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_info(pod: Obj) -> PodInfo | None:
    """The pod as policies see it; None when it has no pod network address (not yet,
    host network, finished)."""
    meta, spec, status = (pod.get(k) or {} for k in ("metadata", "spec", "status"))
    if spec.get("hostNetwork") or status.get("phase") in FINISHED:
        return None
    ips = [str(i.get("ip") or "") for i in status.get("podIPs") or []] or \
        [str(status.get("podIP") or "")]
    ip = next((i for i in ips if _ipv4(i)), "")
    if not ip:
        return None
    ports = []
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") and p.get("containerPort"):
                ports.append((str(p["name"]), str(p.get("protocol") or "TCP"),
                              int(p["containerPort"])))
    return PodInfo(str(meta.get("namespace") or ""), str(meta.get("name") or ""), ip,
                   dict(meta.get("labels") or {}), tuple(sorted(ports)))


def _ipv4(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


@dataclass(frozen=True, order=True)
class Ports:
    """A protocol and a port range (``port`` 0: every port of the protocol)."""

    protocol: str
    """nft's name: ``tcp``, ``udp`` or ``sctp``."""
    port: int = 0
    end_port: int = 0


@dataclass(frozen=True)
class Allow:
    """One kind of connection a pod may accept (send): from (to) ``peers`` less
    ``excepts``, on ``ports``."""

    peers: tuple[str, ...] | None
    """Addresses and CIDRs; None: any address."""
    excepts: tuple[str, ...] = ()
    ports: tuple[Ports, ...] = ()
    """Empty: any port of any protocol."""


@dataclass(frozen=True)
class PodRules:
    """What a pod of this node may accept and send; None: not isolated that way."""

    namespace: str
    name: str
    ip: str
    ingress: tuple[Allow, ...] | None = None
    egress: tuple[Allow, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _selector(sel: Any) -> LabelSelector:
    try:
        return from_label_selector(sel if isinstance(sel, dict) else None)
    except SelectorError:
        return from_label_selector(None)  # validation keeps these out; select nothing


class _Cluster:
    """The pods and namespaces peers are chosen from."""

    def __init__(self, pods: Iterable[PodInfo], namespaces: Iterable[Obj]) -> None:
        self.pods = sorted(pods, key=lambda p: (p.namespace, p.name))
        self.ns_labels: dict[str, dict[str, str]] = {}
        self._peers: dict[tuple[int, str], list[PodInfo]] = {}
        self.egress: dict[int, list[Allow]] = {}
        """Egress rules' allows (they do not depend on the pod sending), by rule."""
        for ns in namespaces:
            meta = ns.get("metadata") or {}
            name = str(meta.get("name") or "")
            self.ns_labels[name] = {**(meta.get("labels") or {}), NAMESPACE_NAME_LABEL: name}

    def namespace_labels(self, name: str) -> dict[str, str]:
        return self.ns_labels.get(name) or {NAMESPACE_NAME_LABEL: name}

    def peer_pods(self, peer: Obj, policy_ns: str) -> list[PodInfo]:
        """The pods a ``podSelector``/``namespaceSelector`` peer selects (each peer is
        looked at once, however many pods its policy selects)."""
        key = (id(peer), policy_ns)
        if key not in self._peers:
            self._peers[key] = self._select(peer, policy_ns)
        return self._peers[key]

    def _select(self, peer: Obj, policy_ns: str) -> list[PodInfo]:
        pod_sel = _selector(peer["podSelector"]) if "podSelector" in peer else EVERYTHING
        if peer.get("namespaceSelector") is None:
            return [p for p in self.pods
                    if p.namespace == policy_ns and pod_sel.matches(p.labels)]
        ns_sel = _selector(peer["namespaceSelector"])
        return [p for p in self.pods if ns_sel.matches(self.namespace_labels(p.namespace))
                and pod_sel.matches(p.labels)]


def _networks(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network]:
    out = []
    for c in cidrs:
        try:
            net = ipaddress.ip_network(str(c), strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network):
            out.append(net)
    return out


def _block(peer: Obj) -> tuple[ipaddress.IPv4Network, list[ipaddress.IPv4Network]] | None:
    block = peer.get("ipBlock") or {}
    nets = _networks([block.get("cidr") or ""])
    if not nets:
        return None  # an IPv6 block: pods here have IPv4 addresses only
    return nets[0], _networks(block.get("except") or [])


def _in_block(ip: str, block: tuple[ipaddress.IPv4Network, list[ipaddress.IPv4Network]]
              ) -> bool:
    addr = ipaddress.IPv4Address(ip)
    return addr in block[0] and not any(addr in ex for ex in block[1])


def _ports(spec_ports: list[Any], target: PodInfo | None) -> tuple[Ports, ...] | None:
    """A rule's ``ports`` for connections to ``target`` (named ports are looked up in
    it; None: a pod not known, names resolve to nothing). ``()`` is any port; None: the
    rule's ports match nothing here."""
    if not spec_ports:
        return ()
    out: set[Ports] = set()
    for p in spec_ports:
        if not isinstance(p, dict):
            continue
        protocol = str(p.get("protocol") or "TCP")
        proto = PROTOCOLS.get(protocol)
        if proto is None:
            continue
        port = p.get("port")
        if port is None:
            out.add(Ports(proto))
        elif isinstance(port, int):
            end = int(p.get("endPort") or 0)
            out.add(Ports(proto, port, end if end > port else 0))
        elif target is not None:
            out.update(Ports(proto, num) for name, pr, num in target.ports
                       if name == port and pr == protocol)
    return tuple(sorted(out)) or None


def _named(spec_ports: list[Any]) -> bool:
    return any(isinstance(p, dict) and isinstance(p.get("port"), str) for p in spec_ports)


def _ingress_allows(rule: Obj, policy_ns: str, target: PodInfo, cluster: _Cluster
                    ) -> list[Allow]:
    ports = _ports(rule.get("ports") or [], target)
    if ports is None:
        return []
    peers = [p for p in rule.get("from") or [] if isinstance(p, dict)]
    return _peer_allows(peers, policy_ns, cluster, ports)


def _peer_allows(peers: list[Obj], policy_ns: str, cluster: _Cluster,
                 ports: tuple[Ports, ...]) -> list[Allow]:
    """What ``peers`` allow on ``ports`` (no peers: everyone): one Allow for the pods
    they cover, one per ipBlock."""
    if not peers:
        return [Allow(None, (), ports)]
    out: list[Allow] = []
    ips: set[str] = set()
    for peer in peers:
        if "ipBlock" in peer:
            block = _block(peer)
            if block is not None:
                out.append(Allow((str(block[0]),), tuple(str(n) for n in block[1]), ports))
        else:
            ips.update(p.ip for p in cluster.peer_pods(peer, policy_ns))
    if ips:
        out.insert(0, Allow(tuple(sorted(ips, key=ipaddress.IPv4Address)), (), ports))
    return out


def _egress_allows(rule: Obj, policy_ns: str, cluster: _Cluster) -> list[Allow]:
    spec_ports = rule.get("ports") or []
    peers = [p for p in rule.get("to") or [] if isinstance(p, dict)]
    if not _named(spec_ports):
        ports = _ports(spec_ports, None)
        if ports is None:
            return []
        return _peer_allows(peers, policy_ns, cluster, ports)
    # a named port means each destination pod's own number for it: one set of ports per
    # destination, so the destinations are the pods the peers cover
    dests: dict[str, PodInfo] = {}
    if not peers:
        dests = {p.ip: p for p in cluster.pods}
    for peer in peers:
        if "ipBlock" in peer:
            block = _block(peer)
            if block is not None:
                dests.update((p.ip, p) for p in cluster.pods if _in_block(p.ip, block))
        else:
            dests.update((p.ip, p) for p in cluster.peer_pods(peer, policy_ns))
    by_ports: dict[tuple[Ports, ...], list[str]] = {}
    for ip, pod in dests.items():
        ports = _ports(spec_ports, pod)
        if ports is not None:
            by_ports.setdefault(ports, []).append(ip)
    return [Allow(tuple(sorted(ips, key=ipaddress.IPv4Address)), (), ports)
            for ports, ips in sorted(by_ports.items())]


def policy_types(policy: Obj) -> list[str]:
    """``spec.policyTypes``, defaulted as the API server does."""
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return [str(t) for t in types]
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def compile_rules(policies: Iterable[Obj], pods: Iterable[Obj], namespaces: Iterable[Obj], *,
                  pod_cidr: str) -> list[PodRules]:
    """What each pod with an address in ``pod_cidr`` (this node's pods) may accept and
    send, for those some policy isolates; sorted by address."""
    policies = list(policies)
    if not policies:
        return []
    infos = [i for i in (pod_info(p) for p in pods) if i is not None]
    cluster = _Cluster(infos, namespaces)
    net = ipaddress.ip_network(pod_cidr, strict=False)
    by_ns: dict[str, list[tuple[Obj, LabelSelector, list[str]]]] = {}
    for pol in policies:
        meta, spec = pol.get("metadata") or {}, pol.get("spec") or {}
        by_ns.setdefault(str(meta.get("namespace") or ""), []).append(
            (pol, _selector(spec.get("podSelector") or {}), policy_types(pol)))
    local: dict[str, PodRules] = {}
    for pod in cluster.pods:
        if ipaddress.ip_address(pod.ip) not in net:
            continue
        ingress: list[Allow] | None = None
        egress: list[Allow] | None = None
        for pol, selector, types in by_ns.get(pod.namespace, []):
            if not selector.matches(pod.labels):
                continue
            spec = pol.get("spec") or {}
            if "Ingress" in types:
                ingress = ingress or []
                for rule in spec.get("ingress") or []:
                    if isinstance(rule, dict):
                        ingress += _ingress_allows(rule, pod.namespace, pod, cluster)
            if "Egress" in types:
                egress = egress or []
                for rule in spec.get("egress") or []:
                    if isinstance(rule, dict):
                        if id(rule) not in cluster.egress:
                            cluster.egress[id(rule)] = _egress_allows(rule, pod.namespace,
                                                                      cluster)
                        egress += cluster.egress[id(rule)]
        if ingress is None and egress is None:
            continue
        local[pod.ip] = PodRules(
            pod.namespace, pod.name, pod.ip,
            None if ingress is None else tuple(dict.fromkeys(ingress)),
            None if egress is None else tuple(dict.fromkeys(egress)))
    return [local[ip] for ip in sorted(local, key=ipaddress.IPv4Address)]


# -- nft ----------------------------------------------------------------------------------

def _quote(text: str) -> str:
    return '"' + text.replace('"', "'").replace("\\", "/")[:120] + '"'


@functools.lru_cache(maxsize=4096)
def _collapsed(values: tuple[str, ...]) -> tuple[str, ...]:
    """Addresses and ranges, overlaps merged (nft refuses them in one set)."""
    nets = ipaddress.collapse_addresses(_networks(values))
    return tuple(str(n.network_address) if n.prefixlen == 32 else str(n) for n in nets)


SETS_FROM = 4
"""Address lists this long or longer become named sets, each written once per table
(one pod's peers are often many pods' too)."""


def _addresses(values: tuple[str, ...], sets: dict[tuple[str, ...], str] | None) -> str:
    items = _collapsed(values)
    if len(items) == 1:
        return items[0]
    if sets is not None and len(items) >= SETS_FROM:
        return "@" + sets.setdefault(items, f"addresses-{len(sets)}")
    return "{ " + ", ".join(items) + " }"


def _port_set(ports: Iterable[Ports]) -> str:
    ranges: list[list[int]] = []
    for lo, hi in sorted((p.port, p.end_port or p.port) for p in ports):
        if ranges and lo <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], hi)
        else:
            ranges.append([lo, hi])
    items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def allow_rules(allow: Allow, direction: str,
                sets: dict[tuple[str, ...], str] | None = None) -> list[str]:
    """The rules (without the verdict) matching ``allow``'s connections; ``direction``:
    ``saddr`` for ingress (the peer sends), ``daddr`` for egress. With ``sets``, long
    address lists are named sets of the table (address list -> name, added to)."""
    head = []
    if allow.peers is not None:
        if not allow.peers:
            return []
        head.append(f"ip {direction} {_addresses(allow.peers, sets)}")
    if allow.excepts:
        head.append(f"ip {direction} != {_addresses(allow.excepts, sets)}")
    if not allow.ports:
        return [" ".join(head)]
    by_proto: dict[str, list[Ports]] = {}
    for p in allow.ports:
        by_proto.setdefault(p.protocol, []).append(p)
    out = []
    for proto, ports in sorted(by_proto.items()):
        match = f"meta l4proto {proto}"
        if all(p.port for p in ports):
            match += f" th dport {_port_set(ports)}"
        out.append(" ".join([*head, match]))
    return out


def _chain(t: str, name: str, pod: PodRules, allows: tuple[Allow, ...], direction: str,
           what: str, sets: dict[tuple[str, ...], str]) -> list[str]:
    # allowed: back to the forward chain (where the other end's check may follow)
    rules = [f"ip {direction} {pod.ip} return"]  # a pod can always reach itself
    for allow in allows:
        rules += [f"{match} return".lstrip() for match in allow_rules(allow, direction, sets)]
    rules.append(f"counter drop comment {_quote(f'{pod.key}: {what} not allowed')}")
    return [f"add chain {t} {name}"] + [f"add rule {t} {name} {r}" for r in rules]


def render(rules: list[PodRules], *, table: str, bridge: str) -> str:
    """The ``nft -f`` script that makes ``table`` enforce ``rules`` for the pods on
    ``bridge``, replacing what it held in one transaction. With no pod isolated the
    script removes the table: nothing to filter, no cost per packet."""
    t = f"inet {table}"
    lines = [f"add table {t}", f"delete table {t}"]
    if not rules:
        return "\n".join(lines) + "\n"
    lines += [f"add table {t}",
              f"add chain {t} forward {{ type filter hook forward priority filter; "
              f"policy accept; }}",
              # pods are IPv4-only: their link-local IPv6 addresses must not be a way
              # around a policy (neighbour discovery aside, nothing else uses them)
              f'add rule {t} forward iifname "{bridge}" meta nfproto ipv6 '
              f"meta l4proto != ipv6-icmp counter drop",
              f"add rule {t} forward ct state established,related accept"]
    chains: list[str] = []
    sets: dict[tuple[str, ...], str] = {}
    egress, ingress = [], []
    for i, pod in enumerate(rules):
        if pod.egress is not None:
            egress.append(f"{pod.ip} : jump egress-{i}")
            chains += _chain(t, f"egress-{i}", pod, pod.egress, "daddr", "egress", sets)
        if pod.ingress is not None:
            ingress.append(f"{pod.ip} : jump ingress-{i}")
            chains += _chain(t, f"ingress-{i}", pod, pod.ingress, "saddr", "ingress", sets)
    # the sender's egress first, then the receiver's ingress: each returns when allowed
    if egress:
        lines.append(f'add rule {t} forward iifname "{bridge}" ip saddr vmap '
                     f'{{ {", ".join(egress)} }}')
    if ingress:
        lines.append(f'add rule {t} forward oifname "{bridge}" ip daddr vmap '
                     f'{{ {", ".join(ingress)} }}')
    # the per-pod chains come before the rules that jump to them
    declared = [f"add set {t} {name} {{ type ipv4_addr; flags interval; "
                f"elements = {{ {', '.join(items)} }}; }}" for items, name in sets.items()]
    head, tail = lines[:4], lines[4:]
    return "\n".join(head + declared + chains + tail) + "\n"
