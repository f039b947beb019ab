"""The scheduling framework's vocabulary: statuses, the per-attempt cycle state, the
extension points a plugin may implement, and the cluster events that requeue pods.

A plugin is a class with a ``name`` and any of the extension-point methods below; the
framework looks at which it has. Filter, Score and the like run synchronously inside one
scheduling cycle (nothing else touches the cache meanwhile); PostFilter, PreBind and Bind
may await the API. ``None`` is success wherever a ``Status`` is returned::

    class NodeName:
        name = "NodeName"

        def filter(self, state, pod, node):
            if pod.node_name and pod.node_name != node.name:
                return Status.unresolvable("node(s) didn't match the requested node name")
            return None
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kybernetes.scheduler.types import NodeInfo, PodInfo, TermCounts


class Code(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    """The pod does not fit now; preemption or a cluster change may help."""
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    """The pod does not fit and preemption cannot help (wrong node name, affinity...)."""
    WAIT = 4
    SKIP = 5
    PENDING = 6


@dataclass(slots=True)
class Status:
    code: Code
    reasons: list[str] = field(default_factory=list)
    plugin: str = ""

    @classmethod
    def unschedulable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE, list(reasons))

    @classmethod
    def unresolvable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, list(reasons))

    @classmethod
    def error(cls, message: str) -> Status:
        return cls(Code.ERROR, [message])

    @classmethod
    def skip(cls) -> Status:
        return cls(Code.SKIP)

    @classmethod
    def wait(cls) -> Status:
        return cls(Code.WAIT)

    @property
    def rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                             Code.PENDING)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def with_plugin(self, plugin: str) -> Status:
        if not self.plugin:
            self.plugin = plugin
        return self


def fit_message(num_nodes: int, statuses: dict[str, Status], *, pre_filter_msg: str = "",
                post_filter_msg: str = "") -> str:
    """upstream's FitError text: ``0/3 nodes are available: 1 Insufficient cpu, 2 node(s)
    had untolerated taint {gpu: true}. preemption: ...`` (reasons counted over nodes,
    sorted as strings)."""
    msg = f"0/{num_nodes} nodes are available:"
    if pre_filter_msg:
        msg += f" {pre_filter_msg}."
    else:
        counts: dict[str, int] = {}
        for st in statuses.values():
            for r in st.reasons:
                counts[r] = counts.get(r, 0) + 1
        parts = sorted(f"{n} {reason}" for reason, n in counts.items())
        if parts:
            msg += f" {', '.join(parts)}."
    if post_filter_msg:
        msg += f" {post_filter_msg}"
    return msg


class StateData(Protocol):
    def clone(self) -> StateData: ...


class CycleState:
    """What plugins compute for one scheduling attempt (PreFilter) and read later (Filter,
    Score). Cloned when preemption simulates removing pods."""

    __slots__ = ("_data", "skip_filter", "skip_score")

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self.skip_filter: set[str] = set()
        self.skip_score: set[str] = set()

    def write(self, key: str, value: Any) -> None:
        self._data[key] = value

    def read(self, key: str) -> Any:
        """The value a plugin wrote, or ``None``."""
        return self._data.get(key)

    def clone(self) -> CycleState:
        c = CycleState()
        c._data = {k: (v.clone() if hasattr(v, "clone") else v) for k, v in self._data.items()}
        c.skip_filter = set(self.skip_filter)
        c.skip_score = set(self.skip_score)
        return c


@dataclass(slots=True)
class PreFilterResult:
    node_names: set[str] | None = None
    """Only these nodes can fit (None: all nodes)."""


@dataclass(slots=True)
class PostFilterResult:
    nominated_node_name: str = ""


# -- cluster events: what may make an unschedulable pod schedulable ----------------------


class Action(enum.IntFlag):
    ADD = 1
    DELETE = 2
    UPDATE_NODE_ALLOCATABLE = 4
    UPDATE_NODE_LABEL = 8
    UPDATE_NODE_TAINT = 16
    UPDATE_NODE_CONDITION = 32
    UPDATE_NODE_ANNOTATION = 64
    UPDATE_POD_LABEL = 128
    UPDATE_POD_SCALE_DOWN = 256
    UPDATE_POD_TOLERATIONS = 512
    UPDATE_POD_SCHEDULING_GATES_ELIMINATED = 1024
    UPDATE = 2047 & ~3
    ALL = 2047


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    resource: str
    """"Pod", "Node", "PersistentVolumeClaim", ..., or "*"."""
    action: Action
    label: str = ""

    def covers(self, other: ClusterEvent) -> bool:
        """Whether a plugin registered for ``self`` cares about the event ``other``."""
        return ((self.resource == "*" or self.resource == other.resource)
                and bool(self.action & other.action))


QueueingHint = Callable[["PodInfo", Any, Any], bool]
"""(pod waiting, old object, new object) -> whether the event may make it schedulable."""


@dataclass(frozen=True, slots=True)
class ClusterEventWithHint:
    event: ClusterEvent
    hint: QueueingHint | None = None


# -- extension points ---------------------------------------------------------------------


class Plugin(Protocol):
    name: str


@runtime_checkable
class PreEnqueuePlugin(Protocol):
    name: str

    def pre_enqueue(self, pod: PodInfo) -> Status | None: ...


@runtime_checkable
class QueueSortPlugin(Protocol):
    name: str

    def sort_key(self, pod: PodInfo, timestamp: float) -> tuple[Any, ...]: ...


@runtime_checkable
class PreFilterPlugin(Protocol):
    name: str

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                   ) -> tuple[PreFilterResult | None, Status | None]: ...


@runtime_checkable
class PreFilterExtensions(Protocol):
    """PreFilter state that follows pods added to or removed from a node (preemption
    simulates removing victims; nominated pods are added)."""

    name: str

    def add_pod(self, state: CycleState, pod: PodInfo, to_add: PodInfo, node: NodeInfo
                ) -> Status | None: ...

    def remove_pod(self, state: CycleState, pod: PodInfo, to_remove: PodInfo,
                   node: NodeInfo) -> Status | None: ...


@runtime_checkable
class FilterPlugin(Protocol):
    """Optional attributes, read by preemption's dry runs and the checks with nominated
    pods: ``filter_reads_pods = False`` on a plugin whose verdict depends only on the
    pod's spec (not its volumes, their mounts or its hostname) and the node object, never
    on the pods placed on the node (those checks then ask it once per node, and
    preemption reuses a node's dry run while neither changed); ``filter_room(pod, room)``
    (the verdict) and ``fits_room(pod, room)`` (whether it passes) on one whose verdict
    depends on the pods only through their counts (a
    :class:`~kybernetes.scheduler.types.Room`)."""

    name: str

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None: ...


@runtime_checkable
class PostFilterPlugin(Protocol):
    name: str

    async def post_filter(self, state: CycleState, pod: PodInfo,
                          statuses: dict[str, Status]
                          ) -> tuple[PostFilterResult | None, Status | None]: ...


@runtime_checkable
class PreScorePlugin(Protocol):
    name: str

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                  ) -> Status | None: ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int: ...


@runtime_checkable
class ScoreNormalizer(Protocol):
    """A score plugin that rescales its raw scores (in place) to 0..MAX_NODE_SCORE."""

    name: str

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None: ...


@runtime_checkable
class ReservePlugin(Protocol):
    name: str

    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None: ...

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None: ...


@runtime_checkable
class PermitPlugin(Protocol):
    name: str

    def permit(self, state: CycleState, pod: PodInfo, node_name: str
               ) -> tuple[Status | None, float]: ...


@runtime_checkable
class PreBindPlugin(Protocol):
    name: str

    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str
                       ) -> Status | None: ...


@runtime_checkable
class BindPlugin(Protocol):
    name: str

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None: ...


@runtime_checkable
class PostBindPlugin(Protocol):
    name: str

    def post_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None: ...


@runtime_checkable
class EnqueueExtensions(Protocol):
    name: str

    def events_to_register(self) -> list[ClusterEventWithHint]: ...


MAX_NODE_SCORE = 100
MAX_TOTAL_SCORE = 2**63 - 1

POD_ADD = ClusterEvent("Pod", Action.ADD)
POD_DELETE = ClusterEvent("Pod", Action.DELETE)
NODE_ADD = ClusterEvent("Node", Action.ADD)
UNSCHEDULED_POD_ADD = ClusterEvent("UnscheduledPod", Action.ADD)
"""A pending pod was created (only reported for pods of a PodGroup: it may complete a gang)."""

BINDING_ANNOTATIONS = "kybernetes.io/binding-annotations"
"""CycleState key: annotations (a dict) a Reserve plugin wants written onto the pod with
its binding (the API server copies a Binding's annotations onto the pod)."""

PODS_TO_ACTIVATE = "kubernetes.io/pods-to-activate"
"""CycleState key: a ``set`` of pod uids a plugin (Reserve or Permit) wants moved from
backoff or the unschedulable pods straight to activeQ once the scheduling cycle ends
(upstream's ``PodsToActivate``: gang siblings)."""


class Handle(Protocol):
    """What plugins may read of the cluster besides the pod and node they are given.

    All of it comes from the scheduler's informer caches and its node cache; nothing here
    does I/O.
    """

    def nodes(self) -> list[NodeInfo]:
        """Every node, in the order nodes are tried."""
        ...

    def node(self, name: str) -> NodeInfo | None: ...

    def nodes_with_affinity_pods(self) -> list[NodeInfo]:
        """Nodes running at least one pod with (anti-)affinity terms."""
        ...

    def nodes_with_required_anti_affinity_pods(self) -> list[NodeInfo]: ...

    def pods_by_topology(self, namespace: str, key: str, value: str, topology: str
                         ) -> Mapping[tuple[str, str], int]:
        """(``topology``, a node's value of it) → how many pods of ``namespace`` labelled
        ``key=value`` the known nodes with that label hold."""
        ...

    def required_anti_affinity_counts(self) -> TermCounts:
        """The distinct required anti-affinity terms of the pods on the nodes, each with
        its pods per topology pair (``types.required_anti_affinity_counts``)."""
        ...

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        """The labels of a namespace (None when it is not known)."""
        ...

    nominator: Any
    """The queue's nominator: pods nominated to nodes by preemption (``for_node``)."""
    waiting_pods: dict[str, Any]
    """Pods held at Permit, by uid (``allow(plugin)`` / ``reject(plugin, message)``)."""

    @property
    def client(self) -> Any:
        """The API client (``kybernetes.client.Client``) for PreBind/Bind/PostFilter
        plugins that write; None in unit tests."""
        ...

    def objects(self, resource: str) -> list[dict[str, Any]]:
        """The cached objects of a resource the scheduler watches, by plural name:
        ``services``, ``replicasets``, ``statefulsets``, ``replicationcontrollers``,
        ``poddisruptionbudgets``, ``persistentvolumeclaims``, ``persistentvolumes``,
        ``storageclasses``, ``podgroups``, ``namespaces``."""
        ...

    def get_object(self, resource: str, key: str) -> dict[str, Any] | None:
        """One cached object of :meth:`objects` by ``namespace/name`` (a dict lookup)."""
        ...

    def group_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every pod (any phase, bound or not) labelled
        ``scheduling.x-k8s.io/pod-group: <name>`` in ``namespace``, from an index."""
        ...

    def has_pod(self, uid: str) -> bool:
        """Whether the pod is placed in the cache: bound, or assumed (waiting at Permit
        or binding)."""
        ...


PluginFactory = Callable[[dict[str, Any], Handle], Any]
"""How a plugin is made: ``factory(args, handle)``; ``args`` come from the profile's
``pluginConfig`` (the ``args`` object without apiVersion/kind), ``{}`` when none."""
