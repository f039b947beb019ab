"""What a node's credential may do: the identity of a node agent, the rules upstream's
Node authorizer grants it, and NodeRestriction's label policy. Pure functions; the
lookups they need (which node a pod is bound to) are the API server's.

    node_name("system:node:gpu-1", ("system:nodes",))   # "gpu-1"
    node_name("alice", ())                               # None
    forbidden_labels({"node-restriction.kubernetes.io/x"})
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from kybernetes.api.certificates import NODE_USER_PREFIX, NODES_GROUP

Obj = dict[str, Any]
LEASE_NAMESPACE = "kube-node-lease"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
RESTRICTION_LABEL_NAMESPACE = "node-restriction.kubernetes.io"
NODE_AUTHORIZER_REASON = "no relationship found between node '{node}' and this object"

_READ = ["get", "list", "watch"]

NODE_RULES: list[Obj] = [
    # upstream's system:node rules (plugin/pkg/auth/authorizer/rbac/bootstrappolicy),
    # less what kybernetes does not serve
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
     "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "verbs": ["create"],
     "resources": ["subjectaccessreviews", "localsubjectaccessreviews"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": _READ},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["create", *_READ]},
    {"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": ["update", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "update", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"],
     "verbs": ["create", "update", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": _READ},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["update", "patch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get"]},
    {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
     "verbs": ["create", *_READ]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "create", "update", "patch", "delete"]},
    # kybernetes' node agent also runs the service proxy (upstream's system:node-proxier)
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
    # ... and the local-path provisioner of its node's volumes
    {"apiGroups": [""], "resources": ["persistentvolumeclaims", "persistentvolumes"],
     "verbs": _READ},
    {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["create", "delete"]},
    {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": _READ},
    # ... and enforces NetworkPolicies (as a CNI plugin's node agent does)
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": _READ},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
]


def node_name(user: str, groups: Iterable[str]) -> str | None:
    """The node a user is (upstream's NodeIdentity: ``system:node:<name>`` in group
    ``system:nodes``); "" for a node user without a name, None for anyone else."""
    if not user.startswith(NODE_USER_PREFIX) or NODES_GROUP not in groups:
        return None
    return user[len(NODE_USER_PREFIX):]


def _label_namespace(key: str) -> str:
    prefix, sep, _ = key.partition("/")
    return prefix if sep else ""


_KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone"})
_KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _is_kubelet_label(key: str) -> bool:
    if key in _KUBELET_LABELS:
        return True
    ns = _label_namespace(key)
    return any(ns == n or ns.endswith("." + n) for n in _KUBELET_LABEL_NAMESPACES)


def _is_kubernetes_label(key: str) -> bool:
    ns = _label_namespace(key)
    return any(ns == n or ns.endswith("." + n) for n in ("kubernetes.io", "k8s.io"))


def modified_labels(new: dict[str, str] | None, old: dict[str, str] | None) -> set[str]:
    a, b = new or {}, old or {}
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def forbidden_labels(keys: Iterable[str]) -> list[str]:
    """The label keys a node may not add, change or remove on its Node: those under
    ``node-restriction.kubernetes.io/`` and the ``kubernetes.io``/``k8s.io`` ones kubelet
    does not own (upstream's NodeRestriction)."""
    out = set()
    for key in keys:
        ns = _label_namespace(key)
        if ns == RESTRICTION_LABEL_NAMESPACE or ns.endswith("." + RESTRICTION_LABEL_NAMESPACE):
            out.add(key)
        if _is_kubernetes_label(key) and not _is_kubelet_label(key):
            out.add(key)
    return sorted(out)


def pod_references(pod: Obj) -> Iterator[tuple[str, str]]:
    """(plural, name) of every object a pod needs from the API to run: secrets,
    configmaps, claims, its service account (upstream's node graph edges)."""
    spec = pod.get("spec") or {}
    if spec.get("serviceAccountName"):
        yield "serviceaccounts", str(spec["serviceAccountName"])
    for s in spec.get("imagePullSecrets") or []:
        if isinstance(s, dict) and s.get("name"):
            yield "secrets", str(s["name"])
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        if (v.get("secret") or {}).get("secretName"):
            yield "secrets", str(v["secret"]["secretName"])
        if (v.get("configMap") or {}).get("name"):
            yield "configmaps", str(v["configMap"]["name"])
        if (v.get("persistentVolumeClaim") or {}).get("claimName"):
            yield "persistentvolumeclaims", str(v["persistentVolumeClaim"]["claimName"])
        for src in (v.get("projected") or {}).get("sources") or []:
            if (src.get("secret") or {}).get("name"):
                yield "secrets", str(src["secret"]["name"])
            if (src.get("configMap") or {}).get("name"):
                yield "configmaps", str(src["configMap"]["name"])
        for key in ("cephfs", "cinder", "flexVolume", "iscsi", "rbd", "scaleIO",
                    "storageos", "azureFile", "csi"):
            ref = (v.get(key) or {}).get("secretRef") or \
                (v.get(key) or {}).get("nodePublishSecretRef") or {}
            if ref.get("name"):
                yield "secrets", str(ref["name"])
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
                  *(spec.get("ephemeralContainers") or [])]
    for c in containers:
        for e in c.get("envFrom") or []:
            if (e.get("secretRef") or {}).get("name"):
                yield "secrets", str(e["secretRef"]["name"])
            if (e.get("configMapRef") or {}).get("name"):
                yield "configmaps", str(e["configMapRef"]["name"])
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if (vf.get("secretKeyRef") or {}).get("name"):
                yield "secrets", str(vf["secretKeyRef"]["name"])
            if (vf.get("configMapKeyRef") or {}).get("name"):
                yield "configmaps", str(vf["configMapKeyRef"]["name"])
