"""Streams served by the node agent, proxied by the API server: ``pods/log`` (a streamed
HTTP response) and ``pods/exec``, ``attach``, ``portforward`` (HTTP upgrades: WebSocket
with the ``v5.channel.k8s.io`` or ``SPDY/3.1+portforward.k8s.io`` subprotocols).

As kube-apiserver does, the proxy finds the pod's node, the agent's address in the Node's
status (``addresses`` and ``daemonEndpoints.kubeletEndpoint.Port``), and forwards the
request to the agent's kubelet-style path (``/exec/{ns}/{pod}/{container}``,
``/containerLogs/...``, ``/portForward/{ns}/{pod}``). An upgraded connection is then a
byte tunnel: the API server does not need to understand the framing.

The agent's serving certificate is not verified (kube-apiserver's default without
``--kubelet-certificate-authority``); the API server presents the agents' shared bearer
token and its kubelet client certificate (for agents that joined with a certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

import orjson

from kybernetes.api import rbac
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver import authz

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer, Request

log = logging.getLogger(__name__)
Obj = dict[str, Any]

_KUBELET_PATHS = {"exec": "exec", "attach": "attach", "portforward": "portForward",
                  "log": "containerLogs"}
_FORWARD_HEADERS = (b"connection", b"upgrade", b"sec-websocket-key", b"sec-websocket-version",
                    b"sec-websocket-protocol", b"sec-websocket-extensions", b"x-stream-protocol-version",
                    b"accept")
_ADDRESS_ORDER = ("InternalIP", "Hostname", "ExternalIP", "InternalDNS", "ExternalDNS")


@functools.lru_cache(maxsize=4)
def _agent_context(client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """TLS to agents: their serving certificates are not verified (as kube-apiserver's
    default); the API server shows its kubelet client certificate, which agents that
    joined with a certificate of their own trust (CN kube-apiserver-kubelet-client)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    return ctx


async def agent_target(server: APIServer, ns: str, name: str, sub: str,
                       query: dict[str, list[str]]) -> tuple[str, int, str]:
    """(host, port, path) of the agent serving ``sub`` for pod ``ns/name``."""
    pods = server.ctx.registry.get("", "v1", "pods")
    nodes = server.ctx.registry.get("", "v1", "nodes")
    assert pods is not None and nodes is not None
    pod = await server.store(pods).get(ns, name)
    spec = pod.get("spec") or {}
    node_name = spec.get("nodeName")
    if not node_name:
        raise StatusError.bad_request(f"pod {name} does not have a host assigned")
    containers = [c.get("name") for c in spec.get("containers") or []]
    path = f"/{_KUBELET_PATHS[sub]}/{quote(ns)}/{quote(name)}"
    if sub != "portforward":
        container = (query.get("container") or [""])[0]
        if not container:
            if len(containers) != 1:
                raise StatusError.bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(str(c) for c in containers)}]")
            container = str(containers[0])
        known = containers + [c.get("name") for c in (spec.get("initContainers") or [])] + \
            [c.get("name") for c in (spec.get("ephemeralContainers") or [])]
        if container not in known:
            raise StatusError.bad_request(
                f"container {container} is not valid for pod {name}")
        path += f"/{quote(container)}"
    try:
        node = await server.store(nodes).get("", node_name)
    except StatusError:
        raise StatusError.service_unavailable(
            f"node {node_name!r} of pod {name} is not registered") from None
    endpoint = agent_endpoint(node)
    if endpoint is None:
        raise StatusError.service_unavailable(
            f"node {node_name!r} does not report an agent address")
    host, port = endpoint
    params = [(k, v) for k, vs in query.items() if k != "container" for v in vs]
    if params:
        path += "?" + urlencode(params)
    return host, port, path


def agent_endpoint(node: Obj) -> tuple[str, int] | None:
    """(host, port) of the node's agent, from its status (None when it reports none)."""
    status = node.get("status") or {}
    addrs = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    host = next((addrs[t] for t in _ADDRESS_ORDER if addrs.get(t)), None)
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    if not host or not port:
        return None
    return str(host), int(port)


async def agent_get(server: APIServer, host: str, port: int, path: str) -> tuple[int, bytes]:
    """A plain GET of ``path`` on an agent: (status code, body)."""
    reader, writer = await _open(server, host, port)
    try:
        writer.write(_head("GET", path, f"{host}:{port}",
                           [(b"accept", b"application/json"), (b"connection", b"close")],
                           server.ctx.extra.get("agent_token", "")))
        status, hdrs = await _response_head(reader)
        return status, b"".join([chunk async for chunk in _response_body(reader, hdrs)])
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """An agent's status code and (lower-cased) headers."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split(" ")[1]), {
        k.strip().lower(): v.strip() for k, _, v in
        (line.partition(":") for line in lines[1:] if ":" in line)}


async def _response_body(reader: asyncio.StreamReader, hdrs: dict[str, str]
                         ) -> AsyncIterator[bytes]:
    """The body as it comes: chunked, of a Content-Length, or until the connection ends."""
    if "chunked" in hdrs.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield (await reader.readexactly(size + 2))[:-2]
    elif "content-length" in hdrs:
        yield await reader.readexactly(int(hdrs["content-length"]))
    else:
        while chunk := await reader.read(65536):
            yield chunk


def _head(method: str, path: str, host: str, headers: list[tuple[bytes, bytes]],
          token: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: {host}".encode()]
    lines += [name + b": " + value for name, value in headers]
    if token:
        lines.append(f"Authorization: Bearer {token}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _open(server: APIServer, host: str, port: int
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=_agent_context(server.ctx.extra.get("agent_client_cert")),
            server_hostname=host), 10)
    except (OSError, TimeoutError) as e:
        raise StatusError.internal(
            f"error dialing backend: dial tcp {host}:{port}: {e}") from None


async def proxy_request(server: APIServer, req: Request, res: Resource, ns: str, name: str,
                        sub: str) -> int:
    """Plain (non-upgrade) requests: ``pods/log``, streamed back as it comes."""
    if sub != "log":
        raise StatusError.bad_request(
            f"{sub} needs a connection upgrade (WebSocket or SPDY)")
    query: dict[str, list[str]] = {}
    for k, v in parse_qsl(req.scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True):
        query.setdefault(k, []).append(v)
    host, port, path = await agent_target(server, ns, name, sub, query)
    reader, writer = await _open(server, host, port)
    try:
        writer.write(_head("GET", path, f"{host}:{port}", [(b"accept", b"*/*")],
                           server.ctx.extra.get("agent_token", "")))
        status, hdrs = await _response_head(reader)
        ctype = hdrs.get("content-type", "text/plain").encode()
        await req.send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", ctype)]})
        async for data in _response_body(reader, hdrs):
            await req.send({"type": "http.response.body", "body": data, "more_body": True})
        await req.send({"type": "http.response.body", "body": b""})
        return status
    except (asyncio.IncompleteReadError, ConnectionError):
        await req.send({"type": "http.response.body", "body": b""})
        return 200
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _error_response(err: StatusError) -> bytes:
    body = orjson.dumps(err.status())
    return (b"HTTP/1.1 %d Error\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (err.code, len(body), body))


async def upgrade(server: APIServer, scope: dict[str, Any], conn: Any) -> None:
    """An HTTP upgrade (exec, attach, port-forward): authenticate, find the agent,
    upgrade there too, then tunnel bytes both ways until either side closes."""
    transport = conn.transport
    try:
        headers = list(scope["headers"])
        auth = dict(headers).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        user = (await server.authenticate_bearer(token.strip()) if scheme.lower() == "bearer"
                else None if auth else server.user_from_cert(scope))
        if user is None:
            raise StatusError.unauthorized()
        if user.bound:
            await server.check_bound(user)
        segs = [s for s in scope["path"].split("/") if s]
        if len(segs) != 7 or segs[:3] != ["api", "v1", "namespaces"] or segs[4] != "pods" \
                or segs[6] not in ("exec", "attach", "portforward"):
            raise StatusError.bad_request(f"upgrade not supported for {scope['path']}")
        ns, name, sub = segs[3], segs[5], segs[6]
        if rbac.MASTERS not in user.groups:
            # a WebSocket upgrade is a GET; upstream also asks for create on the
            # subresource (AuthorizePodWebsocketUpgradeCreatePermission)
            await server.authorizer.check(authz.attributes(
                user, "create", namespace=ns, resource="pods", subresource=sub, name=name))
        query: dict[str, list[str]] = {}
        for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                              keep_blank_values=True):
            query.setdefault(k, []).append(v)
        host, port, path = await agent_target(server, ns, name, sub, query)
        reader, writer = await _open(server, host, port)
    except StatusError as e:
        if transport is not None:
            transport.write(_error_response(e))
            transport.close()
        return
    try:
        forward = [(k, v) for k, v in headers if k in _FORWARD_HEADERS]
        writer.write(_head("GET", path, f"{host}:{port}", forward,
                           server.ctx.extra.get("agent_token", "")))
        head = await reader.readuntil(b"\r\n\r\n")
        if transport is None or transport.is_closing():
            return
        transport.write(head)
        if head.split(b" ", 2)[1] != b"101":
            # the agent said no: pass its answer on and close
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                rest = await asyncio.wait_for(reader.read(65536), 5)
                transport.write(rest)
            transport.close()
            return
        done = asyncio.Event()

        def from_client(data: bytes | None) -> None:
            if data is None:
                done.set()
                with contextlib.suppress(Exception):
                    writer.close()
            else:
                writer.write(data)

        early = conn.take_early_bytes()
        if early:
            writer.write(early)
        conn.tunnel = from_client
        while not done.is_set():
            data = await reader.read(65536)
            if not data:
                break
            transport.write(data)
        transport.close()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError) as e:
        log.debug("stream proxy ended: %s", e)
        if transport is not None:
            transport.close()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
