"""The service proxy: Services and EndpointSlices, watched, kept as kernel DNAT rules.

Every change to a Service or EndpointSlice marks the rules stale; a task then rebuilds
them from the informers' caches (:mod:`kybernetes.proxy.rules`) and installs them in
one nft transaction, coalescing the changes that arrive meanwhile. A pod that turns
unready or is deleted leaves its slice, and so the rules, within one such sync.

Where the kernel path cannot be used (not root, no ``nft``) or ``mode`` is
``userspace``, the same syncs reconcile the listeners of
:mod:`kybernetes.proxy.userspace` instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.client import Client, EventHandler, Informer, object_key, shared_informer
from kybernetes.proxy import host
from kybernetes.proxy.rules import (
    Installed,
    ServicePort,
    endpoint_connections,
    render,
    service_ports,
)
from kybernetes.proxy.traffic import shared as traffic_shared
from kybernetes.proxy.userspace import UserspaceProxy

log = logging.getLogger(__name__)
Obj = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SERVICE_INDEX = "proxy/service-name"
COALESCE_SECONDS = 0.01
COUNTERS_SECONDS = 2.0
"""How often the kernel path's connection counters are read (for the request rates)."""
RETRY_SECONDS = 1.0
MODES = ("auto", "nftables", "userspace")
"""``auto``: the kernel path (nftables) where it can be used, else userspace."""


def _slice_service(obj: Obj) -> list[str]:
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{meta.get('namespace', '')}/{name}"] if name else []


class ServiceProxy:
    """kube-proxy for one node: ``start`` installs the rules, ``stop`` removes them."""

    def __init__(self, client: Client, *, node_name: str, data_dir: Path,
                 service_cidr: str = "10.96.0.0/12", mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r} (one of {', '.join(MODES)})")
        self.client = client
        self.mode = mode
        self.userspace: UserspaceProxy | None = None
        self.node_name = node_name
        self.service_cidr = service_cidr
        self.table = host.table_name(data_dir)
        self.services: Informer = shared_informer(client, "v1", "services")
        self.slices: Informer = shared_informer(client, "discovery.k8s.io/v1",
                                                "endpointslices")
        self._dirty = asyncio.Event()
        self._handlers: list[tuple[Informer, EventHandler]] = []
        self._task: asyncio.Task[None] | None = None
        self._counter_task: asyncio.Task[None] | None = None
        self._packets: dict[str, int] = {}
        self._installed: Installed | None = None
        self._last: list[ServicePort] | None = None
        self.syncs = 0
        self.traffic = traffic_shared()
        self.last_sync = 0.0

    async def start(self) -> bool:
        """Watch Services and slices; install the rules if this machine can (returns
        whether it does: without, the caches still serve the cluster DNS)."""
        self.slices.add_index(SERVICE_INDEX, _slice_service)
        mark = self._dirty.set
        for inf in (self.services, self.slices):
            self._handlers.append((inf, inf.add_handler(
                on_add=lambda _o: mark(), on_update=lambda _o, _n: mark(),
                on_delete=lambda _o: mark())))
            inf.start()
        for inf in (self.services, self.slices):
            await inf.wait_synced()
        ok, why = host.available()
        if self.mode == "userspace" or (not ok and self.mode == "auto"):
            await self._start_userspace(why)
            return True
        if not ok:
            log.warning("%s: Services' virtual IPs will not answer on this node", why)
            return False
        self.mode = "nftables"
        await asyncio.to_thread(host.ensure_service_route, self.service_cidr)
        self._dirty.set()
        self._task = spawn(self._run(), name="service-proxy")
        self._counter_task = spawn(self._read_counters(), name="service-proxy-counters")
        return True

    async def _start_userspace(self, why: str) -> None:
        self.mode = "userspace"
        vips = os.geteuid() == 0
        if vips:
            error = await asyncio.to_thread(host.ensure_local_service_range, self.table,
                                            self.service_cidr)
            if error:
                log.warning("cannot route the service range locally (%s): Services' "
                            "virtual IPs will not answer on this node", error)
                vips = False
        else:
            log.warning("%s: Services answer on their NodePorts and load-balancer "
                        "addresses only (their virtual IPs need root)", why)
        if why:
            log.info("%s: the service proxy forwards in userspace", why)
        self.userspace = UserspaceProxy(node=self.node_name, traffic=self.traffic, vips=vips,
                                        service_cidr=self.service_cidr)
        self._dirty.set()
        self._task = spawn(self._run_userspace(), name="service-proxy-userspace")

    async def _run_userspace(self) -> None:
        assert self.userspace is not None
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._dirty.clear()
            await self.userspace.update(self.ports())
            self.syncs += 1
            self.last_sync = time.time()

    async def stop(self) -> None:
        for inf, handler in self._handlers:
            inf.remove_handler(handler)
            await inf.stop()
        self._handlers = []
        if self._task is None:
            return
        if self.userspace is not None:
            await cancel_and_wait(self._task)
            self._task = None
            await self.userspace.close()
            self.userspace = None
            await asyncio.to_thread(host.remove_local_service_range, self.table,
                                    self.service_cidr)
            return
        await cancel_and_wait(self._task, self._counter_task)
        self._task = self._counter_task = None
        await asyncio.to_thread(host.remove, self.table, self.service_cidr)

    def ports(self) -> list[ServicePort]:
        out: list[ServicePort] = []
        for svc in self.services.list():
            slices = self.slices.by_index(SERVICE_INDEX, object_key(svc))
            out += service_ports(svc, slices)
        return out

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._dirty.clear()
            ports = self.ports()
            if ports == self._last:
                continue
            script, installed = render(ports, table=self.table, node=self.node_name,
                                       service_cidr=self.service_cidr,
                                       previous=self._installed)
            t0 = time.monotonic()
            error = await asyncio.to_thread(self._apply, script)
            if error:
                log.error("cannot install the service rules: %s", error)
                self._installed = None  # start the table afresh next time
                self._last = None
                await asyncio.sleep(RETRY_SECONDS)
                self._dirty.set()
                continue
            self._installed, self._last = installed, ports
            self.syncs += 1
            self.last_sync = time.time()
            log.debug("service rules synced: %d ports in %.1f ms", len(ports),
                      (time.monotonic() - t0) * 1000)

    async def _read_counters(self) -> None:
        """Add the new connections the kernel DNATed to each Service's request count."""
        while True:
            await asyncio.sleep(COUNTERS_SECONDS)
            installed = self._installed
            if installed is None or not installed.counters:
                continue
            now = await asyncio.to_thread(host.counters, self.table)
            # per pod first: the loop below moves the readings on
            for (ns, pod), new in endpoint_connections(installed, self._packets, now).items():
                self.traffic.add_pod_requests(ns, pod, new)
            for name, packets in now.items():
                service = installed.counters.get(name)
                before = self._packets.get(name)
                self._packets[name] = packets
                if service is None or before is None:
                    continue
                new = packets - before if packets >= before else packets
                ns, _, svc = service.partition("/")
                self.traffic.add_connections(ns, svc, new)

    @staticmethod
    def _apply(script: str) -> str:
        error = host.apply(script)
        if not error:
            host.allow_localhost_node_ports()
        return error
