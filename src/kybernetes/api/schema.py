"""The schemas of the built-in kinds, from the official Kubernetes 1.32 definitions.

The ``kubernetes-validate`` package ships the Kubernetes OpenAPI definitions as JSON
Schema (``$defs`` keyed by the OpenAPI definition name, nullable types written as
``["string", "null"]``). This module loads them once and offers two views:

- :class:`Definitions` – the raw definitions, with ``$ref`` resolution, used to compile
  validators (see :mod:`kybernetes.api.structural`) and by the strategic merge patch.
- :func:`to_openapi_v3` – the same definitions rewritten as OpenAPI v3 component
  schemas, the form kubectl reads from ``/openapi/v3``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

KUBERNETES_SCHEMA_VERSION = "v1.32.0-local"
REF_PREFIX = "#/$defs/"
OPENAPI_REF_PREFIX = "#/components/schemas/"

Schema = dict[str, Any]


class Definitions:
    """Named schema definitions with ``$ref`` resolution.

    >>> defs = builtin_definitions()
    >>> defs.resolve({"$ref": "#/$defs/io.k8s.api.core.v1.ConfigMap"})["type"]
    ['object', 'null']
    """

    def __init__(self, defs: dict[str, Schema]) -> None:
        self.defs = defs

    def __contains__(self, name: str) -> bool:
        return name in self.defs

    def get(self, name: str) -> Schema:
        return self.defs[name]

    def resolve(self, node: Schema | None) -> Schema | None:
        """Follow ``$ref`` (also a single-element ``allOf``) to the schema it names."""
        seen = 0
        while node is not None:
            ref = node.get("$ref")
            if ref is None:
                all_of = node.get("allOf")
                if all_of and len(all_of) == 1 and "$ref" in all_of[0]:
                    ref = all_of[0]["$ref"]
                else:
                    return node
            name = ref.rsplit("/", 1)[-1]
            node = self.defs.get(name)
            seen += 1
            if seen > 64:
                raise ValueError(f"$ref cycle at {ref}")
        return None

    def reachable(self, roots: Iterable[str]) -> list[str]:
        """Names of the definitions reachable from ``roots`` (roots included)."""
        out: dict[str, None] = {}
        stack = list(roots)
        while stack:
            name = stack.pop()
            if name in out or name not in self.defs:
                continue
            out[name] = None
            _collect_refs(self.defs[name], stack)
        return list(out)


def _collect_refs(node: Any, acc: list[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            acc.append(ref.rsplit("/", 1)[-1])
        for v in node.values():
            if isinstance(v, dict | list):
                _collect_refs(v, acc)
    elif isinstance(node, list):
        for v in node:
            _collect_refs(v, acc)


@functools.cache
def builtin_definitions() -> Definitions:
    """The Kubernetes 1.32 definitions shipped by kubernetes-validate (loaded once)."""
    # find_spec locates the package without importing it (and jsonschema with it).
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the kubernetes-validate package is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "kubernetes-json-schema" / KUBERNETES_SCHEMA_VERSION / "_definitions.json"
    data = orjson.loads(path.read_bytes())
    defs: dict[str, Schema] = data["$defs"]
    # kubernetes-validate pins apiVersion/kind of each kind with an enum; the upstream
    # OpenAPI does not, and a kind served under two versions must accept both.
    for d in defs.values():
        if "x-kubernetes-group-version-kind" in d:
            for field in ("apiVersion", "kind"):
                prop = d.get("properties", {}).get(field)
                if prop is not None:
                    prop.pop("enum", None)
    from kybernetes.api.kubeflow import DEFINITIONS as kubeflow
    from kybernetes.api.metrics import DEFINITIONS as metrics
    from kybernetes.api.podgroup import DEFINITIONS as podgroup

    defs.update(kubeflow)
    defs.update(metrics)
    defs.update(podgroup)
    return Definitions(defs)


# -- OpenAPI v3 -------------------------------------------------------------------

_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _openapi_node(node: Any) -> Any:
    """One JSON Schema node (kubernetes-validate dialect) as an OpenAPI v3 schema."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    ref = node.get("$ref")
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "type":
            if isinstance(value, list):
                types = [t for t in value if t != "null"]
                if len(types) == 1:
                    out["type"] = types[0]
                elif types:
                    out["type"] = types
            else:
                out["type"] = value
        elif key == "properties":
            out["properties"] = {k: _openapi_node(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _openapi_node(value)
        elif key in ("oneOf", "anyOf", "allOf"):
            out[key] = [_openapi_node(v) for v in value]
        elif key == "enum":
            out["enum"] = [v for v in value if v is not None]
        else:
            out[key] = value
    if ref is not None:
        target = OPENAPI_REF_PREFIX + ref.rsplit("/", 1)[-1]
        if out:
            out["allOf"] = [{"$ref": target}]
            if "default" not in out and not ref.endswith((_INT_OR_STRING, _QUANTITY)):
                out["default"] = {}
        else:
            out["$ref"] = target
    return out


def to_openapi_v3(defs: Definitions, names: Iterable[str]) -> dict[str, Schema]:
    """The named definitions as OpenAPI v3 component schemas."""
    out: dict[str, Schema] = {}
    for name in names:
        node = defs.get(name)
        if name == _INT_OR_STRING:
            out[name] = {"type": "string", "format": "int-or-string",
                         "x-kubernetes-int-or-string": True}
        elif name == _QUANTITY:
            out[name] = {
                "description": "Quantity is a fixed-point representation of a number.",
                "oneOf": [{"type": "string"}, {"type": "number"}],
            }
        else:
            out[name] = _openapi_node(node)
    return out
