"""The ``kyb`` command."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kybernetes import __version__

if TYPE_CHECKING:
    from kybernetes.cli.serve import LeaderElectionOptions
    from kybernetes.scheduler.config import SchedulerConfiguration


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
                        stream=sys.stderr)
    # one line per request of our own components is noise, not news
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))


def _check_thresholds(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from kybernetes.kubelet.eviction import ThresholdError, parse_thresholds

    try:
        parse_thresholds(value)
    except ThresholdError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _node_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Settings of the node agent: those kubelet has too (log rotation, eviction), and the
    pool of pod networks wired ahead of time."""
    fn = click.option("--proxy-mode", type=click.Choice(["auto", "nftables", "userspace"]),
                      default="auto", show_default=True,
                      help="The service proxy's data path: nftables DNAT in the kernel, or "
                      "asyncio listeners in userspace (auto: nftables when root with nft, "
                      "else userspace).")(fn)
    fn = click.option("--pod-network-pool", type=click.IntRange(0, 200), default=110,
                      show_default=True,
                      help="Pod network namespaces kept wired ahead of time, so that a "
                      "new pod does not wait for the CNI plugins.")(fn)
    fn = click.option("--eviction-monitoring-period", type=float, default=10.0,
                      hidden=True, help="Seconds between eviction checks.")(fn)
    fn = click.option("--eviction-hard", default="", callback=_check_thresholds,
                      help="Hard eviction thresholds, e.g. memory.available<100Mi,"
                      "nodefs.available<10% (default: kubelet's).")(fn)
    fn = click.option("--container-log-max-files", type=int, default=5, show_default=True,
                      help="Log files kept per container, the current one included.")(fn)
    return click.option("--container-log-max-size", default="10Mi", show_default=True,
                        help="Size at which a container's log is rotated.")(fn)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


def parse_duration(value: str) -> float:
    """Seconds of a Go duration (``15s``, ``1m30s``, ``500ms``); a bare number is seconds."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}")
    return total


class Duration(click.ParamType[float, object]):
    """A positive duration flag, as kube-controller-manager's: ``15s``, ``1m``, ``500ms``."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(str(value))
            except ValueError as e:
                self.fail(str(e), param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return seconds


def _leader_election_options(*, hidden: bool) -> Callable[[Callable[..., None]],
                                                          Callable[..., None]]:
    """kube-controller-manager's --leader-elect* flags."""
    def add(fn: Callable[..., None]) -> Callable[..., None]:
        fn = click.option("--leader-elect-retry-period", type=Duration(), default="2s",
                          show_default=True, hidden=hidden, help="How long candidates wait "
                          "between tries to acquire or renew the lease.")(fn)
        fn = click.option("--leader-elect-renew-deadline", type=Duration(), default="10s",
                          show_default=True, hidden=hidden, help="How long the leader "
                          "tries to renew before it stops leading.")(fn)
        return click.option("--leader-elect-lease-duration", type=Duration(), default="15s",
                            show_default=True, hidden=hidden, help="How long standbys wait "
                            "after the last renewal before taking the lease over.")(fn)
    return add


def _controller_options(*, hidden: bool) -> Callable[[Callable[..., None]],
                                                     Callable[..., None]]:
    """kube-controller-manager's flags for the controllers kybernetes runs."""
    def add(fn: Callable[..., None]) -> Callable[..., None]:
        fn = click.option("--horizontal-pod-autoscaler-downscale-stabilization",
                          "hpa_downscale_stabilization", type=Duration(), default="5m",
                          show_default=True, hidden=hidden, help="How far back the "
                          "autoscaler looks for a higher recommendation before scaling "
                          "down (autoscalers without spec.behavior).")(fn)
        fn = click.option("--horizontal-pod-autoscaler-sync-period", "hpa_sync_period",
                          type=Duration(), default="15s", show_default=True, hidden=hidden,
                          help="How often each HorizontalPodAutoscaler is reconciled.")(fn)
        return click.option("--node-monitor-grace-period", type=Duration(), default="40s",
                            show_default=True, hidden=hidden, help="How long a node may go "
                            "without renewing its Lease before it is marked Unknown.")(fn)
    return add


def _election(enabled: bool, lease_duration: float, renew_deadline: float,
              retry_period: float) -> LeaderElectionOptions:
    from kybernetes.cli.serve import LeaderElectionOptions

    if enabled and not lease_duration > renew_deadline > 1.2 * retry_period:
        raise click.UsageError("leader election needs --leader-elect-lease-duration > "
                               "--leader-elect-renew-deadline > 1.2 x "
                               "--leader-elect-retry-period")
    return LeaderElectionOptions(enabled=enabled, lease_duration=lease_duration,
                                 renew_deadline=renew_deadline, retry_period=retry_period)


@click.group()
@click.version_option(__version__, prog_name="kyb")
def main() -> None:
    """kybernetes: Kubernetes for machine-learning teams."""


def _fake_node_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Simulated nodes (kwok-style) for scale tests and capacity planning."""
    fn = click.option("--fake-node-list", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
                      default=None, help="Fake nodes from a YAML list (name, cpu, memory, "
                      "gpus, pods, labels, taints) or a .csv file (header name,cpu,memory,"
                      "gpus,labels; labels as k=v;k=v).")(fn)
    fn = click.option("--fake-node-lease-interval", type=Duration(), default="30s",
                      hidden=True, help="How often each fake node renews its Lease (tests "
                      "with a short --node-monitor-grace-period shorten it).")(fn)
    fn = click.option("--fake-node-labels", multiple=True,
                      help="Labels of every fake node, k=v,k2=v2 (repeatable).")(fn)
    fn = click.option("--fake-node-pods", type=int, default=110, show_default=True,
                      help="Pods each fake node takes.")(fn)
    fn = click.option("--fake-node-gpus", type=int, default=0, show_default=True,
                      help="nvidia.com/gpu each fake node declares.")(fn)
    fn = click.option("--fake-node-memory", default="256Gi", show_default=True,
                      help="Memory of each fake node.")(fn)
    fn = click.option("--fake-node-cpu", default="32", show_default=True,
                      help="CPUs of each fake node.")(fn)
    return click.option("--fake-nodes", type=click.IntRange(min=0), default=0,
                        show_default=True, help="Simulate N nodes fake-node-0..N-1: their "
                        "pods go Running at once, no process runs (docs/fake-nodes.md).")(fn)


def _scheduler_configuration(path: Path) -> SchedulerConfiguration:
    """The scheduler's configuration, checked (plugins built once) before serving."""
    from kybernetes.scheduler import config
    from kybernetes.scheduler.cache import Cache

    try:
        cfg = config.load(path)
        config.build(cfg, Cache())
    except config.ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--scheduler-config") from None
    return cfg


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".kyb"), show_default=True, help="Where state, certificates and "
              "the admin kubeconfig live.")
@click.option("--port", type=int, default=6443, show_default=True, help="HTTPS port.")
@click.option("--bind-address", default="0.0.0.0", show_default=True)
@click.option("--advertise-address", default="", help="Address other nodes and pods use to "
              "reach the API server (default: this host's first IPv4 address).")
@click.option("--fsync/--no-fsync", default=False, show_default=True,
              help="fsync every commit (survives power loss, not only process crashes).")
@click.option("--node-name", default="", help="Name of this machine's Node (default: hostname).")
@click.option("--agent-port", type=int, default=10250, show_default=True,
              help="Port of the node agent's API (logs, exec, port-forward).")
@click.option("--fake-gpus", type=int, default=0, show_default=True,
              help="Declare N fake nvidia.com/gpu devices (for testing).")
@click.option("--register-with-taints", "taints", multiple=True,
              help="Taints for this Node, key=value:Effect (repeatable, or comma separated).")
@click.option("--pod-cidr", default="10.42.0.0/24", show_default=True,
              help="Addresses of this node's pods (a /24 of 10.42.0.0/16).")
@click.option("--disable-agent", is_flag=True, help="Run the control plane without a node.")
@click.option("--ingress-http-port", type=click.IntRange(0, 65535), default=8080,
              show_default=True, help="The ingress controller's HTTP port on this machine "
              "(0: none).")
@click.option("--ingress-https-port", type=click.IntRange(0, 65535), default=8443,
              show_default=True, help="The ingress controller's HTTPS port (0: none).")
@click.option("--scheduler-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A KubeSchedulerConfiguration file (profiles, plugins, "
              "weights; docs/scheduler.md).")
@click.option("--disable-scheduler", is_flag=True, hidden=True,
              help="Run without the scheduler (pods need a spec.nodeName).")
@click.option("--disable-controllers", is_flag=True, hidden=True,
              help="Run without the controllers (a `kyb controller-manager` runs them).")
@click.option("--token-auth-file", type=click.Path(exists=True, dir_okay=False,
                                                  path_type=Path), default=None,
              help="Users' bearer tokens, as kube-apiserver's: CSV lines "
              "token,user,uid,\"group1,group2\" (docs/access-control.md).")
@click.option("--datastore", default="", help="Keep the state in etcd instead of SQLite: "
              "etcd://host:2379[,host2:2379,...] (etcds:// for TLS; docs/store.md).")
@click.option("--etcd-cafile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="CA bundle that signed the etcd servers' certificates.")
@click.option("--etcd-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Client certificate for etcd (with --etcd-keyfile).")
@click.option("--etcd-keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Client key for etcd.")
@click.option("--join", is_flag=True, help="Add this server to the cluster already in "
              "--datastore (etcd): its CA, keys and tokens are read from there with "
              "--token (docs/multi-node.md).")
@click.option("--token", "server_token", default="", envvar="KYB_TOKEN",
              help="With --join: the cluster's server token (DATA_DIR/pki/server.token of "
              "its first server).")
@click.option("--default-not-ready-toleration-seconds", type=click.IntRange(min=0),
              default=300, show_default=True, help="How long a new pod tolerates its node "
              "being NotReady before it is evicted (as kube-apiserver's flag).")
@click.option("--default-unreachable-toleration-seconds", type=click.IntRange(min=0),
              default=300, show_default=True, help="How long a new pod tolerates its node "
              "being unreachable before it is evicted.")
@click.option("--encryption-provider-config",
              type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An apiserver.config.k8s.io/v1 EncryptionConfiguration (aesgcm keys, "
              "identity) for values at rest (default: DATA_DIR/pki/encryption-config.yaml, "
              "a fresh key for Secrets).")
@click.option("--audit-log-path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Record every request as an audit.k8s.io/v1 Event, one JSON "
              "line each (docs/access-control.md).")
@click.option("--audit-policy-file", type=click.Path(exists=True, dir_okay=False,
                                                    path_type=Path), default=None,
              help="An audit.k8s.io/v1 Policy: the level of each request (default: "
              "Metadata for all).")
@click.option("--dashboard-interval", type=Duration(), default="5s", show_default=True,
              help="How often the dashboard samples usage and request rates for its charts "
              "(the last hour is kept).")
@_leader_election_options(hidden=False)
@_controller_options(hidden=True)
@_node_options
@_fake_node_options
@click.option("-v", "--verbose", count=True)
def server(data_dir: Path, port: int, bind_address: str, advertise_address: str, fsync: bool,
           node_name: str, agent_port: int, fake_gpus: int, taints: tuple[str, ...],
           pod_cidr: str, disable_agent: bool, ingress_http_port: int,
           ingress_https_port: int, container_log_max_size: str,
           container_log_max_files: int, eviction_hard: str, eviction_monitoring_period: float,
           pod_network_pool: int, proxy_mode: str,
           fake_nodes: int, fake_node_cpu: str, fake_node_memory: str, fake_node_gpus: int,
           fake_node_pods: int, fake_node_labels: tuple[str, ...], fake_node_list: Path | None,
           fake_node_lease_interval: float,
           scheduler_config: Path | None, disable_scheduler: bool,
           disable_controllers: bool, leader_elect_lease_duration: float,
           leader_elect_renew_deadline: float, leader_elect_retry_period: float,
           dashboard_interval: float, token_auth_file: Path | None,
           audit_log_path: Path | None, audit_policy_file: Path | None,
           encryption_provider_config: Path | None, datastore: str,
           etcd_cafile: Path | None, etcd_certfile: Path | None, etcd_keyfile: Path | None,
           join: bool, server_token: str, default_not_ready_toleration_seconds: int,
           default_unreachable_toleration_seconds: int, verbose: int,
           **controller_flags: float) -> None:
    """Run the all-in-one control plane (and this machine's node agent), and the
    dashboard at https://<address>:<port>/dashboard/."""
    _setup_logging(verbose + 1)
    election = _election(True, leader_elect_lease_duration, leader_elect_renew_deadline,
                         leader_elect_retry_period)
    from kybernetes.cli.serve import AgentOptions, ControllerOptions, FakeNodeOptions, run_server

    fake = FakeNodeOptions(count=fake_nodes, cpu=fake_node_cpu, memory=fake_node_memory,
                           gpus=fake_node_gpus, pods=fake_node_pods,
                           labels=list(fake_node_labels), list_file=fake_node_list,
                           lease_interval=fake_node_lease_interval)
    if fake.enabled:  # refuse bad options now rather than log them once serving
        from kybernetes.kubelet.fakenodes import NodeListError

        try:
            fake.nodes()
        except NodeListError as e:
            raise click.UsageError(str(e)) from None
    if join and not (datastore and server_token):
        raise click.UsageError("--join needs --datastore etcd://... and --token (the "
                               "server token of the cluster's first server)")
    if token_auth_file is not None:
        from kybernetes.apiserver.server import read_token_file

        try:
            read_token_file(token_auth_file)
        except (OSError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="--token-auth-file") from None
    if datastore:
        from kybernetes.apiserver.server import parse_datastore

        try:
            parse_datastore(datastore)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--datastore") from None
        if bool(etcd_certfile) != bool(etcd_keyfile):
            raise click.UsageError("--etcd-certfile and --etcd-keyfile go together")
    if encryption_provider_config is not None:
        from kybernetes.store.encryption import ConfigError, load_config

        try:
            load_config(encryption_provider_config)
        except ConfigError as e:
            raise click.BadParameter(str(e), param_hint="--encryption-provider-config"
                                     ) from None
    if audit_policy_file is not None:
        from kybernetes.apiserver.audit import PolicyError, load_policy

        try:
            load_policy(audit_policy_file)
        except PolicyError as e:
            raise click.BadParameter(str(e), param_hint="--audit-policy-file") from None
        if audit_log_path is None:
            raise click.UsageError("--audit-policy-file needs --audit-log-path")
    # checked now only when a file is given: the default needs no check, and importing
    # the plugins here would delay the API server's start
    sched_cfg = _scheduler_configuration(scheduler_config) if scheduler_config else None

    runner: Callable[..., int]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    agent = None if disable_agent else AgentOptions(
        node_name=node_name, port=agent_port, fake_gpus=fake_gpus, taints=list(taints),
        pod_cidr=pod_cidr, log_max_size=container_log_max_size,
        log_max_files=container_log_max_files, eviction_hard=eviction_hard,
        eviction_period=eviction_monitoring_period, network_pool=pod_network_pool,
        ingress_http_port=ingress_http_port, ingress_https_port=ingress_https_port,
        proxy_mode=proxy_mode)
    code = runner(run_server(data_dir=data_dir.resolve(), port=port, host=bind_address,
                             advertise_address=advertise_address, fsync=fsync, agent=agent,
                             fake_nodes=fake if fake.enabled else None,
                             scheduler=not disable_scheduler, scheduler_config=sched_cfg,
                             controllers=not disable_controllers, election=election,
                             controller_options=ControllerOptions(**controller_flags),
                             dashboard_interval=dashboard_interval,
                             token_auth_file=token_auth_file,
                             audit_log=audit_log_path.resolve() if audit_log_path else None,
                             audit_policy=audit_policy_file,
                             encryption_config=encryption_provider_config,
                             datastore=datastore, join=join, token=server_token,
                             toleration_seconds=(default_not_ready_toleration_seconds,
                                                 default_unreachable_toleration_seconds),
                             etcd_tls={k: v for k, v in (("cafile", etcd_cafile),
                                                         ("certfile", etcd_certfile),
                                                         ("keyfile", etcd_keyfile)) if v}))
    sys.exit(code)


@main.command("controller-manager")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The API server to run the controllers against "
              "(default: $KUBECONFIG, then ~/.kube/config).")
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True,
              help="Act only while holding the kube-system/kube-controller-manager Lease, "
              "so that several controller managers never both act.")
@_leader_election_options(hidden=False)
@_controller_options(hidden=False)
@click.option("-v", "--verbose", count=True)
def controller_manager(kubeconfig: Path | None, leader_elect: bool,
                       leader_elect_lease_duration: float, leader_elect_renew_deadline: float,
                       leader_elect_retry_period: float, verbose: int,
                       **controller_flags: float) -> None:
    """Run the controllers (Deployments, Jobs, garbage collector...) in their own process."""
    _setup_logging(verbose + 1)
    election = _election(leader_elect, leader_elect_lease_duration,
                         leader_elect_renew_deadline, leader_elect_retry_period)
    from kybernetes.cli.serve import ControllerOptions, run_controller_manager

    sys.exit(asyncio.run(run_controller_manager(
        kubeconfig=kubeconfig.resolve() if kubeconfig else None, election=election,
        controller_options=ControllerOptions(**controller_flags))))


@main.command("scheduler")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The API server to schedule for (default: $KUBECONFIG, "
              "then ~/.kube/config).")
@click.option("--config", "config_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A KubeSchedulerConfiguration (profiles, plugins, weights; "
              "docs/scheduler.md).")
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True,
              help="Schedule only while holding the kube-system/kube-scheduler Lease, so "
              "that several schedulers (and kyb servers) never both schedule.")
@_leader_election_options(hidden=False)
@click.option("-v", "--verbose", count=True)
def scheduler(kubeconfig: Path | None, config_file: Path | None, leader_elect: bool,
              leader_elect_lease_duration: float, leader_elect_renew_deadline: float,
              leader_elect_retry_period: float, verbose: int) -> None:
    """Run the scheduler in its own process (as kube-scheduler), e.g. on another core
    than a `kyb server --disable-scheduler`."""
    _setup_logging(verbose + 1)
    election = _election(leader_elect, leader_elect_lease_duration,
                         leader_elect_renew_deadline, leader_elect_retry_period)
    sched_cfg = _scheduler_configuration(config_file) if config_file else None
    from kybernetes.cli.serve import run_scheduler

    sys.exit(asyncio.run(run_scheduler(kubeconfig=kubeconfig.resolve() if kubeconfig else None,
                                       election=election, config=sched_cfg)))


@main.command()
@click.option("--server", "server_url", required=True, help="The API server, https://HOST:PORT.")
@click.option("--token", required=True,
              help="A join token (DATA_DIR/join-token of kyb server): the agent asks for a "
                   "client certificate of its own and keeps it in its data dir; or a bearer "
                   "token to authenticate with as it is.")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CA bundle of the API server (default: do not verify it).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".kyb-agent"), show_default=True)
@click.option("--node-name", default="", help="Name of this Node (default: hostname).")
@click.option("--address", default="", help="Address the API server reaches this agent at.")
@click.option("--port", type=int, default=10250, show_default=True)
@click.option("--pod-cidr", default="10.42.1.0/24", show_default=True)
@click.option("--fake-gpus", type=int, default=0, show_default=True)
@click.option("--register-with-taints", "taints", multiple=True)
@_node_options
@click.option("-v", "--verbose", count=True)
def agent(server_url: str, token: str, ca_file: Path | None, data_dir: Path, node_name: str,
          address: str, port: int, pod_cidr: str, fake_gpus: int, taints: tuple[str, ...],
          container_log_max_size: str, container_log_max_files: int, eviction_hard: str,
          eviction_monitoring_period: float, pod_network_pool: int, proxy_mode: str,
          verbose: int) -> None:
    """Join a remote kyb server as a node."""
    _setup_logging(verbose + 1)
    from kybernetes.cli.serve import AgentOptions, run_agent

    opts = AgentOptions(node_name=node_name, port=port, fake_gpus=fake_gpus,
                        taints=list(taints), address=address, pod_cidr=pod_cidr,
                        log_max_size=container_log_max_size,
                        log_max_files=container_log_max_files, eviction_hard=eviction_hard,
                        eviction_period=eviction_monitoring_period,
                        network_pool=pod_network_pool, proxy_mode=proxy_mode)
    sys.exit(asyncio.run(run_agent(server_url=server_url, token=token, ca_file=ca_file,
                                   data_dir=data_dir.resolve(), opts=opts)))


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".kyb"), show_default=True,
              help="The data dir of the kyb server whose CA signs the certificate.")
@click.option("--user", "user", required=True, help="The user name (the certificate's CN).")
@click.option("--group", "groups", multiple=True,
              help="A group of the user (the certificate's O; repeatable).")
@click.option("--server", "server_url", default="",
              help="The API server's URL in the kubeconfig (default: the admin kubeconfig's).")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="How long the certificate is valid.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the kubeconfig here (mode 600) instead of printing it.")
def kubeconfig(data_dir: Path, user: str, groups: tuple[str, ...], server_url: str,
               days: int, output: Path | None) -> None:
    """Issue a kubeconfig for USER with a client certificate signed by the cluster CA
    (what it may do is up to RBAC: bind a role to the user or one of its groups)."""
    import yaml

    from kybernetes.apiserver import certs

    pki = data_dir / "pki"
    if not (pki / "ca.key").exists():
        raise click.UsageError(f"no cluster CA in {pki} (is --data-dir a kyb server's?)")
    if not server_url:
        try:
            admin = yaml.safe_load((data_dir / "kubeconfig").read_text())
            server_url = admin["clusters"][0]["cluster"]["server"]
        except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
            raise click.UsageError("no admin kubeconfig to take the server from: give "
                                   "--server") from None
    cert, key = certs.issue_client_cert(pki, user, list(groups), days=days)
    text = certs.client_cert_kubeconfig(server_url, (pki / "ca.crt").read_bytes(), cert, key,
                                        user=user)
    if output is None:
        click.echo(text, nl=False)
    else:
        certs.write_kubeconfig(output, text)
        click.echo(f"wrote {output} for user {user!r}" +
                   (f" in groups {', '.join(groups)}" if groups else ""))


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".kyb"), show_default=True,
              help="The data dir of the kyb server (or agent) whose pods to stop.")
def killall(data_dir: Path) -> None:
    """Stop every pod this machine's node agent runs and free what they hold."""
    from kybernetes.kubelet.cleanup import kill_all
    from kybernetes.proxy.host import remove, remove_local_service_range, table_name

    agent_dir = data_dir / "agent" if (data_dir / "agent").is_dir() else data_dir
    remove(table_name(agent_dir), "10.96.0.0/12")
    remove_local_service_range(table_name(agent_dir), "10.96.0.0/12")
    uids = kill_all(agent_dir.resolve())
    click.echo(f"stopped {len(uids)} pod(s)")


@main.group()
def sim() -> None:
    """Replay traces through the scheduler's code, without a server."""


@sim.command("gpu")
@click.option("--nodes", "nodes_csv", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Node list: sn,cpu_milli,memory_mib,gpu,model.")
@click.option("--pods", "pods_csv", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pod list: name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec.")
@click.option("--policy", default="FGD", show_default=True,
              help="Random, DotProd, GpuClustering, GpuPacking, BestFit, FGD, FGDPlus (ours), "
                   "or the name of a Score plugin.")
@click.option("--tune", type=click.FloatRange(min=0.01), default=1.3, show_default=True,
              help="Arrived GPU demand as a multiple of the cluster's GPU capacity.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the allocation curve as a PNG (needs matplotlib).")
def sim_gpu(nodes_csv: Path, pods_csv: Path, policy: str, tune: float, seed: int,
            plot: Path | None) -> None:
    """Replay a GPU cluster trace (FGD protocol) and print the allocation curve as JSON:
    arrived GPU demand (% of capacity) -> allocated milli-GPU (% of capacity)."""
    import json

    from kybernetes.scheduler import gpusim

    try:
        result = gpusim.replay(gpusim.load_nodes(nodes_csv), gpusim.load_pods(pods_csv),
                               policy, tune=tune, seed=seed)
    except gpusim.TraceError as e:
        raise click.UsageError(str(e)) from None
    out = result.as_json()
    click.echo(json.dumps(out, indent=2))
    if plot is not None:
        try:
            gpusim.plot(result, plot)
        except ImportError:
            raise click.UsageError("--plot needs matplotlib (pip install matplotlib)") from None


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)


def dump_tasks() -> None:
    """SIGUSR1: write every asyncio task and where it waits to stderr (for debugging)."""
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}", file=sys.stderr)
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()


if __name__ == "__main__":  # pragma: no cover
    main()
