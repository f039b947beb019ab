"""gRPC probes: one ``grpc.health.v1.Health/Check`` call over cleartext HTTP/2.

Just enough HTTP/2 for one unary call: the connection preface and SETTINGS, a HEADERS
frame whose header block uses only HPACK literals (no table, no Huffman), one DATA frame
carrying the length-prefixed ``HealthCheckRequest``, then frames are read until the
stream ends. The answer is the ``HealthCheckResponse`` in the server's DATA frames; the
headers and trailers it sends are not decoded (a call that fails carries no response
message, which is all a probe needs to know).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def frame(typ: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([typ, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


def _int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with an N-bit prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def header_block(headers: list[tuple[str, str]]) -> bytes:
    """Literal header fields without indexing, new names, no Huffman coding."""
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + _int(len(n), 7) + n + _int(len(v), 7) + v
    return bytes(out)


def request(service: str) -> bytes:
    """A gRPC message (5-byte prefix) holding ``HealthCheckRequest{service}``."""
    body = b"" if not service else b"\x0a" + _varint(len(service.encode())) + service.encode()
    return b"\x00" + struct.pack(">I", len(body)) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def status_of(message: bytes) -> int:
    """The ``status`` (field 1) of a HealthCheckResponse; 0 (UNKNOWN) when absent."""
    pos, status = 0, 0
    while pos < len(message):
        key, pos = _read_varint(message, pos)
        field_no, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(message, pos)
            if field_no == 1:
                status = value
        elif wire == 2:
            length, pos = _read_varint(message, pos)
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise ValueError(f"wire type {wire}")
    return status


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


async def check(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    """(healthy, why not) from one Health/Check call, as kubelet's gRPC probe says it."""
    target = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as e:
        why = "context deadline exceeded" if isinstance(e, TimeoutError) else \
            f"dial tcp {target}: connect: {(e.strerror or str(e)).lower()}"
        return False, f'timeout: failed to connect service "{target}" within {timeout:g}s: {why}'

    try:
        return await asyncio.wait_for(_call(reader, writer, target, service), timeout)
    except TimeoutError:
        return False, f"timeout: health rpc did not complete within {timeout:g}s"
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        return False, f"error: health rpc probe failed: {e}"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str,
                service: str) -> tuple[bool, str]:
    headers = [(":method", "POST"), (":scheme", "http"),
               (":path", "/grpc.health.v1.Health/Check"), (":authority", target),
               ("content-type", "application/grpc"), ("te", "trailers"),
               ("user-agent", "kube-probe/1.32")]
    writer.write(PREFACE + frame(SETTINGS, 0, 0) +
                 frame(HEADERS, END_HEADERS, 1, header_block(headers)) +
                 frame(DATA, END_STREAM, 1, request(service)))
    await writer.drain()
    body = bytearray()
    while True:
        head = await reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        typ, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(length)
        if typ == SETTINGS and not flags & ACK:
            writer.write(frame(SETTINGS, ACK, 0))
        elif typ == PING and not flags & ACK:
            writer.write(frame(PING, ACK, 0, payload))
        elif typ == GOAWAY:
            raise ValueError("the server went away (GOAWAY)")
        elif stream == 1 and typ == RST_STREAM:
            raise ValueError(f"stream reset (error code {int.from_bytes(payload[:4], 'big')})")
        elif stream == 1 and typ == DATA:
            if flags & PADDED and payload:
                payload = payload[1:len(payload) - payload[0]]
            body += payload
        if stream == 1 and typ in (DATA, HEADERS) and flags & END_STREAM:
            break
    if len(body) < 5:
        return False, ("error: health rpc probe failed: the server answered without a "
                       "response (an unknown service, or no grpc.health.v1.Health)")
    (size,) = struct.unpack_from(">I", body, 1)
    if size == 0:
        # an empty response comes with an error status in the trailers (grpcio answers an
        # unknown service so)
        return False, ("error: health rpc probe failed: the server answered with an empty "
                       "response (an unknown service?)")
    status = status_of(bytes(body[5:5 + size]))
    if status == 1:
        return True, ""
    return False, f'service unhealthy (responded with "{STATUSES.get(status, status)}")'
