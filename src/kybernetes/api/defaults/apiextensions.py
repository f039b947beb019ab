"""Defaults of CustomResourceDefinitions (``apiextensions/v1`` defaults)."""

from __future__ import annotations

from typing import Any

from kybernetes.api.strategy import defaulter, on_create

Obj = dict[str, Any]


@defaulter("apiextensions.k8s.io", "CustomResourceDefinition")
def default_crd(crd: Obj) -> None:
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        spec = crd["spec"] = {}
    names = spec.get("names")
    if isinstance(names, dict):
        if not names.get("singular"):
            names["singular"] = str(names.get("kind", "")).lower()
        if not names.get("listKind") and names.get("kind"):
            names["listKind"] = names["kind"] + "List"
    conversion = spec.get("conversion")
    if not isinstance(conversion, dict):
        conversion = spec["conversion"] = {"strategy": "None"}
    service = (((conversion.get("webhook") or {}).get("clientConfig") or {}).get("service"))
    if isinstance(service, dict) and service.get("port") is None:
        service["port"] = 443
    default_stored_versions(crd)


@on_create("apiextensions.k8s.io", "CustomResourceDefinition")
def default_stored_versions(crd: Obj) -> None:
    """The storage version is stored (also a create hook: creating resets the status)."""
    status = crd.get("status")
    if not isinstance(status, dict):
        status = crd["status"] = {}
    if not status.get("storedVersions"):
        stored = [v["name"] for v in (crd.get("spec") or {}).get("versions") or []
                  if isinstance(v, dict) and v.get("storage") is True and v.get("name")]
        if stored:
            status["storedVersions"] = stored[:1]
