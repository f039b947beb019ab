"""The node agent: registers the Node, keeps its Lease and status fresh.

    agent = NodeAgent(client, NodeConfig(name="gpu-1", data_dir=..., address=..., port=10250))
    await agent.start()
    ...
    await agent.stop()
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339_micro
from kybernetes.client import Client
from kybernetes.kubelet.eviction import DEFAULT_HARD, EvictionManager, parse_thresholds
from kybernetes.kubelet.netpol import NetworkPolicyEnforcer
from kybernetes.kubelet.node import NodeConfig, node_object, node_status
from kybernetes.kubelet.pods import PodManager
from kybernetes.kubelet.provisioner import LocalPathProvisioner
from kybernetes.kubelet.routes import NodeRoutes
from kybernetes.kubelet.server import AgentAPI

log = logging.getLogger(__name__)
Obj = dict[str, Any]

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
LEASE_RENEW_INTERVAL = 10.0
STATUS_INTERVAL = 60.0
"""Node status is rewritten this often even when nothing changed (upstream: 5 min)."""


class NodeAgent:
    def __init__(self, client: Client, cfg: NodeConfig, *, clock: Clock = SYSTEM_CLOCK,
                 run_pods: bool = True) -> None:
        self.client = client
        self.cfg = cfg
        self.clock = clock
        self.run_pods = run_pods
        self.node: Obj | None = None
        self.pods: PodManager | None = None
        self.provisioner: LocalPathProvisioner | None = None
        self.eviction: EvictionManager | None = None
        self.api: AgentAPI | None = None
        self.routes: NodeRoutes | None = None
        self.network_policy: NetworkPolicyEnforcer | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # -- the Node ------------------------------------------------------------------------

    async def register(self) -> Obj:
        """Create the Node, or take over the one already there (an agent restart)."""
        want = node_object(self.cfg, self.clock.now())
        try:
            node = await self.client.create("v1", "nodes", want)
            log.info("registered node %s", self.cfg.name)
        except StatusError as e:
            if e.code != 409:
                raise
            node = await self.client.get("v1", "nodes", self.cfg.name)
            # labels and taints we were started with win over stale ones
            patch: Obj = {"metadata": {"labels": want["metadata"]["labels"]}}
            if self.cfg.taints:
                patch["spec"] = {"taints": self.cfg.taints}
            try:
                node = await self.client.patch("v1", "nodes", self.cfg.name, patch,
                                               patch_type="strategic")
            except StatusError as e:
                if e.code != 403:
                    raise
                # NodeRestriction: a node's own credential may not change its taints
                # or restricted labels once registered (upstream kubelet sets them only
                # when it creates the Node)
                log.warning("node %s keeps its labels and taints: %s", self.cfg.name,
                            e.message)
        self.node = node
        await self.update_status()
        return node

    async def update_status(self) -> None:
        assert self.node is not None
        pressure = self.eviction.pressure if self.eviction is not None else {}
        status = node_status(self.cfg, self.clock.now(), self.node.get("status"), **pressure)
        self.node = await self.client.patch("v1", "nodes", self.cfg.name, {"status": status},
                                            patch_type="merge", subresource="status")

    # -- the Lease -----------------------------------------------------------------------

    async def renew_lease(self) -> None:
        now = rfc3339_micro(self.clock.now())
        try:
            lease = await self.client.get("coordination.k8s.io/v1", "leases", self.cfg.name,
                                          namespace=LEASE_NAMESPACE)
        except StatusError as e:
            if e.code != 404:
                raise
            assert self.node is not None
            await self.client.create("coordination.k8s.io/v1", "leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.cfg.name, "namespace": LEASE_NAMESPACE,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": self.cfg.name,
                                                  "uid": self.node["metadata"]["uid"]}]},
                "spec": {"holderIdentity": self.cfg.name,
                         "leaseDurationSeconds": LEASE_DURATION, "renewTime": now}})
            return
        lease["spec"]["renewTime"] = now
        lease["spec"]["holderIdentity"] = self.cfg.name
        await self.client.update("coordination.k8s.io/v1", "leases", lease,
                                 namespace=LEASE_NAMESPACE)

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self.renew_lease()
            except Exception as e:
                log.warning("node lease renewal failed: %s", e)
            await self.clock.sleep(LEASE_RENEW_INTERVAL)

    async def _status_loop(self) -> None:
        while True:
            await self.clock.sleep(STATUS_INTERVAL)
            try:
                await self.update_status()
            except Exception as e:
                log.warning("node status update failed: %s", e)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.register()
        await self.renew_lease()
        self._tasks = [spawn(self._lease_loop(), name=f"node-lease:{self.cfg.name}"),
                       spawn(self._status_loop(), name=f"node-status:{self.cfg.name}")]
        if self.run_pods:
            assert self.node is not None
            self.pods = PodManager(
                self.client, node_name=self.cfg.name, node_address=self.cfg.address,
                data_dir=self.cfg.data_dir, pod_cidr=self.cfg.pod_cidr,
                node_allocatable=(self.node.get("status") or {}).get("allocatable") or {},
                fake_gpus=self.cfg.fake_gpus, log_max_size=self.cfg.log_max_size,
                log_max_files=self.cfg.log_max_files, network_pool=self.cfg.network_pool)
            if self.pods.network.available():
                # before the pods start: the rules are in place for those adopted
                self.network_policy = NetworkPolicyEnforcer(
                    self.client, pod_cidr=self.cfg.pod_cidr, data_dir=self.cfg.data_dir)
                await self.network_policy.start()
            self.api = AgentAPI(self.pods, token=self.client.config.token or "",
                                client_ca=self.client.config.ca_data)
            await self.api.start(self.cfg.bind_address, self.cfg.port,
                                 self.cfg.data_dir / "pki")
            await self.pods.start()
            if self.pods.network.available():
                self.routes = NodeRoutes(self.client, node_name=self.cfg.name)
                await self.routes.start()
            self.eviction = EvictionManager(
                self.pods, self.cfg.data_dir,
                parse_thresholds(self.cfg.eviction_hard or DEFAULT_HARD),
                interval=self.cfg.eviction_period)
            self.eviction.on_change = self.update_status
            self._tasks.append(spawn(self.eviction.run(), name=f"eviction:{self.cfg.name}"))
            self.provisioner = LocalPathProvisioner(self.client, node_name=self.cfg.name,
                                                    root=self.cfg.data_dir / "volumes")
            await self.provisioner.start()

    async def stop(self) -> None:
        """Stop the agent; the pods it runs keep running and are adopted on restart."""
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        if self.routes is not None:
            await self.routes.stop()
        if self.provisioner is not None:
            await self.provisioner.stop()
        if self.network_policy is not None:
            await self.network_policy.stop()
        if self.pods is not None:
            await self.pods.stop()
        if self.api is not None:
            await self.api.stop()
