"""``kyb server``: the control plane and the components that run beside it."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api import quantity
from kybernetes.apiserver.server import ControlPlane

if TYPE_CHECKING:
    from kybernetes.kubelet.fakenodes import FakeNodeSpec
    from kybernetes.scheduler.config import SchedulerConfiguration

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
"""How long ``kyb server`` waits for each component (and the API server) to stop."""


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
    network_pool: int = 0
    ingress_http_port: int = 0
    ingress_https_port: int = 0
    """The ingress controller runs beside the server's own node agent (0: not here)."""
    proxy_mode: str = "auto"


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
    lease_interval: float = 30.0

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

    fake = FakeNodes(client, opts.nodes(), lease_interval=opts.lease_interval)
    await fake.start()  # registration goes on in the background
    return fake.stop


async def _start_agent(client: Any, data_dir: Path, opts: AgentOptions, *, address: str,
                       control_plane: bool, api: Any = None, dashboard: Any = None
                       ) -> Callable[[], Awaitable[None]]:
    from kybernetes.kubelet.agent import NodeAgent
    from kybernetes.kubelet.node import NodeConfig, default_node_name, parse_taints

    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = NodeConfig(name=opts.node_name or default_node_name(), data_dir=data_dir,
                     address=opts.address or address, port=opts.port, pod_cidr=opts.pod_cidr,
                     fake_gpus=opts.fake_gpus, taints=parse_taints(opts.taints),
                     control_plane=control_plane,
                     log_max_size=quantity.value(opts.log_max_size),
                     log_max_files=opts.log_max_files, eviction_hard=opts.eviction_hard,
                     eviction_period=opts.eviction_period, network_pool=opts.network_pool,
                     bind_address="127.0.0.1" if (opts.address or address).startswith("127.")
                     else "0.0.0.0")
    node_agent = NodeAgent(client, cfg)
    await node_agent.start()
    stop_proxy = await _start_proxy(client, data_dir, cfg.name, opts, address=cfg.address,
                                    api=api, dashboard=dashboard)

    async def stop() -> None:
        await stop_proxy()
        await node_agent.stop()

    return stop


async def _start_proxy(client: Any, data_dir: Path, node_name: str, opts: AgentOptions, *,
                       address: str, api: Any = None, dashboard: Any = None
                       ) -> Callable[[], Awaitable[None]]:
    """The node's service proxy (Services' virtual IPs, NodePorts, load balancers),
    cluster DNS (on the pod gateway address, which the node agent gives pods as their
    nameserver) and, if asked for, the ingress controller. With ``api`` (the server's
    own node), the request rates they measure are its external metrics (and, with
    ``dashboard``, its charts')."""
    import ipaddress
    import os

    from kybernetes.proxy.dns import ClusterDNS, Records
    from kybernetes.proxy.service import SERVICE_INDEX, ServiceProxy

    proxy = ServiceProxy(client, node_name=node_name, data_dir=data_dir, mode=opts.proxy_mode)
    await proxy.start()
    stoppers: list[Callable[[], Awaitable[None]]] = [proxy.stop]
    if api is not None:
        from kybernetes.proxy.traffic import custom_request_rates, pod_lister, request_rates

        api.external_metrics = request_rates(proxy.services, proxy.traffic)
        api.custom_metrics = custom_request_rates(proxy.services, proxy.traffic,
                                                  pod_lister(client))
    if dashboard is not None:
        dashboard.traffic = proxy.traffic
    if os.geteuid() == 0:
        gateway = str(next(ipaddress.ip_network(opts.pod_cidr).hosts()))
        dns = ClusterDNS(Records(proxy.services, proxy.slices, SERVICE_INDEX), address=gateway)
        try:
            await dns.start()
            stoppers.append(dns.stop)
        except OSError as e:
            log.error("cluster DNS cannot listen on %s:53: %s", gateway, e)
    if opts.ingress_http_port or opts.ingress_https_port:
        from kybernetes.proxy.ingress import IngressController

        ingress = IngressController(
            client, services=proxy.services, slices=proxy.slices, slice_index=SERVICE_INDEX,
            traffic=proxy.traffic, address=address, http_port=opts.ingress_http_port,
            https_port=opts.ingress_https_port, state_dir=data_dir / "ingress",
            bind="127.0.0.1" if address.startswith("127.") else "0.0.0.0")
        try:
            await ingress.start()
            stoppers.append(ingress.stop)
        except OSError as e:
            log.error("the ingress controller cannot listen: %s", e)
            await ingress.stop()

    async def stop() -> None:
        for stop_one in reversed(stoppers):
            await stop_one()

    return stop


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
    if is_bootstrap_token(token):
        joined = await _node_credential(cfg, data_dir, opts, stop)
        if joined is None:
            return 1 if not stop.is_set() else 0
        cfg = joined
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


def is_bootstrap_token(token: str) -> bool:
    from kybernetes.api.certificates import parse_bootstrap_token

    return parse_bootstrap_token(token) is not None


async def _node_credential(cfg: Any, data_dir: Path, opts: AgentOptions,
                           stop: asyncio.Event) -> Any:
    """TLS bootstrapping: the node's own certificate in place of the bootstrap token
    (None when stopped first or refused)."""
    from kybernetes.aio.tasks import cancel_and_wait, spawn
    from kybernetes.kubelet.credential import node_credential
    from kybernetes.kubelet.node import default_node_name

    if cfg.insecure:
        log.warning("no --ca-file: the API server is not verified, and its requests to "
                    "this agent (logs, exec, port-forward) cannot be authenticated")
    task = spawn(node_credential(cfg, data_dir=data_dir,
                                 node_name=opts.node_name or default_node_name()),
                 name="tls-bootstrap")
    stopping = spawn(stop.wait(), name="stop-signal")
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    await cancel_and_wait(stopping)
    if not task.done():
        await cancel_and_wait(task)
        return None
    try:
        return task.result()
    except Exception as e:
        log.error("cannot join %s: %s", cfg.server, e)
        return None


def default_address() -> str:
    from kybernetes.apiserver.server import default_advertise_address

    return default_advertise_address()


@dataclass(frozen=True)
class ControllerOptions:
    """The controllers' settings (the keyword arguments of ``start_controllers``)."""

    node_monitor_grace_period: float = 40.0
    hpa_sync_period: float = 15.0
    hpa_downscale_stabilization: float = 300.0


@dataclass
class LeaderElectionOptions:
    """``--leader-elect*``: the controllers run only in the holder of a Lease."""

    enabled: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    name: str = "kube-controller-manager"
    namespace: str = "kube-system"


def server_identity(data_dir: Path) -> str:
    """The server's candidate identity, ``<hostname>_<uuid>``, kept in the data dir:
    restarted after a crash, a server takes its own lease back at once instead of
    waiting for it to expire."""
    import socket
    import uuid

    path = data_dir / "leader-election-id"
    try:
        uid = path.read_text().strip()
    except OSError:
        uid = ""
    if not uid:
        uid = str(uuid.uuid4())
        try:
            path.write_text(uid + "\n")
        except OSError as e:
            log.warning("cannot keep the leader election identity in %s: %s", path, e)
    return f"{socket.gethostname()}_{uid}"


async def start_elected_controllers(client: Any, opts: LeaderElectionOptions, *,
                                    identity: str = "", controller_options: ControllerOptions,
                                    campaign_again: bool) -> Callable[[], Awaitable[None]]:
    """:func:`run_elected_controllers` in the background; returns its stopper (which
    stops the controllers and releases the lease)."""

    task = spawn(run_elected_controllers(client, opts, identity=identity,
                                         controller_options=controller_options,
                                         campaign_again=campaign_again),
                 name="controllers-election")

    async def stop() -> None:
        await cancel_and_wait(task)

    return stop


async def run_elected_controllers(client: Any, opts: LeaderElectionOptions, *,
                                  identity: str, controller_options: ControllerOptions,
                                  campaign_again: bool) -> None:
    """Campaign for the controllers' Lease; run the controllers while leading. When
    leadership is lost the controllers stop and, if ``campaign_again``, the campaign
    starts over, else this returns. Cancelled, it stops the controllers and releases
    the lease."""
    async def start() -> list[Callable[[], Awaitable[None]]]:
        from kybernetes.controllers.manager import start_controllers

        return await start_controllers(client, **asdict(controller_options))

    await run_elected(client, opts, identity=identity, start=start,
                      component="kube-controller-manager", what="the controllers",
                      campaign_again=campaign_again)


async def run_elected(client: Any, opts: LeaderElectionOptions, *, identity: str,
                      start: Callable[[], Awaitable[list[Callable[[], Awaitable[None]]]]],
                      component: str, what: str, campaign_again: bool) -> None:
    """Campaign for ``opts``' Lease; run what ``start`` starts while leading (stopped with
    the stoppers it returns when leadership is lost, or when cancelled, which also
    releases the lease)."""
    from kybernetes.client.leaderelection import LeaderElector

    stoppers: list[Callable[[], Awaitable[None]]] = []

    async def started() -> None:
        log.info("started leading: starting %s", what)
        stoppers.extend(await start())
        log.info("%s started", what)

    async def stopped() -> None:
        log.info("stopped leading: stopping %s", what)
        while stoppers:
            await stoppers.pop()()

    elector = LeaderElector(client, name=opts.name, namespace=opts.namespace,
                            identity=identity, lease_duration=opts.lease_duration,
                            renew_deadline=opts.renew_deadline,
                            retry_period=opts.retry_period, on_started_leading=started,
                            on_stopped_leading=stopped, component=component)
    log.info("leader election identity %s for %s", elector.identity, opts.name)
    while True:
        await elector.run()
        if not campaign_again:
            return
        log.error("leaderelection lost: %s stopped; campaigning again", what)


async def run_controller_manager(*, kubeconfig: Path | None, election: LeaderElectionOptions,
                                 controller_options: ControllerOptions) -> int:
    """``kyb controller-manager``: the controllers in a process of their own, acting only
    while it holds the Lease. Like kube-controller-manager, it exits 1 ("leaderelection
    lost") when it loses the lease, and releases it when stopped by SIGTERM."""
    async def start(client: Any) -> list[Callable[[], Awaitable[None]]]:
        from kybernetes.controllers.manager import start_controllers

        return await start_controllers(client, **asdict(controller_options))

    return await _run_elected_process(kubeconfig, election, start,
                                      component="kube-controller-manager",
                                      what="the controllers")


async def _run_elected_process(
        kubeconfig: Path | None, election: LeaderElectionOptions,
        start: Callable[[Any], Awaitable[list[Callable[[], Awaitable[None]]]]], *,
        component: str, what: str) -> int:
    """A component in a process of its own (``kyb controller-manager``, ``kyb
    scheduler``): started by ``start(client)`` while this process holds ``election``'s
    Lease (or at once without election) until SIGTERM; 1 when the lease is lost."""
    from kybernetes.cli.main import install_stop_signals
    from kybernetes.client import Client, KubeconfigError

    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        client = Client.from_kubeconfig(kubeconfig)
    except (KubeconfigError, OSError) as e:
        log.error("cannot load the kubeconfig: %s", e)
        return 1
    try:
        if not election.enabled:
            stoppers = await start(client)
            print(f"{what} started (no leader election)", flush=True)
            try:
                await stop.wait()
            finally:
                while stoppers:
                    await stoppers.pop()()
            return 0
        campaign = spawn(run_elected(client, election, identity="",
                                     start=lambda: start(client), component=component,
                                     what=what, campaign_again=False),
                         name=f"{component}-election")
        stopping = spawn(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait({campaign, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if campaign in done:
            await cancel_and_wait(stopping)
            log.error("leaderelection lost")
            return 1
        log.info("shutting down")
        await cancel_and_wait(campaign)
        return 0
    finally:
        await client.aclose()


async def run_scheduler(*, kubeconfig: Path | None, election: LeaderElectionOptions,
                        config: SchedulerConfiguration | None) -> int:
    """``kyb scheduler``: the scheduler in a process of its own; with leader election it
    schedules only while it holds the ``kube-scheduler`` Lease and, like kube-scheduler,
    exits 1 when it loses it."""
    from kybernetes.scheduler.config import import_plugins
    from kybernetes.scheduler.scheduler import Scheduler

    import_plugins()

    async def start(client: Any) -> list[Callable[[], Awaitable[None]]]:
        sched = Scheduler(client, config)
        await sched.start()
        return [sched.stop]

    return await _run_elected_process(kubeconfig, replace(election, name="kube-scheduler"),
                                      start, component="kube-scheduler", what="the scheduler")


async def run_server(*, data_dir: Path, port: int, host: str, advertise_address: str,
                     fsync: bool, agent: AgentOptions | None = None,
                     fake_nodes: FakeNodeOptions | None = None,
                     scheduler: bool = True,
                     scheduler_config: SchedulerConfiguration | None = None,
                     controllers: bool = True,
                     election: LeaderElectionOptions | None = None,
                     controller_options: ControllerOptions | None = None,
                     dashboard_interval: float = 5.0,
                     token_auth_file: Path | None = None, audit_log: Path | None = None,
                     audit_policy: Path | None = None,
                     encryption_config: Path | None = None, datastore: str = "",
                     etcd_tls: dict[str, Path] | None = None, join: bool = False,
                     token: str = "", toleration_seconds: tuple[int, int] = (300, 300)
                     ) -> int:
    from kybernetes.apiserver.join import JoinError
    from kybernetes.cli.main import install_stop_signals
    from kybernetes.store import StoreError

    stop = asyncio.Event()
    install_stop_signals(stop)
    cp = ControlPlane(data_dir=data_dir, port=port, host=host,
                      advertise_address=advertise_address, fsync=fsync,
                      token_auth_file=token_auth_file, audit_log=audit_log,
                      audit_policy=audit_policy, encryption_config=encryption_config,
                      datastore=datastore, etcd_tls=etcd_tls, join=join, token=token,
                      toleration_seconds=toleration_seconds)
    try:
        await cp.start()
    except (OSError, StoreError, JoinError) as e:
        log.error("cannot start the API server: %s", e)
        await cp.stop()
        return 1
    components = await start_components(cp, agent, fake_nodes=fake_nodes, scheduler=scheduler,
                                        scheduler_config=scheduler_config,
                                        controllers=controllers, election=election,
                                        controller_options=controller_options,
                                        dashboard_interval=dashboard_interval)
    print(f"kybernetes is ready: export KUBECONFIG={cp.kubeconfig_path}", flush=True)
    print(f"to join a node: kyb agent --server https://{cp.advertise_address}:{cp.port} "
          f"--token $(cat {cp.join_token_path}) --ca-file "
          f"{cp.pki.ca_cert if cp.pki else ''}", flush=True)
    if datastore:
        print(f"to add a server: kyb server --datastore {datastore} --join --token "
              f"$(cat {cp.data_dir / 'pki' / 'server.token'})", flush=True)
    await stop.wait()
    log.info("shutting down")
    for stop_component in reversed(components):
        name = getattr(stop_component, "__qualname__", stop_component)
        log.info("stopping %s", name)
        try:  # a component that does not stop must not keep the process from exiting
            async with asyncio.timeout(STOP_TIMEOUT):
                await stop_component()
        except TimeoutError:
            log.error("%s did not stop in %.0f s: going on", name, STOP_TIMEOUT)
    log.info("components stopped")
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await cp.stop()
    except TimeoutError:
        log.error("the API server did not stop in %.0f s", STOP_TIMEOUT)
    return 0


async def start_components(cp: ControlPlane, agent: AgentOptions | None = None, *,
                           fake_nodes: FakeNodeOptions | None = None,
                           scheduler: bool = True,
                           scheduler_config: SchedulerConfiguration | None = None,
                           controllers: bool = True,
                           election: LeaderElectionOptions | None = None,
                           controller_options: ControllerOptions | None = None,
                           dashboard_interval: float = 5.0
                           ) -> list[Callable[[], Awaitable[None]]]:
    """Controllers and other components that talk to the API server; returns stoppers.

    Imported here, after the API server is ready, and on a thread so that the event
    loop keeps answering requests meanwhile. The controllers run only while this server
    leads (a ``kyb controller-manager`` may hold the Lease instead).
    """
    from kybernetes.client import Client

    # this server's own API app, called directly: no loopback TLS, HTTP or sockets
    client = Client.from_kubeconfig(cp.kubeconfig_path, app=cp.api)
    stoppers: list[Callable[[], Awaitable[None]]] = [client.aclose]
    dashboard = None
    if dashboard_interval > 0 and cp.api is not None:
        from kybernetes.dashboard import Dashboard

        dashboard = Dashboard(cp.api, interval=dashboard_interval)
        await dashboard.start()
        stoppers.append(dashboard.stop)
    if controllers:
        await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.manager")
        from kybernetes.controllers.manager import load_controllers

        await load_controllers()
        stoppers.append(await start_elected_controllers(
            client, election or LeaderElectionOptions(),
            identity=server_identity(cp.data_dir),
            controller_options=controller_options or ControllerOptions(), campaign_again=True))
    if agent is not None:
        await asyncio.to_thread(importlib.import_module, "kybernetes.kubelet.agent")
        try:
            stoppers.append(await _start_agent(client, cp.data_dir / "agent", agent,
                                               address=cp.advertise_address,
                                               control_plane=True, api=cp.api,
                                               dashboard=dashboard))
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

        async def start_scheduler() -> list[Callable[[], Awaitable[None]]]:
            # a new one each time this server leads: its queue and cache start afresh
            sched = Scheduler(client, scheduler_config)
            await sched.start()
            return [sched.stop]

        if not cp.datastore:
            # SQLite: this is the cluster's only API server, and its scheduler the only one
            # (unless --disable-scheduler leaves it to a `kyb scheduler`). Not elected: a
            # busy event loop that is slow to renew its own lease must not stop it.
            stoppers.extend(await start_scheduler())
            return stoppers
        # like kube-scheduler, it schedules only while holding its Lease: with several
        # servers on one datastore, one schedules and another takes over if it dies
        sched_election = replace(election or LeaderElectionOptions(), name="kube-scheduler")
        task = spawn(run_elected(client, sched_election, identity=server_identity(cp.data_dir),
                                 start=start_scheduler, component="kube-scheduler",
                                 what="the scheduler", campaign_again=True),
                     name="scheduler-election")

        async def stop_scheduler() -> None:
            await cancel_and_wait(task)

        stoppers.append(stop_scheduler)
    return stoppers
