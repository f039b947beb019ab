"""Service ClusterIP (10.96.0.0/12) and NodePort (30000-32767) allocation."""

from __future__ import annotations

import ipaddress
import random

from kybernetes.api.errors import FieldError


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

    def allocate(self, want: str = "") -> str:
        if want:
            if not self.contains(want):
                raise AllocationError(FieldError.invalid(
                    "spec.clusterIPs", [want],
                    f"failed to allocate IP {want}: the provided IP ({want}) is not in the valid "
                    f"range. The range of valid IPs is {self.net}"))
            off = int(ipaddress.ip_address(want)) - self._base
            if off in self._used:
                raise AllocationError(FieldError.invalid(
                    "spec.clusterIPs", [want],
                    f"failed to allocate IP {want}: provided IP is already allocated"))
            self._used.add(off)
            return want
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

    def allocate(self, want: int = 0, *, path: str = "spec.ports[0].nodePort") -> int:
        if want:
            if not self.low <= want <= self.high:
                raise AllocationError(FieldError.invalid(
                    path, want, f"provided port is not in the valid range. The range of valid "
                    f"ports is {self.low}-{self.high}"))
            if want in self._used:
                raise AllocationError(FieldError.invalid(
                    path, want, "provided port is already allocated"))
            self._used.add(want)
            return want
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
