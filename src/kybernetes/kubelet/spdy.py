"""SPDY/3.1 framing, as far as Kubernetes' streaming protocols use it (``kubectl
port-forward``): frames, the zlib-compressed header blocks and their preset dictionary.

Every frame starts with 8 bytes. A control frame: the control bit and version 3, a type,
then flags and a 24-bit length. A data frame: a 31-bit stream id, then flags (FIN) and a
24-bit length. SYN_STREAM, SYN_REPLY and HEADERS carry a header block: a 32-bit count,
then length-prefixed names and values, compressed by one zlib stream per direction that
starts from the dictionary of the SPDY/3 specification. The peers Kubernetes uses do not
flow-control, so WINDOW_UPDATE and SETTINGS are read and ignored.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN = 0x01
# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL, INTERNAL_ERROR = 1, 2, 3, 5, 6
MAX_DATA = 32 * 1024
"""Data frames we send carry at most this much (the format allows 16 MiB)."""

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status 200_OK version HTTP/1.1 url public set-cookie "
    "keep-alive origin")
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode()
                     for w in (w.replace("_", " ") for w in _WORDS.split())) + _TAIL.encode()
"""The header compression dictionary of SPDY/3 (1423 bytes): length-prefixed header names
and values, then a run of common status codes, dates and media types."""


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3."""


@dataclass
class Control:
    type: int
    flags: int
    body: bytes


@dataclass
class Data:
    stream_id: int
    flags: int
    body: bytes


def control(typ: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, typ, (flags << 24) | len(body)) + body


def data(stream_id: int, body: bytes = b"", *, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF,
                       ((FLAG_FIN if fin else 0) << 24) | len(body)) + body


def rst_stream(stream_id: int, status: int) -> bytes:
    return control(RST_STREAM, struct.pack(">II", stream_id, status))


def ping(ping_id: int) -> bytes:
    return control(PING, struct.pack(">I", ping_id))


def goaway(last_stream_id: int, status: int = 0) -> bytes:
    return control(GOAWAY, struct.pack(">II", last_stream_id, status))


class Parser:
    """Cuts a byte stream (fed in pieces of any size) into frames."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, chunk: bytes) -> list[Control | Data]:
        self.buf += chunk
        out: list[Control | Data] = []
        while len(self.buf) >= 8:
            first, second = struct.unpack_from(">II", self.buf)
            length = second & 0xFFFFFF
            if len(self.buf) < 8 + length:
                break
            body = bytes(self.buf[8:8 + length])
            del self.buf[:8 + length]
            if first & 0x80000000:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise ProtocolError(f"SPDY version {version} is not supported")
                out.append(Control(first & 0xFFFF, second >> 24, body))
            else:
                out.append(Data(first & 0x7FFFFFFF, second >> 24, body))
        return out


class Headers:
    """Header blocks of one connection: our compressor and the peer's decompressor (each
    a single zlib stream for the whole connection)."""

    def __init__(self) -> None:
        self._out = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zdict=DICTIONARY)
        self._in = zlib.decompressobj(zdict=DICTIONARY)

    def encode(self, headers: dict[str, str]) -> bytes:
        block = struct.pack(">I", len(headers))
        for name, value in headers.items():
            n, v = name.lower().encode(), value.encode()
            block += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
        return self._out.compress(block) + self._out.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, compressed: bytes) -> dict[str, list[str]]:
        try:
            block = self._in.decompress(compressed)
        except zlib.error as e:
            raise ProtocolError(f"header block: {e}") from None
        out: dict[str, list[str]] = {}
        try:
            (count,), pos = struct.unpack_from(">I", block), 4
            for _ in range(count):
                (n,) = struct.unpack_from(">I", block, pos)
                name = block[pos + 4:pos + 4 + n].decode().lower()
                pos += 4 + n
                (n,) = struct.unpack_from(">I", block, pos)
                value = block[pos + 4:pos + 4 + n].decode()
                pos += 4 + n
                out.setdefault(name, []).extend(value.split("\x00"))
        except (struct.error, UnicodeDecodeError) as e:
            raise ProtocolError(f"header block: {e}") from None
        return out

    def syn_stream(self, stream_id: int, headers: dict[str, str], *, fin: bool = False
                   ) -> bytes:
        body = struct.pack(">IIBB", stream_id, 0, 0, 0) + self.encode(headers)
        return control(SYN_STREAM, body, FLAG_FIN if fin else 0)

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None) -> bytes:
        return control(SYN_REPLY, struct.pack(">I", stream_id) + self.encode(headers or {}))


def syn_stream_fields(frame: Control) -> tuple[int, bytes]:
    """(stream id, compressed header block) of a SYN_STREAM."""
    if len(frame.body) < 10:
        raise ProtocolError("SYN_STREAM too short")
    (stream_id,) = struct.unpack_from(">I", frame.body)
    return stream_id & 0x7FFFFFFF, frame.body[10:]


def stream_id_and_rest(frame: Control) -> tuple[int, bytes]:
    """(stream id, the rest) of SYN_REPLY, HEADERS, RST_STREAM and WINDOW_UPDATE."""
    if len(frame.body) < 4:
        raise ProtocolError(f"control frame {frame.type} too short")
    (stream_id,) = struct.unpack_from(">I", frame.body)
    return stream_id & 0x7FFFFFFF, frame.body[4:]
