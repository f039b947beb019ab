"""Exponential back-off with a cap, as client-go's rate limiters do it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Per-key exponential back-off: ``base * 2**failures``, capped at ``cap``.

    >>> b = Backoff(base=0.005, cap=1000)
    >>> b.next("k"), b.next("k")
    (0.005, 0.01)
    """

    base: float = 0.005
    cap: float = 1000.0
    _failures: dict[object, int] = field(default_factory=dict)

    def next(self, key: object) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return float(min(self.cap, self.base * (2**n)))

    def failures(self, key: object) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: object) -> None:
        self._failures.pop(key, None)
