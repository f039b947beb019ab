"""Placement rules over plain pod and node dicts: resource requests, node selectors,
tolerations. Pure functions, shared by the scheduler, the node agent's admission and the
controllers that place pods themselves (DaemonSet).

>>> pod = {"spec": {"containers": [{"resources": {"requests": {"cpu": "250m"}}}]}}
>>> pod_requests(pod)
{'cpu': 250}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kybernetes.api import quantity

Obj = dict[str, Any]
Resources = dict[str, int]
"""Amounts by resource name: ``cpu`` in millicores, everything else in whole units."""

DEFAULT_MILLI_CPU_REQUEST = 100
"""What a container without a CPU request counts for when nodes are scored."""
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
HOSTNAME_LABEL = "kubernetes.io/hostname"


@lru_cache(maxsize=4096)
def amount(name: str, q: str | int | float) -> int:
    """A quantity in canonical units (memoised: clusters repeat the same few values)."""
    return quantity.milli_value(q) if name == "cpu" else quantity.value(q)


def resource_list(rl: Mapping[str, Any] | None) -> Resources:
    """A ResourceList (``{"cpu": "2", "memory": "1Gi"}``) in canonical integer units."""
    return {name: amount(name, q) for name, q in (rl or {}).items()}


def _add(into: Resources, other: Mapping[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _max(into: Resources, other: Mapping[str, int]) -> None:
    for k, v in other.items():
        if v > into.get(k, 0):
            into[k] = v


def _container_requests(c: Mapping[str, Any], *, non_zero: bool) -> Resources:
    r = resource_list((c.get("resources") or {}).get("requests"))
    if non_zero:
        r = {"cpu": r.get("cpu", DEFAULT_MILLI_CPU_REQUEST),
             "memory": r.get("memory", DEFAULT_MEMORY_REQUEST)}
    return r


def pod_requests(pod: Mapping[str, Any], *, non_zero: bool = False) -> Resources:
    """What a pod asks of its node, as Kubernetes computes it: the sum of its containers
    and sidecars, or the largest init step if that is more, plus the pod's overhead.

    ``non_zero``: only cpu and memory, a container without a request counting for
    100m and 200Mi (what scoring uses, so that empty pods still spread).
    """
    spec = pod.get("spec") or {}
    total: Resources = {}
    for c in spec.get("containers") or ():
        _add(total, _container_requests(c, non_zero=non_zero))
    sidecars: Resources = {}
    init_peak: Resources = {}
    for c in spec.get("initContainers") or ():
        req = _container_requests(c, non_zero=non_zero)
        if c.get("restartPolicy") == "Always":
            # a sidecar keeps running beside the containers and the later init steps
            _add(total, req)
            _add(sidecars, req)
            step = dict(sidecars)
        else:
            step = dict(req)
            _add(step, sidecars)
        _max(init_peak, step)
    _max(total, init_peak)
    overhead = resource_list(spec.get("overhead"))
    if non_zero:
        overhead = {k: v for k, v in overhead.items() if k in ("cpu", "memory")}
    _add(total, overhead)
    return {k: v for k, v in total.items() if v or (k in ("cpu", "memory") and non_zero)}


# -- node selectors -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, value: str | None) -> bool:
        op = self.operator
        if op == "In":
            return value is not None and value in self.values
        if op == "NotIn":
            return value is None or value not in self.values
        if op == "Exists":
            return value is not None
        if op == "DoesNotExist":
            return value is None
        if op in ("Gt", "Lt"):
            if value is None or len(self.values) != 1:
                return False
            try:
                have, bound = int(value), int(self.values[0])
            except ValueError:
                return False
            return have > bound if op == "Gt" else have < bound
        return False


@dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    expressions: tuple[NodeSelectorRequirement, ...]
    fields: tuple[NodeSelectorRequirement, ...]

    def matches(self, labels: Mapping[str, str], name: str) -> bool:
        if not self.expressions and not self.fields:
            return False  # an empty term matches no node
        for r in self.expressions:
            if not r.matches(labels.get(r.key)):
                return False
        return all(not (r.key != "metadata.name" or not r.matches(name)) for r in self.fields)


def _requirements(items: Iterable[Mapping[str, Any]] | None
                  ) -> tuple[NodeSelectorRequirement, ...]:
    return tuple(NodeSelectorRequirement(str(r.get("key", "")), str(r.get("operator", "")),
                                         tuple(str(v) for v in r.get("values") or ()))
                 for r in items or ())


def node_selector_term(term: Mapping[str, Any]) -> NodeSelectorTerm:
    return NodeSelectorTerm(_requirements(term.get("matchExpressions")),
                            _requirements(term.get("matchFields")))


@dataclass(frozen=True, slots=True)
class NodeSelector:
    """``nodeSelectorTerms``: a node matches when any one term matches (terms are ORed,
    the requirements within a term ANDed)."""

    terms: tuple[NodeSelectorTerm, ...]

    @classmethod
    def parse(cls, selector: Mapping[str, Any]) -> NodeSelector:
        return cls(tuple(node_selector_term(t) for t in selector.get("nodeSelectorTerms") or ()))

    def matches(self, labels: Mapping[str, str], name: str) -> bool:
        return any(t.matches(labels, name) for t in self.terms)


# -- taints and tolerations ---------------------------------------------------------------


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Whether one toleration tolerates one taint (key, operator, value and effect)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        # an empty key with Equal is invalid; validation rejects it before we get here
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taint(taints: Iterable[Mapping[str, Any]],
                      tolerations: Sequence[Mapping[str, Any]], effects: tuple[str, ...]
                      ) -> Mapping[str, Any] | None:
    """The first taint with one of ``effects`` that no toleration tolerates."""
    for taint in taints:
        if taint.get("effect") not in effects:
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def taint_text(taint: Mapping[str, Any]) -> str:
    """A taint as upstream's messages show it: ``{gpu: true}``."""
    return f"{{{taint.get('key', '')}: {taint.get('value', '')}}}"
