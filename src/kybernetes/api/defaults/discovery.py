"""Defaults of EndpointSlices."""

from __future__ import annotations

from typing import Any

from kybernetes.api.strategy import defaulter

Obj = dict[str, Any]


@defaulter("discovery.k8s.io", "EndpointSlice")
def default_endpoint_slice(es: Obj) -> None:
    for port in es.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("name", "")
            if port.get("protocol") is None:
                port["protocol"] = "TCP"
