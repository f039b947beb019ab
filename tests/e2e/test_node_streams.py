"""pods/log and pods/exec are proxied to the pod's node agent (a fake one here)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.cluster import Cluster, free_port

pytestmark = pytest.mark.slow

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(payload: bytes, opcode: int = 0x2) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


class FakeAgent:
    """Speaks the node agent's side of logs (HTTP) and exec (WebSocket, v5.channel.k8s.io)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.requests: list[str] = []
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-agent")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
        (tmp / "agent.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "agent.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(tmp / "agent.crt", tmp / "agent.key")
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.ctx))
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> FakeAgent:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            target = head[0].split(" ")[1]
            self.requests.append(target)
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in head[1:] if ":" in line)}
            url = urlsplit(target)
            query = parse_qs(url.query)
            if url.path.startswith("/containerLogs/"):
                body = b"training step 1\ntraining step 2\n"
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
            elif url.path.startswith("/exec/") and headers.get("upgrade") == "websocket":
                accept = base64.b64encode(hashlib.sha1(
                    headers["sec-websocket-key"].encode() + _WS_GUID).digest())
                offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
                proto = "v5.channel.k8s.io" if "v5.channel.k8s.io" in offered else offered[0]
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                             b"\r\nSec-WebSocket-Protocol: " + proto.encode() + b"\r\n\r\n")
                output = " ".join(query.get("command", [])[1:]).encode() + b"\n"
                writer.write(_frame(b"\x01" + output))
                writer.write(_frame(b"\x03" + orjson.dumps(
                    {"metadata": {}, "status": "Success"})))
                writer.write(_frame(b"\x03\xe8", opcode=0x8))  # close 1000
                await writer.drain()
                await asyncio.wait_for(reader.read(65536), 5)
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[FakeAgent]:
    with FakeAgent(tmp_path) as a:
        yield a


def _node_and_pod(cluster: Cluster, namespace: str, agent: FakeAgent) -> None:
    node = f"node-{namespace}"[:63]
    cluster.kubectl("apply", "-f", "-", input=orjson.dumps({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}}}}).decode())
    # bound by hand below: no scheduler profile serves "manual"
    cluster.kubectl("run", "trainer", "--image=busybox", "-n", namespace,
                    '--overrides={"spec": {"schedulerName": "manual"}}', "--",
                    "sleep", "3600")
    with cluster.http() as c:
        r = c.post(f"/api/v1/namespaces/{namespace}/pods/trainer/binding", json={
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "trainer"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
        assert r.status_code == 201, r.text


def test_logs_and_exec_reach_the_agent(cluster: Cluster, namespace: str,
                                       agent: FakeAgent) -> None:
    """kubectl logs and kubectl exec go through the API server to the pod's node agent."""
    _node_and_pod(cluster, namespace, agent)
    logs = cluster.kubectl("logs", "trainer", "-n", namespace)
    assert logs.stdout == "training step 1\ntraining step 2\n"
    assert agent.requests[-1] == f"/containerLogs/{namespace}/trainer/trainer"
    out = cluster.kubectl("exec", "trainer", "-n", namespace, "--", "echo", "hello", "world")
    assert out.stdout == "hello world\n"
    assert agent.requests[-1].startswith(f"/exec/{namespace}/trainer/trainer?")


def test_streams_of_an_unscheduled_pod(cluster: Cluster, namespace: str) -> None:
    """A pod with no node has nothing to stream from: a clear error, as upstream."""
    cluster.kubectl("run", "waiting", "--image=busybox", "-n", namespace,
                    '--overrides={"spec": {"schedulerName": "manual"}}', "--", "true")
    logs = cluster.kubectl("logs", "waiting", "-n", namespace, check=False)
    assert logs.returncode != 0
    assert "pod waiting does not have a host assigned" in logs.stderr
