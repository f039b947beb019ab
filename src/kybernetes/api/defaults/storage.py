"""Defaults of StorageClasses."""

from __future__ import annotations

from typing import Any

from kybernetes.api.strategy import defaulter

Obj = dict[str, Any]


@defaulter("storage.k8s.io", "StorageClass")
def default_storage_class(sc: Obj) -> None:
    if sc.get("reclaimPolicy") is None:
        sc["reclaimPolicy"] = "Delete"
    if sc.get("volumeBindingMode") is None:
        sc["volumeBindingMode"] = "Immediate"
