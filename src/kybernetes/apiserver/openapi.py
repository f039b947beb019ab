"""OpenAPI documents: ``/openapi/v3`` per group-version (what kubectl needs for apply,
explain and server-side field validation) and a ``/openapi/v2`` document."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from kybernetes.api.registry import Registry, Resource
from kybernetes.api.schema import Definitions, to_openapi_v3

Obj = dict[str, Any]

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_COMMON = [_META + "Status", _META + "DeleteOptions", _META + "APIResourceList",
           _META + "WatchEvent", "io.k8s.api.autoscaling.v1.Scale"]
_PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json",
                "application/merge-patch+json", "application/strategic-merge-patch+json")


def crd_component_name(res: Resource) -> str:
    rev = ".".join(reversed(res.group.split(".")))
    return f"{rev}.{res.version}.{res.kind}"


def _ref(name: str) -> Obj:
    return {"$ref": "#/components/schemas/" + name}


def _params(*names: str) -> list[Obj]:
    descriptions = {
        "dryRun": "When present, indicates that modifications should not be persisted.",
        "fieldManager": "fieldManager is a name associated with the actor or entity that is "
                        "making these changes.",
        "fieldValidation": "fieldValidation instructs the server on how to handle objects in "
                           "the request containing unknown or duplicate fields. Valid values "
                           "are: Ignore, Warn, Strict.",
        "force": "Force is going to \"force\" Apply requests.",
        "pretty": "If 'true', then the output is pretty printed.",
    }
    return [{"name": n, "in": "query", "description": descriptions.get(n, n),
             "schema": {"type": "boolean" if n == "force" else "string",
                        "uniqueItems": True}} for n in names]


def _gvk(res: Resource) -> Obj:
    return {"group": res.group, "version": res.version, "kind": res.kind}


def _op(res: Resource, action: str, op_id: str, schema: str, *, body: str | None = None,
        patch: bool = False, params: tuple[str, ...] = ()) -> Obj:
    out: Obj = {
        "tags": [res.group or "core"],
        "operationId": op_id,
        "parameters": _params(*params),
        "responses": {"200": {"description": "OK", "content": {
            "application/json": {"schema": _ref(schema)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(res),
    }
    if patch:
        types = _PATCH_TYPES if not res.crd else tuple(
            t for t in _PATCH_TYPES if "strategic" not in t)
        out["requestBody"] = {"content": {t: {"schema": _ref(_META + "Patch")} for t in types},
                              "required": True}
    elif body is not None:
        out["requestBody"] = {"content": {"*/*": {"schema": _ref(body)}}, "required": True}
    return out


def _paths(res: Resource, kind_schema: str, list_schema: str) -> Obj:
    base = f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"
    coll = f"{base}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else \
        f"{base}/{res.plural}"
    item = coll + "/{name}"
    name = res.kind
    writes = ("dryRun", "fieldManager", "fieldValidation")
    paths: Obj = {
        coll: {
            "get": _op(res, "list", f"list{name}", list_schema),
            "post": _op(res, "post", f"create{name}", kind_schema, body=kind_schema,
                        params=writes),
            "delete": _op(res, "deletecollection", f"deletecollection{name}", _META + "Status"),
            "parameters": ([{"name": "namespace", "in": "path", "required": True,
                             "schema": {"type": "string"}}] if res.namespaced else []),
        },
        item: {
            "get": _op(res, "get", f"read{name}", kind_schema),
            "put": _op(res, "put", f"replace{name}", kind_schema, body=kind_schema,
                       params=writes),
            "patch": _op(res, "patch", f"patch{name}", kind_schema, patch=True,
                         params=(*writes, "force")),
            "delete": _op(res, "delete", f"delete{name}", _META + "Status"),
        },
    }
    for sub in res.subresources:
        if sub == "status":
            paths[item + "/status"] = {
                "get": _op(res, "get", f"read{name}Status", kind_schema),
                "put": _op(res, "put", f"replace{name}Status", kind_schema, body=kind_schema,
                           params=writes),
                "patch": _op(res, "patch", f"patch{name}Status", kind_schema, patch=True,
                             params=(*writes, "force")),
            }
        elif sub == "scale":
            scale = "io.k8s.api.autoscaling.v1.Scale"
            paths[item + "/scale"] = {
                "get": _op(res, "get", f"read{name}Scale", scale),
                "put": _op(res, "put", f"replace{name}Scale", scale, body=scale, params=writes),
                "patch": _op(res, "patch", f"patch{name}Scale", scale, patch=True,
                             params=(*writes, "force")),
            }
    if res.namespaced:
        paths[f"{base}/{res.plural}"] = {
            "get": _op(res, "list", f"list{name}ForAllNamespaces", list_schema)}
    return paths


def crd_schema(res: Resource) -> Obj:
    """The component schema of a custom resource version."""
    schema = dict(res.openapi or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    props = dict(schema.get("properties") or {})
    props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned "
                           "schema of this representation of an object."}
    props["kind"] = {"type": "string", "description": "Kind is a string value representing the "
                     "REST resource this object represents."}
    props["metadata"] = {"allOf": [_ref(_META + "ObjectMeta")], "description":
                         "Standard object's metadata."}
    schema["properties"] = props
    schema["type"] = "object"
    schema["x-kubernetes-group-version-kind"] = [_gvk(res)]
    return schema


class OpenAPI:
    def __init__(self, registry: Registry, defs: Definitions) -> None:
        self.registry = registry
        self.defs = defs
        self._generation = -1
        self._docs: dict[str, tuple[bytes, str]] = {}

    def _refresh(self) -> None:
        if self._generation != self.registry.generation:
            self._docs.clear()
            self._generation = self.registry.generation

    def _gv_paths(self) -> list[str]:
        out = []
        for g in self.registry.groups():
            for v in g.versions:
                out.append(f"apis/{g.name}/{v}" if g.name else f"api/{v}")
        return out

    def index(self) -> bytes:
        self._refresh()
        paths = {}
        for p in self._gv_paths():
            _, digest = self.document(p) or (b"", "")
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={digest}"}
        return orjson.dumps({"paths": paths})

    def document(self, path: str) -> tuple[bytes, str] | None:
        """(document bytes, hash) for ``api/v1`` or ``apis/<group>/<version>``."""
        self._refresh()
        cached = self._docs.get(path)
        if cached is not None:
            return cached
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return None
        resources = list(self.registry.resources(group, version))
        if not resources:
            return None
        builtin_roots: list[str] = [*_COMMON, _META + "Patch"]
        crd_components: Obj = {}
        paths: Obj = {}
        for res in resources:
            if res.crd:
                name = crd_component_name(res)
                crd_components[name] = crd_schema(res)
                crd_components[name + "List"] = {
                    "type": "object", "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                        "metadata": {"allOf": [_ref(_META + "ListMeta")]},
                        "items": {"type": "array", "items": _ref(name)}},
                    "required": ["items"],
                    "x-kubernetes-group-version-kind": [
                        {"group": res.group, "version": res.version,
                         "kind": res.kind + "List"}]}
                builtin_roots.append(_META + "ObjectMeta")
                builtin_roots.append(_META + "ListMeta")
                paths.update(_paths(res, name, name + "List"))
            else:
                builtin_roots.append(res.definition)
                list_def = res.definition + "List"
                if list_def in self.defs:
                    builtin_roots.append(list_def)
                paths.update(_paths(res, res.definition, list_def))
        components = to_openapi_v3(self.defs, self.defs.reachable(builtin_roots))
        components[_META + "Patch"] = {
            "description": "Patch is provided to give a concrete name and type to the "
                           "Kubernetes PATCH request body.", "type": "object"}
        components.update(crd_components)
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
               "paths": paths, "components": {"schemas": components}}
        data = orjson.dumps(doc)
        digest = hashlib.sha512(data).hexdigest()[:128].upper()
        self._docs[path] = (data, digest)
        return data, digest

    def swagger_v2(self) -> bytes:
        self._refresh()
        cached = self._docs.get("__v2__")
        if cached is not None:
            return cached[0]
        roots = [r.definition for r in self.registry.resources() if not r.crd] + list(_COMMON)
        names = self.defs.reachable(roots)
        v3 = to_openapi_v3(self.defs, names)
        raw = orjson.dumps(v3).replace(b"#/components/schemas/", b"#/definitions/")
        doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
               "paths": {}, "definitions": orjson.loads(raw)}
        data = orjson.dumps(doc)
        self._docs["__v2__"] = (data, "")
        return data
