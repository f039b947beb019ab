"""Cron schedules as CronJobs accept them (robfig/cron's standard 5-field parser).

:func:`parse` returns, for each field, the set of values it matches, or raises
:class:`ValueError` with the message Kubernetes reports::

    >>> sorted(parse("*/20 9-10 * * mon-fri").minute)
    [0, 20, 40]
    >>> parse("61 * * * *")
    Traceback (most recent call last):
    ...
    ValueError: end of range (61) above maximum (59): 61
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (min, max, names) for minute, hour, day of month, month, day of week
_BOUNDS: tuple[tuple[int, int, dict[str, int] | None], ...] = (
    (0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTHS), (0, 6, _DAYS))
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DURATION = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")


@dataclass(frozen=True)
class Schedule:
    minute: frozenset[int]
    hour: frozenset[int]
    day_of_month: frozenset[int]
    month: frozenset[int]
    day_of_week: frozenset[int]
    every: str = ""
    """For ``@every <duration>`` schedules, the duration text (the fields are then empty)."""


def parse(spec: str) -> Schedule:
    if not spec:
        raise ValueError("empty spec string")
    if spec.startswith(("TZ=", "CRON_TZ=")):
        eq, sp = spec.index("="), spec.find(" ")
        name = spec[eq + 1:sp] if sp >= 0 else spec[eq + 1:]
        if not valid_time_zone(name):
            raise ValueError(f"provided bad location {name}: unknown time zone {name}")
        spec = spec[sp:].strip() if sp >= 0 else ""
    if spec.startswith("@"):
        if spec.startswith("@every "):
            duration = spec[len("@every "):]
            if not _DURATION.match(duration):
                raise ValueError(f'failed to parse duration {spec}: time: invalid duration '
                                 f'"{duration}"')
            empty: frozenset[int] = frozenset()
            return Schedule(empty, empty, empty, empty, empty, every=duration)
        if spec not in _DESCRIPTORS:
            raise ValueError(f"unrecognized descriptor: {spec}")
        spec = _DESCRIPTORS[spec]
    fields = spec.split()
    if len(fields) != 5:
        raise ValueError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    minute, hour, dom, month, dow = (_field(f, *b) for f, b in zip(fields, _BOUNDS, strict=True))
    return Schedule(minute, hour, dom, month, dow)


def _field(text: str, lo: int, hi: int, names: dict[str, int] | None) -> frozenset[int]:
    values: set[int] = set()
    for expr in (p for p in text.split(",") if p):
        values |= _range(expr, lo, hi, names)
    return frozenset(values)


def _range(expr: str, lo: int, hi: int, names: dict[str, int] | None) -> set[int]:
    range_and_step = expr.split("/")
    low_high = range_and_step[0].split("-")
    if low_high[0] in ("*", "?"):
        start, end = lo, hi
    else:
        start = _int_or_name(low_high[0], names)
        if len(low_high) == 1:
            end = start
        elif len(low_high) == 2:
            end = _int_or_name(low_high[1], names)
        else:
            raise ValueError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _int(range_and_step[1])
        if len(low_high) == 1:  # "N/step" means "N-max/step"
            end = hi
    else:
        raise ValueError(f"too many slashes: {expr}")
    if start < lo:
        raise ValueError(f"beginning of range ({start}) below minimum ({lo}): {expr}")
    if end > hi:
        raise ValueError(f"end of range ({end}) above maximum ({hi}): {expr}")
    if start > end:
        raise ValueError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise ValueError(f"step of range should be a positive number: {expr}")
    return set(range(start, end + 1, step))


def _int_or_name(text: str, names: dict[str, int] | None) -> int:
    if names is not None and text.lower() in names:
        return names[text.lower()]
    return _int(text)


def _int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": '
                         "invalid syntax")
    num = int(text)
    if num < 0:
        raise ValueError(f"negative number ({num}) not allowed: {text}")
    if num >= 2**63:
        raise ValueError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": '
                         "value out of range")
    return num


def valid_time_zone(name: str) -> bool:
    """Whether Go's ``time.LoadLocation`` would know the zone (``UTC`` always)."""
    if name in ("UTC", ""):
        return True
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
