"""Discovery documents: aggregated (apidiscovery.k8s.io/v2) and legacy, cached per
registry generation.

Besides the registry's groups, a group-version can be served whose "resources" are not
stored objects (:meth:`Discovery.serve`): the metric APIs, where upstream an aggregated
adapter lists one resource per metric (``pods/requests_per_second``). Their aggregated
form is what kube-aggregator makes of such an adapter's legacy list: a name with a slash
becomes a subresource, under a parent with no kind and no verbs when there is none
(clients leave such a parent out, and keep the subresource).
"""

from __future__ import annotations

from typing import Any

import orjson

from kybernetes.api.registry import Registry, Resource

Obj = dict[str, Any]

AGGREGATED_CONTENT_TYPE = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")

# subresource -> (group, version, kind, verbs) of its response; None: same as the parent
_SUBRESOURCES: dict[str, tuple[str, str, str, tuple[str, ...]] | None] = {
    "status": None,
    "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "binding": ("", "v1", "Binding", ("create",)),
    "eviction": ("policy", "v1", "Eviction", ("create",)),
    "log": ("", "v1", "Pod", ("get",)),
    "exec": ("", "v1", "PodExecOptions", ("create", "get")),
    "attach": ("", "v1", "PodAttachOptions", ("create", "get")),
    "portforward": ("", "v1", "PodPortForwardOptions", ("create", "get")),
    "proxy": ("", "v1", "PodProxyOptions", ("create", "delete", "get", "patch", "update")),
    "ephemeralcontainers": None,
    "finalize": None,
    "token": ("authentication.k8s.io", "v1", "TokenRequest", ("create",)),
}
_STATUS_VERBS = ("get", "patch", "update")
_PROXY_KINDS = {"Pod": "PodProxyOptions", "Node": "NodeProxyOptions",
                "Service": "ServiceProxyOptions"}


def _sub(res: Resource, sub: str) -> tuple[str, str, str, tuple[str, ...]]:
    spec = _SUBRESOURCES.get(sub)
    if spec is None:
        verbs = ("update",) if sub == "finalize" else _STATUS_VERBS
        return res.group, res.version, res.kind, verbs
    if sub == "proxy":
        return "", "v1", _PROXY_KINDS.get(res.kind, "PodProxyOptions"), spec[3]
    return spec


def _aggregated_resource(res: Resource) -> Obj:
    out: Obj = {
        "resource": res.plural,
        "responseKind": {"group": res.group, "version": res.version, "kind": res.kind},
        "scope": "Namespaced" if res.namespaced else "Cluster",
        "singularResource": res.singular,
        "verbs": sorted(res.verbs),
    }
    if res.short_names:
        out["shortNames"] = list(res.short_names)
    if res.categories:
        out["categories"] = list(res.categories)
    subs = []
    for sub in res.subresources:
        g, v, k, verbs = _sub(res, sub)
        subs.append({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k},
                     "verbs": list(verbs)})
    if subs:
        out["subresources"] = subs
    return out


def _aggregated_from_legacy(resources: list[Obj]) -> list[Obj]:
    out: dict[str, Obj] = {}
    for r in resources:
        if "/" in r["name"]:
            continue
        out[r["name"]] = {
            "resource": r["name"], "singularResource": r.get("singularName", ""),
            "responseKind": {"group": r.get("group", ""), "version": r.get("version", ""),
                             "kind": r.get("kind", "")},
            "scope": "Namespaced" if r.get("namespaced") else "Cluster",
            "verbs": list(r.get("verbs") or [])}
    for r in resources:
        parent, sep, sub = r["name"].partition("/")
        if not sep:
            continue
        entry = out.get(parent)
        if entry is None:
            entry = out[parent] = {
                "resource": parent, "singularResource": "",
                "responseKind": {"group": "", "version": "", "kind": ""},
                "scope": "Namespaced" if r.get("namespaced") else "Cluster", "verbs": []}
        entry.setdefault("subresources", []).append({
            "subresource": sub, "verbs": list(r.get("verbs") or []),
            "responseKind": {"group": r.get("group", ""), "version": r.get("version", ""),
                             "kind": r.get("kind", "")}})
    return [out[k] for k in sorted(out)]


def _legacy_resources(res: Resource) -> list[Obj]:
    out: list[Obj] = [{
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": sorted(res.verbs),
    }]
    if res.short_names:
        out[0]["shortNames"] = list(res.short_names)
    if res.categories:
        out[0]["categories"] = list(res.categories)
    for sub in res.subresources:
        g, v, k, verbs = _sub(res, sub)
        entry: Obj = {"name": f"{res.plural}/{sub}", "singularName": "",
                      "namespaced": res.namespaced, "kind": k, "verbs": list(verbs)}
        if (g, v) != (res.group, res.version):
            entry["group"] = g
            entry["version"] = v
        out.append(entry)
    return out


class Discovery:
    def __init__(self, registry: Registry, *, server_address: str = "") -> None:
        self.registry = registry
        self.server_address = server_address
        self._generation = -1
        self._cache: dict[str, bytes] = {}
        self._served: dict[str, tuple[str, list[Obj]]] = {}
        """Group -> (version, legacy APIResources) of the groups served besides the
        registry's (see :meth:`serve`)."""

    def serve(self, group: str, version: str, resources: list[Obj] | None) -> None:
        """List ``group/version`` with ``resources`` (legacy APIResource objects), or with
        None stop listing it. A group the registry has is listed from the registry."""
        if resources is None:
            self._served.pop(group, None)
        else:
            self._served[group] = (version, resources)
        self._cache.clear()

    def _extra(self) -> list[str]:
        """The served groups the registry does not have, in the order they were added."""
        return [g for g in self._served if self.registry.group(g) is None]

    def _cached(self, key: str, build: Any) -> bytes:
        if self._generation != self.registry.generation:
            self._cache.clear()
            self._generation = self.registry.generation
        data = self._cache.get(key)
        if data is None:
            data = self._cache[key] = orjson.dumps(build())
        return data

    def _group_discovery(self, group: str) -> Obj:
        g = self.registry.group(group)
        assert g is not None
        versions = []
        for v in g.versions:
            resources = sorted((_aggregated_resource(r) for r in self.registry.resources(group, v)),
                               key=lambda r: r["resource"])
            versions.append({"version": v, "resources": resources, "freshness": "Current"})
        meta: Obj = {"name": group} if group else {}
        return {"metadata": meta, "versions": versions}

    def _served_discovery(self, group: str) -> Obj:
        version, resources = self._served[group]
        return {"metadata": {"name": group}, "versions": [{
            "version": version, "resources": _aggregated_from_legacy(resources),
            "freshness": "Current"}]}

    def aggregated(self, *, core: bool) -> bytes:
        def build() -> Obj:
            groups = [g.name for g in self.registry.groups() if (g.name == "") == core]
            items = [self._group_discovery(g) for g in groups]
            if not core:
                items += [self._served_discovery(g) for g in self._extra()]
            return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                    "metadata": {}, "items": items}

        return self._cached(f"agg:{core}", build)

    def api_versions(self) -> bytes:
        return self._cached("api", lambda: {
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": self.server_address}]})

    def _group(self, name: str) -> Obj:
        g = self.registry.group(name)
        names = g.versions if g is not None else [self._served[name][0]]
        versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in names]
        return {"name": name, "versions": versions, "preferredVersion": versions[0]}

    def api_groups(self) -> bytes:
        return self._cached("apis", lambda: {
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [self._group(g) for g in
                       [g.name for g in self.registry.groups() if g.name] + self._extra()]})

    def api_group(self, name: str) -> bytes | None:
        if not name or (self.registry.group(name) is None and name not in self._served):
            return None
        return self._cached(f"group:{name}", lambda: {
            "kind": "APIGroup", "apiVersion": "v1", **self._group(name)})

    def resource_list(self, group: str, version: str) -> bytes | None:
        g = self.registry.group(group)
        if g is None and group in self._served and self._served[group][0] == version:
            return self._cached(f"rl:{group}/{version}", lambda: {
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}", "resources": self._served[group][1]})
        if g is None or version not in g.versions:
            return None

        def build() -> Obj:
            resources: list[Obj] = []
            for r in sorted(self.registry.resources(group, version), key=lambda r: r.plural):
                resources.extend(_legacy_resources(r))
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": resources}

        return self._cached(f"rl:{group}/{version}", build)
