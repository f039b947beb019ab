"""PrioritySort: the queue pops the highest ``spec.priority`` first, then the oldest."""

from __future__ import annotations

from typing import Any

from kybernetes.scheduler.framework import Handle
from kybernetes.scheduler.types import PodInfo


class PrioritySort:
    name = "PrioritySort"

    def sort_key(self, pod: PodInfo, timestamp: float) -> tuple[Any, ...]:
        return (-pod.priority, timestamp)


def new(args: dict[str, Any], handle: Handle) -> PrioritySort:
    return PrioritySort()
