"""The ingress controller on a real node, with ab-test.yaml applied unchanged: path
fan-out reaches each version only, /predict sends 10 % to v2 and every request with
``x-variant: v2``, a new weight applies within 2 s, TLS from a Secret, and request counts
per Service on ``/metrics``."""

from __future__ import annotations

import base64
import collections
import http.client
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kybernetes.apiserver.certs import self_signed_pem
from tests.e2e.cluster import SCENARIOS, Cluster, agent_cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
    reason="running pods needs root and the CNI plugins (Debian containernetworking-plugins)")]

BODY = b'{"features": [1, 2, 3]}'


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = agent_cluster(tmp_path_factory.mktemp("ingress"))
    c = next(running)
    try:
        c.kubectl("apply", "-f", str(SCENARIOS / "serve-model.yaml"), "-f",
                  str(SCENARIOS / "ab-test.yaml"))
        for d in ("model1", "model2"):
            c.kubectl("rollout", "status", f"deployment/{d}", "--timeout=90s", timeout=100)
        # ready pods reach the ingress through their EndpointSlices a moment later (503
        # until then, as upstream's ingress-nginx answers)
        wait_for("the ingress to reach both models", lambda: post(c, "/predict")[0] == 200
                 and post(c, "/model1")[0] == 404 and post(c, "/model2/x")[0] == 404)
        yield c
    finally:
        running.close()


def post(c: Cluster, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", c.ingress_port, timeout=10)
    try:
        conn.request("POST", path, body=BODY, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def versions(c: Cluster, n: int, headers: dict[str, str] | None = None) -> collections.Counter[str]:
    def one(_i: int) -> str:
        status, body = post(c, "/predict", headers)
        assert status == 200, body
        return str(json.loads(body)["version"])

    with ThreadPoolExecutor(4) as pool:
        return collections.Counter(pool.map(one, range(n)))


def requests_by_service(c: Cluster) -> dict[str, float]:
    text = c.http().get("/metrics").text
    out: dict[str, float] = collections.defaultdict(float)
    for m in re.finditer(r'^kybernetes_service_requests_total\{([^}]*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("via") == "ingress":
            out[labels["service"]] += float(m.group(2))
    return out


def test_paths_reach_their_version_only(ab: Cluster) -> None:
    """/model1 and /model2 go to their Service only (the model servers answer 404 for
    those paths, so the ingress's per-Service counts tell where they went)."""
    c = ab
    ing = c.kubectl_json("get", "ingress", "dlp-ingress")
    assert ing["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]
    for path, service, other in (("/model1", "model1", "model2"),
                                 ("/model2/x", "model2", "model1")):
        before = requests_by_service(c)
        for _ in range(20):
            assert post(c, path)[0] == 404  # the model's own answer: it has no such path
        after = requests_by_service(c)
        assert after[service] - before[service] == 20
        assert after[other] == before[other]
    status, body = post(c, "/elsewhere")
    assert (status, body) == (404, b"default backend - 404\n")


def test_predict_canary_by_weight_header_and_new_weight(ab: Cluster) -> None:
    c = ab
    got = versions(c, 5000)
    assert abs(got["v2"] / 5000 - 0.10) <= 0.02, got
    assert versions(c, 200, {"x-variant": "v2"}) == {"v2": 200}
    c.kubectl("annotate", "--overwrite", "ingress", "dlp-canary",
              "nginx.ingress.kubernetes.io/canary-weight=50")
    time.sleep(2)
    got = versions(c, 1000)
    assert abs(got["v2"] / 1000 - 0.50) <= 0.06, got
    c.kubectl("annotate", "--overwrite", "ingress", "dlp-canary",
              "nginx.ingress.kubernetes.io/canary-weight=10")


def test_tls_from_a_secret(ab: Cluster, tmp_path: Path) -> None:
    c = ab
    cert, key = self_signed_pem("models.example.com", ["models.example.com"])
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "models-tls"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(cert).decode(),
                 "tls.key": base64.b64encode(key).decode()}}))
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "models-tls"},
        "spec": {"tls": [{"hosts": ["models.example.com"], "secretName": "models-tls"}],
                 "rules": [{"host": "models.example.com", "http": {"paths": [{
                     "path": "/", "pathType": "Prefix", "backend": {"service": {
                         "name": "model2", "port": {"number": 8081}}}}]}}]}}))
    (tmp_path / "ca.pem").write_bytes(cert)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    def call() -> tuple[int, bytes]:
        """POST /predict to models.example.com (SNI and Host) on the ingress's TLS port,
        verifying the certificate against the Secret's."""
        raw = socket.create_connection(("127.0.0.1", c.ingress_tls_port), timeout=10)
        conn = http.client.HTTPSConnection("models.example.com", c.ingress_tls_port,
                                           timeout=10, context=ctx)
        conn.sock = ctx.wrap_socket(raw, server_hostname="models.example.com")
        try:
            conn.request("POST", "/predict", body=BODY)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    deadline = time.monotonic() + 10
    while True:
        try:
            status, body = call()
            break
        except ssl.SSLCertVerificationError:  # the default certificate, until reloaded
            assert time.monotonic() < deadline, "the Secret's certificate was never served"
            time.sleep(0.2)
    assert status == 200 and json.loads(body)["version"] == "v2"
