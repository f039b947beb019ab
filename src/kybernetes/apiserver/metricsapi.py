"""``metrics.k8s.io/v1beta1``: NodeMetrics and PodMetrics, read from the node agents.

What metrics-server does in a cluster, served by the API server itself: on each request
it asks the agents concerned for their usage summary (``/stats/summary``, kubelet's
Summary API shape) and turns it into metrics objects. CPU is a rate (nanocores, over the
``window`` the agent measured), memory the working set. Nodes whose agent does not answer
are left out, as metrics-server leaves them out.
"""

from __future__ import annotations

import asyncio
import logging
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.api import quantity
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver.nodeproxy import agent_endpoint, agent_get

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer, Request

log = logging.getLogger(__name__)
Obj = dict[str, Any]

FETCH_TIMEOUT = 5.0
API_VERSION = "metrics.k8s.io/v1beta1"


def cpu(nano_cores: int) -> str:
    return quantity.format_quantity(Fraction(nano_cores, 1_000_000_000))


def memory(n_bytes: int) -> str:
    return quantity.format_quantity(Fraction(n_bytes), quantity.BINARY_SI)


def _window(stat: Obj) -> str:
    w = float(stat.get("window") or 0)
    return f"{w:.3f}".rstrip("0").rstrip(".") + "s"


async def node_summary(server: APIServer, node: Obj) -> Obj | None:
    endpoint = agent_endpoint(node)
    if endpoint is None:
        return None
    try:
        code, body = await asyncio.wait_for(
            agent_get(server, endpoint[0], endpoint[1], "/stats/summary"), FETCH_TIMEOUT)
        if code != 200:
            raise StatusError.internal(f"status {code}")
        out: Obj = orjson.loads(body)
        return out
    except (StatusError, OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
        log.debug("no usage from node %s: %s", node["metadata"].get("name"), e)
        return None


def _meta(obj: Obj) -> Obj:
    md = obj.get("metadata") or {}
    out: Obj = {"name": md.get("name"), "creationTimestamp": md.get("creationTimestamp")}
    if md.get("namespace"):
        out["namespace"] = md["namespace"]
    if md.get("labels"):
        out["labels"] = md["labels"]
    return out


def node_metrics(node: Obj, summary: Obj) -> Obj | None:
    n = summary.get("node") or {}
    c, m = n.get("cpu") or {}, n.get("memory") or {}
    if "usageNanoCores" not in c or "workingSetBytes" not in m:
        return None
    return {"kind": "NodeMetrics", "apiVersion": API_VERSION, "metadata": _meta(node),
            "timestamp": c.get("time") or m.get("time"), "window": _window(c),
            "usage": {"cpu": cpu(int(c["usageNanoCores"])),
                      "memory": memory(int(m["workingSetBytes"]))}}


def pod_metrics(pod: Obj, entry: Obj) -> Obj | None:
    containers, stamp, window = [], "", "0s"
    for ct in entry.get("containers") or []:
        c, m = ct.get("cpu") or {}, ct.get("memory") or {}
        if "usageNanoCores" not in c or "workingSetBytes" not in m:
            continue
        containers.append({"name": ct.get("name"),
                           "usage": {"cpu": cpu(int(c["usageNanoCores"])),
                                     "memory": memory(int(m["workingSetBytes"]))}})
        stamp, window = c.get("time") or stamp, _window(c)
    if not containers:
        return None
    return {"kind": "PodMetrics", "apiVersion": API_VERSION, "metadata": _meta(pod),
            "timestamp": stamp, "window": window, "containers": containers}


async def serve(server: APIServer, req: Request, res: Resource, ns: str, name: str) -> int:
    """GET (one object) and list of ``nodes`` or ``pods`` metrics."""
    from kybernetes.apiserver.app import send_bytes

    if req.method != "GET" or req.query.get("watch") in ("1", "true"):
        raise StatusError(405, "MethodNotAllowed",
                          "the server does not allow this method on the requested resource")
    req.verb = "get" if name else "list"
    label, fld = server.selectors(req)
    reg = server.ctx.registry
    nodes_res = reg.get("", "v1", "nodes")
    pods_res = reg.get("", "v1", "pods")
    assert nodes_res is not None and pods_res is not None
    items: list[Obj] = []
    if res.plural == "nodes":
        if name:
            nodes = [await _get_or_not_found(server, nodes_res, res, "", name)]
        else:
            nodes = (await server.store(nodes_res).list("", label=label, field=fld)).objects()
        summaries = await asyncio.gather(*(node_summary(server, n) for n in nodes))
        for node, summary in zip(nodes, summaries, strict=True):
            m = node_metrics(node, summary) if summary is not None else None
            if m is not None:
                items.append(m)
    else:
        if name:
            pods = [await _get_or_not_found(server, pods_res, res, ns, name)]
        else:
            pods = (await server.store(pods_res).list(ns, label=label, field=fld)).objects()
        pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                and (p.get("spec") or {}).get("nodeName")]
        node_names = sorted({p["spec"]["nodeName"] for p in pods})
        node_objs = []
        for n in node_names:
            try:
                node_objs.append(await server.store(nodes_res).get("", n))
            except StatusError:
                continue
        summaries = await asyncio.gather(*(node_summary(server, n) for n in node_objs))
        entries: dict[str, Obj] = {}
        for summary in summaries:
            for entry in (summary or {}).get("pods") or []:
                entries[(entry.get("podRef") or {}).get("uid", "")] = entry
        for pod in pods:
            entry = entries.get(pod["metadata"].get("uid", ""))
            m = pod_metrics(pod, entry) if entry is not None else None
            if m is not None:
                items.append(m)
    if name:
        if not items:
            raise StatusError.not_found(res.kind.lower(), name, res.group)
        body = orjson.dumps(items[0])
    else:
        body = orjson.dumps({"kind": res.list_kind, "apiVersion": API_VERSION,
                             "metadata": {}, "items": items})
    await send_bytes(req.send, 200, body)
    return 200


async def _get_or_not_found(server: APIServer, source: Resource, res: Resource, ns: str,
                            name: str) -> Obj:
    try:
        obj: Obj = await server.store(source).get(ns, name)
        return obj
    except StatusError as e:
        if e.code == 404:
            raise StatusError.not_found(res.kind.lower(), name, res.group) from None
        raise
