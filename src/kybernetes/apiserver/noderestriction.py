"""NodeRestriction admission: what a node's writes may contain (upstream's plugin).

The Node authorizer (:mod:`.nodeauthz`) already refused requests that name another
node's objects; here the objects themselves are checked: a node creates only its own
Node and Lease, only mirror pods bound to itself, only volumes pinned to itself, and
never sets labels under ``node-restriction.kubernetes.io/`` (nor other
``kubernetes.io``/``k8s.io`` labels kubelet does not own), nor changes its taints.
"""

from __future__ import annotations

from typing import Any

from kybernetes.api import nodeauth
from kybernetes.api.errors import StatusError
from kybernetes.api.nodeauth import LEASE_NAMESPACE, MIRROR_POD_ANNOTATION
from kybernetes.api.registry import Resource
from kybernetes.apiserver.nodeauthz import node_owns_volume

Obj = dict[str, Any]


def _node(user: Any) -> str | None:
    if user is None:
        return None
    return nodeauth.node_name(str(user.name), tuple(user.groups))


def _forbid(res: Resource, obj: Obj, message: str) -> StatusError:
    return StatusError.forbidden(res.plural, (obj.get("metadata") or {}).get("name") or "",
                                 message, res.group)


def admit_create(res: Resource, obj: Obj, user: Any) -> None:
    node = _node(user)
    if node is None:
        return
    if not node:
        raise _forbid(res, obj, f'could not determine node from user "{user.name}"')
    md = obj.get("metadata") or {}
    name = md.get("name") or ""
    gk = (res.group, res.kind)
    if gk == ("", "Node"):
        if name != node:
            raise _forbid(res, obj, f'node "{node}" is not allowed to modify node "{name}"')
        bad = nodeauth.forbidden_labels(nodeauth.modified_labels(md.get("labels"), None))
        if bad:
            raise _forbid(res, obj, f'node "{node}" is not allowed to set the following '
                                    f'labels: {", ".join(bad)}')
    elif gk == ("", "Pod"):
        if MIRROR_POD_ANNOTATION not in (md.get("annotations") or {}):
            raise _forbid(res, obj, f'pod does not have "{MIRROR_POD_ANNOTATION}" annotation, '
                                    f'node "{node}" can only create mirror pods')
        if (obj.get("spec") or {}).get("nodeName") != node:
            raise _forbid(res, obj, f'node "{node}" can only create pods with spec.nodeName '
                                    "set to itself")
    elif gk == ("coordination.k8s.io", "Lease"):
        _admit_lease(res, obj, node)
    elif gk == ("", "PersistentVolume") and not node_owns_volume(obj, node):
        raise _forbid(res, obj, f'node "{node}" can only create persistentvolumes with a '
                                "required node affinity to itself")


def _admit_lease(res: Resource, obj: Obj, node: str) -> None:
    md = obj.get("metadata") or {}
    if md.get("namespace") != LEASE_NAMESPACE:
        raise _forbid(res, obj, f'can only access leases in the "{LEASE_NAMESPACE}" system '
                                "namespace")
    if md.get("name") != node:
        raise _forbid(res, obj, "can only access node lease with the same name as the "
                                "requesting node")


def admit_update(res: Resource, new: Obj, old: Obj, user: Any, subresource: str) -> None:
    node = _node(user)
    if node is None:
        return
    if not node:
        raise _forbid(res, new, f'could not determine node from user "{user.name}"')
    gk = (res.group, res.kind)
    if gk == ("", "Node"):
        name = old["metadata"].get("name", "")
        if name != node:
            raise _forbid(res, old, f'node "{node}" is not allowed to modify node "{name}"')
        if ((new.get("spec") or {}).get("taints") or []) != \
                ((old.get("spec") or {}).get("taints") or []):
            raise _forbid(res, old, f'node "{node}" is not allowed to modify taints')
        bad = nodeauth.forbidden_labels(nodeauth.modified_labels(
            new["metadata"].get("labels"), old["metadata"].get("labels")))
        if bad:
            raise _forbid(res, old, f"is not allowed to modify labels: {', '.join(bad)}")
    elif gk == ("", "Pod"):
        if (old.get("spec") or {}).get("nodeName") != node:
            raise _forbid(res, old, f'node "{node}" can only update pod status for pods with '
                                    "spec.nodeName set to itself")
        if subresource == "status" and \
                (new["metadata"].get("labels") or {}) != (old["metadata"].get("labels") or {}):
            raise _forbid(res, old, f'node "{node}" cannot update labels through pod status')
    elif gk == ("coordination.k8s.io", "Lease"):
        _admit_lease(res, old, node)
