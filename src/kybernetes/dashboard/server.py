"""The dashboard: static pages plus a few JSON endpoints, served by the API server.

    GET /dashboard/                         the single-page app (public: it holds no data)
    GET /dashboard/static/<file>            its script and style sheet
    GET /dashboard/api/watch?resources=...  several watches in one stream (:mod:`.watch`)
    GET /dashboard/api/history/pods/{ns}/{name}    CPU (cores) and memory (bytes) history
    GET /dashboard/api/history/nodes/{name}
    GET /dashboard/api/history/services/{ns}/{name} requests/s, errors/s, mean latency (s)
    GET /dashboard/api/latest/{pods,nodes,services}  the newest sample of each

Everything under ``/dashboard/api`` needs the same bearer token as the API and is
authorized as the API would be (RBAC: list and watch of each kind the stream follows,
get of the object whose history is asked for); the page asks for the token at login and
sends it with every request, so that it can do exactly what the token may do with the
API itself (scaling is a PATCH of ``/scale``, logs are the pod's ``log`` subresource).

The history is sampled every ``interval`` seconds by a task of the server: the usage
summary of each node agent (what ``kubectl top`` reads) and the request counters of the
service proxy and ingress controller, kept for an hour in a :class:`History`.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.selectors import EVERYTHING, parse_field_selector
from kybernetes.apiserver import metricsapi
from kybernetes.dashboard import watch
from kybernetes.dashboard.history import History, Key

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer, Request

log = logging.getLogger(__name__)
Obj = dict[str, Any]

PREFIX = "/dashboard"
STATIC = Path(__file__).parent / "static"
HISTORY_SECONDS = 3600.0
TRAFFIC_WINDOW = 30.0
NODES_REFRESH = 60.0
_KINDS = {"pods": "pod", "nodes": "node", "services": "service"}
FAKE_NODE_LABEL = "kybernetes.io/fake-node"
"""Simulated nodes have no agent to ask for usage."""


Totals = Mapping[tuple[str, str], tuple[int, int, float, int]]


class TrafficTotals(Protocol):
    def totals(self) -> Totals:
        """(namespace, service) → (requests, errors, seconds spent answering the timed
        ones, how many were timed), since the process started."""
        ...


class Dashboard:
    def __init__(self, api: APIServer, *, interval: float = 5.0) -> None:
        self.api = api
        self.interval = interval
        self.history = History(slots=max(1, round(HISTORY_SECONDS / interval)))
        self.traffic: TrafficTotals | None = None
        self._traffic_snapshots: deque[tuple[float, Totals]] = deque()
        self._nodes: tuple[float, int, list[Obj]] = (-NODES_REFRESH, -1, [])
        self._task: asyncio.Task[None] | None = None

    def mount(self) -> None:
        self.api.mount(PREFIX, self.handle)

    async def start(self) -> None:
        self.mount()
        self._task = spawn(self._sample_forever(), name="dashboard-sampler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    # -- requests --------------------------------------------------------------------------

    async def handle(self, req: Request) -> int:
        from kybernetes.apiserver.app import send_bytes

        path = req.path[len(PREFIX):]
        if path == "":
            await send_bytes(req.send, 301, b"", content_type=b"text/plain",
                             headers=[(b"location", b"/dashboard/")])
            return 301
        if req.method != "GET":
            raise StatusError(405, "MethodNotAllowed", "the dashboard only answers GET")
        if path == "/" or path.startswith("/static/"):
            return await self._static(req, "index.html" if path == "/" else path[8:])
        if not path.startswith("/api/"):
            raise StatusError(404, "NotFound", "the server could not find the requested "
                              "resource")
        if req.user is None:
            raise StatusError.unauthorized()
        segs = [s for s in path[5:].split("/") if s]
        if segs == ["watch"]:
            return await watch.serve(self.api, req, now=time.time)
        if len(segs) == 2 and segs[0] == "latest" and segs[1] in _KINDS:
            ns = req.query.get("namespace", "") if segs[1] != "nodes" else ""
            await self.api.authorize(req, "list", namespace=ns, resource=segs[1])
            latest = self.history.latest_of(_KINDS[segs[1]])
            if ns:
                latest = {k: v for k, v in latest.items() if k.startswith(ns + "/")}
            await send_bytes(req.send, 200, orjson.dumps(latest))
            return 200
        if len(segs) >= 3 and segs[0] == "history":
            kind = _KINDS.get(segs[1])
            name = "/".join(segs[2:])
            if kind is None or name.count("/") != (0 if kind == "node" else 1):
                raise StatusError(404, "NotFound", f"no history for {'/'.join(segs[1:])}")
            ns, _, obj = name.rpartition("/")
            await self.api.authorize(req, "get", namespace=ns, resource=segs[1], name=obj)
            since = float(req.query.get("since") or 0) or -float("inf")
            body = {"interval": self.interval, **self.history.series((kind, name), since=since)}
            await send_bytes(req.send, 200, orjson.dumps(body))
            return 200
        raise StatusError(404, "NotFound", "the server could not find the requested resource")

    async def _static(self, req: Request, name: str) -> int:
        from kybernetes.apiserver.app import send_bytes

        path = (STATIC / name).resolve()
        if STATIC.resolve() not in path.parents or not path.is_file():
            raise StatusError(404, "NotFound", f"no such file: {name}")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        await send_bytes(req.send, 200, path.read_bytes(), content_type=ctype.encode(),
                         headers=[(b"x-content-type-options", b"nosniff")])
        return 200

    # -- sampling --------------------------------------------------------------------------

    async def _sample_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample()
            except Exception:
                log.exception("dashboard metrics sampling failed")
            await asyncio.sleep(max(0.1, self.interval - (time.monotonic() - started)))

    async def sample(self) -> None:
        """One round: usage of every node and pod, request rates of every Service."""
        now = time.time()
        values: dict[Key, tuple[float, ...]] = {}
        nodes = await self._real_nodes(now)
        summaries = await asyncio.gather(*(metricsapi.node_summary(self.api, n) for n in nodes))
        for node, summary in zip(nodes, summaries, strict=True):
            if summary is None:
                continue
            n = summary.get("node") or {}
            usage = _usage(n.get("cpu"), n.get("memory"))
            if usage is not None:
                values[("node", node["metadata"]["name"])] = usage
            for entry in summary.get("pods") or []:
                ref = entry.get("podRef") or {}
                cpu = mem = 0.0
                seen = False
                for ct in entry.get("containers") or []:
                    u = _usage(ct.get("cpu"), ct.get("memory"))
                    if u is not None:
                        cpu, mem, seen = cpu + u[0], mem + u[1], True
                if seen:
                    values[("pod", f"{ref.get('namespace')}/{ref.get('name')}")] = (cpu, mem)
        values.update(self._traffic(now))
        self.history.record(now, values)

    async def _real_nodes(self, now: float) -> list[Obj]:
        """The nodes with an agent to ask for usage (fake ones have none), listed again
        when their number changed or every NODES_REFRESH seconds: decoding thousands of
        fake nodes at every sample cost the server ~5 % of its CPU."""
        nodes_res = self.api.ctx.registry.get("", "v1", "nodes")
        assert nodes_res is not None
        count = await self.api.ctx.backend.count(nodes_res.key_prefix())
        at, seen, nodes = self._nodes
        if now - at < NODES_REFRESH and count == seen:
            return nodes
        listed = (await self.api.store(nodes_res).list(
            "", label=EVERYTHING, field=parse_field_selector(""))).objects()
        nodes = [n for n in listed
                 if FAKE_NODE_LABEL not in ((n.get("metadata") or {}).get("labels") or {})]
        self._nodes = (now, count, nodes)
        return nodes

    def _traffic(self, now: float) -> dict[Key, tuple[float, ...]]:
        """Each Service's requests/s, errors/s and mean latency over the last
        :data:`TRAFFIC_WINDOW` seconds (since the first sample, at first)."""
        if self.traffic is None:
            return {}
        totals = dict(self.traffic.totals())
        snaps = self._traffic_snapshots
        snaps.append((now, totals))
        while len(snaps) > 2 and now - snaps[1][0] >= TRAFFIC_WINDOW:
            snaps.popleft()
        then, before = snaps[0]
        if then >= now:
            return {}
        out: dict[Key, tuple[float, ...]] = {}
        for (ns, svc), (n, errors, seconds, timed) in totals.items():
            n0, e0, s0, t0 = before.get((ns, svc), (0, 0, 0.0, 0))
            latency = (seconds - s0) / (timed - t0) if timed > t0 else float("nan")
            out[("service", f"{ns}/{svc}")] = ((n - n0) / (now - then),
                                                (errors - e0) / (now - then), latency)
        return out


def _usage(cpu: Obj | None, memory: Obj | None) -> tuple[float, float] | None:
    cpu, memory = cpu or {}, memory or {}
    if "usageNanoCores" not in cpu or "workingSetBytes" not in memory:
        return None
    return int(cpu["usageNanoCores"]) / 1e9, float(memory["workingSetBytes"])
