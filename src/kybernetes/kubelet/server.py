"""The node agent's own HTTPS API, which the API server proxies to (kubelet's paths):

- ``GET /containerLogs/{namespace}/{pod}/{container}`` — ``follow``, ``previous``,
  ``tailLines``, ``timestamps``, ``sinceSeconds``, ``sinceTime``, ``limitBytes``;
- ``GET /exec/{namespace}/{pod}/{container}`` — upgraded to WebSocket
  (``v5.channel.k8s.io``, see :mod:`kybernetes.kubelet.streams`);
- ``GET /portForward/{namespace}/{pod}`` — upgraded to WebSocket or SPDY/3.1
  (see :mod:`kybernetes.kubelet.portforward`);
- ``GET /stats/summary`` — usage of the node and of every running container
  (kubelet's Summary API shape, see :mod:`kybernetes.kubelet.stats`);
- ``GET /healthz``.

Requests must carry the bearer token the agent was given or, when the agent knows the
cluster CA, the API server's kubelet client certificate (CN
``kube-apiserver-kubelet-client``, signed by that CA).
"""

from __future__ import annotations

import datetime
import hmac
import socket
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from kybernetes.api.errors import StatusError
from kybernetes.api.meta import parse_time
from kybernetes.apiserver.http import HTTPServer
from kybernetes.kubelet import portforward
from kybernetes.kubelet.logs import LogOptions, read_logs
from kybernetes.kubelet.stats import Stats, Target
from kybernetes.kubelet.streams import exec_session

if TYPE_CHECKING:
    from kybernetes.kubelet.pods import PodManager

Scope = dict[str, Any]


API_SERVER_CLIENT_CN = "kube-apiserver-kubelet-client"


def serving_context(pki_dir: Path, host: str, client_ca: bytes | None = None
                    ) -> ssl.SSLContext:
    """A self-signed serving certificate for the agent (the API server does not verify
    it, as kube-apiserver does not by default)."""
    cert, key = pki_dir / "agent.crt", pki_dir / "agent.key"
    if not cert.exists() or not key.exists():
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        pki_dir.mkdir(parents=True, exist_ok=True)
        k = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kyb-agent@{host}")])
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
        c = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
             .add_extension(x509.SubjectAlternativeName(sans), critical=False)
             .sign(k, hashes.SHA256()))
        key.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        key.chmod(0o600)
        cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca:
        ctx.load_verify_locations(cadata=client_ca.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class AgentAPI:
    def __init__(self, pods: PodManager, *, token: str, client_ca: bytes | None = None
                 ) -> None:
        self.pods = pods
        self.token = token
        self.client_ca = client_ca
        self.http: HTTPServer | None = None
        self.stats = Stats(pods.cgroups.usage)

    async def start(self, host: str, port: int, pki_dir: Path) -> None:
        ctx = serving_context(pki_dir, host, self.client_ca)
        self.http = HTTPServer(self, ssl_context=ctx, upgrade_handler=self.upgrade)
        await self.http.start(host, port)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop(grace=1.0)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            self.authorize(scope)
            segs = [s for s in scope["path"].split("/") if s]
            if segs == ["healthz"]:
                await _reply(send, 200, b"ok", b"text/plain")
            elif segs == ["stats", "summary"]:
                summary = await self.stats.summary(self.pods.node_name, self.running())
                await _reply(send, 200, orjson.dumps(summary), b"application/json")
            elif len(segs) == 4 and segs[0] == "containerLogs":
                await self.logs(scope, send, segs[1], segs[2], segs[3])
            else:
                raise StatusError(404, "NotFound", f"{scope['path']} is not served here")
        except StatusError as e:
            await _reply(send, e.code, orjson.dumps(e.status()), b"application/json")

    async def upgrade(self, scope: Scope, conn: Any) -> None:
        """Upgraded requests: ``exec`` and ``portForward``."""
        try:
            self.authorize(scope)
            segs = [s for s in scope["path"].split("/") if s]
            if len(segs) == 3 and segs[0] == "portForward":
                connector = self._port_forward_target(segs[1], segs[2])
                uid = self._pod(segs[1], segs[2])["metadata"]["uid"]
                await portforward.serve(
                    conn, dict(scope["headers"]), scope.get("query_string", b""),
                    connector=connector,
                    describe=lambda port, msg: f"error forwarding port {port} to pod {uid}, "
                                               f"uid : {msg}",
                    on_error=lambda code, msg: _error_bytes(StatusError(
                        code, "BadRequest", msg)))
                return
            if len(segs) != 4 or segs[0] != "exec":
                raise StatusError.bad_request(f"{scope['path']} cannot be upgraded here")
            _, ns, name, container = segs
            pod = self._pod(ns, name)
            run = self.pods.runtime.current(pod["metadata"]["uid"], container)
            pids = run.pids() if run is not None else None
            if run is None or pids is None or not run.running():
                raise StatusError.bad_request(
                    f'container {container} is not running in pod {name}')
            env, cgroups = run.spec_values("env"), run.spec_values("cgroup")
        except StatusError as e:
            if conn.transport is not None:
                conn.transport.write(_error_bytes(e))
                conn.transport.close()
            return
        await exec_session(conn, dict(scope["headers"]), scope.get("query_string", b""),
                           pid=pids[1], env=env, cgroups=cgroups,
                           on_error=lambda code, msg: _error_bytes(StatusError(
                               code, "BadRequest", msg)))

    def _port_forward_target(self, ns: str, name: str) -> portforward.Connector:
        pod = self._pod(ns, name)
        netns: Path | None = None
        if not (pod.get("spec") or {}).get("hostNetwork"):
            netns = self.pods.network_ns(pod["metadata"]["uid"])
            if not netns.exists():
                raise StatusError.bad_request(
                    f"pod {name} has no network namespace on this node (not running)")
        ns_path = netns

        async def connector(port: int) -> socket.socket:
            return await portforward.connect(ns_path, port)

        return connector

    def running(self) -> list[Target]:
        """Every container running now on this node."""
        out = []
        for uid, w in list(self.pods.workers.items()):
            for c in (w.spec.get("containers") or []):
                run = self.pods.runtime.current(uid, c.get("name", ""))
                if run is not None and run.running():
                    out.append(Target(w.namespace, w.name, uid, c["name"]))
        return out

    def authorize(self, scope: Scope) -> None:
        if self.client_ca and _common_name(scope.get("kyb.peercert")) == API_SERVER_CLIENT_CN:
            return  # verified against the cluster CA by the TLS handshake
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if not self.token or scheme.lower() != "bearer" or \
                not hmac.compare_digest(token.strip(), self.token):
            raise StatusError.unauthorized()

    def _pod(self, ns: str, name: str) -> dict[str, Any]:
        pod = self.pods.pods.get(f"{ns}/{name}")
        if pod is None:
            raise StatusError.not_found("pods", name)
        return pod

    async def logs(self, scope: Scope, send: Any, ns: str, name: str, container: str) -> None:
        q = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        pod = self._pod(ns, name)
        uid = pod["metadata"]["uid"]
        runs = self.pods.runtime.runs(uid, container)
        previous = q.get("previous") in ("true", "1")
        if previous:
            if len(runs) < 2:
                raise StatusError.bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found')
            run = runs[-2]
        else:
            if not runs:
                raise StatusError.bad_request(
                    f'container "{container}" in pod "{name}" is waiting to start: '
                    "ContainerCreating")
            run = runs[-1]
        opts = LogOptions(follow=q.get("follow") in ("true", "1") and not previous,
                          timestamps=q.get("timestamps") in ("true", "1"))
        if "tailLines" in q:
            opts.tail = int(q["tailLines"])
        if "limitBytes" in q:
            opts.limit_bytes = int(q["limitBytes"])
        if "sinceSeconds" in q:
            opts.since = time.time() - int(q["sinceSeconds"])
        elif "sinceTime" in q:
            opts.since = parse_time(q["sinceTime"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        async for chunk in read_logs(run.log, opts, running=run.running):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _common_name(cert: Any) -> str:
    for rdn in (cert or {}).get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _error_bytes(e: StatusError) -> bytes:
    body = orjson.dumps(e.status())
    return (b"HTTP/1.1 %d Error\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (e.code, len(body), body))


async def _reply(send: Any, status: int, body: bytes, ctype: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})
