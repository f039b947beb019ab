"""Defaults of NetworkPolicies and IngressClasses (Ingresses have none)."""

from __future__ import annotations

from typing import Any

from kybernetes.api.strategy import defaulter

Obj = dict[str, Any]


@defaulter("networking.k8s.io", "NetworkPolicy")
def default_network_policy(np: Obj) -> None:
    spec = np.get("spec")
    if not isinstance(spec, dict):
        spec = np["spec"] = {}
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in (rule.get("ports") or []) if isinstance(rule, dict) else []:
                if isinstance(port, dict) and port.get("protocol") is None:
                    port["protocol"] = "TCP"
    if not spec.get("policyTypes"):
        # A policy that does not say implies Ingress, plus Egress when it has egress rules.
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])


@defaulter("networking.k8s.io", "IngressClass")
def default_ingress_class(ic: Obj) -> None:
    params = (ic.get("spec") or {}).get("parameters")
    if isinstance(params, dict) and params.get("scope") is None:
        params["scope"] = "Cluster"
