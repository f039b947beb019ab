"""The scheduling cycle's fast path: Filter and Score over numpy columns of all nodes.

Used when every plugin active for the pod (not skipped by its PreFilter or PreScore)
offers a batch form (``filter_batch``/``score_batch``/``normalize_batch``) — as the
common ones do. It decides exactly what the one-node-at-a-time path decides: the same
nodes in the same rotating order, the same ``percentageOfNodesToScore`` stop, the same
integer scores. Nodes holding pods nominated by a preemption are checked again with
those pods (:func:`first_rows`' veto: over the columns too when only NodeResourcesFit
reads pods, else node by node); when no node fits, each failing node is asked for its
reason by the first plugin that rejected it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from kybernetes.scheduler.framework import CycleState
from kybernetes.scheduler.nodetable import BoolArray, IntArray, NodeTable
from kybernetes.scheduler.runtime import Framework
from kybernetes.scheduler.types import PodInfo


def filter_masks(fwk: Framework, state: CycleState, pod: PodInfo, table: NodeTable
                 ) -> list[tuple[Any, BoolArray]] | None:
    """Each Filter plugin active for the pod with its verdict on every node, in the
    framework's order; None when one of them has no batch form."""
    out: list[tuple[Any, BoolArray]] = []
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
        out.append((pl, m))
    return out


def first_rows(mask: BoolArray, *, start: int, want: int,
               veto: Callable[[int], bool] | None = None,
               vetoable: Collection[int] = ()) -> tuple[IntArray, int]:
    """(rows of the first ``want`` nodes ``mask`` passes from ``start`` on, wrapping
    around, less those ``veto`` rejects — asked only for rows in ``vetoable``, in order,
    while they could still be among the first; how many nodes that walked over)."""
    n = len(mask)
    rotated = np.concatenate((mask[start:], mask[:start])) if start else mask
    positions = np.flatnonzero(rotated)
    if veto is not None and len(vetoable) and len(positions):
        rows = (positions + start) % n
        rejected = np.zeros(len(positions), np.bool_)
        limit = want
        for j in np.flatnonzero(np.isin(rows, np.fromiter(vetoable, np.int64))).tolist():
            if j >= limit:
                break
            if veto(int(rows[j])):
                rejected[j] = True
                limit += 1
        positions = positions[~rejected]
    take = positions[:want]
    walked = int(take[-1]) + 1 if len(positions) >= want else n
    out: IntArray = (take + start) % n
    return out, walked


def feasible(fwk: Framework, state: CycleState, pod: PodInfo, table: NodeTable, *,
             start: int, want: int) -> tuple[IntArray, int] | None:
    """(rows of the first ``want`` feasible nodes from ``start`` on, wrapping around; how
    many nodes that walked over), or None when the batch form cannot decide (a plugin
    without one, or no node fits)."""
    masks = filter_masks(fwk, state, pod, table)
    if masks is None:
        return None
    rows, walked = first_rows(combined(masks, table), start=start, want=want)
    return (rows, walked) if len(rows) else None


def combined(masks: list[tuple[Any, BoolArray]], table: NodeTable) -> BoolArray:
    """The nodes every plugin passes."""
    mask = table.all()
    for _, m in masks:
        mask &= m
    return mask


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
