"""NetworkPolicies -> what each pod of a node may accept and send -> an nft script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kybernetes.client import Client
from kybernetes.kubelet.netpol import NetworkPolicyEnforcer, verdict_inputs
from kybernetes.kubelet.netpol_rules import (
    Allow,
    PodRules,
    Ports,
    allow_rules,
    compile_rules,
    policy_types,
    render,
    table_name,
)

Obj = dict[str, Any]
CIDR = "10.42.0.0/24"
"""This node's pods: 10.42.0.x; 10.42.1.x run on another node."""


def pod(name: str, ip: str, ns: str = "default", *, ports: list[Obj] | None = None,
        phase: str = "Running", host_network: bool = False, **labels: str) -> Obj:
    spec: Obj = {"containers": [{"name": "main", "ports": ports or []}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": {"namespace": ns, "name": name, "labels": labels}, "spec": spec,
            "status": {"podIP": ip, "podIPs": [{"ip": ip}] if ip else [], "phase": phase}}


def namespace(name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "labels": labels}}


def policy(name: str = "p", ns: str = "default", *, select: Obj | None = None,
           ingress: list[Obj] | None = None, egress: list[Obj] | None = None,
           types: list[str] | None = None) -> Obj:
    spec: Obj = {"podSelector": select if select is not None else {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def app(value: str) -> Obj:
    return {"matchLabels": {"app": value}}


PODS = [
    pod("model", "10.42.0.5", app="ml-model", ports=[{"name": "http", "containerPort": 5000}]),
    pod("frontend", "10.42.0.6", app="frontend"),
    pod("other", "10.42.0.7", app="other"),
    pod("remote-frontend", "10.42.1.6", app="frontend"),
    pod("guest", "10.42.1.9", "guests", app="other"),
    pod("guest-frontend", "10.42.1.10", "guests", app="frontend"),
    pod("admin", "10.42.1.11", "admin", app="frontend"),
]
NAMESPACES = [namespace("default"), namespace("guests", team="guests"), namespace("admin")]


def rules_of(policies: list[Obj], pods: list[Obj] | None = None,
             namespaces: list[Obj] | None = None) -> dict[str, PodRules]:
    out = compile_rules(policies, PODS if pods is None else pods,
                        NAMESPACES if namespaces is None else namespaces, pod_cidr=CIDR)
    return {r.name: r for r in out}


def ingress_of(policies: list[Obj], name: str = "model") -> tuple[Allow, ...] | None:
    return rules_of(policies)[name].ingress


# -- who is isolated ----------------------------------------------------------------------

def test_no_policy_isolates_nobody() -> None:
    """Without policies every pod accepts and sends anything: nothing to render but the
    table's removal."""
    assert rules_of([]) == {}
    script = render([], table="kybernetes_netpol_0a2a0000", bridge="kyb0a2a0000")
    assert script == ("add table inet kybernetes_netpol_0a2a0000\n"
                      "delete table inet kybernetes_netpol_0a2a0000\n")


def test_a_policy_isolates_the_pods_it_selects_in_its_namespace_only() -> None:
    """Only pods of this node that the policy's podSelector matches, in its namespace."""
    got = rules_of([policy(select=app("frontend"), ingress=[])])
    assert set(got) == {"frontend"}  # not the remote one, not the guests' frontend
    assert got["frontend"].ingress == () and got["frontend"].egress is None
    assert set(rules_of([policy(select={}, ingress=[])])) == {"model", "frontend", "other"}
    assert rules_of([policy(ns="guests", select={}, ingress=[])]) == {}


@pytest.mark.parametrize(("spec", "types"), [
    pytest.param({}, ["Ingress"], id="default-ingress"),
    pytest.param({"egress": [{}]}, ["Ingress", "Egress"], id="egress-rules-add-egress"),
    pytest.param({"egress": []}, ["Ingress"], id="empty-egress-list-is-not-egress"),
    pytest.param({"policyTypes": ["Egress"]}, ["Egress"], id="explicit"),
])
def test_policy_types_default_as_upstream(spec: Obj, types: list[str]) -> None:
    assert policy_types({"spec": spec}) == types


def test_isolation_follows_policy_types() -> None:
    """An Egress-only policy leaves ingress open, and the reverse; both isolate both."""
    got = rules_of([policy(select=app("ml-model"), types=["Egress"])])["model"]
    assert got.ingress is None and got.egress == ()
    got = rules_of([policy(select=app("ml-model"), egress=[{}])])["model"]
    assert got.ingress == () and got.egress == (Allow(None),)


# -- peers ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("peer", "ips"), [
    pytest.param({"podSelector": app("frontend")}, ("10.42.0.6", "10.42.1.6"),
                 id="pod-selector-same-namespace-any-node"),
    pytest.param({"podSelector": {}}, ("10.42.0.5", "10.42.0.6", "10.42.0.7", "10.42.1.6"),
                 id="empty-pod-selector-whole-namespace"),
    pytest.param({"namespaceSelector": {"matchLabels": {"team": "guests"}}},
                 ("10.42.1.9", "10.42.1.10"), id="namespace-selector-all-its-pods"),
    pytest.param({"namespaceSelector": {"matchLabels": {"team": "guests"}},
                  "podSelector": app("frontend")}, ("10.42.1.10",),
                 id="both-selectors-and"),
    pytest.param({"namespaceSelector": {}, "podSelector": app("frontend")},
                 ("10.42.0.6", "10.42.1.6", "10.42.1.10", "10.42.1.11"),
                 id="empty-namespace-selector-all-namespaces"),
    pytest.param({"namespaceSelector": {"matchLabels":
                                        {"kubernetes.io/metadata.name": "admin"}}},
                 ("10.42.1.11",), id="namespace-name-label"),
    pytest.param({"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "NotIn", "values": ["frontend", "ml-model"]}]}},
                 ("10.42.0.7",), id="match-expressions"),
])
def test_pod_and_namespace_selector_peers(peer: Obj, ips: tuple[str, ...]) -> None:
    allows = ingress_of([policy(select=app("ml-model"), ingress=[{"from": [peer]}])])
    assert allows == (Allow(ips),)


def test_a_selector_matching_no_pod_allows_nothing() -> None:
    allows = ingress_of([policy(select=app("ml-model"),
                                ingress=[{"from": [{"podSelector": app("nobody")}]}])])
    assert allows == ()


def test_missing_or_empty_from_means_every_source() -> None:
    for rule in ({}, {"from": []}):
        assert ingress_of([policy(select=app("ml-model"), ingress=[rule])]) == (Allow(None),)


def test_ip_block_with_except() -> None:
    peer = {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}
    allows = ingress_of([policy(select=app("ml-model"),
                                ingress=[{"from": [peer, {"podSelector": app("frontend")}]}])])
    assert allows == (Allow(("10.42.0.6", "10.42.1.6")),
                      Allow(("192.168.0.0/16",), ("192.168.1.0/24",)))
    v6 = {"ipBlock": {"cidr": "fd00::/8"}}  # pods here have IPv4 addresses only
    assert ingress_of([policy(select=app("ml-model"), ingress=[{"from": [v6]}])]) == ()


def test_pods_without_a_pod_address_are_neither_peers_nor_isolated() -> None:
    pods = [*PODS, pod("pending", "", app="frontend"),
            pod("done", "10.42.0.20", phase="Succeeded", app="frontend"),
            pod("host", "192.168.5.5", host_network=True, app="frontend")]
    got = rules_of([policy(select={}, ingress=[{"from": [{"podSelector": app("frontend")}]}])],
                   pods)
    assert set(got) == {"model", "frontend", "other"}
    assert got["model"].ingress == (Allow(("10.42.0.6", "10.42.1.6")),)


def test_rules_and_policies_are_ored() -> None:
    """Two policies selecting one pod: their rules add up (duplicates once)."""
    a = policy("a", select=app("ml-model"), ingress=[{"from": [{"podSelector": app("frontend")}]}])
    b = policy("b", select={}, ingress=[{"from": [{"podSelector": app("other")}]},
                                        {"from": [{"podSelector": app("frontend")}]}])
    assert ingress_of([a, b]) == (Allow(("10.42.0.6", "10.42.1.6")), Allow(("10.42.0.7",)))


# -- ports ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("ports", "want"), [
    pytest.param([{"port": 80}], (Ports("tcp", 80),), id="tcp-by-default"),
    pytest.param([{"protocol": "UDP", "port": 53}, {"protocol": "SCTP", "port": 9}],
                 (Ports("sctp", 9), Ports("udp", 53)), id="udp-sctp"),
    pytest.param([{"protocol": "UDP"}], (Ports("udp"),), id="every-port-of-a-protocol"),
    pytest.param([{"port": 8000, "endPort": 8080}], (Ports("tcp", 8000, 8080),), id="range"),
    pytest.param([{"port": "http"}], (Ports("tcp", 5000),), id="named-port-of-the-target"),
    pytest.param([{"port": "http", "protocol": "UDP"}], None, id="named-port-wrong-protocol"),
    pytest.param([{"port": "grpc"}], None, id="unknown-named-port-matches-nothing"),
    pytest.param([{"port": "grpc"}, {"port": 81}], (Ports("tcp", 81),), id="named-and-number"),
])
def test_ingress_ports(ports: list[Obj], want: tuple[Ports, ...] | None) -> None:
    allows = ingress_of([policy(select=app("ml-model"), ingress=[{"ports": ports}])])
    assert allows == (() if want is None else (Allow(None, (), want),))


def test_egress_named_port_is_each_destinations_own() -> None:
    """For egress a port name means each destination pod's number for it."""
    pods = [*PODS, pod("model-b", "10.42.1.20", app="ml-model",
                       ports=[{"name": "http", "containerPort": 8080}]),
            pod("model-c", "10.42.1.21", app="ml-model",
                ports=[{"name": "http", "containerPort": 8080}])]
    rule = {"to": [{"podSelector": app("ml-model")}], "ports": [{"port": "http"}]}
    got = rules_of([policy(select=app("frontend"), egress=[rule])], pods)["frontend"]
    assert got.egress == (Allow(("10.42.0.5",), (), (Ports("tcp", 5000),)),
                          Allow(("10.42.1.20", "10.42.1.21"), (), (Ports("tcp", 8080),)))
    assert got.ingress == ()  # egress rules make it Ingress + Egress
    anywhere = {"ports": [{"port": "http"}]}  # no `to`: every pod with such a port
    got = rules_of([policy(select=app("frontend"), types=["Egress"], egress=[anywhere])],
                   pods)["frontend"]
    assert got.egress is not None and {a.peers for a in got.egress} == {
        ("10.42.0.5",), ("10.42.1.20", "10.42.1.21")}


def test_egress_peers_and_ip_blocks() -> None:
    rule = {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16"]}},
                   {"namespaceSelector": {"matchLabels": {"team": "guests"}}}],
            "ports": [{"port": 443}]}
    got = rules_of([policy(select=app("other"), types=["Egress"], egress=[rule])])["other"]
    assert got.ingress is None
    assert got.egress == (Allow(("10.42.1.9", "10.42.1.10"), (), (Ports("tcp", 443),)),
                          Allow(("10.0.0.0/8",), ("10.42.0.0/16",), (Ports("tcp", 443),)))


# -- nft --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("allow", "direction", "want"), [
    pytest.param(Allow(None), "saddr", [""], id="anything"),
    pytest.param(Allow(()), "saddr", [], id="nothing"),
    pytest.param(Allow(("10.42.0.6",)), "saddr", ["ip saddr 10.42.0.6"], id="one-address"),
    pytest.param(Allow(("10.0.0.0/8", "10.1.0.0/16", "10.42.0.6")), "daddr",
                 ["ip daddr 10.0.0.0/8"], id="overlaps-merged"),
    pytest.param(Allow(("0.0.0.0/0",), ("10.42.0.0/16", "10.42.1.0/24")), "saddr",
                 ["ip saddr 0.0.0.0/0 ip saddr != 10.42.0.0/16"], id="except"),
    pytest.param(Allow(None, (), (Ports("tcp", 80), Ports("tcp", 80, 90), Ports("tcp", 91),
                                  Ports("tcp", 443), Ports("udp"))), "daddr",
                 ["meta l4proto tcp th dport { 80-91, 443 }", "meta l4proto udp"],
                 id="ports-by-protocol-ranges-merged"),
    pytest.param(Allow(("10.42.0.6", "10.42.0.9"), (), (Ports("sctp", 9), Ports("sctp"))),
                 "saddr", ["ip saddr { 10.42.0.6, 10.42.0.9 } meta l4proto sctp"],
                 id="every-port-wins"),
])
def test_allow_rules(allow: Allow, direction: str, want: list[str]) -> None:
    assert allow_rules(allow, direction) == want


def test_render_dispatches_by_address_and_ends_in_drop() -> None:
    """Replies pass; the sender's egress chain, then the receiver's ingress chain, each
    returning when allowed; a pod always reaches itself."""
    rules = compile_rules([policy(select=app("ml-model"),
                                  ingress=[{"from": [{"podSelector": app("frontend")}],
                                            "ports": [{"port": "http"}]}]),
                           policy("e", select=app("other"), types=["Egress"])],
                          PODS, NAMESPACES, pod_cidr=CIDR)
    script = render(rules, table="kybernetes_netpol_0a2a0000", bridge="kyb0a2a0000")
    t = "inet kybernetes_netpol_0a2a0000"
    lines = script.splitlines()
    assert lines[:4] == [f"add table {t}", f"delete table {t}", f"add table {t}",
                         f"add chain {t} forward {{ type filter hook forward priority "
                         "filter; policy accept; }"]
    assert lines[-4:] == [
        f'add rule {t} forward iifname "kyb0a2a0000" meta nfproto ipv6 meta l4proto != '
        "ipv6-icmp counter drop",
        f"add rule {t} forward ct state established,related accept",
        f'add rule {t} forward iifname "kyb0a2a0000" ip saddr vmap '
        "{ 10.42.0.7 : jump egress-1 }",
        f'add rule {t} forward oifname "kyb0a2a0000" ip daddr vmap '
        "{ 10.42.0.5 : jump ingress-0 }"]
    assert f"add rule {t} ingress-0 ip saddr 10.42.0.5 return" in lines
    assert (f"add rule {t} ingress-0 ip saddr {{ 10.42.0.6, 10.42.1.6 }} meta l4proto tcp "
            "th dport 5000 return") in lines
    assert f'add rule {t} ingress-0 counter drop comment "default/model: ingress not ' \
           'allowed"' in lines
    assert f'add rule {t} egress-1 counter drop comment "default/other: egress not ' \
           'allowed"' in lines


def test_long_address_lists_are_named_sets_written_once() -> None:
    """Peers every isolated pod shares are one set of the table, not one per chain."""
    everyone = {"from": [{"namespaceSelector": {}}]}
    rules = compile_rules([policy(select={}, ingress=[everyone])], PODS, NAMESPACES,
                          pod_cidr=CIDR)
    script = render(rules, table="x", bridge="kyb0a2a0000")
    [declared] = [line for line in script.splitlines() if line.startswith("add set")]
    assert declared == ("add set inet x addresses-0 { type ipv4_addr; flags interval; "
                        "elements = { 10.42.0.5, 10.42.0.6/31, 10.42.1.6, 10.42.1.9, "
                        "10.42.1.10/31 }; }")
    assert script.count("ip saddr @addresses-0 return") == 3  # model, frontend, other


def test_table_name_follows_the_bridge() -> None:
    assert table_name("kyb0a2a6400") == "kybernetes_netpol_0a2a6400"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                    reason="checking a script needs nft and root")
def test_nft_accepts_the_script() -> None:
    """``nft --check`` parses and validates every construct the renderer emits."""
    rules = compile_rules([
        policy(select={}, ingress=[
            {"from": [{"podSelector": app("frontend")}, {"namespaceSelector": {}},
                      {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
             "ports": [{"port": "http"}, {"port": 8000, "endPort": 8080},
                       {"protocol": "UDP"}, {"protocol": "SCTP", "port": 9}]}, {}],
               egress=[{"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}])],
        PODS, NAMESPACES, pod_cidr=CIDR)
    script = render(rules, table="kybernetes_netpol_check", bridge="kyb0a2a0000")
    proc = subprocess.run(["nft", "--check", "-f", "-"], input=script, text=True,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


# -- the enforcer -----------------------------------------------------------------------------

async def test_enforcer_installs_and_removes_the_table(client: Client, tmp_path: Path) -> None:
    """From the API's policies, pods and namespaces: the table for this node's isolated
    pods, its name recorded for ``kyb killall``; stopped, the enforcer removes it."""
    scripts: list[str] = []
    model = pod("model", "", app="ml-model")
    model["spec"]["containers"][0]["image"] = "python:3.11"
    created = await client.create("v1", "pods", model, namespace="default")
    created["status"] = {"phase": "Running", "podIP": "10.42.0.5",
                         "podIPs": [{"ip": "10.42.0.5"}]}
    await client.update("v1", "pods", created, namespace="default", subresource="status")
    await client.create("networking.k8s.io/v1", "networkpolicies",
                        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         **policy("deny", select=app("ml-model"), ingress=[])},
                        namespace="default")
    enforcer = NetworkPolicyEnforcer(client, pod_cidr=CIDR, data_dir=tmp_path,
                                     nft=lambda s: scripts.append(s) or "")
    assert await enforcer.start()  # returns once the first rules are in place
    try:
        assert (tmp_path / "netpol-table").read_text() == "kybernetes_netpol_0a2a0000\n"
        [script] = scripts
        assert 'oifname "kyb0a2a0000" ip daddr vmap { 10.42.0.5 : jump ingress-0 }' in script
    finally:
        await enforcer.stop()
    assert scripts[-1] == ("add table inet kybernetes_netpol_0a2a0000\n"
                           "delete table inet kybernetes_netpol_0a2a0000\n")


def test_only_changes_that_can_alter_a_verdict_count() -> None:
    """A pod's status churn (conditions, restarts) or annotations do not recompile."""
    a = pod("model", "10.42.0.5", app="ml-model")
    b = {**a, "metadata": {**a["metadata"], "annotations": {"x": "y"}},
         "status": {**a["status"], "conditions": [{"type": "Ready", "status": "True"}]}}
    assert verdict_inputs(a) == verdict_inputs(b)
    for changed in (pod("model", "10.42.0.5", app="other"), pod("model", "10.42.0.6",
                                                                app="ml-model"),
                    pod("model", "10.42.0.5", phase="Failed", app="ml-model"),
                    pod("model", "10.42.0.5", app="ml-model",
                        ports=[{"name": "http", "containerPort": 80}])):
        assert verdict_inputs(a) != verdict_inputs(changed)
