"""SPDY/3 framing and the port-forward session on top of it (with a local echo server)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import zlib

import pytest

from kybernetes.kubelet import spdy
from kybernetes.kubelet.portforward import ForwardError, SpdySession


def test_dictionary_is_the_one_of_the_specification() -> None:
    # the sha256 of moby/spdystream's headerDictionary (what kubectl compresses with)
    assert len(spdy.DICTIONARY) == 1423
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == \
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_header_blocks_share_one_zlib_stream_per_direction() -> None:
    client, server = spdy.Headers(), spdy.Headers()
    blocks = [client.encode({"streamType": "error", "port": "80", "requestID": "0"}),
              client.encode({"streamType": "data", "port": "80", "requestID": "0"})]
    # the second block refers back to the first: it only decodes in order
    assert server.decode(blocks[0]) == {"streamtype": ["error"], "port": ["80"],
                                        "requestid": ["0"]}
    assert server.decode(blocks[1])["streamtype"] == ["data"]
    assert len(blocks[1]) < len(blocks[0])
    with pytest.raises(spdy.ProtocolError):
        spdy.Headers().decode(blocks[1])
    # a value holding several values separated by NUL
    raw = zlib.compressobj(zdict=spdy.DICTIONARY)
    block = struct.pack(">I", 1) + struct.pack(">I", 1) + b"a" + struct.pack(">I", 3) + b"x\0y"
    assert spdy.Headers().decode(raw.compress(block) + raw.flush(zlib.Z_SYNC_FLUSH)) == \
        {"a": ["x", "y"]}


def test_parser_cuts_frames_fed_in_pieces() -> None:
    h = spdy.Headers()
    wire = h.syn_stream(1, {"port": "1"}) + spdy.data(1, b"hello", fin=True) + spdy.ping(7)
    p = spdy.Parser()
    frames = []
    for i in range(len(wire)):
        frames += p.feed(wire[i:i + 1])
    assert [type(f).__name__ for f in frames] == ["Control", "Data", "Control"]
    syn, dat, png = frames
    assert isinstance(syn, spdy.Control) and syn.type == spdy.SYN_STREAM
    assert spdy.syn_stream_fields(syn)[0] == 1
    assert isinstance(dat, spdy.Data) and dat.body == b"hello" and dat.flags == spdy.FLAG_FIN
    assert isinstance(png, spdy.Control) and png.type == spdy.PING
    with pytest.raises(spdy.ProtocolError, match="version 2"):
        spdy.Parser().feed(struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\0\0\0\1")


class Client:
    """kubectl's side: opens streams, reads what the session sends back."""

    def __init__(self) -> None:
        self.headers = spdy.Headers()
        self.parser = spdy.Parser()
        self.frames: list[spdy.Control | spdy.Data] = []
        self.got = asyncio.Event()

    def receive(self, chunk: bytes) -> None:
        self.frames += self.parser.feed(chunk)
        self.got.set()

    def stream_data(self, sid: int) -> tuple[bytes, bool]:
        body = b"".join(f.body for f in self.frames
                        if isinstance(f, spdy.Data) and f.stream_id == sid)
        fin = any(isinstance(f, spdy.Data) and f.stream_id == sid and f.flags & spdy.FLAG_FIN
                  for f in self.frames)
        return body, fin

    async def until(self, cond: object, timeout: float = 5) -> None:
        async def wait() -> None:
            while not cond():  # type: ignore[operator]
                self.got.clear()
                await self.got.wait()

        await asyncio.wait_for(wait(), timeout)


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read()  # until the client's EOF
        w.write(b"echo:" + data)
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_session_forwards_a_connection_and_reports_errors() -> None:
    async def main() -> None:
        server, port = await _echo_server()

        async def connector(p: int) -> socket.socket:
            if p != port:
                raise ForwardError(f"failed to connect to localhost:{p}")
            s = socket.create_connection(("127.0.0.1", p))
            s.setblocking(False)
            return s

        client = Client()
        session = SpdySession(client.receive, connector,
                              lambda p, msg: f"error forwarding port {p}: {msg}")
        hdr = client.headers
        session.feed(hdr.syn_stream(1, {"streamType": "error", "port": str(port),
                                        "requestID": "0"}))
        # data may come before the pod is connected: it is queued
        session.feed(hdr.syn_stream(3, {"streamType": "data", "port": str(port),
                                        "requestID": "0"})
                     + spdy.data(3, b"hi there") + spdy.data(3, fin=True))
        await client.until(lambda: client.stream_data(1)[1])
        replies = [f for f in client.frames
                   if isinstance(f, spdy.Control) and f.type == spdy.SYN_REPLY]
        assert [spdy.stream_id_and_rest(f)[0] for f in replies] == [1, 3]
        assert client.stream_data(3) == (b"echo:hi there", True)
        assert client.stream_data(1) == (b"", True)

        # a port nothing listens on: the message comes on the error stream
        session.feed(hdr.syn_stream(5, {"streamType": "error", "port": "1",
                                        "requestID": "1"})
                     + hdr.syn_stream(7, {"streamType": "data", "port": "1",
                                          "requestID": "1"}))
        await client.until(lambda: client.stream_data(5)[1])
        assert client.stream_data(5)[0] == \
            b"error forwarding port 1: failed to connect to localhost:1"

        # pings are answered with the same id; a stream without a port is refused
        session.feed(spdy.ping(9) + hdr.syn_stream(9, {"streamType": "data"}))
        await client.until(lambda: any(isinstance(f, spdy.Control) and f.type == spdy.RST_STREAM
                                       for f in client.frames))
        pings = [f for f in client.frames if isinstance(f, spdy.Control) and f.type == spdy.PING]
        assert [f.body for f in pings] == [struct.pack(">I", 9)]
        session.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
