"""Score normalisation shared by plugins (upstream's DefaultNormalizeScore)."""

from __future__ import annotations

import numpy as np

from kybernetes.scheduler.framework import MAX_NODE_SCORE
from kybernetes.scheduler.nodetable import IntArray


def default_normalize(scores: list[int], *, reverse: bool = False) -> None:
    """Scale scores in place so the highest becomes 100 (``reverse``: the lowest)."""
    top = max(scores, default=0)
    if top == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    for i, s in enumerate(scores):
        s = MAX_NODE_SCORE * s // top
        scores[i] = MAX_NODE_SCORE - s if reverse else s


def default_normalize_batch(scores: IntArray, *, reverse: bool = False) -> IntArray:
    """:func:`default_normalize` of a numpy column (returns a new one)."""
    top = int(scores.max()) if len(scores) else 0
    if top == 0:
        return np.full(len(scores), MAX_NODE_SCORE if reverse else 0, np.int64)
    s = MAX_NODE_SCORE * scores // top
    out: IntArray = MAX_NODE_SCORE - s if reverse else s
    return out
