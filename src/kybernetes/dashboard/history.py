"""Bounded metrics history for the dashboard's charts.

One ring of sample times shared by every series, and per series (a pod, a node, a
Service) a fixed block of floats per metric, aligned with those times: memory stays
``series × metrics × slots × 8`` bytes however long the server runs. A slot a series
missed (the pod had not started, its node did not answer) is NaN; a series not seen
for a whole ring is dropped.

    h = History(slots=720)
    h.record(t, {("pod", "default/a"): (0.25, 64e6)})
    h.series(("pod", "default/a"))   # {"t": [...], "values": [[0.25], [64e6]]}
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence

Key = tuple[str, str]
NAN = math.nan


class History:
    def __init__(self, *, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.times = array("d", [NAN] * slots)
        self.head = 0
        """The slot the next sample goes to."""
        self.samples = 0
        self._series: dict[Key, list[array[float]]] = {}
        self._last_seen: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._series)

    def record(self, t: float, values: Mapping[Key, Sequence[float]]) -> None:
        """One sampling round: the value of each metric of each series seen at ``t``."""
        slot = self.head
        self.times[slot] = t
        for arrays in self._series.values():
            for a in arrays:
                a[slot] = NAN
        for key, vals in values.items():
            found = self._series.get(key)
            if found is None or len(found) != len(vals):
                found = self._series[key] = [array("d", [NAN] * self.slots) for _ in vals]
            for a, v in zip(found, vals, strict=True):
                a[slot] = v
            self._last_seen[key] = self.samples
        self.samples += 1
        self.head = (slot + 1) % self.slots
        stale = [k for k, seen in self._last_seen.items() if self.samples - seen > self.slots]
        for k in stale:
            del self._series[k], self._last_seen[k]

    def series(self, key: Key, *, since: float = -math.inf) -> dict[str, list[float | None]
                                                                   | list[list[float | None]]]:
        """The key's samples, oldest first, from ``since`` on (None where missed); empty
        lists for a key never seen."""
        arrays = self._series.get(key)
        order = [(self.head + i) % self.slots for i in range(self.slots)]
        order = [i for i in order if not math.isnan(self.times[i]) and self.times[i] >= since]
        times: list[float | None] = [self.times[i] for i in order]
        if arrays is None:
            return {"t": [], "values": []}
        values: list[list[float | None]] = [
            [None if math.isnan(a[i]) else a[i] for i in order] for a in arrays]
        return {"t": times, "values": values}

    def latest_of(self, kind: str) -> dict[str, list[float | None]]:
        """Name → values in the newest round of every series of ``kind`` seen there."""
        if self.samples == 0:
            return {}
        slot = (self.head - 1) % self.slots
        return {name: [None if math.isnan(a[slot]) else a[slot] for a in arrays]
                for (k, name), arrays in self._series.items()
                if k == kind and self._last_seen[(k, name)] == self.samples - 1}

    def latest(self, key: Key) -> list[float] | None:
        """The key's values in the newest round, or None if it was missed there."""
        arrays = self._series.get(key)
        if arrays is None or self.samples == 0:
            return None
        slot = (self.head - 1) % self.slots
        vals = [a[slot] for a in arrays]
        return None if any(math.isnan(v) for v in vals) else vals
