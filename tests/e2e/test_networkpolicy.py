"""NetworkPolicies on real nodes: a server's own node and a second ``kyb agent`` on the
same machine (its own bridge: pod to pod across nodes is routed, on one node bridged).
Pods serve HTTP and connect with ``kubectl exec``, to a pod's address and to its Service's
virtual IP; each node's table follows policy changes and goes with its agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kybernetes.kubelet.netpol_rules import table_name
from kybernetes.kubelet.network import bridge_name
from tests.e2e.cluster import REPO, Cluster, agent_cluster, free_port, new_pod_cidr, wait_for
from tests.e2e.test_pods import ready

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists()
    or subprocess.run(["nft", "--version"], capture_output=True).returncode != 0,
    reason="NetworkPolicies need root, nft (nftables) and the CNI plugins "
           "(Debian containernetworking-plugins)")]

NODE2 = "np-node-2"
SERVER = """
import http.server, os, socket, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD_NAME"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class V6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
threading.Thread(target=V6(("::", 5001), H).serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 5000), H).serve_forever()
"""
CLIENT = """
import http.client, json, sys
from concurrent.futures import ThreadPoolExecutor
def get(target):
    host, port = target.rsplit(":", 1)
    try:
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=1.5)
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    except OSError as e:
        return type(e).__name__
with ThreadPoolExecutor(4) as pool:
    print(json.dumps(dict(zip(sys.argv[1:], pool.map(get, sys.argv[1:])))))
"""
LINK_LOCAL = """
for line in open("/proc/net/if_inet6"):
    addr, _, _, scope, _, dev = line.split()
    if dev == "eth0" and scope == "20":
        print(":".join(addr[i:i + 4] for i in range(0, 32, 4)))
"""
SLEEPER = ["python3", "-c", "import time; time.sleep(86400)"]
CLIENTS = ("frontend", "other", "frontend2", "other2")
"""Client pods in ``default``: ``*2`` on the second node, the others beside the model."""


def _pod(name: str, labels: dict[str, str], node: str, *, namespace: str = "default",
         serve: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main", "image": "python:3.11",
        "command": ["python3", "-c", SERVER] if serve else SLEEPER,
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}
    if serve:
        container["ports"] = [{"name": "http", "containerPort": 5000}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [container]}}


class Nodes:
    """The server (its node beside it) and a second node agent joined to it."""

    def __init__(self, c: Cluster, base: Path) -> None:
        self.c = c
        self.agent_dir = base / "agent2"
        self.agent_log = base / "agent2.log"
        self.pod_cidr = new_pod_cidr(20, 99)
        self.proc: subprocess.Popen[bytes] | None = None
        self.model_ip = self.service_ip = self.model_link_local = ""

    def start_agent(self) -> None:
        with open(self.agent_log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kybernetes.cli.main", "agent", "--server", self.c.url,
                 "--token", self.c.token, "--ca-file", self.c.ca, "--data-dir",
                 str(self.agent_dir), "--node-name", NODE2, "--address", "127.0.0.1",
                 "--port", str(free_port()), "--pod-cidr", self.pod_cidr,
                 "--pod-network-pool", "0"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        wait_for("the second node Ready", lambda: any(
            cond["type"] == "Ready" and cond["status"] == "True"
            for n in self.c.kubectl_json("get", "nodes")["items"]
            if n["metadata"]["name"] == NODE2 for cond in n["status"].get("conditions") or []))

    def stop_agent(self, *, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def killall_agent(self) -> None:
        subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "killall", "--data-dir",
                        str(self.agent_dir)], capture_output=True, check=False, cwd=REPO)

    def reach(self, client: str, namespace: str = "default") -> dict[str, str]:
        """What ``client`` gets from the model's address and from its Service: the
        answering pod's name, or the error (e.g. TimeoutError: dropped)."""
        proc = self.c.kubectl("exec", "-n", namespace, client, "--", "python3", "-c", CLIENT,
                              f"{self.model_ip}:5000", f"{self.service_ip}:80", timeout=30)
        got = json.loads(proc.stdout)
        return {"pod": got[f"{self.model_ip}:5000"], "service": got[f"{self.service_ip}:80"]}

    def get(self, client: str, target: str) -> str:
        proc = self.c.kubectl("exec", client, "--", "python3", "-c", CLIENT, target,
                              timeout=30)
        return str(json.loads(proc.stdout)[target])

    def matrix(self, *, guest: bool = True) -> dict[str, bool]:
        """Which clients reach the model, both ways: ``client`` -> True/False (one way
        reaching and the other not shows as the answers themselves)."""
        out: dict[str, Any] = {}
        targets = [(c, "default") for c in CLIENTS] + ([("visitor", "guests")] if guest else [])
        for client, ns in targets:
            got = self.reach(client, ns)
            answers = set(got.values())
            out[client] = True if answers == {"model"} else \
                False if "model" not in answers else got
        return out


def _apply(c: Cluster, *objs: dict[str, Any]) -> None:
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                    "items": list(objs)}))


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                          check=False).stdout


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    base = tmp_path_factory.mktemp("netpol")
    running = agent_cluster(base)
    c = next(running)
    n = Nodes(c, base)
    try:
        n.start_agent()
        c.kubectl("create", "namespace", "guests")
        c.kubectl("label", "namespace", "guests", "team=guests")
        _apply(c, _pod("model", {"app": "ml-model"}, c.node_name, serve=True),
               {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ml-model"},
                "spec": {"selector": {"app": "ml-model"},
                         "ports": [{"port": 80, "targetPort": "http"}]}},
               _pod("frontend", {"app": "frontend"}, c.node_name),
               _pod("other", {"app": "other"}, c.node_name),
               _pod("frontend2", {"app": "frontend"}, NODE2),
               _pod("other2", {"app": "other"}, NODE2),
               _pod("visitor", {"app": "other"}, NODE2, namespace="guests"))

        def all_ready() -> bool:
            pods = [p for ns in ("default", "guests")
                    for p in c.kubectl_json("get", "pods", "-n", ns)["items"]]
            return len(pods) == 6 and all(ready(p) for p in pods)
        wait_for("the pods Ready", all_ready, timeout=60)
        n.model_ip = c.kubectl_json("get", "pod", "model")["status"]["podIP"]
        n.service_ip = c.kubectl_json("get", "service", "ml-model")["spec"]["clusterIP"]
        n.model_link_local = c.kubectl("exec", "model", "--", "python3", "-c", LINK_LOCAL
                                       ).stdout.strip()
        wait_for("the Service's endpoint", lambda: c.kubectl_json(
            "get", "endpointslices", "-l", "kubernetes.io/service-name=ml-model")["items"][0]
            .get("endpoints"))
        yield n
    finally:
        n.stop_agent()
        n.killall_agent()
        running.close()


ALL = dict.fromkeys((*CLIENTS, "visitor"), True)


def _expect(n: Nodes, want: dict[str, bool], what: str) -> None:
    wait_for(what, lambda: (got := n.matrix()) == want or print(got), timeout=30, every=0.5)


def test_policy_allowing_only_the_frontend_blocks_another_pod(nodes: Nodes) -> None:
    """A NetworkPolicy that lets only ``app=frontend`` (and the namespaces labelled
    ``team=guests``) reach ``app=ml-model`` blocks the other pods, on its node (bridged)
    and on the other one (routed), to the pod's address and through the Service; the
    frontends get through, the node itself too; deleted, everyone gets through again."""
    n, c = nodes, nodes.c
    _expect(n, ALL, "everyone to reach the model before any policy")
    assert n.get("other", f"[{n.model_link_local}%eth0]:5001") == "model"
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "model-frontend-only"},
              "spec": {"podSelector": {"matchLabels": {"app": "ml-model"}},
                       "ingress": [{"from": [
                           {"podSelector": {"matchLabels": {"app": "frontend"}}},
                           {"namespaceSelector": {"matchLabels": {"team": "guests"}}}],
                           "ports": [{"protocol": "TCP", "port": 5000}]}]}}
    _apply(c, policy)
    try:
        _expect(n, {**ALL, "other": False, "other2": False},
                "only the frontends and the guests to reach the model")
        assert set(n.reach("other").values()) == {"TimeoutError"}  # dropped, not refused
        # nor through the model's IPv6 link-local address (pods are IPv4-only)
        assert n.get("other", f"[{n.model_link_local}%eth0]:5001") == "TimeoutError"
        assert n.get("frontend", f"[{n.model_link_local}%eth0]:5001") == "TimeoutError"
        assert table_name(bridge_name(c.pod_cidr)) in _tables()
        # the node itself (kubelet probes) still reaches the pod
        with urllib.request.urlopen(f"http://{n.model_ip}:5000/", timeout=5) as resp:
            assert resp.read() == b"model"
    finally:
        c.kubectl("delete", "networkpolicy", "model-frontend-only")
    _expect(n, ALL, "everyone to reach the model once the policy is gone")
    # no pod isolated on either node: no table left
    wait_for("the tables to go", lambda: table_name(bridge_name(c.pod_cidr)) not in
             _tables() and table_name(bridge_name(n.pod_cidr)) not in _tables())


def test_egress_policy_with_a_named_port(nodes: Nodes) -> None:
    """Pods ``app=other`` may send only to ``app=ml-model`` on port 9999: they can no
    longer reach the model (wherever they run), the others still can, and the node's
    cluster DNS still answers them; allowed the model's port by its name instead, they
    reach it again, by address and Service."""
    n, c = nodes, nodes.c
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "other-egress"},
              "spec": {"podSelector": {"matchLabels": {"app": "other"}},
                       "policyTypes": ["Egress"],
                       "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "ml-model"}}}],
                                   "ports": [{"port": 9999}]}]}}
    _apply(c, policy)
    try:
        # (the visitor is app=other too, but in another namespace: not selected)
        _expect(n, {**ALL, "other": False, "other2": False}, "the other pods cut off")
        # the node's own cluster DNS (on the pod gateway) still answers them
        for client in ("other", "other2"):
            looked_up = c.kubectl("exec", client, "--", "python3", "-c",
                                  "import socket; print(socket.gethostbyname("
                                  "'ml-model.default.svc.cluster.local'))").stdout.strip()
            assert looked_up == n.service_ip
        policy["spec"]["egress"][0]["ports"] = [{"port": "http"}]
        _apply(c, policy)
        _expect(n, ALL, "the other pods let through on the model's named port")
    finally:
        c.kubectl("delete", "networkpolicy", "other-egress")


def test_table_goes_with_the_agent_and_with_killall(nodes: Nodes) -> None:
    """A stopped agent removes its table; one killed leaves it, and ``kyb killall``
    removes it."""
    n, c = nodes, nodes.c
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "guests"},
            "spec": {"podSelector": {}}}
    table = table_name(bridge_name(n.pod_cidr))
    _apply(c, deny)
    try:
        wait_for("the second node's table", lambda: table in _tables())
        n.stop_agent()
        assert table not in _tables()
        n.start_agent()
        wait_for("the table back", lambda: table in _tables())
        n.stop_agent(kill=True)
        time.sleep(0.5)
        assert table in _tables()
        n.killall_agent()
        assert table not in _tables()
    finally:
        c.kubectl("delete", "networkpolicy", "deny-all", "-n", "guests")
