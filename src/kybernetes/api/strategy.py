"""Per-kind behaviour on create and update: defaulting, validation, status handling.

The generic parts (status reset on create, status preserved on spec updates, the
``generation`` counter) live in :class:`Strategy`. Kind-specific code registers itself
with the decorators below, one module per API group under :mod:`kybernetes.api.defaults`
and :mod:`kybernetes.api.validation`::

    @defaulter("apps", "Deployment")
    def default_deployment(obj: Obj) -> None:
        obj["spec"].setdefault("replicas", 1)

    @validator("apps", "Deployment")
    def validate_deployment(obj: Obj) -> list[FieldError]: ...

    @update_validator("apps", "Deployment")
    def validate_deployment_update(new: Obj, old: Obj) -> list[FieldError]: ...
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from kybernetes.api.errors import FieldError

Obj = dict[str, Any]
GroupKind = tuple[str, str]
Defaulter = Callable[[Obj], None]
Validator = Callable[[Obj], list[FieldError]]
UpdateValidator = Callable[[Obj, Obj], list[FieldError]]
Hook = Callable[[Obj], None]
UpdateHook = Callable[[Obj, Obj], None]

DEFAULTERS: dict[GroupKind, list[Defaulter]] = {}
VALIDATORS: dict[GroupKind, list[Validator]] = {}
UPDATE_VALIDATORS: dict[GroupKind, list[UpdateValidator]] = {}
CREATE_HOOKS: dict[GroupKind, list[Hook]] = {}
UPDATE_HOOKS: dict[GroupKind, list[UpdateHook]] = {}
STATUS_VALIDATORS: dict[GroupKind, list[UpdateValidator]] = {}
SubresourceHook = Callable[[Obj, Obj, str], None]
STATUS_HOOKS: dict[GroupKind, list[SubresourceHook]] = {}

F = TypeVar("F", bound=Callable[..., Any])


def _register(table: dict[GroupKind, list[Any]], group: str, kind: str) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        table.setdefault((group, kind), []).append(fn)
        return fn

    return deco


def defaulter(group: str, kind: str) -> Callable[[F], F]:
    """Register ``fn(obj)`` that fills in defaults in place (after decoding)."""
    return _register(DEFAULTERS, group, kind)


def validator(group: str, kind: str) -> Callable[[F], F]:
    """Register ``fn(obj) -> [FieldError]`` run on create and update."""
    return _register(VALIDATORS, group, kind)


def update_validator(group: str, kind: str) -> Callable[[F], F]:
    """Register ``fn(new, old) -> [FieldError]`` run on update (immutable fields...)."""
    return _register(UPDATE_VALIDATORS, group, kind)


def status_validator(group: str, kind: str) -> Callable[[F], F]:
    """Register ``fn(new, old) -> [FieldError]`` run on updates of the status subresource."""
    return _register(STATUS_VALIDATORS, group, kind)


def on_status_update(group: str, kind: str) -> Callable[[F], F]:
    """Register ``fn(new, old, subresource)`` run on writes of a status-like subresource
    (``status``, a CSR's ``approval``) after the generic preparation, to keep what that
    subresource may not change."""
    return _register(STATUS_HOOKS, group, kind)


def on_create(group: str, kind: str) -> Callable[[F], F]:
    """Register ``fn(obj)`` run before defaulting on create (PrepareForCreate)."""
    return _register(CREATE_HOOKS, group, kind)


def on_update(group: str, kind: str) -> Callable[[F], F]:
    """Register ``fn(new, old)`` run before defaulting on update (PrepareForUpdate)."""
    return _register(UPDATE_HOOKS, group, kind)


_kind_code_loaded = False
_kind_code_lock = threading.Lock()


def load_kind_code() -> None:
    """Import the per-group defaulting and validation modules (they register on import).

    Deferred to the first write (or a warm-up thread) so that the API server starts
    quickly; the lock makes a concurrent caller wait for the tables to be complete.
    """
    global _kind_code_loaded
    if _kind_code_loaded:
        return
    with _kind_code_lock:
        if not _kind_code_loaded:
            import kybernetes.api.defaults
            import kybernetes.api.validation  # noqa: F401

            _kind_code_loaded = True


# Kinds whose metadata.generation tracks spec changes (upstream sets it for these).
_NO_GENERATION = {
    ("", "Pod"), ("", "Node"), ("", "Service"), ("", "Namespace"), ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"), ("", "ResourceQuota"), ("", "ConfigMap"), ("", "Secret"),
    ("", "Endpoints"), ("", "Event"), ("", "ServiceAccount"), ("", "LimitRange"),
    ("coordination.k8s.io", "Lease"), ("discovery.k8s.io", "EndpointSlice"),
    ("events.k8s.io", "Event"), ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "StorageClass"), ("networking.k8s.io", "IngressClass"),
    ("apps", "ControllerRevision"),
}
# Kinds whose status survives create (written by their owner when registering).
_KEEP_STATUS_ON_CREATE = {("", "Node")}
# Kinds whose /status writes may also change labels (kubelets label their pods/nodes).
_STATUS_SETS_LABELS = {("", "Pod"), ("", "Node")}


def spec_changed(new: Obj, old: Obj) -> bool:
    """True when anything but metadata and status differs."""
    keys = (set(new) | set(old)) - {"metadata", "status", "apiVersion", "kind"}
    return any(new.get(k) != old.get(k) for k in keys)


class Strategy:
    """How one kind is prepared, defaulted and validated on each write."""

    def __init__(self, group: str, kind: str, *, has_status: bool, crd: bool = False) -> None:
        self.group = group
        self.kind = kind
        self.gk = (group, kind)
        self.has_status = has_status
        self.crd = crd
        self.tracks_generation = crd or (self.gk not in _NO_GENERATION)
        self.keep_status_on_create = self.gk in _KEEP_STATUS_ON_CREATE

    def prepare_create(self, obj: Obj) -> None:
        load_kind_code()
        if self.has_status and not self.keep_status_on_create:
            obj.pop("status", None)
        if self.tracks_generation:
            obj["metadata"]["generation"] = 1
        else:
            obj["metadata"].pop("generation", None)
        for hook in CREATE_HOOKS.get(self.gk, ()):
            hook(obj)

    def prepare_update(self, new: Obj, old: Obj) -> None:
        """A write to the main resource: status comes from the stored object."""
        load_kind_code()
        if self.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        meta = new["metadata"]
        if self.tracks_generation:
            gen = old["metadata"].get("generation", 1)
            meta["generation"] = gen + 1 if spec_changed(new, old) else gen
        else:
            meta.pop("generation", None)
        for hook in UPDATE_HOOKS.get(self.gk, ()):
            hook(new, old)

    def prepare_status_update(self, new: Obj, old: Obj, subresource: str = "status") -> Obj:
        """A write to ``/status``: the status (and, for built-in kinds, annotations) come
        from the request; spec and the rest of the metadata stay as stored."""
        load_kind_code()
        out = {k: v for k, v in old.items() if k != "status"}
        md = dict(old["metadata"])
        req = new.get("metadata") or {}
        md["resourceVersion"] = req.get("resourceVersion", "")
        if not self.crd:
            # upstream's built-in status strategies reset spec (and labels), not annotations
            if "annotations" in req:
                md["annotations"] = req["annotations"]
            else:
                md.pop("annotations", None)
            if self.gk in _STATUS_SETS_LABELS:
                if "labels" in req:
                    md["labels"] = req["labels"]
                else:
                    md.pop("labels", None)
        if "managedFields" in req:
            md["managedFields"] = req["managedFields"]
        out["metadata"] = md
        if "status" in new:
            out["status"] = new["status"]
        for hook in STATUS_HOOKS.get(self.gk, ()):
            hook(out, old, subresource)
        return out

    def default(self, obj: Obj) -> None:
        load_kind_code()
        for fn in DEFAULTERS.get(self.gk, ()):
            fn(obj)

    def validate(self, obj: Obj) -> list[FieldError]:
        load_kind_code()
        errs: list[FieldError] = []
        for fn in VALIDATORS.get(self.gk, ()):
            errs.extend(fn(obj))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        errs = self.validate(new)
        for fn in UPDATE_VALIDATORS.get(self.gk, ()):
            errs.extend(fn(new, old))
        return errs

    def validate_status_update(self, new: Obj, old: Obj) -> list[FieldError]:
        load_kind_code()
        errs: list[FieldError] = []
        for fn in STATUS_VALIDATORS.get(self.gk, ()):
            errs.extend(fn(new, old))
        return errs
