"""Decode-time checks of objects against their schemas: types, unknown fields, pruning.

A schema is compiled once into a tree of :class:`Node` and then walked over each request
body. The walk mutates the body in place: unknown fields are removed (Kubernetes never
stores them) and recorded so the API server can apply ``fieldValidation``; ``null``
values are dropped; quantities are canonicalised; CRD defaults are filled in.

Two dialects share the walk:

- built-in kinds (``crd=False``): a type mismatch is a decoding error (HTTP 400), as Go's
  JSON decoder reports it;
- custom resources (``crd=True``): the OpenAPI v3 value validations (enum, bounds,
  patterns, required, ...) produce field errors (HTTP 422).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from kybernetes.api import quantity
from kybernetes.api.errors import FieldError
from kybernetes.api.schema import Definitions, Schema

ANY, OBJECT, ARRAY, STRING, INTEGER, NUMBER, BOOLEAN, INT_OR_STRING, QUANTITY = range(9)

_TYPE_NAMES = {
    "object": OBJECT,
    "array": ARRAY,
    "string": STRING,
    "integer": INTEGER,
    "number": NUMBER,
    "boolean": BOOLEAN,
}
_GO_TYPES = {STRING: "string", INTEGER: "int64", NUMBER: "float64", BOOLEAN: "bool",
             OBJECT: "map[string]interface {}", ARRAY: "[]interface {}"}


class Node:
    """A compiled schema node."""

    __slots__ = (
        "additional",
        "checks",
        "default",
        "embedded",
        "fmt",
        "go_name",
        "items",
        "kind",
        "list_keys",
        "list_type",
        "map_type",
        "nullable",
        "preserve",
        "props",
        "required",
    )

    def __init__(self) -> None:
        self.kind = ANY
        self.props: dict[str, Node] | None = None
        self.additional: Node | None = None
        self.items: Node | None = None
        self.preserve = False
        self.fmt = ""
        self.go_name = ""
        self.nullable = False
        self.default: Any = _MISSING
        self.required: tuple[str, ...] = ()
        self.checks: Schema | None = None
        self.embedded = False
        self.list_type = ""
        self.list_keys: tuple[str, ...] = ()
        self.map_type = ""


_MISSING = object()
_VALUE_KEYWORDS = ("enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                   "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
                   "minProperties", "maxProperties", "multipleOf", "oneOf", "anyOf", "allOf",
                   "not", "format")


def _schema_type(s: Schema) -> int:
    t = s.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if t is None:
        if "properties" in s:
            return OBJECT
        return ANY
    return _TYPE_NAMES.get(t, ANY)


class Compiler:
    """Compiles schemas to :class:`Node` trees; one per definition set, cached by name."""

    def __init__(self, defs: Definitions | None = None) -> None:
        self.defs = defs
        self._by_name: dict[str, Node] = {}

    def definition(self, name: str) -> Node:
        node = self._by_name.get(name)
        if node is None:
            assert self.defs is not None
            node = Node()
            self._by_name[name] = node  # before filling: recursive types refer back
            self._fill(node, self.defs.get(name), name.rsplit(".", 1)[-1], crd=False)
        return node

    def compile(self, schema: Schema, *, crd: bool) -> Node:
        node = Node()
        self._fill(node, schema, "", crd=crd)
        return node

    def _fill(self, node: Node, s: Schema, go_name: str, *, crd: bool) -> None:
        node.go_name = go_name
        if s.get("x-kubernetes-int-or-string"):
            node.kind = INT_OR_STRING
        else:
            one_of = s.get("oneOf")
            if one_of and not crd:
                types = {_schema_type(o) for o in one_of}
                node.kind = QUANTITY if NUMBER in types else INT_OR_STRING
            else:
                node.kind = _schema_type(s)
        node.fmt = s.get("format", "") or ""
        node.nullable = bool(s.get("nullable"))
        node.preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
        node.embedded = bool(s.get("x-kubernetes-embedded-resource"))
        node.list_type = s.get("x-kubernetes-list-type", "") or ""
        node.list_keys = tuple(s.get("x-kubernetes-list-map-keys") or ())
        node.map_type = s.get("x-kubernetes-map-type", "") or ""
        if crd:
            if "default" in s:
                node.default = s["default"]
            node.required = tuple(s.get("required") or ())
            checks = {k: s[k] for k in _VALUE_KEYWORDS if k in s}
            node.checks = checks or None
        props = s.get("properties")
        if props is not None:
            node.props = {k: self._child(v, crd=crd) for k, v in props.items()}
            if node.kind == ANY:
                node.kind = OBJECT
        addl = s.get("additionalProperties")
        if isinstance(addl, dict):
            node.additional = self._child(addl, crd=crd)
        elif addl is True:
            node.additional = Node()
        items = s.get("items")
        if isinstance(items, dict):
            node.items = self._child(items, crd=crd)
        if node.kind == OBJECT and node.props is None and node.additional is None:
            node.preserve = True  # a free-form object
        if node.kind == ANY:
            node.preserve = True

    def _child(self, s: Schema, *, crd: bool) -> Node:
        ref = s.get("$ref")
        if ref is None:
            all_of = s.get("allOf")
            if all_of and len(all_of) == 1 and "$ref" in all_of[0]:
                ref = all_of[0]["$ref"]
        if ref is not None and self.defs is not None:
            return self.definition(ref.rsplit("/", 1)[-1])
        node = Node()
        self._fill(node, s, "", crd=crd)
        return node


@dataclass
class WalkResult:
    unknown: list[str] = field(default_factory=list)
    """Paths of fields not in the schema (removed from the object)."""
    decode_error: str = ""
    """Set for built-in kinds when a value has the wrong JSON type."""
    errors: list[FieldError] = field(default_factory=list)
    """CRD value-validation failures."""


def _json_type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


class _Walker:
    def __init__(self, *, crd: bool, skip_root: tuple[str, ...]) -> None:
        self.crd = crd
        self.res = WalkResult()
        self.skip_root = skip_root

    def mismatch(self, node: Node, value: Any, path: str, parent: str, want: str) -> None:
        if self.crd:
            self.res.errors.append(FieldError.type_invalid(
                path, value, f"{path} in body must be of type {want}: {_fmt(value)}"))
        elif not self.res.decode_error:
            go_type = {"string": "string", "integer": "int64", "number": "float64",
                       "boolean": "bool", "object": "map", "array": "slice"}.get(want, want)
            if node.fmt in ("int32", "int64"):
                go_type = node.fmt
            where = f"Go struct field {parent}.{path}" if parent else "Go value"
            self.res.decode_error = (
                f"json: cannot unmarshal {_json_type_name(value)} into {where} of type {go_type}")

    def walk(self, node: Node, value: Any, path: str, parent: str) -> Any:
        kind = node.kind
        if kind == OBJECT:
            if not isinstance(value, dict):
                self.mismatch(node, value, path, parent, "object")
                return value
            props = node.props
            if props is not None:
                go = node.go_name or parent
                for key in list(value):
                    v = value[key]
                    child = props.get(key)
                    sub = f"{path}.{key}" if path else key
                    if child is None:
                        if node.preserve or (not path and key in self.skip_root):
                            continue
                        self.res.unknown.append(sub)
                        del value[key]
                        continue
                    if v is None:
                        if not (self.crd and child.nullable):
                            del value[key]
                        continue
                    nv = self.walk(child, v, sub, go)
                    if nv is not v:
                        value[key] = nv
                if self.crd:
                    self.object_crd(node, value, path)
            elif node.additional is not None:
                addl = node.additional
                for key in list(value):
                    v = value[key]
                    if v is None:
                        if not self.crd:
                            # Go decodes null map values as zero values
                            value[key] = "" if addl.kind == STRING else v
                        continue
                    nv = self.walk(addl, v, f"{path}[{key}]" if not self.crd else f"{path}.{key}",
                                   parent)
                    if nv is not v:
                        value[key] = nv
                if self.crd:
                    self.object_crd(node, value, path)
            elif self.crd:
                self.object_crd(node, value, path)
            return value
        if kind == ARRAY:
            if not isinstance(value, list):
                self.mismatch(node, value, path, parent, "array")
                return value
            items = node.items
            if items is not None:
                for i, v in enumerate(value):
                    if v is None:
                        continue
                    nv = self.walk(items, v, f"{path}[{i}]", parent)
                    if nv is not v:
                        value[i] = nv
            if self.crd:
                self.array_crd(node, value, path)
            return value
        if kind == STRING:
            if not isinstance(value, str):
                self.mismatch(node, value, path, parent, "string")
                return value
            if node.fmt == "byte" and not self.crd:
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    if not self.res.decode_error:
                        self.res.decode_error = (
                            f"illegal base64 data at input byte {_bad_b64_at(value)}")
            if self.crd and node.checks:
                self.value_crd(node, value, path)
            return value
        if kind == INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    self.mismatch(node, value, path, parent, "integer")
                    return value
            if self.crd and node.checks:
                self.value_crd(node, value, path)
            return value
        if kind == NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.mismatch(node, value, path, parent, "number")
                return value
            if self.crd and node.checks:
                self.value_crd(node, value, path)
            return value
        if kind == BOOLEAN:
            if not isinstance(value, bool):
                self.mismatch(node, value, path, parent, "boolean")
            return value
        if kind == INT_OR_STRING:
            if isinstance(value, bool) or not isinstance(value, int | str):
                if isinstance(value, float) and value.is_integer():
                    return int(value)
                if self.crd:
                    self.res.errors.append(FieldError.invalid(
                        path, value, f"{path} in body must be of type integer,string: "
                        f"{_fmt(value)}"))
                elif not self.res.decode_error:
                    self.res.decode_error = (
                        f"json: cannot unmarshal {_json_type_name(value)} into Go struct field "
                        f"{parent}.{path} of type intstr.IntOrString")
            elif self.crd and node.checks:
                self.value_crd(node, value, path)
            return value
        if kind == QUANTITY:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                if not self.res.decode_error:
                    self.res.decode_error = (
                        f"quantities must match the regular expression "
                        f"'{quantity.QUANTITY_PATTERN}'")
                return value
            try:
                return quantity.canonical(value)
            except ValueError:
                if not self.res.decode_error:
                    self.res.decode_error = (
                        f"quantities must match the regular expression "
                        f"'{quantity.QUANTITY_PATTERN}'")
                return value
        # ANY
        if self.crd and node.checks:
            self.value_crd(node, value, path)
        return value

    # -- CRD value validation (OpenAPI v3 keywords) --------------------------------

    def object_crd(self, node: Node, value: dict[str, Any], path: str) -> None:
        if node.props is not None:
            for key, child in node.props.items():
                if key not in value and child.default is not _MISSING:
                    value[key] = _copy(child.default)
                    if child.kind == OBJECT and isinstance(value[key], dict):
                        self.walk(child, value[key], f"{path}.{key}" if path else key, "")
        for req in node.required:
            if req not in value:
                self.res.errors.append(FieldError.required(f"{path}.{req}" if path else req))
        if node.embedded:
            for key in ("apiVersion", "kind"):
                if not value.get(key):
                    self.res.errors.append(FieldError.required(f"{path}.{key}"))
        if node.checks:
            self.value_crd(node, value, path)

    def array_crd(self, node: Node, value: list[Any], path: str) -> None:
        if node.list_type == "set":
            seen: list[Any] = []
            for i, v in enumerate(value):
                if v in seen:
                    self.res.errors.append(FieldError.duplicate(f"{path}[{i}]", v))
                seen.append(v)
        elif node.list_type == "map" and node.list_keys:
            keys: set[tuple[Any, ...]] = set()
            for i, v in enumerate(value):
                if isinstance(v, dict):
                    k = tuple(repr(v.get(n)) for n in node.list_keys)
                    if k in keys:
                        self.res.errors.append(FieldError.duplicate(
                            f"{path}[{i}]", {n: v.get(n) for n in node.list_keys}))
                    keys.add(k)
        if node.checks:
            self.value_crd(node, value, path)

    def value_crd(self, node: Node, value: Any, path: str) -> None:
        assert node.checks is not None
        for err in value_errors(node.checks, value, path):
            self.res.errors.append(err)


def value_errors(checks: Schema, value: Any, path: str) -> list[FieldError]:
    """OpenAPI v3 value validations of one value, as Kubernetes words them."""
    errs: list[FieldError] = []
    c = checks
    if "enum" in c and value not in c["enum"]:
        errs.append(FieldError.not_supported(path, value, [str(x) for x in c["enum"]]))
    num = isinstance(value, int | float) and not isinstance(value, bool)
    if num:
        if "minimum" in c:
            lo = c["minimum"]
            if value < lo or (c.get("exclusiveMinimum") is True and value == lo):
                op = "greater than" if c.get("exclusiveMinimum") is True else \
                    "greater than or equal to"
                errs.append(FieldError.invalid(path, value,
                                               f"{path} in body should be {op} {_fmt(lo)}"))
        if "maximum" in c:
            hi = c["maximum"]
            if value > hi or (c.get("exclusiveMaximum") is True and value == hi):
                op = "less than" if c.get("exclusiveMaximum") is True else \
                    "less than or equal to"
                errs.append(FieldError.invalid(path, value,
                                               f"{path} in body should be {op} {_fmt(hi)}"))
        if "multipleOf" in c and c["multipleOf"] and (value / c["multipleOf"]) % 1:
            errs.append(FieldError.invalid(
                path, value, f"{path} in body should be a multiple of {_fmt(c['multipleOf'])}"))
    if isinstance(value, str):
        if "maxLength" in c and len(value) > c["maxLength"]:
            errs.append(FieldError.too_long(path, value, int(c["maxLength"])))
        if "minLength" in c and len(value) < c["minLength"]:
            errs.append(FieldError.invalid(
                path, value, f"{path} in body should be at least {c['minLength']} chars long"))
        if "pattern" in c and re.search(c["pattern"], value) is None:
            errs.append(FieldError.invalid(
                path, value, f"{path} in body should match '{c['pattern']}'"))
    if isinstance(value, list):
        if "maxItems" in c and len(value) > c["maxItems"]:
            errs.append(FieldError.too_many(path, len(value), int(c["maxItems"])))
        if "minItems" in c and len(value) < c["minItems"]:
            errs.append(FieldError.invalid(
                path, value, f"{path} in body should have at least {c['minItems']} items"))
        if c.get("uniqueItems"):
            seen: list[Any] = []
            for v in value:
                if v in seen:
                    errs.append(FieldError.duplicate(path, v))
                    break
                seen.append(v)
    if isinstance(value, dict):
        if "maxProperties" in c and len(value) > c["maxProperties"]:
            errs.append(FieldError.too_many(path, len(value), int(c["maxProperties"])))
        if "minProperties" in c and len(value) < c["minProperties"]:
            errs.append(FieldError.invalid(
                path, value,
                f"{path} in body should have at least {c['minProperties']} properties"))
    for kw in ("oneOf", "anyOf"):
        if kw in c:
            matches = sum(1 for sub in c[kw] if _matches(sub, value))
            if (kw == "oneOf" and matches != 1) or (kw == "anyOf" and matches == 0):
                errs.append(FieldError.invalid(
                    path, value, f"{path} in body must validate {'one' if kw == 'oneOf' else 'any'}"
                    " schema (oneOf)" if kw == "oneOf" else f"{path} in body must validate any"
                    " schema (anyOf)"))
    if "allOf" in c:
        for sub in c["allOf"]:
            errs.extend(value_errors(sub, value, path))
    if "not" in c and _matches(c["not"], value):
        errs.append(FieldError.invalid(path, value, f"{path} in body must not validate the schema"))
    return errs


def _matches(schema: Schema, value: Any) -> bool:
    t = schema.get("type")
    if t:
        want = _TYPE_NAMES.get(t)
        ok = {
            OBJECT: isinstance(value, dict),
            ARRAY: isinstance(value, list),
            STRING: isinstance(value, str),
            INTEGER: isinstance(value, int) and not isinstance(value, bool),
            NUMBER: isinstance(value, int | float) and not isinstance(value, bool),
            BOOLEAN: isinstance(value, bool),
        }.get(want if want is not None else -1, True)
        if not ok:
            return False
    for req in schema.get("required") or ():
        if not isinstance(value, dict) or req not in value:
            return False
    return not value_errors(schema, value, "")


def _fmt(v: Any) -> str:
    from kybernetes.api.errors import format_value

    return format_value(v)


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _bad_b64_at(s: str) -> int:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    for i, ch in enumerate(s):
        if ch not in alphabet:
            return i
    return len(s)


def walk(node: Node, obj: dict[str, Any], *, crd: bool = False,
         skip_root: tuple[str, ...] = ()) -> WalkResult:
    """Check and prune ``obj`` in place against ``node``; report what was wrong."""
    w = _Walker(crd=crd, skip_root=skip_root)
    w.walk(node, obj, "", "")
    return w.res
