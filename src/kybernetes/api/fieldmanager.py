"""Server-side apply and ``metadata.managedFields``, as kube-apiserver 1.32 keeps them.

Field sets are held in the wire shape of ``FieldsV1``: a dict from serialized path
elements (``f:name``, ``k:{"name":"c"}``, ``v:"x"``, ``i:0``) to the subtree below them.
``{}`` is a path that is itself owned; ``"."`` marks an owned path that also has owned
children. Stored entries therefore decode for free, and encoding is a sorted copy.

Two entry points change objects (the schema is a compiled :class:`Node`)::

    # create / update / patch: record what ``manager`` changed
    update_managed_fields(old, new, manager="kubectl-edit", schema=node, now=t)

    # PATCH application/apply-patch+yaml: merge, prune, detect conflicts
    try:
        obj = apply(live, applied, manager="kubectl", force=False, schema=node, now=t)
    except ApplyConflict as e:
        raise e.status_error()

Semantics follow sigs.k8s.io/structured-merge-diff v4 and apiserver's fieldmanager
chain (stripped metadata, reset fields per subresource, ``before-first-apply``,
``ancient-changes`` capping, the kubectl client-side-apply upgrade).
"""

from __future__ import annotations

import functools
import json
import re
import time as _time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from kybernetes.api import structural
from kybernetes.api.errors import StatusError
from kybernetes.api.schema import builtin_definitions
from kybernetes.api.structural import (
    ANY,
    ARRAY,
    BOOLEAN,
    INT_OR_STRING,
    INTEGER,
    NUMBER,
    OBJECT,
    QUANTITY,
    STRING,
    Compiler,
    Node,
)

FieldSet = dict[str, "FieldSet"]
"""A set of field paths in ``FieldsV1`` shape (see the module docstring)."""
Obj = dict[str, Any]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_UPDATE_MANAGERS = 10
BEFORE_FIRST_APPLY = "before-first-apply"
ANCIENT_CHANGES = "ancient-changes"

# metadata paths no entry ever owns (apiserver's stripMetaManager)
_STRIP_META = frozenset({
    "f:name", "f:namespace", "f:creationTimestamp", "f:selfLink", "f:uid",
    "f:clusterName", "f:generation", "f:managedFields", "f:resourceVersion",
})
# keys compare skips: never owned at the root, or not part of the object proper
_ROOT_SKIP = frozenset({"apiVersion", "kind"})
_ROOT_META_SKIP = frozenset({
    "managedFields", "name", "namespace", "creationTimestamp", "selfLink", "uid",
    "clusterName", "generation", "resourceVersion",
})
_META_SKIP = frozenset({"managedFields"})
_NO_SKIP: frozenset[str] = frozenset()
# metadata the server owns: apply keeps the live values
_SERVER_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp",
                "generation", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
# struct fields that are not pointers in the Go types (present in a zero object)
_NON_POINTER: dict[str, tuple[str, ...]] = {
    "DeploymentSpec": ("strategy", "template"),
    "StatefulSetSpec": ("updateStrategy", "template"),
    "DaemonSetSpec": ("updateStrategy", "template"),
    "ReplicaSetSpec": ("template",),
    "JobSpec": ("template",),
    "CronJobSpec": ("jobTemplate",),
    "PodTemplate": ("template",),
    "Container": ("resources",),
    "EphemeralContainer": ("resources",),
    "PersistentVolumeClaimSpec": ("resources",),
    "ServiceStatus": ("loadBalancer",),
    "IngressStatus": ("loadBalancer",),
    "NodeStatus": ("daemonEndpoints", "nodeInfo"),
    "NodeDaemonEndpoints": ("kubeletEndpoint",),
    "HorizontalPodAutoscalerSpec": ("scaleTargetRef",),
}
# types the OpenAPI-to-SMD conversion treats as one atomic value
_ATOMIC_TYPES = frozenset({"RawExtension", "Time", "MicroTime"})

_ABSENT: Any = object()
_DROP: Any = object()
_NO_DEFAULT: Any = object()
_LEAF, _MAP, _LIST = 0, 1, 2
_DEDUCED = Node()
_DEDUCED.preserve = True
_HTML = re.compile("[<>&\u2028\u2029]")
_PLAIN = re.compile('[^"\\\\\x00-\x1f<>&\u2028\u2029]*\\Z')
_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


class ApplyConflict(Exception):
    """Fields the applied configuration changes that other managers own (HTTP 409).

    ``conflicts`` holds ``(manager, field_path)`` pairs, the path printed as upstream does
    (``.spec.template.spec.containers[name="nginx"].image``); ``causes`` are the matching
    ``metav1.StatusCause`` dicts.
    """

    def __init__(self, conflicts: list[tuple[str, str]], causes: list[dict[str, str]],
                 message: str) -> None:
        super().__init__(message)
        self.conflicts = conflicts
        self.causes = causes
        self.message = message

    def status_error(self) -> StatusError:
        """The 409 ``metav1.Status`` kube-apiserver answers with."""
        return StatusError(409, "Conflict", self.message, {"causes": self.causes})


class _TypedError(Exception):
    """A value that does not fit the schema (missing list key, duplicate key, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []  # path elements, innermost first

    def text(self) -> str:
        if not self.path:
            return self.message
        return "".join(reversed(self.path)) + ": " + self.message


@dataclass(slots=True)
class _Entry:
    manager: str
    operation: str
    api_version: str
    time: str | None
    fields: FieldSet
    subresource: str
    encoded: FieldSet | None = None  # canonical fieldsV1 to reuse while fields are unchanged

    def ident(self) -> tuple[str, str, str, str]:
        return _ident(self.manager, self.operation, self.subresource, self.api_version)

    def ident_json(self) -> str:
        """The manager identifier upstream builds (``BuildManagerIdentifier``)."""
        parts = []
        if self.manager:
            parts.append('"manager":' + _go_json(self.manager))
        if self.operation:
            parts.append('"operation":' + _go_json(self.operation))
        if self.operation != "Apply" and self.api_version:
            parts.append('"apiVersion":' + _go_json(self.api_version))
        if self.subresource:
            parts.append('"subresource":' + _go_json(self.subresource))
        return "{" + ",".join(parts) + "}"

    def printed(self) -> str:
        """How conflict messages name the manager (``printManager``)."""
        out = _go_quote(self.manager)
        if self.subresource:
            out += f" with subresource {_go_quote(self.subresource)}"
        if self.operation == "Update":
            out += f" using {self.api_version}"
        return out


_Managed = dict[tuple[str, str, str, str], _Entry]


def _ident(manager: str, operation: str, subresource: str,
           api_version: str) -> tuple[str, str, str, str]:
    return (manager, operation, subresource, "" if operation == "Apply" else api_version)


# -- public API -----------------------------------------------------------------------


def managed_time(now_epoch: float) -> str:
    """``now_epoch`` as the RFC 3339 seconds timestamp managedFields entries carry."""
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(now_epoch))


def fields_v1(obj: Obj, schema: Node) -> FieldSet:
    """The ``FieldsV1`` of every field set in ``obj``, as an applier of ``obj`` would own.

    Server-managed metadata (name, uid, ...), ``apiVersion`` and ``kind`` are left out, as
    in managedFields entries.

    >>> fields_v1({"metadata": {"labels": {"app": "x"}}}, schema)
    {'f:metadata': {'f:labels': {'f:app': {}}}}
    """
    return _encode(_strip(_set_root(schema, obj, allow_dups=True)))


def update_managed_fields(old: Obj | None, new: Obj, *, manager: str,
                          operation: str = "Update", subresource: str = "", schema: Node,
                          now: str, reset: Iterable[str] | None = None) -> None:
    """Record a non-apply write in ``new["metadata"]["managedFields"]`` (in place).

    ``old`` is the stored object (``None`` on create). ``manager`` gains every field it
    added or changed; other managers lose the fields that changed or were removed.
    ``reset`` names the dotted paths the strategy resets for this subresource (default:
    ``status`` for the main resource, ``spec`` for ``status``; pass ``()`` for a custom
    resource without a status subresource); they are owned by nobody here.
    Client-sent managedFields are honoured when valid, ``[]`` or ``[{}]`` clears them.
    """
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        return
    old_meta = old.get("metadata") if old is not None else None
    old_raw = old_meta.get("managedFields") if isinstance(old_meta, dict) else None
    provided = meta.pop("managedFields", _ABSENT)
    is_create = old is None or not (isinstance(old_meta, dict) and old_meta.get("uid"))

    managed: _Managed
    if subresource:
        managed = _decode_or_empty(old_raw, trusted=True)
    elif provided is not _ABSENT and _is_reset(provided):
        managed = {}
    elif provided is _ABSENT or provided is None or provided == old_raw:
        managed = _decode_or_empty(old_raw, trusted=True)
    else:
        try:
            managed = _decode(provided, trusted=False)
        except ValueError:
            managed = {}
        if not managed:
            managed = _decode_or_empty(old_raw, trusted=True)

    if not managed and not is_create:
        return  # tracking only ever starts on create (skipNonAppliedManager)
    api_version = str(new.get("apiVersion") or (old or {}).get("apiVersion") or "")
    ignored = _reset_paths(subresource, reset)
    key = _CREATES.key(schema, new, meta, manager, operation, subresource, api_version,
                       ignored) if old is None and not managed else None
    if key is not None:
        fields = _CREATES.get(schema, key)
        if fields is not None:  # an object just like one created before
            if fields:
                entry = _Entry(manager or "unknown", operation, api_version, now, fields,
                               subresource)
                entry.encoded = _copy_set(fields)
                _store(meta, {entry.ident(): entry})
            return
    try:
        changed, removed = _compare_root(schema, old if old is not None else {}, new)
    except _TypedError:
        if old_raw:
            meta["managedFields"] = old_raw  # UpdateNoErrors keeps the live entries
        return
    _record_update(managed, changed, removed, ignored, manager=manager or "unknown",
                   operation=operation, subresource=subresource, api_version=api_version,
                   now=now)
    _cap_update_managers(managed)
    _store(meta, managed)
    if key is not None:
        entries = meta.get("managedFields") or ()
        _CREATES.put(key, _copy_set(entries[0]["fieldsV1"]) if entries else {})


def _copy_set(t: FieldSet) -> FieldSet:
    return {k: _copy_set(v) if v else {} for k, v in t.items()}


class _CreateMemo:
    """The fields a create records, by the object less the metadata nobody owns.

    Objects made from one template (a Deployment's pods, a Job's, a load generator's)
    differ only there, and the walk that finds their fields is most of the cost of
    tracking a create. A kind whose creates rarely repeat (events name the object they
    are about) stops being looked up after a while."""

    SIZE = 512
    TRIES = 64

    def __init__(self) -> None:
        self.fields: dict[bytes, FieldSet] = {}
        self.counts: dict[int, list[int]] = {}
        """Per schema: [lookups, hits]."""
        self.schemas: dict[int, Node] = {}
        """The schemas keys name by id, held so that no other schema gets their id."""

    def key(self, schema: Node, new: Obj, meta: Obj, manager: str, operation: str,
            subresource: str, api_version: str, ignored: tuple[tuple[str, ...], ...]
            ) -> bytes | None:
        counts = self.counts.get(id(schema))
        if counts is not None and counts[0] >= self.TRIES and counts[1] * 4 < counts[0]:
            return None
        self.schemas.setdefault(id(schema), schema)
        try:
            return orjson.dumps([
                id(schema), manager, operation, subresource, api_version, ignored,
                {k: v for k, v in new.items() if k != "metadata"},
                {k: v for k, v in meta.items() if k not in _ROOT_META_SKIP}])
        except TypeError:
            return None

    def get(self, schema: Node, key: bytes) -> FieldSet | None:
        counts = self.counts.setdefault(id(schema), [0, 0])
        counts[0] += 1
        fields = self.fields.get(key)
        if fields is not None:
            counts[1] += 1
        return fields

    def put(self, key: bytes, fields: FieldSet) -> None:
        if len(self.fields) >= self.SIZE:
            del self.fields[next(iter(self.fields))]
        self.fields[key] = fields


_CREATES = _CreateMemo()


def apply(live: Obj | None, applied: Obj, *, manager: str, force: bool, schema: Node,
          now: str, subresource: str = "", reset: Iterable[str] | None = None) -> Obj:
    """Server-side apply ``applied`` over ``live`` (``None`` when creating); return the result.

    The applied configuration is merged into the live object (maps and list-maps by key,
    atomic lists and scalars replaced); fields this manager applied before, omits now,
    and nobody else owns are removed; its ``Apply`` entry becomes exactly the applied
    field set. Changing a value another manager owns raises :class:`ApplyConflict`
    unless ``force``, which moves the ownership. Server-managed metadata (uid,
    resourceVersion, creationTimestamp, ...) keeps the live values; a resourceVersion
    precondition in ``applied`` is for the caller to check first. ``StatusError`` is
    raised for configurations upstream rejects (managedFields set, duplicate list keys).
    """
    ameta = applied.get("metadata")
    if isinstance(ameta, dict) and ameta.get("managedFields") is not None:
        raise StatusError.bad_request("metadata.managedFields must be nil")
    ignored = _reset_paths(subresource, reset)
    api_version = str(applied.get("apiVersion") or (live or {}).get("apiVersion") or "")
    manager = manager or "unknown"

    base: Obj
    if live is not None:
        base = _copy(live)
        bmeta = base.get("metadata")
        raw = bmeta.pop("managedFields", None) if isinstance(bmeta, dict) else None
        try:
            managed = _decode(raw, trusted=True)
        except ValueError as e:
            raise StatusError(500, "", f"failed to decode managed fields: {e}") from None
    else:
        base, managed = {}, {}

    if not managed and live is not None:
        # the object predates tracking: what is there belongs to "before-first-apply"
        try:
            changed, removed = _compare_root(schema, {}, base)
        except _TypedError as e:
            raise _typed_error("live", base, e) from None
        _record_update(managed, changed, removed, ignored, manager=BEFORE_FIRST_APPLY,
                       operation="Update", subresource=subresource,
                       api_version=api_version, now=now)

    try:
        config_set = _rdiff(_set_root(schema, applied, allow_dups=False), ignored)
        merged = _merge_root(schema, base, applied)
    except _TypedError as e:
        raise _typed_error("patch", applied, e) from None
    if live is not None:
        _restore_server_meta(merged, live)

    self_id = _ident(manager, "Apply", subresource, "")
    last = managed.get(self_id)
    if last is not None and last.fields:
        owned = [config_set] + [e.fields for i, e in managed.items() if i != self_id]
        try:
            _prune_children(schema, merged, last.fields, owned, root=True)
        except _TypedError as e:
            raise _typed_error("live", merged, e) from None

    try:
        changed, removed = _compare_root(schema, base, merged)
    except _TypedError as e:
        raise _typed_error("live", base, e) from None
    object_changed = bool(changed or removed)
    changed, removed = _rdiff(changed, ignored), _rdiff(removed, ignored)
    conflicts = {i: c for i, e in managed.items()
                 if i != self_id and (c := _intersect(e.fields, changed))}
    if conflicts and not force:
        if manager == "kubectl":  # upgrade from client-side apply (lastAppliedManager)
            allowed = _allowed_from_last_applied(schema, live, api_version)
            if allowed is not None:
                conflicts = {i: d for i, c in conflicts.items() if (d := _diff(c, allowed))}
        if conflicts:
            raise _conflict_error(conflicts, managed)
    for i in list(managed):
        if i == self_id:
            continue
        other = managed[i]
        fields = _diff(_diff(other.fields, changed), removed)
        if fields is not other.fields:
            other.fields, other.encoded = fields, None
        if not fields:
            del managed[i]

    own = _strip(config_set)
    if own:
        managed[self_id] = _Entry(manager, "Apply", api_version,
                                  now if object_changed else (last.time if last else None),
                                  own, subresource)
    else:
        managed.pop(self_id, None)
    meta = merged.setdefault("metadata", {})
    _store(meta, managed)
    if manager == "kubectl":
        _sync_last_applied(merged, applied)
    return merged


# -- schema shapes ----------------------------------------------------------------------


def _shape(node: Node, v: Any) -> int:
    if isinstance(v, dict):
        kind = node.kind
        if kind in (OBJECT, ANY) and node.map_type != "atomic" \
                and node.go_name not in _ATOMIC_TYPES:
            return _MAP
        return _LEAF
    if isinstance(v, list):
        if node.kind == ARRAY and (node.list_type == "set" or
                                   (node.list_type == "map" and node.list_keys)):
            return _LIST
        return _LEAF
    return _LEAF


def _pair_shape(node: Node, lv: Any, rv: Any) -> int:
    ls = -1 if lv is _ABSENT or lv is None else _shape(node, lv)
    rs = -1 if rv is _ABSENT or rv is None else _shape(node, rv)
    if ls == -1:
        return _LEAF if rs == -1 else rs
    if rs == -1 or rs == ls:
        return ls
    return _LEAF


def _null_is_container(node: Node) -> bool:
    """Whether a null here is an empty map/list (owned by nobody) rather than a scalar."""
    if node.kind in (OBJECT, ANY):
        return node.map_type != "atomic" and node.go_name not in _ATOMIC_TYPES
    return node.kind == ARRAY and (node.list_type == "set" or
                                   (node.list_type == "map" and bool(node.list_keys)))


def _field_node(node: Node, key: str) -> Node:
    props = node.props
    if props is not None:
        child = props.get(key)
        if child is not None:
            return child
    addl = node.additional
    return addl if addl is not None else _DEDUCED


def _root_node(schema: Node, key: str) -> Node:
    if key == "metadata":
        child = schema.props.get("metadata") if schema.props is not None else None
        if child is None or child.go_name != "ObjectMeta":
            return _object_meta()
        return child
    return _field_node(schema, key)


def _declared(node: Node, key: str, root: bool) -> bool:
    if node.props is not None and key in node.props:
        return True
    return root and key in ("apiVersion", "kind", "metadata")


@functools.cache
def _object_meta() -> Node:
    return Compiler(builtin_definitions()).definition(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")


def _key_default(item: Node, key: str) -> Any:
    props = item.props
    if props is not None:
        child = props.get(key)
        if child is not None and child.default is not structural._MISSING:
            return child.default
    if key == "protocol" and item.go_name in ("ContainerPort", "ServicePort"):
        return "TCP"  # +default="TCP" in the 1.32 OpenAPI
    return _NO_DEFAULT


def _item_pe(node: Node, item_node: Node, it: Any, i: int) -> str:
    """The path element of one list item: ``k:{...}`` for list-maps, ``v:...`` for sets."""
    if node.list_type == "map":
        if not isinstance(it, dict):
            what = "a null element" if it is None else "non-map elements"
            raise _TypedError(f"element {i}: associative list with keys may not have {what}")
        keys = node.list_keys
        if len(keys) == 1:
            v = it.get(keys[0], _ABSENT)
            if v is _ABSENT:
                v = _missing_key(item_node, keys[0], i)
            return "k:{" + _go_json(keys[0]) + ":" + _go_json(v) + "}"
        parts = []
        for k in sorted(keys):
            v = it.get(k, _ABSENT)
            if v is _ABSENT:
                v = _missing_key(item_node, k, i)
            parts.append(_go_json(k) + ":" + _go_json(v))
        return "k:{" + ",".join(parts) + "}"
    if isinstance(it, dict):
        raise _TypedError(f"element {i}: associative list without keys has an element "
                          "that's a map type")
    if isinstance(it, list):
        raise _TypedError(f"element {i}: not supported: associative list with lists as "
                          "elements")
    if it is None:
        raise _TypedError(f"element {i}: associative list without keys has an element "
                          "that's an explicit null")
    return "v:" + _go_json(it)


def _missing_key(item_node: Node, key: str, i: int) -> Any:
    v = _key_default(item_node, key)
    if v is _NO_DEFAULT:
        raise _TypedError(f"element {i}: associative list with keys has an element that omits "
                          f"key field {_go_quote(key)} (and doesn't have default value)")
    return v


def _index(node: Node, items: list[Any]) -> dict[str, list[Any]]:
    item_node = node.items or _DEDUCED
    out: dict[str, list[Any]] = {}
    for i, it in enumerate(items):
        pe = _item_pe(node, item_node, it, i)
        bucket = out.get(pe)
        if bucket is None:
            out[pe] = [it]
        else:
            bucket.append(it)
    return out


# -- zero values of built-in types ---------------------------------------------------

_ZERO: dict[int, tuple[Node, Obj]] = {}
_NO_ZERO: Obj = {}


def _zero_of(node: Node) -> Obj:
    """The zero value of a built-in struct type (``{}`` for anything else), cached.

    Go objects always carry their non-pointer structs (and required fields), so a create
    compares against them and fields under them are added without ownership of the
    struct itself. Plain dicts may lack them, so comparisons read a missing field as its
    zero value. Custom resources start from an empty object.
    """
    if not node.go_name or node.props is None:
        return _NO_ZERO  # custom resources: nothing is cached per (recompiled) schema
    hit = _ZERO.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    zero = _zero_struct(node, 0)
    _ZERO[id(node)] = (node, zero)
    return zero


def _zero_struct(node: Node, depth: int) -> Obj:
    out: Obj = {}
    if node.props is None or depth > 12:
        return out
    required = _required(node)
    extra = _NON_POINTER.get(node.go_name, ())
    for key, child in node.props.items():
        if key in ("apiVersion", "kind"):
            continue
        is_struct = child.kind == OBJECT and child.props is not None \
            and child.go_name not in _ATOMIC_TYPES
        if key in required or key in extra or (
                is_struct and key in ("metadata", "spec", "status")):
            out[key] = _zero_value(child, depth + 1)
    return out


def _zero_value(node: Node, depth: int) -> Any:
    kind = node.kind
    if kind == OBJECT:
        if node.props is not None and node.go_name not in _ATOMIC_TYPES:
            return _zero_struct(node, depth)
        return None
    return {STRING: "", INTEGER: 0, NUMBER: 0, BOOLEAN: False, INT_OR_STRING: 0,
            QUANTITY: "0"}.get(kind)


def _required(node: Node) -> frozenset[str]:
    assert node.props is not None
    keys = set(node.props)
    for d in _defs_by_short_name().get(node.go_name, ()):
        if set(d.get("properties") or ()) == keys:
            return frozenset(d.get("required") or ())
    return frozenset()


@functools.cache
def _defs_by_short_name() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, d in builtin_definitions().defs.items():
        out.setdefault(name.rsplit(".", 1)[-1], []).append(d)
    return out


# -- comparing two objects --------------------------------------------------------------


def _compare_root(schema: Node, old: Obj, new: Obj) -> tuple[FieldSet, FieldSet]:
    """(added or modified, removed) paths from ``old`` to ``new``.

    Paths nobody may own (``apiVersion``, ``kind``, server-set metadata, managedFields)
    are not compared.
    """
    changed: FieldSet = {}
    removed: FieldSet = {}
    zero = _zero_of(schema)
    for k, v in old.items():
        if k in _ROOT_SKIP:
            continue
        r = new.get(k, _ABSENT)
        if r is _ABSENT and k in zero:
            r = zero[k]
        if r is not v:
            _cmp_root_field(schema, k, v, r, changed, removed)
    for k, v in new.items():
        if k not in old and k not in _ROOT_SKIP:
            _cmp_root_field(schema, k, zero.get(k, _ABSENT), v, changed, removed)
    return changed, removed


def _cmp_root_field(schema: Node, k: str, lv: Any, rv: Any, ch: FieldSet,
                    rm: FieldSet) -> None:
    try:
        _cmp(_root_node(schema, k), lv, rv, "f:" + k, ch, rm,
             _ROOT_META_SKIP if k == "metadata" else None)
    except _TypedError as e:
        e.path.append("." + k)
        raise


def _cmp(node: Node, lv: Any, rv: Any, key: str, ch: FieldSet, rm: FieldSet,
         skip: frozenset[str] | None = None) -> None:
    if lv is _ABSENT:
        ch[key] = _whole(node, rv, skip)
        return
    if rv is _ABSENT:
        rm[key] = _whole(node, lv, skip)
        return
    shape = _pair_shape(node, lv, rv)
    if shape == _MAP:
        lm = lv if isinstance(lv, dict) else None
        rmap = rv if isinstance(rv, dict) else None
        if lm or rmap:
            if lm is not None and rmap is not None and lm == rmap:
                return
            cch: FieldSet = {}
            crm: FieldSet = {}
            _cmp_map(node, lm, rmap, cch, crm, skip)
            _attach(node, lv, rv, key, cch, crm, ch, rm)
            return
    elif shape == _LIST:
        ll = lv if isinstance(lv, list) else None
        rl = rv if isinstance(rv, list) else None
        if ll or rl:
            if ll is not None and rl is not None and ll == rl:
                return
            cch, crm = {}, {}
            _cmp_list(node, ll, rl, cch, crm)
            _attach(node, lv, rv, key, cch, crm, ch, rm)
            return
    # a leaf, or an empty map/list promoted to one
    if lv is _ABSENT:
        _mark(ch, key)
    elif rv is _ABSENT:
        _mark(rm, key)
    elif not _equal(lv, rv):
        _mark(ch, key)


def _whole(node: Node, v: Any, skip: frozenset[str] | None = None) -> FieldSet:
    """Every path of a value added (or removed) as a whole, the value's own included."""
    if isinstance(v, dict):
        if not v or _shape(node, v) != _MAP:
            return {}
        out: FieldSet = {".": {}}
        if skip is None:
            skip = _META_SKIP if node.go_name == "ObjectMeta" else _NO_SKIP
        for k, cv in v.items():
            if k in skip:
                continue
            if cv is None or type(cv) in (str, int, bool, float):
                out["f:" + k] = {}
                continue
            try:
                out["f:" + k] = _whole(_field_node(node, k), cv)
            except _TypedError as e:
                e.path.append("." + k)
                raise
        return out
    if isinstance(v, list):
        if not v or _shape(node, v) != _LIST:
            return {}
        out = {".": {}}
        item = node.items or _DEDUCED
        for pe, items in _index(node, v).items():
            try:
                out[pe] = _whole(item, items[0]) if len(items) == 1 else {}
            except _TypedError as e:
                e.path.append(_pe_string(pe))
                raise
        return out
    return {}


def _attach(node: Node, lv: Any, rv: Any, key: str, cch: FieldSet, crm: FieldSet,
            ch: FieldSet, rm: FieldSet) -> None:
    if cch:
        ch[key] = cch
    if crm:
        rm[key] = crm
    if lv is _ABSENT:
        _mark(ch, key)
    elif rv is _ABSENT:
        _mark(rm, key)


def _cmp_map(node: Node, lm: Obj | None, rmap: Obj | None, ch: FieldSet, rm: FieldSet,
             skip: frozenset[str] | None = None) -> None:
    if skip is None:
        skip = _META_SKIP if node.go_name == "ObjectMeta" else _NO_SKIP
    zero = _zero_of(node)
    if lm:
        for k, v in lm.items():
            r = rmap.get(k, _ABSENT) if rmap else _ABSENT
            if r is v or k in skip:
                continue
            if r is _ABSENT and rmap is not None and k in zero:
                r = zero[k]
            try:
                _cmp(_field_node(node, k), v, r, "f:" + k, ch, rm)
            except _TypedError as e:
                e.path.append("." + k)
                raise
    if rmap:
        for k, v in rmap.items():
            if (lm and k in lm) or k in skip:
                continue
            lv = zero.get(k, _ABSENT) if lm is not None else _ABSENT
            try:
                _cmp(_field_node(node, k), lv, v, "f:" + k, ch, rm)
            except _TypedError as e:
                e.path.append("." + k)
                raise


def _cmp_list(node: Node, ll: list[Any] | None, rl: list[Any] | None, ch: FieldSet,
              rm: FieldSet) -> None:
    item = node.items or _DEDUCED
    lidx = _index(node, ll) if ll else {}
    ridx = _index(node, rl) if rl else {}
    for pe, litems in lidx.items():
        ritems = ridx.get(pe)
        try:
            if len(litems) > 1 or (ritems is not None and len(ritems) > 1):
                # duplicated keys: the items are owned as one atomic value
                if ritems is None:
                    _mark(rm, pe)
                elif litems != ritems:
                    _mark(ch, pe)
            else:
                _cmp(item, litems[0], ritems[0] if ritems is not None else _ABSENT, pe,
                     ch, rm)
        except _TypedError as e:
            e.path.append(_pe_string(pe))
            raise
    for pe, ritems in ridx.items():
        if pe in lidx:
            continue
        if len(ritems) > 1:
            _mark(ch, pe)
            continue
        try:
            _cmp(item, _ABSENT, ritems[0], pe, ch, rm)
        except _TypedError as e:
            e.path.append(_pe_string(pe))
            raise


def _mark(t: FieldSet, key: str) -> None:
    node = t.get(key)
    if node is None:
        t[key] = {}
    elif node:
        node["."] = {}


def _equal(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    return bool(a == b)


# -- the field set of an applied configuration ------------------------------------------


def _set_root(schema: Node, obj: Obj, *, allow_dups: bool) -> FieldSet:
    out: FieldSet = {}
    for k, v in obj.items():
        try:
            sub = _set_of(_root_node(schema, k), v, allow_dups)
        except _TypedError as e:
            e.path.append("." + k)
            raise
        if v is None or v == {} or not _declared(schema, k, True):
            sub = _member(sub)
        if sub is not None:
            out["f:" + k] = sub
    meta = out.get("f:metadata")
    if meta is not None and "f:managedFields" in meta:
        del meta["f:managedFields"]
    return out


def _set_of(node: Node, v: Any, allow_dups: bool) -> FieldSet | None:
    """ToFieldSet of one value: ``None`` when it owns nothing, ``{}`` for a leaf."""
    if v is None:
        return None if _null_is_container(node) else {}
    shape = _shape(node, v)
    if shape == _MAP:
        out: FieldSet = {}
        props = node.props
        for k, cv in v.items():
            try:
                sub = _set_of(_field_node(node, k), cv, allow_dups)
            except _TypedError as e:
                e.path.append("." + k)
                raise
            if cv is None or cv == {} or props is None or k not in props:
                sub = _member(sub)
            if sub is not None:
                out["f:" + k] = sub
        return out or None
    if shape == _LIST:
        out = {}
        item = node.items or _DEDUCED
        for i, it in enumerate(v):
            pe = _item_pe(node, item, it, i)
            if pe in out:
                if allow_dups:
                    out[pe] = {}
                    continue
                raise _TypedError(f"duplicate entries for key {_pe_string(pe)}")
            try:
                sub = _set_of(item, it, allow_dups)
            except _TypedError as e:
                e.path.append(_pe_string(pe))
                raise
            m = _member(sub)
            assert m is not None
            out[pe] = m
        return out or None
    return {}


def _member(sub: FieldSet | None) -> FieldSet:
    if not sub:
        return {}
    sub["."] = {}
    return sub


# -- merging ------------------------------------------------------------------------------


def _merge_root(schema: Node, live: Obj, applied: Obj) -> Obj:
    out: Obj = {}
    for k, v in live.items():
        r = applied.get(k, _ABSENT)
        if r is _ABSENT:
            out[k] = v
            continue
        m = _merge(_root_node(schema, k), v, r)
        if m is not _DROP:
            out[k] = m
    for k, v in applied.items():
        if k not in live:
            m = _merge(_root_node(schema, k), _ABSENT, v)
            if m is not _DROP:
                out[k] = m
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return out


def _merge(node: Node, lv: Any, rv: Any) -> Any:
    """Structured merge of one value: ``rv`` (applied) wins on leaves, maps and list-maps
    merge by key. ``lv`` may be ``_ABSENT``; ``_DROP`` means "remove the field"."""
    shape = _pair_shape(node, lv, rv)
    if shape == _MAP:
        lm = lv if isinstance(lv, dict) else None
        rm = rv if isinstance(rv, dict) else None
        if lm or rm:
            out: Obj = {}
            if lm:
                for k, v in lm.items():
                    r = rm.get(k, _ABSENT) if rm else _ABSENT
                    if r is _ABSENT:
                        out[k] = v
                        continue
                    try:
                        m = _merge(_field_node(node, k), v, r)
                    except _TypedError as e:
                        e.path.append("." + k)
                        raise
                    if m is not _DROP:
                        out[k] = m
            if rm:
                for k, v in rm.items():
                    if lm and k in lm:
                        continue
                    try:
                        m = _merge(_field_node(node, k), _ABSENT, v)
                    except _TypedError as e:
                        e.path.append("." + k)
                        raise
                    if m is not _DROP:
                        out[k] = m
            return out
    elif shape == _LIST:
        ll = lv if isinstance(lv, list) else None
        rl = rv if isinstance(rv, list) else None
        if ll or rl:
            return _merge_list(node, ll or [], rl or [])
    if rv is None and not node.nullable:
        return _DROP
    return _copy(rv)


def _merge_list(node: Node, ll: list[Any], rl: list[Any]) -> list[Any]:
    item = node.items or _DEDUCED
    lidx = _index(node, ll)
    r_order: list[str] = []
    robs: dict[str, Any] = {}
    for i, it in enumerate(rl):
        pe = _item_pe(node, item, it, i)
        if pe in robs:
            raise _TypedError(f"duplicate entries for key {_pe_string(pe)}")
        robs[pe] = it
        r_order.append(pe)
    l_order = list(lidx)
    shared = [pe for pe in r_order if pe in lidx]
    next_shared = shared.pop(0) if shared else None
    out: list[Any] = []

    def emit(pe: str, with_rhs: bool) -> None:
        litems = lidx.get(pe)
        if not with_rhs:
            out.extend(litems or ())
            return
        lv = litems[0] if litems is not None and len(litems) == 1 else _ABSENT
        try:
            m = _merge(item, lv, robs[pe])
        except _TypedError as e:
            e.path.append(_pe_string(pe))
            raise
        if m is not _DROP:
            out.append(m)

    li = ri = 0
    n_l, n_r = len(l_order), len(r_order)
    while li < n_l or ri < n_r:
        progressed = False
        if li < n_l and ri < n_r:
            pe = l_order[li]
            if pe == r_order[ri]:
                emit(pe, True)
                li += 1
                ri += 1
                next_shared = shared.pop(0) if shared else None
                continue
            if pe in robs and next_shared is not None and next_shared != pe:
                li += 1
                continue
        if li < n_l and l_order[li] not in robs:
            emit(l_order[li], False)
            li += 1
            continue
        if ri < n_r:
            pe = r_order[ri]
            emit(pe, True)
            ri += 1
            progressed = True
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop(0) if shared else None
        if not progressed:
            li += 1  # a shared item already emitted from the applied side
    return out


def _restore_server_meta(merged: Obj, live: Obj) -> None:
    lmeta = live.get("metadata")
    if not isinstance(lmeta, dict):
        return
    meta = merged.setdefault("metadata", {})
    if not isinstance(meta, dict):
        merged["metadata"] = meta = {}
    for k in _SERVER_META:
        if k in lmeta:
            meta[k] = lmeta[k]
        else:
            meta.pop(k, None)


# -- pruning ------------------------------------------------------------------------------


def _prune_children(node: Node, value: Any, last: FieldSet, owned: list[FieldSet],
                    root: bool = False) -> None:
    """Remove what ``last`` owned that no set in ``owned`` owns (struct fields with owned
    children count as owned, as ``EnsureNamedFieldsAreMembers`` makes them).

    ``value`` is mutated; containers below it may be shared with the live object, so
    they are copied before they change.
    """
    if isinstance(value, dict):
        for key, lnode in last.items():
            if key[0] != "f" or key == ".":
                continue
            name = key[2:]
            if name not in value:
                continue
            child = _root_node(node, name) if root else _field_node(node, name)
            named = _declared(node, name, root)
            onodes = [o[key] for o in owned if key in o]
            if _owns(lnode, named) and not any(_owns(o, named) for o in onodes) \
                    and not (root and name == "metadata"):
                del value[name]
                continue
            sub = value[name]
            if _has_children(lnode) and isinstance(sub, dict | list) and sub:
                sub = value[name] = dict(sub) if isinstance(sub, dict) else list(sub)
                try:
                    _prune_children(child, sub, lnode, onodes)
                except _TypedError as e:
                    e.path.append("." + name)
                    raise
                if not sub:
                    del value[name]
    elif isinstance(value, list) and _shape(node, value) == _LIST:
        item = node.items or _DEDUCED
        positions: dict[str, list[int]] = {}
        for i, it in enumerate(value):
            positions.setdefault(_item_pe(node, item, it, i), []).append(i)
        drop: set[int] = set()
        for key, lnode in last.items():
            at = positions.get(key)
            if not at:
                continue
            onodes = [o[key] for o in owned if key in o]
            if _owns(lnode, False) and not any(_owns(o, False) for o in onodes):
                drop.update(at)
            elif _has_children(lnode) and len(at) == 1 and isinstance(value[at[0]], dict):
                it = value[at[0]] = dict(value[at[0]])
                try:
                    _prune_children(item, it, lnode, onodes)
                except _TypedError as e:
                    e.path.append(_pe_string(key))
                    raise
        if drop:
            value[:] = [v for i, v in enumerate(value) if i not in drop]


def _owns(n: FieldSet, named: bool) -> bool:
    return not n or "." in n or (named and _has_children(n))


def _has_children(n: FieldSet) -> bool:
    return any(k != "." for k in n)


# -- set algebra (inputs are never mutated; unchanged subtrees are shared) ----------------


def _is_member(n: FieldSet) -> bool:
    return not n or "." in n


def _node(member: bool, children: FieldSet) -> FieldSet | None:
    if children:
        if member:
            children["."] = {}
        return children
    return {} if member else None


def _diff(a: FieldSet, b: FieldSet) -> FieldSet:
    """Paths of ``a`` that are not paths of ``b`` (children of ``a`` and ``b``)."""
    if not b or not a:
        return a
    out: FieldSet = {}
    same = True
    for k, av in a.items():
        if k == ".":
            continue
        bv = b.get(k)
        if bv is None:
            out[k] = av
            continue
        same = False
        n = _node(_is_member(av) and not _is_member(bv), _diff_children(av, bv))
        if n is not None:
            out[k] = n
    return a if same else out


def _diff_children(a: FieldSet, b: FieldSet) -> FieldSet:
    d = _diff(a, b)
    if d is a:
        return {k: v for k, v in a.items() if k != "."}
    return d


def _intersect(a: FieldSet, b: FieldSet) -> FieldSet:
    out: FieldSet = {}
    if not a or not b:
        return out
    for k, av in a.items():
        if k == ".":
            continue
        bv = b.get(k)
        if bv is None:
            continue
        n = _node(_is_member(av) and _is_member(bv), _intersect(av, bv))
        if n is not None:
            out[k] = n
    return out


def _union(a: FieldSet, b: FieldSet) -> FieldSet:
    out = {k: v for k, v in a.items() if k != "."}
    for k, bv in b.items():
        if k == ".":
            continue
        av = out.get(k)
        if av is None:
            out[k] = bv
            continue
        n = _node(_is_member(av) or _is_member(bv), _union(av, bv))
        assert n is not None
        out[k] = n
    return out


def _rdiff(t: FieldSet, paths: tuple[tuple[str, ...], ...]) -> FieldSet:
    """``t`` without the subtrees at ``paths`` (``RecursiveDifference``)."""
    for path in paths:
        t = _drop_path(t, path)
    return t


def _drop_path(t: FieldSet, path: tuple[str, ...]) -> FieldSet:
    key = "f:" + path[0]
    if key not in t:
        return t
    out = dict(t)
    if len(path) == 1:
        del out[key]
        return out
    child = t[key]
    sub = _drop_path(child, path[1:])
    if sub is child:
        return t
    if _has_children(sub):
        out[key] = sub
    elif "." in sub:
        out[key] = {}
    else:
        del out[key]
    return out


def _strip(t: FieldSet) -> FieldSet:
    """Drop what stripMetaManager never lets anyone own."""
    if "f:apiVersion" not in t and "f:kind" not in t and "f:metadata" not in t:
        return t
    out = {k: v for k, v in t.items() if k not in ("f:apiVersion", "f:kind")}
    meta = out.get("f:metadata")
    if meta is not None:
        kept = {k: v for k, v in meta.items() if k != "." and k not in _STRIP_META}
        if kept:
            out["f:metadata"] = kept
        else:
            del out["f:metadata"]
    return out


def _reset_paths(subresource: str, reset: Iterable[str] | None) -> tuple[tuple[str, ...], ...]:
    if reset is None:
        reset = ("status",) if subresource == "" else ("spec",) if subresource == "status" \
            else ()
    return tuple(tuple(p.split(".")) for p in reset if p)


# -- recording an update ------------------------------------------------------------------


def _record_update(managed: _Managed, changed: FieldSet, removed: FieldSet,
                   ignored: tuple[tuple[str, ...], ...], *, manager: str, operation: str,
                   subresource: str, api_version: str, now: str) -> None:
    """SMD's ``Updater.Update`` under apiserver's "current-operation" manager."""
    changed, removed = _rdiff(changed, ignored), _rdiff(removed, ignored)
    if changed or removed:
        for i in list(managed):
            e = managed[i]
            fields = _diff(_diff(e.fields, changed), removed)
            if fields is not e.fields:
                e.fields, e.encoded = fields, None
            if not fields:
                del managed[i]
    mine = _strip(_diff(changed, removed))
    if not mine:
        return
    ident = _ident(manager, operation, subresource, api_version)
    prev = managed.get(ident)
    if prev is not None:
        mine = _union(mine, prev.fields)
    managed[ident] = _Entry(manager, operation, api_version, now, mine, subresource)


def _cap_update_managers(managed: _Managed) -> None:
    """Fold the oldest Update entries into ``ancient-changes`` beyond ten of them."""
    updaters = [i for i, e in managed.items() if e.operation != "Apply"]
    if len(updaters) <= MAX_UPDATE_MANAGERS:
        return
    updaters.sort(key=lambda i: (_seconds(managed[i].time), managed[i].ident_json()))
    first_of: dict[str, tuple[str, str, str, str]] = {}
    length = len(updaters)
    for ident in updaters:
        if length <= MAX_UPDATE_MANAGERS:
            break
        e = managed[ident]
        version = e.api_version
        bucket_id = _ident(ANCIENT_CHANGES, "Update", "", version)
        first = first_of.get(version)
        if first is None:
            first_of[version] = ident
            continue
        bucket = managed.get(bucket_id)
        if bucket is None:
            f = managed.pop(first)
            bucket = _Entry(ANCIENT_CHANGES, "Update", version, f.time, f.fields, "")
            managed[bucket_id] = bucket
        bucket.fields = _union(e.fields, bucket.fields)
        bucket.encoded = None
        bucket.time = e.time
        del managed[ident]
        length -= 1


# -- kubectl client-side apply interplay --------------------------------------------------


def _allowed_from_last_applied(schema: Node, live: Obj | None,
                               api_version: str) -> FieldSet | None:
    """Fields whose live value still equals kubectl's last-applied annotation."""
    if live is None:
        return None
    ann = (live.get("metadata") or {}).get("annotations") or {}
    raw = ann.get(LAST_APPLIED) if isinstance(ann, dict) else None
    if not raw or not isinstance(raw, str):
        return None
    try:
        last = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(last, dict) or last.get("apiVersion") != api_version:
        return None
    try:
        owned = _set_root(schema, last, allow_dups=False)
        changed, removed = _compare_root(schema, last, live)
    except _TypedError:
        return None
    return _diff(_diff(owned, changed), removed)


def _sync_last_applied(obj: Obj, applied: Obj) -> None:
    """lastAppliedUpdater: kubectl server-side apply keeps the CSA annotation current."""
    meta = obj.get("metadata")
    ann = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(ann, dict) or not ann.get(LAST_APPLIED):
        return
    config = dict(applied)
    ameta = config.get("metadata")
    if isinstance(ameta, dict):
        ameta = dict(ameta)
        aann = ameta.get("annotations")
        if isinstance(aann, dict) and LAST_APPLIED in aann:
            aann = {k: v for k, v in aann.items() if k != LAST_APPLIED}
            if aann:
                ameta["annotations"] = aann
            else:
                del ameta["annotations"]
        config["metadata"] = ameta
    value = _go_json(config) + "\n"
    ann = dict(ann)
    ann[LAST_APPLIED] = value
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in ann.items())
    if size > 256 * 1024:
        del ann[LAST_APPLIED]
    assert isinstance(meta, dict)
    meta["annotations"] = ann


# -- errors ---------------------------------------------------------------------------------


def _conflict_error(conflicts: dict[tuple[str, str, str, str], FieldSet],
                    managed: _Managed) -> ApplyConflict:
    pairs: list[tuple[str, str]] = []
    causes: list[dict[str, str]] = []
    lines: list[str] = []
    for ident in sorted(conflicts, key=lambda i: managed[i].ident_json()):
        e = managed[ident]
        printed = e.printed()
        paths: list[str] = []
        _iter_paths(conflicts[ident], "", paths)
        lines.append(f"conflicts with {printed}:")
        for p in paths:
            pairs.append((e.manager, p))
            causes.append({"reason": "FieldManagerConflict",
                           "message": f"conflict with {printed}", "field": p})
            lines.append(f"- {p}")
    if len(pairs) == 1:
        message = f"Apply failed with 1 conflict: {causes[0]['message']}: {pairs[0][1]}"
    else:
        message = f"Apply failed with {len(pairs)} conflicts: " + "\n".join(lines)
    return ApplyConflict(pairs, causes, message)


def _iter_paths(t: FieldSet, prefix: str, out: list[str]) -> None:
    """Paths in ``Set.Iterate`` order: a level's members first, then its children."""
    keys = sorted((k for k in t if k != "."), key=_pe_order)
    for k in keys:
        if _is_member(t[k]):
            out.append(prefix + _pe_string(k))
    for k in keys:
        if _has_children(t[k]):
            _iter_paths(t[k], prefix + _pe_string(k), out)


def _typed_error(what: str, obj: Obj, err: _TypedError) -> StatusError:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    api_version = str(obj.get("apiVersion") or "")
    gv = api_version if "/" in api_version else "/" + api_version
    where = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}; {gv}, " \
            f"Kind={obj.get('kind') or ''}"
    return StatusError(500, "", f"failed to create typed {what} object ({where}): "
                                f"{err.text()}")


# -- encoding and decoding ------------------------------------------------------------------


def _go_json(v: Any) -> str:
    """JSON as Go's encoder writes it: compact, sorted keys, HTML characters escaped."""
    t = type(v)
    if t is str and _PLAIN.match(v):
        return f'"{v}"'
    if t is int:
        return str(v)
    if t is bool:
        return "true" if v else "false"
    if t is float and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    s = json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if _HTML.search(s):
        s = (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
             .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return s


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _go_string(v: Any) -> str:
    """``value.ToString``: how path elements print values."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _go_quote(v)
    if isinstance(v, list):
        return "[" + ",".join(_go_string(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ";".join(f"{k}={_go_string(x)}" for k, x in v.items()) + "}"
    return str(v)


@functools.lru_cache(maxsize=4096)
def _pe_string(pe: str) -> str:
    """A serialized path element as ``PathElement.String`` prints it."""
    t, rest = pe[0], pe[2:]
    if t == "f":
        return "." + rest
    if t == "k":
        fields = json.loads(rest)
        return "[" + ",".join(f"{k}={_go_string(v)}" for k, v in fields.items()) + "]"
    if t == "v":
        return "[=" + _go_string(json.loads(rest)) + "]"
    return "[" + rest + "]"


def _value_order(v: Any) -> tuple[Any, ...]:
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, int | float):
        return (0, float(v))
    if isinstance(v, str):
        return (1, v)
    if isinstance(v, list):
        return (3, _go_json(v))
    if isinstance(v, dict):
        return (4, _go_json(v))
    return (5, 0)


@functools.lru_cache(maxsize=16384)
def _pe_order(pe: str) -> tuple[Any, ...]:
    """``PathElement.Compare``: field names, then keys, then values, then indexes."""
    t = pe[0]
    if t == "f":
        return (0, pe)
    if t == "k":
        fields = json.loads(pe[2:])
        return (1, tuple((k, _value_order(v)) for k, v in fields.items()))
    if t == "v":
        return (2, _value_order(json.loads(pe[2:])))
    return (3, int(pe[2:]))


def _encode(t: FieldSet) -> FieldSet:
    """A sorted copy of a set, in ``PathElement`` order with "." first."""
    if not t:
        return {}
    keys = sorted(t)
    out: FieldSet = {}
    if keys[0] == ".":
        if len(keys) == 1:
            return {}
        del keys[0]
        out["."] = {}
    if keys[-1][0] != "f":  # list elements: keys and values order by value, not text
        keys.sort(key=_pe_order)
    for k in keys:
        sub = t[k]
        out[k] = _encode(sub) if sub else {}
    return out


def _canonical_pe(key: str) -> str | None:
    if len(key) < 2:
        raise ValueError(f"key must be 2 characters long: {key!r}")
    if key[1] != ":":
        raise ValueError(f"missing colon: {key}")
    t = key[0]
    if t == "f":
        return key
    if t == "i":
        return f"i:{int(key[2:])}"
    if t == "v":
        return "v:" + _go_json(json.loads(key[2:]))
    if t == "k":
        fields = json.loads(key[2:])
        if not isinstance(fields, dict):
            raise ValueError(f"invalid key path element: {key}")
        return "k:" + _go_json(fields)
    return None  # a type a later version may know: dropped


def _decode_fields(raw: Any) -> FieldSet:
    if not isinstance(raw, dict):
        raise ValueError("fieldsV1 must be an object")
    out: FieldSet = {}
    member = False
    for k, v in raw.items():
        if k == ".":
            member = True
            continue
        ck = _canonical_pe(k)
        if ck is None:
            continue
        sub = _decode_fields(v)
        prev = out.get(ck)
        out[ck] = sub if prev is None else _node(
            _is_member(prev) or _is_member(sub), _union(prev, sub)) or {}
    if out and member:
        out["."] = {}
    return out


def _decode(raw: Any, *, trusted: bool) -> _Managed:
    """Decode managedFields entries (``ValueError`` when one is invalid).

    Entries this module wrote (``trusted``) keep their fieldsV1 dicts as the sets.
    """
    managed: _Managed = {}
    if raw is None:
        return managed
    if not isinstance(raw, list):
        raise ValueError("managedFields must be a list")
    for n, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ValueError(f"invalid managed fields entry {n}")
        operation = entry.get("operation")
        if operation not in ("Apply", "Update"):
            raise ValueError("operation must be `Apply` or `Update`")
        api_version = entry.get("apiVersion")
        if not api_version or not isinstance(api_version, str):
            raise ValueError("apiVersion must not be empty")
        fields_type = entry.get("fieldsType")
        if not fields_type:
            raise ValueError(f"missing fieldsType in managed fields entry {n}")
        if fields_type != "FieldsV1":
            raise ValueError(f"invalid fieldsType {fields_type!r} in managed fields entry {n}")
        raw_fields = entry.get("fieldsV1")
        if raw_fields is None:
            raw_fields = {}
        if trusted and isinstance(raw_fields, dict):
            fields, encoded = raw_fields, raw_fields
        else:
            try:
                fields = _decode_fields(raw_fields)
            except (ValueError, TypeError) as e:
                raise ValueError(f"error decoding set: {e}") from None
            encoded = None
        when = entry.get("time")
        if not trusted and when is not None and not (
                isinstance(when, str) and _CANONICAL_TIME.match(when)):
            when = _normalize_time(when)
        decoded = _Entry(str(entry.get("manager") or ""), operation, api_version, when,
                         fields, str(entry.get("subresource") or ""), encoded)
        managed[decoded.ident()] = decoded
    return managed


def _decode_or_empty(raw: Any, *, trusted: bool) -> _Managed:
    try:
        return _decode(raw, trusted=trusted)
    except ValueError:
        return {}


def _is_reset(provided: Any) -> bool:
    if isinstance(provided, list):
        return not provided or (len(provided) == 1 and provided[0] in ({}, None))
    return False


def _normalize_time(when: Any) -> str | None:
    if not isinstance(when, str) or not when:
        return None
    try:
        dt = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return when
    return managed_time(dt.timestamp())


@functools.lru_cache(maxsize=1024)
def _seconds(when: str | None) -> int:
    if not when:
        return 0
    try:
        return int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _store(meta: Obj, managed: _Managed) -> None:
    """Encode the entries in upstream order (Apply first, then by time, manager, ...)."""
    if not managed:
        meta.pop("managedFields", None)
        return
    entries = list(managed.values())
    if len(entries) > 1:
        entries.sort(key=lambda e: (e.operation, _seconds(e.time), e.manager, e.api_version,
                                    e.subresource))
    out = []
    for e in entries:
        d: Obj = {}
        if e.manager:
            d["manager"] = e.manager
        d["operation"] = e.operation
        if e.api_version:
            d["apiVersion"] = e.api_version
        if e.time:
            d["time"] = e.time
        d["fieldsType"] = "FieldsV1"
        d["fieldsV1"] = e.encoded if e.encoded is not None else _encode(e.fields)
        if e.subresource:
            d["subresource"] = e.subresource
        out.append(d)
    meta["managedFields"] = out


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v
