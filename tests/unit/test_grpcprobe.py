"""The gRPC probe against a real grpcio health server (on loopback)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from concurrent import futures

import pytest

from kybernetes.kubelet.grpcprobe import check, header_block, status_of

grpc = pytest.importorskip("grpc", reason="grpcio (a dev dependency) is not installed")
health = pytest.importorskip("grpc_health.v1.health",
                             reason="grpcio-health-checking is not installed")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")


@pytest.fixture
def server() -> Iterator[int]:
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("db", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield port
    srv.stop(0)


def test_serving_not_serving_and_unknown(server: int) -> None:
    assert asyncio.run(check("127.0.0.1", server, "", 2)) == (True, "")
    ok, msg = asyncio.run(check("127.0.0.1", server, "db", 2))
    assert not ok and msg == 'service unhealthy (responded with "NOT_SERVING")'
    ok, msg = asyncio.run(check("127.0.0.1", server, "nope", 2))
    assert not ok and "health rpc probe failed" in msg


def test_nothing_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ok, msg = asyncio.run(check("127.0.0.1", port, "", 1))
    assert not ok and msg.startswith(f'timeout: failed to connect service "127.0.0.1:{port}"')


def test_encoding() -> None:
    # literal, not indexed, plain lengths; a name of 127+ bytes needs a continued integer
    assert header_block([("a", "bc")]) == b"\x00\x01a\x02bc"
    assert header_block([("x" * 130, "")])[:3] == b"\x00\x7f\x03"
    assert status_of(b"\x08\x02") == 2 and status_of(b"") == 0
