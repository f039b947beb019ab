"""The node lifecycle and taint eviction decisions: Unknown conditions, not-ready and
unreachable taints, pods marked not Ready, eviction delays, DefaultTolerationSeconds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kybernetes.aio.clock import FakeClock
from kybernetes.apiserver.admission import default_toleration_seconds
from kybernetes.controllers.nodelifecycle import (
    NOT_READY,
    UNREACHABLE,
    NodeLifecycleController,
    desired_taints,
    not_ready_condition,
    unknown_conditions,
)
from kybernetes.controllers.tainteviction import eviction_delay

Obj = dict[str, Any]
NOW = "2026-01-01T00:00:00Z"
NE = "NoExecute"


def node(ready: str | None = "True", taints: list[Obj] | None = None,
         extra: tuple[str, ...] = ()) -> Obj:
    conds = [{"type": t, "status": "False", "reason": "KubeletHasSufficient"} for t in extra]
    if ready is not None:
        conds.append({"type": "Ready", "status": ready, "reason": "KubeletReady",
                      "lastHeartbeatTime": "2025-12-31T23:59:00Z"})
    return {"metadata": {"name": "n1", "creationTimestamp": "2025-01-01T00:00:00Z",
                         "resourceVersion": "7"},
            "spec": {"taints": taints or []}, "status": {"conditions": conds}}


def taint(key: str, effect: str = NE, **kw: Any) -> Obj:
    return {"key": key, "effect": effect, **kw}


@pytest.mark.parametrize(("n", "want"), [
    pytest.param(node("True", extra=("MemoryPressure", "DiskPressure", "PIDPressure")),
                 {"Ready": "NodeStatusUnknown", "MemoryPressure": "NodeStatusUnknown",
                  "DiskPressure": "NodeStatusUnknown", "PIDPressure": "NodeStatusUnknown"},
                 id="all-known-go-unknown"),
    pytest.param(node("True"), {"Ready": "NodeStatusUnknown",
                                "MemoryPressure": "NodeStatusNeverUpdated",
                                "DiskPressure": "NodeStatusNeverUpdated",
                                "PIDPressure": "NodeStatusNeverUpdated"}, id="missing-added"),
    pytest.param(node(None), {"Ready": "NodeStatusNeverUpdated",
                              "MemoryPressure": "NodeStatusNeverUpdated",
                              "DiskPressure": "NodeStatusNeverUpdated",
                              "PIDPressure": "NodeStatusNeverUpdated"}, id="never-posted"),
])
def test_unknown_conditions(n: Obj, want: dict[str, str]) -> None:
    """Silent nodes get Unknown conditions with upstream's reasons and messages."""
    conds = unknown_conditions(n, NOW)
    assert conds is not None
    assert {c["type"]: c["reason"] for c in conds} == want
    assert all(c["status"] == "Unknown" and c["lastTransitionTime"] == NOW for c in conds)
    ready = next(c for c in conds if c["type"] == "Ready")
    if ready["reason"] == "NodeStatusUnknown":
        assert ready["message"] == "Kubelet stopped posting node status."
        assert ready["lastHeartbeatTime"] == "2025-12-31T23:59:00Z"  # kept, as upstream
    assert unknown_conditions({**n, "status": {"conditions": conds}}, NOW) is None


@pytest.mark.parametrize(("n", "want"), [
    pytest.param(node("True"), None, id="ready-untainted"),
    pytest.param(node("Unknown"), [taint(UNREACHABLE, "NoSchedule"),
                                   taint(UNREACHABLE, timeAdded=NOW)], id="unknown-unreachable"),
    pytest.param(node("False"), [taint(NOT_READY, "NoSchedule"),
                                 taint(NOT_READY, timeAdded=NOW)], id="false-not-ready"),
    pytest.param(node("False", [taint(UNREACHABLE, "NoSchedule"), taint("x", "NoSchedule"),
                                taint(UNREACHABLE, timeAdded="old")]),
                 [taint("x", "NoSchedule"), taint(NOT_READY, "NoSchedule"),
                  taint(NOT_READY, timeAdded=NOW)], id="swap-unreachable-for-not-ready"),
    pytest.param(node("True", [taint(UNREACHABLE, "NoSchedule"), taint(UNREACHABLE),
                               taint("gpu", "NoSchedule")]),
                 [taint("gpu", "NoSchedule")], id="back-ready-removed"),
    pytest.param(node("Unknown", [taint(UNREACHABLE, "NoSchedule"),
                                  taint(UNREACHABLE, timeAdded="old")]), None,
                 id="already-tainted-kept"),
    pytest.param(node(None, [taint(NOT_READY, "NoSchedule")]), None, id="no-ready-condition"),
])
def test_desired_taints(n: Obj, want: list[Obj] | None) -> None:
    """The not-ready/unreachable taints follow the Ready condition."""
    assert desired_taints(n, NOW) == want


@pytest.mark.parametrize(("status", "changed"), [
    pytest.param("True", True, id="ready-marked-false"),
    pytest.param("False", False, id="already-false"),
    pytest.param(None, False, id="no-ready-condition"),
])
def test_not_ready_condition(status: str | None, changed: bool) -> None:
    """MarkPodsNotReady turns a pod's Ready condition False, once."""
    conds = [] if status is None else [{"type": "Ready", "status": status}]
    cond = not_ready_condition({"status": {"conditions": conds}}, NOW)
    assert (cond is not None) == changed
    if cond is not None:
        assert cond == {"type": "Ready", "status": "False", "lastTransitionTime": NOW}


@pytest.mark.parametrize(("taints", "tolerations", "want"), [
    pytest.param([], [], None, id="no-taints"),
    pytest.param([taint(UNREACHABLE)], [], 0.0, id="untolerated-now"),
    pytest.param([taint(UNREACHABLE)], [{"key": UNREACHABLE, "operator": "Exists",
                                         "effect": NE, "tolerationSeconds": 2}], 2.0,
                 id="tolerated-for-a-while"),
    pytest.param([taint(UNREACHABLE)], [{"operator": "Exists"}], None, id="tolerated-forever"),
    pytest.param([taint(UNREACHABLE)], [{"operator": "Exists"},
                                        {"key": UNREACHABLE, "operator": "Exists",
                                         "tolerationSeconds": 30}], 30.0,
                 id="smallest-finite-wins"),
    pytest.param([taint(UNREACHABLE)], [{"key": UNREACHABLE, "operator": "Exists",
                                         "tolerationSeconds": -5}], 0.0, id="negative-is-zero"),
    pytest.param([taint(UNREACHABLE), taint("other")],
                 [{"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 300}], 0.0,
                 id="one-untolerated-taint"),
    pytest.param([taint(UNREACHABLE)], [{"key": UNREACHABLE, "operator": "Exists",
                                         "effect": "NoSchedule"}], 0.0,
                 id="wrong-effect"),
])
def test_eviction_delay(taints: list[Obj], tolerations: list[Obj], want: float | None) -> None:
    """How long a pod may stay on a node with NoExecute taints."""
    assert eviction_delay(taints, tolerations) == want


def _default(tolerations: list[Obj]) -> dict[str, int | None]:
    return {t.get("key", ""): t.get("tolerationSeconds") for t in tolerations}


@pytest.mark.parametrize(("given", "want"), [
    pytest.param([], {NOT_READY: 300, UNREACHABLE: 300}, id="none-given"),
    pytest.param([{"key": UNREACHABLE, "operator": "Exists", "effect": NE,
                   "tolerationSeconds": 2}], {UNREACHABLE: 2, NOT_READY: 300},
                 id="own-unreachable-kept"),
    pytest.param([{"operator": "Exists"}], {"": None}, id="tolerates-everything"),
    pytest.param([{"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"}],
                 {NOT_READY: 300, UNREACHABLE: 300}, id="noschedule-does-not-count"),
])
def test_default_toleration_seconds(given: list[Obj], want: dict[str, int | None]) -> None:
    """DefaultTolerationSeconds adds 300 s not-ready/unreachable tolerations where missing."""
    pod: Obj = {"spec": {"tolerations": list(given)}}
    default_toleration_seconds(pod)
    assert _default(pod["spec"]["tolerations"]) == want


class _Recorder:
    def __init__(self) -> None:
        self.patches: list[tuple[str, Obj]] = []

    async def patch(self, api_version: str, plural: str, name: str, body: Obj,
                    **kw: Any) -> Obj:
        self.patches.append((plural, body))
        return {}

    async def create(self, api_version: str, plural: str, body: Obj, **kw: Any) -> Obj:
        return body


@pytest.mark.parametrize(("silent", "want"), [
    pytest.param(39.0, [], id="within-grace"),
    pytest.param(41.0, ["nodes"], id="past-grace"),
])
def test_grace_period(silent: float, want: list[str]) -> None:
    """A node goes Unknown only once nothing was heard for the grace period."""
    clock = FakeClock()
    client = _Recorder()
    ctl = NodeLifecycleController(client, clock=clock)  # type: ignore[arg-type]
    ctl.nodes._store("n1", node("True"))

    async def go() -> None:
        await ctl.reconcile("n1")
        clock.advance(silent)
        await ctl.reconcile("n1")
        await ctl.queue.aclose()

    asyncio.run(go())
    assert [p[0] for p in client.patches] == want
    if want:
        conds = client.patches[0][1]["status"]["conditions"]
        assert conds[0]["status"] == "Unknown"
