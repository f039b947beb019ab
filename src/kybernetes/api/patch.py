"""The three patch types of ``PATCH`` requests, applied as kube-apiserver applies them.

- :func:`json_patch` – RFC 6902 (``application/json-patch+json``);
- :func:`merge_patch` – RFC 7386 (``application/merge-patch+json``);
- :func:`strategic_merge_patch` – Kubernetes' strategic merge patch
  (``application/strategic-merge-patch+json``), steered by the patch strategies and merge
  keys of the schema (:class:`PatchSchema`).

All three are pure: the inputs are never mutated, the result shares nothing with them::

    schema = schema_for(builtin_definitions(), "io.k8s.api.apps.v1.Deployment")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "v2"}]}}}}
    updated = strategic_merge_patch(deployment, patch, schema)

A patch that cannot be used raises :class:`PatchError` with the HTTP status the API server
answers: 400 for a malformed patch document, 422 for a well-formed one that does not apply
to this object. Messages follow evanphx/json-patch and apimachinery's strategicpatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kybernetes.api.schema import Definitions, Schema

_MISSING: Any = object()


class PatchError(Exception):
    """A patch that cannot be applied; ``code`` is the HTTP status (400 or 422)."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- JSON values ------------------------------------------------------------------


def _clone(value: Any) -> Any:
    """A deep copy of a JSON value (faster than copy.deepcopy for plain data)."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _go(value: Any) -> str:
    """A value as Go's ``%v`` prints decoded JSON (``map[k:v]``, ``[a b]``, ``<nil>``)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go(v) for v in value) + "]"
    return str(value)


def _json_kind(value: Any) -> str:
    """The JSON type name Go's decoder uses in "cannot unmarshal X" errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "null"


# -- RFC 6902 JSON patch ------------------------------------------------------------


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply the RFC 6902 operations ``ops`` to ``doc``.

    >>> json_patch({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}])
    {'a': [1, 2]}
    """
    if not isinstance(ops, list):
        raise PatchError(
            f"json: cannot unmarshal {_json_kind(ops)} into Go value of type jsonpatch.Patch",
            400,
        )
    for op in ops:
        if not isinstance(op, dict):
            raise PatchError(
                f"json: cannot unmarshal {_json_kind(op)} into Go value of type "
                "jsonpatch.Operation",
                400,
            )
    result = _clone(doc)
    for op in ops:
        kind = op.get("op")
        handler = _OPS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise PatchError(f"Unexpected kind: {kind if isinstance(kind, str) else 'unknown'}")
        result = handler(result, op, kind)
    return result


def _pointer(op: dict[str, Any], kind: str, field: str = "path") -> tuple[str, list[str]]:
    """The ``path`` (or ``from``) of an operation and its unescaped reference tokens."""
    path = op.get(field)
    if not isinstance(path, str):
        raise PatchError(f"{kind} operation failed to decode {field}: missing value")
    if path == "":
        return path, []
    if not path.startswith("/"):
        raise PatchError(f'{kind} operation does not apply: invalid JSON pointer: "{path}"')
    tokens = path[1:].split("/")
    for token in tokens:
        rest = token.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise PatchError(f'{kind} operation does not apply: invalid JSON pointer: "{path}"')
    return path, [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _value(op: dict[str, Any], kind: str) -> Any:
    if "value" not in op:
        raise PatchError(f"{kind} operation, missing value field: missing value")
    return _clone(op["value"])


def _array_index(token: str, size: int, kind: str, path: str, *, insert: bool = False) -> int:
    """The array index a token names: digits without leading zeros, in bounds."""
    if insert and token == "-":
        return size
    if not token.isdigit() or not token.isascii() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(
            f"error in {kind} for path: '{path}': value was not a proper array index: '{token}'"
        )
    index = int(token)
    if index > size or (index == size and not insert):
        raise PatchError(
            f"error in {kind} for path: '{path}': Unable to access invalid index: {index}: "
            "invalid index referenced"
        )
    return index


def _parent(doc: Any, tokens: list[str], kind: str, path: str, what: str = "path") -> Any:
    """The container holding the last token of ``tokens``."""
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif (
            isinstance(node, list)
            and token.isdigit()
            and token.isascii()
            and (token == "0" or token[0] != "0")
            and int(token) < len(node)
        ):
            node = node[int(token)]
        else:
            node = _MISSING
            break
    if not isinstance(node, dict | list):
        raise PatchError(
            f'{kind} operation does not apply: doc is missing {what}: "{path}": missing value'
        )
    return node


def _get(doc: Any, tokens: list[str], kind: str, path: str, what: str = "path") -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, kind, path, what)
    key = tokens[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchError(
                f'{kind} operation does not apply: doc is missing {what}: "{path}": missing value'
            )
        return parent[key]
    return parent[_array_index(key, len(parent), kind, path)]


def _add_at(doc: Any, tokens: list[str], value: Any, kind: str, path: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, kind, path)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent.insert(_array_index(tokens[-1], len(parent), kind, path, insert=True), value)
    return doc


def _remove_at(doc: Any, tokens: list[str], kind: str, path: str, what: str = "path") -> Any:
    """Remove and return the value at ``tokens`` (not the root)."""
    if not tokens:
        raise PatchError(f"{kind} operation does not apply: cannot remove the whole document")
    parent = _parent(doc, tokens, kind, path, what)
    key = tokens[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchError(
                f"error in {kind} for path: '{path}': Unable to remove nonexistent key: {key}: "
                "missing value"
            )
        return parent.pop(key)
    return parent.pop(_array_index(key, len(parent), kind, path))


def _op_add(doc: Any, op: dict[str, Any], kind: str) -> Any:
    path, tokens = _pointer(op, kind)
    return _add_at(doc, tokens, _value(op, kind), kind, path)


def _op_remove(doc: Any, op: dict[str, Any], kind: str) -> Any:
    path, tokens = _pointer(op, kind)
    _remove_at(doc, tokens, kind, path)
    return doc


def _op_replace(doc: Any, op: dict[str, Any], kind: str) -> Any:
    path, tokens = _pointer(op, kind)
    value = _value(op, kind)
    if not tokens:
        return value
    parent = _parent(doc, tokens, kind, path)
    key = tokens[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchError(
                f"replace operation does not apply: doc is missing key: {path}: missing value"
            )
        parent[key] = value
    else:
        parent[_array_index(key, len(parent), kind, path)] = value
    return doc


def _op_move(doc: Any, op: dict[str, Any], kind: str) -> Any:
    source, from_tokens = _pointer(op, kind, "from")
    path, tokens = _pointer(op, kind)
    if path == source:
        _get(doc, from_tokens, kind, source, "from path")
        return doc
    if path.startswith(source + "/"):
        raise PatchError(
            f'move operation does not apply: "from" {source} is a prefix of "path" {path}'
        )
    value = _remove_at(doc, from_tokens, kind, source, "from path")
    return _add_at(doc, tokens, value, kind, path)


def _op_copy(doc: Any, op: dict[str, Any], kind: str) -> Any:
    source, from_tokens = _pointer(op, kind, "from")
    path, tokens = _pointer(op, kind)
    value = _clone(_get(doc, from_tokens, kind, source, "from path"))
    return _add_at(doc, tokens, value, kind, path)


def _op_test(doc: Any, op: dict[str, Any], kind: str) -> Any:
    path, tokens = _pointer(op, kind)
    expected = _value(op, kind)
    if not _json_equal(_get(doc, tokens, kind, path), expected):
        raise PatchError(f"testing value {path} failed: test failed")
    return doc


_OPS: dict[str, Callable[[Any, dict[str, Any], str], Any]] = {
    "add": _op_add,
    "remove": _op_remove,
    "replace": _op_replace,
    "move": _op_move,
    "copy": _op_copy,
    "test": _op_test,
}


# -- RFC 7386 JSON merge patch ------------------------------------------------------


def merge_patch(doc: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: objects merge, ``null`` deletes, the rest replaces.

    >>> merge_patch({"a": "b", "c": {"d": "e"}}, {"a": None, "c": {"f": "g"}})
    {'c': {'d': 'e', 'f': 'g'}}
    """
    if not isinstance(patch, dict):
        return _clone(patch)
    return _merge_owned(_clone(doc) if isinstance(doc, dict) else {}, patch)


def _merge_owned(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            target[key] = _merge_owned(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = _clone(value)
    return target


# -- schema navigation ------------------------------------------------------------


class PatchSchema:
    """One node of the schema definitions, as the strategic merge patch reads it.

    ``strategy`` and ``merge_key`` come from the property that led here (the
    ``x-kubernetes-patch-*`` extensions sit next to the ``$ref``), so they describe the
    field, e.g. the ``containers`` list of a PodSpec::

        pod_spec = schema_for(defs, "io.k8s.api.core.v1.PodSpec")
        containers = pod_spec.field("containers")  # strategy ["merge"], merge_key "name"
        image = containers.items().field("image")
    """

    __slots__ = ("_defs", "_merge_key", "_node", "_strategy")

    def __init__(
        self,
        defs: Definitions,
        node: Schema,
        *,
        strategy: list[str] | None = None,
        merge_key: str | None = None,
    ) -> None:
        self._defs = defs
        self._node = node
        self._strategy = strategy or []
        self._merge_key = merge_key

    @classmethod
    def _of_property(cls, defs: Definitions, prop: Schema) -> PatchSchema:
        resolved = defs.resolve(prop) or {}
        strategy = prop.get(
            "x-kubernetes-patch-strategy", resolved.get("x-kubernetes-patch-strategy")
        )
        merge_key = prop.get(
            "x-kubernetes-patch-merge-key", resolved.get("x-kubernetes-patch-merge-key")
        )
        return cls(
            defs,
            resolved,
            strategy=[s.strip() for s in strategy.split(",") if s.strip()]
            if isinstance(strategy, str)
            else [],
            merge_key=merge_key if isinstance(merge_key, str) else None,
        )

    @property
    def strategy(self) -> list[str]:
        """The patch strategies of this field, e.g. ``["merge", "retainKeys"]``."""
        return list(self._strategy)

    @property
    def merge_key(self) -> str | None:
        """The key that identifies elements of this list field (``"name"``, ...)."""
        return self._merge_key

    def field(self, name: str) -> PatchSchema | None:
        """The schema of property ``name`` (or of a map's values); None if unknown."""
        props = self._node.get("properties")
        if isinstance(props, dict) and isinstance(props.get(name), dict):
            return PatchSchema._of_property(self._defs, props[name])
        extra = self._node.get("additionalProperties")
        if isinstance(extra, dict):
            return PatchSchema._of_property(self._defs, extra)
        return None

    def items(self) -> PatchSchema | None:
        """The schema of the elements of this list; None if unknown."""
        items = self._node.get("items")
        if isinstance(items, dict):
            return PatchSchema._of_property(self._defs, items)
        return None

    def __repr__(self) -> str:
        return f"PatchSchema(strategy={self._strategy!r}, merge_key={self._merge_key!r})"


def schema_for(defs: Definitions, definition: str) -> PatchSchema:
    """The patch schema of a named definition, e.g. ``"io.k8s.api.core.v1.Pod"``."""
    node = defs.resolve(defs.get(definition))
    return PatchSchema(defs, node or {})


# -- strategic merge patch ----------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder"
_DELETE_FROM = "$deleteFromPrimitiveList"
_BAD_RETAIN_KEYS = "invalid patch format of retainKeys"
_BAD_SET_ORDER = "invalid patch format of setElementOrder list"
_BAD_PRIMITIVE_LIST = "invalid patch format of primitive list"


def strategic_merge_patch(
    doc: dict[str, Any], patch: dict[str, Any], schema: PatchSchema | None
) -> dict[str, Any]:
    """Apply a strategic merge patch as kube-apiserver does.

    Lists whose field has the ``merge`` strategy merge by their merge key (lists of
    primitives merge as sets); other lists are replaced. ``null`` deletes a key. The
    directives ``$patch`` (replace, delete, merge), ``$retainKeys``,
    ``$setElementOrder/<field>`` and ``$deleteFromPrimitiveList/<field>`` are honoured.
    Where ``schema`` is None or does not know a field, that subtree merges like a JSON
    merge patch (lists replace).
    """
    if not isinstance(doc, dict) or not isinstance(patch, dict):
        raise PatchError("invalid JSON document", 400)
    return _merge_map(_clone(doc), patch, schema)


def _no_merge_key(element: Any, key: str) -> PatchError:
    return PatchError(f"map: {_go(element)} does not contain declared merge key: {key}", 400)


def _directive_field(key: str, prefix: str, error: str) -> str:
    """``$setElementOrder/containers`` -> ``containers``."""
    head, sep, tail = key.partition("/")
    if head != prefix or not sep:
        raise PatchError(error, 400)
    return tail


def _merge_map(
    original: dict[str, Any], patch: dict[str, Any], schema: PatchSchema | None
) -> dict[str, Any]:
    """Merge ``patch`` into ``original`` (owned by the caller, updated in place)."""
    if _DIRECTIVE in patch:
        directive = patch[_DIRECTIVE]
        rest = {k: v for k, v in patch.items() if k != _DIRECTIVE}
        if directive == "replace":
            return _merge_map({}, rest, schema)
        if directive == "delete":
            return {}
        if directive != "merge":
            raise PatchError(f"unknown patch type: {_go(directive)} in map: {_go(patch)}", 400)
        patch = rest

    if _RETAIN_KEYS in patch:
        _retain_keys(original, patch)

    handled: set[str] = set()
    for key, order in patch.items():
        if key.startswith(_SET_ORDER):
            field = _directive_field(key, _SET_ORDER, _BAD_SET_ORDER)
            if _set_element_order(original, patch, field, order, schema):
                handled.add(field)

    deletions: list[tuple[str, list[Any]]] = []
    for key, value in patch.items():
        if key == _RETAIN_KEYS or key in handled or key.startswith(_SET_ORDER):
            continue
        if key.startswith(_DELETE_FROM):
            field = _directive_field(key, _DELETE_FROM, _BAD_PRIMITIVE_LIST)
            if not isinstance(value, list):
                raise PatchError(_BAD_PRIMITIVE_LIST, 400)
            deletions.append((field, value))
        elif value is None:
            original.pop(key, None)
        else:
            sub = schema.field(key) if schema is not None else None
            original[key] = _merge_value(original.get(key), value, sub)

    # Deletions run last, so a patch that both adds and deletes ends with the deletion.
    for field, values in deletions:
        current = original.get(field)
        if isinstance(current, list):
            original[field] = [v for v in current if not any(_json_equal(v, d) for d in values)]
    return original


def _merge_value(current: Any, value: Any, sub: PatchSchema | None) -> Any:
    """The new value of a field: ``value`` merged into ``current`` (owned)."""
    if isinstance(value, dict):
        if sub is not None and "replace" in sub.strategy:
            return _merge_map({}, value, sub)
        return _merge_map(current if isinstance(current, dict) else {}, value, sub)
    if isinstance(value, list):
        if sub is not None and "merge" in sub.strategy:
            return _merge_list(current if isinstance(current, list) else [], value, sub)
        if sub is None:
            return _clone(value)
        items = sub.items()
        return [_merge_map({}, v, items) if isinstance(v, dict) else _clone(v) for v in value]
    return value


def _retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """Drop the keys of ``original`` missing from the ``$retainKeys`` list."""
    keep = patch[_RETAIN_KEYS]
    if not isinstance(keep, list):
        raise PatchError(_BAD_RETAIN_KEYS, 400)
    for key, value in patch.items():
        if value is None or key == _RETAIN_KEYS or key.startswith((_DELETE_FROM, _SET_ORDER)):
            continue
        if key not in keep:
            raise PatchError(_BAD_RETAIN_KEYS, 400)
    for key in [k for k in original if k not in keep]:
        del original[key]


def _matches(a: Any, b: Any, key: str | None) -> bool:
    """Same list element: same merge-key value (maps) or equal values (primitives)."""
    if a is b:
        return True
    if key is None:
        return _json_equal(a, b)
    return (
        isinstance(a, dict)
        and isinstance(b, dict)
        and key in a
        and key in b
        and _json_equal(a[key], b[key])
    )


def _position(items: list[Any], item: Any, key: str | None) -> int | None:
    for i, candidate in enumerate(items):
        if _matches(item, candidate, key):
            return i
    return None


def _ordered(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    key: str | None,
) -> list[Any]:
    """Interleave patched and server-only elements as apimachinery does.

    Patched elements follow ``patch_order``, the others keep their live order; while both
    remain, a server-only element goes first only if it preceded the patched one in the
    live list. So elements new to the list land before the remaining server-only ones.
    """

    def by(order: list[Any]) -> Callable[[Any], int]:
        def rank(item: Any) -> int:
            pos = _position(order, item, key)
            return len(order) if pos is None else pos

        return rank

    right = sorted(patch_items, key=by(patch_order))
    left = sorted(server_only, key=by(server_order))
    out: list[Any] = []
    i = j = 0
    while i < len(left) and j < len(right):
        li = _position(server_order, left[i], key)
        ri = _position(server_order, right[j], key)
        if li is not None and ri is not None and li < ri:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out + left[i:] + right[j:]


def _partition(
    merged: list[Any], present: list[Any], key: str | None
) -> tuple[list[Any], list[Any]]:
    inside = [v for v in merged if _position(present, v, key) is not None]
    outside = [v for v in merged if _position(present, v, key) is None]
    return inside, outside


def _merge_list(original: list[Any], patch: list[Any], sub: PatchSchema) -> list[Any]:
    """Merge a list whose field has the ``merge`` strategy (``original`` is owned)."""
    if not original and not patch:
        return original
    if any(isinstance(v, list) for v in (*original, *patch)):
        raise PatchError("lists of lists are not supported")
    if any(isinstance(v, dict) for v in (*original, *patch)):
        return _merge_list_of_maps(original, patch, sub)
    merged: list[Any] = []
    for value in (*original, *patch):
        if _position(merged, value, None) is None:
            merged.append(value)
    inside, outside = _partition(merged, patch, None)
    return _ordered(inside, outside, patch, original, None)


def _merge_list_of_maps(original: list[Any], patch: list[Any], sub: PatchSchema) -> list[Any]:
    key = sub.merge_key
    if key is None:
        raise PatchError("cannot merge lists without merge key for type map")
    items = sub.items()
    plain: list[dict[str, Any]] = []
    replace = False
    for element in patch:
        if not isinstance(element, dict):
            raise PatchError(
                f"list element {_go(element)} is not a map; the list merges by key {key}", 400
            )
        if _DIRECTIVE not in element:
            plain.append(element)
            continue
        directive = element[_DIRECTIVE]
        if directive == "delete":
            if key not in element:
                raise _no_merge_key(element, key)
            original = [v for v in original if not _matches(v, element, key)]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            rest = {k: v for k, v in element.items() if k != _DIRECTIVE}
            if rest:
                plain.append(rest)
        else:
            raise PatchError(f"unknown patch type: {_go(directive)} in map: {_go(element)}", 400)
    if replace:
        return [_merge_map({}, v, items) for v in plain]

    merged = list(original)
    for element in plain:
        if key not in element:
            raise _no_merge_key(element, key)
        pos = _position(merged, element, key)
        if pos is None:
            merged.append(_merge_map({}, element, items))
        else:
            merged[pos] = _merge_map(merged[pos], element, items)
    inside, outside = _partition(merged, plain, key)
    return _ordered(inside, outside, plain, original, key)


def _set_element_order(
    original: dict[str, Any],
    patch: dict[str, Any],
    field: str,
    order: Any,
    schema: PatchSchema | None,
) -> bool:
    """Merge the list ``field`` and order it by ``$setElementOrder/<field>``.

    Returns whether the field is done; a field the schema cannot merge is left to the
    ordinary merge (the patch list replaces it, in its own order).
    """
    if not isinstance(order, list):
        raise PatchError(_BAD_SET_ORDER, 400)
    sub = schema.field(field) if schema is not None else None
    if sub is None or "merge" not in sub.strategy:
        return False
    patch_list = patch.get(field, _MISSING)
    if patch_list is not _MISSING and not isinstance(patch_list, list):
        return False
    key = sub.merge_key
    if key is not None:
        for entry in order:
            if not isinstance(entry, dict) or key not in entry:
                raise _no_merge_key(entry, key)
    if patch_list is not _MISSING:
        _check_order(patch_list, order, key)

    current = original.get(field)
    current = current if isinstance(current, list) else None
    if patch_list is _MISSING:
        if current is None:
            return True
        merged = current
    else:
        merged = _merge_list(current if current is not None else [], patch_list, sub)
    inside, outside = _partition(merged, order, key)
    original[field] = _ordered(inside, outside, order, current or [], key)
    return True


def _check_order(patch_list: list[Any], order: list[Any], key: str | None) -> None:
    """The patch list must be a subsequence of the ``$setElementOrder`` list."""
    pending = [v for v in patch_list if not (isinstance(v, dict) and _DIRECTIVE in v)]
    if key is not None:
        for v in pending:
            if not isinstance(v, dict) or key not in v:
                raise _no_merge_key(v, key)
    at = 0
    for entry in order:
        if at < len(pending) and _matches(pending[at], entry, key):
            at += 1
    if at < len(pending):
        raise PatchError(
            f"The order in patch list:\n{_go(patch_list)}\n doesn't match {_SET_ORDER} list:\n"
            f"{_go(order)}\n",
            400,
        )
