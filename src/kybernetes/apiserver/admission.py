"""Admission: what the API server does on writes beyond one object's own rules.

NamespaceLifecycle (no new objects in missing or terminating namespaces), Service
address allocation, Pod priority and service account defaults, the default StorageClass
of claims, the protection finalizers of claims and volumes, and DefaultTolerationSeconds
(pods tolerate the not-ready and unreachable taints for 300 s); then LimitRanger
(:mod:`kybernetes.apiserver.limitrange`, mutating) and ResourceQuota
(:mod:`kybernetes.apiserver.quota`, validating, last) as upstream orders them.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from kybernetes.api import certificates, rbac, storage
from kybernetes.api.errors import FieldError, StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver import authz, limitrange, noderestriction, quota
from kybernetes.apiserver.allocators import AllocationError, service_owner
from kybernetes.apiserver.context import Context

Obj = dict[str, Any]

_NS_KEY = "/registry/namespaces/"
_CLUSTER_SCOPED_EXEMPT = {"Namespace", "Event"}
_DEFAULT_PRIORITY = 0


async def admit_create(ctx: Context, res: Resource, obj: Obj, *, dry_run: bool,
                       user: Any = None) -> None:
    ns = obj["metadata"].get("namespace", "")
    if res.namespaced and ns:
        kv = await ctx.backend.get(_NS_KEY + ns)
        if kv is None:
            raise StatusError.not_found("namespaces", ns)
        if b'"deletionTimestamp"' in kv.value and res.kind not in _CLUSTER_SCOPED_EXEMPT:
            raise StatusError.forbidden(
                res.plural, obj["metadata"].get("name") or obj["metadata"].get("generateName", ""),
                f"unable to create new content in namespace {ns} because it is being terminated",
                res.group)
    noderestriction.admit_create(res, obj, user)
    if res.group == "" and res.kind == "Service":
        await _allocate_service(ctx, obj, None, dry_run=dry_run)
    elif res.group == certificates.GROUP and res.kind == "CertificateSigningRequest":
        _admit_csr(obj, user)
    elif res.group == "" and res.kind == "Pod":
        await _admit_pod(ctx, obj)
        default_toleration_seconds(obj, *ctx.extra.get(
            "toleration_seconds", (DEFAULT_TOLERATION_SECONDS, DEFAULT_TOLERATION_SECONDS)))
    elif res.group == "" and res.kind == "PersistentVolumeClaim":
        await _admit_claim(ctx, obj)
    elif res.group == "" and res.kind == "PersistentVolume":
        _add_finalizer(obj, storage.PV_PROTECTION)
    elif res.group == rbac.GROUP and user is not None:
        await authz.check_escalation(ctx.extra["authorizer"], user, res, obj)
    await limitrange.admit(ctx, res, obj)
    try:
        await quota.admit(ctx, res, obj, dry_run=dry_run)
    except StatusError:
        if res.group == "" and res.kind == "Service" and not dry_run:
            await on_deleted(ctx, res, obj)  # give back the addresses just allocated
        raise


def _admit_csr(csr: Obj, user: Any) -> None:
    """Who asks is recorded in the request (upstream's CSR PrepareForCreate), and
    CertificateSubjectRestriction: no ``system:masters`` client certificates."""
    spec = csr.setdefault("spec", {})
    for k in ("username", "uid", "groups", "extra"):
        spec.pop(k, None)
    if user is not None:
        spec["username"] = user.name
        if user.uid:
            spec["uid"] = user.uid
        if user.groups:
            spec["groups"] = list(user.groups)
    if spec.get("signerName") == certificates.CLIENT_SIGNER:
        try:
            _, orgs = certificates.subject(certificates.parse_request(csr))
        except ValueError:
            return  # validation said why already
        if rbac.MASTERS in orgs:
            raise StatusError.forbidden(
                "certificatesigningrequests", csr["metadata"].get("name") or "",
                f"use of {certificates.CLIENT_SIGNER} signer with {rbac.MASTERS} group is "
                "not allowed", certificates.GROUP)


SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


async def _mount_service_account(ctx: Context, pod: Obj) -> None:
    """ServiceAccount admission: the token, CA and namespace of the pod's service account
    as a projected volume ``kube-api-access-*`` at SA_MOUNT_PATH in every container, unless
    the pod or its service account says ``automountServiceAccountToken: false``."""
    spec = pod["spec"]
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        res = ctx.registry.get("", "v1", "serviceaccounts")
        ns = pod["metadata"].get("namespace", "")
        kv = await ctx.backend.get(res.key(ns, spec["serviceAccountName"])) \
            if res is not None else None
        if kv is not None:
            automount = orjson.loads(kv.value).get("automountServiceAccountToken")
    if automount is False:
        return
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if any(v.get("name", "").startswith("kube-api-access-") for v in spec.get("volumes") or []):
        return
    name = "kube-api-access-" + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
    spec.setdefault("volumes", []).append({"name": name, "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
    for c in containers:
        mounts = c.setdefault("volumeMounts", [])
        if not any(m.get("mountPath") == SA_MOUNT_PATH for m in mounts):
            mounts.append({"name": name, "readOnly": True, "mountPath": SA_MOUNT_PATH})


def _add_finalizer(obj: Obj, name: str) -> None:
    """StorageObjectInUseProtection: claims and volumes in use are not removed."""
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if name not in finalizers:
        finalizers.append(name)


async def _admit_claim(ctx: Context, claim: Obj) -> None:
    """DefaultStorageClass: a claim that names no class (the field absent, not "") gets
    the default one."""
    spec = claim.setdefault("spec", {})
    if "storageClassName" not in spec and "volume.beta.kubernetes.io/storage-class" not in \
            (claim["metadata"].get("annotations") or {}):
        res = ctx.registry.get("storage.k8s.io", "v1", "storageclasses")
        if res is not None:
            page = await ctx.backend.list(res.key_prefix())
            default = storage.default_class([orjson.loads(kv.value) for kv in page.items])
            if default is not None:
                spec["storageClassName"] = default["metadata"]["name"]
    _add_finalizer(claim, storage.PVC_PROTECTION)


async def admit_update(ctx: Context, res: Resource, new: Obj, old: Obj, *, dry_run: bool,
                       user: Any = None, subresource: str = "") -> None:
    noderestriction.admit_update(res, new, old, user, subresource)
    if subresource in ("status", "approval"):
        return
    if res.group == "" and res.kind == "Service":
        await _allocate_service(ctx, new, old, dry_run=dry_run)
    elif res.group == rbac.GROUP and user is not None:
        await authz.check_escalation(ctx.extra["authorizer"], user, res, new)


_IMMORTAL_NAMESPACES = {"default", "kube-system", "kube-public"}


def admit_delete(res: Resource, obj: Obj) -> None:
    """NamespaceLifecycle: the system namespaces may not be deleted."""
    name = obj["metadata"].get("name", "")
    if res.group == "" and res.kind == "Namespace" and name in _IMMORTAL_NAMESPACES:
        raise StatusError.forbidden("namespaces", name, "this namespace may not be deleted")


async def on_deleted(ctx: Context, res: Resource, obj: Obj) -> None:
    """Give back what a deleted object held (a Service's address and node ports)."""
    if res.group == "" and res.kind == "Service":
        uid = (obj.get("metadata") or {}).get("uid", "")
        spec = obj.get("spec") or {}
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP", "")]:
            if ip and ip != "None":
                await ctx.allocations.release_ip(ip, uid)
        for p in spec.get("ports") or ():
            if p.get("nodePort"):
                await ctx.allocations.release_port(int(p["nodePort"]), uid)


async def restore_allocations(ctx: Context, services: list[Obj]) -> None:
    """At start-up: what existing Services hold is taken."""
    await ctx.allocations.restore(services)


def _needs_node_ports(spec: Obj) -> bool:
    t = spec.get("type", "ClusterIP")
    if t == "NodePort":
        return True
    if t == "LoadBalancer":
        return spec.get("allocateLoadBalancerNodePorts", True) is not False
    return False


async def _allocate_service(ctx: Context, svc: Obj, old: Obj | None, *, dry_run: bool) -> None:
    spec = svc.setdefault("spec", {})
    old_spec = (old or {}).get("spec") or {}
    svc_type = spec.get("type", "ClusterIP")
    owner = service_owner(svc)
    uid = owner["uid"]
    alloc = ctx.allocations
    allocated_ips: list[str] = []
    allocated_ports: list[int] = []
    try:
        if svc_type == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
            if old is not None and not dry_run:
                for ip in old_spec.get("clusterIPs") or [old_spec.get("clusterIP", "")]:
                    if ip and ip != "None":
                        await alloc.release_ip(ip, uid)
        else:
            old_ip = old_spec.get("clusterIP", "")
            want = spec.get("clusterIP", "") or ""
            if old is not None and old_ip and (not want or want == old_ip):
                spec["clusterIP"] = old_ip
                spec["clusterIPs"] = old_spec.get("clusterIPs") or [old_ip]
            elif want == "None":
                spec["clusterIPs"] = ["None"]
            else:
                ip = await alloc.allocate_ip(want, owner, dry_run=dry_run)
                allocated_ips.append(ip)
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            if (spec.get("clusterIP") and spec["clusterIP"] != "None") or spec.get("clusterIP") == "None":
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                     for p in old_spec.get("ports") or ()}
        if _needs_node_ports(spec):
            for i, p in enumerate(spec.get("ports") or ()):
                want_port = int(p.get("nodePort") or 0)
                prev = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
                if want_port and prev == want_port:
                    continue
                if not want_port and prev:
                    p["nodePort"] = prev
                    continue
                p["nodePort"] = await alloc.allocate_port(
                    want_port, owner, path=f"spec.ports[{i}].nodePort", dry_run=dry_run)
                allocated_ports.append(p["nodePort"])
        else:
            for p in spec.get("ports") or ():
                p.pop("nodePort", None)
        if svc_type in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
    except AllocationError as e:
        await _give_back(ctx, allocated_ips, allocated_ports, uid, dry_run=dry_run)
        meta = svc.get("metadata") or {}
        raise StatusError.invalid("Service", meta.get("name", ""), [e.error]) from None
    if dry_run:
        await _give_back(ctx, allocated_ips, allocated_ports, uid, dry_run=True)
    # release what the update gave up
    if old is not None and not dry_run:
        new_ports = {p.get("nodePort") for p in spec.get("ports") or ()}
        for port in old_ports.values():
            if port and port not in new_ports:
                await alloc.release_port(int(port), uid)


async def _give_back(ctx: Context, ips: list[str], ports: list[int], uid: str, *,
                     dry_run: bool) -> None:
    """Undo allocations (a dry run reserved nothing in the store: forget them here)."""
    for ip in ips:
        if dry_run:
            ctx.ips.release(ip)
        else:
            await ctx.allocations.release_ip(ip, uid)
    for port in ports:
        if dry_run:
            ctx.ports.release(port)
        else:
            await ctx.allocations.release_port(port, uid)


async def _admit_pod(ctx: Context, pod: Obj) -> None:
    spec = pod.setdefault("spec", {})
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    pc_name = spec.get("priorityClassName", "")
    if pc_name:
        kv = await ctx.backend.get(f"/registry/priorityclasses/{pc_name}")
        if kv is None:
            raise StatusError.forbidden(
                "pods", pod["metadata"].get("name", ""),
                f"no PriorityClass with name {pc_name} was found")
        pc = orjson.loads(kv.value)
        value = int(pc.get("value", 0))
        if "priority" in spec and spec["priority"] != value:
            raise StatusError.forbidden(
                "pods", pod["metadata"].get("name", ""),
                "the integer value of priority "
                f"({spec['priority']}) must not be provided in pod spec; priority admission "
                "controller computed "
                f"{value} from the given PriorityClass name")
        spec["priority"] = value
        spec.setdefault("preemptionPolicy", pc.get("preemptionPolicy", "PreemptLowerPriority"))
    else:
        spec.setdefault("priority", _DEFAULT_PRIORITY)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    await _mount_service_account(ctx, pod)
    errs: list[FieldError] = []
    if errs:
        raise StatusError.invalid("Pod", pod["metadata"].get("name", ""), errs)


DEFAULT_TOLERATION_SECONDS = 300
_NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def default_toleration_seconds(pod: Obj, not_ready: int = DEFAULT_TOLERATION_SECONDS,
                               unreachable: int = DEFAULT_TOLERATION_SECONDS) -> None:
    """DefaultTolerationSeconds admission: a new pod tolerates the not-ready and
    unreachable ``NoExecute`` taints for 300 s, unless it already says something about
    them (a toleration with that key, or no key, for NoExecute or every effect)."""
    spec = pod.setdefault("spec", {})
    tolerations = list(spec.get("tolerations") or [])

    def covered(key: str) -> bool:
        return any((t.get("key") or "") in ("", key) and (t.get("effect") or "") in ("", "NoExecute")
                   for t in tolerations)

    added = [{"key": key, "operator": "Exists", "effect": "NoExecute",
              "tolerationSeconds": seconds}
             for key, seconds in ((_NOT_READY_TAINT, not_ready),
                                  (_UNREACHABLE_TAINT, unreachable)) if not covered(key)]
    if added:
        spec["tolerations"] = tolerations + added
