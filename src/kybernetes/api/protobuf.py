"""Kubernetes protobuf bodies (``application/vnd.kubernetes.protobuf``) to and from JSON form.

kubectl 1.32 sends typed objects (``kubectl create deployment|configmap|...``,
``kubectl autoscale``) as protobuf. A body is ``k8s\\x00`` followed by a
``runtime.Unknown`` envelope whose ``raw`` field holds the object's own message. This
module turns such a body into the dict the JSON body would have produced, and back,
driven by the field table in ``data/k8s-protobuf-v1.32.json`` (loaded on first use).

>>> body = encode({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
>>> is_protobuf(body), decode(body)["metadata"]
(True, {'name': 'ml'})

The JSON form follows Go's ``encoding/json`` with one difference: a ``null`` that Go
would print (a zero ``Time``, a nil list or map that is not ``omitempty``) is left out,
which every Kubernetes JSON reader treats the same way.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson

from kybernetes.api import quantity

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
TABLE_PATH = Path(__file__).with_name("data") / "k8s-protobuf-v1.32.json"

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_QUANTITY_VALUE = "k8s.io.apimachinery.pkg.api.resource.QuantityValue"
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"

_VARINT, _FIXED64, _LEN, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_MASK64 = (1 << 64) - 1
_VARINT_KINDS = frozenset({"bool", "int32", "int64"})
_SCALAR_ZERO: dict[str, Any] = {"string": "", "bytes": "", "bool": False, "int32": 0, "int64": 0}
_INT_RANGE = {"int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GO_ZERO_TIME = -62_135_596_800  # 0001-01-01T00:00:00Z, Go's zero time.Time in Unix seconds


class ProtobufError(Exception):
    """A body that is not a valid Kubernetes protobuf object; answer 400 BadRequest.

    ``field`` is the JSON path of the offending field when known (``spec.ports[1].port``).
    """

    def __init__(self, reason: str, *, field: str = "") -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)

    def inside(self, name: str) -> ProtobufError:
        """The same error seen from the message that holds field ``name``."""
        if not name:
            return self
        if not self.field:
            field = name
        elif self.field.startswith("["):
            field = name + self.field
        else:
            field = f"{name}.{self.field}"
        return ProtobufError(self.reason, field=field)


def is_protobuf(body: bytes) -> bool:
    """Whether ``body`` starts with the Kubernetes protobuf magic ``k8s\\x00``."""
    return body[:4] == MAGIC


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form (with ``apiVersion`` and ``kind``) of a protobuf request body."""
    buf = bytes(body)
    if not is_protobuf(buf):
        raise ProtobufError("body does not start with the protobuf magic k8s\\x00")
    api_version = kind = content_encoding = ""
    raw = (0, 0)
    for number, wire, a, b in _fields(buf, len(MAGIC), len(buf)):
        if number == 1:
            _expect(wire, _LEN, "typeMeta")
            for n, w, x, y in _fields(buf, a, b):
                if n == 1:
                    api_version = _value("string", w, x, y, buf)
                elif n == 2:
                    kind = _value("string", w, x, y, buf)
        elif number == 2:
            _expect(wire, _LEN, "raw")
            raw = (a, b)
        elif number == 3:
            content_encoding = _value("string", wire, a, b, buf)
    if not kind:
        raise ProtobufError("object to decode does not have a kind")
    if content_encoding:
        raise ProtobufError(f"unsupported content encoding {content_encoding!r}")
    name = _table().lookup(api_version, kind)
    obj = _decode_message(name, buf, *raw)
    return {"apiVersion": api_version, "kind": kind, **obj}


def encode(obj: dict[str, Any]) -> bytes:
    """The protobuf body for a JSON-form object, written the way Go clients write it."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not kind:
        raise ProtobufError("object has no apiVersion or kind")
    raw = bytearray()
    _encode_message(_table().lookup(api_version, kind), obj, raw)
    type_meta = bytearray()
    _write(type_meta, 1, "string", api_version)
    _write(type_meta, 2, "string", kind)
    out = bytearray(MAGIC)
    _write_bytes(out, 1, type_meta)
    _write_bytes(out, 2, raw)
    _write(out, 3, "string", "")
    _write(out, 4, "string", "")
    return bytes(out)


# --- the field table ---------------------------------------------------------------


class _Field:
    """One field of a message, as the table describes it."""

    __slots__ = ("inline", "is_map", "json", "kind", "number", "omitempty", "pointer", "repeated")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.number: int = spec["number"]
        self.json: str = spec["json"] or ""
        # "string", "bytes", "bool", "int32", "int64" or a message name; for maps, the value's
        self.kind: str = spec.get("message") or spec.get("value") or spec["type"]
        self.is_map: bool = spec["type"] == "map"
        self.repeated: bool = spec.get("repeated", False)
        self.pointer: bool = spec.get("go_pointer", False)
        self.omitempty: bool = spec.get("omitempty", False)
        self.inline: bool = spec.get("inline", False)


class _Message:
    __slots__ = ("by_number", "fields")

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        self.fields = tuple(sorted((_Field(spec) for spec in specs), key=lambda f: f.number))
        self.by_number = {f.number: f for f in self.fields}


class _Table:
    def __init__(self, data: dict[str, Any]) -> None:
        self._groups: dict[str, dict[str, str]] = data["api_groups"]
        self._shared: dict[str, str] = data["shared_kinds"]
        self._raw: dict[str, list[dict[str, Any]]] = data["messages"]
        self._compiled: dict[str, _Message] = {}

    def lookup(self, api_version: str, kind: str) -> str:
        kinds = self._groups.get(api_version)
        name = None if kinds is None else kinds.get(kind) or self._shared.get(kind)
        if name is None:
            raise ProtobufError(f'no kind "{kind}" is registered for version "{api_version}"')
        return name

    def message(self, name: str) -> _Message:
        msg = self._compiled.get(name)
        if msg is None:
            msg = self._compiled[name] = _Message(self._raw[name])
        return msg


@functools.cache
def _table() -> _Table:
    return _Table(orjson.loads(TABLE_PATH.read_bytes()))


# --- wire reading ------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint overflows 64 bits")
    raise ProtobufError("unexpected end of data in a varint")


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(number, wire type, a, b)``: a varint's value in ``a``, else the span a..b."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("illegal field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
            continue
        if wire == _LEN:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise ProtobufError("unexpected end of data")
            yield number, wire, pos, pos + size
            pos += size
            continue
        start, pos = pos, _skip(buf, pos, end, number, wire)
        yield number, wire, start, pos


def _skip(buf: bytes, pos: int, end: int, number: int, wire: int) -> int:
    """The position after a value of wire type ``wire`` that starts at ``pos``."""
    if wire == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire == _LEN:
        size, pos = _varint(buf, pos, end)
        stop = pos + size
    elif wire == _FIXED64:
        stop = pos + 8
    elif wire == _FIXED32:
        stop = pos + 4
    elif wire == _START_GROUP:
        while True:
            key, pos = _varint(buf, pos, end)
            if key & 7 == _END_GROUP:
                if key >> 3 != number:
                    raise ProtobufError("mismatched end group")
                return pos
            pos = _skip(buf, pos, end, key >> 3, key & 7)
    else:
        raise ProtobufError(f"illegal wire type {wire} for field {number}")
    if stop > end:
        raise ProtobufError("unexpected end of data")
    return stop


def _expect(wire: int, want: int, what: str) -> None:
    if wire != want:
        raise ProtobufError(f"wrong wire type {wire} for {what} (expected {want})")


def _int(kind: str, value: int) -> int | bool:
    if kind == "bool":
        return value != 0
    if kind == "int32":
        value &= 0xFFFFFFFF
        return value - (1 << 32) if value >> 31 else value
    return value - (1 << 64) if value >> 63 else value


def _value(kind: str, wire: int, a: int, b: int, buf: bytes) -> Any:
    if kind in _VARINT_KINDS:
        _expect(wire, _VARINT, kind)
        return _int(kind, a)
    _expect(wire, _LEN, "message" if "." in kind else kind)
    if kind == "string":
        return buf[a:b].decode("utf-8", "replace")
    if kind == "bytes":
        return base64.b64encode(buf[a:b]).decode("ascii")
    return _decode_message(kind, buf, a, b)


def _zero(kind: str) -> Any:
    return _SCALAR_ZERO[kind] if kind in _SCALAR_ZERO else _decode_message(kind, b"", 0, 0)


# --- decoding ----------------------------------------------------------------------


def _decode_message(name: str, buf: bytes, start: int, end: int) -> Any:
    special = _DECODERS.get(name)
    if special is not None:
        return special(buf, start, end)
    msg = _table().message(name)
    seen: dict[int, Any] = {}
    for number, wire, a, b in _fields(buf, start, end):
        f = msg.by_number.get(number)
        if f is None:
            continue
        try:
            if f.is_map:
                _expect(wire, _LEN, "map entry")
                key, value = _map_entry(f.kind, buf, a, b)
                seen.setdefault(number, {})[key] = value
            elif f.repeated:
                items = seen.setdefault(number, [])
                if wire == _LEN and f.kind in _VARINT_KINDS:  # packed
                    while a < b:
                        value, a = _varint(buf, a, b)
                        items.append(_int(f.kind, value))
                else:
                    items.append(_value(f.kind, wire, a, b, buf))
            else:
                seen[number] = _value(f.kind, wire, a, b, buf)
        except ProtobufError as err:
            label = f.json
            if f.repeated and not f.is_map:
                label += f"[{len(seen.get(number, ()))}]"
            raise err.inside(label) from None
    out: dict[str, Any] = {}
    for f in msg.fields:
        if f.number in seen:
            value = seen[f.number]
        elif f.repeated or f.pointer:
            continue
        else:
            value = _zero(f.kind)
        if f.inline:
            out.update(value)
        elif value is None or (
            f.omitempty and not f.pointer and f.kind in _SCALAR_ZERO and not value
        ):
            continue
        else:
            out[f.json] = value
    return out


def _map_entry(kind: str, buf: bytes, start: int, end: int) -> tuple[str, Any]:
    key, value, found = "", None, False
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1:
            key = _value("string", wire, a, b, buf)
        elif number == 2:
            value, found = _value(kind, wire, a, b, buf), True
    return key, value if found else _zero(kind)


def _scalars(buf: bytes, start: int, end: int, kinds: dict[int, str]) -> dict[int, Any]:
    """The scalar fields ``kinds`` of a special message, zero when absent."""
    out = {number: _SCALAR_ZERO[kind] for number, kind in kinds.items()}
    for number, wire, a, b in _fields(buf, start, end):
        if number in kinds:
            out[number] = _value(kinds[number], wire, a, b, buf)
    return out


def _decode_quantity(buf: bytes, start: int, end: int) -> str:
    return _scalars(buf, start, end, {1: "string"})[1] or "0"


def _decode_int_or_string(buf: bytes, start: int, end: int) -> int | str:
    f = _scalars(buf, start, end, {1: "int64", 2: "int32", 3: "string"})
    value: int | str = f[3] if f[1] == 1 else f[2]
    return value


def _decode_time(buf: bytes, start: int, end: int) -> str | None:
    seconds = _scalars(buf, start, end, {1: "int64"})[1]
    if start == end or seconds == _GO_ZERO_TIME:
        return None
    return f"{_date_text(_datetime(seconds, 0))}Z"


def _decode_micro_time(buf: bytes, start: int, end: int) -> str | None:
    f = _scalars(buf, start, end, {1: "int64", 2: "int32"})
    if start == end or (f[1] == _GO_ZERO_TIME and f[2] == 0):
        return None
    when = _datetime(f[1], f[2] // 1000)
    return f"{_date_text(when)}.{when.microsecond:06d}Z"


def _decode_duration(buf: bytes, start: int, end: int) -> str:
    return go_duration(_scalars(buf, start, end, {1: "int64"})[1])


def _decode_embedded_json(buf: bytes, start: int, end: int) -> Any:
    raw = b""
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1:
            _expect(wire, _LEN, "raw")
            raw = buf[a:b]
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtobufError("embedded object is not JSON") from None


def _decode_verbs(buf: bytes, start: int, end: int) -> list[str] | None:
    verbs = [_value("string", w, a, b, buf) for n, w, a, b in _fields(buf, start, end) if n == 1]
    return verbs or None


def _datetime(seconds: int, micros: int) -> datetime:
    try:
        return _EPOCH + timedelta(seconds=seconds, microseconds=micros)
    except OverflowError:
        raise ProtobufError(f"time {seconds} is out of range") from None


def _date_text(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def go_duration(nanos: int) -> str:
    """Go's ``time.Duration.String``: ``go_duration(5400 * 10**9) == "1h30m0s"``."""
    if nanos == 0:
        return "0s"
    sign, u = ("-" if nanos < 0 else ""), abs(nanos)
    if u < 1_000_000_000:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_fraction(u, 3)}µs"
        return f"{sign}{_fraction(u, 6)}ms"
    seconds, frac = divmod(u, 1_000_000_000)
    tail = f"{frac:09d}".rstrip("0")
    text = f"{seconds % 60}.{tail}s" if tail else f"{seconds % 60}s"
    minutes, hours = seconds // 60 % 60, seconds // 3600
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return f"{sign}{text}"


def _fraction(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10**digits)
    tail = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


_DECODERS: dict[str, Callable[[bytes, int, int], Any]] = {
    _QUANTITY: _decode_quantity,
    _QUANTITY_VALUE: _decode_quantity,
    _INT_OR_STRING: _decode_int_or_string,
    _META + "Time": _decode_time,
    _META + "MicroTime": _decode_micro_time,
    _META + "Duration": _decode_duration,
    _META + "FieldsV1": _decode_embedded_json,
    _META + "Verbs": _decode_verbs,
    _RAW_EXTENSION: _decode_embedded_json,
}


# --- encoding ----------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    value &= _MASK64
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _write_bytes(out: bytearray, number: int, data: bytes | bytearray) -> None:
    _put_varint(out, number << 3 | _LEN)
    _put_varint(out, len(data))
    out += data


def _write(out: bytearray, number: int, kind: str, value: Any) -> None:
    """Write field ``number`` of type ``kind``; ``None`` stands for the zero value."""
    if kind in _VARINT_KINDS:
        _put_varint(out, number << 3 | _VARINT)
        _put_varint(out, _as_int(kind, value))
    elif kind == "string":
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ProtobufError(f"expected a string, got {_type_name(value)}")
        _write_bytes(out, number, value.encode())
    elif kind == "bytes":
        _write_bytes(out, number, _as_bytes(value))
    else:
        data = bytearray()
        _encode_message(kind, value, data)
        _write_bytes(out, number, data)


def _as_int(kind: str, value: Any) -> int:
    if value is None:
        return 0
    if kind == "bool":
        if not isinstance(value, bool):
            raise ProtobufError(f"expected a boolean, got {_type_name(value)}")
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtobufError(f"expected an integer, got {_type_name(value)}")
    low, high = _INT_RANGE[kind]
    if not low <= value <= high:
        raise ProtobufError(f"{value} does not fit in an {kind}")
    return value


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ProtobufError(f"expected base64 text, got {_type_name(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ProtobufError("illegal base64 data") from None


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _encode_message(name: str, obj: Any, out: bytearray) -> None:
    special = _ENCODERS.get(name)
    if special is not None:
        special(obj, out)
        return
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise ProtobufError(f"expected an object, got {_type_name(obj)}")
    for f in _table().message(name).fields:
        value = obj if f.inline else obj.get(f.json)
        try:
            if f.is_map:
                if not value:
                    continue
                if not isinstance(value, dict):
                    raise ProtobufError(f"expected an object, got {_type_name(value)}")
                for key in sorted(value):
                    entry = bytearray()
                    _write(entry, 1, "string", key)
                    _write(entry, 2, f.kind, value[key])
                    _write_bytes(out, f.number, entry)
            elif f.repeated:
                if not value:
                    continue
                if not isinstance(value, list):
                    raise ProtobufError(f"expected an array, got {_type_name(value)}")
                for index, item in enumerate(value):
                    try:
                        _write(out, f.number, f.kind, item)
                    except ProtobufError as err:
                        raise err.inside(f"[{index}]") from None
            elif value is not None or not f.pointer:
                _write(out, f.number, f.kind, value)
        except ProtobufError as err:
            raise err.inside(f.json) from None


def _encode_quantity(value: Any, out: bytearray) -> None:
    if value is None:
        text = "0"
    elif isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ProtobufError(f"expected a quantity, got {_type_name(value)}")
    else:
        try:
            text = quantity.canonical(value)
        except ValueError as err:
            raise ProtobufError(str(err)) from None
    _write(out, 1, "string", text)


def _encode_int_or_string(value: Any, out: bytearray) -> None:
    if isinstance(value, str):
        int_type, int_val, str_val = 1, 0, value
    elif value is None or (isinstance(value, int) and not isinstance(value, bool)):
        int_type, int_val, str_val = 0, value or 0, ""
    else:
        raise ProtobufError(f"expected an integer or a string, got {_type_name(value)}")
    _write(out, 1, "int64", int_type)
    _write(out, 2, "int32", int_val)
    _write(out, 3, "string", str_val)


def _parse_time(value: Any) -> timedelta | None:
    """The time since the Unix epoch, or None for a null or zero time (written as nothing)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtobufError(f"expected an RFC 3339 time, got {_type_name(value)}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ProtobufError(f"{value!r} is not an RFC 3339 time")
    since = when - _EPOCH
    return None if since.days * 86400 + since.seconds == _GO_ZERO_TIME else since


def _encode_time(value: Any, out: bytearray) -> None:
    since = _parse_time(value)
    if since is not None:
        _write(out, 1, "int64", since.days * 86400 + since.seconds)
        _write(out, 2, "int32", 0)


def _encode_micro_time(value: Any, out: bytearray) -> None:
    since = _parse_time(value)
    if since is not None:
        _write(out, 1, "int64", since.days * 86400 + since.seconds)
        _write(out, 2, "int32", since.microseconds * 1000)


def _encode_duration(value: Any, out: bytearray) -> None:
    if value is not None and not isinstance(value, str):
        raise ProtobufError(f"expected a duration, got {_type_name(value)}")
    _write(out, 1, "int64", parse_go_duration(value or "0s"))


def _encode_embedded_json(value: Any, out: bytearray) -> None:
    if value is not None:
        _write_bytes(out, 1, orjson.dumps(value))


def _encode_verbs(value: Any, out: bytearray) -> None:
    if value is not None and not isinstance(value, list):
        raise ProtobufError(f"expected an array, got {_type_name(value)}")
    for verb in value or ():
        _write(out, 1, "string", verb)


_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNIT = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds: ``parse_go_duration("1m30s") == 90 * 10**9``."""
    rest, negative = text, text.startswith("-")
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0
    total, pos = Fraction(0), 0
    while pos < len(rest) or pos == 0:
        m = _DURATION_PART.match(rest, pos)
        if m is None or not (m.group(1) or m.group(2)):
            raise ProtobufError(f"invalid duration {text!r}")
        whole, frac = m.group(1) or "0", m.group(2) or ""
        number = int(whole) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
        total += number * _DURATION_UNIT[m.group(3)]
        pos = m.end()
    nanos = -int(total) if negative else int(total)
    if not -(1 << 63) <= nanos < 1 << 63:
        raise ProtobufError(f"invalid duration {text!r}")
    return nanos


_ENCODERS: dict[str, Callable[[Any, bytearray], None]] = {
    _QUANTITY: _encode_quantity,
    _QUANTITY_VALUE: _encode_quantity,
    _INT_OR_STRING: _encode_int_or_string,
    _META + "Time": _encode_time,
    _META + "MicroTime": _encode_micro_time,
    _META + "Duration": _encode_duration,
    _META + "FieldsV1": _encode_embedded_json,
    _META + "Verbs": _encode_verbs,
    _RAW_EXTENSION: _encode_embedded_json,
}
