"""The Kubernetes JSONPath subset that printer columns and ``-o jsonpath`` use.

Evaluation follows client-go's ``util/jsonpath`` with missing keys allowed (as the CRD
table convertor sets it): a key that is not there yields nothing, while an index out of
range, a filter over something that is not a list, or a comparison of unlike types is an
error, as upstream.

>>> pod = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
>>> find(pod, '{.status.conditions[?(@.type=="Ready")].status}')
['True']
>>> find({"metadata": {"labels": {"app.kubernetes.io/name": "web"}}},
...      ".metadata.labels['app.kubernetes.io/name']")
['web']

Supported: ``$``, ``.field`` (``\\.`` escapes a dot), ``['key']``, ``[0]``, ``[-1]``,
``[1:3]``, ``[*]``, ``.*``, ``..field``, unions ``[0,2]`` / ``['a','b']``, and filters
``[?(@.a.b == "x")]`` with ``== != < > <= >=`` or bare existence ``[?(@.a)]``. As in
client-go, a slice's third number is accepted but does not skip elements.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["JSONPathError", "find", "format_value", "parse"]


class JSONPathError(ValueError):
    """A JSONPath that cannot be parsed, or cannot be evaluated against a value."""


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Wildcard:
    pass


@dataclass(frozen=True)
class _Recursive:
    pass


@dataclass(frozen=True)
class _Slice:
    start: int | None
    end: int | None


@dataclass(frozen=True)
class _Union:
    branches: tuple[Path, ...]


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _Filter:
    left: Path
    op: str  # "exists" or a comparison operator
    right: Path | _Literal | None


Step = _Field | _Wildcard | _Recursive | _Slice | _Union | _Filter
Path = tuple[Step, ...]

_INDEX = re.compile(r"^(-?\d*)(?::(-?\d*))?(?::(-?\d*))?$")
_FILTER = re.compile(r"^(.+?)\s*(==|!=|<=|>=|<|>)\s*(.+)$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
_FIELD_END = set(" .[],{}$@")


def parse(expr: str) -> Path:
    """Parse ``expr`` (optionally wrapped in ``{}``) into steps; raises JSONPathError."""
    text = expr.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if "{" in text or "}" in text:
        raise JSONPathError(f"unsupported JSONPath template {expr!r}")
    return _Parser(text, expr).path(root=True)


class _Parser:
    def __init__(self, text: str, original: str) -> None:
        self.text = text
        self.pos = 0
        self.original = original

    def error(self, why: str) -> JSONPathError:
        return JSONPathError(f"invalid JSONPath {self.original!r}: {why}")

    def path(self, *, root: bool) -> Path:
        t = self.text
        if root and t.startswith("$"):
            self.pos = 1
        elif not root:
            if not t.startswith("@"):
                raise self.error(f"filter operand {t!r} must start with @")
            self.pos = 1
        steps: list[Step] = []
        while self.pos < len(t):
            c = t[self.pos]
            if t.startswith("..", self.pos):
                self.pos += 2
                steps.append(_Recursive())
                if self.pos < len(t) and t[self.pos] not in ".[":
                    steps.append(self.field())
            elif c == ".":
                self.pos += 1
                steps.append(self.field())
            elif c == "[":
                steps.append(self.bracket())
            else:
                raise self.error(f"unexpected {c!r} at {self.pos}")
        return tuple(steps)

    def field(self) -> Step:
        t = self.text
        if self.pos < len(t) and t[self.pos] == "*":
            self.pos += 1
            return _Wildcard()
        name: list[str] = []
        while self.pos < len(t):
            c = t[self.pos]
            if c == "\\" and self.pos + 1 < len(t):
                name.append(t[self.pos + 1])
                self.pos += 2
                continue
            if c in _FIELD_END:
                break
            name.append(c)
            self.pos += 1
        if not name:
            raise self.error(f"empty field name at {self.pos}")
        return _Field("".join(name))

    def bracket(self) -> Step:
        inner = self.bracket_text()
        if inner.startswith("?(") and inner.endswith(")"):
            return self.filter(inner[2:-1].strip())
        parts = _split_union(inner)
        if len(parts) > 1:
            return _Union(tuple((self.bracket_item(p),) for p in parts))
        return self.bracket_item(inner)

    def bracket_text(self) -> str:
        t, start = self.text, self.pos + 1
        depth, quote, i = 0, "", start
        while i < len(t):
            c = t[i]
            if quote:
                if c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c in "[(":
                depth += 1
            elif c in ")]":
                if c == "]" and depth == 0:
                    self.pos = i + 1
                    return t[start:i].strip()
                depth -= 1
            i += 1
        raise self.error("unclosed [")

    def bracket_item(self, item: str) -> Step:
        item = item.strip()
        if item == "*":
            return _Wildcard()
        if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
            return _Field(item[1:-1])
        m = _INDEX.match(item)
        if m is None or item == "":
            raise self.error(f"invalid array index {item!r}")
        start = int(m.group(1)) if m.group(1) not in ("", "-") else None
        if m.group(2) is None and ":" not in item:
            if start is None:
                raise self.error(f"invalid array index {item!r}")
            return _Slice(start, start + 1 if start != -1 else None)
        end = int(m.group(2)) if m.group(2) not in (None, "", "-") else None
        return _Slice(start, end)

    def filter(self, cond: str) -> _Filter:
        m = _FILTER.match(cond)
        if m is None:
            return _Filter(_Parser(cond, self.original).path(root=False), "exists", None)
        left = _Parser(m.group(1).strip(), self.original).path(root=False)
        right_text = m.group(3).strip()
        right: Path | _Literal
        if right_text.startswith("@"):
            right = _Parser(right_text, self.original).path(root=False)
        elif len(right_text) >= 2 and right_text[0] == right_text[-1] and right_text[0] in "'\"":
            right = _Literal(right_text[1:-1])
        elif _NUMBER.match(right_text):
            is_float = any(ch in right_text for ch in ".eE")
            right = _Literal(float(right_text) if is_float else int(right_text))
        else:
            raise self.error(f"unrecognized filter operand {right_text!r}")
        return _Filter(left, m.group(2), right)


def _split_union(inner: str) -> list[str]:
    parts, quote, start = [], "", 0
    for i, c in enumerate(inner):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == ",":
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    return parts


def find(obj: Any, expr: str | Path) -> list[Any]:
    """Every value ``expr`` selects in ``obj``, in document order.

    Missing keys select nothing; malformed paths and failed evaluations raise
    :class:`JSONPathError`.
    """
    steps = parse(expr) if isinstance(expr, str) else expr
    return _walk([obj], steps)


def _walk(values: list[Any], steps: Path) -> list[Any]:
    for step in steps:
        values = _step(values, step)
    return values


def _step(values: list[Any], step: Step) -> list[Any]:
    out: list[Any] = []
    if isinstance(step, _Field):
        for v in values:
            if isinstance(v, dict) and step.name in v:
                out.append(v[step.name])
    elif isinstance(step, _Wildcard):
        for v in values:
            if isinstance(v, dict):
                out.extend(v.values())
            elif isinstance(v, list):
                out.extend(v)
    elif isinstance(step, _Recursive):
        for v in values:
            _descend(v, out)
    elif isinstance(step, _Slice):
        for v in values:
            if v is None:
                continue
            if not isinstance(v, list):
                raise JSONPathError(f"{_kind(v)} is not array or slice")
            out.extend(_slice(v, step))
    elif isinstance(step, _Union):
        for branch in step.branches:
            out.extend(_walk(values, branch))
    else:
        for v in values:
            if v is None:
                continue
            if not isinstance(v, list):
                raise JSONPathError(f"{_kind(v)} is not array or slice and cannot be filtered")
            out.extend(item for item in v if _matches(item, step))
    return out


def _descend(v: Any, out: list[Any]) -> None:
    children = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else []
    if children:
        out.append(v)
        for child in children:
            _descend(child, out)


def _slice(v: list[Any], s: _Slice) -> list[Any]:
    n = len(v)
    start = 0 if s.start is None else s.start + n if s.start < 0 else s.start
    end = n if s.end is None else s.end + n if s.end < 0 else s.end
    if start != end and (start >= n or end > n or start < 0):
        raise JSONPathError(f"array index out of bounds: index {start}, length {n}")
    if end < start:
        raise JSONPathError(f"invalid slice index {end} < {start}")
    return v[start:end]


def _matches(item: Any, f: _Filter) -> bool:
    lefts = _walk([item], f.left)
    if f.op == "exists":
        return bool(lefts)
    if len(lefts) != 1:
        raise JSONPathError("can only compare one element at a time")
    if isinstance(f.right, _Literal):
        right = f.right.value
    else:
        rights = _walk([item], f.right or ())
        if len(rights) != 1:
            raise JSONPathError("can only compare one element at a time")
        right = rights[0]
    return _compare(lefts[0], f.op, right)


def _basic_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    raise JSONPathError(f"invalid type for comparison: {_kind(v)}")


def _compare(left: Any, op: str, right: Any) -> bool:
    kind = _basic_kind(left)
    if kind != _basic_kind(right):
        raise JSONPathError("incompatible types for comparison")
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if kind == "bool":
        raise JSONPathError("invalid type for comparison: bool")
    if op == "<":
        return bool(left < right)
    if op == ">":
        return bool(left > right)
    if op == "<=":
        return bool(left <= right)
    return bool(left >= right)


def _kind(v: Any) -> str:
    return {dict: "map", list: "slice", str: "string", bool: "bool", int: "int64",
            float: "float64"}.get(type(v), type(v).__name__)


def format_value(value: Any) -> str:
    """``value`` as client-go's JSONPath printer writes it.

    Maps and lists are compact JSON with sorted keys, strings are bare, numbers and
    booleans are written the way Go's ``fmt`` writes them:

    >>> format_value({"b": 1, "a": [True]}), format_value(1.0), format_value(2.5e6)
    ('{"a":[true],"b":1}', '1', '2.5e+06')
    """
    if isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def go_float(f: float) -> str:
    """``f`` as Go's ``%v`` writes a float64 (shortest digits, ``%e`` past 1e+06)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(f)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    point = len(digit_tuple) + exponent  # digits before the decimal point
    exp = point - 1
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{minus}{digits}{'0' * (point - len(digits))}"
    return f"{minus}{digits[:point]}.{digits[point:]}"
