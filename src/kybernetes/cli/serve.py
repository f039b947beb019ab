"""``kyb server``: the control plane and the components that run beside it."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kybernetes.api import quantity
from kybernetes.apiserver.server import ControlPlane

if TYPE_CHECKING:
    from kybernetes.kubelet.fakenodes import FakeNodeSpec
    from kybernetes.scheduler.config import SchedulerConfiguration

log = logging.getLogger(__name__)


@dataclass
class AgentOptions:
    node_name: str = ""
    port: int = 10250
    fake_gpus: int = 0
    taints: list[str] = field(default_factory=list)
    address: str = ""
    pod_cidr: str = "10.42.0.0/24"
    log_max_size: str = "10Mi"
    log_max_files: int = 5
    eviction_hard: str = ""
    eviction_period: float = 10.0


@dataclass
class FakeNodeOptions:
    """``kyb server --fake-nodes ...``: simulated nodes (kybernetes.kubelet.fakenodes)."""

    count: int = 0
    cpu: str = "32"
    memory: str = "256Gi"
    gpus: int = 0
    pods: int = 110
    labels: list[str] = field(default_factory=list)
    list_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.count > 0 or self.list_file is not None

    def nodes(self) -> list[FakeNodeSpec]:
        """The nodes to simulate (raises ``NodeListError`` when the options are invalid)."""
        from kybernetes.kubelet.fakenodes import FakeNodeSpec, build_nodes, parse_labels

        template = FakeNodeSpec("", cpu=self.cpu, memory=self.memory, gpus=self.gpus,
                                pods=self.pods, labels=parse_labels(self.labels))
        return build_nodes(count=self.count, template=template, list_file=self.list_file)


async def _start_fake_nodes(client: Any, opts: FakeNodeOptions) -> Callable[[], Awaitable[None]]:
    from kybernetes.kubelet.fakenodes import FakeNodes

    fake = FakeNodes(client, opts.nodes())
    await fake.start()  # registration goes on in the background
    return fake.stop


async def _start_agent(client: Any, data_dir: Path, opts: AgentOptions, *, address: str,
                       control_plane: bool) -> Callable[[], Awaitable[None]]:
    from kybernetes.kubelet.agent import NodeAgent
    from kybernetes.kubelet.node import NodeConfig, default_node_name, parse_taints

    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = NodeConfig(name=opts.node_name or default_node_name(), data_dir=data_dir,
                     address=opts.address or address, port=opts.port, pod_cidr=opts.pod_cidr,
                     fake_gpus=opts.fake_gpus, taints=parse_taints(opts.taints),
                     control_plane=control_plane,
                     log_max_size=quantity.value(opts.log_max_size),
                     log_max_files=opts.log_max_files, eviction_hard=opts.eviction_hard,
                     eviction_period=opts.eviction_period,
                     bind_address="127.0.0.1" if (opts.address or address).startswith("127.")
                     else "0.0.0.0")
    node_agent = NodeAgent(client, cfg)
    await node_agent.start()
    return node_agent.stop


async def run_agent(*, server_url: str, token: str, ca_file: Path | None, data_dir: Path,
                    opts: AgentOptions) -> int:
    """``kyb agent``: this machine as a node of a remote control plane."""
    from kybernetes.cli.main import install_stop_signals
    from kybernetes.client import Client, Config

    stop = asyncio.Event()
    install_stop_signals(stop)
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config.for_server(server_url, token, ca_file.read_bytes() if ca_file else None)
    cfg.insecure = ca_file is None
    client = Client(cfg)
    try:
        stop_agent = await _start_agent(client, data_dir, opts, address=opts.address or
                                        default_address(), control_plane=False)
    except Exception as e:
        log.error("cannot join %s: %s", server_url, e)
        await client.aclose()
        return 1
    print(f"node agent joined {server_url}", flush=True)
    await stop.wait()
    await stop_agent()
    await client.aclose()
    return 0


def default_address() -> str:
    from kybernetes.apiserver.server import default_advertise_address

    return default_advertise_address()


async def run_server(*, data_dir: Path, port: int, host: str, advertise_address: str,
                     fsync: bool, agent: AgentOptions | None = None,
                     fake_nodes: FakeNodeOptions | None = None,
                     scheduler: bool = True,
                     scheduler_config: SchedulerConfiguration | None = None,
                     node_monitor_grace_period: float = 40.0) -> int:
    from kybernetes.cli.main import install_stop_signals

    stop = asyncio.Event()
    install_stop_signals(stop)
    cp = ControlPlane(data_dir=data_dir, port=port, host=host,
                      advertise_address=advertise_address, fsync=fsync)
    try:
        await cp.start()
    except OSError as e:
        log.error("cannot start the API server: %s", e)
        await cp.stop()
        return 1
    components = await start_components(cp, agent, fake_nodes=fake_nodes, scheduler=scheduler,
                                        scheduler_config=scheduler_config,
                                        node_monitor_grace_period=node_monitor_grace_period)
    print(f"kybernetes is ready: export KUBECONFIG={cp.kubeconfig_path}", flush=True)
    await stop.wait()
    log.info("shutting down")
    for stop_component in reversed(components):
        log.info("stopping %s", getattr(stop_component, "__qualname__", stop_component))
        await stop_component()
    log.info("components stopped")
    await cp.stop()
    return 0


async def start_components(cp: ControlPlane, agent: AgentOptions | None = None, *,
                           fake_nodes: FakeNodeOptions | None = None,
                           scheduler: bool = True,
                           scheduler_config: SchedulerConfiguration | None = None,
                           node_monitor_grace_period: float = 40.0
                           ) -> list[Callable[[], Awaitable[None]]]:
    """Controllers and other components that talk to the API server; returns stoppers.

    Imported here, after the API server is ready, and on a thread so that the event
    loop keeps answering requests meanwhile.
    """
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.garbagecollector")
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.namespace")
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.persistentvolume")
    from kybernetes.client import Client
    from kybernetes.controllers.garbagecollector import GarbageCollector
    from kybernetes.controllers.namespace import NamespaceController
    from kybernetes.controllers.persistentvolume import PersistentVolumeController

    client = Client.from_kubeconfig(cp.kubeconfig_path)
    gc = GarbageCollector(client)
    namespaces = NamespaceController(client)
    volumes = PersistentVolumeController(client)
    await gc.start()
    await namespaces.start()
    await volumes.start()
    stoppers: list[Callable[[], Awaitable[None]]] = [client.aclose, gc.stop, namespaces.stop,
                                                     volumes.stop]
    # ReplicaSets and Deployments: one pod and one ReplicaSet informer shared by both
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.deployment")
    from kybernetes.controllers.deployment import DeploymentController
    from kybernetes.controllers.replicaset import ReplicaSetController

    replicasets = ReplicaSetController(client)
    deployments = DeploymentController(client, pods=replicasets.pods,
                                       replicasets=replicasets.replicasets)
    await replicasets.start()
    await deployments.start()
    stoppers += [replicasets.stop, deployments.stop]
    # StatefulSets and DaemonSets: sharing the ReplicaSet controller's pod informer
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.daemonset")
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.statefulset")
    from kybernetes.controllers.daemonset import DaemonSetController
    from kybernetes.controllers.statefulset import StatefulSetController

    for workload in (StatefulSetController(client, pods=replicasets.pods),
                     DaemonSetController(client, pods=replicasets.pods)):
        await workload.start()
        stoppers.append(workload.stop)
    # Jobs, CronJobs and the TTL-after-finished cleanup: one Job informer shared by the three
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.cronjob")
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.job")
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.ttlafterfinished")
    from kybernetes.client import Informer
    from kybernetes.controllers.cronjob import CronJobController
    from kybernetes.controllers.job import JobController
    from kybernetes.controllers.ttlafterfinished import TTLAfterFinishedController

    jobs_informer = Informer(client, "batch/v1", "jobs")
    # the pod failure back-off's base (10 s); tests shorten it
    job_backoff = float(os.environ.get("KYB_JOB_BACKOFF_BASE_SECONDS") or 10.0)
    job_ctl = JobController(client, jobs=jobs_informer, backoff_base=job_backoff)
    cronjob_ctl = CronJobController(client, jobs=jobs_informer)
    ttl_ctl = TTLAfterFinishedController(client, jobs=jobs_informer)
    for start_controller in (job_ctl.start, cronjob_ctl.start, ttl_ctl.start):
        await start_controller()
    jobs_informer.start()
    stoppers += [jobs_informer.stop, job_ctl.stop, cronjob_ctl.stop, ttl_ctl.stop]
    # Endpoints, EndpointSlices and PodDisruptionBudget status: one pod and one Service
    # informer shared by the three
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.endpointslice")
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.disruption")
    from kybernetes.controllers.disruption import DisruptionController
    from kybernetes.controllers.endpoints import EndpointsController
    from kybernetes.controllers.endpointslice import EndpointSliceController

    ep_pods = Informer(client, "v1", "pods")
    ep_services = Informer(client, "v1", "services")
    endpoints_ctl = EndpointsController(client, pods=ep_pods, services=ep_services)
    slices_ctl = EndpointSliceController(client, pods=ep_pods, services=ep_services)
    disruption_ctl = DisruptionController(client, pods=ep_pods)
    for start_controller in (endpoints_ctl.start, slices_ctl.start, disruption_ctl.start):
        await start_controller()
    ep_pods.start()
    ep_services.start()
    stoppers += [ep_pods.stop, ep_services.stop, endpoints_ctl.stop, slices_ctl.stop,
                 disruption_ctl.stop]
    # node lifecycle and taint eviction: silent nodes go Unknown and tainted, pods evicted
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.nodelifecycle")
    from kybernetes.controllers.nodelifecycle import NodeLifecycleController

    node_lifecycle = NodeLifecycleController(client, grace_period=node_monitor_grace_period,
                                             pods=replicasets.pods)
    await node_lifecycle.start()
    stoppers.append(node_lifecycle.stop)
    # ResourceQuota status: hard and used, released as objects go (shares the pod informer)
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.resourcequota")
    from kybernetes.controllers.resourcequota import ResourceQuotaController

    quota_ctl = ResourceQuotaController(client, pods=replicasets.pods)
    await quota_ctl.start()
    stoppers.append(quota_ctl.stop)
    if agent is not None:
        await asyncio.to_thread(importlib.import_module, "kybernetes.kubelet.agent")
        try:
            stoppers.append(await _start_agent(client, cp.data_dir / "agent", agent,
                                               address=cp.advertise_address,
                                               control_plane=True))
        except OSError as e:
            # e.g. the agent's port is taken: the control plane is still worth serving
            log.error("the node agent could not start (%s); serving the API without a "
                      "node", e)
    if fake_nodes is not None and fake_nodes.enabled:
        stoppers.append(await _start_fake_nodes(client, fake_nodes))
    if scheduler:
        await asyncio.to_thread(importlib.import_module, "kybernetes.scheduler.scheduler")
        from kybernetes.scheduler.config import import_plugins
        from kybernetes.scheduler.scheduler import Scheduler

        await asyncio.to_thread(import_plugins)
        sched = Scheduler(client, scheduler_config)
        await sched.start()
        stoppers.append(sched.stop)
    return stoppers
