"""The registry of served resources: what each resource is called and how it is stored.

Built-in kinds are listed in :mod:`kybernetes.api.builtin`; CustomResourceDefinitions add
entries at run time (:mod:`kybernetes.api.crd`). The API server is generic over these
entries: discovery, OpenAPI, routing and storage all read them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kybernetes.api.strategy import Strategy
    from kybernetes.api.structural import Node

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

Obj = dict[str, Any]
Converter = Callable[[Obj], Obj]


@dataclass(eq=False)
class Resource:
    """One resource in one group-version, e.g. ``apps/v1 deployments``."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    definition: str = ""
    """Name of the schema definition (``io.k8s.api.apps.v1.Deployment``)."""
    storage_group_resource: str = ""
    """The storage key segment, ``deployments`` or ``<group>/<plural>`` for CRDs."""
    storage_version: str = ""
    """Version stored; objects of other versions convert through ``to_storage``."""
    to_storage: Converter | None = None
    from_storage: Converter | None = None
    crd: bool = False
    schema: Node | None = None
    """Compiled schema (set for CRDs; built-ins compile lazily from ``definition``)."""
    strategy: Strategy | None = None
    printer_columns: list[Obj] = field(default_factory=list)
    """CRD additionalPrinterColumns."""
    scale_paths: tuple[str, str, str] | None = None
    """CRD scale subresource: spec replicas, status replicas, label selector paths."""
    openapi: Obj | None = None
    """CRD: the version's openAPIV3Schema, as served in /openapi/v3."""
    singular: str = ""

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()
        if not self.storage_group_resource:
            self.storage_group_resource = self.plural
        if not self.storage_version:
            self.storage_version = self.version

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> tuple[str, str]:
        return (self.group, self.version)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def group_resource(self) -> str:
        """``deployments.apps``; ``pods`` for the core group (as errors name resources)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def key_prefix(self, namespace: str = "") -> str:
        base = f"/registry/{self.storage_group_resource}/"
        if self.namespaced and namespace:
            return f"{base}{namespace}/"
        return base

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"/registry/{self.storage_group_resource}/{namespace}/{name}"
        return f"/registry/{self.storage_group_resource}/{name}"


@dataclass
class GroupInfo:
    name: str
    versions: list[str]
    """Served versions, preferred first."""


class Registry:
    """All served resources, looked up by group/version/plural or by kind."""

    def __init__(self) -> None:
        self._by_path: dict[tuple[str, str, str], Resource] = {}
        self._groups: dict[str, GroupInfo] = {}
        self._order: list[str] = []
        self.generation = 0
        """Bumped on every change so cached discovery/OpenAPI documents can be rebuilt."""

    def add(self, res: Resource, *, preferred: bool = False) -> None:
        self._by_path[(res.group, res.version, res.plural)] = res
        g = self._groups.get(res.group)
        if g is None:
            g = self._groups[res.group] = GroupInfo(res.group, [])
            self._order.append(res.group)
        if res.version not in g.versions:
            if preferred:
                g.versions.insert(0, res.version)
            else:
                g.versions.append(res.version)
        self.generation += 1

    def remove(self, group: str, version: str, plural: str) -> None:
        self._by_path.pop((group, version, plural), None)
        g = self._groups.get(group)
        if g is not None and not any(
            k[0] == group and k[1] == version for k in self._by_path
        ):
            g.versions.remove(version)
            if not g.versions:
                del self._groups[group]
                self._order.remove(group)
        self.generation += 1

    def get(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> Resource | None:
        for r in self._by_path.values():
            if r.group == group and r.version == version and r.kind == kind:
                return r
        return None

    def groups(self) -> list[GroupInfo]:
        return [self._groups[g] for g in self._order]

    def group(self, name: str) -> GroupInfo | None:
        return self._groups.get(name)

    def resources(self, group: str | None = None, version: str | None = None) -> Iterator[Resource]:
        for r in self._by_path.values():
            if (group is None or r.group == group) and (version is None or r.version == version):
                yield r

    def storage_peers(self, res: Resource) -> list[Resource]:
        """Every served version sharing ``res``'s storage (for watch and GC)."""
        return [r for r in self._by_path.values()
                if r.storage_group_resource == res.storage_group_resource]
