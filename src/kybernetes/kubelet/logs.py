"""Container logs: the shim writes CRI-format lines; this turns them into what
``kubectl logs`` shows (``--tail``, ``--since``, ``--timestamps``, ``-f``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from kybernetes.api.meta import parse_time


@dataclass
class LogOptions:
    follow: bool = False
    tail: int = -1
    timestamps: bool = False
    since: float | None = None
    """Epoch seconds; older lines are left out."""
    limit_bytes: int = 0


def parse_line(raw: bytes) -> tuple[str, str, bool, bytes] | None:
    """(timestamp, stream, partial, text) of one CRI log line."""
    parts = raw.split(b" ", 3)
    if len(parts) < 4:
        return None
    ts, stream, tag, text = parts
    return ts.decode(), stream.decode(), tag == b"P", text


def _render(lines: list[tuple[str, bytes]], opts: LogOptions) -> bytes:
    out = []
    for ts, text in lines:
        out.append((ts.encode() + b" " if opts.timestamps else b"") + text + b"\n")
    return b"".join(out)


def _assemble(data: bytes, carry: tuple[str, bytes] | None
              ) -> tuple[list[tuple[str, bytes]], tuple[str, bytes] | None, bytes]:
    """Full lines (timestamp, text) from CRI records; partial records are joined."""
    lines: list[tuple[str, bytes]] = []
    *records, rest = data.split(b"\n")
    for raw in records:
        parsed = parse_line(raw)
        if parsed is None:
            continue
        ts, _, partial, text = parsed
        if carry is not None:
            ts, text = carry[0], carry[1] + text
            carry = None
        if partial:
            carry = (ts, text)
        else:
            lines.append((ts, text))
    return lines, carry, rest


async def read_logs(path: Path, opts: LogOptions, *, running: Callable[[], bool]
                    ) -> AsyncIterator[bytes]:
    """The log's text; with ``follow``, keeps yielding until the container has ended."""
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    pos = len(data)
    lines, carry, rest = _assemble(data, None)
    if opts.since is not None:
        lines = [(ts, t) for ts, t in lines if (parse_time(ts.split(".")[0] + "Z") or 0) >=
                 int(opts.since)]
    if opts.tail >= 0:
        lines = lines[-opts.tail:] if opts.tail else []
    sent = 0
    chunk = _render(lines, opts)
    if opts.limit_bytes:
        chunk = chunk[:opts.limit_bytes]
    if chunk:
        sent += len(chunk)
        yield chunk
    if not opts.follow:
        return
    pending = rest
    while True:
        if opts.limit_bytes and sent >= opts.limit_bytes:
            return
        alive = running()
        try:
            with path.open("rb") as f:
                f.seek(pos)
                more = f.read()
        except OSError:
            more = b""
        if more:
            pos += len(more)
            lines, carry, pending = _assemble(pending + more, carry)
            chunk = _render(lines, opts)
            if opts.limit_bytes:
                chunk = chunk[:max(0, opts.limit_bytes - sent)]
            if chunk:
                sent += len(chunk)
                yield chunk
            continue
        if not alive:
            return
        await asyncio.sleep(0.1)
