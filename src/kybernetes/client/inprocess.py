"""Requests to an API server running in the same process: its ASGI app is called
directly, without a socket, TLS or HTTP framing on either side.

``kyb server`` gives this to its own components (scheduler, controllers, fake nodes, the
node agent beside it). Each request still goes through the whole server as one from the
network would — authentication by the client's token, authorization, admission, audit,
metrics — and bodies are still JSON bytes, so neither side ever shares an object with
the other. A request runs in a task of its own, as it would behind a connection: a
caller that gives up does not cut the server's work short.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import urlencode

from kybernetes.client.stream import lines_of

Message = dict[str, Any]
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Coroutine[Any, Any, None]]

_STREAM_CHUNKS = 256
"""Chunks of a streamed answer (a watch) held for a reader that is behind; the server then
waits, as it waits on a full socket buffer."""


def _receiver(body: bytes, gone: asyncio.Event) -> Callable[[], Awaitable[Message]]:
    """An ASGI ``receive``: the request's body, then the client going away once ``gone``
    is set."""
    handed = False

    async def receive() -> Message:
        nonlocal handed
        if not handed:
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


def _headers_of(start: Message) -> dict[str, str]:
    """An ``http.response.start`` message's headers, names in lower case."""
    return {k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in start.get("headers") or ()}


class InProcessPool:
    """What :class:`~kybernetes.client.stream.HTTPPool` offers the client, over an ASGI
    app in this process."""

    def __init__(self, app: ASGIApp, server: str, *, headers: Mapping[str, str]) -> None:
        self.app = app
        self.server = server
        """The server's URL (for messages; nothing connects to it)."""
        self._headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                         for k, v in headers.items()]
        self._tasks: set[asyncio.Task[None]] = set()

    def _scope(self, method: str, path: str, params: Mapping[str, str],
               headers: Mapping[str, str], length: int | None) -> dict[str, Any]:
        hdrs = self._headers + [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                for k, v in headers.items()]
        if length is not None:
            hdrs.append((b"content-length", str(length).encode()))
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1", "method": method, "scheme": "https", "path": path,
                "raw_path": path.encode("latin-1"),
                "query_string": urlencode(params).encode("latin-1") if params else b"",
                "root_path": "", "headers": hdrs, "client": ("127.0.0.1", 0),
                "server": None, "kyb.peercert": None}

    def _run(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Message]],
             send: Callable[[Message], Awaitable[None]]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self.app(scope, receive, send))
        self._tasks.add(task)  # (the loop holds its tasks only weakly)
        task.add_done_callback(self._tasks.discard)
        return task

    async def request(self, method: str, path: str, params: Mapping[str, str],
                      headers: Mapping[str, str], content: bytes | None
                      ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request."""
        body = content or b""
        answered = asyncio.Event()
        receive = _receiver(body, answered)  # the client "goes away" after the answer
        status = 500
        resp_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                resp_headers.update(_headers_of(message))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        task = self._run(self._scope(method, path, params, headers,
                                     len(body) if content is not None else None),
                         receive, send)
        try:
            await asyncio.shield(task)
        finally:
            answered.set()
        return status, resp_headers, b"".join(chunks)

    async def stream_lines(self, path: str, params: Mapping[str, str]
                           ) -> AsyncGenerator[bytes, None]:
        """GET ``path`` and yield each line of the streamed answer (a non-2xx raises
        :class:`StatusError` from the body). Closing the iterator ends the request."""
        from kybernetes.client.rest import error_from_response

        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        """The answer's chunks, then None."""
        room = asyncio.Event()
        """Cleared while the reader is ``_STREAM_CHUNKS`` behind: the server waits."""
        room.set()
        started: asyncio.Future[tuple[int, dict[str, str]]] = \
            asyncio.get_running_loop().create_future()
        gone = asyncio.Event()
        receive = _receiver(b"", gone)

        async def send(message: Message) -> None:
            if gone.is_set():
                return
            if message["type"] == "http.response.start":
                if not started.done():
                    started.set_result((message["status"], _headers_of(message)))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.put_nowait(message["body"])
                if not message.get("more_body", False):
                    chunks.put_nowait(None)
                elif chunks.qsize() >= _STREAM_CHUNKS:
                    room.clear()
                    await room.wait()

        def ended(_: asyncio.Task[None]) -> None:
            if not started.done():  # it never answered: cancelled, or it broke
                started.set_exception(ConnectionError("the API server did not answer"))
            chunks.put_nowait(None)

        task = self._run(self._scope("GET", path, params, {}, None), receive, send)
        task.add_done_callback(ended)

        async def body() -> AsyncGenerator[bytes, None]:
            while (chunk := await chunks.get()) is not None:
                if chunks.qsize() < _STREAM_CHUNKS // 2:
                    room.set()
                yield chunk

        try:
            status, resp_headers = await started
            if not 200 <= status < 300:
                raise error_from_response(status, b"".join([c async for c in body()]),
                                          resp_headers)
            async with contextlib.aclosing(lines_of(body())) as lines:
                async for line in lines:
                    yield line
        finally:
            gone.set()  # the server's watch sees the client go, and ends
            room.set()

    async def aclose(self) -> None:
        """Stop what is still running (streams whose readers went away without closing)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
