"""``meta.k8s.io/v1`` Table and PartialObjectMetadata responses (``kubectl get``)."""

from __future__ import annotations

from typing import Any

from kybernetes.api.registry import Resource

Obj = dict[str, Any]

TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def wants(accept: str) -> str:
    """"Table", "PartialObjectMetadata" or "" from an Accept header."""
    if "as=Table" in accept:
        return "Table"
    if "as=PartialObjectMetadata" in accept:
        return "PartialObjectMetadata"
    return ""


def partial(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {})}


def _printers() -> Any:
    from kybernetes.api import printers  # the first Table request loads it

    return printers


def columns(res: Resource) -> list[Obj]:
    printers = _printers()
    cols: list[Obj]
    if res.crd or res.printer_columns:
        cols = printers.crd_columns(res.printer_columns)
    else:
        cols = printers.columns(res.group, res.kind)
    return cols


def row(res: Resource, obj: Obj, now: float, include: str) -> Obj:
    printers = _printers()
    if res.crd or res.printer_columns:
        cells = printers.crd_cells(res.printer_columns, obj, now)
    else:
        cells = printers.cells(res.group, res.kind, obj, now)
    out: Obj = {"cells": cells}
    if include == "Object":
        out["object"] = obj
    elif include != "None":
        out["object"] = partial(obj)
    return out


def table(res: Resource, objs: list[Obj], now: float, *, include: str = "Metadata",
          resource_version: str = "", cont: str = "", with_columns: bool = True) -> Obj:
    meta: Obj = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if cont:
        meta["continue"] = cont
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(res) if with_columns else [],
        "rows": [row(res, o, now, include) for o in objs],
    }
