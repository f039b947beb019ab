"""Subresources other than ``status``: scale, binding, eviction, namespace finalize, and
the node-agent streams (log, exec, attach, port-forward, proxy)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.api import meta, patch
from kybernetes.api.errors import FieldError, StatusError
from kybernetes.api.registry import Resource
from kybernetes.api.selectors import from_label_selector, selector_string
from kybernetes.apiserver import codec

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer, Request

Obj = dict[str, Any]

_STREAMS = ("log", "exec", "attach", "portforward", "proxy")


async def dispatch(server: APIServer, req: Request, res: Resource, ns: str, name: str,
                   sub: str) -> int:
    m = req.method
    if sub == "scale":
        req.verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(m, m.lower())
        return await scale(server, req, res, ns, name)
    if sub == "binding" and m == "POST":
        req.verb = "create"
        return await binding(server, req, res, ns, name)
    if sub == "eviction" and m == "POST":
        req.verb = "create"
        return await eviction(server, req, res, ns, name)
    if sub == "token" and m == "POST" and res.kind == "ServiceAccount":
        from kybernetes.apiserver import serviceaccounts

        req.verb = "create"
        return await serviceaccounts.token_request(server, req, res, ns, name)
    if sub == "finalize" and m == "PUT":
        req.verb = "update"
        return await finalize(server, req, res, name)
    if sub == "ephemeralcontainers":
        if m == "GET":
            req.verb = "get"
            return await server.get(req, res, ns, name)
        if m in ("PUT", "PATCH"):
            req.verb = m.lower()
            return await (server.update(req, res, ns, name, "ephemeralcontainers") if m == "PUT"
                          else server.patch(req, res, ns, name, "ephemeralcontainers"))
    if sub in _STREAMS:
        req.verb = m.lower()
        return await node_stream(server, req, res, ns, name, sub)
    raise StatusError(405, "MethodNotAllowed",
                      "the server does not allow this method on the requested resource")


# -- scale --------------------------------------------------------------------------------


def _get_path(obj: Obj, path: str) -> Any:
    cur: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.lstrip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def _scale_paths(res: Resource) -> tuple[str, str, str]:
    if res.scale_paths is not None:
        return res.scale_paths
    return ".spec.replicas", ".status.replicas", ""


def to_scale(res: Resource, obj: Obj) -> Obj:
    spec_path, status_path, selector_path = _scale_paths(res)
    md = obj["metadata"]
    status: Obj = {"replicas": _get_path(obj, status_path) or 0}
    if res.crd:
        if selector_path:
            sel = _get_path(obj, selector_path)
            if sel:
                status["selector"] = sel
    else:
        sel = (obj.get("spec") or {}).get("selector")
        if sel is not None:
            status["selector"] = selector_string(sel)
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                       "creationTimestamp") if k in md},
        "spec": {"replicas": _get_path(obj, spec_path) or 0},
        "status": status,
    }


async def scale(server: APIServer, req: Request, res: Resource, ns: str, name: str) -> int:
    store = server.store(res)
    if req.method == "GET":
        obj = await store.get(ns, name)
        return await _send(req, 200, to_scale(res, obj))
    opts = server.options(req)
    body = await req.body()
    spec_path = _scale_paths(res)[0]
    if req.method == "PUT":
        sc = codec.decode_object(req.header(b"content-type"), body)
        if sc.get("kind") not in (None, "Scale"):
            raise StatusError.bad_request(f'Scale in version "v1" cannot be handled as a Scale: '
                                          f'no kind "{sc.get("kind")}" is registered')
        precondition = int((sc.get("metadata") or {}).get("resourceVersion") or 0)
    elif req.method == "PATCH":
        ctype = codec.media_type(req.header(b"content-type"))
        doc = codec.decode_json(body) if ctype != codec.APPLY_PATCH else codec.decode_yaml(body)
        sc = {}
        precondition = 0
    else:
        raise StatusError(405, "MethodNotAllowed", "method not allowed")

    def mutate(current: Obj) -> Obj:
        nonlocal sc
        if req.method == "PATCH":
            cur_scale = to_scale(res, current)
            try:
                if ctype == codec.JSON_PATCH:
                    sc = patch.json_patch(cur_scale, doc)
                elif ctype in (codec.MERGE_PATCH, codec.STRATEGIC_PATCH, codec.APPLY_PATCH):
                    sc = patch.merge_patch(cur_scale, doc)
                else:
                    raise StatusError.unsupported_media_type(ctype)
            except patch.PatchError as e:
                raise StatusError(e.code, "Invalid" if e.code == 422 else "BadRequest",
                                  e.message) from None
        replicas = (sc.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            replicas = 0 if replicas is None else replicas
        if not isinstance(replicas, int) or replicas < 0:
            raise StatusError.invalid("Scale", name, [FieldError.invalid(
                "spec.replicas", replicas, "must be greater than or equal to 0")],
                "autoscaling")
        _set_path(current, spec_path, replicas)
        return current

    obj = await store.guaranteed_update(ns, name, mutate, opts, precondition_rv=precondition)
    return await _send(req, 200, to_scale(res, obj))


# -- pods/binding ---------------------------------------------------------------------------


async def binding(server: APIServer, req: Request, res: Resource, ns: str, name: str) -> int:
    body = codec.decode_object(req.header(b"content-type"), await req.body())
    name = name or (body.get("metadata") or {}).get("name", "")
    target = body.get("target") or {}
    node = target.get("name", "")
    if not node:
        raise StatusError.invalid("Binding", name, [FieldError.required("target.name")])
    store = server.store(res)
    opts = server.options(req)
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    uid = (body.get("metadata") or {}).get("uid")

    def assign(pod: Obj) -> Obj:
        md = pod["metadata"]
        if md.get("deletionTimestamp"):
            raise StatusError.conflict("pods", name, "pod is being deleted, cannot be assigned "
                                       "to a host")
        if uid and md.get("uid") != uid:
            raise StatusError.conflict("pods", name, "Precondition failed: UID in precondition: "
                                       f"{uid}, UID in object meta: {md.get('uid')}")
        spec = pod.setdefault("spec", {})
        if spec.get("nodeName"):
            raise StatusError.conflict("pods", name, f"pod {name} is already assigned to node "
                                       f"\"{spec['nodeName']}\"")
        spec["nodeName"] = node
        if annotations:
            md.setdefault("annotations", {}).update(annotations)
        status = pod.setdefault("status", {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": meta.rfc3339(server.ctx.clock.now())})
        status["conditions"] = conds
        return pod

    # binding writes spec.nodeName and the PodScheduled condition in one update
    async def write() -> None:
        for _ in range(5):
            kv = await store.get_kv(ns, name)
            new = assign(store.kv_object(kv))  # a fresh decode: ours to change
            new["metadata"].pop("resourceVersion", None)
            if opts.dry_run:
                return
            from kybernetes.store import ConflictError

            try:
                await server.ctx.backend.update(kv.key, codec.storage_bytes(new),
                                                expected_revision=kv.mod_revision)
                return
            except ConflictError:
                continue
        raise store.conflict(name)

    await write()
    return await _send(req, 201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Success", "code": 201})


# -- pods/eviction --------------------------------------------------------------------------


async def eviction(server: APIServer, req: Request, res: Resource, ns: str, name: str) -> int:
    body = codec.decode_object(req.header(b"content-type"), await req.body())
    store = server.store(res)
    pod = await store.get(ns, name)
    labels = pod["metadata"].get("labels") or {}
    pdb_res = server.ctx.registry.get("policy", "v1", "poddisruptionbudgets")
    opts = server.options(req)
    phase = (pod.get("status") or {}).get("phase")
    if pdb_res is not None and phase not in ("Succeeded", "Failed", "Pending") and \
            not pod["metadata"].get("deletionTimestamp"):
        pdbs = server.store(pdb_res)
        page = await pdbs.list(ns, label=from_label_selector({}), field=_no_fields())
        matching = [p for p in page.objects()
                    if from_label_selector((p.get("spec") or {}).get("selector")).matches(labels)]
        if len(matching) > 1:
            raise StatusError(500, "InternalError", "This pod has more than one "
                              "PodDisruptionBudget, which the eviction subresource does not "
                              "support.")
        for pdb in matching:
            status = pdb.get("status") or {}
            if status.get("observedGeneration", 0) < pdb["metadata"].get("generation", 1) or \
                    status.get("disruptionsAllowed", 0) <= 0:
                raise StatusError(
                    429, "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {"causes": [{"reason": "DisruptionBudget",
                                 "message": f"The disruption budget {pdb['metadata']['name']} "
                                            f"needs {status.get('desiredHealthy', 0)} healthy "
                                            f"pods and has {status.get('currentHealthy', 0)} "
                                            "currently"}]})

            def take(p: Obj) -> Obj:
                st = p.setdefault("status", {})
                st["disruptionsAllowed"] = max(0, st.get("disruptionsAllowed", 0) - 1)
                st.setdefault("disruptedPods", {})[name] = meta.rfc3339(server.ctx.clock.now())
                return p

            await pdbs.guaranteed_update(ns, pdb["metadata"]["name"], take, opts,
                                         subresource="status")
    options = body.get("deleteOptions") or {}
    await store.delete(ns, name, options, opts)
    return await _send(req, 201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Success", "code": 201})


def _no_fields() -> Any:
    from kybernetes.api.selectors import FieldSelector

    return FieldSelector()


# -- namespaces/finalize --------------------------------------------------------------------


async def finalize(server: APIServer, req: Request, res: Resource, name: str) -> int:
    body = codec.decode_object(req.header(b"content-type"), await req.body())
    finalizers = list((body.get("spec") or {}).get("finalizers") or [])
    store = server.store(res)
    opts = server.options(req)

    def set_finalizers(ns_obj: Obj) -> Obj:
        ns_obj.setdefault("spec", {})["finalizers"] = finalizers
        if not finalizers:
            ns_obj["spec"].pop("finalizers")
        return ns_obj

    out = await store.guaranteed_update("", name, set_finalizers, opts, subresource="finalize")
    return await _send(req, 200, out)


# -- streams served by the node agent ---------------------------------------------------------


async def node_stream(server: APIServer, req: Request, res: Resource, ns: str, name: str,
                      sub: str) -> int:
    if res.kind == "Pod" and sub in ("log", "exec", "attach", "portforward"):
        from kybernetes.apiserver import nodeproxy

        return await nodeproxy.proxy_request(server, req, res, ns, name, sub)
    await server.store(res).get(ns, name)
    raise StatusError(503, "ServiceUnavailable",
                      f"{res.plural}/{sub} is served by the node agent, which does not serve "
                      "it yet")


async def _send(req: Request, status: int, obj: Obj) -> int:
    from kybernetes.apiserver.app import send_bytes

    await send_bytes(req.send, status, orjson.dumps(obj))
    return status
