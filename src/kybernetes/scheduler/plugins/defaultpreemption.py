"""DefaultPreemption (PostFilter): when a pod fits nowhere, find a node where removing
pods of lower priority would let it fit, evict those victims and nominate the node.

As upstream:

1. A pod with ``preemptionPolicy: Never``, or one whose nominated node still has a
   victim terminating, does not preempt.
2. Only nodes that failed with a resolvable reason (Unschedulable, not
   UnschedulableAndUnresolvable) are tried; on each, every lower-priority pod is removed,
   then pods are given back ("reprieved") from the most important down while the
   preemptor still fits — those whose eviction would break a PodDisruptionBudget first.
3. Of the candidate nodes the one chosen has the fewest PDB violations, then the lowest
   highest-victim priority, the lowest sum of priorities, the fewest victims, the latest
   start of its most important victims.
4. Victims get a ``DisruptionTarget`` condition and a graceful delete; the preemptor's
   ``status.nominatedNodeName`` names the node, and the nominator keeps lower-priority
   pods off the space being freed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339
from kybernetes.api.selectors import SelectorError, from_label_selector
from kybernetes.client.events import EventRecorder
from kybernetes.scheduler.framework import (
    Code,
    CycleState,
    Handle,
    PostFilterResult,
    Status,
    fit_message,
)
from kybernetes.scheduler.runtime import (
    CountingFilter,
    Framework,
    first_failure,
)
from kybernetes.scheduler.types import NodeInfo, PodInfo, Room

log = logging.getLogger(__name__)
Obj = dict[str, Any]

NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
NEVER = "not eligible due to preemptionPolicy=Never."
TERMINATING = "not eligible due to a terminating pod on the nominated node."
_INT32_OFFSET = 2**31
_NO_PODS: list[PodInfo] = []
_DRY_RUN_SHAPES = 8
"""How many kinds of preemptor (spec, plugins, budgets) keep their dry runs."""


@dataclass
class Candidate:
    node: str
    victims: list[PodInfo]
    pdb_violations: int

    @cached_property
    def rank(self) -> tuple[int, int, int, int, float]:
        """upstream's criteria for picking a node, in order, lowest best: PDB violations,
        the highest victim priority, the sum of victim priorities, the number of victims,
        and (negated) the earliest start among the victims of that highest priority — the
        node whose most important victims started last loses the least work."""
        victims = self.victims
        top = max(v.priority for v in victims)
        return (self.pdb_violations, top, sum(v.priority + _INT32_OFFSET for v in victims),
                len(victims), -min(v.start_time for v in victims if v.priority == top))


_Outcome = tuple[list[PodInfo], int, "Status | None"]
"""A dry run's victims (most important first), how many break a budget, and the node's
verdict when it cannot be a candidate."""


_Seen = tuple[NodeInfo, int, int, tuple[str, ...], "Candidate | Status"]
"""A dry run remembered: the node, its generation and start generation then, the uids of
the nominated pods that counted, the outcome (with its rank, once asked)."""


def _found(node: str, outcome: _Outcome) -> Candidate | Status:
    """A dry run's outcome on ``node`` as a candidate, or why the node is none."""
    victims, violations, st = outcome
    if st is None and victims:
        return Candidate(node, victims, violations)
    return st if st is not None else Status.error(
        f"expected at least one victim pod on node {node!r}")


def _more_important(pod: PodInfo) -> tuple[int, float]:
    """Sort key: higher priority first, then the one that started earlier."""
    return (-pod.priority, pod.start_time)


def terminating_by_preemption(pod: PodInfo) -> bool:
    if not pod.terminating:
        return False
    return any(c.get("type") == "DisruptionTarget" and c.get("reason") == "PreemptionByScheduler"
               for c in (pod.pod.get("status") or {}).get("conditions") or ())


class _Budgets:
    """PodDisruptionBudgets and the disruptions each still allows."""

    def __init__(self, pdbs: list[Obj]) -> None:
        self.entries: list[tuple[Obj, Any, int, set[str]]] = []
        self.version = tuple(((p.get("metadata") or {}).get("uid"),
                              (p.get("metadata") or {}).get("resourceVersion")) for p in pdbs)
        """Which budgets these are, at which versions."""
        for pdb in pdbs:
            sel = (pdb.get("spec") or {}).get("selector")
            try:
                selector = from_label_selector(sel)
            except SelectorError:
                continue
            status = pdb.get("status") or {}
            self.entries.append((pdb, selector, int(status.get("disruptionsAllowed") or 0),
                                 set((status.get("disruptedPods") or {}).keys())))

    def split(self, pods: list[PodInfo]) -> tuple[list[PodInfo], list[PodInfo]]:
        """(pods whose eviction would violate a budget, the others), each in the given
        order (budgets are used up in that order)."""
        allowed = [e[2] for e in self.entries]
        violating: list[PodInfo] = []
        ok: list[PodInfo] = []
        for pod in pods:
            bad = False
            for i, (pdb, selector, _, disrupted) in enumerate(self.entries):
                if (pdb.get("metadata") or {}).get("namespace") != pod.namespace:
                    continue
                if selector.empty or not selector.matches(pod.labels):
                    continue  # policy/v1: an empty selector matches no pod here
                if pod.name in disrupted:
                    continue
                allowed[i] -= 1
                if allowed[i] < 0:
                    bad = True
            (violating if bad else ok).append(pod)
        return violating, ok


def _give_back(budgets: _Budgets, lower: list[PodInfo], reprieve: Callable[[PodInfo], bool]
               ) -> tuple[list[PodInfo], int]:
    """Give the pods ``lower`` (most important first) back while the preemptor still fits
    (``reprieve`` puts one back and says whether it may stay, else takes it away again),
    those whose eviction would break a disruption budget first: (the victims, most
    important first; how many of them break a budget)."""
    violating, ok = budgets.split(lower)
    victims: list[PodInfo] = []
    violations = 0
    for p in violating:
        if not reprieve(p):
            victims.append(p)
            violations += 1
    for p in ok:
        if not reprieve(p):
            victims.append(p)
    victims.sort(key=_more_important)
    return victims, violations


def _dry_run_key(pod: PodInfo, counting: CountingFilter, budgets: _Budgets
                 ) -> tuple[Any, ...]:
    """What a dry run by counts reads besides the node and the pods nominated there: the
    pod's spec (its priority and requests, and all the pod-independent plugins read of
    it) less the parts that differ between replicas and that no such plugin reads (the
    volumes, whose service-account token volume has a random name, their mounts, the
    hostname), which plugins are asked, the disruption budgets."""
    spec = {k: v for k, v in pod.spec.items() if k not in _PER_REPLICA}
    for k in _CONTAINER_LISTS:
        if k in spec:
            spec[k] = [{f: v for f, v in c.items() if f != "volumeMounts"} for c in spec[k]]
    return (pod.namespace, orjson.dumps(spec, option=orjson.OPT_SORT_KEYS),
            tuple(p.name for p in counting.before), counting.reader.name,
            tuple(p.name for p in counting.after), budgets.version)


_PER_REPLICA = frozenset(("volumes", "hostname"))
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


class DefaultPreemption:
    name = "DefaultPreemption"

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        self.handle = handle
        self.min_candidate_percentage = int(args.get("minCandidateNodesPercentage", 10))
        self.min_candidate_absolute = int(args.get("minCandidateNodesAbsolute", 100))
        if not 0 <= self.min_candidate_percentage <= 100:
            raise ValueError("minCandidateNodesPercentage: not in valid range [0, 100]")
        self.framework: Framework | None = None
        self._recorder: EventRecorder | None = None
        self._dry_runs: dict[tuple[Any, ...], dict[str, _Seen]] = {}
        """What a dry run by counts read besides the node (:func:`_dry_run_key`) → node
        name → the last one there: the node, its generations then, the outcome."""
        self.dry_runs_reused = 0

    def bind_framework(self, fwk: Framework) -> None:
        self.framework = fwk

    # -- PostFilter ------------------------------------------------------------------------

    async def post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status]
                          ) -> tuple[PostFilterResult | None, Status | None]:
        ok, msg = self.eligible(pod, statuses)
        if not ok:
            return None, Status.unschedulable(msg)
        nodes = self.handle.nodes()
        candidates, node_statuses = self.find_candidates(state, pod, nodes, statuses)
        if not candidates:
            return None, Status.unschedulable(
                "preemption: " + fit_message(len(nodes), node_statuses))
        best = pick_one(candidates)
        try:
            await self.prepare(best, pod)
        except StatusError as e:
            return None, Status.error(f"preemption: {e.message}")
        return PostFilterResult(best.node), None

    def eligible(self, pod: PodInfo, statuses: dict[str, Status]) -> tuple[bool, str]:
        if pod.spec.get("preemptionPolicy") == "Never":
            return False, NEVER
        nominated = (pod.pod.get("status") or {}).get("nominatedNodeName") or ""
        if nominated:
            st = statuses.get(nominated)
            if st is not None and st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
                return True, ""
            node = self.handle.node(nominated)
            if node is not None and any(p.priority < pod.priority
                                        and terminating_by_preemption(p)
                                        for p in node.pods.values()):
                return False, TERMINATING
        return True, ""

    def find_candidates(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo],
                        statuses: dict[str, Status]
                        ) -> tuple[list[Candidate], dict[str, Status]]:
        out: dict[str, Status] = {}
        potential: list[NodeInfo] = []
        for n in nodes:
            st = statuses.get(n.name)
            if st is not None and st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
                out[n.name] = Status.unresolvable(NOT_HELPFUL)
            else:
                potential.append(n)
        if not potential:
            return [], out
        budgets = _Budgets(self.handle.objects("poddisruptionbudgets"))
        want = min(len(potential), max(self.min_candidate_absolute,
                                       len(potential) * self.min_candidate_percentage // 100))
        offset = random.randrange(len(potential))
        non_violating: list[Candidate] = []
        violating: list[Candidate] = []
        assert self.framework is not None
        counting = self.framework.counting_filter(state)
        memo: dict[str, _Seen] = {}
        nominator = self.handle.nominator
        nominated = nominator.counting(pod) if nominator else None
        if counting is not None:
            key = _dry_run_key(pod, counting, budgets)
            memo = self._dry_runs.pop(key, memo)  # then put back last: the newest
            if len(memo) > 2 * len(nodes) + 64:
                memo.clear()
            while len(self._dry_runs) >= _DRY_RUN_SHAPES:
                del self._dry_runs[next(iter(self._dry_runs))]
            self._dry_runs[key] = memo
        # A dry run by counts is reused (from ``memo``: those of pods whose spec, plugins
        # asked and budgets are those of ``pod`` now) while the node is the same (its
        # generation: pods, requests, the node object; its start generation: the order of
        # its pods) and so are the pods nominated there that count (by uid: what they
        # request cannot change). Replicas of one workload preempting one after another
        # redo only the nodes that changed.
        for node in potential[offset:] + potential[:offset]:
            if counting is None:
                found = _found(node.name, self.select_victims(state.clone(), pod, node.clone(),
                                                              budgets))
            else:
                extra = nominated.get(node.name) if nominated is not None else _NO_PODS
                held = tuple([p.uid for p in extra]) if extra else ()
                seen = memo.get(node.name)
                if seen is not None and seen[0] is node and seen[1] == node.generation \
                        and seen[2] == node.start_generation and seen[3] == held:
                    self.dry_runs_reused += 1
                    found = seen[4]
                else:
                    found = _found(node.name, self.select_victims_by_counts(
                        state, pod, node, budgets, counting, extra))
                    memo[node.name] = (node, node.generation, node.start_generation, held,
                                       found)
            if isinstance(found, Candidate):
                (violating if found.pdb_violations else non_violating).append(found)
                if non_violating and len(non_violating) + len(violating) >= want:
                    break
                continue
            out[node.name] = found
        return non_violating + violating, out

    def select_victims(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                       budgets: _Budgets) -> tuple[list[PodInfo], int, Status | None]:
        """The fewest, least important pods to remove from ``node`` (a copy) so that
        ``pod`` fits, and how many of them break a disruption budget."""
        fwk = self.framework
        assert fwk is not None
        lower = sorted((p for p in node.pods.values() if p.priority < pod.priority),
                       key=_more_important)
        if not lower:
            return [], 0, Status.unresolvable(NO_VICTIMS)
        for p in lower:
            node.remove_pod(p)
            st = fwk.run_remove_pod(state, pod, p, node)
            if st is not None:
                return [], 0, st
        nominated = self.handle.nominator.for_node(node.name) if self.handle.nominator else []
        st = fwk.run_filter_with_nominated(state, pod, node, nominated)
        if st is not None:
            return [], 0, st
        def reprieve(p: PodInfo) -> bool:
            node.add_pod(p)
            fwk.run_add_pod(state, pod, p, node)
            if fwk.run_filter_with_nominated(state, pod, node, nominated) is None:
                return True
            node.remove_pod(p)
            fwk.run_remove_pod(state, pod, p, node)
            return False

        return (*_give_back(budgets, lower, reprieve), None)

    def select_victims_by_counts(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                                 budgets: _Budgets, counting: CountingFilter,
                                 extra: list[PodInfo]) -> _Outcome:
        """:meth:`select_victims` when only resource counts decide (``counting``; ``extra``:
        the pods nominated to the node that count): the same victims and verdicts, from
        counts kept beside the node instead of a copy of it run through the whole Filter
        chain at each step."""
        lower = [p for p in node.pods.values() if p.priority < pod.priority]
        if not lower:
            return [], 0, Status.unresolvable(NO_VICTIMS)
        st = first_failure(counting.before, state, pod, node)
        if st is not None:
            return [], 0, st
        after = first_failure(counting.after, state, pod, node)
        bare = Room(node)
        """The node less the victims so far."""
        for p in lower:
            bare.remove(p)
        full: Room | None = None
        """The same with the nominated pods that count added (as Filter sees it)."""
        if extra:
            full = bare.copy()
            for p in extra:
                full.add(p)
            st = counting.room_verdict(pod, full) or after
            if st is not None:
                return [], 0, st
        st = counting.room_verdict(pod, bare) or after
        if st is not None:
            return [], 0, st
        lower.sort(key=_more_important)

        def reprieve(p: PodInfo) -> bool:
            # the plugins other than ``counting.reader`` passed above, whatever the counts
            bare.add(p)
            if full is None:
                if counting.fits(pod, bare):
                    return True
            else:
                full.add(p)
                if counting.fits(pod, bare) and counting.fits(pod, full):
                    return True
                full.remove(p)
            bare.remove(p)
            return False

        return (*_give_back(budgets, lower, reprieve), None)

    # -- acting on the choice --------------------------------------------------------------

    async def _evict(self, client: Any, v: PodInfo, pod: PodInfo, node: str,
                     profile: str) -> None:
        """Mark a victim (DisruptionTarget) and delete it gracefully; a waiting pod is
        rejected at Permit instead."""
        waiting = self.handle.waiting_pods.get(v.uid)
        if waiting is not None:
            waiting.reject(self.name, "preempted")
            return
        cond = {"type": "DisruptionTarget", "status": "True",
                "reason": "PreemptionByScheduler",
                "message": f"{profile}: preempting to accommodate a higher priority pod",
                "lastTransitionTime": rfc3339()}
        try:
            await client.patch("v1", "pods", v.name, {"status": {"conditions": [cond]}},
                               namespace=v.namespace, subresource="status",
                               patch_type="strategic")
            await client.delete("v1", "pods", v.name, namespace=v.namespace,
                                preconditions={"uid": v.uid})
        except StatusError as e:
            if e.code != 404:
                raise
            return
        assert self._recorder is not None
        await self._recorder.emit(v.pod, "Normal", "Preempted",
                                  f"Preempted by pod {pod.uid} on node {node}")

    async def prepare(self, c: Candidate, pod: PodInfo) -> None:
        client = self.handle.client
        if self._recorder is None:
            self._recorder = EventRecorder(client, "default-scheduler")
        fwk_name = self.framework.name if self.framework is not None else "default-scheduler"
        await asyncio.gather(*(self._evict(client, v, pod, c.node, fwk_name)
                               for v in c.victims))
        # lower-priority pods nominated to this node lose their place
        nominator = self.handle.nominator
        if nominator is None:
            return
        for other in nominator.for_node(c.node):
            if other.priority < pod.priority:
                nominator.delete(other.uid)
                try:
                    await client.patch("v1", "pods", other.name,
                                       {"status": {"nominatedNodeName": None}},
                                       namespace=other.namespace, subresource="status")
                except StatusError as e:
                    log.debug("clearing the nomination of %s: %s", other.key, e.message)


def pick_one(candidates: list[Candidate]) -> Candidate:
    """upstream's pickOneNodeForPreemption: the candidate best by each criterion in turn
    (:attr:`Candidate.rank`), the first of those still tied."""
    return min(candidates, key=_rank)


def _rank(c: Candidate) -> tuple[int, int, int, int, float]:
    return c.rank


def new(args: dict[str, Any], handle: Handle) -> DefaultPreemption:
    return DefaultPreemption(args, handle)
