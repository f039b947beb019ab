"""VolumeRestrictions: volumes that only one pod may use at a time.

- A ``ReadWriteOncePod`` claim already used by a pod anywhere in the cluster makes every
  node unfit (``Unschedulable``, so preemption may evict that pod). PreFilter counts the
  users once; preemption's simulated removals (``remove_pod``) lower the count.
- The in-tree disks (GCE PD, AWS EBS, Ceph RBD, iSCSI) conflict with the same disk used
  by another pod on the node, unless both mount it read-only (EBS: always).

A pod with neither is skipped. A claim that does not exist yet keeps the pod out
(``UnschedulableAndUnresolvable``) until it is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kybernetes.api.storage import claims_of
from kybernetes.scheduler.framework import (
    NODE_ADD,
    POD_DELETE,
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

REASON_DISK_CONFLICT = "node(s) had no available disk"
REASON_RWOP_CONFLICT = ("node has pod using PersistentVolumeClaim with the same name and "
                        "ReadWriteOncePod access mode")
RWOP = "ReadWriteOncePod"
_STATE = "PreFilterVolumeRestrictions"
_DISKS = ("gcePersistentDisk", "awsElasticBlockStore", "rbd", "iscsi")


@dataclass(slots=True)
class _State:
    namespace: str
    rwop_claims: frozenset[str]
    """Names of the pod's claims with the ReadWriteOncePod access mode."""
    conflicts: int
    """How many scheduled pods use one of those claims."""

    def clone(self) -> _State:
        return _State(self.namespace, self.rwop_claims, self.conflicts)

    def count(self, other: PodInfo) -> int:
        if other.namespace != self.namespace:
            return 0
        return sum(1 for c in other.claims if c in self.rwop_claims)


def _volumes(pod: Obj) -> list[Obj]:
    return list((pod.get("spec") or {}).get("volumes") or ())


def _needs_check(volume: Mapping[str, Any]) -> bool:
    return any(volume.get(k) for k in _DISKS)


def _volume_conflict(volume: Mapping[str, Any], other: Obj) -> bool:
    """Whether ``volume`` names a disk that a volume of the pod ``other`` also uses."""
    for ev in _volumes(other):
        gce, egce = volume.get("gcePersistentDisk"), ev.get("gcePersistentDisk")
        if gce and egce and gce.get("pdName") == egce.get("pdName") and \
                not (gce.get("readOnly") and egce.get("readOnly")):
            return True
        ebs, eebs = volume.get("awsElasticBlockStore"), ev.get("awsElasticBlockStore")
        if ebs and eebs and ebs.get("volumeID") == eebs.get("volumeID"):
            return True
        iscsi, eiscsi = volume.get("iscsi"), ev.get("iscsi")
        if iscsi and eiscsi and iscsi.get("iqn") == eiscsi.get("iqn") and \
                not (iscsi.get("readOnly") and eiscsi.get("readOnly")):
            return True
        rbd, erbd = volume.get("rbd"), ev.get("rbd")
        if rbd and erbd and set(rbd.get("monitors") or ()) & set(erbd.get("monitors") or ()) \
                and (rbd.get("pool") or "rbd") == (erbd.get("pool") or "rbd") \
                and rbd.get("image") == erbd.get("image") \
                and not (rbd.get("readOnly") and erbd.get("readOnly")):
            return True
    return False


def _disks_fit(pod: PodInfo, node: NodeInfo) -> bool:
    for v in _volumes(pod.pod):
        if not _needs_check(v):
            continue
        for other in node.pods.values():
            if _volume_conflict(v, other.pod):
                return False
    return True


def _pod_of(obj: Any) -> Obj | None:
    if isinstance(obj, PodInfo):
        return obj.pod
    return obj if isinstance(obj, dict) else None


class VolumeRestrictions:
    name = "VolumeRestrictions"

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        needs_check = any(_needs_check(v) for v in _volumes(pod.pod))
        rwop: set[str] = set()
        if pod.claims:
            claims = {(c.get("metadata") or {}).get("name"): c
                      for c in self.handle.objects("persistentvolumeclaims")
                      if (c.get("metadata") or {}).get("namespace") == pod.namespace}
            for name in pod.claims:
                claim = claims.get(name)
                if claim is None:
                    return None, Status.unresolvable(
                        f'persistentvolumeclaim "{name}" not found')
                if RWOP in ((claim.get("spec") or {}).get("accessModes") or ()):
                    rwop.add(name)
        conflicts = 0
        if rwop:
            used = [n.pvc_refs for n in self.handle.nodes()]
            # at most one pod can be using a ReadWriteOncePod claim
            conflicts = sum(1 for name in rwop
                            if any(f"{pod.namespace}/{name}" in refs for refs in used))
        if not needs_check and not conflicts:
            return None, Status.skip()
        state.write(_STATE, _State(pod.namespace, frozenset(rwop), conflicts))
        return None, None

    def add_pod(self, state: CycleState, pod: PodInfo, to_add: PodInfo, node: NodeInfo
                ) -> Status | None:
        s: _State | None = state.read(_STATE)
        if s is not None:
            s.conflicts += s.count(to_add)
        return None

    def remove_pod(self, state: CycleState, pod: PodInfo, to_remove: PodInfo,
                   node: NodeInfo) -> Status | None:
        s: _State | None = state.read(_STATE)
        if s is not None:
            s.conflicts -= s.count(to_remove)
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not _disks_fit(pod, node):
            return Status.unschedulable(REASON_DISK_CONFLICT)
        s: _State | None = state.read(_STATE)
        if s is None:
            return Status.error(f'cannot read "{_STATE}" from cycleState')
        if s.conflicts > 0:
            return Status.unschedulable(REASON_RWOP_CONFLICT)
        return None

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            # a pod using the same disk or ReadWriteOncePod claim went away
            ClusterEventWithHint(POD_DELETE, self._after_pod_deleted),
            ClusterEventWithHint(NODE_ADD),
            # the claim did not exist yet
            ClusterEventWithHint(ClusterEvent("PersistentVolumeClaim", Action.ADD),
                                 self._after_claim_added),
        ]

    @staticmethod
    def _after_pod_deleted(pod: PodInfo, old: Any, new: Any) -> bool:
        deleted = _pod_of(old if old is not None else new)
        if deleted is None:
            return True
        if (deleted.get("metadata") or {}).get("namespace") != pod.namespace:
            return False
        if any(_needs_check(v) and _volume_conflict(v, deleted) for v in _volumes(pod.pod)):
            return True
        # the claim's access mode is not looked up: that would cost more than a retry
        return bool(set(pod.claims) & set(claims_of(deleted)))

    @staticmethod
    def _after_claim_added(pod: PodInfo, old: Any, new: Any) -> bool:
        md = (new or {}).get("metadata") or {}
        return md.get("namespace") == pod.namespace and md.get("name") in pod.claims


def new(args: dict[str, Any], handle: Handle) -> VolumeRestrictions:
    return VolumeRestrictions(handle)
