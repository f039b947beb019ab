"""Ingress routing, as ingress-nginx does it: which backend a request goes to.

:func:`build` turns the Ingresses of class ``kybernetes`` into a :class:`Routes` table;
:meth:`Routes.route` picks the backend of one request. Pure functions, no I/O.

- A request's ``Host`` selects the rules of that host (``*.example.com`` matches one
  label), else the rules without a host. Among their paths, ``Exact`` beats ``Prefix``,
  and the longest prefix wins; ``ImplementationSpecific`` is a prefix. A prefix matches
  whole path elements (``/model1`` matches ``/model1`` and ``/model1/x``, not
  ``/model10``). No match: the ``defaultBackend`` of an Ingress, else 404.
- An Ingress annotated ``nginx.ingress.kubernetes.io/canary: "true"`` adds its backend as
  the canary of the same host and path of the main Ingress; requests go to it by, in
  order: ``canary-by-header`` (value ``always``/``never``, or ``canary-by-header-value``,
  or the regular expression ``canary-by-header-pattern``), ``canary-by-cookie``
  (``always``/``never``), then ``canary-weight`` out of ``canary-weight-total`` (100).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

Obj = dict[str, Any]

CLASS_NAME = "kybernetes"
CONTROLLER = "kybernetes.io/ingress-controller"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
NGINX = "nginx.ingress.kubernetes.io/"


@dataclass(frozen=True)
class Backend:
    namespace: str
    service: str
    port: int | str
    """The Service's port number or name."""
    ingress: str = ""
    """``namespace/name`` of the Ingress it came from."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port}"


@dataclass
class Canary:
    backend: Backend
    header: str = ""
    header_value: str = ""
    header_pattern: re.Pattern[str] | None = None
    cookie: str = ""
    weight: int = 0
    weight_total: int = 100

    def wants(self, headers: dict[str, str], rand: float) -> bool:
        """Whether a request goes to the canary (``rand`` uniform in [0, 1))."""
        if self.header:
            value = headers.get(self.header.lower())
            if value is not None:
                if self.header_value:
                    if value == self.header_value:
                        return True
                elif self.header_pattern is not None:
                    if self.header_pattern.search(value):
                        return True
                elif value == "always":
                    return True
                elif value == "never":
                    return False
        if self.cookie and "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers["cookie"])
            except Exception:  # a malformed Cookie header: no cookie
                jar = SimpleCookie()
            morsel = jar.get(self.cookie)
            if morsel is not None and morsel.value == "always":
                return True
            if morsel is not None and morsel.value == "never":
                return False
        return self.weight > 0 and rand * self.weight_total < self.weight


@dataclass
class Path:
    path: str
    kind: str
    """``Exact`` or ``Prefix``."""
    backend: Backend
    canary: Canary | None = None

    def matches(self, path: str) -> bool:
        if self.kind == "Exact":
            return path == self.path
        prefix = self.path.rstrip("/")
        return not prefix or path == prefix or path.startswith(prefix + "/")


@dataclass
class Routes:
    hosts: dict[str, list[Path]] = field(default_factory=dict)
    """Host ('' for any) -> its paths, best match first."""
    default: Backend | None = None
    default_canary: Canary | None = None

    def route(self, host: str, path: str, headers: dict[str, str],
              rand: float) -> Backend | None:
        host = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host
        paths = self.hosts.get(host)
        if paths is None and "." in host:
            paths = self.hosts.get("*." + host.split(".", 1)[1])
        if paths is None:
            paths = self.hosts.get("", [])
        path = path.split("?", 1)[0] or "/"
        for p in paths:
            if p.matches(path):
                if p.canary is not None and p.canary.wants(headers, rand):
                    return p.canary.backend
                return p.backend
        if self.default_canary is not None and self.default_canary.wants(headers, rand):
            return self.default_canary.backend
        return self.default


def is_ours(ingress: Obj, classes: list[Obj]) -> bool:
    """Whether ``ingress`` is for this controller: class ``kybernetes`` (or another class
    of our controller), or no class while ours is the default."""
    spec = ingress.get("spec") or {}
    name = spec.get("ingressClassName") or (
        (ingress.get("metadata") or {}).get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    ours = {(c.get("metadata") or {}).get("name") for c in classes
            if (c.get("spec") or {}).get("controller") == CONTROLLER} | {CLASS_NAME}
    if name:
        return name in ours
    defaults = [c for c in classes if ((c.get("metadata") or {}).get("annotations") or {})
                .get(DEFAULT_CLASS_ANNOTATION) == "true"]
    return not defaults or any((c.get("spec") or {}).get("controller") == CONTROLLER
                               for c in defaults)


def _backend(ns: str, ingress: str, b: Obj | None) -> Backend | None:
    svc = (b or {}).get("service") or {}
    port = svc.get("port") or {}
    if not svc.get("name") or not (port.get("number") or port.get("name")):
        return None
    return Backend(ns, svc["name"], port.get("number") or port["name"], ingress)


def _canary(ann: dict[str, str], backend: Backend) -> Canary:
    def num(key: str, default: int) -> int:
        try:
            return int(ann.get(NGINX + key, default))
        except ValueError:
            return default

    pattern = ann.get(NGINX + "canary-by-header-pattern") or ""
    try:
        compiled = re.compile(pattern) if pattern else None
    except re.error:
        compiled = None
    return Canary(backend, header=ann.get(NGINX + "canary-by-header", ""),
                  header_value=ann.get(NGINX + "canary-by-header-value", ""),
                  header_pattern=compiled, cookie=ann.get(NGINX + "canary-by-cookie", ""),
                  weight=max(0, num("canary-weight", 0)),
                  weight_total=max(1, num("canary-weight-total", 100)))


def build(ingresses: list[Obj], classes: list[Obj] | None = None) -> Routes:
    """The routing table of the Ingresses for this controller (oldest first wins a
    host and path both claim, as ingress-nginx)."""
    classes = classes or []
    ours = sorted((i for i in ingresses if is_ours(i, classes)
                   and not (i.get("metadata") or {}).get("deletionTimestamp")),
                  key=lambda i: (i["metadata"].get("creationTimestamp") or "",
                                 i["metadata"].get("namespace", ""), i["metadata"]["name"]))
    routes = Routes()
    canaries: list[tuple[Obj, str, Backend, str, str]] = []
    for ing in ours:
        meta, spec = ing["metadata"], ing.get("spec") or {}
        ns, key = meta.get("namespace", ""), f"{meta.get('namespace', '')}/{meta['name']}"
        ann = meta.get("annotations") or {}
        canary = ann.get(NGINX + "canary") == "true"
        default = _backend(ns, key, spec.get("defaultBackend"))
        if default is not None:
            if canary:
                canaries.append((ann, "*default*", default, "", ""))
            elif routes.default is None:
                routes.default = default
        for rule in spec.get("rules") or []:
            host = (rule.get("host") or "").lower()
            for p in (rule.get("http") or {}).get("paths") or []:
                backend = _backend(ns, key, p.get("backend"))
                if backend is None:
                    continue
                kind = "Exact" if p.get("pathType") == "Exact" else "Prefix"
                path = p.get("path") or "/"
                if canary:
                    canaries.append((ann, host, backend, path, kind))
                    continue
                paths = routes.hosts.setdefault(host, [])
                if not any(x.path == path and x.kind == kind for x in paths):
                    paths.append(Path(path, kind, backend))
    for ann, host, backend, path, kind in canaries:
        if host == "*default*":
            routes.default_canary = _canary(ann, backend)
            continue
        main = next((x for x in routes.hosts.get(host, [])
                     if x.path == path and x.kind == kind and x.canary is None), None)
        if main is not None:
            main.canary = _canary(ann, backend)
    for paths in routes.hosts.values():
        paths.sort(key=lambda x: (x.kind != "Exact", -len(x.path.rstrip("/"))))
    return routes
