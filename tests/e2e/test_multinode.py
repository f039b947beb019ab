"""Several machines, on one: three "hosts" (network namespaces on a bridge of the test's
own, 10.201.0.0/24) each run a real ``kyb agent``; two API servers share one real etcd
(the second started with ``--join``). serve-model.yaml spreads over the hosts, pods on
different hosts reach each other and the Service, killing the leading server hands
scheduling and the controllers to the other, and a stopped host's pods come back on the
others."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.cluster import REPO, SCENARIOS, Cluster, free_port, stop_process, wait_for
from tests.e2e.test_pods import ready
from tests.etcd import etcd_server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists() or not shutil.which("nsenter"),
    reason="hosts in network namespaces need root, nsenter (util-linux) and the CNI plugins "
    "(Debian containernetworking-plugins)")]

LAN = "10.201.0"
"""The hosts' network: a bridge in this machine's namespace holds .1 (the API servers'
address), host i is .(11+i). Nothing routes it beyond this machine."""
HOSTS = 3
LEASE = ["--leader-elect-lease-duration", "8s", "--leader-elect-renew-deadline", "6s",
         "--leader-elect-retry-period", "2s"]
EVICTION = ["--node-monitor-grace-period", "10s", "--default-not-ready-toleration-seconds", "5",
            "--default-unreachable-toleration-seconds", "5"]


def _ip(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


@dataclass
class Host:
    netns: str
    name: str
    address: str
    pod_cidr: str
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    def nsenter(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", "--", *argv]

    def start_agent(self, servers: str, token: str, ca: str, log: Path) -> None:
        with log.open("ab") as out:
            self.proc = subprocess.Popen(self.nsenter(
                sys.executable, "-m", "kybernetes.cli.main", "agent", "--server", servers,
                "--token", token, "--ca-file", ca, "--data-dir", str(self.data_dir),
                "--node-name", self.name, "--address", self.address,
                "--pod-cidr", self.pod_cidr, "--pod-network-pool", "2"),
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def stop_agent(self) -> None:
        stop_process(self.proc, timeout=20)

    def killall(self) -> None:
        subprocess.run(self.nsenter(sys.executable, "-m", "kybernetes.cli.main", "killall",
                                    "--data-dir", str(self.data_dir)),
                       capture_output=True, check=False, cwd=REPO)


@dataclass
class Machines:
    """The test's hosts and servers."""

    bridge: str
    etcd: str = ""
    hosts: list[Host] = field(default_factory=list)
    servers: list[Cluster] = field(default_factory=list)

    def up(self, base: Path) -> None:
        tag = secrets.token_hex(2)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{LAN}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(HOSTS):
            host = Host(netns=f"kmh-{tag}-{i}", name=f"host-{i + 1}", address=f"{LAN}.{11 + i}",
                        pod_cidr=f"10.42.{11 + i}.0/24", data_dir=base / f"host-{i + 1}")
            self.hosts.append(host)
            veth = f"{self.bridge}v{i}"
            _ip("netns", "add", host.netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            for args in (("addr", "add", f"{host.address}/24", "dev", "eth0"),
                         ("link", "set", "eth0", "up"), ("link", "set", "lo", "up")):
                _ip("-n", host.netns, *args)
            # this machine's own namespace has no business with the hosts' pods: nothing
            # for their ranges may leave through its default gateway
            _ip("route", "replace", "unreachable", host.pod_cidr)

    def down(self) -> None:
        for host in self.hosts:
            host.stop_agent()
        for server in self.servers:
            server.stop()
        for host in self.hosts:
            host.killall()
            _ip("netns", "del", host.netns, check=False)
            _ip("route", "del", "unreachable", host.pod_cidr, check=False)
        _ip("link", "del", self.bridge, check=False)


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machines]:
    base = tmp_path_factory.mktemp("multinode")
    m = Machines(bridge=f"kmh{secrets.token_hex(2)}")
    with etcd_server(base / "etcd") as etcd_url:
        try:
            m.up(base)
            m.etcd = etcd_url.replace("http://", "etcd://")
            common = ["--disable-agent", "--datastore", m.etcd,
                      "--bind-address", "0.0.0.0", "--advertise-address", f"{LAN}.1",
                      *LEASE, *EVICTION]
            first = Cluster(data_dir=base / "server-a", port=free_port(),
                            log_path=base / "server-a.log", cache_dir=base / "home-a",
                            extra_args=common)
            first.start()
            m.servers.append(first)
            token = (first.data_dir / "pki" / "server.token").read_text().strip()
            second = Cluster(data_dir=base / "server-b", port=free_port(),
                             log_path=base / "server-b.log", cache_dir=base / "home-b",
                             extra_args=[*common, "--join", "--token", token])
            second.start()
            m.servers.append(second)
            servers = ",".join(f"https://{LAN}.1:{s.port}" for s in m.servers)
            # each joins with the first server's join token (a bootstrap token) and gets a
            # node certificate of its own
            join_token = (first.data_dir / "join-token").read_text().strip()
            for host in m.hosts:
                host.start_agent(servers, join_token, first.ca, base / f"{host.name}.log")
            wait_for("3 Ready nodes", lambda: len([
                n for n in first.kubectl_json("get", "nodes")["items"]
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in n["status"].get("conditions", []))]) == HOSTS, timeout=60)
            yield m
        finally:
            m.down()


def _holder(c: Cluster, lease: str) -> str:
    out = c.kubectl("get", "lease", "-n", "kube-system", lease, "-o",
                    "jsonpath={.spec.holderIdentity}", check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def _identity(c: Cluster) -> str:
    return (c.data_dir / "leader-election-id").read_text().strip()


def _model_pods(c: Cluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = c.kubectl_json("get", "pods", "-l", "app=ml-model")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _predict(c: Cluster, pod: str, url: str) -> Any:
    """POST /predict from inside ``pod`` (so from its host's network)."""
    code = ("import json,sys,urllib.request as u; r=u.urlopen(u.Request(sys.argv[1], "
            "data=b'{\"features\":[1,2,3]}', headers={'Content-Type':'application/json'}),"
            " timeout=5); print(r.read().decode())")
    out = c.kubectl("exec", pod, "--", "python3", "-c", code, url, check=False)
    return orjson.loads(out.stdout) if out.returncode == 0 else out.stderr


def _get(c: Cluster, pod: str, url: str) -> Any:
    """GET ``url`` from inside ``pod`` (TLS unverified)."""
    code = ("import ssl,sys,urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5, "
            "context=ssl._create_unverified_context()).read().decode())")
    out = c.kubectl("exec", pod, "--", "python3", "-c", code, url, check=False)
    return orjson.loads(out.stdout) if out.returncode == 0 else out.stderr


def _api_servers(c: Cluster) -> list[str]:
    ep = c.kubectl_json("get", "endpoints", "kubernetes")
    return sorted(f"{a['ip']}:{p['port']}" for s in ep.get("subsets") or ()
                  for a in s["addresses"] for p in s["ports"])


def test_the_servers_share_one_cluster(machines: Machines) -> None:
    a, b = machines.servers
    assert (a.data_dir / "pki" / "ca.crt").read_bytes() == (b.data_dir / "pki" / "ca.crt").read_bytes()
    a.kubectl("create", "configmap", "written-through-a", "--from-literal=k=v")
    assert b.kubectl_json("get", "configmap", "written-through-a")["data"] == {"k": "v"}
    # addresses are given once across servers: Services made on both get distinct ones
    for i in range(4):
        (a if i % 2 else b).kubectl("create", "service", "clusterip", f"svc-{i}", "--tcp=80")
    ips = {b.kubectl_json("get", "service", f"svc-{i}")["spec"]["clusterIP"] for i in range(4)}
    assert len(ips) == 4
    csrs = b.kubectl_json("get", "csr")["items"]
    assert sorted(c["spec"]["username"] for c in csrs) == ["system:bootstrap:" + (
        a.data_dir / "join-token").read_text().split(".")[0]] * HOSTS
    assert all((h.data_dir / "pki" / "node-client.crt").exists() for h in machines.hosts)
    nodes = {n["metadata"]["name"]: n for n in b.kubectl_json("get", "nodes")["items"]}
    assert sorted(nodes) == [h.name for h in machines.hosts]
    for h in machines.hosts:
        assert nodes[h.name]["spec"]["podCIDR"] == h.pod_cidr


def test_joining_needs_the_server_token(machines: Machines, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "kybernetes.cli.main", "server", "--disable-agent",
            "--datastore", machines.etcd, "--bind-address", "127.0.0.1", "--port",
            str(free_port())]
    wrong = subprocess.run([*base, "--data-dir", str(tmp_path / "x"), "--join", "--token",
                            "not-the-token"], capture_output=True, text=True, timeout=60,
                           cwd=REPO)
    assert wrong.returncode == 1
    assert "the token does not open the cluster's bootstrap data" in wrong.stderr
    # without --join, a fresh data dir does not take over the datastore's cluster
    fresh = subprocess.run([*base, "--data-dir", str(tmp_path / "y")], capture_output=True,
                           text=True, timeout=60, cwd=REPO)
    assert fresh.returncode == 1
    assert "the datastore already holds a cluster" in fresh.stderr


def test_serve_model_spreads_and_pods_reach_each_other(machines: Machines) -> None:
    a = machines.servers[0]
    a.kubectl("apply", "-f", str(SCENARIOS / "serve-model.yaml"))
    pods = wait_for("3 ready ml-model replicas", lambda: (ps := _model_pods(a)) and
                    len(ps) == 3 and all(ready(p) for p in ps) and ps, timeout=120)
    where = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    print(f"serve-model placed: {where}")
    assert len(set(where.values())) >= 2, f"not spread over the hosts: {where}"
    for p in pods:
        host = next(h for h in machines.hosts if h.name == p["spec"]["nodeName"])
        assert p["status"]["podIP"].startswith(host.pod_cidr.rsplit(".", 1)[0] + ".")
    # every pod reaches every other pod on another host by its IP, and the Service
    svc_ip = a.kubectl_json("get", "service", "ml-model")["spec"]["clusterIP"]
    for src in pods:
        for dst in pods:
            if dst["spec"]["nodeName"] == src["spec"]["nodeName"]:
                continue
            got = _predict(a, src["metadata"]["name"], f"http://{dst['status']['podIP']}:5000/predict")
            assert isinstance(got, dict) and got["pod"] == dst["metadata"]["name"], got
        got = _predict(a, src["metadata"]["name"], f"http://{svc_ip}/predict")
        assert isinstance(got, dict) and got["pod"] in where, got
    # the API servers behind the kubernetes Service: both, reached from a pod
    assert _api_servers(a) == sorted(f"{LAN}.1:{s.port}" for s in machines.servers)
    version = _get(a, pods[0]["metadata"]["name"], "https://kubernetes.default.svc/version")
    assert isinstance(version, dict) and version.get("major") == "1", version


def test_a_network_policy_holds_across_hosts(machines: Machines) -> None:
    a = machines.servers[0]
    pods = [p for p in _model_pods(a) if ready(p)]
    src, dst = next((s, d) for s in pods for d in pods
                    if s["spec"]["nodeName"] != d["spec"]["nodeName"])
    url = f"http://{dst['status']['podIP']}:5000/predict"
    a.kubectl("apply", "-f", "-", input=orjson.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "only-frontend"},
        "spec": {"podSelector": {"matchLabels": {"app": "ml-model"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}]}]},
    }).decode())
    try:
        # enforced on the destination's host: the other host's pod no longer gets through
        wait_for("the policy enforced", lambda: not isinstance(
            _predict(a, src["metadata"]["name"], url), dict), timeout=30)
    finally:
        a.kubectl("delete", "networkpolicy", "only-frontend")
    got = wait_for("the policy lifted", lambda: isinstance(
        r := _predict(a, src["metadata"]["name"], url), dict) and r, timeout=30)
    assert got["pod"] == dst["metadata"]["name"]


def test_killing_the_leading_server_hands_over_within_15_s(machines: Machines) -> None:
    a, b = machines.servers
    leases = ("kube-controller-manager", "kube-scheduler")
    holders = {lease: wait_for(f"a holder of {lease}", lambda lease=lease: _holder(b, lease))
               for lease in leases}
    ids = {_identity(a): a, _identity(b): b}
    leader = next(c for i, c in ids.items() if holders["kube-scheduler"].endswith(i))
    other = b if leader is a else a
    assert leader.proc is not None
    t0 = time.monotonic()
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait()
    for lease in leases:
        wait_for(f"{lease} held by the other server", lambda lease=lease: _holder(
            other, lease).endswith(_identity(other)), timeout=30, every=0.25)
    took = time.monotonic() - t0
    print(f"leadership handed over {took:.1f} s after the leader was killed")
    assert took <= 15.0, f"hand-over took {took:.1f} s"
    # new pods are scheduled and started (the agents now talk to the other server)
    other.kubectl("scale", "deployment", "ml-model", "--replicas", "5")
    wait_for("5 ready ml-model replicas", lambda: len(
        [p for p in _model_pods(other) if ready(p)]) == 5, timeout=120)
    machines.servers.remove(leader)  # stopped already
    # the dead server leaves the kubernetes Service's endpoints
    wait_for("the kubernetes endpoints without the dead server",
             lambda: _api_servers(other) == [f"{LAN}.1:{other.port}"], timeout=30)


def test_a_stopped_hosts_pods_come_back_on_the_others(machines: Machines) -> None:
    c = machines.servers[0]
    pods = _model_pods(c)
    busy = max(machines.hosts, key=lambda h: sum(p["spec"]["nodeName"] == h.name for p in pods))
    gone = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == busy.name}
    assert gone
    busy.stop_agent()
    wait_for(f"{busy.name} NotReady", lambda: any(
        cond["type"] == "Ready" and cond["status"] != "True"
        for cond in c.kubectl_json("get", "node", busy.name)["status"]["conditions"]),
        timeout=60)
    replaced = wait_for("5 ready replicas on the other hosts", lambda: (ps := [
        p for p in _model_pods(c) if ready(p) and p["spec"]["nodeName"] != busy.name])
        and len(ps) == 5 and ps, timeout=120)
    assert not gone & {p["metadata"]["name"] for p in replaced}
    # the pods of the stopped host were evicted (marked for deletion by the taint manager)
    left = {p["metadata"]["name"]: p for p in c.kubectl_json(
        "get", "pods", "-l", "app=ml-model")["items"]}
    assert all(left[n]["metadata"].get("deletionTimestamp") for n in gone if n in left)
