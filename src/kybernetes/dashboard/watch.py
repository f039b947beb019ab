"""Several watches over one response, for a browser.

A browser holds at most six HTTP/1.1 connections to a server, and a page of the
dashboard follows up to eight kinds at once, so it asks for all of them in one request::

    GET /dashboard/api/watch?resources=/api/v1/pods,/apis/apps/v1/deployments

and reads newline-delimited JSON: first the current objects (``ADDED``), then one
``{"type": "SYNCED"}`` line, then the changes, each line tagged with the index of its
resource (``"r"``) and otherwise what the API's own watch sends. A resource the server
does not serve, or the token may not list and watch (RBAC, as for the API itself), gets
one ``ERROR`` line (its Status) and is left out.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.api.selectors import EVERYTHING, parse_field_selector
from kybernetes.apiserver.watch import WatchStream
from kybernetes.store import CompactedError, Event

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer, Request

MAX_RESOURCES = 16
TIMEOUT = 1800.0
KEEPALIVE = 30.0


def parse_resources(api: APIServer, text: str) -> list[Resource | StatusError]:
    """``/api/v1/pods,/apis/apps/v1/deployments`` → resources (a StatusError for each
    one the server does not serve)."""
    out: list[Resource | StatusError] = []
    paths = [p for p in text.split(",") if p]
    if not paths or len(paths) > MAX_RESOURCES:
        raise StatusError.bad_request(
            f"resources: between 1 and {MAX_RESOURCES} resource paths are required")
    for path in paths:
        segs = [s for s in path.split("/") if s]
        res = None
        if len(segs) == 3 and segs[0] == "api":
            res = api.ctx.registry.get("", segs[1], segs[2])
        elif len(segs) == 4 and segs[0] == "apis":
            res = api.ctx.registry.get(segs[1], segs[2], segs[3])
        if res is None or "watch" not in res.verbs:
            out.append(StatusError(404, "NotFound",
                                   f"the server could not find the requested resource {path}"))
        else:
            out.append(res)
    return out


def _tag(index: int, line: bytes) -> bytes:
    return b'{"r":%d,%s' % (index, line[1:])


async def serve(api: APIServer, req: Request, *, now: Any) -> int:
    """Answer one multiplexed watch (see the module's docstring)."""
    ns = req.query.get("namespace", "")
    resources = parse_resources(api, req.query.get("resources", ""))
    send = req.send
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"cache-control", b"no-cache, private")]})
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    streams: list[tuple[int, WatchStream, int]] = []
    for i, res in enumerate(resources):
        if not isinstance(res, StatusError):
            try:  # what the token may list and watch, as the API itself would check
                for verb in ("list", "watch"):
                    await api.authorize(req, verb, namespace=ns if res.namespaced else "",
                                        group=res.group, resource=res.plural)
            except StatusError as e:
                res = e
        if isinstance(res, StatusError):
            await send({"type": "http.response.body", "more_body": True,
                        "body": orjson.dumps({"r": i, "type": "ERROR",
                                              "object": res.status()}) + b"\n"})
            continue
        store = api.store(res)
        stream = WatchStream(store, ns if res.namespaced else "", label=EVERYTHING,
                             field=parse_field_selector(""), now=now)
        revision = await stream.initial(send, tag=i)
        streams.append((i, stream, revision))
    await send({"type": "http.response.body", "body": b'{"type":"SYNCED"}\n', "more_body": True})

    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def follow(index: int, stream: WatchStream, after: int) -> None:
        backend = stream.store.ctx.backend
        try:
            watcher = await backend.watch(stream.store.res.key_prefix(stream.ns),
                                          after_revision=after)
        except CompactedError:
            queue.put_nowait(None)  # the client lists again
            return
        try:
            while True:
                batch: list[Event] | None = await watcher.next(KEEPALIVE)
                if batch is None:
                    queue.put_nowait(None)
                    return
                lines = [_tag(index, line) for ev in batch
                         if (line := stream.line(ev)) is not None]
                if lines:
                    queue.put_nowait(b"".join(lines))
        finally:
            watcher.close()

    async def disconnected() -> None:
        while (await req.receive())["type"] != "http.disconnect":
            pass
        queue.put_nowait(None)

    tasks = [spawn(follow(i, s, rev), name="dashboard-watch") for i, s, rev in streams]
    tasks.append(spawn(disconnected(), name="dashboard-watch-disconnect"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    try:
        while (remaining := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(queue.get(), min(remaining, KEEPALIVE))
            except TimeoutError:
                data = b"\n"  # keeps proxies and the browser from giving up on the stream
            if data is None:
                break
            await send({"type": "http.response.body", "body": data, "more_body": True})
    finally:
        for t in tasks:
            await cancel_and_wait(t)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return 200
