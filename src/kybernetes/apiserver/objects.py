"""Generic storage semantics for every resource, as kube's ``genericregistry.Store``.

:class:`ObjectStore` turns API verbs into store operations for one resource: metadata
bookkeeping (uid, timestamps, generation, managedFields), strategy hooks (defaulting,
validation), admission, compare-and-swap updates with conflict reporting, graceful and
finalizer-driven deletion, and version conversion.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from kybernetes.api import meta, patch
from kybernetes.api.errors import FieldError, StatusError
from kybernetes.api.fields import field_values, supported_fields
from kybernetes.api.registry import Resource
from kybernetes.api.selectors import FieldSelector, LabelSelector
from kybernetes.api.strategy import Strategy
from kybernetes.api.structural import walk
from kybernetes.apiserver import admission, codec, continuetoken
from kybernetes.apiserver.context import Context, Options
from kybernetes.store import (
    AlreadyExistsError,
    CompactedError,
    ConflictError,
    KeyValue,
    NotFoundError,
)

Obj = dict[str, Any]

_CONFLICT = "the object has been modified; please apply your changes to the latest version " \
            "and try again"
_PATCH_RETRIES = 5
_LIST_CHUNK = 500
_CREATE_ON_UPDATE = {("", "Endpoints"), ("coordination.k8s.io", "Lease"), ("", "Event"),
                     ("events.k8s.io", "Event")}
_STATUS_LIKE = ("status", "approval")
"""Subresources that write (part of) the status and nothing else (a CSR's approval)."""
_SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                "selfLink")


@dataclass
class ListPage:
    kvs: list[KeyValue]
    revision: int
    cont: str
    store: ObjectStore

    def raw_items(self) -> list[bytes]:
        return [self.store.kv_bytes(kv) for kv in self.kvs]

    def objects(self) -> list[Obj]:
        return [self.store.kv_object(kv) for kv in self.kvs]


def _fieldmanager() -> Any:
    from kybernetes.api import fieldmanager  # imported on first use: faster start-up

    return fieldmanager


def _meta_validation() -> Any:
    from kybernetes.api.validation import meta as meta_validation

    return meta_validation


def default_manager(user_agent: str) -> str:
    """The field manager upstream derives from a User-Agent (``kubectl/v1.32 ...``)."""
    return (user_agent.split("/", 1)[0] or "unknown")[:128]


class ObjectStore:
    def __init__(self, ctx: Context, res: Resource) -> None:
        self.ctx = ctx
        self.res = res
        self.storage_res = ctx.storage_resource(res)
        self.strategy: Strategy = self.storage_res.strategy or Strategy(
            res.group, res.kind, has_status="status" in res.subresources, crd=res.crd)
        self.converted = res.from_storage is not None
        self._fields = supported_fields(self.storage_res.group, self.storage_res.kind,
                                        namespaced=res.namespaced)

    # -- conversion ------------------------------------------------------------------

    def view(self, stored: Obj) -> Obj:
        return self.res.from_storage(stored) if self.res.from_storage else stored

    def to_storage(self, obj: Obj) -> Obj:
        return self.res.to_storage(obj) if self.res.to_storage else obj

    def kv_object(self, kv: KeyValue) -> Obj:
        return self.view(codec.load_stored(kv.value, kv.mod_revision))

    def kv_bytes(self, kv: KeyValue) -> bytes:
        if self.converted:
            return orjson.dumps(self.kv_object(kv))
        return codec.with_revision(kv.value, kv.mod_revision)

    # -- errors ------------------------------------------------------------------------

    def not_found(self, name: str) -> StatusError:
        return StatusError.not_found(self.res.plural, name, self.res.group)

    def invalid(self, name: str, errors: list[FieldError]) -> StatusError:
        return StatusError.invalid(self.res.kind, name, errors, self.res.group)

    def conflict(self, name: str, detail: str = _CONFLICT) -> StatusError:
        return StatusError.conflict(self.res.plural, name, detail, self.res.group)

    # -- reads ---------------------------------------------------------------------------

    async def get_kv(self, ns: str, name: str) -> KeyValue:
        kv = await self.ctx.backend.get(self.res.key(ns, name))
        if kv is None:
            raise self.not_found(name)
        return kv

    async def get(self, ns: str, name: str) -> Obj:
        return self.kv_object(await self.get_kv(ns, name))

    async def get_bytes(self, ns: str, name: str) -> bytes:
        return self.kv_bytes(await self.get_kv(ns, name))

    def check_field_selector(self, sel: FieldSelector) -> None:
        for r in sel.requirements:
            if r.field not in self._fields:
                if self.res.crd or self._fields <= {"metadata.name", "metadata.namespace"}:
                    # kinds without field-label conversions (upstream's default message)
                    raise StatusError.bad_request(
                        f'"{r.field}" is not a known field selector: only "metadata.name", '
                        '"metadata.namespace"')
                raise StatusError.bad_request(f"field label not supported: {r.field}")

    def selected(self, obj: Obj, label: LabelSelector, field: FieldSelector) -> bool:
        if not label.empty and not label.matches((obj.get("metadata") or {}).get("labels")):
            return False
        if not field.empty and not field.matches(field_values(
                self.storage_res.group, self.storage_res.kind, obj,
                namespaced=self.res.namespaced)):
            return False
        return True

    async def list(self, ns: str, *, label: LabelSelector, field: FieldSelector, limit: int = 0,
                   cont: str = "", rv: str = "", rv_match: str = "") -> ListPage:
        self.check_field_selector(field)
        _check_list_options(rv, rv_match, cont)
        backend = self.ctx.backend
        prefix = self.res.key_prefix(ns)
        revision = 0
        start = ""
        if cont:
            revision, rel = continuetoken.decode(cont)
            start = prefix + rel
        elif rv and (rv_match == "Exact" or (not rv_match and limit > 0 and rv != "0")):
            # with a limit and no match, a resourceVersion is an exact read (upstream's
            # legacy rule for paginated lists)
            revision = _parse_rv(rv)
        elif rv and rv != "0":
            want = _parse_rv(rv)
            await self._wait_for_revision(want)
        name = field.value_of("metadata.name")
        filtering = not label.empty or not field.empty
        try:
            if name is not None and (ns or not self.res.namespaced) and not cont:
                key = self.res.key(ns, name)
                res = await backend.list(key, limit=1, revision=revision)
                kvs = [kv for kv in res.items if kv.key == key and self.selected(
                    codec.load_stored(kv.value, kv.mod_revision), label, field)]
                at = res.revision
                more = False
                last = ""
            else:
                kvs = []
                at = 0
                more = True
                last = start
                while more and (limit <= 0 or len(kvs) < limit):
                    chunk = _LIST_CHUNK if filtering or limit <= 0 else limit - len(kvs)
                    if filtering and limit > 0:
                        chunk = max(chunk, limit)
                    res = await backend.list(prefix, start_after=last, limit=chunk,
                                             revision=revision)
                    if not at:
                        at = res.revision
                        revision = revision or at
                    more = res.more
                    for kv in res.items:
                        last = kv.key
                        if filtering and not self.selected(
                                codec.load_stored(kv.value, kv.mod_revision), label, field):
                            continue
                        kvs.append(kv)
                        if limit > 0 and len(kvs) >= limit:
                            # are there more after this one?
                            if kv is not res.items[-1]:
                                more = True
                            break
                    if not res.items:
                        more = False
                if limit > 0 and len(kvs) >= limit:
                    last = kvs[-1].key
                    nxt = await backend.list(prefix, start_after=last, limit=1, revision=at)
                    more = bool(nxt.items)
                else:
                    more = False
        except CompactedError:
            if cont:
                raise StatusError(410, "Expired", "The provided continue parameter is too old to "
                                  "display a consistent list result. You can start a new list "
                                  "without the continue parameter.") from None
            raise StatusError.gone(f"too old resource version: {revision} "
                                   f"({backend.compacted_revision()})") from None
        token = continuetoken.encode(at, last[len(prefix):]) if more else ""
        return ListPage(kvs, at, token, self)

    async def _wait_for_revision(self, want: int) -> None:
        for _ in range(30):
            if await self.ctx.backend.current_revision() >= want:
                return
            await asyncio.sleep(0.1)
        raise StatusError(504, "Timeout", f"Too large resource version: {want}, current: "
                          f"{await self.ctx.backend.current_revision()}",
                          {"causes": [{"reason": "ResourceVersionTooLarge",
                                       "message": "Too large resource version"}],
                           "retryAfterSeconds": 1})

    # -- decoding ------------------------------------------------------------------------

    def check_type(self, obj: Obj) -> None:
        """The body's apiVersion/kind must name this resource's version and kind."""
        # Missing type fields default to the URL's, as the upstream decoder does.
        api_version = obj.setdefault("apiVersion", self.res.api_version) or self.res.api_version
        kind = obj.setdefault("kind", self.res.kind) or self.res.kind
        obj["apiVersion"], obj["kind"] = api_version, kind
        if kind != self.res.kind:
            raise StatusError.bad_request(
                f"{self.res.kind} in version \"{self.res.version}\" cannot be handled as a "
                f"{self.res.kind}: no kind \"{kind}\" is registered for version "
                f"\"{api_version}\" in scheme")
        if api_version != self.res.api_version:
            raise StatusError.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({self.res.api_version})")

    def decode_walk(self, obj: Obj, opts: Options) -> None:
        """Type-check and prune ``obj`` against the schema, honouring fieldValidation."""
        node = self.ctx.schema(self.res)
        if node is None:
            return
        res = walk(node, obj, crd=self.res.crd,
                   skip_root=("apiVersion", "kind", "metadata") if self.res.crd else ())
        if res.decode_error:
            raise StatusError.bad_request(
                f'{self.res.kind} in version "{self.res.version}" cannot be handled as a '
                f"{self.res.kind}: {res.decode_error}")
        if res.unknown and opts.field_validation != "Ignore":
            if opts.field_validation == "Strict":
                detail = ", ".join(f'unknown field "{u}"' for u in res.unknown)
                raise StatusError.bad_request(
                    f'{self.res.kind} in version "{self.res.version}" cannot be handled as a '
                    f"{self.res.kind}: strict decoding error: {detail}")
            opts.warnings.extend(f'unknown field "{u}"' for u in res.unknown)
        if res.errors:
            name = (obj.get("metadata") or {}).get("name", "")
            raise self.invalid(name, res.errors)

    # -- writes ----------------------------------------------------------------------------

    def _now(self) -> str:
        return meta.rfc3339(self.ctx.clock.now())

    def _manager(self, opts: Options) -> str:
        return opts.field_manager or default_manager(opts.user_agent)

    def _track_fields(self, old: Obj | None, new: Obj, opts: Options, subresource: str) -> None:
        if opts.managed_fields is not None:
            new["metadata"]["managedFields"] = opts.managed_fields
            return
        node = self.ctx.schema(self.storage_res)
        if node is None:
            return
        _fieldmanager().update_managed_fields(
            old, new, manager=self._manager(opts), operation="Update",
            subresource=subresource, schema=node, now=self._now())

    def _validate_create(self, obj: Obj) -> None:
        errs = _meta_validation().validate_metadata(
            self.storage_res.group, self.storage_res.kind, obj, namespaced=self.res.namespaced)
        errs += self.strategy.validate(obj)
        if errs:
            raise self.invalid(obj["metadata"].get("name", ""), errs)

    async def create(self, ns: str, obj: Obj, opts: Options) -> Obj:
        """Create ``obj`` (already type-checked); returns it as stored."""
        md = obj.get("metadata")
        if not isinstance(md, dict):
            md = obj["metadata"] = {}
        self._prepare_namespace(md, ns)
        md.pop("resourceVersion", None)
        for k in _SERVER_META:
            md.pop(k, None)
        md["uid"] = meta.new_uid()
        md["creationTimestamp"] = self._now()
        generated = not md.get("name") and bool(md.get("generateName"))
        if generated:
            md["name"] = meta.generate_name(md["generateName"])
        stored = self.to_storage(obj)
        self.strategy.default(stored)
        # as upstream, the writer owns what it sent, defaults included, but not what the
        # server adds after (admission: a pod's service account volume, tolerations, ...)
        self._track_fields(None, stored, opts, "")
        self.strategy.prepare_create(stored)
        self._validate_create(stored)
        await admission.admit_create(self.ctx, self.storage_res, stored, dry_run=opts.dry_run,
                                     user=opts.user)
        name = stored["metadata"]["name"]
        if opts.dry_run:  # (a dry run's allocations are given back by admission)
            if await self.ctx.backend.get(self.res.key(ns, name)) is not None:
                raise StatusError.already_exists(self.res.plural, name, self.res.group)
            return self.view(stored)
        data = codec.storage_bytes(stored)
        for attempt in range(3):
            try:
                kv = await self.ctx.backend.create(self.res.key(ns, name), data)
                break
            except AlreadyExistsError:
                if not generated or attempt == 2:
                    await admission.on_deleted(self.ctx, self.storage_res, stored)
                    raise StatusError.already_exists(self.res.plural, name,
                                                     self.res.group) from None
                name = stored["metadata"]["name"] = meta.generate_name(md["generateName"])
                data = codec.storage_bytes(stored)
        stored["metadata"]["resourceVersion"] = str(kv.mod_revision)
        return self.view(stored)

    def _prepare_namespace(self, md: Obj, ns: str) -> None:
        if self.res.namespaced:
            given = md.get("namespace")
            if given and ns and given != ns:
                raise StatusError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request")
            md["namespace"] = ns or given or ""
        else:
            md.pop("namespace", None)

    async def update(self, ns: str, name: str, obj: Obj, opts: Options, *,
                     subresource: str = "") -> tuple[Obj, bool]:
        """PUT: replace the object (or its status). Returns (object, created)."""
        md = obj.get("metadata")
        if not isinstance(md, dict):
            md = obj["metadata"] = {}
        if md.get("name") and md["name"] != name:
            raise StatusError.bad_request(
                f"the name of the object ({md['name']}) does not match the name on the URL "
                f"({name})")
        md["name"] = name
        self._prepare_namespace(md, ns)
        kv = await self.ctx.backend.get(self.res.key(ns, name))
        if kv is None:
            if (self.storage_res.group, self.storage_res.kind) in _CREATE_ON_UPDATE \
                    and not subresource:
                return await self.create(ns, obj, opts), True
            raise self.not_found(name)
        want_rv = md.get("resourceVersion")
        if want_rv:
            if _parse_rv(want_rv, conflict_name=name, store=self) != kv.mod_revision:
                raise self.conflict(name)
        new = await self._apply_update(kv, self.to_storage(obj), opts, subresource)
        return new, False

    async def _apply_update(self, kv: KeyValue, new: Obj, opts: Options,
                            subresource: str) -> Obj:
        """Write ``new`` (storage form) over the stored ``kv``; returns the view."""
        old = codec.load_stored(kv.value, kv.mod_revision)
        name = old["metadata"]["name"]
        new_md = new.setdefault("metadata", {})
        if new_md.get("uid") and new_md["uid"] != old["metadata"].get("uid"):
            raise StatusError(409, "Conflict",
                              f"Precondition failed: UID in precondition: {new_md['uid']}, UID in "
                              f"object meta: {old['metadata'].get('uid')}")
        if subresource in _STATUS_LIKE:
            new = self.strategy.prepare_status_update(new, old, subresource)
            errs = self.strategy.validate_status_update(new, old)
        else:
            for k in _SERVER_META:
                if k in old["metadata"]:
                    new_md[k] = old["metadata"][k]
                else:
                    new_md.pop(k, None)
            if "managedFields" not in new_md and "managedFields" in old["metadata"]:
                new_md["managedFields"] = old["metadata"]["managedFields"]
            self.strategy.default(new)
            self.strategy.prepare_update(new, old)
            errs = _meta_validation().validate_metadata_update(new, old)
            errs += self.strategy.validate_update(new, old)
        if errs:
            raise self.invalid(name, errs)
        await admission.admit_update(self.ctx, self.storage_res, new, old,
                                     dry_run=opts.dry_run, user=opts.user,
                                     subresource=subresource)
        self._track_fields(old, new, opts, subresource)
        new["metadata"].pop("resourceVersion", None)
        old_md = old["metadata"]
        old_md.pop("resourceVersion", None)
        if _same(new, old):
            old_md["resourceVersion"] = str(kv.mod_revision)
            return self.view(old)
        if opts.dry_run:
            new["metadata"]["resourceVersion"] = str(kv.mod_revision)
            return self.view(new)
        nmd = new["metadata"]
        if nmd.get("deletionTimestamp") and not self._has_finalizers(new) and \
                not nmd.get("deletionGracePeriodSeconds"):
            return await self._remove(kv, new)
        try:
            out = await self.ctx.backend.update(kv.key, codec.storage_bytes(new),
                                                expected_revision=kv.mod_revision)
        except ConflictError:
            raise self.conflict(name) from None
        except NotFoundError:
            raise self.not_found(name) from None
        nmd["resourceVersion"] = str(out.mod_revision)
        return self.view(new)

    async def guaranteed_update(self, ns: str, name: str, fn: Callable[[Obj], Obj | None],
                                opts: Options, *, subresource: str = "",
                                precondition_rv: int = 0, fn_copies: bool = False) -> Obj:
        """Read-modify-write with retries on conflict; ``fn`` gets the view, returns the new
        view (or None to leave the object as it is). ``fn_copies``: ``fn`` builds its
        result afresh and leaves its argument alone, which then need not be a copy."""
        for attempt in range(_PATCH_RETRIES):
            kv = await self.get_kv(ns, name)
            if precondition_rv and kv.mod_revision != precondition_rv:
                raise self.conflict(name)
            current = self.kv_object(kv)
            new = fn(current if fn_copies else copy.deepcopy(current))
            if new is None:
                return current
            try:
                return await self._apply_update(kv, self.to_storage(new), opts, subresource)
            except StatusError as e:
                if e.code == 409 and e.reason == "Conflict" and not precondition_rv and \
                        attempt < _PATCH_RETRIES - 1:
                    continue
                raise
        raise self.conflict(name)

    async def patch(self, ns: str, name: str, patch_type: str, body: bytes, opts: Options, *,
                    subresource: str = "") -> tuple[Obj, bool]:
        """PATCH with any of the four patch types. Returns (object, created)."""
        if patch_type == codec.APPLY_PATCH:
            return await self.apply(ns, name, body, opts, subresource=subresource)
        doc = codec.decode_json(body) if patch_type != codec.APPLY_PATCH else None
        if patch_type == codec.JSON_PATCH:
            if not isinstance(doc, list):
                raise StatusError.bad_request(
                    "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        elif not isinstance(doc, dict):
            raise StatusError.bad_request(
                "couldn't get version/kind; json parse error: json: cannot unmarshal "
                "array into Go value of type struct")
        if patch_type == codec.STRATEGIC_PATCH and self.res.crd:
            raise StatusError.unsupported_media_type(patch_type)
        precondition = 0
        if isinstance(doc, dict):
            rv = (doc.get("metadata") or {}).get("resourceVersion")
            if rv:
                precondition = _parse_rv(rv, conflict_name=name, store=self)

        def mutate(current: Obj) -> Obj:
            try:
                if patch_type == codec.JSON_PATCH:
                    out = patch.json_patch(current, doc)
                elif patch_type == codec.MERGE_PATCH:
                    out = patch.merge_patch(current, doc)
                elif patch_type == codec.STRATEGIC_PATCH:
                    schema = patch.schema_for(self.ctx.compiler.defs, self.res.definition) \
                        if self.ctx.compiler.defs is not None and \
                        self.res.definition in self.ctx.compiler.defs else None
                    assert isinstance(doc, dict)
                    out = patch.strategic_merge_patch(current, doc, schema)
                else:
                    raise StatusError.unsupported_media_type(patch_type)
            except patch.PatchError as e:
                if e.code == 422:
                    raise StatusError(422, "Invalid", e.message) from None
                raise StatusError.bad_request(e.message) from None
            if not isinstance(out, dict):
                raise StatusError.bad_request("patched object is not an object")
            if out.get("apiVersion") != current.get("apiVersion") or \
                    out.get("kind") != current.get("kind"):
                self.check_type(out)
            self.decode_walk(out, opts)
            md = out.setdefault("metadata", {})
            if md.get("name") != name:
                raise StatusError.bad_request(
                    f"the name of the object ({md.get('name')}) does not match the name on the "
                    f"URL ({name})")
            return out

        # the patch functions work on a copy of the object they are given
        obj = await self.guaranteed_update(ns, name, mutate, opts, subresource=subresource,
                                           precondition_rv=precondition, fn_copies=True)
        return obj, False

    async def apply(self, ns: str, name: str, body: bytes, opts: Options, *,
                    subresource: str = "") -> tuple[Obj, bool]:
        """Server-side apply (``application/apply-patch+yaml``)."""
        applied = codec.decode_yaml(body)
        if not isinstance(applied, dict):
            raise StatusError.bad_request("error decoding YAML: the applied configuration must "
                                          "be an object")
        if not opts.field_manager:
            raise StatusError.bad_request(
                "PATCH, application/apply-patch+yaml requests must have a fieldManager "
                "query parameter")
        if not applied.get("apiVersion"):
            raise StatusError.bad_request("apiVersion must be set")
        if not applied.get("kind"):
            raise StatusError.bad_request("kind must be set")
        self.check_type(applied)
        md = applied.setdefault("metadata", {})
        if md.get("name") and md["name"] != name:
            raise StatusError.bad_request(
                f"the name of the object ({md['name']}) does not match the name on the URL "
                f"({name})")
        md["name"] = name
        self._prepare_namespace(md, ns)
        self.decode_walk(applied, opts)
        node = self.ctx.schema(self.res)
        fieldmanager = _fieldmanager()
        for attempt in range(_PATCH_RETRIES):
            kv = await self.ctx.backend.get(self.res.key(ns, name))
            live = self.kv_object(kv) if kv is not None else None
            try:
                merged = fieldmanager.apply(
                    copy.deepcopy(live) if live is not None else None, copy.deepcopy(applied),
                    manager=opts.field_manager, force=opts.force,
                    schema=node if node is not None else _EMPTY_NODE(), now=self._now(),
                    subresource=subresource)
            except fieldmanager.ApplyConflict as e:
                raise StatusError(
                    409, "Conflict", e.message,
                    {"causes": [{"reason": "FieldManagerConflict",
                                 "message": f'conflict with "{mgr}"', "field": path}
                                for mgr, path in e.conflicts]}) from None
            if kv is None:
                if subresource:
                    raise self.not_found(name)
                managed = merged.get("metadata", {}).get("managedFields")
                obj = await self._create_applied(ns, merged, managed, opts)
                return obj, True
            try:
                return await self._apply_update_keep_fields(kv, merged, opts, subresource), False
            except StatusError as e:
                if e.code == 409 and e.reason == "Conflict" and attempt < _PATCH_RETRIES - 1:
                    continue
                raise
        raise self.conflict(name)

    async def _create_applied(self, ns: str, obj: Obj, managed: Any, opts: Options) -> Obj:
        out = await self.create(ns, obj, _keep(opts, managed_fields=managed))
        return out

    async def _apply_update_keep_fields(self, kv: KeyValue, new: Obj, opts: Options,
                                        subresource: str) -> Obj:
        return await self._apply_update(kv, self.to_storage(new),
                                        _keep(opts, managed_fields=new["metadata"].get(
                                            "managedFields")), subresource)

    # -- deletion ------------------------------------------------------------------------

    async def delete(self, ns: str, name: str, options: Obj, opts: Options) -> tuple[Obj, int]:
        """DELETE; returns (object, HTTP status). Graceful and finalizer-driven when due."""
        for _ in range(_PATCH_RETRIES):
            kv = await self.get_kv(ns, name)
            obj = codec.load_stored(kv.value, kv.mod_revision)
            admission.admit_delete(self.storage_res, obj)
            md = obj["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise StatusError(409, "Conflict",
                                  f"Precondition failed: UID in precondition: {pre['uid']}, UID "
                                  f"in object meta: {md.get('uid')}",
                                  {"name": name, "group": self.res.group,
                                   "kind": self.res.plural})
            if pre.get("resourceVersion") and pre["resourceVersion"] != str(kv.mod_revision):
                raise StatusError(409, "Conflict",
                                  f"Precondition failed: ResourceVersion in precondition: "
                                  f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                  f"{kv.mod_revision}",
                                  {"name": name, "group": self.res.group,
                                   "kind": self.res.plural})
            policy = options.get("propagationPolicy")
            if not policy and options.get("orphanDependents") is not None:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            finalizers = list(md.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers = [f for f in finalizers if f != "orphan"] + ["foregroundDeletion"]
            elif policy == "Orphan" and "orphan" not in finalizers:
                finalizers = [f for f in finalizers if f != "foregroundDeletion"] + ["orphan"]
            grace = self._grace_period(obj, options)
            spec_finalizers = self._spec_finalizers(obj)
            if not finalizers and not spec_finalizers and grace == 0:
                if opts.dry_run:
                    return self.view(obj), 200
                try:
                    await self._remove(kv, obj)
                except StatusError as e:
                    if e.code == 409:
                        continue
                    raise
                return self.view(obj), 200
            # graceful or finalizer-driven: mark for deletion and keep the object
            # only the top level of metadata (and a namespace's status) changes
            new = {**obj, "metadata": dict(md)}
            nmd = new["metadata"]
            nmd["finalizers"] = finalizers
            if not finalizers:
                nmd.pop("finalizers")
            now = self.ctx.clock.now()
            if not nmd.get("deletionTimestamp") or grace < (nmd.get("deletionGracePeriodSeconds") or 0):
                nmd["deletionTimestamp"] = meta.rfc3339(now + grace)
                nmd["deletionGracePeriodSeconds"] = grace
            if self.res.kind == "Namespace" and self.res.group == "":
                new["status"] = {**(obj.get("status") or {}), "phase": "Terminating"}
            if new == obj:
                return self.view(obj), 200
            if opts.dry_run:
                return self.view(new), 200
            nmd.pop("resourceVersion", None)
            if not self._has_finalizers(new) and not nmd.get("deletionGracePeriodSeconds"):
                await self._remove(kv, obj)
                return self.view(obj), 200
            try:
                out = await self.ctx.backend.update(kv.key, codec.storage_bytes(new),
                                                    expected_revision=kv.mod_revision)
            except (ConflictError, NotFoundError):
                continue
            nmd["resourceVersion"] = str(out.mod_revision)
            return self.view(new), 200
        raise self.conflict(name)

    def _spec_finalizers(self, obj: Obj) -> builtins.list[str]:
        """Namespaces also wait for ``spec.finalizers`` (emptied through ``/finalize``)."""
        if self.res.group == "" and self.res.kind == "Namespace":
            return list((obj.get("spec") or {}).get("finalizers") or [])
        return []

    def _has_finalizers(self, obj: Obj) -> bool:
        return bool(obj["metadata"].get("finalizers") or self._spec_finalizers(obj))

    def _grace_period(self, obj: Obj, options: Obj) -> int:
        if not (self.res.group == "" and self.res.kind == "Pod"):
            return 0
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        given = options.get("gracePeriodSeconds")
        if given is not None:
            return max(0, int(given))
        md = obj["metadata"]
        if md.get("deletionGracePeriodSeconds") is not None:
            return int(md["deletionGracePeriodSeconds"])
        return int(spec.get("terminationGracePeriodSeconds", 30))

    async def _remove(self, kv: KeyValue, obj: Obj) -> Obj:
        try:
            out = await self.ctx.backend.delete(kv.key, expected_revision=kv.mod_revision)
        except ConflictError:
            raise self.conflict(obj["metadata"]["name"]) from None
        except NotFoundError:
            raise self.not_found(obj["metadata"]["name"]) from None
        await admission.on_deleted(self.ctx, self.storage_res, obj)
        obj["metadata"]["resourceVersion"] = str(out.mod_revision)
        return self.view(obj)

    async def delete_collection(self, ns: str, *, label: LabelSelector, field: FieldSelector,
                                options: Obj, opts: Options) -> builtins.list[Obj]:
        page = await self.list(ns, label=label, field=field)
        out = []
        for kv in page.kvs:
            obj = codec.load_stored(kv.value, kv.mod_revision)
            o_ns, o_name = meta.namespace_name(obj)
            try:
                deleted, _ = await self.delete(o_ns, o_name, options, opts)
            except StatusError as e:
                if e.code == 404:
                    continue
                raise
            out.append(deleted)
        return out


def _keep(opts: Options, *, managed_fields: Any) -> Options:
    """Options for a write whose managedFields were computed by server-side apply."""
    return dataclasses.replace(opts, managed_fields=list(managed_fields or []))


def _EMPTY_NODE() -> Any:
    from kybernetes.api.structural import Node

    n = Node()
    n.preserve = True
    return n


def _same(new: Obj, old: Obj) -> bool:
    """Equal apart from managedFields timestamps (a no-op write is not stored)."""
    if new == old:
        return True
    nm, om = new.get("metadata", {}), old.get("metadata", {})
    if {k: v for k, v in new.items() if k != "metadata"} != \
            {k: v for k, v in old.items() if k != "metadata"}:
        return False
    keys = (set(nm) | set(om)) - {"managedFields"}
    if any(nm.get(k) != om.get(k) for k in keys):
        return False
    return _without_times(nm.get("managedFields")) == _without_times(om.get("managedFields"))


def _without_times(entries: Any) -> list[Obj]:
    return [{k: v for k, v in e.items() if k != "time"} for e in entries or []]


def _check_list_options(rv: str, rv_match: str, cont: str) -> None:
    """ValidateListOptions, and the continue/resourceVersion rule of the store."""
    errs: list[FieldError] = []
    if rv_match:
        if not rv:
            errs.append(FieldError.forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided"))
        elif rv_match not in ("Exact", "NotOlderThan"):
            errs.append(FieldError.not_supported("resourceVersionMatch", rv_match,
                                                 ["Exact", "NotOlderThan", ""]))
        elif rv_match == "Exact" and rv == "0":
            errs.append(FieldError.forbidden(
                "resourceVersionMatch",
                'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
        if cont:
            errs.append(FieldError.forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided"))
    if errs:
        raise StatusError.invalid("ListOptions", "", errs, "meta.k8s.io")
    if cont and rv and rv != "0":
        raise StatusError.bad_request(
            "specifying resource version is not allowed when using continue")


def _short_json(obj: Obj) -> str:
    text = orjson.dumps(obj).decode()
    return text if len(text) < 256 else text[:256] + "..."


def _parse_rv(rv: str, *, conflict_name: str = "", store: ObjectStore | None = None) -> int:
    try:
        v = int(rv)
        if v < 0:
            raise ValueError
        return v
    except (TypeError, ValueError):
        if store is not None:
            raise StatusError.invalid(store.res.kind, conflict_name, [FieldError.invalid(
                "metadata.resourceVersion", rv, "must be a valid resource version")],
                store.res.group) from None
        raise StatusError.bad_request(f'invalid resource version "{rv}"') from None
