"""``kubectl port-forward`` on the node: connections to a port inside a pod's network
namespace, carried by one of the protocols Kubernetes clients speak.

- ``SPDY/3.1+portforward.k8s.io`` over WebSocket (kubectl ≥ 1.31): the WebSocket's binary
  messages carry a SPDY byte stream;
- ``SPDY/3.1`` as a plain HTTP upgrade (older kubectl, and kubectl's fallback);
- ``v4.channel.k8s.io`` over WebSocket (the Python client): ports from the ``ports`` query
  parameter, channel ``2i`` carries port *i*'s data and ``2i+1`` its errors, and the first
  message on each channel is the port number (2 bytes, little-endian).

With SPDY, the client opens two streams per connection it forwards, both naming the
``port`` and a ``requestID``: ``streamType: error`` then ``streamType: data``. Once both are
there the agent connects to ``localhost:port`` inside the pod's network namespace (so a
server listening on 127.0.0.1 in the pod is reachable, as with kubelet) and copies bytes
both ways; a failure is written on the error stream. Both streams end when the pod's side
of the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from kybernetes.kubelet import spdy
from kybernetes.kubelet.network import libc
from kybernetes.kubelet.streams import FrameReader, frame, handshake

log = logging.getLogger(__name__)

SPDY_WS_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
CHANNEL_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")
CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 5.0
PAIR_TIMEOUT = 30.0
"""How long the first stream of a pair waits for the second (as kubelet)."""

Connector = Callable[[int], Awaitable[socket.socket]]
"""port -> a socket connected to it inside the pod (raises ForwardError)."""


class ForwardError(Exception):
    pass


# -- connecting inside the pod's network namespace ----------------------------------------

def _connect_blocking(netns: Path | None, port: int) -> socket.socket:
    own = target = -1
    c = libc()
    try:
        if netns is not None:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(netns, os.O_RDONLY)
            if c.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise ForwardError(f"entering {netns}: {os.strerror(err)}")
        errors = []
        for family, host, label in ((socket.AF_INET, "127.0.0.1", "IPv4: dial tcp4 127.0.0.1"),
                                    (socket.AF_INET6, "::1", "IPv6 dial tcp6 [::1]")):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect((host, port))
            except OSError as e:
                sock.close()
                reason = os.strerror(e.errno) if e.errno else "i/o timeout"
                if e.errno == errno.ECONNREFUSED:
                    reason = "connection refused"
                errors.append(f"{label}:{port}: connect: {reason}")
                continue
            sock.setblocking(False)
            return sock
        where = f' inside namespace "{netns}"' if netns is not None else ""
        raise ForwardError(f"failed to connect to localhost:{port}{where}, "
                           f"{' '.join(errors)} ")
    finally:
        if own >= 0:
            # back to the agent's own namespace; if that failed this thread must not go on
            # (it is one of our own, ending right after)
            if c.setns(own, CLONE_NEWNET) != 0:
                log.error("could not leave the network namespace %s", netns)
            os.close(own)
        if target >= 0:
            os.close(target)


async def connect(netns: Path | None, port: int) -> socket.socket:
    """A socket connected to ``localhost:port`` in ``netns`` (None: the node's own).

    The namespace is entered by a thread of its own, so the rest of the agent never runs
    inside a pod's namespace."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[socket.socket] = loop.create_future()

    def work() -> None:
        try:
            sock = _connect_blocking(netns, port)
        except BaseException as e:  # handed to the awaiting coroutine
            err = e

            def fail() -> None:
                if not fut.done():
                    fut.set_exception(err)

            loop.call_soon_threadsafe(fail)
            return

        def deliver() -> None:
            if fut.done():
                sock.close()
            else:
                fut.set_result(sock)

        loop.call_soon_threadsafe(deliver)

    threading.Thread(target=work, name=f"portforward-{port}", daemon=True).start()
    return await fut


# -- one forwarded connection -------------------------------------------------------------

class _Pipe:
    """Bytes to the pod's socket, queued until it is connected."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.pending: list[bytes] = []
        self.eof = False
        self.closed = False

    def write(self, chunk: bytes) -> None:
        if self.closed:
            return
        if self.writer is None:
            self.pending.append(chunk)
        else:
            self.writer.write(chunk)

    def write_eof(self) -> None:
        self.eof = True
        if self.writer is not None and not self.closed:
            with contextlib.suppress(OSError, RuntimeError):
                self.writer.write_eof()

    def attach(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        for chunk in self.pending:
            writer.write(chunk)
        self.pending.clear()
        if self.eof:
            self.write_eof()

    def close(self) -> None:
        self.closed = True
        if self.writer is not None:
            self.writer.close()


async def _pump(sock: socket.socket, pipe: _Pipe, out: Callable[[bytes], None]) -> None:
    """Copy the pod's bytes to ``out`` until the pod closes its side."""
    reader, writer = await asyncio.open_connection(sock=sock)
    pipe.attach(writer)
    try:
        while chunk := await reader.read(spdy.MAX_DATA):
            out(chunk)
    except OSError:
        pass
    finally:
        pipe.close()


# -- SPDY ----------------------------------------------------------------------------------

@dataclass
class _Pair:
    port: int
    error: int = 0
    data: int = 0
    pipe: _Pipe = field(default_factory=_Pipe)
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None


class SpdySession:
    """The server side of one SPDY port-forward connection."""

    def __init__(self, send: Callable[[bytes], None], connector: Connector,
                 describe: Callable[[int, str], str]) -> None:
        self.send = send
        self.connector = connector
        self.describe = describe
        self.parser = spdy.Parser()
        self.headers = spdy.Headers()
        self.pairs: dict[str, _Pair] = {}
        self.streams: dict[int, tuple[str, str]] = {}
        """stream id -> (request id, stream type)."""
        self.closed = asyncio.Event()

    def feed(self, chunk: bytes) -> None:
        try:
            frames = self.parser.feed(chunk)
            for f in frames:
                if isinstance(f, spdy.Data):
                    self._on_data(f)
                else:
                    self._on_control(f)
        except spdy.ProtocolError as e:
            log.debug("port-forward: %s", e)
            self.send(spdy.goaway(0, 1))
            self.close()

    def _on_control(self, f: spdy.Control) -> None:
        if f.type == spdy.SYN_STREAM:
            sid, block = spdy.syn_stream_fields(f)
            self._on_syn(sid, self.headers.decode(block))
        elif f.type == spdy.PING:
            self.send(spdy.control(spdy.PING, f.body))
        elif f.type == spdy.RST_STREAM:
            sid, _ = spdy.stream_id_and_rest(f)
            self._end_stream(sid)
        elif f.type == spdy.GOAWAY:
            self.close()
        elif f.type == spdy.HEADERS:
            self.headers.decode(spdy.stream_id_and_rest(f)[1])  # keeps the zlib stream in step
        # SETTINGS, WINDOW_UPDATE: nothing to do (no flow control between these peers)

    def _on_syn(self, sid: int, headers: dict[str, list[str]]) -> None:
        def one(name: str) -> str:
            return (headers.get(name) or [""])[0]

        kind, port_s, request = one("streamtype"), one("port"), one("requestid")
        if kind not in ("error", "data") or not port_s.isdigit() or \
                not 0 < int(port_s) < 65536:
            self.send(spdy.rst_stream(sid, spdy.PROTOCOL_ERROR))
            return
        self.send(self.headers.syn_reply(sid))
        # clients from before requestID pair streams by id: error n, data n+2
        request = request or str(sid if kind == "error" else sid - 2)
        pair = self.pairs.get(request)
        if pair is None:
            pair = self.pairs[request] = _Pair(int(port_s))
            pair.timer = asyncio.get_running_loop().call_later(
                PAIR_TIMEOUT, self._pair_timeout, request)
        setattr(pair, kind, sid)
        self.streams[sid] = (request, kind)
        if pair.error and pair.data and pair.task is None:
            if pair.timer is not None:
                pair.timer.cancel()
            pair.task = asyncio.ensure_future(self._forward(request, pair))

    def _pair_timeout(self, request: str) -> None:
        pair = self.pairs.pop(request, None)
        if pair is not None and pair.task is None:
            for sid in (pair.error, pair.data):
                if sid:
                    self.streams.pop(sid, None)
                    self.send(spdy.rst_stream(sid, spdy.REFUSED_STREAM))

    def _on_data(self, f: spdy.Data) -> None:
        request, kind = self.streams.get(f.stream_id, ("", ""))
        pair = self.pairs.get(request)
        if pair is None:
            return
        if kind == "data":
            if f.body:
                pair.pipe.write(f.body)
            if f.flags & spdy.FLAG_FIN:
                pair.pipe.write_eof()

    def _end_stream(self, sid: int) -> None:
        request, kind = self.streams.pop(sid, ("", ""))
        pair = self.pairs.get(request)
        if pair is not None and kind == "data":
            pair.pipe.close()
            if pair.task is not None:
                pair.task.cancel()

    async def _forward(self, request: str, pair: _Pair) -> None:
        try:
            try:
                sock = await self.connector(pair.port)
            except ForwardError as e:
                self.send(spdy.data(pair.error, self.describe(pair.port, str(e)).encode()))
                return
            await _pump(sock, pair.pipe, lambda chunk: self.send(spdy.data(pair.data, chunk)))
        finally:
            if not self.closed.is_set():
                self.send(spdy.data(pair.data, fin=True))
                self.send(spdy.data(pair.error, fin=True))
            self.pairs.pop(request, None)

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for pair in self.pairs.values():
            pair.pipe.close()
            if pair.task is not None:
                pair.task.cancel()
            if pair.timer is not None:
                pair.timer.cancel()
        self.pairs.clear()


# -- the Python client's channel protocol ------------------------------------------------

def _channel_session(send: Callable[[bytes], None], ports: list[int],
                           connector: Connector, describe: Callable[[int, str], str]
                           ) -> tuple[Callable[[int, bytes], None], asyncio.Future[Any]]:
    pipes = [_Pipe() for _ in ports]
    for i, port in enumerate(ports):
        head = struct.pack("<H", port)
        send(bytes([2 * i]) + head)
        send(bytes([2 * i + 1]) + head)

    async def one(i: int, port: int) -> None:
        try:
            sock = await connector(port)
        except ForwardError as e:
            send(bytes([2 * i + 1]) + describe(port, str(e)).encode())
            return
        await _pump(sock, pipes[i], lambda chunk: send(bytes([2 * i]) + chunk))

    def on_message(channel: int, body: bytes) -> None:
        if channel % 2 == 0 and channel // 2 < len(pipes):
            pipes[channel // 2].write(body)

    def close_all(_: object) -> None:
        for p in pipes:
            p.close()

    done = asyncio.gather(*(one(i, p) for i, p in enumerate(ports)))
    done.add_done_callback(close_all)
    return on_message, done


# -- entry point ------------------------------------------------------------------------

_SPDY_UPGRADE = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                 b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")


async def serve(conn: Any, headers: dict[bytes, bytes], query: bytes, *, connector: Connector,
                describe: Callable[[int, str], str],
                on_error: Callable[[int, str], bytes]) -> None:
    """Answer an upgraded port-forward request on ``conn`` (a tunnelled connection)."""
    transport = conn.transport
    upgrade = headers.get(b"upgrade", b"").decode("latin-1").lower()
    offered = headers.get(b"sec-websocket-protocol", b"").decode("latin-1")
    loop_done: asyncio.Future[Any]
    if upgrade == "websocket" and SPDY_WS_PROTOCOL in offered:
        hs = handshake(headers, (SPDY_WS_PROTOCOL,))
        assert hs is not None
        transport.write(hs[0])
        session = SpdySession(lambda b: transport.write(frame(b)), connector, describe)
        on_client = _websocket(transport, session.feed, session.close)
        loop_done = asyncio.ensure_future(session.closed.wait())
    elif upgrade == "websocket":
        hs = handshake(headers, CHANNEL_PROTOCOLS)
        ports = [int(p) for v in parse_qs(query.decode()).get("ports", [])
                 for p in v.split(",") if p.strip().isdigit()]
        if hs is None or not ports or not all(0 < p < 65536 for p in ports):
            transport.write(on_error(400, "port-forward needs the ports query parameter and "
                                          "one of the protocols " + ", ".join(
                                              (SPDY_WS_PROTOCOL, *CHANNEL_PROTOCOLS))))
            transport.close()
            return
        transport.write(hs[0])
        on_message, loop_done = _channel_session(
            lambda b: transport.write(frame(b)), ports, connector, describe)
        channels_done = loop_done

        def stop() -> None:
            channels_done.cancel()

        on_client = _websocket(transport, lambda m: on_message(m[0], m[1:]) if m else None,
                               stop)
    elif upgrade.startswith("spdy/3.1"):
        transport.write(_SPDY_UPGRADE)
        session = SpdySession(transport.write, connector, describe)

        def on_client(chunk: bytes | None) -> None:
            if chunk is None:
                session.close()
            else:
                session.feed(chunk)

        loop_done = asyncio.ensure_future(session.closed.wait())
    else:
        transport.write(on_error(400, "port-forward needs a WebSocket or SPDY/3.1 upgrade"))
        transport.close()
        return
    conn.tunnel = on_client
    early = conn.take_early_bytes()
    if early:
        on_client(early)
    with contextlib.suppress(asyncio.CancelledError):
        await loop_done
    if upgrade == "websocket" and not transport.is_closing():
        transport.write(frame(b"\x03\xe8", 0x8))
    transport.close()


def _websocket(transport: Any, on_message: Callable[[bytes], None],
               on_close: Callable[[], None]) -> Callable[[bytes | None], None]:
    """Client bytes -> WebSocket messages (binary ones to ``on_message``)."""
    reader = FrameReader()

    def on_client(chunk: bytes | None) -> None:
        if chunk is None:
            on_close()
            return
        for op, payload in reader.feed(chunk):
            if op == 0x8:
                transport.write(frame(b"\x03\xe8", 0x8))
                on_close()
                return
            if op == 0x9:
                transport.write(frame(payload, 0xA))
            elif op in (0x1, 0x2):
                on_message(payload)

    return on_client
