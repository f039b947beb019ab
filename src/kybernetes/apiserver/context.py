"""State shared by every request: the store, the registry, compiled schemas, allocators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.api.registry import Registry, Resource
from kybernetes.api.schema import builtin_definitions
from kybernetes.api.structural import Compiler, Node
from kybernetes.apiserver.allocators import IPAllocator, PortAllocator, ServiceAllocations
from kybernetes.apiserver.watchcache import KindCache
from kybernetes.store import Backend


@dataclass
class Options:
    """Per-request write options (query parameters)."""

    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    user_agent: str = ""
    force: bool = False
    warnings: list[str] = field(default_factory=list)
    managed_fields: list[Any] | None = None
    """Set by server-side apply: the managedFields to store as they are."""
    user: Any = None
    """Who asks (an ``app.User``; None: the server itself), for RBAC's escalation check."""


class Context:
    def __init__(self, backend: Backend, registry: Registry, *, clock: Clock = SYSTEM_CLOCK,
                 service_cidr: str = "10.96.0.0/12") -> None:
        self.backend = backend
        self.registry = registry
        self.clock = clock
        self.compiler = Compiler(builtin_definitions())
        self.ips = IPAllocator(service_cidr)
        self.ports = PortAllocator()
        self.allocations = ServiceAllocations(backend, self.ips, self.ports)
        self._schemas: dict[int, Node | None] = {}
        self.extra: dict[str, Any] = {}
        self._kind_caches: dict[str, KindCache] = {}

    def kind_cache(self, res: Resource) -> KindCache:
        """An in-process mirror of a small kind (quotas, limit ranges) for admission."""
        prefix = res.key_prefix()
        cache = self._kind_caches.get(prefix)
        if cache is None:
            cache = self._kind_caches[prefix] = KindCache(self.backend, prefix)
        return cache

    def schema(self, res: Resource) -> Node | None:
        """The compiled schema of a resource's objects (None: accept anything)."""
        if res.schema is not None:
            return res.schema
        key = id(res)
        node = self._schemas.get(key, _MISSING)
        if node is _MISSING:
            defs = self.compiler.defs
            node = (self.compiler.definition(res.definition)
                    if defs is not None and res.definition in defs else None)
            self._schemas[key] = node
        return node  # type: ignore[no-any-return]

    def storage_resource(self, res: Resource) -> Resource:
        """The served version whose form is the stored form."""
        if res.to_storage is None:
            return res
        for peer in self.registry.storage_peers(res):
            if peer.to_storage is None and peer.version == res.storage_version:
                return peer
        return res


_MISSING: Any = object()
