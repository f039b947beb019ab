"""Defaults of PriorityClasses."""

from __future__ import annotations

from typing import Any

from kybernetes.api.strategy import defaulter

Obj = dict[str, Any]


@defaulter("scheduling.k8s.io", "PriorityClass")
def default_priority_class(pc: Obj) -> None:
    if pc.get("preemptionPolicy") is None:
        pc["preemptionPolicy"] = "PreemptLowerPriority"
