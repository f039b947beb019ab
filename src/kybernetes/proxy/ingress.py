"""The ingress controller: an HTTP(S) reverse proxy on the host for the Ingresses of class
``kybernetes`` (:mod:`kybernetes.proxy.ingress_rules` picks the backend).

Requests go straight to the backend Service's ready endpoints (round robin), as
ingress-nginx does; a connection an endpoint refuses is tried on the next one. Client
connections are kept alive (HTTP/1.1), request and response bodies stream through
(``Content-Length``, chunked, or until the upstream closes), and an ``Upgrade`` (e.g.
WebSocket) turns the connection into a two-way pipe. ``X-Forwarded-For``, ``-Host``,
``-Proto`` and ``X-Real-IP`` are set. TLS: certificates from the Secrets the Ingresses'
``spec.tls`` name, chosen by SNI (a self-signed one otherwise). Each Ingress's
``status.loadBalancer`` lists the node's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.client import Client, Informer, object_key, shared_informer
from kybernetes.proxy.ingress_rules import (
    CLASS_NAME,
    CONTROLLER,
    DEFAULT_CLASS_ANNOTATION,
    Backend,
    Routes,
    build,
    is_ours,
)
from kybernetes.proxy.traffic import Traffic

log = logging.getLogger(__name__)
Obj = dict[str, Any]

HEAD_LIMIT = 64 * 1024
CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 75.0
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
        "transfer-encoding", "upgrade"}
REASONS = {404: "Not Found", 502: "Bad Gateway", 503: "Service Unavailable",
           400: "Bad Request", 504: "Gateway Timeout"}


class BadRequest(Exception):
    pass


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    start, headers = lines[0], []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line!r}")
        headers.append((name, value.strip()))
    return start, headers


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    """Copy exactly ``n`` bytes."""
    while n:
        chunk = await reader.read(min(n, 65536))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", n)
        writer.write(chunk)
        n -= len(chunk)
        await writer.drain()


async def _relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: list[tuple[str, str]], *, until_eof: bool) -> bool:
    """Copy one message body; returns whether the message was framed (False: it ran
    until the connection's end)."""
    te = (_get(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    writer.write(trailer)
                    if trailer == b"\r\n":
                        return True
            await _copy(reader, writer, size + 2)  # the chunk and its CRLF
    length = _get(headers, "content-length")
    if length is not None:
        await _copy(reader, writer, int(length))
        return True
    if not until_eof:
        return True
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


class Endpoints:
    """Ready endpoints of Service ports, from the EndpointSlice informer."""

    def __init__(self, services: Informer, slices: Informer, slice_index: str) -> None:
        self.services = services
        self.slices = slices
        self.slice_index = slice_index
        self._rr: dict[str, itertools.count[int]] = {}
        self._pods: dict[tuple[str, str], str] = {}
        """(namespace, address) -> the pod behind it, as of the last :meth:`of` that
        returned it (the slices' ``targetRef``), for the per-pod request rates."""

    def pod(self, namespace: str, ip: str) -> str:
        """The pod at ``ip`` (an address :meth:`pick` returned), or ``""``."""
        return self._pods.get((namespace, ip), "")

    def of(self, b: Backend) -> list[tuple[str, int]]:
        svc = self.services.get(f"{b.namespace}/{b.service}")
        if svc is None:
            return []
        port = next((p for p in (svc.get("spec") or {}).get("ports") or []
                     if p.get("port") == b.port or (p.get("name") and p.get("name") == b.port)),
                    None)
        if port is None:
            return []
        name = port.get("name") or ""
        out = []
        for s in self.slices.by_index(self.slice_index, object_key(svc)):
            target = next((sp.get("port") for sp in s.get("ports") or []
                           if (sp.get("name") or "") == name), None)
            if not target:
                continue
            for e in s.get("endpoints") or []:
                if (e.get("conditions") or {}).get("ready") is False:
                    continue
                ref = e.get("targetRef") or {}
                for a in e.get("addresses") or []:
                    out.append((a, int(target)))
                    if ref.get("kind") == "Pod" and ref.get("name"):
                        self._pods[(b.namespace, a)] = ref["name"]
        return sorted(out)

    def pick(self, b: Backend) -> list[tuple[str, int]]:
        """The endpoints in the order to try them (round robin)."""
        eps = self.of(b)
        if not eps:
            return []
        n = next(self._rr.setdefault(b.key, itertools.count())) % len(eps)
        return eps[n:] + eps[:n]


class IngressController:
    def __init__(self, client: Client, *, services: Informer, slices: Informer,
                 slice_index: str, traffic: Traffic, address: str, http_port: int = 8080,
                 https_port: int = 8443, bind: str = "0.0.0.0",
                 state_dir: Path | None = None) -> None:
        self.client = client
        self.endpoints = Endpoints(services, slices, slice_index)
        self.traffic = traffic
        self.address = address
        self.http_port = http_port
        self.https_port = https_port
        self.bind = bind
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="kyb-ingress-"))
        self.ingresses = shared_informer(client, "networking.k8s.io/v1", "ingresses")
        self.classes = shared_informer(client, "networking.k8s.io/v1", "ingressclasses")
        self.secrets = shared_informer(client, "v1", "secrets")
        self.routes = Routes()
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._dirty = asyncio.Event()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._default_context: ssl.SSLContext | None = None
        self.random: Callable[[], float] = random.random

    # -- configuration -----------------------------------------------------------------

    async def start(self) -> None:
        for inf in (self.ingresses, self.classes, self.secrets):
            inf.add_handler(on_add=lambda _o: self._dirty.set(),
                            on_update=lambda _o, _n: self._dirty.set(),
                            on_delete=lambda _o: self._dirty.set())
            inf.start()
        for inf in (self.ingresses, self.classes, self.secrets):
            await inf.wait_synced()
        await self._ensure_class()
        self._reload()
        if self.http_port:
            self._servers.append(await asyncio.start_server(
                self._serve, self.bind, self.http_port, limit=HEAD_LIMIT))
        if self.https_port:
            self._servers.append(await asyncio.start_server(
                lambda r, w: self._serve(r, w, scheme="https"), self.bind, self.https_port,
                ssl=self._server_context(), limit=HEAD_LIMIT))
        self._tasks.append(spawn(self._watch(), name="ingress-config"))
        log.info("ingress controller on ports %s", ", ".join(
            str(p) for p in (self.http_port, self.https_port) if p))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        await cancel_and_wait(*self._tasks)
        for inf in (self.ingresses, self.classes, self.secrets):
            await inf.stop()

    async def _ensure_class(self) -> None:
        if self.classes.get(CLASS_NAME) is not None:
            return
        with contextlib.suppress(StatusError):
            await self.client.create("networking.k8s.io/v1", "ingressclasses", {
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": CLASS_NAME,
                             "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
                "spec": {"controller": CONTROLLER}})

    def _reload(self) -> None:
        classes = self.classes.list()
        self.routes = build(self.ingresses.list(), classes)
        self._load_certificates(classes)

    async def _watch(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.01)
            self._dirty.clear()
            self._reload()
            await self._update_statuses()

    async def _update_statuses(self) -> None:
        want = {"ingress": [{"ip": self.address}]}
        classes = self.classes.list()
        for ing in self.ingresses.list():
            if not is_ours(ing, classes) or (ing.get("status") or {}).get("loadBalancer") == want:
                continue
            meta = ing["metadata"]
            try:
                await self.client.patch("networking.k8s.io/v1", "ingresses", meta["name"],
                                        namespace=meta.get("namespace"), subresource="status",
                                        patch={"status": {"loadBalancer": want}})
            except StatusError as e:
                if e.code != 404:
                    log.warning("cannot set the status of ingress %s: %s", meta["name"], e)

    # -- TLS -----------------------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        ctx = self._default_context = self._default_context or self._self_signed()

        def choose(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            chosen = self._contexts.get((name or "").lower())
            if chosen is None and name and "." in name:
                chosen = self._contexts.get("*." + name.split(".", 1)[1].lower())
            if chosen is not None:
                sock.context = chosen

        ctx.sni_callback = choose
        return ctx

    def _self_signed(self) -> ssl.SSLContext:
        from kybernetes.apiserver.certs import self_signed_pem

        cert, key = self_signed_pem("Kubernetes Ingress Controller Fake Certificate",
                                    ["ingress.local"])
        return self._context_from(cert, key, "default")

    def _context_from(self, cert: bytes, key: bytes, name: str) -> ssl.SSLContext:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.state_dir / f"{name}.pem"
        path.touch(mode=0o600)
        path.write_bytes(cert.rstrip(b"\n") + b"\n" + key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(path)
        return ctx

    def _load_certificates(self, classes: list[Obj]) -> None:
        import base64

        contexts: dict[str, ssl.SSLContext] = {}
        for ing in self.ingresses.list():
            if not is_ours(ing, classes):
                continue
            ns = ing["metadata"].get("namespace", "")
            for tls in (ing.get("spec") or {}).get("tls") or []:
                secret = self.secrets.get(f"{ns}/{tls.get('secretName', '')}")
                data = (secret or {}).get("data") or {}
                if "tls.crt" not in data or "tls.key" not in data:
                    continue
                try:
                    ctx = self._context_from(base64.b64decode(data["tls.crt"]),
                                             base64.b64decode(data["tls.key"]),
                                             f"{ns}_{tls['secretName']}")
                except (ssl.SSLError, ValueError, OSError) as e:
                    log.warning("ingress %s: TLS secret %s unusable: %s",
                                ing["metadata"]["name"], tls.get("secretName"), e)
                    continue
                for host in tls.get("hosts") or []:
                    contexts.setdefault(host.lower(), ctx)
        self._contexts = contexts

    # -- serving -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                     scheme: str = "http") -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # a response's head and body go out as soon as written
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._reply(writer, 431, "Request Header Fields Too Large")
                    return
                keep = await self._one(reader, writer, head, peer[0], scheme)
                if not keep:
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError, BadRequest):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _reply(self, writer: asyncio.StreamWriter, code: int, text: str = "") -> None:
        body = (text or REASONS.get(code, "")).encode() + b"\n"
        writer.write(f"HTTP/1.1 {code} {REASONS.get(code, text)}\r\nContent-Type: text/plain"
                     f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   head: bytes, client_ip: str, scheme: str) -> bool:
        """Proxy one request; returns whether the client connection stays open."""
        start = time.monotonic()
        try:
            request_line, headers = _parse_head(head[:-4])
            method, target, version = request_line.split(" ")
        except (BadRequest, ValueError):
            await self._reply(writer, 400)
            return False
        conn_tokens = {t.strip().lower() for t in (_get(headers, "connection") or "").split(",")}
        keep = "close" not in conn_tokens and (version == "HTTP/1.1" or "keep-alive" in conn_tokens)
        upgrade = "upgrade" in conn_tokens and _get(headers, "upgrade")
        lower = {k.lower(): v for k, v in headers}
        backend = self.routes.route(lower.get("host", ""), target, lower, self.random())
        if backend is None:
            await _drain_body(reader, headers)
            await self._reply(writer, 404, "default backend - 404")
            return keep
        out = [(k, v) for k, v in headers if k.lower() not in _HOP
               and k.lower() not in ("x-forwarded-for", "x-real-ip", "x-forwarded-host",
                                     "x-forwarded-proto")]
        prior = lower.get("x-forwarded-for")
        out += [("X-Forwarded-For", f"{prior}, {client_ip}" if prior else client_ip),
                ("X-Real-IP", client_ip), ("X-Forwarded-Host", lower.get("host", "")),
                ("X-Forwarded-Proto", scheme)]
        te = lower.get("transfer-encoding")
        if te:
            out.append(("Transfer-Encoding", te))
        if upgrade:
            out += [("Connection", "Upgrade"), ("Upgrade", upgrade)]
        else:
            out.append(("Connection", "keep-alive"))
        upstream_head = (f"{method} {target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in out) + "\r\n").encode("latin-1")
        up = await self._connect(backend)
        if up is None:
            await _drain_body(reader, headers)
            await self._reply(writer, 503)
            self._record(backend, 503, start)
            return keep
        up_reader, up_writer, pod = up
        try:
            up_writer.write(upstream_head)
            await _relay_body(reader, up_writer, headers, until_eof=False)
            await up_writer.drain()
            response = await up_reader.readuntil(b"\r\n\r\n")
            status_line, resp_headers = _parse_head(response[:-4])
            parts = status_line.split(" ", 2)
            code = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            self._record(backend, code, start, pod)
            if code == 101 and upgrade:
                writer.write(response)
                await writer.drain()
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
                return False
            lr = {k.lower(): v for k, v in resp_headers}
            framed = "content-length" in lr or "chunked" in lr.get("transfer-encoding", "") \
                or code in (204, 304) or 100 <= code < 200 or method == "HEAD"
            kept = [(k, v) for k, v in resp_headers if k.lower() not in _HOP]
            if "chunked" in lr.get("transfer-encoding", ""):
                kept.append(("Transfer-Encoding", "chunked"))
            keep = keep and framed
            kept.append(("Connection", "keep-alive" if keep else "close"))
            writer.write((f"HTTP/1.1 {code} {reason}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in kept) + "\r\n").encode("latin-1"))
            if method != "HEAD" and code not in (204, 304) and not 100 <= code < 200:
                await _relay_body(up_reader, writer, resp_headers, until_eof=not framed)
            await writer.drain()
            return keep
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError, IndexError, BadRequest) as e:
            log.debug("upstream %s failed: %s", backend.key, e)
            self._record(backend, 502, start, pod)
            if not writer.is_closing():
                with contextlib.suppress(Exception):
                    await self._reply(writer, 502)
            return False
        finally:
            up_writer.close()

    async def _connect(self, backend: Backend
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str] | None:
        """A connection to one of the backend's endpoints, and the pod behind it."""
        for ip, port in self.endpoints.pick(backend)[:3]:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(ip, port, limit=HEAD_LIMIT), CONNECT_TIMEOUT)
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    # ACK at once: a server that writes its head and body apart (Nagle on,
                    # as Python's http.server) would otherwise wait out our delayed ACK
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                return reader, writer, self.endpoints.pod(backend.namespace, ip)
            except (OSError, TimeoutError) as e:
                log.debug("endpoint %s:%d of %s: %s", ip, port, backend.key, e)
        return None

    def _record(self, backend: Backend, code: int, start: float, pod: str = "") -> None:
        self.traffic.record(backend.namespace, backend.service, code,
                            time.monotonic() - start, ingress=backend.ingress, pod=pod)


async def _drain_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> None:
    sink = _Sink()
    await _relay_body(reader, sink, headers, until_eof=False)  # type: ignore[arg-type]


class _Sink:
    def write(self, _data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass
