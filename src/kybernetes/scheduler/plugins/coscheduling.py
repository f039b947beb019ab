"""Coscheduling: gang scheduling with scheduler-plugins' PodGroups
(``scheduling.x-k8s.io/v1alpha1``), on in the default profile.

A pod labelled ``scheduling.x-k8s.io/pod-group: <name>`` belongs to the PodGroup of that
name in its namespace; no pod of the group is bound until ``minMember`` of them have been
placed together. As scheduler-plugins' ``pkg/coscheduling``:

- **QueueSort**: higher priority first; then a group's pods together, the group first seen
  earliest first; pods without a group as PrioritySort orders them (priority, then age).
- **PreFilter** (UnschedulableAndUnresolvable, so no preemption): a group in back-off
  (``podGroupBackoffSeconds``, off by default) fails with ``podGroup <ns>/<pg> failed
  recently``; fewer pods in the group (any phase) than ``minMember`` fail with
  ``pre-filter pod <pod> cannot find enough sibling pods, current pods number: <n>,
  minMember of group: <m>``; with ``minResources``, the cluster's free resources (this
  group's own pods not counted) must cover them (and ``minMember`` pod slots), else
  ``resource gap: ...`` — a check passed holds for the group's schedule timeout.
- **Permit**: once ``minMember`` pods of the group are assumed or bound (this one
  included), the pod and every sibling waiting at Permit go on to bind; before that the
  pod *waits*, its node's resources assumed, for ``spec.scheduleTimeoutSeconds`` (else
  ``permitWaitingTimeSeconds``, 60 s). The first of a group to wait moves its siblings
  out of back-off, so that they are tried at once.
- **Unreserve** (a waiting pod timed out or was rejected, or a binding failed): every
  sibling still waiting is rejected too, so the whole gang lets go of its nodes and backs
  off together.
- **PostFilter** (a pod of the group fits nowhere, after preemption had its try): unless
  the group already has ``minMember`` pods placed, or lacks at most 10 % of them, its
  waiting pods are rejected at once (``optimistic rejection in PostFilter``) instead of
  holding resources until the timeout.

One addition to upstream, so that gangs contending for room that fits only one of them
cannot reject each other in turn forever (both placing part of their pods, both failing,
both backing off, again): gangs are ranked (the highest priority of their pods, then the
time their first pod was queued, then the name). When the failing pod's gang ranks
before every other gang that holds pods at Permit, those younger gangs' waiting pods are
rejected instead of its own (``rejected in favour of the older PodGroup <ns>/<pg>``), and
once the last of them has let go, the older gang's remaining pods are tried at once.
Otherwise upstream's optimistic rejection applies. The first gang in that order thus
always gets the room it can use.

Pods without the label cost one dict lookup at each of these points.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

from kybernetes.api import quantity
from kybernetes.api.podgroup import POD_GROUP_LABEL, min_member, schedule_timeout
from kybernetes.api.scheduling import Resources, resource_list
from kybernetes.scheduler.framework import (
    PODS_TO_ACTIVATE,
    UNSCHEDULED_POD_ADD,
    Action,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    Handle,
    PostFilterResult,
    PreFilterResult,
    Status,
)
from kybernetes.scheduler.types import NodeInfo, PodInfo

Obj = dict[str, Any]

NAME = "Coscheduling"
DEFAULT_WAIT_SECONDS = 60
PODGROUPS = "podgroups"
_MAX_GROUPS = 8192
"""Bound on the per-group bookkeeping (first-seen times, permitted and backed-off groups)."""
_BINARY_RESOURCES = ("memory", "ephemeral-storage")


def _format_amount(name: str, value: int) -> str:
    if name == "cpu":
        return quantity.format_quantity(Fraction(value, 1000))
    binary = name in _BINARY_RESOURCES or name.startswith("hugepages-")
    return quantity.format_quantity(Fraction(value),
                                    quantity.BINARY_SI if binary else quantity.DECIMAL_SI)


def resource_gap(need: Resources, nodes: Iterable[NodeInfo], siblings: Iterable[PodInfo]
                 ) -> Resources:
    """What ``need`` (with ``pods``: a count of slots) lacks of the free resources of
    ``nodes``, the resources of ``siblings`` (the group's own placed pods) counted as
    free (upstream's ``CheckClusterResource``)."""
    free: Resources = {}
    for n in nodes:
        if n.node is None:
            continue
        free["pods"] = free.get("pods", 0) + n.allowed_pods - len(n.pods)
        for k in need:
            if k != "pods":
                free[k] = free.get(k, 0) + n.allocatable.get(k, 0) - n.requested.get(k, 0)
    for s in siblings:
        free["pods"] = free.get("pods", 0) + 1
        for k, v in s.requests.items():
            free[k] = free.get(k, 0) + v
    return {k: v - free.get(k, 0) for k, v in need.items() if v > free.get(k, 0)}


def format_gap(gap: Resources) -> str:
    """As Go prints a ResourceList: ``map[cpu:2 pods:1]`` (keys sorted)."""
    return "map[" + " ".join(f"{k}:{_format_amount(k, v)}" for k, v in sorted(gap.items())) + "]"


class Coscheduling:
    name = NAME

    def __init__(self, handle: Handle, *, permit_waiting_time: float = DEFAULT_WAIT_SECONDS,
                 pod_group_backoff: float = 0.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.handle = handle
        self.permit_waiting_time = permit_waiting_time
        self.pod_group_backoff = pod_group_backoff
        self.now = now
        self._first_seen: dict[str, float] = {}
        """Queue time of the first pod seen of each group (``ns/name``): the group's age."""
        self._permitted: dict[str, float] = {}
        """Groups whose ``minResources`` check passed, until when."""
        self._backed_off: dict[str, float] = {}
        """Groups rejected in PostFilter, until when (``podGroupBackoffSeconds``)."""
        self._short: set[str] = set()
        """Groups whose last ``minResources`` check found a resource gap."""
        self._claims: dict[str, str] = {}
        """Gangs rejected for an older one (``ns/name`` -> the older gang's ``ns/name``):
        once the last of their waiting pods has let go, the older one's pods are tried."""

    # -- reading the group -----------------------------------------------------------------

    def timeout(self, pg: Obj) -> float:
        """How long a member waits at Permit (upstream's ``GetWaitTimeDuration``)."""
        own = schedule_timeout(pg)
        if own is not None:
            return float(own)
        return float(self.permit_waiting_time or DEFAULT_WAIT_SECONDS)

    def _placed(self, namespace: str, name: str) -> list[PodInfo]:
        """The group's pods in the scheduler's cache: bound, or assumed (waiting at
        Permit, binding)."""
        has = self.handle.has_pod
        return [PodInfo(p) for p in self.handle.group_pods(namespace, name)
                if has((p.get("metadata") or {}).get("uid", ""))]

    def assigned(self, namespace: str, name: str) -> int:
        has = self.handle.has_pod
        return sum(1 for p in self.handle.group_pods(namespace, name)
                   if has((p.get("metadata") or {}).get("uid", "")))

    def _waiting(self, namespace: str, name: str, *, but: str = "") -> list[Any]:
        """The group's pods waiting at Permit (``WaitingPod``), except uid ``but``."""
        out = []
        for uid, wp in list(self.handle.waiting_pods.items()):
            p: PodInfo = wp.pod
            if uid != but and p.namespace == namespace and \
                    p.labels.get(POD_GROUP_LABEL) == name:
                out.append(wp)
        return out

    def rank(self, key: str) -> tuple[int, float, str]:
        """A gang's precedence (lower first): the highest priority of its pods, then the
        time its first pod was queued, then its key — the same whichever member asks, so
        that gangs contending for the same room settle it the same way every time."""
        ns, _, name = key.partition("/")
        priority = max((int((p.get("spec") or {}).get("priority") or 0)
                        for p in self.handle.group_pods(ns, name)), default=0)
        return (-priority, self._first_seen.get(key, float("inf")), key)

    def _holding(self) -> dict[str, list[Any]]:
        """The pods waiting at Permit, by gang (``ns/name``); pods already allowed (on
        their way to bind) are not holding room for a gang that might not start."""
        out: dict[str, list[Any]] = {}
        for wp in list(self.handle.waiting_pods.values()):
            p: PodInfo = wp.pod
            name = p.labels.get(POD_GROUP_LABEL)
            if name and not getattr(wp, "allowed", False):
                out.setdefault(f"{p.namespace}/{name}", []).append(wp)
        return out

    @staticmethod
    def _trim(table: dict[str, float], now: float) -> None:
        if len(table) >= _MAX_GROUPS:
            for k in [k for k, until in table.items() if until <= now]:
                del table[k]
            if len(table) >= _MAX_GROUPS:
                table.clear()

    # -- QueueSort -------------------------------------------------------------------------

    def sort_key(self, pod: PodInfo, timestamp: float) -> tuple[Any, ...]:
        name = pod.labels.get(POD_GROUP_LABEL)
        if not name:
            return (-pod.priority, timestamp)
        key = f"{pod.namespace}/{name}"
        first = self._first_seen.get(key)
        if first is None:
            if len(self._first_seen) >= _MAX_GROUPS:
                self._first_seen.clear()
            first = self._first_seen[key] = timestamp
        return (-pod.priority, first, key, timestamp)

    # -- PreFilter -------------------------------------------------------------------------

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]:
        name = pod.labels.get(POD_GROUP_LABEL)
        if not name:
            return None, None
        key = f"{pod.namespace}/{name}"
        pg = self.handle.get_object(PODGROUPS, key)
        if pg is None:
            return None, None  # Permit turns it away until the group exists
        now = self.now()
        until = self._backed_off.get(key)
        if until is not None:
            if until > now:
                return None, Status.unresolvable(f"podGroup {key} failed recently")
            del self._backed_off[key]
        members = self.handle.group_pods(pod.namespace, name)
        need = min_member(pg)
        if len(members) < need:
            return None, Status.unresolvable(
                f"pre-filter pod {pod.name} cannot find enough sibling pods, current pods "
                f"number: {len(members)}, minMember of group: {need}")
        min_resources = (pg.get("spec") or {}).get("minResources")
        if min_resources is None:
            return None, None
        if self._permitted.get(key, 0.0) > now:
            return None, None
        wanted = resource_list(min_resources)
        wanted["pods"] = need
        gap = resource_gap(wanted, nodes, self._placed(pod.namespace, name))
        if gap:
            if len(self._short) >= _MAX_GROUPS:
                self._short.clear()
            self._short.add(key)
            return None, Status.unresolvable(f"resource gap: {format_gap(gap)}")
        self._short.discard(key)
        self._trim(self._permitted, now)
        self._permitted[key] = now + self.timeout(pg)
        return None, None

    # -- PostFilter ------------------------------------------------------------------------

    async def post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status]
                          ) -> tuple[PostFilterResult | None, Status | None]:
        name = pod.labels.get(POD_GROUP_LABEL)
        if not name:
            return None, Status.unschedulable()  # not a gang member: nothing to add
        key = f"{pod.namespace}/{name}"
        pg = self.handle.get_object(PODGROUPS, key)
        if pg is None:
            return None, Status.unschedulable("can not find pod group")
        need = min_member(pg)
        assigned = self.assigned(pod.namespace, name)
        if assigned >= need:
            return None, Status.unschedulable()  # the gang is complete: only this pod waits
        if (need - assigned) / need <= 0.1:
            return None, Status.unschedulable()  # nearly there: let the next pods try
        holding = self._holding()
        own = holding.pop(key, [])
        mine = self.rank(key)
        younger = {k: wps for k, wps in holding.items() if self.rank(k) > mine}
        if younger and len(younger) == len(holding):
            # Gangs contending for room that fits one: the one first in the queue's order
            # keeps its waiting pods, the younger ones let go (else each would reject
            # itself in turn, again and again). Its pods are tried again once they have.
            for k, wps in younger.items():
                for wp in wps:
                    wp.reject(self.name, f"rejected in favour of the older PodGroup {key}")
                self._claims[k] = key
            if len(self._claims) >= _MAX_GROUPS:
                self._claims.clear()
            return None, Status.unschedulable(
                f"PodGroup {key} waits for the room held by PodGroup(s) "
                f"{', '.join(sorted(younger))} at Permit")
        for wp in own:
            wp.reject(self.name, "optimistic rejection in PostFilter")
        if self.pod_group_backoff > 0 and len(self.handle.group_pods(pod.namespace, name)) \
                >= need:
            now = self.now()
            self._trim(self._backed_off, now)
            self._backed_off[key] = now + self.pod_group_backoff
        self._permitted.pop(key, None)
        return None, Status.unschedulable(
            f"PodGroup {key} gets rejected due to Pod {pod.name} is unschedulable even after "
            "PostFilter")

    # -- Reserve ---------------------------------------------------------------------------

    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        return None

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        name = pod.labels.get(POD_GROUP_LABEL)
        if not name:
            return
        key = f"{pod.namespace}/{name}"
        if self.handle.get_object(PODGROUPS, key) is None:
            return
        others = self._waiting(pod.namespace, name, but=pod.uid)
        for wp in others:
            wp.reject(self.name, "rejection in Unreserve")
        self._permitted.pop(key, None)
        claimant = self._claims.get(key)
        if claimant is not None and not others:
            # the last of this gang's waiting pods has let go: the older gang that asked
            # for the room tries its pods now, back-off or not
            del self._claims[key]
            ns, _, cname = claimant.partition("/")
            has = self.handle.has_pod
            pending = {uid for p in self.handle.group_pods(ns, cname)
                       if not has(uid := (p.get("metadata") or {}).get("uid", ""))}
            state.write(PODS_TO_ACTIVATE, pending or None)

    # -- Permit ----------------------------------------------------------------------------

    def permit(self, state: CycleState, pod: PodInfo, node_name: str
               ) -> tuple[Status | None, float]:
        name = pod.labels.get(POD_GROUP_LABEL)
        if not name:
            return None, 0.0
        key = f"{pod.namespace}/{name}"
        pg = self.handle.get_object(PODGROUPS, key)
        if pg is None:
            return Status.unresolvable("PodGroup not found"), 0.0
        has = self.handle.has_pod
        members = self.handle.group_pods(pod.namespace, name)
        placed = {uid for p in members
                  if has(uid := (p.get("metadata") or {}).get("uid", ""))}
        placed.add(pod.uid)  # assumed before Permit runs
        if len(placed) >= min_member(pg):
            for wp in self._waiting(pod.namespace, name, but=pod.uid):
                wp.allow(self.name)
            return None, 0.0
        if len(placed) == 1:  # the first of its gang: try the others now, back-off or not
            siblings = {uid for p in members
                        if (uid := (p.get("metadata") or {}).get("uid", "")) not in placed}
            if siblings:
                known = state.read(PODS_TO_ACTIVATE)
                state.write(PODS_TO_ACTIVATE, siblings | set(known or ()))
        return Status.wait(), self.timeout(pg)

    # -- requeueing ------------------------------------------------------------------------

    def _names_group(self, pod: PodInfo, old: Any, new: Any) -> bool:
        """A PodGroup event about the pod's own group."""
        obj = new if new is not None else old
        if not isinstance(obj, dict):
            return False
        md = obj.get("metadata") or {}
        return md.get("namespace") == pod.namespace and bool(md.get("name")) and \
            md.get("name") == pod.labels.get(POD_GROUP_LABEL)

    def _is_sibling(self, pod: PodInfo, old: Any, new: Any) -> bool:
        """A pod event about another member of the pod's group."""
        obj = new if new is not None else old
        if not isinstance(obj, dict):
            return False
        md = obj.get("metadata") or {}
        name = (md.get("labels") or {}).get(POD_GROUP_LABEL)
        return bool(name) and name == pod.labels.get(POD_GROUP_LABEL) and \
            md.get("namespace") == pod.namespace and md.get("uid") != pod.uid

    def _waits_for_room(self, pod: PodInfo, old: Any, new: Any) -> bool:
        """Room freed or added matters to a member of a group that PreFilter found short
        of its ``minResources``, or that is in back-off."""
        name = pod.labels.get(POD_GROUP_LABEL)
        if not name:
            return False
        key = f"{pod.namespace}/{name}"
        return key in self._short or key in self._backed_off

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            ClusterEventWithHint(ClusterEvent("PodGroup", Action.ADD | Action.UPDATE),
                                 self._names_group),
            ClusterEventWithHint(UNSCHEDULED_POD_ADD, self._is_sibling),
            ClusterEventWithHint(ClusterEvent("Pod", Action.ADD), self._is_sibling),
            ClusterEventWithHint(ClusterEvent("Pod", Action.DELETE), self._waits_for_room),
            ClusterEventWithHint(ClusterEvent(
                "Node", Action.ADD | Action.UPDATE_NODE_ALLOCATABLE), self._waits_for_room),
        ]


def _seconds(args: dict[str, Any], name: str, default: float) -> float:
    value = args.pop(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: Invalid value: {value!r}: must be a number of seconds")
    if value < 0:
        raise ValueError(f"{name}: Invalid value: {value}: must be greater than or equal to 0")
    return float(value)


def new(args: dict[str, Any], handle: Handle) -> Coscheduling:
    """Args (``CoschedulingArgs``): ``permitWaitingTimeSeconds`` (60),
    ``podGroupBackoffSeconds`` (0: off)."""
    args = dict(args)
    wait = _seconds(args, "permitWaitingTimeSeconds", DEFAULT_WAIT_SECONDS)
    backoff = _seconds(args, "podGroupBackoffSeconds", 0)
    return Coscheduling(handle, permit_waiting_time=wait, pod_group_backoff=backoff)
