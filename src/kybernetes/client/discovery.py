"""Which resources the server serves, from aggregated discovery (``/api``, ``/apis``)."""

from __future__ import annotations

from dataclasses import dataclass

from kybernetes.client.rest import Client

_AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class APIResource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


async def discover(client: Client, *, preferred_only: bool = True) -> list[APIResource]:
    """Every served resource (of each group's preferred version unless told otherwise)."""
    out: list[APIResource] = []
    for path in ("/api", "/apis"):
        doc = await client.request("GET", path, headers={"Accept": _AGGREGATED})
        for item in doc.get("items") or []:
            group = (item.get("metadata") or {}).get("name", "")
            versions = item.get("versions") or []
            if preferred_only:
                versions = versions[:1]
            for v in versions:
                for r in v.get("resources") or []:
                    out.append(APIResource(
                        group=group, version=v["version"], plural=r["resource"],
                        kind=(r.get("responseKind") or {}).get("kind", ""),
                        namespaced=r.get("scope") == "Namespaced",
                        verbs=frozenset(r.get("verbs") or ())))
    return out
