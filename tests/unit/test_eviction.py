"""Eviction thresholds, signals and the order pods are evicted in."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from kybernetes.kubelet.eviction import (
    DEFAULT_HARD,
    Observation,
    ThresholdError,
    crossed,
    observe,
    parse_thresholds,
    rank,
)


def test_parse_thresholds() -> None:
    ts = parse_thresholds(DEFAULT_HARD)
    assert [t.signal for t in ts] == ["memory.available", "nodefs.available",
                                      "imagefs.available", "nodefs.inodesFree"]
    assert ts[0].quantity == 100 * 1024 * 1024 and ts[1].percent == 10
    for bad in ("memory.available>1Gi", "cpu.available<1", "memory.available<", "x"):
        with pytest.raises(ThresholdError):
            parse_thresholds(bad)
    assert parse_thresholds("") == []


def test_crossed() -> None:
    ts = parse_thresholds("memory.available<1Gi,nodefs.available<10%")
    seen = {"memory.available": Observation(Fraction(2 << 30), Fraction(8 << 30)),
            "nodefs.available": Observation(Fraction(5), Fraction(100))}
    assert [t.signal for t, _ in crossed(ts, seen)] == ["nodefs.available"]
    seen["memory.available"] = Observation(Fraction(512 << 20), Fraction(8 << 30))
    assert len(crossed(ts, seen)) == 2


def test_observe(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 250 kB\n")
    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "pid_max").write_text("100\n")
    (tmp_path / "1").mkdir()
    (tmp_path / "22").mkdir()
    seen = observe(tmp_path, proc=tmp_path)
    assert seen["memory.available"] == Observation(Fraction(250 * 1024), Fraction(1000 * 1024))
    assert seen["pid.available"] == Observation(Fraction(98), Fraction(100))
    assert seen["nodefs.available"].capacity > 0


def pod(name: str, request: str | None = None, priority: int = 0) -> dict[str, Any]:
    res = {"requests": {"memory": request}} if request else {}
    return {"metadata": {"name": name},
            "spec": {"priority": priority, "containers": [{"name": "c", "resources": res}]}}


def test_rank_as_kubelet() -> None:
    mi = 1024 * 1024
    pods = [(pod("within-request", "500Mi"), Fraction(100 * mi)),
            (pod("besteffort-small"), Fraction(10 * mi)),
            (pod("besteffort-big"), Fraction(300 * mi)),
            (pod("important-over", "10Mi", priority=1000), Fraction(900 * mi))]
    order = [p["metadata"]["name"] for p, _ in rank(pods, "memory")]
    # over their request first (by priority, then by how far over), then the rest
    assert order == ["besteffort-big", "besteffort-small", "important-over", "within-request"]
