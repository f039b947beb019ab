"""The Node authorizer: what a node agent's credential (user ``system:node:<name>`` in
group ``system:nodes``) may do, decided before RBAC (upstream's
``--authorization-mode=Node,RBAC``).

A node may read what its pods need and write what is its own: its Node and its status,
its Lease in ``kube-node-lease``, the status of pods bound to it, their deletion and
eviction, events, and (kybernetes' agent also runs the service proxy and the local-path
provisioner) Services, EndpointSlices and the volumes of its node. Secrets, ConfigMaps
and service-account tokens only when a pod bound to the node uses them.

Where upstream leaves a check on the object to the NodeRestriction admission plugin
(:mod:`.noderestriction`), this authorizer already looks the object up when the request
names it, so that ``kubectl auth can-i`` gives the answer the request would get.

Decisions are ``(True, "")`` (allowed) or ``(None, reason)``: no opinion, RBAC decides,
and a refusal carries the reason after upstream's message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.api import nodeauth, rbac, storage
from kybernetes.api.nodeauth import LEASE_NAMESPACE

if TYPE_CHECKING:
    from kybernetes.apiserver.context import Context

Obj = dict[str, Any]
Decision = tuple[bool | None, str]
ALLOW: Decision = (True, "")

_GRAPH = {("", "secrets"), ("", "configmaps")}


class NodeAuthorizer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def _get(self, plural: str, ns: str, name: str, group: str = "") -> Obj | None:
        res = self.ctx.registry.get(group, "v1", plural)
        if res is None:
            return None
        kv = await self.ctx.backend.get(res.key(ns, name))
        return orjson.loads(kv.value) if kv is not None else None

    async def _node_pods(self, node: str, ns: str) -> list[Obj]:
        res = self.ctx.registry.get("", "v1", "pods")
        assert res is not None
        needle = orjson.dumps(node)
        out = []
        start = ""
        while True:
            page = await self.ctx.backend.list(res.key_prefix(ns), start_after=start, limit=500)
            for kv in page.items:
                if needle in kv.value:  # cheap filter before decoding
                    pod = orjson.loads(kv.value)
                    if (pod.get("spec") or {}).get("nodeName") == node:
                        out.append(pod)
            if not page.more or not page.items:
                return out
            start = page.items[-1].key

    async def _related(self, node: str, plural: str, ns: str, name: str) -> bool:
        """Whether a pod bound to ``node`` in ``ns`` uses that object."""
        return any((plural, name) in set(nodeauth.pod_references(p))
                   for p in await self._node_pods(node, ns))

    async def authorize(self, a: rbac.Attributes) -> Decision:
        node = nodeauth.node_name(a.user, a.groups)
        if node is None or not a.resource_request:
            return None, ""
        if not node:
            return None, f'unknown node for user "{a.user}"'
        group_resource = (a.api_group, a.resource)
        no_relation = nodeauth.NODE_AUTHORIZER_REASON.format(node=node)
        if group_resource in _GRAPH:
            if a.subresource or a.verb not in ("get", "list", "watch"):
                return None, f"can only get individual {a.resource}"
            if not a.name:
                return None, "can only get individual resources of this type"
            if await self._related(node, a.resource, a.namespace, a.name):
                return ALLOW
            return None, no_relation
        if group_resource == ("", "serviceaccounts") and a.subresource == "token":
            if a.verb != "create":
                return None, "can only create tokens for individual service accounts"
            if a.name and await self._related(node, "serviceaccounts", a.namespace, a.name):
                return ALLOW
            return None, no_relation
        if not any(rbac.rule_allows(r, a) for r in nodeauth.NODE_RULES):
            return None, ""
        return await self._check_object(node, a)

    async def _check_object(self, node: str, a: rbac.Attributes) -> Decision:
        """The rules allow the verb; is the named object this node's?"""
        g, r, sub, verb = a.api_group, a.resource, a.subresource, a.verb
        if (g, r) == ("coordination.k8s.io", "leases"):
            if a.namespace != LEASE_NAMESPACE:
                return None, (f'can only access leases in the "{LEASE_NAMESPACE}" system '
                              "namespace")
            if a.name and a.name != node:
                return None, "can only access node lease with the same name as the " \
                             "requesting node"
            return ALLOW
        if (g, r) == ("", "nodes") and verb in ("update", "patch", "delete") and a.name \
                and a.name != node:
            return None, f'node "{node}" is not allowed to modify node "{a.name}"'
        if (g, r) == ("", "pods") and a.name and \
                ((verb == "delete" and not sub) or sub == "status" or sub == "eviction"):
            pod = await self._get("pods", a.namespace, a.name)
            if pod is not None and (pod.get("spec") or {}).get("nodeName") != node:
                what = {"status": f'node "{node}" can only update pod status for pods with '
                                  "spec.nodeName set to itself",
                        "eviction": f"node {node} can only evict pods with spec.nodeName set "
                                    "to itself"}.get(sub, f'node "{node}" can only delete pods '
                                                          "with spec.nodeName set to itself")
                return None, what
        if (g, r) == ("", "persistentvolumes") and verb == "delete":
            if not a.name:
                return None, "can only delete individual persistentvolumes"
            pv = await self._get("persistentvolumes", "", a.name)
            if pv is not None and not node_owns_volume(pv, node):
                return None, (f'node "{node}" can only delete persistentvolumes with a '
                              "required node affinity to itself")
        return ALLOW


def node_owns_volume(pv: Obj, node: str) -> bool:
    """Whether a PersistentVolume can only be used on ``node`` (the local-path volumes a
    node agent provisions: a required affinity to exactly its hostname)."""
    required = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}
    return required == {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": storage.HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}
