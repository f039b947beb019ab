"""LimitRange admission (upstream's ``plugin/pkg/admission/limitranger``).

On the create of a pod, the ``Container`` limits of its namespace's LimitRanges give
containers their missing requests (``defaultRequest``) and limits (``default``), noted
in the ``kubernetes.io/limit-ranger`` annotation; then ``min``, ``max`` and
``maxLimitRequestRatio`` are enforced per container, ``Pod`` limits on the pod's totals
and ``PersistentVolumeClaim`` limits on a new claim's storage, with upstream's messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import orjson

from kybernetes.api import quantity
from kybernetes.api import quota as q
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver.context import Context

Obj = dict[str, Any]
ANNOTATION = "kubernetes.io/limit-ranger"
_MAX_MILLI = (2**63 - 1) // 1000


def _text(v: q.Q) -> str:
    return quantity.format_quantity(*v)


def _values(req: q.Q | None, lim: q.Q | None, enforced: q.Q) -> tuple[int, int, int]:
    """upstream's ``requestLimitEnforcedValues``: milli-units unless a value is too big."""
    vals = [x[0] if x is not None else Fraction(0) for x in (req, lim, enforced)]
    scale = 1000 if all(abs(v) <= _MAX_MILLI for v in vals) else 1
    rv, lv, ev = (math.ceil(v * scale) for v in vals)
    return rv, lv, ev


def min_constraint(kind: str, name: str, enforced: q.Q, requests: q.Usage,
                   limits: q.Usage) -> str:
    req, lim = requests.get(name), limits.get(name)
    rv, lv, ev = _values(req, lim, enforced)
    if req is None:
        return f"minimum {name} usage per {kind} is {_text(enforced)}.  No request is specified"
    if rv < ev:
        return f"minimum {name} usage per {kind} is {_text(enforced)}, but request is {_text(req)}"
    if lim is not None and lv < ev:
        return f"minimum {name} usage per {kind} is {_text(enforced)}, but limit is {_text(lim)}"
    return ""


def max_constraint(kind: str, name: str, enforced: q.Q, requests: q.Usage,
                   limits: q.Usage) -> str:
    req, lim = requests.get(name), limits.get(name)
    rv, lv, ev = _values(req, lim, enforced)
    if lim is None:
        return f"maximum {name} usage per {kind} is {_text(enforced)}.  No limit is specified"
    if lv > ev:
        return f"maximum {name} usage per {kind} is {_text(enforced)}, but limit is {_text(lim)}"
    if req is not None and rv > ev:
        return f"maximum {name} usage per {kind} is {_text(enforced)}, but request is {_text(req)}"
    return ""


def ratio_constraint(kind: str, name: str, enforced: q.Q, requests: q.Usage,
                     limits: q.Usage) -> str:
    req, lim = requests.get(name), limits.get(name)
    rv, lv, _ = _values(req, lim, enforced)
    head = f"{name} max limit to request ratio per {kind} is {_text(enforced)}"
    if req is None or rv == 0:
        return f"{head}, but no request is specified or request is 0"
    if lim is None or lv == 0:
        return f"{head}, but no limit is specified or limit is 0"
    observed = lv / rv
    if observed > enforced[0]:
        return f"{head}, but provided ratio is {observed:f}"
    return ""


def check(kind: str, item: Mapping[str, Any], requests: q.Usage, limits: q.Usage) -> list[str]:
    """The violations of one LimitRange item by these requests and limits."""
    errs: list[str] = []
    for field, fn in (("min", min_constraint), ("max", max_constraint),
                      ("maxLimitRequestRatio", ratio_constraint)):
        for name, enforced in sorted(q.parse_list(item.get(field)).items()):
            msg = fn(kind, name, enforced, requests, limits)
            if msg:
                errs.append(msg)
    return errs


def apply_defaults(pod: Obj, items: Sequence[Mapping[str, Any]]) -> None:
    """Fill in containers' missing requests and limits from ``Container`` defaults."""
    notes: list[str] = []
    spec = pod.setdefault("spec", {})
    for item in items:
        if item.get("type") != "Container":
            continue
        default, request = item.get("default") or {}, item.get("defaultRequest") or {}
        if not default and not request:
            continue
        for prefix, key in (("init container", "initContainers"), ("container", "containers")):
            for c in spec.get(key) or []:
                res = c.setdefault("resources", {})
                set_lim = [k for k in default if k not in (res.get("limits") or {})]
                set_req = [k for k in request if k not in (res.get("requests") or {})]
                for k in set_lim:
                    res.setdefault("limits", {})[k] = quantity.canonical(default[k])
                for k in set_req:
                    res.setdefault("requests", {})[k] = quantity.canonical(request[k])
                if set_req:
                    notes.append(f"{', '.join(sorted(set_req))} request for {prefix} "
                                 f"{c.get('name', '')}")
                if set_lim:
                    notes.append(f"{', '.join(sorted(set_lim))} limit for {prefix} "
                                 f"{c.get('name', '')}")
    if notes:
        annotations = pod.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)


def validate_pod(pod: Obj, items: Sequence[Mapping[str, Any]]) -> list[str]:
    spec = pod.get("spec") or {}
    errs: list[str] = []
    for item in items:
        kind = item.get("type")
        if kind == "Container":
            for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
                r = c.get("resources") or {}
                errs += check("Container", item, q.parse_list(r.get("requests")),
                              q.parse_list(r.get("limits")))
        elif kind == "Pod":
            requests, limits = q.pod_totals(pod)
            errs += check("Pod", item, requests, limits)
    return errs


def validate_claim(claim: Obj, items: Sequence[Mapping[str, Any]]) -> list[str]:
    r = (claim.get("spec") or {}).get("resources") or {}
    requests = q.parse_list(r.get("requests"))
    errs: list[str] = []
    kind = "PersistentVolumeClaim"
    for item in items:
        if item.get("type") != kind:
            continue
        # limits of a claim are not user input: min is checked on the request alone
        for name, enforced in sorted(q.parse_list(item.get("min")).items()):
            errs.append(min_constraint(kind, name, enforced, requests, {}))
        # and max against the request (upstream's maxRequestConstraint)
        for name, enforced in sorted(q.parse_list(item.get("max")).items()):
            req = requests.get(name)
            if req is None:
                errs.append(f"maximum {name} usage per {kind} is {_text(enforced)}.  No "
                            "request is specified")
            elif req[0] > enforced[0]:
                errs.append(f"maximum {name} usage per {kind} is {_text(enforced)}, but "
                            f"request is {_text(req)}")
    return [e for e in errs if e]


def _aggregate(errs: list[str]) -> str:
    return errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"


async def admit(ctx: Context, res: Resource, obj: Obj) -> None:
    """Default and check a new pod or claim against its namespace's LimitRanges."""
    if res.group != "" or res.kind not in ("Pod", "PersistentVolumeClaim"):
        return
    ns = (obj.get("metadata") or {}).get("namespace") or ""
    lres = ctx.registry.get("", "v1", "limitranges")
    if not ns or lres is None:
        return
    items = [item for kv in await ctx.kind_cache(lres).items(ns)
             for item in ((orjson.loads(kv.value).get("spec") or {}).get("limits") or [])
             if isinstance(item, dict)]
    if not items:
        return
    if res.kind == "Pod":
        apply_defaults(obj, items)
        errs = validate_pod(obj, items)
    else:
        errs = validate_claim(obj, items)
    if errs:
        md = obj.get("metadata") or {}
        raise StatusError.forbidden(res.plural, md.get("name") or md.get("generateName", ""),
                                    _aggregate(errs))
