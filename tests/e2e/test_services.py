"""Services on a real node: serve-model.yaml's ClusterIP, NodePort and LoadBalancer
spread requests over the replicas from the host and from a pod; a deleted replica stops
receiving connections and no request fails for it; session affinity sticks; the routes and
nftables rules the proxy installs keep the pod and service ranges on the machine and go
when the server stops."""

from __future__ import annotations

import collections
import http.client
import ipaddress
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from dnslib import RCODE, DNSRecord

from kybernetes.proxy.host import table_name
from tests.e2e.cluster import SCENARIOS, Cluster, agent_cluster, wait_for
from tests.e2e.test_pods import ready

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists()
    or subprocess.run(["nft", "--version"], capture_output=True).returncode != 0,
    reason="Services' kernel data path needs root, nft (nftables) and the CNI plugins "
           "(Debian containernetworking-plugins)")]

REQUESTS = 3000
BODY = b'{"features": [1, 2, 3]}'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    """A server of its own running serve-model.yaml, and the ml-model Service once it has
    its load balancer address."""
    running = agent_cluster(tmp_path_factory.mktemp("services"))
    try:
        yield serve_model(next(running))
    finally:
        running.close()  # stops the server and its pods


def serve_model(c: Cluster) -> tuple[Cluster, dict[str, Any]]:
    """serve-model.yaml applied and rolled out, and the ml-model Service once it has its
    load balancer address."""
    c.kubectl("apply", "-f", str(SCENARIOS / "serve-model.yaml"))
    c.kubectl("rollout", "status", "deployment/ml-model", "--timeout=90s", timeout=100)
    svc = wait_for("the load balancer's address", lambda: (s := c.kubectl_json(
        "get", "service", "ml-model")).get("status", {}).get("loadBalancer", {})
        .get("ingress") and s)
    return c, svc


def predict(host: str, port: int, *, tries: int = 1) -> tuple[int, str]:
    """POST /predict on a new connection: (status, the answering pod)."""
    for attempt in range(tries):
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request("POST", "/predict", body=BODY)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, json.loads(body)["pod"] if resp.status == 200 else ""
        except (ConnectionError, OSError):
            if attempt == tries - 1:
                raise
            time.sleep(0.05)
        finally:
            conn.close()
    raise AssertionError("unreachable")


def spread(host: str, port: int, n: int = REQUESTS) -> collections.Counter[str]:
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _i: predict(host, port), range(n)))
    assert {status for status, _ in answers} == {200}
    return collections.Counter(pod for _, pod in answers)


def assert_even(counts: dict[str, int], pods: set[str], what: str) -> None:
    total = sum(counts.values())
    assert set(counts) == pods, f"{what}: answered by {counts}, replicas {pods}"
    for pod, n in counts.items():
        assert abs(n - total / 3) <= 0.15 * total / 3, f"{what}: {pod} got {n} of {total}"


def replicas(c: Cluster) -> set[str]:
    items = c.kubectl_json("get", "pods", "-l", "app=ml-model")["items"]
    return {p["metadata"]["name"] for p in items
            if not p["metadata"].get("deletionTimestamp") and ready(p)}


CLIENT_POD = """
import collections, http.client, json, os, socket, sys
from concurrent.futures import ThreadPoolExecutor
route = [l.split() for l in open("/proc/net/route").read().splitlines()[1:]]
node = socket.inet_ntoa(bytes.fromhex([r[2] for r in route if r[1] == "00000000"][0])[::-1])
def ask(target):
    conn = http.client.HTTPConnection(*target, timeout=5)
    conn.request("POST", "/predict", body=b'{"features": [1, 2, 3]}')
    return json.loads(conn.getresponse().read())["pod"]
out = {}
targets = {"clusterip": (os.environ["ML_MODEL_SERVICE_HOST"],
                         int(os.environ["ML_MODEL_SERVICE_PORT"])),
           "dns": ("ml-model.default.svc.cluster.local", 80),
           "nodeport": (node, int(sys.argv[1])), "loadbalancer": (node, 80)}
with ThreadPoolExecutor(4) as pool:
    for name, target in targets.items():
        out[name] = collections.Counter(pool.map(lambda _i: ask(target), range(int(sys.argv[2]))))
print(json.dumps(out))
"""


def test_serve_model_is_spread_over_its_replicas(served: tuple[Cluster, dict[str, Any]]) -> None:
    """3,000 requests each to the ClusterIP, the Service's DNS name, the NodePort (on
    localhost) and the load balancer's address, from the host (the name looked up in the
    node's cluster DNS) and from a pod (the node's address: its gateway), each replica
    getting a third ±15 %."""
    c, svc = served
    pods = replicas(c)
    assert len(pods) == 3
    cluster_ip = svc["spec"]["clusterIP"]
    node_port = svc["spec"]["ports"][0]["nodePort"]
    [lb] = [i["ip"] for i in svc["status"]["loadBalancer"]["ingress"]]
    assert lb == "127.0.0.1"  # the node's address (the test server advertises loopback)
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network("10.96.0.0/12")
    [dns_ip] = resolve(c, "ml-model.default.svc.cluster.local")
    assert dns_ip == cluster_ip
    for what, host, port in (("ClusterIP", cluster_ip, 80), ("NodePort", "127.0.0.1", node_port),
                             ("LoadBalancer", lb, 80), ("the DNS name", dns_ip, 80)):
        assert_even(spread(host, port), pods, f"{what} from the host")

    spread_from_a_pod(c, node_port, REQUESTS, pods)


def spread_from_a_pod(c: Cluster, node_port: int, requests: int, pods: set[str]) -> None:
    """``requests`` each from a pod to the ClusterIP, the DNS name, the NodePort and the
    load balancer (on the pod's gateway: the node), each replica getting a third."""
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "client", "image": "python:3.11",
            "command": ["python", "-c", CLIENT_POD, str(node_port), str(requests)]}]}}))
    phase = wait_for("the client pod to finish", lambda: c.kubectl_json(
        "get", "pod", "client")["status"].get("phase") in ("Succeeded", "Failed") and
        c.kubectl_json("get", "pod", "client")["status"]["phase"], timeout=120)
    logs = c.kubectl("logs", "client").stdout
    assert phase == "Succeeded", logs
    for what, counts in json.loads(logs.splitlines()[-1]).items():
        assert_even(counts, pods, f"{what} from a pod")


def _milli(value: str) -> int:
    return int(value[:-1]) if value.endswith("m") else int(value) * 1000


def test_request_rates_per_pod_and_service(served: tuple[Cluster, dict[str, Any]]) -> None:
    """The kernel path's per-endpoint counters feed custom.metrics.k8s.io: every replica
    has a request rate, and together they make the Service's."""
    c, svc = served
    assert_even(spread(svc["spec"]["clusterIP"], 80, 600), replicas(c), "ClusterIP")
    base = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default"

    def rates() -> tuple[dict[str, int], int] | None:
        pods = json.loads(c.kubectl(
            "get", "--raw", f"{base}/pods/*/requests_per_second?labelSelector=app%3Dml-model"
        ).stdout)["items"]
        [service] = json.loads(c.kubectl(
            "get", "--raw", f"{base}/services/ml-model/requests_per_second").stdout)["items"]
        values = {i["describedObject"]["name"]: _milli(i["value"]) for i in pods}
        total = _milli(service["value"])
        # the counters are read every 2 s: wait until the pods' sum caught up
        return (values, total) if values and abs(sum(values.values()) - total) <= \
            max(50, total // 20) else None

    values, total = wait_for("per-pod request rates", rates, timeout=15)
    assert set(values) == replicas(c)
    assert all(v > 0 for v in values.values()), values
    assert total > 0
    assert "custom.metrics.k8s.io/v1beta2" in c.kubectl("api-versions").stdout


def resolve(c: Cluster, name: str, qtype: str = "A") -> list[str]:
    """Ask the node's cluster DNS (on its pod gateway address) from the host."""
    gateway = str(next(ipaddress.ip_network(c.pod_cidr).hosts()))
    reply = DNSRecord.parse(DNSRecord.question(name, qtype).send(gateway, 53, timeout=3))
    if reply.header.rcode == RCODE.NXDOMAIN:
        return ["NXDOMAIN"]
    return [str(rr.rdata) for rr in reply.rr]


STATEFULSET = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8000}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: python:3.11
        command: [python, -m, http.server, "8000"]
        ports: [{name: http, containerPort: 8000}]
        readinessProbe: {tcpSocket: {port: 8000}, periodSeconds: 1}
"""

RESOLVE = """
import socket, sys
for name in sys.argv[1:]:
    try:
        print(name, socket.gethostbyname(name))
    except socket.gaierror as e:
        print(name, "error", e.errno)
"""


def test_statefulset_pods_resolve_each_other(served: tuple[Cluster, dict[str, Any]]) -> None:
    """A StatefulSet's pods find each other as ``<pod>.<service>`` through the node's
    cluster DNS and their search path; unknown names are NXDOMAIN; SRV records name
    each pod."""
    c, _ = served
    c.kubectl("apply", "-f", "-", input=STATEFULSET)
    c.kubectl("rollout", "status", "statefulset/web", "--timeout=60s", timeout=70)
    ips = {p["metadata"]["name"]: p["status"]["podIP"]
           for p in c.kubectl_json("get", "pods", "-l", "app=web")["items"]}
    assert set(ips) == {"web-0", "web-1"}
    out = c.kubectl("exec", "web-0", "--", "python", "-c", RESOLVE, "web-1.web", "web-0.web",
                    "web.default.svc.cluster.local",
                    "nobody.web.default.svc.cluster.local.").stdout
    got = dict(line.split(" ", 1) for line in out.splitlines())
    assert got["web-1.web"] == ips["web-1"] and got["web-0.web"] == ips["web-0"]
    assert got["web.default.svc.cluster.local"] in ips.values()
    # (fully qualified: a short unknown name would go on to the host's resolvers)
    assert got["nobody.web.default.svc.cluster.local."] == f"error {socket.EAI_NONAME}"
    assert resolve(c, "nobody.web.default.svc.cluster.local") == ["NXDOMAIN"]
    assert sorted(resolve(c, "_http._tcp.web.default.svc.cluster.local", "SRV")) == [
        f"0 50 8000 {pod}.web.default.svc.cluster.local." for pod in ("web-0", "web-1")]
    c.kubectl("delete", "-f", "-", input=STATEFULSET)


def test_session_affinity_keeps_a_client_on_one_replica(
        served: tuple[Cluster, dict[str, Any]]) -> None:
    c, _ = served
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky"},
        "spec": {"selector": {"app": "ml-model"}, "sessionAffinity": "ClientIP",
                 "ports": [{"port": 81, "targetPort": 5000}]}}))
    ip = c.kubectl_json("get", "service", "sticky")["spec"]["clusterIP"]
    wait_for("the sticky service to answer", lambda: _answers(ip, 81))
    assert len(spread(ip, 81, 200)) == 1
    c.kubectl("delete", "service", "sticky")


def _answers(host: str, port: int) -> bool:
    try:
        return predict(host, port)[0] == 200
    except OSError:
        return False


def test_a_deleted_replica_stops_receiving_and_no_request_fails(
        served: tuple[Cluster, dict[str, Any]]) -> None:
    """A bounded load on the ClusterIP while a replica is deleted: no 5xx, every request
    answered (a connection the dying replica refused is retried), and once its endpoint
    is gone from the slice the replica gets no more requests."""
    c, svc = served
    ip = svc["spec"]["clusterIP"]
    victim = sorted(replicas(c))[0]
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 12
        while not stop.is_set() and time.monotonic() < deadline and len(answers) < 20000:
            t = time.monotonic()
            status, pod = predict(ip, 80, tries=5)
            answers.append((t, status, pod))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1.5)
        c.kubectl("delete", "pod", victim, "--wait=false")

        def victim_gone() -> float | None:
            slices = c.kubectl_json("get", "endpointslices", "-l",
                                    "kubernetes.io/service-name=ml-model")["items"]
            live = [e for s in slices for e in s.get("endpoints") or []
                    if (e.get("targetRef") or {}).get("name") == victim
                    and (e.get("conditions") or {}).get("ready")]
            return None if live else time.monotonic()
        removed = wait_for("the victim's endpoint to turn unready", victim_gone, every=0.05)
        time.sleep(3)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert answers and all(status == 200 for _, status, _ in answers)
    late = [t for t, _, pod in answers if pod == victim and t > removed + 1.0]
    assert late == [], f"{len(late)} requests reached {victim} over a second after its " \
                       "endpoint was removed"
    assert any(pod == victim for _, _, pod in answers)  # it did serve before


def _route(addr: str) -> str:
    proc = subprocess.run(["ip", "-o", "route", "get", addr], capture_output=True, text=True,
                          check=False)
    return (proc.stdout + proc.stderr).strip()


def _default_gateway_device() -> str:
    out = subprocess.run(["ip", "-o", "route", "show", "default"], capture_output=True,
                         text=True, check=False).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else ""


def test_ranges_stay_local_and_rules_go_with_the_server(tmp_path: Path) -> None:
    """No address of the pod or service range is routed to the default gateway while a
    server runs, an address no Service holds is refused at once, and the server's
    table, bridge and routes are gone once it stopped (and its pods were cleaned up)."""
    gateway_dev = _default_gateway_device()
    samples = ["10.42.0.1", "10.42.37.200", "10.42.255.254", "10.96.0.1", "10.100.7.9",
               "10.111.255.254"]
    running = agent_cluster(tmp_path, "--pod-network-pool", "0")
    c = next(running)
    try:
        c.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "nobody"},
            "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}}))
        table = table_name(c.data_dir / "agent")
        wait_for("the proxy's table", lambda: table in _tables())
        for addr in samples:
            route = _route(addr)
            assert "via" not in route and (not gateway_dev or f"dev {gateway_dev}" not in route), \
                f"{addr} would leave the machine: {route}"
        assert "dev kyb-svc" in _route("10.100.7.9")
        nobody = c.kubectl_json("get", "service", "nobody")["spec"]["clusterIP"]
        for addr in (nobody, "10.111.1.2"):  # refused, not left to time out
            with pytest.raises(ConnectionRefusedError):
                predict(addr, 80)
    finally:
        running.close()

    tables = _tables()
    assert table not in tables
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    if any(t.startswith("kybernetes_") for t in tables):  # another server's proxy still runs
        assert "10.96.0.0/12 dev kyb-svc" in routes, routes
    else:
        assert not Path("/sys/class/net/kyb-svc").exists()
        assert "10.96.0.0/12" not in routes, routes


def _tables() -> list[str]:
    return subprocess.run(["nft", "list", "tables", "ip"], capture_output=True,
                          text=True).stdout.split()
