"""The REST client: kubeconfig loading, URLs, headers, bodies, errors and watch streams."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from kybernetes.api.errors import StatusError
from kybernetes.client import Client, Config, KubeconfigError, load_kubeconfig, resource_path
from kybernetes.client.rest import error_from_response

Handler = Callable[[httpx.Request], Any]


class Recorder:
    """A mock API server that records requests and answers with a fixed response."""

    def __init__(self, response: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.response = response or httpx.Response(200, json={"kind": "Pod"})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def make_client(handler: Handler, token: str | None = "s3cret") -> Client:
    return Client(Config.for_server("https://kyb.test:6443", token=token),
                  transport=httpx.MockTransport(handler))


# -- addressing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "path"),
    [
        pytest.param(("v1", "pods"), {"namespace": "default"}, "/api/v1/namespaces/default/pods",
                     id="core-namespaced-collection"),
        pytest.param(("v1", "nodes"), {"name": "n1"}, "/api/v1/nodes/n1", id="core-cluster"),
        pytest.param(("apps/v1", "deployments"), {"namespace": "ml", "name": "web"},
                     "/apis/apps/v1/namespaces/ml/deployments/web", id="group-namespaced"),
        pytest.param(("apps/v1", "deployments"),
                     {"namespace": "ml", "name": "web", "subresource": "scale"},
                     "/apis/apps/v1/namespaces/ml/deployments/web/scale", id="subresource"),
        pytest.param(("rbac.authorization.k8s.io/v1", "clusterroles"), {"name": "system:admin"},
                     "/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aadmin",
                     id="name-escaped"),
    ],
)
def test_resource_path(args: tuple[str, str], kwargs: dict[str, Any], path: str) -> None:
    """Core resources live under /api/v1, others under /apis/<group>/<version>."""
    assert resource_path(*args, **kwargs) == path


def test_resource_path_rejects_empty_name() -> None:
    """An empty name is an error, not the collection."""
    with pytest.raises(ValueError, match="may not be empty"):
        resource_path("v1", "pods", namespace="default", name="")


# -- verbs ---------------------------------------------------------------------------

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "ml"}}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}

Call = Callable[[Client], Awaitable[Any]]


@pytest.mark.parametrize(
    ("call", "method", "path", "params", "content_type", "body"),
    [
        pytest.param(lambda c: c.get("v1", "pods", "web-0", namespace="ml"),
                     "GET", "/api/v1/namespaces/ml/pods/web-0", {}, None, None, id="get"),
        pytest.param(lambda c: c.get("v1", "pods", "web-0", namespace="ml", subresource="log"),
                     "GET", "/api/v1/namespaces/ml/pods/web-0/log", {}, None, None,
                     id="get-subresource"),
        pytest.param(lambda c: c.list("apps/v1", "deployments", namespace="ml",
                                      label_selector="app=web,tier!=db",
                                      field_selector="metadata.name=web", limit=50,
                                      continue_="tok", resource_version="12"),
                     "GET", "/apis/apps/v1/namespaces/ml/deployments",
                     {"labelSelector": "app=web,tier!=db", "fieldSelector": "metadata.name=web",
                      "limit": "50", "continue": "tok", "resourceVersion": "12"}, None, None,
                     id="list-all-options"),
        pytest.param(lambda c: c.list("v1", "pods"), "GET", "/api/v1/pods", {}, None, None,
                     id="list-all-namespaces"),
        pytest.param(lambda c: c.create("v1", "pods", POD, dry_run=True, field_manager="me"),
                     "POST", "/api/v1/namespaces/ml/pods", {"dryRun": "All", "fieldManager": "me"},
                     "application/json", POD, id="create-namespace-from-object"),
        pytest.param(lambda c: c.create("v1", "nodes", NODE), "POST", "/api/v1/nodes", {},
                     "application/json", NODE, id="create-cluster-scoped"),
        pytest.param(lambda c: c.update("v1", "pods", POD), "PUT",
                     "/api/v1/namespaces/ml/pods/web-0", {}, "application/json", POD, id="update"),
        pytest.param(lambda c: c.update_status("v1", "pods", POD, field_manager="kubelet"), "PUT",
                     "/api/v1/namespaces/ml/pods/web-0/status", {"fieldManager": "kubelet"},
                     "application/json", POD, id="update-status"),
        pytest.param(lambda c: c.patch("apps/v1", "deployments", "web", {"spec": {"replicas": 3}},
                                       namespace="ml"),
                     "PATCH", "/apis/apps/v1/namespaces/ml/deployments/web", {},
                     "application/merge-patch+json", {"spec": {"replicas": 3}}, id="patch-merge"),
        pytest.param(lambda c: c.patch("apps/v1", "deployments", "web", {"spec": {"replicas": 3}},
                                       namespace="ml", patch_type="strategic",
                                       subresource="scale"),
                     "PATCH", "/apis/apps/v1/namespaces/ml/deployments/web/scale", {},
                     "application/strategic-merge-patch+json", {"spec": {"replicas": 3}},
                     id="patch-strategic-scale"),
        pytest.param(lambda c: c.patch("v1", "nodes", "n1",
                                       [{"op": "add", "path": "/spec/unschedulable",
                                         "value": True}], patch_type="json"),
                     "PATCH", "/api/v1/nodes/n1", {}, "application/json-patch+json",
                     [{"op": "add", "path": "/spec/unschedulable", "value": True}],
                     id="patch-json"),
        pytest.param(lambda c: c.patch("v1", "pods", "web-0", POD, namespace="ml",
                                       patch_type="apply", field_manager="kyb", force=True),
                     "PATCH", "/api/v1/namespaces/ml/pods/web-0",
                     {"fieldManager": "kyb", "force": "true"}, "application/apply-patch+yaml", POD,
                     id="patch-apply"),
        pytest.param(lambda c: c.delete("apps/v1", "replicasets", "web-1", namespace="ml",
                                        propagation_policy="Foreground", grace_period_seconds=0,
                                        preconditions={"uid": "u-1"}),
                     "DELETE", "/apis/apps/v1/namespaces/ml/replicasets/web-1", {},
                     "application/json",
                     {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground",
                      "gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"}}, id="delete"),
        pytest.param(lambda c: c.request("GET", "/version"), "GET", "/version", {}, None, None,
                     id="raw-request"),
    ],
)
async def test_verbs(call: Call, method: str, path: str, params: dict[str, str],
                     content_type: str | None, body: Any) -> None:
    """Each verb sends the right method, path, query, content type and body."""
    server = Recorder()
    async with make_client(server) as client:
        result = await call(client)
    assert result == {"kind": "Pod"}
    req = server.last
    assert (req.method, req.url.path) == (method, path)
    assert dict(req.url.params) == params
    assert req.headers.get("content-type") == content_type
    assert (orjson.loads(req.content) if req.content else None) == body


async def test_headers() -> None:
    """Requests carry the bearer token, JSON Accept and a user agent."""
    server = Recorder()
    async with make_client(server) as client:
        await client.get("v1", "namespaces", "default")
    headers = server.last.headers
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"].startswith("kybernetes/")
    assert server.last.url.host == "kyb.test"


async def test_no_token_no_authorization() -> None:
    """Without a token no Authorization header is sent."""
    server = Recorder()
    async with make_client(server, token=None) as client:
        await client.get("v1", "namespaces", "default")
    assert "authorization" not in server.last.headers


async def test_apply_needs_field_manager() -> None:
    """Server-side apply without a field manager is refused before sending."""
    server = Recorder()
    async with make_client(server) as client:
        with pytest.raises(ValueError, match="field_manager"):
            await client.patch("v1", "pods", "p", {}, namespace="ml", patch_type="apply")
    assert server.requests == []


async def test_empty_and_text_bodies() -> None:
    """An empty body decodes to None and a text/plain body to a string."""
    async with make_client(Recorder(httpx.Response(200))) as client:
        assert await client.request("DELETE", "/x") is None
    text = httpx.Response(200, text="hello\n", headers={"content-type": "text/plain"})
    async with make_client(Recorder(text)) as client:
        assert await client.request("GET", "/api/v1/namespaces/ml/pods/p/log") == "hello\n"


# -- errors --------------------------------------------------------------------------


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason,
                            "code": code}
    if details is not None:
        body["details"] = details
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("code", "body", "headers", "reason", "message", "details"),
    [
        pytest.param(404, status(404, "NotFound", 'pods "nope" not found',
                                 {"name": "nope", "kind": "pods"}), {},
                     "NotFound", 'pods "nope" not found', {"name": "nope", "kind": "pods"},
                     id="not-found"),
        pytest.param(422, status(422, "Invalid", 'Deployment.apps "web" is invalid: ...',
                                 {"causes": [{"field": "spec.replicas"}]}), {},
                     "Invalid", 'Deployment.apps "web" is invalid: ...',
                     {"causes": [{"field": "spec.replicas"}]}, id="invalid-with-causes"),
        pytest.param(409, status(409, "Conflict", "the object has been modified"), {},
                     "Conflict", "the object has been modified", None, id="conflict"),
        pytest.param(503, b"upstream unavailable", {}, "ServiceUnavailable",
                     "upstream unavailable", None, id="plain-text-body"),
        pytest.param(403, b"", {}, "Forbidden", "the server responded with status 403", None,
                     id="empty-body"),
        pytest.param(429, status(429, "TooManyRequests", "slow down"), {"Retry-After": "3"},
                     "TooManyRequests", "slow down", None, id="retry-after"),
    ],
)
async def test_errors(code: int, body: bytes, headers: dict[str, str], reason: str, message: str,
                      details: dict[str, Any] | None) -> None:
    """Non-2xx responses raise StatusError with the Status's code, reason, message, details."""
    async with make_client(Recorder(httpx.Response(code, content=body, headers=headers))) as c:
        with pytest.raises(StatusError) as info:
            await c.get("v1", "pods", "nope", namespace="ml")
    err = info.value
    assert (err.code, err.reason, err.message, err.details) == (code, reason, message, details)
    if headers:
        assert err.headers == {"Retry-After": "3"}


def test_error_from_response_prefers_status_code() -> None:
    """The code comes from the Status body, falling back to the HTTP code."""
    assert error_from_response(500, status(409, "AlreadyExists", "x")).code == 409
    assert error_from_response(410, b'{"kind":"Status","reason":"Expired"}').code == 410


# -- pagination ----------------------------------------------------------------------


def pod(name: str, rv: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml", "resourceVersion": str(rv)}}


async def test_list_all_follows_continue() -> None:
    """list_all fetches every page and returns one List."""
    pages = {None: (["a", "b"], "t1"), "t1": (["c", "d"], "t2"), "t2": (["e"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        names, token = pages[request.url.params.get("continue")]
        meta: dict[str, Any] = {"resourceVersion": "9"}
        if token:
            meta["continue"] = token
        return httpx.Response(200, json={"kind": "PodList", "metadata": meta,
                                         "items": [pod(n) for n in names]})

    async with make_client(handler) as client:
        result = await client.list_all("v1", "pods", namespace="ml", page_size=2)
    assert [i["metadata"]["name"] for i in result["items"]] == ["a", "b", "c", "d", "e"]
    assert result["metadata"] == {"resourceVersion": "9"}


async def test_list_all_restarts_when_continue_expires() -> None:
    """A 410 on a continue token falls back to one unpaged list."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        if "continue" in params:
            return httpx.Response(410, content=status(410, "Expired", "continue expired"))
        if "limit" in params:
            return httpx.Response(200, json={"metadata": {"continue": "t1"},
                                             "items": [pod("a")]})
        return httpx.Response(200, json={"metadata": {"resourceVersion": "7"},
                                         "items": [pod("a"), pod("b")]})

    async with make_client(handler) as client:
        result = await client.list_all("v1", "pods", namespace="ml", page_size=1)
    assert len(result["items"]) == 2
    assert seen == [{"limit": "1"}, {"limit": "1", "continue": "t1"}, {}]


# -- watch ---------------------------------------------------------------------------


def chunked(*chunks: bytes) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            await asyncio.sleep(0)
            yield chunk

    return httpx.Response(200, content=body(), headers={"content-type": "application/json"})


async def test_watch_parses_chunked_events() -> None:
    """Events split across chunks, or sharing one, arrive whole and in order."""
    added = orjson.dumps({"type": "ADDED", "object": pod("a", 5)}) + b"\n"
    modified = orjson.dumps({"type": "MODIFIED", "object": pod("a", 6)}) + b"\n"
    bookmark = orjson.dumps({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {
        "resourceVersion": "8"}}}) + b"\n"
    gone = orjson.dumps({"type": "ERROR", "object": orjson.loads(
        status(410, "Expired", "too old resource version"))}) + b"\n"
    server = Recorder(chunked(added[:10], added[10:] + modified, b"\n", bookmark + gone))
    async with make_client(server) as client:
        events = [e async for e in client.watch("v1", "pods", namespace="ml",
                                                resource_version="4", timeout_seconds=30)]
    assert [(e.type, e.object["metadata"].get("resourceVersion")) for e in events] == [
        ("ADDED", "5"), ("MODIFIED", "6"), ("BOOKMARK", "8"), ("ERROR", None)]
    assert events[-1].object["code"] == 410
    assert dict(server.last.url.params) == {"watch": "true", "resourceVersion": "4",
                                            "timeoutSeconds": "30", "allowWatchBookmarks": "true"}


async def test_watch_without_bookmarks_and_selectors() -> None:
    """Selectors are passed on; allowWatchBookmarks is left out when disabled."""
    server = Recorder(chunked())
    async with make_client(server) as client:
        assert [e async for e in client.watch("v1", "pods", label_selector="app=a",
                                              field_selector="spec.nodeName=n1",
                                              allow_bookmarks=False)] == []
    assert dict(server.last.url.params) == {"watch": "true", "labelSelector": "app=a",
                                            "fieldSelector": "spec.nodeName=n1"}
    assert server.last.url.path == "/api/v1/pods"


async def test_watch_error_response_raises() -> None:
    """A non-2xx watch response raises StatusError before any event."""
    server = Recorder(httpx.Response(410, content=status(410, "Expired", "too old")))
    async with make_client(server) as client:
        with pytest.raises(StatusError) as info:
            async for _ in client.watch("v1", "pods", resource_version="1"):
                pass
    assert (info.value.code, info.value.reason) == (410, "Expired")


async def test_watch_closed_early() -> None:
    """Closing the iterator mid-stream releases the response."""
    line = orjson.dumps({"type": "ADDED", "object": pod("a")}) + b"\n"

    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield line
            await asyncio.sleep(0)

    server = Recorder(httpx.Response(200, content=forever()))
    async with make_client(server) as client, \
            contextlib.aclosing(client.watch("v1", "pods")) as events:
        async for event in events:
            assert event.type == "ADDED"
            break


# -- kubeconfig ----------------------------------------------------------------------


def make_cert(cn: str, *, ca: bool = False) -> tuple[bytes, bytes]:
    """A self-signed certificate and key, PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(cluster: dict[str, Any], user: dict[str, Any], **ctx: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "main",
        "clusters": [{"name": "other", "cluster": {"server": "https://wrong:1"}},
                     {"name": "kyb", "cluster": cluster}],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "main", "context": {"cluster": "kyb", "user": "admin", **ctx}},
                     {"name": "alt", "context": {"cluster": "other", "user": "admin"}}],
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_inline_data(tmp_path: Path) -> None:
    """Server, CA, token, client cert/key and namespace come from the current context."""
    ca, _ = make_cert("kyb-ca", ca=True)
    cert, key = make_cert("admin")
    path = write(tmp_path / "config", kubeconfig(
        {"server": "https://127.0.0.1:6443/", "certificate-authority-data": b64(ca)},
        {"token": "abc", "client-certificate-data": b64(cert), "client-key-data": b64(key)},
        namespace="ml"))
    config = load_kubeconfig(path)
    assert config == Config(server="https://127.0.0.1:6443", token="abc", ca_data=ca,
                            client_cert_data=cert, client_key_data=key, namespace="ml")
    ctx = config.ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "kyb-ca"),),)]


def test_kubeconfig_files_relative_to_config(tmp_path: Path) -> None:
    """File references resolve next to the kubeconfig; tokenFile is read and stripped."""
    ca, _ = make_cert("kyb-ca", ca=True)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(ca)
    (tmp_path / "token").write_text("tok\n")
    path = write(tmp_path / "config", kubeconfig(
        {"server": "https://h:6443", "certificate-authority": "pki/ca.crt"},
        {"tokenFile": str(tmp_path / "token")}))
    config = load_kubeconfig(path)
    assert (config.ca_data, config.token, config.namespace) == (ca, "tok", "default")


def test_kubeconfig_context_override_and_insecure(tmp_path: Path, monkeypatch: Any) -> None:
    """An explicit context wins; $KUBECONFIG is the default path; insecure skips checks."""
    doc = kubeconfig({"server": "https://h:1"}, {})
    doc["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    path = write(tmp_path / "config", doc)
    monkeypatch.setenv("KUBECONFIG", str(path))
    config = load_kubeconfig(context="alt")
    assert (config.server, config.insecure, config.token) == ("https://wrong:1", True, None)
    ctx = config.ssl_context()
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda d: d.pop("current-context"), "no current-context",
                     id="no-current-context"),
        pytest.param(lambda d: d.update({"current-context": "nope"}), 'context "nope" not found',
                     id="unknown-context"),
        pytest.param(lambda d: d["clusters"].pop(), 'cluster "kyb" not found',
                     id="unknown-cluster"),
        pytest.param(lambda d: d["clusters"][1]["cluster"].pop("server"), "has no server",
                     id="no-server"),
        pytest.param(lambda d: d["users"][0]["user"].update({"client-key-data": "!!"}),
                     "not valid base64", id="bad-base64"),
        pytest.param(lambda d: d["users"][0]["user"].update({"client-key": "missing.key"}),
                     "cannot read", id="missing-file"),
    ],
)
def test_kubeconfig_errors(tmp_path: Path, mutate: Callable[[dict[str, Any]], Any],
                           message: str) -> None:
    """Broken kubeconfigs raise KubeconfigError naming what is missing."""
    doc = kubeconfig({"server": "https://h:1"}, {"token": "t"})
    mutate(doc)
    with pytest.raises(KubeconfigError, match=message):
        load_kubeconfig(write(tmp_path / "config", doc))


def test_kubeconfig_unreadable(tmp_path: Path) -> None:
    """A missing file or non-mapping YAML is a KubeconfigError."""
    with pytest.raises(KubeconfigError, match="cannot read"):
        load_kubeconfig(tmp_path / "absent")
    (tmp_path / "list").write_text("- a\n")
    with pytest.raises(KubeconfigError, match="not a mapping"):
        load_kubeconfig(tmp_path / "list")


def test_ssl_context_loads_client_certificate() -> None:
    """A client certificate and key load into the TLS context."""
    ca, _ = make_cert("kyb-ca", ca=True)
    cert, key = make_cert("admin")
    config = Config(server="https://h:1", ca_data=ca, client_cert_data=cert, client_key_data=key)
    assert isinstance(config.ssl_context(), ssl.SSLContext)
    with pytest.raises(ssl.SSLError):
        Config(server="https://h:1", client_cert_data=cert, client_key_data=ca).ssl_context()


def test_for_server() -> None:
    """Config.for_server takes a URL, a token and a CA as str or bytes."""
    config = Config.for_server("https://h:6443/", token="t", ca_pem="PEM")
    assert config == Config(server="https://h:6443", token="t", ca_data=b"PEM")


async def test_from_kubeconfig(tmp_path: Path) -> None:
    """Client.from_kubeconfig uses the kubeconfig's server and token."""
    path = write(tmp_path / "config", kubeconfig({"server": "http://kyb.test:8080"},
                                                 {"token": "tk"}))
    server = Recorder()
    async with Client.from_kubeconfig(path, transport=httpx.MockTransport(server)) as client:
        await client.get("v1", "namespaces", "default")
    assert str(server.last.url) == "http://kyb.test:8080/api/v1/namespaces/default"
    assert server.last.headers["authorization"] == "Bearer tk"
