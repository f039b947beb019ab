"""A pod's /etc/resolv.conf by dnsPolicy and dnsConfig, as the kubelet writes it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kybernetes.kubelet.pods import PodManager


def conf(spec: dict[str, Any], *, host: str = "nameserver 192.0.2.53\nsearch corp.example\n"
         "options edns0\n", networked: bool = True,
         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(host)
    real = Path

    def fake_path(*parts: Any) -> Path:
        return resolv if parts == ("/etc/resolv.conf",) else real(*parts)

    monkeypatch.setattr("kybernetes.kubelet.pods.Path", fake_path)
    stub = SimpleNamespace(network=SimpleNamespace(available=lambda: networked,
                                                   gateway="10.42.0.1"))
    pod = {"metadata": {"namespace": "team-a"}, "spec": spec}
    return PodManager.resolv_conf(stub, pod).splitlines()  # type: ignore[arg-type]


def test_cluster_first_asks_the_node_dns(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    assert conf({}, monkeypatch=monkeypatch, tmp_path=tmp_path) == [
        "nameserver 10.42.0.1",
        "search team-a.svc.cluster.local svc.cluster.local cluster.local corp.example",
        "options ndots:5"]


def test_host_network_and_default_take_the_hosts(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    host = ["nameserver 192.0.2.53", "search corp.example", "options edns0"]
    assert conf({"hostNetwork": True}, monkeypatch=monkeypatch, tmp_path=tmp_path) == host
    assert conf({"dnsPolicy": "Default"}, monkeypatch=monkeypatch, tmp_path=tmp_path) == host
    assert conf({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"},
                monkeypatch=monkeypatch, tmp_path=tmp_path)[0] == "nameserver 10.42.0.1"


def test_none_uses_only_dns_config_and_others_merge_it(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    cfg = {"nameservers": ["192.0.2.1"], "searches": ["ns1.svc.cluster-domain.example"],
           "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}
    assert conf({"dnsPolicy": "None", "dnsConfig": cfg}, monkeypatch=monkeypatch,
                tmp_path=tmp_path) == ["nameserver 192.0.2.1",
                                       "search ns1.svc.cluster-domain.example",
                                       "options ndots:2 edns0"]
    lines = conf({"dnsConfig": cfg}, monkeypatch=monkeypatch, tmp_path=tmp_path)
    assert lines[:2] == ["nameserver 10.42.0.1", "nameserver 192.0.2.1"]
    assert lines[2].endswith("corp.example ns1.svc.cluster-domain.example")
    assert lines[3] == "options ndots:2 edns0"
