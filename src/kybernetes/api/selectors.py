"""Label and field selectors: parsing the query-string forms and matching objects.

>>> sel = parse_label_selector("app=web,tier in (front,back),!canary")
>>> sel.matches({"app": "web", "tier": "front"})
True
>>> from_label_selector({"matchLabels": {"app": "web"}}).matches({"app": "db"})
False
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kybernetes.api.errors import StatusError


class SelectorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        has = self.key in labels
        if op in ("=", "in"):
            return has and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return not has or labels[self.key] not in self.values
        if op in ("gt", "lt"):
            if not has:
                return False
            try:
                v = int(labels[self.key])
            except ValueError:
                return False
            bound = int(self.values[0])
            return v > bound if op == "gt" else v < bound
        return False

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return "!" + self.key
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        if self.op in ("gt", "lt"):
            return f"{self.key}{'>' if self.op == 'gt' else '<'}{self.values[0]}"
        return f"{self.key}{self.op}{self.values[0]}"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False
    """A selector that matches no object (a nil LabelSelector in Go)."""

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements and not self.nothing

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERYTHING = LabelSelector()
NOTHING = LabelSelector(nothing=True)

_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|>|<|[^\s!=,()<>]+)")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse the string form (``labelSelector=`` query parameter)."""
    if not text or not text.strip():
        return EVERYTHING
    tokens: list[str] = [t for t in _TOKEN.findall(text) if t]
    pos = 0
    reqs: list[Requirement] = []

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise SelectorError("unable to parse requirement: unexpected end of selector")
        t = tokens[pos]
        pos += 1
        return t

    while pos < len(tokens):
        t = take()
        if t == "!":
            key = take()
            reqs.append(Requirement(_check_key(key), "!"))
        else:
            key = _check_key(t)
            op = peek()
            if op is None or op == ",":
                reqs.append(Requirement(key, "exists"))
            elif op in ("=", "=="):
                take()
                nxt = peek()
                value = "" if nxt in (None, ",") else take()
                reqs.append(Requirement(key, "=", (_check_value(value),)))
            elif op == "!=":
                take()
                nxt = peek()
                value = "" if nxt in (None, ",") else take()
                reqs.append(Requirement(key, "!=", (_check_value(value),)))
            elif op in ("in", "notin"):
                take()
                if take() != "(":
                    raise SelectorError(f"unable to parse requirement: found '{op}', expected: '('")
                values: list[str] = []
                while True:
                    v = take()
                    if v == ")":
                        break
                    if v == ",":
                        continue
                    values.append(_check_value(v))
                reqs.append(Requirement(key, op, tuple(values)))
            elif op in (">", "<"):
                take()
                v = take()
                if not v.isdigit():
                    raise SelectorError(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must "
                        f"be an integer: {v}")
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (v,)))
            else:
                raise SelectorError(
                    f"unable to parse requirement: found '{op}', expected: "
                    "'=', '!=', '==', 'in', notin'")
        nxt = peek()
        if nxt is not None:
            if nxt != ",":
                raise SelectorError(f"found '{nxt}', expected: ',' or 'end of string'")
            take()
    return LabelSelector(tuple(reqs))


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def _check_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _NAME_PART.match(name) or len(prefix) > 253:
        raise SelectorError(
            f"unable to parse requirement: <nil>: Invalid value: {key!r}: name part must "
            "consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
            "an alphanumeric character")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise SelectorError(
            f"unable to parse requirement: values[0]: Invalid value: {value!r}: a valid label "
            "must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character")
    return value


def from_label_selector(sel: Mapping[str, Any] | None) -> LabelSelector:
    """A ``metav1.LabelSelector`` dict as a matcher (None matches nothing, {} everything)."""
    if sel is None:
        return NOTHING
    reqs: list[Requirement] = [
        Requirement(k, "=", (str(v),)) for k, v in sorted((sel.get("matchLabels") or {}).items())
    ]
    for expr in sel.get("matchExpressions") or ():
        op = expr.get("operator")
        key = expr.get("key", "")
        values = tuple(str(v) for v in expr.get("values") or ())
        if op == "In":
            reqs.append(Requirement(key, "in", values))
        elif op == "NotIn":
            reqs.append(Requirement(key, "notin", values))
        elif op == "Exists":
            reqs.append(Requirement(key, "exists"))
        elif op == "DoesNotExist":
            reqs.append(Requirement(key, "!"))
        else:
            raise SelectorError(f"{op!r} is not a valid label selector operator")
    return LabelSelector(tuple(reqs))


def selector_string(sel: Mapping[str, Any] | None) -> str:
    """The query-string form of a ``metav1.LabelSelector`` dict."""
    return str(from_label_selector(sel)) if sel is not None else ""


# -- field selectors ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        for r in self.requirements:
            v = fields.get(r.field, "")
            if (v == r.value) != (r.op == "="):
                return False
        return True

    def value_of(self, field: str) -> str | None:
        """The value an equality requirement pins ``field`` to, if any."""
        for r in self.requirements:
            if r.field == field and r.op == "=":
                return r.value
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    out, cur, esc = [], [], False
    for ch in text:
        if esc:
            cur.append("\\" + ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None) -> FieldSelector:
    if not text:
        return FieldSelector()
    reqs = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for op in ("!=", "==", "="):
            idx = _find_unescaped(part, op)
            if idx >= 0:
                key = part[:idx].strip()
                value = _unescape(part[idx + len(op):])
                reqs.append(FieldRequirement(key, "!=" if op == "!=" else "=", value))
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
    return FieldSelector(tuple(reqs))


def _find_unescaped(text: str, op: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(op, i):
            return i
        i += 1
    return -1


def check_fields(sel: FieldSelector, supported: Callable[[str], bool], kind_label: str) -> None:
    """Raise 400 BadRequest for a field the resource does not support selecting on."""
    for r in sel.requirements:
        if not supported(r.field):
            raise StatusError.bad_request(
                f'field label not supported: {r.field}' if not kind_label else
                f'"{r.field}" is not a known field selector: only "metadata.name", '
                f'"metadata.namespace"')
