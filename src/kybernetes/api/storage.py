"""Persistent volumes: the names and the matching rules shared by the API server
(admission), the volume controller and the node agents' local-path provisioner.

A claim binds to the smallest Available volume of its class that offers all its access
modes, at least its requested storage, the same volume mode and labels its selector
accepts; a volume pre-bound to the claim (``claimRef``) wins. Pure functions over the wire
form, no I/O.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from kybernetes.api import quantity
from kybernetes.api.selectors import SelectorError, from_label_selector

Obj = dict[str, Any]

LOCAL_PATH = "kybernetes.io/local-path"
"""The provisioner of the built-in ``local-path`` StorageClass (the node agents)."""
DEFAULT_CLASS = "local-path"

ANN_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
ANN_DEFAULT_CLASS_BETA = "storageclass.beta.kubernetes.io/is-default-class"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_STORAGE_PROVISIONER_BETA = "volume.beta.kubernetes.io/storage-provisioner"
ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def default_class(classes: list[Obj]) -> Obj | None:
    """The default StorageClass: the newest one annotated as default (as Kubernetes
    picks when several are)."""
    marked = [c for c in classes
              if any(((c.get("metadata") or {}).get("annotations") or {}).get(a) == "true"
                     for a in (ANN_DEFAULT_CLASS, ANN_DEFAULT_CLASS_BETA))
              and not (c.get("metadata") or {}).get("deletionTimestamp")]
    if not marked:
        return None
    return max(marked, key=lambda c: ((c["metadata"].get("creationTimestamp") or ""),
                                      c["metadata"].get("name", "")))


def class_of(obj: Obj) -> str:
    """The StorageClass name of a claim or volume ("" for none)."""
    spec = obj.get("spec") or {}
    name = spec.get("storageClassName")
    if name is None:
        name = ((obj.get("metadata") or {}).get("annotations") or {}).get(
            "volume.beta.kubernetes.io/storage-class", "")
    return str(name or "")


def requested(claim: Obj) -> Fraction:
    req = (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {})
    return quantity.parse(req.get("storage", "0"))


def capacity(volume: Obj) -> Fraction:
    cap = ((volume.get("spec") or {}).get("capacity") or {})
    return quantity.parse(cap.get("storage", "0"))


def claim_ref(claim: Obj) -> Obj:
    md = claim["metadata"]
    return {"kind": "PersistentVolumeClaim", "namespace": md.get("namespace", ""),
            "name": md.get("name", ""), "uid": md.get("uid", ""), "apiVersion": "v1",
            "resourceVersion": md.get("resourceVersion", "")}


def refers_to(ref: Obj | None, claim: Obj) -> bool:
    """Whether a volume's ``claimRef`` names this claim (a ref without uid is a
    pre-binding to whatever claim gets that name)."""
    if not ref:
        return False
    md = claim["metadata"]
    if ref.get("namespace") != md.get("namespace") or ref.get("name") != md.get("name"):
        return False
    return not ref.get("uid") or ref.get("uid") == md.get("uid")


def matches(volume: Obj, claim: Obj) -> bool:
    """Whether ``volume`` may serve ``claim`` (ignoring who it is bound to)."""
    vspec, cspec = volume.get("spec") or {}, claim.get("spec") or {}
    if (volume.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if class_of(volume) != class_of(claim):
        return False
    if (vspec.get("volumeMode") or "Filesystem") != (cspec.get("volumeMode") or "Filesystem"):
        return False
    if not set(cspec.get("accessModes") or []) <= set(vspec.get("accessModes") or []):
        return False
    try:
        if capacity(volume) < requested(claim):
            return False
        selector = cspec.get("selector")
        if selector and not from_label_selector(selector).matches(
                (volume.get("metadata") or {}).get("labels") or {}):
            return False
    except (ValueError, SelectorError):
        return False
    return True


def best_match(volumes: list[Obj], claim: Obj) -> Obj | None:
    """The volume to bind ``claim`` to: one pre-bound to it, else the smallest Available
    volume that matches."""
    pre = [v for v in volumes if refers_to((v.get("spec") or {}).get("claimRef"), claim)
           and matches(v, claim)]
    if pre:
        return pre[0]
    free = [v for v in volumes if not (v.get("spec") or {}).get("claimRef")
            and ((v.get("status") or {}).get("phase") in (None, "", "Available", "Pending"))
            and matches(v, claim)]
    if not free:
        return None
    return min(free, key=lambda v: (capacity(v), v["metadata"].get("name", "")))


def node_allowed(volume: Obj, node_name: str, node_labels: dict[str, str] | None = None
                 ) -> bool:
    """Whether the volume's required node affinity lets it be used on this node."""
    required = (((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    labels = {HOSTNAME_LABEL: node_name, **(node_labels or {})}
    for term in terms:
        try:
            if from_label_selector({"matchExpressions": term.get("matchExpressions") or []}
                                   ).matches(labels):
                return True
        except SelectorError:
            continue  # Gt/Lt: not used by the volumes made here
    return False


def claims_of(pod: Obj) -> list[str]:
    """Names of the claims a pod's volumes use."""
    return [str((v.get("persistentVolumeClaim") or {}).get("claimName"))
            for v in (pod.get("spec") or {}).get("volumes") or []
            if (v.get("persistentVolumeClaim") or {}).get("claimName")]
