"""Score normalisation shared by plugins (upstream's DefaultNormalizeScore)."""

from __future__ import annotations

from kybernetes.scheduler.framework import MAX_NODE_SCORE


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
