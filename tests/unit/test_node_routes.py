"""Which routes to other nodes' pod ranges a node agent makes (flannel host-gw style)."""

from __future__ import annotations

import ipaddress
from typing import Any

from kybernetes.kubelet.routes import wanted_routes


def node(name: str, cidr: str, address: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": address},
                                     {"type": "Hostname", "address": name}]}}


LAN = [ipaddress.IPv4Network("10.201.0.0/24")]


def test_other_nodes_on_the_attached_network_are_routed() -> None:
    nodes = [node("h1", "10.42.11.0/24", "10.201.0.11"),
             node("h2", "10.42.12.0/24", "10.201.0.12"),
             node("h3", "10.42.13.0/24", "10.201.0.13")]
    assert wanted_routes(nodes, me="h1", own_addresses={"10.201.0.11"}, connected=LAN) == {
        "10.42.12.0/24": "10.201.0.12", "10.42.13.0/24": "10.201.0.13"}


def test_nodes_on_this_host_beyond_a_router_or_without_a_range_are_not() -> None:
    nodes = [node("me", "10.42.0.0/24", "10.201.0.11"),
             node("same-host", "10.42.1.0/24", "10.201.0.11"),  # a second agent here
             node("loop", "10.42.2.0/24", "127.0.0.1"),
             node("far", "10.42.3.0/24", "192.0.2.9"),  # needs an overlay
             {"metadata": {"name": "fake"}, "spec": {}, "status": {}},
             node("bad", "not-a-cidr", "10.201.0.20")]
    assert wanted_routes(nodes, me="me", own_addresses={"10.201.0.11"}, connected=LAN) == {}
