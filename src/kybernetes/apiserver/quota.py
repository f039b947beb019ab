"""ResourceQuota admission (upstream's ``plugin/pkg/admission/resourcequota``).

On the create of a namespaced object, every ResourceQuota of its namespace whose
``status.hard`` names a resource the object uses is checked: a quota constraining cpu or
memory needs every container to state them (``failed quota: ...: must specify ...``), a
quota whose status the controller has not yet filled in refuses (``status unknown for
quota``), and a use past ``hard`` is refused with ``exceeded quota: ...``. What passes is
charged at once: the quota's ``status.used`` is rewritten in the store with a
compare-and-swap on its revision (re-checked on conflict), so two concurrent creates
cannot both take the last unit. The resource quota controller releases usage later.
"""

from __future__ import annotations

from typing import Any

import orjson

from kybernetes.api import quota as q
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver import codec
from kybernetes.apiserver.context import Context
from kybernetes.store.backend import ConflictError, KeyValue, NotFoundError

Obj = dict[str, Any]

_RETRIES = 20


class QuotaError(Exception):
    """A refusal; the message is upstream's, without the ``... is forbidden:`` prefix."""


def evaluate(plural: str, group: str, obj: Obj, quota: Obj, usage: q.Usage) -> q.Usage | None:
    """The quota's new ``status.used`` once ``obj`` (using ``usage``) is admitted, None
    when the quota is not concerned; raises :class:`QuotaError` when it refuses."""
    name = (quota.get("metadata") or {}).get("name", "")
    status = quota.get("status") or {}
    hard = q.parse_list(status.get("hard"))
    restricted = q.matching(plural, group, hard)
    if not restricted:
        return None
    if plural == "pods" and group == "":
        missing = q.pod_constraints(restricted, obj)
        if missing:
            raise QuotaError(f"failed quota: {name}: {missing}")
    used = q.parse_list(status.get("used"))
    if any(r not in used for r in restricted):
        raise QuotaError(f"status unknown for quota: {name}, resources: "
                         f"{','.join(sorted(restricted))}")
    requested = q.mask({k: v for k, v in usage.items() if v[0] != 0}, hard)
    if not requested:
        return None
    new = q.add(used, requested)
    over = q.exceeded(q.mask(new, requested), hard)
    if over:
        raise QuotaError(
            f"exceeded quota: {name}, requested: {q.pretty(q.mask(requested, over))}, "
            f"used: {q.pretty(q.mask(used, over))}, limited: {q.pretty(q.mask(hard, over))}")
    return new


def _forbidden(res: Resource, obj: Obj, message: str) -> StatusError:
    md = obj.get("metadata") or {}
    return StatusError.forbidden(res.plural, md.get("name") or md.get("generateName", ""),
                                 message, res.group)


async def admit(ctx: Context, res: Resource, obj: Obj, *, dry_run: bool) -> None:
    """Check ``obj`` against its namespace's quotas and charge them (unless dry run)."""
    ns = (obj.get("metadata") or {}).get("namespace") or ""
    qres = ctx.registry.get("", "v1", "resourcequotas")
    if not res.namespaced or not ns or qres is None:
        return
    items = await ctx.kind_cache(qres).items(ns)
    if not items:
        return
    usage = q.object_usage(res.plural, res.group, obj)
    charges: list[tuple[KeyValue, Obj, q.Usage]] = []
    try:
        # every quota is checked before any is charged
        for kv in items:
            quota = orjson.loads(kv.value)
            new = evaluate(res.plural, res.group, obj, quota, usage)
            if new is not None:
                charges.append((kv, quota, new))
        if dry_run:
            return
        for kv, quota, new in charges:
            await _charge(ctx, res, obj, usage, kv, quota, new)
    except QuotaError as e:
        raise _forbidden(res, obj, str(e)) from None


async def _charge(ctx: Context, res: Resource, obj: Obj, usage: q.Usage, kv: KeyValue,
                  quota: Obj, new: q.Usage) -> None:
    for _ in range(_RETRIES):
        status = quota.setdefault("status", {})
        status["used"] = {**(status.get("used") or {}), **q.to_list(new)}
        try:
            await ctx.backend.update(kv.key, codec.storage_bytes(quota),
                                     expected_revision=kv.mod_revision)
            return
        except NotFoundError:
            return
        except ConflictError:
            fresh = await ctx.backend.get(kv.key)
            if fresh is None:  # the quota is gone: nothing to charge
                return
            kv = fresh
            quota = orjson.loads(kv.value)
            again = evaluate(res.plural, res.group, obj, quota, usage)
            if again is None:
                return
            new = again
    raise StatusError.conflict("resourcequotas", quota["metadata"].get("name", ""),
                               "too many concurrent updates to the quota, please try again")
