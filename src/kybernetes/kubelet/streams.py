"""``kubectl exec`` on the node: the Kubernetes streaming protocol over WebSocket.

The API server tunnels the client's upgraded connection here. Channels are one byte at
the head of each binary message (``v5.channel.k8s.io`` / ``v4.channel.k8s.io``): 0 stdin,
1 stdout, 2 stderr, 3 the final status (a ``metav1.Status``), 4 terminal resize, and in v5
255 to close a stream. The command runs inside the container's namespaces (``nsenter``)
with the container's environment, in the container's cgroups (its CPU and memory are
the container's, counted and limited with it, as ``runc exec`` does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import struct
import termios
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

import orjson

from kybernetes.kubelet.probes import join_cgroups, nsenter_args

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def frame(payload: bytes, opcode: int = 0x2) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


class FrameReader:
    """Parses (masked) client frames fed in pieces; yields whole messages."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.fragments = bytearray()
        self.fragment_op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            if len(self.buf) < 2:
                return out
            b0, b1 = self.buf[0], self.buf[1]
            fin, op, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            pos = 2
            if n == 126:
                if len(self.buf) < 4:
                    return out
                n = int.from_bytes(self.buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(self.buf) < 10:
                    return out
                n = int.from_bytes(self.buf[2:10], "big")
                pos = 10
            key = b""
            if masked:
                if len(self.buf) < pos + 4:
                    return out
                key = bytes(self.buf[pos:pos + 4])
                pos += 4
            if len(self.buf) < pos + n:
                return out
            payload = bytes(self.buf[pos:pos + n])
            del self.buf[:pos + n]
            if key:
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            if op == 0x0:  # continuation
                self.fragments += payload
                if fin:
                    out.append((self.fragment_op, bytes(self.fragments)))
                    self.fragments.clear()
            elif not fin and op in (0x1, 0x2):
                self.fragment_op = op
                self.fragments = bytearray(payload)
            else:
                out.append((op, payload))


def handshake(headers: dict[bytes, bytes], protocols: tuple[str, ...] = PROTOCOLS
              ) -> tuple[bytes, str] | None:
    """The 101 answer and the chosen subprotocol (the first of ``protocols`` the client
    offers), or None if none fits."""
    key = headers.get(b"sec-websocket-key", b"")
    offered = [p.strip() for p in headers.get(b"sec-websocket-protocol", b"").decode()
               .split(",")]
    proto = next((p for p in protocols if p in offered), None)
    if not key or proto is None:
        return None
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
            b"\r\nSec-WebSocket-Protocol: " + proto.encode() + b"\r\n\r\n"), proto


def exit_status(code: int, command: list[str]) -> bytes:
    if code == 0:
        return orjson.dumps({"metadata": {}, "status": "Success"})
    return orjson.dumps({
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
                   f"{command}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})


async def exec_session(conn: Any, headers: dict[bytes, bytes], query: bytes, *,
                       pid: int, env: list[str], on_error: Callable[[int, str], bytes],
                       cgroups: Sequence[str] = ()) -> None:
    """Run ``command`` in the namespaces of ``pid`` and speak the channel protocol."""
    transport = conn.transport
    q = parse_qs(query.decode())
    command = q.get("command") or []
    tty = q.get("tty", ["false"])[-1] in ("true", "1")
    want_stdin = q.get("stdin", ["false"])[-1] in ("true", "1")
    hs = handshake(headers)
    if hs is None or not command:
        transport.write(on_error(400, "exec needs a command and a v4/v5.channel.k8s.io "
                                      "WebSocket"))
        transport.close()
        return
    answer, proto = hs
    transport.write(answer)
    v5 = proto.startswith("v5")
    argv = [*nsenter_args(pid), "env", "-i", *env, *command]
    master = slave = -1
    if tty:
        master, slave = os.openpty()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=join_cgroups(cgroups) if cgroups else None)
        os.close(slave)
    else:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=join_cgroups(cgroups) if cgroups else None)
    reader = FrameReader()
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()

    def on_client(data: bytes | None) -> None:
        if data is None:
            closed.set()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return
        for op, payload in reader.feed(data):
            if op == 0x8:
                closed.set()
                return
            if op == 0x9:
                transport.write(frame(payload, 0xA))
                continue
            if not payload:
                continue
            ch, body = payload[0], payload[1:]
            if ch == STDIN:
                if tty and master >= 0:
                    os.write(master, body)
                elif proc.stdin is not None:
                    proc.stdin.write(body)
            elif ch == RESIZE and tty and master >= 0:
                with contextlib.suppress(ValueError, OSError):
                    size = orjson.loads(body)
                    fcntl.ioctl(master, termios.TIOCSWINSZ,
                                struct.pack("HHHH", size.get("Height", 24),
                                            size.get("Width", 80), 0, 0))
            elif ch == CLOSE and v5 and body[:1] == bytes([STDIN]):
                if proc.stdin is not None:
                    proc.stdin.close()

    conn.tunnel = on_client
    early = conn.take_early_bytes()
    if early:
        on_client(early)

    async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            transport.write(frame(bytes([channel]) + chunk))

    async def pump_pty() -> None:
        while True:
            try:
                chunk = await loop.run_in_executor(None, os.read, master, 65536)
            except OSError:
                return
            if not chunk:
                return
            transport.write(frame(bytes([STDOUT]) + chunk))

    if tty:
        pumps = [asyncio.ensure_future(pump_pty())]
    else:
        pumps = [asyncio.ensure_future(pump(proc.stdout, STDOUT)),
                 asyncio.ensure_future(pump(proc.stderr, STDERR))]
    code = await proc.wait()
    await asyncio.wait(pumps, timeout=2)
    for p in pumps:
        p.cancel()
    if master >= 0:
        os.close(master)
    if not closed.is_set():
        transport.write(frame(bytes([ERROR]) + exit_status(code, command)))
        transport.write(frame(b"\x03\xe8", 0x8))
    transport.close()
