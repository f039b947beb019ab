"""Usage summaries of the node agent and the metrics.k8s.io objects made from them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kybernetes.apiserver.metricsapi import cpu, memory, node_metrics, pod_metrics
from kybernetes.kubelet import stats
from kybernetes.kubelet.stats import Stats, Target, node_counters


class Counters:
    """Counters that advance by a fixed amount per read, on a clock we drive."""

    def __init__(self) -> None:
        self.cpu: dict[tuple[str, str], int] = {}
        self.node_cpu = 0

    def read(self, uid: str, container: str) -> tuple[int, int]:
        return self.cpu.get((uid, container), 0), 64 * 1024 * 1024

    def node(self) -> tuple[int, int]:
        return self.node_cpu, 1 << 30


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(stats.time, "monotonic", lambda: now[0])

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(stats.asyncio, "sleep", sleep)
    return now


def test_first_request_measures_over_a_short_window(clock: list[float]) -> None:
    c = Counters()
    s = Stats(c.read, node=c.node)
    t = Target("ns", "p", "uid1", "main")
    orig_sleep = stats.asyncio.sleep

    async def busy_sleep(seconds: float) -> None:
        # half a core for the whole first window
        c.cpu[("uid1", "main")] = int(0.5e9 * seconds)
        c.node_cpu = int(1.5e9 * seconds)
        await orig_sleep(seconds)

    stats.asyncio.sleep = busy_sleep  # type: ignore[assignment]
    try:
        out = asyncio.run(s.summary("n1", [t]))
    finally:
        stats.asyncio.sleep = orig_sleep  # type: ignore[assignment]
    ctr = out["pods"][0]["containers"][0]
    assert out["pods"][0]["podRef"] == {"name": "p", "namespace": "ns", "uid": "uid1"}
    assert ctr["cpu"]["usageNanoCores"] == 500_000_000
    assert ctr["cpu"]["window"] == stats.FIRST_WINDOW
    assert ctr["memory"]["workingSetBytes"] == 64 * 1024 * 1024
    assert out["node"]["cpu"]["usageNanoCores"] == 1_500_000_000
    assert out["node"]["nodeName"] == "n1"


def test_later_requests_use_the_previous_reading(clock: list[float]) -> None:
    c = Counters()
    s = Stats(c.read, node=c.node)
    t = Target("ns", "p", "uid1", "main")
    c.cpu[("uid1", "main")] = 0
    asyncio.run(s.summary("n1", [t]))  # first reading at 1000, second at 1000.25
    clock[0] += 10
    c.cpu[("uid1", "main")] += 20_500_000_000
    out = asyncio.run(s.summary("n1", [t]))
    # the 0.25 s window was too short to become the base: 2 cores over 10.25 s
    ctr = out["pods"][0]["containers"][0]["cpu"]
    assert ctr["usageNanoCores"] == 2_000_000_000 and ctr["window"] == pytest.approx(10.25)
    # a request right after keeps the 10 s reading as its base (windows stay meaningful)
    clock[0] += 0.1
    c.cpu[("uid1", "main")] += 100_000_000
    ctr = asyncio.run(s.summary("n1", [t]))["pods"][0]["containers"][0]["cpu"]
    assert ctr["window"] == pytest.approx(0.1)
    assert ctr["usageNanoCores"] == 1_000_000_000


def test_containers_that_stopped_are_forgotten(clock: list[float]) -> None:
    c = Counters()
    s = Stats(c.read, node=c.node)
    asyncio.run(s.summary("n1", [Target("ns", "p", "uid1", "main")]))
    assert ("uid1", "main") in s._prev
    out = asyncio.run(s.summary("n1", []))
    assert out["pods"] == [] and ("uid1", "main") not in s._prev


def test_node_counters_parse_proc(tmp_path: Path) -> None:
    # user nice system idle iowait irq softirq steal: steal and idle are not usage
    (tmp_path / "stat").write_text("cpu  100 5 50 1000 20 3 2 500 0 0\ncpu0 1 2 3\n")
    (tmp_path / "meminfo").write_text(
        "MemTotal:        2048 kB\nMemFree:          100 kB\nMemAvailable:     1024 kB\n")
    cpu_ns, mem = node_counters(tmp_path)
    hz = stats._clock_ticks()
    assert cpu_ns == (100 + 5 + 50 + 3 + 2) * (1_000_000_000 // hz)
    assert mem == 1024 * 1024


def test_quantities_match_metrics_server() -> None:
    assert cpu(0) == "0"
    assert cpu(1_500_000) == "1500u"
    assert cpu(250_000_000) == "250m"
    assert cpu(2_000_000_000) == "2"
    assert memory(64 * 1024 * 1024) == "64Mi"
    assert memory(1000) == "1k"  # below 1Ki, BinarySI prints as DecimalSI (as Go does)


def test_metrics_objects_from_a_summary() -> None:
    node = {"metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"a": "b"}, "uid": "x"}}
    summary = {"node": {"nodeName": "n1",
                        "cpu": {"time": "t", "usageNanoCores": 811_000_000, "window": 1.5},
                        "memory": {"time": "t", "workingSetBytes": 556 * 1024 * 1024}}}
    m = node_metrics(node, summary)
    assert m == {"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                 "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z",
                              "labels": {"a": "b"}},
                 "timestamp": "t", "window": "1.5s",
                 "usage": {"cpu": "811m", "memory": "556Mi"}}
    assert node_metrics(node, {"node": {}}) is None
    pod = {"metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "c"}}
    entry = {"containers": [
        {"name": "a", "cpu": {"time": "t", "usageNanoCores": 0, "window": 0.25},
         "memory": {"workingSetBytes": 4096}},
        {"name": "b", "cpu": {}, "memory": {}}]}
    pm = pod_metrics(pod, entry)
    assert pm is not None and pm["window"] == "0.25s"
    assert pm["containers"] == [{"name": "a", "usage": {"cpu": "0", "memory": "4Ki"}}]
    assert pm["metadata"] == {"name": "p", "namespace": "ns", "creationTimestamp": "c"}
    assert pod_metrics(pod, {"containers": []}) is None
