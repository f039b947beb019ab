"""Service ClusterIP (10.96.0.0/12) and NodePort (30000-32767) allocation."""

from __future__ import annotations

import contextlib
import ipaddress
import random
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from kybernetes.api.errors import FieldError
from kybernetes.store import AlreadyExistsError, Backend, ConflictError, NotFoundError


class IPAllocator:
    """Hands out addresses of a CIDR, skipping the network address and the first host
    (reserved for the ``kubernetes`` Service, as upstream reserves ``.1``)."""

    def __init__(self, cidr: str = "10.96.0.0/12") -> None:
        self.net = ipaddress.ip_network(cidr)
        self._used: set[int] = set()
        self._base = int(self.net.network_address)
        self._size = self.net.num_addresses
        self._rand = random.Random()

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.net
        except ValueError:
            return False

    def mark(self, ip: str) -> None:
        if self.contains(ip):
            self._used.add(int(ipaddress.ip_address(ip)) - self._base)

    def release(self, ip: str) -> None:
        if self.contains(ip):
            self._used.discard(int(ipaddress.ip_address(ip)) - self._base)

    def first(self) -> str:
        return str(ipaddress.ip_address(self._base + 1))

    def check(self, want: str) -> None:
        """Raise AllocationError unless ``want`` may be asked for."""
        if not self.contains(want):
            raise AllocationError(FieldError.invalid(
                "spec.clusterIPs", [want],
                f"failed to allocate IP {want}: the provided IP ({want}) is not in the valid "
                f"range. The range of valid IPs is {self.net}"))

    def allocate(self) -> str:
        """A random address this server has not seen taken (marked as taken)."""
        if len(self._used) >= self._size - 3:
            raise AllocationError(FieldError.invalid(
                "spec.clusterIPs", [], "failed to allocate IP: range is full"))
        while True:
            # upstream allocates from the upper part of the range first; random is fine
            off = self._rand.randrange(2, self._size - 1)
            if off not in self._used:
                self._used.add(off)
                return str(ipaddress.ip_address(self._base + off))


class PortAllocator:
    def __init__(self, low: int = 30000, high: int = 32767) -> None:
        self.low = low
        self.high = high
        self._used: set[int] = set()
        self._rand = random.Random()

    def mark(self, port: int) -> None:
        self._used.add(port)

    def release(self, port: int) -> None:
        self._used.discard(port)

    def check(self, want: int, *, path: str = "spec.ports[0].nodePort") -> None:
        """Raise AllocationError unless ``want`` may be asked for."""
        if not self.low <= want <= self.high:
            raise AllocationError(FieldError.invalid(
                path, want, f"provided port is not in the valid range. The range of valid "
                f"ports is {self.low}-{self.high}"))

    def allocate(self, *, path: str = "spec.ports[0].nodePort") -> int:
        """A random port this server has not seen taken (marked as taken)."""
        free = (self.high - self.low + 1) - len(self._used)
        if free <= 0:
            raise AllocationError(FieldError.invalid(path, 0, "range is full"))
        while True:
            p = self._rand.randint(self.low, self.high)
            if p not in self._used:
                self._used.add(p)
                return p


class AllocationError(Exception):
    def __init__(self, error: FieldError) -> None:
        super().__init__(str(error))
        self.error = error


IP_KEYS = "/registry/kybernetes.io/serviceips/"
PORT_KEYS = "/registry/kybernetes.io/servicenodeports/"
_TRIES = 64


class ServiceAllocations:
    """The Service addresses and node ports in use, kept in the store as one key each,
    created only where absent: API servers sharing a store never hand out one twice (as
    upstream's IPAddress objects do). The allocators in memory are this server's view of
    what is taken: a hint for choosing, the store's key is the word that counts."""

    def __init__(self, backend: Backend, ips: IPAllocator, ports: PortAllocator) -> None:
        self.backend = backend
        self.ips = ips
        self.ports = ports
        self._orphans: dict[str, int] = {}

    async def allocate_ip(self, want: str, owner: Mapping[str, str], *, dry_run: bool) -> str:
        for _ in range(_TRIES):
            if want:
                self.ips.check(want)
                ip = want
            else:
                ip = self.ips.allocate()
            key = IP_KEYS + ip
            taken = await self._reserve(key, owner, dry_run=dry_run)
            self.ips.mark(ip)
            if not taken:
                return ip
            if want:
                raise AllocationError(FieldError.invalid(
                    "spec.clusterIPs", [want],
                    f"failed to allocate IP {want}: provided IP is already allocated"))
        raise AllocationError(FieldError.invalid(
            "spec.clusterIPs", [], "failed to allocate IP: range is full"))

    async def allocate_port(self, want: int, owner: Mapping[str, str], *, path: str,
                            dry_run: bool) -> int:
        for _ in range(_TRIES):
            if want:
                self.ports.check(want, path=path)
                port = want
            else:
                port = self.ports.allocate(path=path)
            taken = await self._reserve(PORT_KEYS + str(port), owner, dry_run=dry_run)
            self.ports.mark(port)
            if not taken:
                return port
            if want:
                raise AllocationError(FieldError.invalid(
                    path, want, "provided port is already allocated"))
        raise AllocationError(FieldError.invalid(path, 0, "range is full"))

    async def _reserve(self, key: str, owner: Mapping[str, str], *, dry_run: bool) -> bool:
        """Reserve ``key`` for ``owner``; whether another holds it (dry run: only look)."""
        if dry_run:
            return await self.backend.get(key) is not None
        try:
            await self.backend.create(key, orjson.dumps(dict(owner)))
        except AlreadyExistsError:
            return True
        return False

    async def release_ip(self, ip: str, uid: str) -> None:
        self.ips.release(ip)
        await self._release(IP_KEYS + ip, uid)

    async def release_port(self, port: int, uid: str) -> None:
        self.ports.release(port)
        await self._release(PORT_KEYS + str(port), uid)

    async def _release(self, key: str, uid: str) -> None:
        """Delete the reservation if ``uid``'s (another's may have followed it)."""
        kv = await self.backend.get(key)
        if kv is None or (uid and _owner_uid(kv.value) not in ("", uid)):
            return
        with contextlib.suppress(NotFoundError, ConflictError):
            await self.backend.delete(key, expected_revision=kv.mod_revision)

    async def restore(self, services: list[dict[str, Any]]) -> None:
        """At start-up: mark what is reserved, and reserve what Services hold without a
        key yet (stored before reservations were kept, or cut short by a crash)."""
        for prefix, mark in ((IP_KEYS, self.ips.mark),
                             (PORT_KEYS, lambda p: self.ports.mark(int(p)))):
            page = await self.backend.list(prefix)
            for kv in page.items:
                mark(kv.key[len(prefix):])
        for svc, ips, ports in _held(services):
            for key in [IP_KEYS + ip for ip in ips] + [PORT_KEYS + str(p) for p in ports]:
                await self._reserve(key, _owner(svc), dry_run=False)
            for ip in ips:
                self.ips.mark(ip)
            for port in ports:
                self.ports.mark(port)

    async def repair(self, services: list[dict[str, Any]]) -> list[str]:
        """Release reservations no Service holds, found so twice in a row unchanged (a
        reservation is made just before its Service is written, maybe by another
        server). Returns the keys released. Run every few minutes, as upstream's repair
        controllers are."""
        held: set[str] = set()
        for _, ips, ports in _held(services):
            held.update(IP_KEYS + ip for ip in ips)
            held.update(PORT_KEYS + str(p) for p in ports)
        orphans: dict[str, int] = {}
        released = []
        for prefix in (IP_KEYS, PORT_KEYS):
            for kv in (await self.backend.list(prefix)).items:
                if kv.key in held:
                    continue
                if self._orphans.get(kv.key) == kv.mod_revision:
                    with contextlib.suppress(NotFoundError, ConflictError):
                        await self.backend.delete(kv.key, expected_revision=kv.mod_revision)
                        released.append(kv.key)
                        if prefix == IP_KEYS:
                            self.ips.release(kv.key[len(prefix):])
                        else:
                            self.ports.release(int(kv.key[len(prefix):]))
                else:
                    orphans[kv.key] = kv.mod_revision
        self._orphans = orphans
        return released


def _owner(svc: Mapping[str, Any]) -> dict[str, str]:
    md = svc.get("metadata") or {}
    return {"uid": str(md.get("uid", "")),
            "service": f"{md.get('namespace', '')}/{md.get('name', '')}"}


def service_owner(svc: Mapping[str, Any]) -> dict[str, str]:
    """What a reservation records of the Service holding it."""
    return _owner(svc)


def _owner_uid(value: bytes) -> str:
    try:
        return str(orjson.loads(value).get("uid", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _held(services: list[dict[str, Any]]
          ) -> Iterator[tuple[dict[str, Any], list[str], list[int]]]:
    for svc in services:
        spec = svc.get("spec") or {}
        ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP", "")]
               if ip and ip != "None"]
        ports = [int(p["nodePort"]) for p in spec.get("ports") or () if p.get("nodePort")]
        yield svc, ips, ports
