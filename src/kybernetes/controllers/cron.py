"""Cron schedules as CronJobs run them: robfig/cron v3's standard parser and ``Next``.

Five fields (minute, hour, day of month, month, day of week) with ranges, steps, lists
and month/day names, the ``@yearly``/``@annually``/``@monthly``/``@weekly``/``@daily``/
``@midnight``/``@hourly`` macros and ``@every <duration>``, in a time zone (``TZ=`` or
``CRON_TZ=`` in the schedule, or the CronJob's ``timeZone``; UTC otherwise).

:meth:`Schedule.next` is robfig's algorithm step by step, Go's time arithmetic included,
so that daylight-saving transitions behave as upstream's: a time in a skipped hour does
not run that day; a time in a repeated hour runs twice::

    >>> s = parse_schedule("30 9 * * mon-fri", "UTC")
    >>> from datetime import datetime, UTC
    >>> t = s.next(datetime(2024, 1, 5, 10, 0, tzinfo=UTC).timestamp())   # a Friday
    >>> datetime.fromtimestamp(t, UTC).isoformat()
    '2024-01-08T09:30:00+00:00'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kybernetes.api.validation import cron as cron_syntax


class ScheduleError(ValueError):
    """A schedule that cannot be parsed, or a time zone that does not exist."""


_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
          "m": 60.0, "h": 3600.0}
_EPOCH = datetime(1970, 1, 1)


def location(name: str | None) -> tzinfo:
    """Go's ``time.LoadLocation``: ``""`` and ``UTC`` are UTC."""
    if not name or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {name}") from None


def _has_star(field: str) -> bool:
    """robfig's star bit: a ``*``/``?`` part whose step is not above 1."""
    for part in field.split(","):
        range_and_step = part.split("/")
        if range_and_step[0].split("-")[0] in ("*", "?"):
            if len(range_and_step) == 1 or (range_and_step[1].isdigit()
                                            and int(range_and_step[1]) <= 1):
                return True
    return False


def _go_duration(text: str) -> float:
    """Seconds of a Go duration (``1h30m``, ``90s``, ``1.5h``)."""
    sign = -1.0 if text.startswith("-") else 1.0
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)",
                                text.lstrip("+-")):
        total += float(num) * _UNITS[unit]
    return sign * total


@dataclass(frozen=True)
class Schedule:
    minute: frozenset[int]
    hour: frozenset[int]
    day_of_month: frozenset[int]
    month: frozenset[int]
    day_of_week: frozenset[int]
    dom_star: bool
    dow_star: bool
    tz: tzinfo
    every: float = 0.0
    """For ``@every``: the delay in whole seconds (at least 1)."""

    def next(self, after: float) -> float | None:
        """The first activation strictly after ``after`` (epoch seconds), or None if
        there is none within five years (e.g. ``0 0 30 2 *``)."""
        if self.every:
            return math.floor(after) + self.every
        t = float(math.floor(after) + 1)
        added = False
        year_limit = self._local(t).year + 5
        while True:  # robfig's WRAP label
            lt = self._local(t)
            if lt.year > year_limit:
                return None
            wrapped = False
            while lt.month not in self.month:
                if not added:
                    added = True
                    t = self._date(lt.year, lt.month, 1)
                    lt = self._local(t)
                t = self._date(lt.year, lt.month + 1, lt.day, lt.hour, lt.minute, lt.second)
                lt = self._local(t)
                if lt.month == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not self._day_matches(lt):
                if not added:
                    added = True
                    t = self._date(lt.year, lt.month, lt.day)
                    lt = self._local(t)
                t = self._date(lt.year, lt.month, lt.day + 1, lt.hour, lt.minute, lt.second)
                lt = self._local(t)
                if lt.hour != 0:  # DST moved midnight: back to it
                    t += (24 - lt.hour) * 3600 if lt.hour > 12 else -lt.hour * 3600
                    lt = self._local(t)
                if lt.day == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while lt.hour not in self.hour:
                if not added:
                    added = True
                    t = self._date(lt.year, lt.month, lt.day, lt.hour)
                t += 3600
                lt = self._local(t)
                if lt.hour == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while lt.minute not in self.minute:
                if not added:
                    added = True
                    t -= t % 60
                t += 60
                lt = self._local(t)
                if lt.minute == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while lt.second != 0:
                if not added:
                    added = True
                    t = float(math.floor(t))
                t += 1
                lt = self._local(t)
                if lt.second == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            return t

    def _local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self.tz)

    def _offset(self, t: float) -> float:
        off = datetime.fromtimestamp(t, self.tz).utcoffset()
        return off.total_seconds() if off is not None else 0.0

    def _date(self, year: int, month: int, day: int, hour: int = 0, minute: int = 0,
              second: int = 0) -> float:
        """Go's ``time.Date`` in this zone: out-of-range fields carry over, and a wall
        time that does not exist or exists twice resolves as Go resolves it."""
        year += (month - 1) // 12
        month = (month - 1) % 12 + 1
        naive = datetime(year, month, 1) + timedelta(days=day - 1, hours=hour,
                                                     minutes=minute, seconds=second)
        wall = (naive - _EPOCH).total_seconds()
        offset = self._offset(wall)
        if offset == 0:
            return wall
        return wall - self._offset(wall - offset)

    def _day_matches(self, lt: datetime) -> bool:
        dom = lt.day in self.day_of_month
        dow = (lt.weekday() + 1) % 7 in self.day_of_week
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow


def parse_schedule(spec: str, time_zone: str | None = None) -> Schedule:
    """A CronJob's ``schedule`` (in ``timeZone`` if given) — upstream prefixes the
    schedule with ``TZ=<timeZone>`` and parses it with ``cron.ParseStandard``."""
    text = spec.strip()
    if time_zone is not None:
        text = f"TZ={time_zone} {text}"
    tz: tzinfo = UTC
    if text.startswith(("TZ=", "CRON_TZ=")):
        head, _, text = text.partition(" ")
        tz = location(head.split("=", 1)[1])
        text = text.strip()
    try:
        syntax = cron_syntax.parse(text)
    except ValueError as e:
        raise ScheduleError(str(e)) from None
    if syntax.every:
        seconds = _go_duration(syntax.every)
        return Schedule(frozenset(), frozenset(), frozenset(), frozenset(), frozenset(),
                        False, False, tz, every=float(max(1, math.floor(seconds))))
    fields = _DESCRIPTORS.get(text, text).split()
    return Schedule(syntax.minute, syntax.hour, syntax.day_of_month, syntax.month,
                    syntax.day_of_week, dom_star=_has_star(fields[2]),
                    dow_star=_has_star(fields[4]), tz=tz)
