"""The scheduling cycle's fast path: Filter and Score over numpy columns of all nodes.

Used when every plugin active for the pod (not skipped by its PreFilter or PreScore)
offers a batch form (``filter_batch``/``score_batch``/``normalize_batch``) — as the
common ones do — and no pod is nominated anywhere. It decides exactly what the
one-node-at-a-time path decides: the same nodes in the same rotating order, the same
``percentageOfNodesToScore`` stop, the same integer scores. When no node fits, the slow
path runs instead, to say why node by node.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kybernetes.scheduler.framework import CycleState
from kybernetes.scheduler.nodetable import BoolArray, IntArray, NodeTable
from kybernetes.scheduler.runtime import Framework
from kybernetes.scheduler.types import PodInfo


def feasible(fwk: Framework, state: CycleState, pod: PodInfo, table: NodeTable, *,
             start: int, want: int) -> tuple[IntArray, int] | None:
    """(rows of the first ``want`` feasible nodes from ``start`` on, wrapping around; how
    many nodes that walked over), or None when the batch form cannot decide (a plugin
    without one, or no node fits)."""
    mask: BoolArray | None = None
    skip = state.skip_filter
    for pl in fwk.filter:
        if pl.name in skip:
            continue
        batch: Any = getattr(pl, "filter_batch", None)
        if batch is None:
            return None
        m = batch(state, pod, table)
        if m is None:
            return None
        mask = m if mask is None else mask & m
    n = table.size
    if mask is None:
        mask = table.all()
    rotated = np.concatenate((mask[start:], mask[:start])) if start else mask
    positions = np.flatnonzero(rotated)
    if not len(positions):
        return None
    take = positions[:want]
    walked = int(take[-1]) + 1 if len(positions) >= want else n
    rows: IntArray = (take + start) % n
    return rows, walked


def scores(fwk: Framework, state: CycleState, pod: PodInfo, table: NodeTable,
           rows: IntArray) -> IntArray | None:
    """Total weighted score of each node at ``rows``, or None when a plugin has no batch
    form."""
    total = np.zeros(len(rows), np.int64)
    skip = state.skip_score
    for pl in fwk.score:
        if pl.name in skip:
            continue
        batch: Any = getattr(pl, "score_batch", None)
        if batch is None:
            return None
        s = batch(state, pod, table, rows)
        if s is None:
            return None
        if pl.name in fwk.normalizers:
            normalize: Any = getattr(pl, "normalize_batch", None)
            if normalize is None:
                return None
            s = normalize(state, pod, s)
        total += s * fwk.weights.get(pl.name, 1)
    return total
