"""Every node's allocatable and requested resources as numpy columns, kept in step with
the cache, so that the common plugins (NodeResourcesFit, BalancedAllocation, taints,
cordons) can filter and score all nodes at once instead of one Python call per node.

Rows follow :meth:`Cache.nodes` order. A ``NodeInfo`` in the table writes its row back
whenever a pod is added or removed or the node changes; clones (preemption's what-ifs)
are not in any table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from kybernetes.scheduler.types import NodeInfo

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_BASIC = ("cpu", "memory", "ephemeral-storage")


class LabelColumn(NamedTuple):
    codes: IntArray
    """Per node: the index of its value in ``values``, -1 when it lacks the label."""
    values: list[str]
    code_of: dict[str, int]

    def spread(self, per_value: list[bool], *, missing: bool = False) -> BoolArray:
        """A verdict per value, as one per node (``missing`` for nodes without it)."""
        out: BoolArray = np.array([*per_value, missing], np.bool_)[self.codes]
        return out

    def spread_hits(self, hits: list[int], *, missing: bool = False) -> BoolArray:
        """:meth:`spread` of True for the values coded ``hits``, False for the others:
        no list as long as the values (thousands with hostnames) to build."""
        per_value = np.zeros(len(self.values) + 1, np.bool_)
        per_value[-1] = missing
        if hits:
            per_value[hits] = True
        out: BoolArray = per_value[self.codes]
        return out

    def numbers(self, by_value: Mapping[str, float], rows: IntArray,
                dtype: type[np.int64] | type[np.float64] = np.int64) -> npt.NDArray[Any]:
        """The number ``by_value`` gives each node at ``rows`` by its value of this label
        (0 for a node without the label or a value without a number)."""
        per_value = np.zeros(len(self.values) + 1, dtype)  # the last: no such label
        get = self.code_of.get
        for value, n in by_value.items():
            code = get(value)
            if code is not None:
                per_value[code] = n
        out: npt.NDArray[Any] = per_value[self.codes[rows]]
        return out

    def hits(self, counts: Mapping[tuple[str, str], int], key: str) -> list[int]:
        """The codes of this column's values (label ``key``) with a positive count."""
        get = self.code_of.get
        return [code for (k, v), n in counts.items()
                if n > 0 and k == key and (code := get(v)) is not None]


class PairCounts(dict[tuple[str, str], int]):
    """Pods per topology pair ``(key, value)``, every pair of the one topology ``key``,
    as the scheduler's cache keeps them (changed only through :meth:`bump`). Also, for the
    node table columns it was asked about, a count per label code kept in step
    (:meth:`per_code`): a batch Filter then reads which nodes' domains hold such pods
    without a pass over thousands of pairs."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self._columns: list[tuple[LabelColumn, IntArray]] = []

    def bump(self, pair: tuple[str, str], delta: int) -> None:
        n = self.get(pair, 0) + delta
        if n:
            self[pair] = n
        else:
            self.pop(pair, None)
        for col, per in self._columns:
            code = col.code_of.get(pair[1])
            if code is not None:  # (a value the column lacks: it is stale, never read again)
                per[code] += delta

    def per_code(self, col: LabelColumn) -> IntArray:
        """Pods per value of ``col`` (this key's column of the current node table), by
        code, with a last zero for nodes without the label."""
        for c, per in self._columns:
            if c is col:
                return per
        per = np.zeros(len(col.values) + 1, np.int64)
        get = col.code_of.get
        for (_, value), n in self.items():
            code = get(value)
            if code is not None:
                per[code] += n
        self._columns.append((col, per))
        del self._columns[:-2]  # columns are rebuilt when labels or nodes change
        return per


class NodeTable:
    def __init__(self, nodes: list[NodeInfo]) -> None:
        self.nodes = nodes
        self.names = [ni.name for ni in nodes]
        self.row_of = {name: i for i, name in enumerate(self.names)}
        n = len(nodes)
        self.size = n
        self.alloc: dict[str, IntArray] = {}
        self.req: dict[str, IntArray] = {}
        self.nz_cpu = np.zeros(n, np.int64)
        self.nz_memory = np.zeros(n, np.int64)
        self.pods = np.zeros(n, np.int64)
        self.allowed_pods = np.zeros(n, np.int64)
        self.unschedulable = np.zeros(n, np.bool_)
        self.tainted = np.zeros(n, np.bool_)
        self.generation = np.zeros(n, np.int64)
        """Each node's ``generation`` (what changed since a saved copy: ``!=``)."""
        self.gpu_devices = np.zeros(n, np.int64)
        self.gpu_free = np.full((n, max((len(ni.gpu_free) for ni in nodes), default=0)), -1,
                                np.int64)
        """Free milli-GPU per (node, device); -1 past a node's last device."""
        self.gpu_pods = np.zeros((n, 2), np.int64)
        """Per node: pods sharing a GPU, pods holding whole GPUs."""
        self._labels: list[dict[str, str]] = [{} for _ in range(n)]
        self._label_columns: dict[str, LabelColumn] = {}
        names = set(_BASIC)
        for ni in nodes:
            names.update(ni.allocatable)
            names.update(ni.requested)
        for name in names:
            self.alloc[name] = np.zeros(n, np.int64)
            self.req[name] = np.zeros(n, np.int64)
        for i, ni in enumerate(nodes):
            ni.table = self
            ni.index = i
            self.sync(ni)

    def _add_resource(self, name: str) -> None:
        alloc = np.zeros(self.size, np.int64)
        req = np.zeros(self.size, np.int64)
        for i, ni in enumerate(self.nodes):
            alloc[i] = ni.allocatable.get(name, 0)
            req[i] = ni.requested.get(name, 0)
        self.alloc[name] = alloc
        self.req[name] = req

    def sync(self, ni: NodeInfo) -> None:
        """Write one node's row (after it or its pods changed)."""
        i = ni.index
        for name in ni.allocatable.keys() - self.alloc.keys():
            self._add_resource(name)
        for name in ni.requested.keys() - self.req.keys():
            self._add_resource(name)
        for name, col in self.alloc.items():
            col[i] = ni.allocatable.get(name, 0)
        for name, col in self.req.items():
            col[i] = ni.requested.get(name, 0)
        self.nz_cpu[i] = ni.non_zero_cpu
        self.nz_memory[i] = ni.non_zero_memory
        self.pods[i] = len(ni.pods)
        self.allowed_pods[i] = ni.allowed_pods
        self.unschedulable[i] = ni.unschedulable
        self.tainted[i] = bool(ni.taints)
        self.generation[i] = ni.generation
        free = ni.gpu_free
        if len(free) > self.gpu_free.shape[1]:
            wider = np.full((self.size, len(free)), -1, np.int64)
            wider[:, :self.gpu_free.shape[1]] = self.gpu_free
            self.gpu_free = wider
        if free or self.gpu_devices[i]:
            self.gpu_free[i] = -1
            self.gpu_free[i, :len(free)] = free
            self.gpu_devices[i] = len(free)
            self.gpu_pods[i] = ni.gpu_pods
        if ni.labels != self._labels[i]:
            self._labels[i] = ni.labels
            self._label_columns.clear()

    def columns(self, name: str) -> tuple[IntArray, IntArray]:
        """(allocatable, requested) of a resource on every node (zeros when unknown)."""
        if name not in self.alloc:
            self._add_resource(name)
        return self.alloc[name], self.req[name]

    def label_column(self, key: str) -> LabelColumn:
        """Each node's value of label ``key`` as a code (-1 where the node lacks it)."""
        col = self._label_columns.get(key)
        if col is None:
            code_of: dict[str, int] = {}
            codes = np.fromiter((code_of.setdefault(labels[key], len(code_of))
                                 if key in labels else -1 for labels in self._labels),
                                np.int64, self.size)
            col = self._label_columns[key] = LabelColumn(codes, list(code_of), code_of)
        return col

    def all(self) -> BoolArray:
        return np.ones(self.size, np.bool_)
