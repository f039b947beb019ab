"""Service addresses and node ports reserved in the store: API servers sharing one store
(each with its own view in memory) never hand out one twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kybernetes.apiserver.allocators import (
    IP_KEYS,
    PORT_KEYS,
    AllocationError,
    IPAllocator,
    PortAllocator,
    ServiceAllocations,
)
from kybernetes.store.sqlite import SQLiteBackend


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    s = SQLiteBackend.open(tmp_path / "s.db")
    yield s
    await s.close()


def server(store: SQLiteBackend, cidr: str = "10.96.0.0/12",
           ports: tuple[int, int] = (30000, 32767)) -> ServiceAllocations:
    """One API server's allocations: its own view in memory, the shared store."""
    return ServiceAllocations(store, IPAllocator(cidr), PortAllocator(*ports))


def owner(name: str, uid: str = "") -> dict[str, str]:
    return {"uid": uid or f"uid-{name}", "service": f"default/{name}"}


def svc(name: str, ip: str, *node_ports: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"port": 80, "nodePort": p} for p in node_ports]}}


async def test_a_wanted_address_is_given_once_across_servers(store: SQLiteBackend) -> None:
    a, b = server(store), server(store)
    assert await a.allocate_ip("10.96.0.10", owner("x"), dry_run=False) == "10.96.0.10"
    with pytest.raises(AllocationError, match="provided IP is already allocated"):
        await b.allocate_ip("10.96.0.10", owner("y"), dry_run=False)
    # a dry run asks the store too, and reserves nothing
    with pytest.raises(AllocationError, match="already allocated"):
        await b.allocate_ip("10.96.0.10", owner("y"), dry_run=True)
    assert await b.allocate_ip("10.96.0.11", owner("y"), dry_run=True) == "10.96.0.11"
    assert await store.get(IP_KEYS + "10.96.0.11") is None


async def test_random_choices_skip_what_another_server_took(store: SQLiteBackend) -> None:
    # a tiny range: 10.96.0.2 .. 10.96.0.6 can be handed out
    a, b = server(store, "10.96.0.0/29"), server(store, "10.96.0.0/29")
    got = [await a.allocate_ip("", owner(f"a{i}"), dry_run=False) for i in range(3)]
    got += [await b.allocate_ip("", owner(f"b{i}"), dry_run=False) for i in range(2)]
    assert len(set(got)) == 5, got
    with pytest.raises(AllocationError, match="range is full"):
        await b.allocate_ip("", owner("c"), dry_run=False)


async def test_node_ports_are_given_once_across_servers(store: SQLiteBackend) -> None:
    a, b = server(store, ports=(30000, 30003)), server(store, ports=(30000, 30003))
    got = {await a.allocate_port(0, owner(f"a{i}"), path="spec.ports[0].nodePort",
                                 dry_run=False) for i in range(2)}
    got |= {await b.allocate_port(0, owner(f"b{i}"), path="spec.ports[0].nodePort",
                                  dry_run=False) for i in range(2)}
    assert got == {30000, 30001, 30002, 30003}
    with pytest.raises(AllocationError, match=r"spec.ports\[1\].nodePort.*already allocated"):
        await b.allocate_port(30002, owner("c"), path="spec.ports[1].nodePort", dry_run=False)


async def test_release_by_another_owner_leaves_the_reservation(store: SQLiteBackend) -> None:
    a, b = server(store), server(store)
    await a.allocate_ip("10.96.0.20", owner("x"), dry_run=False)
    await b.release_ip("10.96.0.20", "uid-someone-else")
    assert await store.get(IP_KEYS + "10.96.0.20") is not None
    await b.release_ip("10.96.0.20", "uid-x")
    assert await store.get(IP_KEYS + "10.96.0.20") is None
    # released by b, taken again through a (whose memory still had it marked)
    assert await a.allocate_ip("10.96.0.20", owner("z"), dry_run=False) == "10.96.0.20"


async def test_restore_reserves_what_services_hold(store: SQLiteBackend) -> None:
    a = server(store)
    await a.restore([svc("web", "10.96.0.30", 30080)])
    assert await store.get(IP_KEYS + "10.96.0.30") is not None
    assert await store.get(PORT_KEYS + "30080") is not None
    b = server(store)
    await b.restore([])  # a server started later learns them from the keys
    with pytest.raises(AllocationError):
        await b.allocate_port(30080, owner("y"), path="p", dry_run=False)


async def test_repair_releases_orphans_seen_twice(store: SQLiteBackend) -> None:
    a = server(store)
    await a.allocate_ip("10.96.0.40", owner("gone"), dry_run=False)
    await a.allocate_ip("10.96.0.41", owner("web"), dry_run=False)
    held = [svc("web", "10.96.0.41")]
    assert await a.repair(held) == []  # first sight: maybe its Service is being written
    assert await a.repair(held) == [IP_KEYS + "10.96.0.40"]
    assert await store.get(IP_KEYS + "10.96.0.40") is None
    assert await store.get(IP_KEYS + "10.96.0.41") is not None
    assert await a.allocate_ip("10.96.0.40", owner("new"), dry_run=False) == "10.96.0.40"
