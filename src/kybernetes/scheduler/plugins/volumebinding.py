"""VolumeBinding: a pod's PersistentVolumeClaims decide where it may run, and claims that
wait for their first consumer (``volumeBindingMode: WaitForFirstConsumer``) are bound
for the node the pod gets.

- PreFilter: every claim must exist, not be Lost nor being deleted; an unbound claim
  whose class binds ``Immediate`` (or that names its volume already) is left to the
  volume controller, and the pod waits (``UnschedulableAndUnresolvable``).
- Filter, per node: a bound claim's volume must allow the node (its ``nodeAffinity``);
  an unbound claim needs an ``Available`` volume of its class that fits it (capacity,
  access modes, volume mode, selector) and allows the node, the smallest one winning,
  or else a class with a provisioner whose ``allowedTopologies`` admit the node.
- Reserve assumes the choice in memory (the volume names the claim; a claim to provision
  names the node) so that the next pods see it; Unreserve forgets it.
- PreBind writes it: the volume's ``claimRef`` (the volume controller then binds both) or
  the claim's ``volume.kubernetes.io/selected-node`` (the provisioner then makes a volume
  there), and polls the API until every claim is bound, for at most
  ``bindTimeoutSeconds``. A binding undone meanwhile fails the pod back to the queue.

Generic ephemeral volumes and storage capacity (CSIStorageCapacity) are not supported;
there is no Score (upstream's is behind a feature gate that is off).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from kybernetes.api import storage
from kybernetes.api.errors import StatusError
from kybernetes.api.scheduling import NodeSelector
from kybernetes.api.selectors import SelectorError, from_label_selector
from kybernetes.scheduler.framework import (
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    PreFilterResult,
    Status,
)
from kybernetes.scheduler.types import NodeInfo, PodInfo

Obj = dict[str, Any]

REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
REASON_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
REASON_PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
REASON_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
DEFAULT_BIND_TIMEOUT = 600
_STATE = "VolumeBinding"


class _BindError(Exception):
    """A failure that ends the attempt with an Error status."""


@dataclass(slots=True)
class _Binding:
    volume: Obj
    claim: Obj
    dirty: bool = True
    """Whether the API object needs the change (false: already pre-bound to the claim)."""


@dataclass(slots=True)
class _PodVolumes:
    static: list[_Binding] = field(default_factory=list)
    provision: list[Obj] = field(default_factory=list)
    """Claims to provision (after Reserve: with the selected-node annotation)."""


@dataclass(slots=True)
class _State:
    bound: list[Obj] = field(default_factory=list)
    bound_volumes: dict[str, Obj | None] = field(default_factory=dict)
    """The volume of each bound claim, by claim name (None: it does not exist)."""
    delayed: list[Obj] = field(default_factory=list)
    volumes_by_class: dict[str, list[Obj]] = field(default_factory=dict)
    classes: dict[str, Obj] = field(default_factory=dict)
    by_node: dict[str, _PodVolumes] = field(default_factory=dict)
    all_bound: bool = False

    def clone(self) -> _State:
        return self  # what Filter finds for a node stays true for the whole attempt


def _md(obj: Mapping[str, Any]) -> Obj:
    md: Obj = obj.get("metadata") or {}
    return md


def _spec(obj: Mapping[str, Any]) -> Obj:
    spec: Obj = obj.get("spec") or {}
    return spec


def _key(obj: Mapping[str, Any]) -> str:
    md = _md(obj)
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


def _rv(obj: Mapping[str, Any]) -> str:
    return str(_md(obj).get("resourceVersion") or "")


def fully_bound(claim: Mapping[str, Any]) -> bool:
    """Bound by the volume controller: names its volume and the binding is complete."""
    return bool(_spec(claim).get("volumeName")) and \
        storage.ANN_BIND_COMPLETED in (_md(claim).get("annotations") or {})


def volume_allows(volume: Mapping[str, Any], node: NodeInfo) -> bool:
    """Whether the volume's required node affinity admits the node."""
    required = (_spec(volume).get("nodeAffinity") or {}).get("required")
    if required is None:
        return True
    return NodeSelector.parse(required).matches(node.labels, node.name)


def topology_allows(cls: Mapping[str, Any], node: NodeInfo) -> bool:
    """Whether a StorageClass's ``allowedTopologies`` (none: anywhere) admit the node."""
    terms = cls.get("allowedTopologies") or []
    if not terms:
        return True
    return any(all(node.labels.get(str(e.get("key"))) in (e.get("values") or ())
                   for e in t.get("matchLabelExpressions") or ())
               for t in terms)


def _size(claim: Obj) -> Fraction:
    try:
        return storage.requested(claim)
    except ValueError:
        return Fraction(0)


def _fits(volume: Obj, claim: Obj) -> bool:
    """Capacity and volume mode (checked for pre-bound volumes too)."""
    try:
        if storage.capacity(volume) < storage.requested(claim):
            return False
    except ValueError:
        return False
    return (_spec(volume).get("volumeMode") or "Filesystem") == \
        (_spec(claim).get("volumeMode") or "Filesystem")


def find_matching_volume(claim: Obj, volumes: Iterable[Obj], node: NodeInfo,
                         excluded: set[str]) -> Obj | None:
    """The volume for an unbound claim on this node: one pre-bound to it (if it allows
    the node), else the smallest Available one that fits it and allows the node."""
    selector = _spec(claim).get("selector")
    try:
        sel = from_label_selector(selector) if selector else None
    except SelectorError as e:
        raise _BindError(f"error creating internal label selector for claim: "
                         f"{_key(claim)}: {e}") from None
    wanted_modes = set(_spec(claim).get("accessModes") or ())
    best: Obj | None = None
    best_size = Fraction(0)
    for volume in volumes:
        md, spec = _md(volume), _spec(volume)
        if md.get("name") in excluded:
            continue
        ref = spec.get("claimRef")
        prebound = storage.refers_to(ref, claim)
        if ref and not prebound:
            continue
        if not _fits(volume, claim) or md.get("deletionTimestamp"):
            continue
        allowed = volume_allows(volume, node)
        if prebound:
            return volume if allowed else None
        if (volume.get("status") or {}).get("phase") != "Available":
            continue  # binding a volume not yet Available would only conflict
        if sel is not None and not sel.matches(md.get("labels") or {}):
            continue
        if storage.class_of(volume) != storage.class_of(claim) or not allowed:
            continue
        if not wanted_modes <= set(spec.get("accessModes") or ()):
            continue
        size = storage.capacity(volume)
        if best is None or size < best_size:
            best, best_size = volume, size
    return best


def bind_volume_to_claim(volume: Obj, claim: Obj) -> tuple[Obj, bool]:
    """A copy of the volume naming the claim in its ``claimRef``, and whether anything
    changed."""
    md, spec = _md(volume), _spec(volume)
    cmd = _md(claim)
    annotations = dict(md.get("annotations") or {})
    dirty = False
    ref = spec.get("claimRef") or {}
    if (ref.get("name"), ref.get("namespace"), ref.get("uid") or "") != \
            (cmd.get("name"), cmd.get("namespace"), cmd.get("uid") or ""):
        spec = {**spec, "claimRef": storage.claim_ref(claim)}
        dirty = True
    if not storage.refers_to(ref or None, claim) and \
            storage.ANN_BOUND_BY_CONTROLLER not in annotations:
        annotations[storage.ANN_BOUND_BY_CONTROLLER] = "yes"
        dirty = True
    return {**volume, "metadata": {**md, "annotations": annotations}, "spec": spec}, dirty


class VolumeBinding:
    name = "VolumeBinding"

    def __init__(self, handle: Handle, *, bind_timeout: float = DEFAULT_BIND_TIMEOUT,
                 poll_interval: float = 1.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.handle = handle
        self.bind_timeout = bind_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        # assumed objects, until the informer's copy changes (resourceVersion) or Unreserve
        self._assumed_volumes: dict[str, tuple[str, Obj]] = {}
        self._assumed_claims: dict[str, tuple[str, Obj]] = {}

    # -- the cache, with what Reserve assumed -----------------------------------------

    def _overlay(self, objs: dict[str, Obj], assumed: dict[str, tuple[str, Obj]]
                 ) -> dict[str, Obj]:
        for key, (base_rv, obj) in list(assumed.items()):
            cached = objs.get(key)
            if cached is None or _rv(cached) != base_rv:
                del assumed[key]  # the API moved on: its copy is the truth now
            else:
                objs[key] = obj
        return objs

    def claims(self) -> dict[str, Obj]:
        """Claims by ``namespace/name``."""
        return self._overlay({_key(c): c for c in self.handle.objects("persistentvolumeclaims")},
                             self._assumed_claims)

    def volumes(self) -> dict[str, Obj]:
        return self._overlay({_md(v).get("name", ""): v
                              for v in self.handle.objects("persistentvolumes")},
                             self._assumed_volumes)

    # -- PreFilter / Filter -----------------------------------------------------------

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        names = list(dict.fromkeys(pod.claims))
        if not names:
            state.write(_STATE, _State())
            return None, Status.skip()
        claims = self.claims()
        found: list[Obj] = []
        for name in names:
            claim = claims.get(f"{pod.namespace}/{name}")
            if claim is None:
                return None, Status.unresolvable(f'persistentvolumeclaim "{name}" not found')
            if (claim.get("status") or {}).get("phase") == "Lost":
                return None, Status.unresolvable(
                    f'persistentvolumeclaim "{name}" bound to non-existent persistentvolume '
                    f'"{_spec(claim).get("volumeName", "")}"')
            if _md(claim).get("deletionTimestamp"):
                return None, Status.unresolvable(f'persistentvolumeclaim "{name}" is being '
                                                 f'deleted')
            found.append(claim)
        classes = {_md(c).get("name", ""): c for c in self.handle.objects("storageclasses")}
        s = _State(classes=classes)
        immediate = False
        for claim in found:
            if fully_bound(claim):
                s.bound.append(claim)
                continue
            cls = classes.get(storage.class_of(claim))
            delayed = cls is not None and cls.get("volumeBindingMode") == "WaitForFirstConsumer"
            if delayed and not _spec(claim).get("volumeName"):
                s.delayed.append(claim)
            else:
                immediate = True  # the volume controller binds it (or a pre-bound one)
        if immediate:
            return None, Status.unresolvable(REASON_UNBOUND_IMMEDIATE)
        volumes = self.volumes()
        for claim in s.bound:
            s.bound_volumes[_md(claim).get("name", "")] = volumes.get(
                _spec(claim).get("volumeName", ""))
        for claim in s.delayed:
            cls_name = storage.class_of(claim)
            if cls_name not in s.volumes_by_class:
                s.volumes_by_class[cls_name] = [v for v in volumes.values()
                                                if storage.class_of(v) == cls_name]
        state.write(_STATE, s)
        return None, None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s: _State | None = state.read(_STATE)
        if s is None:
            return Status.error(f'reading "{_STATE}" from cycleState: not found')
        try:
            volumes, reasons = self._find_pod_volumes(s, node)
        except _BindError as e:
            return Status.error(str(e))
        if reasons:
            return Status.unresolvable(*reasons)
        s.by_node[node.name] = volumes
        return None

    def _find_pod_volumes(self, s: _State, node: NodeInfo) -> tuple[_PodVolumes, list[str]]:
        node_ok = pvs_found = unbound_ok = True
        result = _PodVolumes()
        for claim in s.bound:
            volume = s.bound_volumes.get(_md(claim).get("name", ""))
            if volume is None:
                pvs_found = False
                break
            if not volume_allows(volume, node):
                node_ok = False
                break
        to_match: list[Obj] = []
        to_provision: list[Obj] = []
        for claim in s.delayed:
            annotations = _md(claim).get("annotations") or {}
            if storage.ANN_SELECTED_NODE in annotations:
                if annotations[storage.ANN_SELECTED_NODE] != node.name:
                    unbound_ok = False  # being provisioned for another node
                    to_match = to_provision = []
                    break
                to_provision.append(claim)
            else:
                to_match.append(claim)
        if to_match:
            chosen: set[str] = set()
            for claim in sorted(to_match, key=_size):
                volume = find_matching_volume(
                    claim, s.volumes_by_class.get(storage.class_of(claim), ()), node, chosen)
                if volume is None:
                    unbound_ok = False
                    to_provision.append(claim)
                    continue
                chosen.add(_md(volume).get("name", ""))
                result.static.append(_Binding(volume, claim))
        if to_provision:
            unbound_ok, result.provision = self._check_provisions(s, to_provision, node)
        reasons = []
        if not node_ok:
            reasons.append(REASON_NODE_CONFLICT)
        if not unbound_ok:
            reasons.append(REASON_BIND_CONFLICT)
        if not pvs_found:
            reasons.append(REASON_PV_NOT_EXIST)
        return result, reasons

    @staticmethod
    def _check_provisions(s: _State, claims: list[Obj], node: NodeInfo
                          ) -> tuple[bool, list[Obj]]:
        """Whether every claim's class can provision a volume reachable from the node."""
        for claim in claims:
            cls_name = storage.class_of(claim)
            if not cls_name:
                raise _BindError(f'no class for claim "{_key(claim)}"')
            cls = s.classes.get(cls_name)
            if cls is None:
                raise _BindError(f'failed to find storage class "{cls_name}"')
            provisioner = cls.get("provisioner") or ""
            if not provisioner or provisioner == NO_PROVISIONER:
                return False, []
            if not topology_allows(cls, node):
                return False, []
        return True, list(claims)

    # -- Reserve / Unreserve ----------------------------------------------------------

    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        s: _State | None = state.read(_STATE)
        if s is None:
            return Status.error(f'reading "{_STATE}" from cycleState: not found')
        chosen = s.by_node.get(node_name)
        if chosen is None:
            s.all_bound = True  # no claims
            return None
        claims = self.claims()
        if all(fully_bound(claims.get(f"{pod.namespace}/{n}") or {}) for n in pod.claims):
            s.all_bound = True
            return None
        s.all_bound = False
        volumes = self.volumes()
        assumed = _PodVolumes()
        for b in chosen.static:
            name = _md(b.volume).get("name", "")
            new, dirty = bind_volume_to_claim(b.volume, b.claim)
            if dirty:
                cached = volumes.get(name, b.volume)
                self._assumed_volumes[name] = (_rv(cached), new)
            assumed.static.append(_Binding(new, b.claim, dirty))
        for claim in chosen.provision:
            md = _md(claim)
            new_claim = {**claim, "metadata": {**md, "annotations": {
                **(md.get("annotations") or {}), storage.ANN_SELECTED_NODE: node_name}}}
            key = _key(claim)
            self._assumed_claims[key] = (_rv(claims.get(key, claim)), new_claim)
            assumed.provision.append(new_claim)
        s.by_node[node_name] = assumed
        return None

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        s: _State | None = state.read(_STATE)
        chosen = s.by_node.get(node_name) if s is not None else None
        if chosen is None:
            return
        for b in chosen.static:
            name = _md(b.volume).get("name", "")
            entry = self._assumed_volumes.get(name)
            if entry is not None and entry[1] is b.volume:
                del self._assumed_volumes[name]
        for claim in chosen.provision:
            key = _key(claim)
            entry = self._assumed_claims.get(key)
            if entry is not None and entry[1] is claim:
                del self._assumed_claims[key]

    # -- PreBind ----------------------------------------------------------------------

    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str
                       ) -> Status | None:
        s: _State | None = state.read(_STATE)
        if s is None:
            return Status.error(f'reading "{_STATE}" from cycleState: not found')
        if s.all_bound:
            return None
        chosen = s.by_node.get(node_name)
        if chosen is None:
            return Status.error(f'no pod volumes found for node "{node_name}"')
        try:
            await self._write(chosen)
        except StatusError as e:
            return Status.error(e.message)
        except Exception as e:  # the client's transport errors
            return Status.error(str(e) or type(e).__name__)
        deadline = self._clock() + self.bind_timeout
        while True:
            await self._sleep(self.poll_interval)
            try:
                if await self._check(pod, node_name, chosen):
                    return None
            except StatusError as e:
                return Status.error(f"binding volumes: {e.message}")
            except Exception as e:
                return Status.error(f"binding volumes: {e or type(e).__name__}")
            if self._clock() >= deadline:
                return Status.error("binding volumes: context deadline exceeded")

    async def _write(self, chosen: _PodVolumes) -> None:
        """The API updates: volumes name their claims, claims to provision their node.
        The volume controller and the provisioner do the rest."""
        client = self.handle.client
        for b in chosen.static:
            if not b.dirty:
                continue
            md = _md(b.volume)
            meta: Obj = {"annotations": md.get("annotations") or {}}
            if md.get("resourceVersion"):
                meta["resourceVersion"] = md["resourceVersion"]
            await client.patch("v1", "persistentvolumes", md["name"], {
                "metadata": meta, "spec": {"claimRef": _spec(b.volume)["claimRef"]}})
        for claim in chosen.provision:
            md = _md(claim)
            meta = {"annotations": {storage.ANN_SELECTED_NODE:
                                    md["annotations"][storage.ANN_SELECTED_NODE]}}
            if md.get("resourceVersion"):
                meta["resourceVersion"] = md["resourceVersion"]
            await client.patch("v1", "persistentvolumeclaims", md["name"], {"metadata": meta},
                               namespace=md.get("namespace"))

    async def _get(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            obj: Obj = await self.handle.client.get("v1", plural, name, namespace=namespace)
        except StatusError as e:
            if e.code == 404:
                return None
            raise
        return obj

    async def _check(self, pod: PodInfo, node_name: str, chosen: _PodVolumes) -> bool:
        """Whether every claim is bound; raises when a binding was undone or cannot
        work on the node."""
        node = self.handle.node(node_name)
        if node is None or node.node is None:
            raise _BindError(f'failed to get node "{node_name}": node "{node_name}" not found')
        if await self._get("pods", pod.name, pod.namespace) is None:
            raise _BindError(f'pod does not exist any more: pod "{pod.name}" not found')
        for b in chosen.static:
            vname, cmd = _md(b.volume).get("name", ""), _md(b.claim)
            volume = await self._get("persistentvolumes", vname)
            if volume is None:
                raise _BindError(f'failed to check binding: persistentvolume "{vname}" '
                                 f'not found')
            claim = await self._get("persistentvolumeclaims", cmd.get("name", ""),
                                    cmd.get("namespace"))
            if claim is None:
                raise _BindError(f'failed to check binding: persistentvolumeclaim '
                                 f'"{cmd.get("name", "")}" not found')
            if not volume_allows(volume, node):
                raise _BindError(f"pv \"{vname}\" node affinity doesn't match node "
                                 f'"{node_name}": no matching NodeSelectorTerms')
            if not (_spec(volume).get("claimRef") or {}).get("uid"):
                raise _BindError(f'ClaimRef got reset for pv "{vname}"')
            if not fully_bound(claim):
                return False
        for assumed in chosen.provision:
            cmd = _md(assumed)
            cname = cmd.get("name", "")
            claim = await self._get("persistentvolumeclaims", cname, cmd.get("namespace"))
            if claim is None:
                raise _BindError(f'failed to check provisioning pvc: persistentvolumeclaim '
                                 f'"{cname}" not found')
            annotations = _md(claim).get("annotations")
            if not annotations:
                raise _BindError(f'selectedNode annotation reset for PVC "{cname}"')
            if annotations.get(storage.ANN_SELECTED_NODE) != node_name:
                # the provisioner gave up: it drops the annotation for the pod to retry
                raise _BindError(f'provisioning failed for PVC "{cname}"')
            vname = _spec(claim).get("volumeName")
            if vname:
                volume = await self._get("persistentvolumes", vname)
                if volume is None:
                    return False  # not seen yet
                if not volume_allows(volume, node):
                    raise _BindError(f"pv \"{vname}\" node affinity doesn't match node "
                                     f'"{node_name}": no matching NodeSelectorTerms')
            if not fully_bound(claim):
                return False
        return True

    # -- events -----------------------------------------------------------------------

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            # a missing or misconfigured class (allowedTopologies)
            ClusterEventWithHint(ClusterEvent("StorageClass", Action.ADD | Action.UPDATE),
                                 self._after_class_change),
            ClusterEventWithHint(ClusterEvent("PersistentVolumeClaim",
                                              Action.ADD | Action.UPDATE),
                                 self._after_claim_change),
            ClusterEventWithHint(ClusterEvent("PersistentVolume", Action.ADD | Action.UPDATE)),
            # labels may now match a volume's node affinity or a class's topologies
            ClusterEventWithHint(ClusterEvent("Node", Action.ADD | Action.UPDATE_NODE_LABEL)),
        ]

    @staticmethod
    def _after_class_change(pod: PodInfo, old: Any, new: Any) -> bool:
        if old is None or new is None:
            return True
        return bool(old.get("allowedTopologies") != new.get("allowedTopologies"))

    @staticmethod
    def _after_claim_change(pod: PodInfo, old: Any, new: Any) -> bool:
        md = _md(new or {})
        return md.get("namespace") == pod.namespace and md.get("name") in pod.claims


def new(args: dict[str, Any], handle: Handle) -> VolumeBinding:
    timeout = args.get("bindTimeoutSeconds", DEFAULT_BIND_TIMEOUT)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        raise ValueError(f"bindTimeoutSeconds: Invalid value: {timeout!r}: invalid "
                         f"BindTimeoutSeconds, should not be a negative value")
    return VolumeBinding(handle, bind_timeout=timeout)
