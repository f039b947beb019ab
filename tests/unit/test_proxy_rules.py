"""The service proxy's rules: Services and EndpointSlices -> an nft script."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from kybernetes.controllers.servicelb import node_addresses, wanted_ingress
from kybernetes.proxy.rules import (
    EndpointCounter,
    Installed,
    endpoint_connections,
    render,
    service_ports,
)

Obj = dict[str, Any]


def svc(name: str = "web", *, type_: str = "ClusterIP", ip: str = "10.96.0.10",
        ports: list[Obj] | None = None, lb: list[str] | None = None, **spec: Any) -> Obj:
    out: Obj = {"metadata": {"namespace": "default", "name": name},
                "spec": {"type": type_, "clusterIP": ip,
                         "ports": ports or [{"port": 80, "targetPort": 5000,
                                             "protocol": "TCP", "nodePort": 30080}],
                         **spec}}
    if lb:
        out["status"] = {"loadBalancer": {"ingress": [{"ip": a} for a in lb]}}
    return out


def ep(ip: str, *, ready: bool = True, serving: bool | None = None,
       terminating: bool = False, node: str = "n1", pod: str = "") -> Obj:
    cond: Obj = {"ready": ready, "terminating": terminating}
    if serving is not None:
        cond["serving"] = serving
    out: Obj = {"addresses": [ip], "conditions": cond, "nodeName": node}
    if pod:
        out["targetRef"] = {"kind": "Pod", "namespace": "default", "name": pod, "uid": "u"}
    return out


def slice_(*endpoints: Obj, port: int = 5000, name: str = "") -> Obj:
    return {"addressType": "IPv4", "ports": [{"name": name, "port": port, "protocol": "TCP"}],
            "endpoints": list(endpoints)}


def test_only_ready_endpoints_receive_traffic() -> None:
    [sp] = service_ports(svc(), [slice_(ep("10.42.0.3"), ep("10.42.0.2"),
                                        ep("10.42.0.4", ready=False))])
    assert [(e.ip, e.port) for e in sp.usable()] == [("10.42.0.2", 5000), ("10.42.0.3", 5000)]
    assert sp.node_port == 0  # a ClusterIP Service has none, whatever its spec says


def test_terminating_serving_endpoints_are_the_fallback() -> None:
    [sp] = service_ports(svc(), [slice_(
        ep("10.42.0.2", ready=False, serving=True, terminating=True),
        ep("10.42.0.3", ready=False, serving=False, terminating=True))])
    assert [e.ip for e in sp.usable()] == ["10.42.0.2"]
    [sp] = service_ports(svc(), [slice_(
        ep("10.42.0.2", ready=False, serving=True, terminating=True), ep("10.42.0.5"))])
    assert [e.ip for e in sp.usable()] == ["10.42.0.5"]


def test_named_ports_take_their_slice_port() -> None:
    s = svc(ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                   {"name": "grpc", "port": 90, "protocol": "TCP"}])
    slices = [slice_(ep("10.42.0.2"), port=8080, name="http"),
              slice_(ep("10.42.0.2"), port=9090, name="grpc")]
    got = {sp.name: [(e.ip, e.port) for e in sp.endpoints] for sp in service_ports(s, slices)}
    assert got == {"default/web:http": [("10.42.0.2", 8080)],
                   "default/web:grpc": [("10.42.0.2", 9090)]}


def test_headless_and_external_name_services_get_no_rules() -> None:
    assert service_ports(svc(ip="None"), [slice_(ep("10.42.0.2"))]) == []
    assert service_ports(svc(type_="ExternalName", ip=""), []) == []


def test_load_balancer_port_served_only_once_it_has_an_address() -> None:
    [pending] = service_ports(svc(type_="LoadBalancer"), [slice_(ep("10.42.0.2"))])
    [ready] = service_ports(svc(type_="LoadBalancer", lb=["127.0.0.1"]),
                            [slice_(ep("10.42.0.2"))])
    assert (pending.node_port, pending.load_balancer) == (30080, False)
    assert (ready.node_port, ready.load_balancer) == (30080, True)
    script, _ = render([ready], table="t", node="n1", service_cidr="10.96.0.0/12")
    assert "tcp . 80 : goto ext-0, tcp . 30080 : goto ext-0" in script


def test_render_spreads_over_endpoints_and_masquerades_hairpin() -> None:
    ports = service_ports(svc(), [slice_(ep("10.42.0.2"), ep("10.42.0.3"), ep("10.42.0.4"))])
    script, installed = render(ports, table="kybernetes_x", node="n1",
                               service_cidr="10.96.0.0/12")
    assert "10.96.0.10 . tcp . 80 : goto svc-0" in script
    assert "numgen random mod 3 vmap { 0 : goto ep-" in script
    for ip in ("10.42.0.2", "10.42.0.3", "10.42.0.4"):
        assert f"ip saddr {ip} meta mark set meta mark | 0x4000" in script
        assert f"meta l4proto tcp dnat to {ip}:5000" in script
    assert "add rule ip kybernetes_x filter-forward ip daddr 10.96.0.0/12 reject" in script
    # a service range another server's userspace proxy made local is its to answer
    assert ("add rule ip kybernetes_x filter-output ip daddr 10.96.0.0/12 "
            "fib daddr type != local reject") in script
    assert "delete table ip kybernetes_x" in script  # no previous state: start afresh
    assert {"svc-0", "services", "nat-output"} <= installed.chains


def test_a_service_without_endpoints_is_rejected_not_routed() -> None:
    ports = service_ports(svc(), [slice_(ep("10.42.0.2", ready=False))])
    script, installed = render(ports, table="t", node="n1", service_cidr="10.96.0.0/12")
    assert "goto svc-" not in script and "svc-0" not in installed.chains


def test_traffic_policies_local_use_this_nodes_endpoints() -> None:
    slices = [slice_(ep("10.42.0.2", node="n1"), ep("10.42.1.2", node="n2"))]
    [cluster] = service_ports(svc(type_="NodePort", internalTrafficPolicy="Local",
                                  externalTrafficPolicy="Local"), slices)
    assert [e.ip for e in cluster.cluster_endpoints("n1")] == ["10.42.0.2"]
    assert [e.ip for e in cluster.external_endpoints("n2")] == ["10.42.1.2"]
    script, _ = render([cluster], table="t", node="n3", service_cidr="10.96.0.0/12")
    # no endpoint on n3: the node port drops, and the ClusterIP is not routed
    assert "add rule ip t ext-0 drop" in script and "goto svc-0" not in script


def test_session_affinity_sets_survive_a_resync() -> None:
    s = svc(sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    ports = service_ports(s, [slice_(ep("10.42.0.2"), ep("10.42.0.3"))])
    script, first = render(ports, table="t", node="n1", service_cidr="10.96.0.0/12")
    assert len(first.sets) == 2
    assert "flags dynamic,timeout; timeout 60s;" in script
    assert "update @aff-" in script
    ports = service_ports(s, [slice_(ep("10.42.0.2"))])
    script, second = render(ports, table="t", node="n1", service_cidr="10.96.0.0/12",
                            previous=first)
    assert "delete table" not in script
    kept, = second.sets
    assert kept in first.sets and f"delete set ip t {(first.sets - {kept}).pop()}" in script
    assert "flush chain ip t svc-0" in script


def test_endpoints_know_their_pods() -> None:
    [sp] = service_ports(svc(), [slice_(ep("10.42.0.2", pod="web-a"), ep("10.42.0.3"),
                                        {"addresses": ["10.42.0.4"], "targetRef": {
                                            "kind": "Node", "name": "n1"}})])
    assert [(e.ip, e.pod) for e in sp.endpoints] == [
        ("10.42.0.2", "web-a"), ("10.42.0.3", ""), ("10.42.0.4", "")]


def test_each_endpoint_counts_its_connections_across_resyncs() -> None:
    s = svc(ports=[{"name": "http", "port": 80, "protocol": "TCP"}])
    ports = service_ports(s, [slice_(ep("10.42.0.2", pod="web-a"), ep("10.42.0.3", pod="web-b"),
                                     name="http")])
    script, first = render(ports, table="t", node="n1", service_cidr="10.96.0.0/12")
    assert sorted(first.endpoint_counters.values(), key=lambda c: c.ip) == [
        EndpointCounter("default", "web", "10.42.0.2", "web-a"),
        EndpointCounter("default", "web", "10.42.0.3", "web-b")]
    for name in first.endpoint_counters:
        assert f"add counter ip t {name}" in script
        assert f" counter name {name}\n" in script  # in the endpoint's chain
    # a resync that adds session affinity (new chain names) and drops web-b keeps web-a's
    # counter (and so its count), and deletes web-b's
    s["spec"]["sessionAffinity"] = "ClientIP"
    ports = service_ports(s, [slice_(ep("10.42.0.2", pod="web-a"), name="http")])
    script, second = render(ports, table="t", node="n1", service_cidr="10.96.0.0/12",
                            previous=first)
    [kept] = second.endpoint_counters
    [gone] = first.endpoint_counters.keys() - {kept}
    assert kept in first.endpoint_counters and first.endpoint_counters[gone].pod == "web-b"
    assert f"delete counter ip t {gone}" in script
    assert not any(line.startswith("delete counter") and kept in line
                   for line in script.splitlines())
    assert set(second.counters) == set(first.counters)  # the service port's counter stays


def test_endpoint_connections_between_two_readings() -> None:
    installed = Installed(counters={"cnt-svc": "default/web"}, endpoint_counters={
        "cnt-ep-a": EndpointCounter("default", "web", "10.42.0.2", "web-a"),
        "cnt-ep-a2": EndpointCounter("default", "api", "10.42.0.2", "web-a"),
        "cnt-ep-b": EndpointCounter("default", "web", "10.42.0.3", "web-b"),
        "cnt-ep-c": EndpointCounter("default", "web", "10.42.0.4", "web-c"),
        "cnt-ep-x": EndpointCounter("default", "web", "10.42.0.9", "")})
    before = {"cnt-svc": 5, "cnt-ep-a": 3, "cnt-ep-a2": 1, "cnt-ep-b": 10, "cnt-ep-x": 0}
    now = {"cnt-svc": 20, "cnt-ep-a": 7, "cnt-ep-a2": 2, "cnt-ep-b": 4, "cnt-ep-c": 9,
           "cnt-ep-x": 4}
    assert endpoint_connections(installed, before, now) == {
        ("default", "web-a"): 5,  # 4 + 1: both Services' connections to the pod
        ("default", "web-b"): 4,  # the counter went down: recreated, counts from zero
    }  # web-c: first read now; the address without a pod is no pod's


def test_obsolete_chains_are_flushed_then_deleted() -> None:
    old = Installed(chains={"services", "svc-0", "ep-aaaa"}, sets=set())
    script, _ = render([], table="t", node="n1", service_cidr="10.96.0.0/12", previous=old)
    lines = script.splitlines()
    assert lines.index("flush chain ip t ep-aaaa") < lines.index("delete chain ip t svc-0")
    assert "delete chain ip t ep-aaaa" in lines and "delete chain ip t services" not in lines


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"),
                    reason="checking scripts with `nft -c` needs root and nft (nftables)")
def test_scripts_are_valid_nft() -> None:
    s = svc(type_="LoadBalancer", lb=["127.0.0.1"], sessionAffinity="ClientIP",
            ports=[{"name": "a", "port": 80, "protocol": "TCP", "nodePort": 30080},
                   {"name": "b", "port": 53, "protocol": "UDP", "nodePort": 30053}])
    slices = [slice_(ep("10.42.0.2", pod="p-2"), ep("10.42.0.3"), name="a"),
              {"addressType": "IPv4", "ports": [{"name": "b", "port": 5353,
                                                 "protocol": "UDP"}],
               "endpoints": [ep("10.42.0.2")]}]
    script, _ = render(service_ports(s, slices), table="kybernetes_unittest", node="n1",
                       service_cidr="10.96.0.0/12")
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=script, text=True,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def node(name: str, ip: str, *, ready: str = "True", fake: bool = False,
         external: str = "") -> Obj:
    addrs = [{"type": "InternalIP", "address": ip}]
    if external:
        addrs.append({"type": "ExternalIP", "address": external})
    return {"metadata": {"name": name,
                         "labels": {"kybernetes.io/fake-node": "true"} if fake else {}},
            "status": {"addresses": addrs, "conditions": [{"type": "Ready", "status": ready}]}}


def test_load_balancer_addresses_are_the_ready_real_nodes() -> None:
    nodes = [node("b", "192.0.2.3", external="198.51.100.1"), node("a", "192.0.2.2"),
             node("c", "192.0.2.4", ready="Unknown"), node("d", "10.0.0.1", fake=True)]
    assert node_addresses(nodes) == ["192.0.2.2", "198.51.100.1"]


def test_load_balancer_controller_wakes_only_for_what_can_change_an_address() -> None:
    """A fake node's periodic status, a real node's heartbeat and a ClusterIP Service do
    not queue a pass over every node; a node turning Ready, a new real node and a
    LoadBalancer Service (also one that stops being one) do."""
    from kybernetes.controllers.servicelb import ServiceLBController

    c = ServiceLBController(object())  # (its informers and queue, never started)
    ready, beat = node("a", "192.0.2.2"), node("a", "192.0.2.2")
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-11-24T05:00:00Z"
    quiet = [(c._node_updated, ready, beat),
             (c._node_updated, node("f", "10.0.0.1", fake=True),
              node("f", "10.0.0.1", fake=True, ready="False")),
             (c._node_added_or_deleted, node("g", "10.0.0.2", fake=True)),
             (c._service_changed, svc("x"), svc("x", type_="NodePort"))]
    for handler, *objs in quiet:
        handler(*objs)
        assert len(c.queue) == 0, (handler.__name__, objs)
    loud = [(c._node_updated, node("a", "192.0.2.2", ready="Unknown"), ready),
            (c._node_updated, ready, node("a", "192.0.2.9")),
            (c._node_added_or_deleted, node("b", "192.0.2.3")),
            (c._service_changed, svc("lb", type_="LoadBalancer")),
            (c._service_changed, svc("lb", type_="LoadBalancer"), svc("lb"))]
    for handler, *objs in loud:
        handler(*objs)
        assert len(c.queue) == 1, (handler.__name__, objs)
        c.queue = type(c.queue)(name="service-lb")


def test_a_load_balancer_port_belongs_to_the_oldest_service() -> None:
    def lb(name: str, created: str, port: int) -> Obj:
        s = svc(name, type_="LoadBalancer", ports=[{"port": port, "protocol": "TCP"}])
        s["metadata"]["creationTimestamp"] = created
        return s

    wanted = wanted_ingress([lb("new", "2026-01-02T00:00:00Z", 80),
                             lb("old", "2026-01-01T00:00:00Z", 80),
                             lb("other", "2026-01-03T00:00:00Z", 81),
                             svc("plain")], ["127.0.0.1"])
    assert wanted["default/old"] == ([{"ip": "127.0.0.1"}], "")
    assert wanted["default/other"] == ([{"ip": "127.0.0.1"}], "")
    assert wanted["default/new"][0] == []
    assert "port 80/TCP is already used by LoadBalancer Service default/old" in \
        wanted["default/new"][1]
    assert "default/plain" not in wanted
