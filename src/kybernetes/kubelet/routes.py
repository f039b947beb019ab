"""Routes to the other nodes' pods, as flannel's host-gw backend makes them.

Every node has its own pod range (``spec.podCIDR``) on a bridge of its own. For each
other node whose InternalIP is on a network this host is directly attached to, the agent
routes that node's pod range through it (``ip route replace 10.42.2.0/24 via
192.168.1.12 proto 77``), so that pods on different nodes reach each other by their own
addresses, unmasqueraded. Routes carry protocol 77 (:data:`ROUTE_PROTO`): the agent
removes exactly its own when a node goes away, and ``kyb killall`` all of them.

A node reachable only through a router would need an overlay (VXLAN); such a node is
logged and left without a route (the pod range's ``unreachable`` route then keeps its
packets on this host).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import subprocess
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.client import Client
from kybernetes.client.informer import Informer
from kybernetes.kubelet.network import run_process

log = logging.getLogger(__name__)
Obj = dict[str, Any]

ROUTE_PROTO = "77"
"""The routing protocol number marking the routes the agents make (unassigned by IANA's
table in iproute2's rt_protos)."""


def wanted_routes(nodes: list[Obj], *, me: str, own_addresses: set[str],
                  connected: list[ipaddress.IPv4Network]) -> dict[str, str]:
    """Pod range → gateway for the other nodes reachable directly from this host."""
    out: dict[str, str] = {}
    for node in nodes:
        name = node.get("metadata", {}).get("name", "")
        spec = node.get("spec") or {}
        cidr = spec.get("podCIDR") or next(iter(spec.get("podCIDRs") or []), "")
        if name == me or not cidr:
            continue
        addr = next((a.get("address", "") for a in (node.get("status") or {}).get(
            "addresses") or () if a.get("type") == "InternalIP"), "")
        try:
            ip = ipaddress.ip_address(addr)
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if addr in own_addresses or ip.is_loopback:
            continue  # on this host: its bridge is local
        if not any(ip in c for c in connected):
            log.debug("node %s (%s) is not on a directly attached network: no route to "
                      "its pods", name, addr)
            continue
        out[str(net)] = addr
    return out


def _host_networks() -> tuple[set[str], list[ipaddress.IPv4Network]]:
    """This host's own IPv4 addresses and the networks attached to it (pod bridges
    excluded)."""
    import psutil

    own: set[str] = set()
    nets: list[ipaddress.IPv4Network] = []
    for ifname, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family.name != "AF_INET" or not a.netmask:
                continue
            own.add(a.address)
            if ifname.startswith("kyb") or a.address.startswith("127."):
                continue
            nets.append(ipaddress.IPv4Network(f"{a.address}/{a.netmask}", strict=False))
    return own, nets


async def _installed() -> dict[str, str]:
    """Our routes now in the main table: pod range → gateway."""
    proc = await run_process(["ip", "-4", "route", "show", "proto", ROUTE_PROTO])
    out = {}
    for line in proc.stdout.decode().splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "via":
            out[words[0]] = words[2]
    return out


class NodeRoutes:
    """Keeps this host's routes to the other nodes' pod ranges."""

    def __init__(self, client: Client, *, node_name: str) -> None:
        self.client = client
        self.node_name = node_name
        self.nodes = Informer(client, "v1", "nodes")
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.nodes.add_handler(lambda _: self._dirty.set(), lambda _o, _n: self._dirty.set(),
                               lambda _: self._dirty.set())
        self.nodes.start()
        self._task = spawn(self._loop(), name=f"node-routes:{self.node_name}")

    async def stop(self) -> None:
        """Stop following the nodes; the routes stay (the pods still use them)."""
        await cancel_and_wait(self._task)
        await self.nodes.stop()

    async def _loop(self) -> None:
        await self.nodes.wait_synced()
        while True:
            self._dirty.clear()
            try:
                await self.sync()
            except Exception as e:  # e.g. iproute2 refused one: try again later
                log.warning("routes to other nodes' pods: %s", e)
                await asyncio.sleep(5)
                self._dirty.set()
            await self._dirty.wait()
            await asyncio.sleep(0.2)  # one pass for a burst of node updates

    async def sync(self) -> None:
        own, connected = _host_networks()
        want = wanted_routes(self.nodes.list(), me=self.node_name, own_addresses=own,
                             connected=connected)
        have = await _installed()
        for cidr, gw in want.items():
            if have.get(cidr) == gw:
                continue
            proc = await run_process(["ip", "-4", "route", "replace", cidr, "via", gw,
                                      "proto", ROUTE_PROTO])
            if proc.returncode != 0:
                raise RuntimeError(f"ip route replace {cidr} via {gw}: "
                                   f"{proc.stderr.decode().strip()}")
            log.info("pods of %s routed via %s", cidr, gw)
        for cidr in set(have) - set(want):
            await run_process(["ip", "-4", "route", "del", cidr, "proto", ROUTE_PROTO])
            log.info("route to pods of %s removed", cidr)


def remove_all_routes() -> None:
    """``kyb killall``: the routes every agent of this host made."""
    subprocess.run(["ip", "-4", "route", "flush", "proto", ROUTE_PROTO], capture_output=True,
                   check=False)
