"""The API server's REST semantics, driven in-process through ASGI (no network, no TLS)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kybernetes.api import protobuf
from kybernetes.api.builtin import build_registry
from kybernetes.apiserver import watch as watch_module
from kybernetes.apiserver.app import APIServer, User
from kybernetes.apiserver.bootstrap import Bootstrap
from kybernetes.apiserver.context import Context
from kybernetes.apiserver.crds import CRDManager
from kybernetes.store.sqlite import SQLiteBackend

Obj = dict[str, Any]

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
MERGE = {"Content-Type": "application/merge-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
CM = "/api/v1/namespaces/default/configmaps"
PODS = "/api/v1/namespaces/default/pods"
SVC = "/api/v1/namespaces/default/services"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


# -- fixtures ------------------------------------------------------------------------------


class Server:
    """An API server over a fresh store, with its CRD manager, bootstrapped."""

    def __init__(self, backend: SQLiteBackend, api: APIServer, crds: CRDManager) -> None:
        self.backend = backend
        self.api = api
        self.crds = crds


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    backend = SQLiteBackend.open(tmp_path / "s.db")
    api = APIServer(Context(backend, build_registry()), tokens={"t": User("admin", ("system:masters",))})
    crds = CRDManager(api)
    await Bootstrap(api, ca_pem=CA_PEM, advertise_address="127.0.0.1", port=6443).run()
    api.ready = True
    try:
        yield Server(backend, api, crds)
    finally:
        await crds.stop()
        await backend.close()


def asgi(api: APIServer) -> httpx.ASGITransport:
    """httpx's in-process transport to the app (its ASGI types are MutableMapping-based)."""
    return httpx.ASGITransport(app=api)  # type: ignore[arg-type]


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=asgi(server.api),
                                 base_url="https://kyb",
                                 headers={"Authorization": "Bearer t"}) as c:
        yield c


# -- object builders and helpers ------------------------------------------------------------


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> Obj:
    md: Obj = {"name": name}
    if labels:
        md["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


def pod(name: str, labels: dict[str, str] | None = None, *, node: str = "") -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": spec}


def deployment(name: str, replicas: int = 1) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


def service(name: str, **spec: Any) -> Obj:
    body: Obj = {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name}}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}


async def create(client: httpx.AsyncClient, path: str, obj: Obj, **params: str) -> Obj:
    r = await client.post(path, json=obj, params=params)
    assert r.status_code == 201, r.text
    out: Obj = r.json()
    return out


async def names(client: httpx.AsyncClient, path: str, **params: str) -> list[str]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return sorted(i["metadata"]["name"] for i in r.json()["items"])


async def list_rv(client: httpx.AsyncClient, path: str) -> str:
    r = await client.get(path)
    assert r.status_code == 200, r.text
    rv: str = r.json()["metadata"]["resourceVersion"]
    return rv


async def current_revision(server: Server) -> int:
    rev: int = await server.backend.current_revision()
    return rev


def watch_events(body: bytes) -> list[Obj]:
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


async def eventually(check: Any, timeout: float = 3.0) -> None:
    """Poll ``check()`` (async, truthy when done) until it succeeds or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Watch:
    """One watch request driven straight through the ASGI app, read event by event."""

    def __init__(self, api: APIServer, path: str, *, accept: str = "", **params: str) -> None:
        headers = [(b"authorization", b"Bearer t")]
        if accept:
            headers.append((b"accept", accept.encode()))
        self.scope = {"type": "http", "method": "GET", "path": path, "headers": headers,
                      "query_string": str(httpx.QueryParams({"watch": "true"} | params)).encode()}
        self.api = api
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.events: asyncio.Queue[Obj] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._gone = asyncio.Event()
        self._requested = False
        self._buf = b""
        self._task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = dict(message["headers"])
            return
        self._buf += message.get("body", b"")
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                self.events.put_nowait(orjson.loads(line))
        if not message.get("more_body"):
            self.ended.set()

    async def __aenter__(self) -> Watch:
        self._task = asyncio.get_running_loop().create_task(
            self.api(self.scope, self._receive, self._send), name="test-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._gone.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 2)

    async def next(self, n: int = 1, timeout: float = 2.0) -> list[Obj]:
        return [await asyncio.wait_for(self.events.get(), timeout) for _ in range(n)]

    async def quiet(self, wait: float = 0.1) -> None:
        """Assert no further event arrives within ``wait`` seconds."""
        await asyncio.sleep(wait)
        assert self.events.empty(), self.events.get_nowait()


def summary(events: list[Obj]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


# -- lists: pagination and consistency ------------------------------------------------------


async def test_pagination_returns_every_object_once(client: httpx.AsyncClient) -> None:
    """limit + continue walks the whole collection; the last page has no continue token."""
    for i in range(7):
        await create(client, CM, configmap(f"cm-{i}"))
    seen: list[str] = []
    cont = ""
    pages = 0
    while True:
        params = {"limit": "3"} | ({"continue": cont} if cont else {})
        r = await client.get(CM, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 3
        seen += [i["metadata"]["name"] for i in body["items"]]
        pages += 1
        cont = body["metadata"].get("continue", "")
        if not cont:
            break
    assert pages == 3
    assert sorted(seen) == sorted([f"cm-{i}" for i in range(7)] + ["kube-root-ca.crt"])
    assert len(seen) == len(set(seen))


async def test_continue_pages_are_a_snapshot(client: httpx.AsyncClient) -> None:
    """Later pages show the state of the first page's resourceVersion."""
    for i in range(4):
        await create(client, CM, configmap(f"cm-{i}", v="old"))
    first = (await client.get(CM, params={"limit": "2"})).json()
    rv = first["metadata"]["resourceVersion"]
    await create(client, CM, configmap("cm-new"))
    r = await client.patch(f"{CM}/cm-3", json={"data": {"v": "new"}}, headers=MERGE)
    assert r.status_code == 200
    cont = first["metadata"]["continue"]
    items: list[Obj] = []
    while cont:
        page = (await client.get(CM, params={"limit": "2", "continue": cont})).json()
        assert page["metadata"]["resourceVersion"] == rv
        items += page["items"]
        cont = page["metadata"].get("continue", "")
    later = {i["metadata"]["name"]: i for i in items}
    assert "cm-new" not in later
    assert later["cm-3"]["data"] == {"v": "old"}


@pytest.mark.parametrize("token", [
    pytest.param("not-a-token!", id="garbage"),
    pytest.param("eyJ2IjoibWV0YS5rOHMuaW8vdjAiLCJydiI6MSwic3RhcnQiOiJ4In0", id="wrong-version"),
])
async def test_invalid_continue_token_is_bad_request(client: httpx.AsyncClient,
                                                     token: str) -> None:
    """A continue token the server did not issue is a 400."""
    r = await client.get(CM, params={"limit": "1", "continue": token})
    assert r.status_code == 400
    assert r.json()["reason"] == "BadRequest"


async def test_continue_after_compaction_is_expired(client: httpx.AsyncClient,
                                                    server: Server) -> None:
    """A continue token older than the compacted revision gets 410 Expired."""
    for i in range(3):
        await create(client, CM, configmap(f"cm-{i}"))
    cont = (await client.get(CM, params={"limit": "1"})).json()["metadata"]["continue"]
    for i in range(3):
        await client.patch(f"{CM}/cm-{i}", json={"data": {"x": "1"}}, headers=MERGE)
    await server.backend.compact(await current_revision(server))
    r = await client.get(CM, params={"limit": "1", "continue": cont})
    assert r.status_code == 410
    assert r.json()["reason"] == "Expired"


async def test_resource_version_match_exact_lists_the_past(client: httpx.AsyncClient) -> None:
    """resourceVersionMatch=Exact returns the collection as it was at that revision."""
    await create(client, CM, configmap("a", v="1"))
    rv = await list_rv(client, CM)
    await create(client, CM, configmap("b"))
    await client.patch(f"{CM}/a", json={"data": {"v": "2"}}, headers=MERGE)
    await client.delete(f"{CM}/kube-root-ca.crt")
    r = await client.get(CM, params={"resourceVersion": rv, "resourceVersionMatch": "Exact"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata"]["resourceVersion"] == rv
    by_name = {i["metadata"]["name"]: i for i in body["items"]}
    assert sorted(by_name) == ["a", "kube-root-ca.crt"]
    assert by_name["a"]["data"] == {"v": "1"}
    assert await names(client, CM) == ["a", "b"]


async def test_limit_with_resource_version_is_legacy_exact(client: httpx.AsyncClient) -> None:
    """limit + resourceVersion=N (no match) lists the state at N, as upstream's legacy rule."""
    await create(client, CM, configmap("a"))
    rv = await list_rv(client, CM)
    await create(client, CM, configmap("b"))
    r = await client.get(CM, params={"limit": "10", "resourceVersion": rv})
    assert r.status_code == 200
    assert r.json()["metadata"]["resourceVersion"] == rv
    assert sorted(i["metadata"]["name"] for i in r.json()["items"]) == ["a", "kube-root-ca.crt"]


async def test_exact_list_below_compaction_is_expired(client: httpx.AsyncClient,
                                                      server: Server) -> None:
    """An exact list at a compacted revision is 410 Expired."""
    await create(client, CM, configmap("a"))
    rv = await list_rv(client, CM)
    for i in range(3):
        await client.patch(f"{CM}/a", json={"data": {"i": str(i)}}, headers=MERGE)
    await server.backend.compact(await current_revision(server))
    r = await client.get(CM, params={"resourceVersion": rv, "resourceVersionMatch": "Exact"})
    assert r.status_code == 410
    assert r.json()["reason"] == "Expired"


@pytest.mark.parametrize(("params", "message"), [
    pytest.param({"resourceVersionMatch": "Exact"},
                 "resourceVersionMatch is forbidden unless resourceVersion is provided",
                 id="match-without-rv"),
    pytest.param({"resourceVersionMatch": "Sometimes", "resourceVersion": "1"},
                 'Unsupported value: "Sometimes"', id="unknown-match"),
    pytest.param({"resourceVersionMatch": "Exact", "resourceVersion": "0"},
                 'resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"',
                 id="exact-zero"),
])
async def test_invalid_list_options(client: httpx.AsyncClient, params: dict[str, str],
                                    message: str) -> None:
    """Inconsistent resourceVersion/resourceVersionMatch is 422 Invalid ListOptions."""
    r = await client.get(CM, params=params)
    assert r.status_code == 422
    assert r.json()["reason"] == "Invalid"
    assert r.json()["message"].startswith('ListOptions.meta.k8s.io "" is invalid')
    assert message in r.json()["message"]


async def test_continue_with_resource_version_is_bad_request(client: httpx.AsyncClient) -> None:
    """A continue token cannot be combined with a resourceVersion."""
    for i in range(3):
        await create(client, CM, configmap(f"cm-{i}"))
    first = (await client.get(CM, params={"limit": "1"})).json()["metadata"]
    r = await client.get(CM, params={"limit": "1", "continue": first["continue"],
                                     "resourceVersion": first["resourceVersion"]})
    assert r.status_code == 400
    assert r.json()["message"] == "specifying resource version is not allowed when using continue"


# -- selectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "expected"), [
    pytest.param("app=web", ["web-1", "web-2"], id="equality"),
    pytest.param("app==web", ["web-1", "web-2"], id="double-equals"),
    pytest.param("app!=web", ["cache", "db", "plain"], id="not-equal"),
    pytest.param("tier in (front,cache)", ["cache", "web-1"], id="in"),
    pytest.param("tier notin (front)", ["cache", "db", "plain", "web-2"], id="notin"),
    pytest.param("!tier", ["plain", "web-2"], id="does-not-exist"),
    pytest.param("tier", ["cache", "db", "web-1"], id="exists"),
    pytest.param("app=web,tier=front", ["web-1"], id="and"),
])
async def test_label_selectors(client: httpx.AsyncClient, selector: str,
                               expected: list[str]) -> None:
    """labelSelector supports =, ==, !=, in, notin, !key and key."""
    objects = {"web-1": {"app": "web", "tier": "front"}, "web-2": {"app": "web"},
               "db": {"app": "db", "tier": "back"}, "cache": {"app": "redis", "tier": "cache"},
               "plain": {}}
    for name, labels in objects.items():
        await create(client, CM, configmap(name, labels))
    got = [n for n in await names(client, CM, labelSelector=selector)
           if n != "kube-root-ca.crt"]
    assert got == sorted(expected)


async def test_invalid_label_selector_is_bad_request(client: httpx.AsyncClient) -> None:
    """A label selector that does not parse is a 400."""
    r = await client.get(CM, params={"labelSelector": "a in (b"})
    assert r.status_code == 400


@pytest.fixture
async def selectable(client: httpx.AsyncClient, server: Server) -> None:
    """Pods on nodes in different phases, and events about objects, in two namespaces."""
    await create(client, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": "other"}})
    for name, node, phase in (("p1", "n1", "Running"), ("p2", "n2", "Running"),
                              ("p3", "n1", "Succeeded")):
        await create(client, PODS, pod(name, node=node))
        r = await client.patch(f"{PODS}/{name}/status", json={"status": {"phase": phase}},
                               headers=MERGE)
        assert r.status_code == 200, r.text
    await create(client, "/api/v1/namespaces/other/pods", pod("p4", node="n1"))
    for name, kind, obj_name, uid in (("e1", "Pod", "p1", "u1"), ("e2", "Pod", "p2", "u2"),
                                      ("e3", "Deployment", "p1", "u3")):
        await create(client, "/api/v1/namespaces/default/events", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": kind, "name": obj_name, "namespace": "default",
                               "uid": uid},
            "reason": "Test", "message": f"about {obj_name}", "type": "Normal"})


@pytest.mark.usefixtures("selectable")
@pytest.mark.parametrize(("path", "selector", "expected"), [
    pytest.param(PODS, "metadata.name=p2", ["p2"], id="name"),
    pytest.param(PODS, "metadata.name!=p2", ["p1", "p3"], id="name-not-equal"),
    pytest.param("/api/v1/pods", "metadata.namespace=other", ["p4"], id="namespace"),
    pytest.param("/api/v1/pods", "spec.nodeName=n1", ["p1", "p3", "p4"], id="node-name"),
    pytest.param(PODS, "spec.nodeName=n1,status.phase!=Succeeded", ["p1"], id="describe-node"),
    pytest.param(PODS, "status.phase=Running", ["p1", "p2"], id="phase"),
    pytest.param(PODS, "status.phase==Succeeded", ["p3"], id="phase-double-equals"),
    pytest.param("/api/v1/namespaces/default/events", "involvedObject.name=p1", ["e1", "e3"],
                 id="event-involved-name"),
    pytest.param("/api/v1/namespaces/default/events",
                 "involvedObject.name=p1,involvedObject.kind=Pod", ["e1"],
                 id="event-involved-kind"),
    pytest.param("/api/v1/namespaces/default/events", "involvedObject.uid=u2", ["e2"],
                 id="event-involved-uid"),
    pytest.param("/api/v1/namespaces/default/events", "involvedObject.kind!=Pod", ["e3"],
                 id="event-not-equal"),
])
async def test_field_selectors(client: httpx.AsyncClient, path: str, selector: str,
                               expected: list[str]) -> None:
    """fieldSelector filters on the fields upstream makes selectable."""
    assert await names(client, path, fieldSelector=selector) == expected


@pytest.mark.parametrize("params", [
    pytest.param({"fieldSelector": "metadata.name=a", "labelSelector": "x=2"}, id="label"),
    pytest.param({"fieldSelector": "metadata.name=a,metadata.namespace=other"}, id="namespace"),
])
async def test_name_selector_still_applies_other_requirements(
        client: httpx.AsyncClient, params: dict[str, str]) -> None:
    """metadata.name=X combined with another requirement that fails selects nothing."""
    await create(client, CM, configmap("a", {"x": "1"}))
    assert await names(client, CM, **params) == []
    r = await client.delete(CM, params=params)
    assert r.status_code == 200
    assert (await client.get(f"{CM}/a")).status_code == 200


@pytest.mark.parametrize(("path", "selector", "message"), [
    pytest.param(PODS, "spec.foo=bar", "field label not supported: spec.foo", id="pods"),
    pytest.param("/api/v1/namespaces/default/events", "spec.foo=bar",
                 "field label not supported: spec.foo", id="events"),
    pytest.param(CM, "data.x=y",
                 '"data.x" is not a known field selector: only "metadata.name", '
                 '"metadata.namespace"', id="configmaps-default-conversion"),
])
async def test_unsupported_field_selector(client: httpx.AsyncClient, path: str, selector: str,
                                          message: str) -> None:
    """Selecting on a field the kind does not index is a 400 naming the field."""
    r = await client.get(path, params={"fieldSelector": selector})
    assert r.status_code == 400
    assert r.json()["message"] == message


# -- metadata bookkeeping ---------------------------------------------------------------------


async def test_generate_name_uid_timestamp_and_resource_versions(
        client: httpx.AsyncClient) -> None:
    """generateName gets a suffix; uid and creationTimestamp are set; rv grows per write."""
    body = configmap("")
    body["metadata"] = {"generateName": "job-"}
    a = await create(client, CM, body)
    b = await create(client, CM, body)
    for obj in (a, b):
        md = obj["metadata"]
        assert md["name"].startswith("job-") and len(md["name"]) == len("job-") + 5
        assert md["generateName"] == "job-"
        assert len(md["uid"]) == 36
        assert md["creationTimestamp"].endswith("Z")
    assert a["metadata"]["name"] != b["metadata"]["name"]
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    r = await client.patch(f"{CM}/{a['metadata']['name']}", json={"data": {"k": "v"}},
                           headers=MERGE)
    assert int(r.json()["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    assert r.json()["metadata"]["uid"] == a["metadata"]["uid"]


async def test_client_cannot_set_uid_or_creation_timestamp(client: httpx.AsyncClient) -> None:
    """Server-owned metadata in a create body is replaced."""
    body = configmap("x")
    body["metadata"] |= {"uid": "mine", "creationTimestamp": "2001-01-01T00:00:00Z",
                         "resourceVersion": "99999"}
    out = await create(client, CM, body)
    assert out["metadata"]["uid"] != "mine"
    assert out["metadata"]["creationTimestamp"] != "2001-01-01T00:00:00Z"


async def test_generation_tracks_spec_changes_only(client: httpx.AsyncClient) -> None:
    """A Deployment starts at generation 1; only spec changes bump it."""
    dep = await create(client, DEPLOY, deployment("web"))
    assert dep["metadata"]["generation"] == 1
    r = await client.patch(f"{DEPLOY}/web", json={"metadata": {"labels": {"team": "ml"}}},
                           headers=MERGE)
    assert r.json()["metadata"]["generation"] == 1
    r = await client.patch(f"{DEPLOY}/web/status",
                           json={"status": {"observedGeneration": 1, "replicas": 1}},
                           headers=MERGE)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["generation"] == 1
    r = await client.patch(f"{DEPLOY}/web", json={"spec": {"replicas": 3}}, headers=MERGE)
    assert r.json()["metadata"]["generation"] == 2
    assert r.json()["status"]["replicas"] == 1


async def test_status_subresource_and_main_resource_are_separate(
        client: httpx.AsyncClient) -> None:
    """PUT /status ignores spec changes; PUT on the resource ignores status changes."""
    dep = await create(client, DEPLOY, deployment("web", replicas=2))
    dep["spec"]["replicas"] = 9
    dep["status"] = {"replicas": 2, "readyReplicas": 1}
    r = await client.put(f"{DEPLOY}/web/status", json=dep)
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["spec"]["replicas"] == 2
    assert after["status"]["readyReplicas"] == 1
    after["spec"]["replicas"] = 4
    after["status"]["readyReplicas"] = 7
    r = await client.put(f"{DEPLOY}/web", json=after)
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["replicas"] == 4
    assert r.json()["status"]["readyReplicas"] == 1


async def test_status_write_keeps_annotations_not_labels(client: httpx.AsyncClient) -> None:
    """Through /status a Deployment's annotations may change, its labels may not."""
    await create(client, DEPLOY, deployment("web"))
    r = await client.patch(f"{DEPLOY}/web/status", headers=MERGE, json={
        "metadata": {"annotations": {"note": "x"}, "labels": {"team": "ml"}},
        "status": {"replicas": 1}})
    assert r.status_code == 200, r.text
    md = r.json()["metadata"]
    assert md.get("annotations") == {"note": "x"}
    assert "team" not in (md.get("labels") or {})


async def test_status_is_dropped_on_create(client: httpx.AsyncClient) -> None:
    """A Deployment's status in a create body is not stored."""
    body = deployment("web")
    body["status"] = {"replicas": 5}
    out = await create(client, DEPLOY, body)
    assert out.get("status", {}).get("replicas") is None


async def test_pod_status_is_reset_on_create(client: httpx.AsyncClient) -> None:
    """A Pod created with a status starts Pending regardless."""
    body = pod("p")
    body["status"] = {"phase": "Running", "podIP": "10.0.0.9"}
    out = await create(client, PODS, body)
    assert out["status"]["phase"] == "Pending"
    assert "podIP" not in out["status"]


# -- dry run ---------------------------------------------------------------------------------


async def test_dry_run_changes_nothing(client: httpx.AsyncClient, server: Server) -> None:
    """dryRun=All on create, update, patch and delete answers as usual but writes nothing."""
    await create(client, CM, configmap("keep", v="1"))
    before_rev = await current_revision(server)
    before = (await client.get(f"{CM}/keep")).json()
    dry = {"dryRun": "All"}
    r = await client.post(CM, json=configmap("ghost"), params=dry)
    assert r.status_code == 201 and r.json()["metadata"]["name"] == "ghost"
    changed = before | {"data": {"v": "2"}}
    r = await client.put(f"{CM}/keep", json=changed, params=dry)
    assert r.status_code == 200 and r.json()["data"] == {"v": "2"}
    r = await client.patch(f"{CM}/keep", json={"data": {"v": "3"}}, params=dry, headers=MERGE)
    assert r.status_code == 200 and r.json()["data"] == {"v": "3"}
    r = await client.delete(f"{CM}/keep", params=dry)
    assert r.status_code == 200
    assert await current_revision(server) == before_rev
    assert str(before_rev) == await list_rv(client, CM)
    assert (await client.get(f"{CM}/ghost")).status_code == 404
    assert (await client.get(f"{CM}/keep")).json() == before


async def test_dry_run_service_does_not_keep_its_ip(client: httpx.AsyncClient) -> None:
    """A dry-run Service shows an IP, which a real create may then take."""
    r = await client.post(SVC, json=service("dry"), params={"dryRun": "All"})
    assert r.status_code == 201
    ip = r.json()["spec"]["clusterIP"]
    out = await create(client, SVC, service("real", clusterIP=ip))
    assert out["spec"]["clusterIP"] == ip


async def test_unsupported_dry_run_value(client: httpx.AsyncClient) -> None:
    """dryRun accepts only All."""
    r = await client.post(CM, json=configmap("x"), params={"dryRun": "Some"})
    assert r.status_code == 400


# -- deletion and finalizers ------------------------------------------------------------------


async def test_finalizer_keeps_object_until_removed(client: httpx.AsyncClient) -> None:
    """Deleting an object with a finalizer marks it; dropping the finalizer removes it."""
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await create(client, CM, body)
    r = await client.delete(f"{CM}/held")
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["deletionTimestamp"]
    got = (await client.get(f"{CM}/held")).json()
    assert got["metadata"]["deletionTimestamp"]
    assert got["metadata"]["finalizers"] == ["example.com/hold"]
    # a second delete changes nothing
    again = await client.delete(f"{CM}/held")
    assert again.status_code == 200
    assert again.json()["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]
    r = await client.patch(f"{CM}/held", json={"metadata": {"finalizers": None}}, headers=MERGE)
    assert r.status_code == 200, r.text
    assert (await client.get(f"{CM}/held")).status_code == 404


async def test_finalizers_cannot_be_added_while_deleting(client: httpx.AsyncClient) -> None:
    """A new finalizer on an object that is being deleted is rejected (422)."""
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/a"]
    await create(client, CM, body)
    await client.delete(f"{CM}/held")
    r = await client.patch(f"{CM}/held",
                           json={"metadata": {"finalizers": ["example.com/a", "example.com/b"]}},
                           headers=MERGE)
    assert r.status_code == 422, r.text
    assert "metadata.finalizers" in r.text


@pytest.mark.parametrize(("policy", "finalizer"), [
    pytest.param("Foreground", "foregroundDeletion", id="foreground"),
    pytest.param("Orphan", "orphan", id="orphan"),
])
async def test_propagation_policy_adds_finalizer(client: httpx.AsyncClient, policy: str,
                                                 finalizer: str) -> None:
    """Foreground and Orphan deletes keep the object with the GC's finalizer."""
    await create(client, DEPLOY, deployment("web"))
    r = await client.request("DELETE", f"{DEPLOY}/web",
                             json={"kind": "DeleteOptions", "apiVersion": "v1",
                                   "propagationPolicy": policy})
    assert r.status_code == 200, r.text
    got = (await client.get(f"{DEPLOY}/web")).json()
    assert got["metadata"]["finalizers"] == [finalizer]
    assert got["metadata"]["deletionTimestamp"]


async def test_background_delete_removes_at_once(client: httpx.AsyncClient) -> None:
    """Without finalizers a delete removes the object and returns it."""
    await create(client, DEPLOY, deployment("web"))
    r = await client.request("DELETE", f"{DEPLOY}/web", json={"propagationPolicy": "Background"})
    assert r.status_code == 200
    assert r.json()["metadata"]["name"] == "web"
    assert (await client.get(f"{DEPLOY}/web")).status_code == 404
    r = await client.delete(f"{DEPLOY}/web")
    assert r.status_code == 404
    assert r.json()["message"] == 'deployments.apps "web" not found'


async def test_graceful_pod_delete(client: httpx.AsyncClient) -> None:
    """A pod on a node is deleted gracefully: 200 with deletionTimestamp and grace period."""
    await create(client, PODS, pod("p", node="n1"))
    r = await client.delete(f"{PODS}/p")
    assert r.status_code == 200
    md = r.json()["metadata"]
    assert md["deletionTimestamp"] and md["deletionGracePeriodSeconds"] == 30


@pytest.mark.parametrize(("node", "params"), [
    pytest.param("", {}, id="unscheduled-at-once"),
    pytest.param("n1", {"gracePeriodSeconds": "0"}, id="force"),
])
async def test_pod_delete_without_grace(client: httpx.AsyncClient, node: str,
                                        params: dict[str, str]) -> None:
    """An unscheduled pod, or gracePeriodSeconds=0, is removed at once."""
    await create(client, PODS, pod("p", node=node))
    r = await client.delete(f"{PODS}/p", params=params)
    assert r.status_code == 200
    assert (await client.get(f"{PODS}/p")).status_code == 404


async def test_graceful_pod_delete_keeps_object(client: httpx.AsyncClient) -> None:
    """A pod on a node keeps existing, marked, until its grace period is over."""
    await create(client, PODS, pod("p", node="n1"))
    r = await client.delete(f"{PODS}/p", params={"gracePeriodSeconds": "5"})
    assert r.status_code in (200, 202)
    got = (await client.get(f"{PODS}/p")).json()
    assert got["metadata"]["deletionGracePeriodSeconds"] == 5
    r = await client.delete(f"{PODS}/p", params={"gracePeriodSeconds": "0"})
    assert (await client.get(f"{PODS}/p")).status_code == 404


async def test_invalid_propagation_policy(client: httpx.AsyncClient) -> None:
    """An unknown propagationPolicy is 422 and deletes nothing."""
    await create(client, CM, configmap("x"))
    r = await client.delete(f"{CM}/x", params={"propagationPolicy": "Sideways"})
    assert r.status_code == 422
    assert (await client.get(f"{CM}/x")).status_code == 200


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("uid", "not-the-uid", id="uid"),
    pytest.param("resourceVersion", "1", id="resource-version"),
])
async def test_delete_preconditions(client: httpx.AsyncClient, field: str, value: str) -> None:
    """A DeleteOptions precondition that does not hold is 409 and deletes nothing."""
    await create(client, CM, configmap("x"))
    r = await client.request("DELETE", f"{CM}/x", json={"preconditions": {field: value}})
    assert r.status_code == 409
    assert "Precondition failed" in r.json()["message"]
    assert (await client.get(f"{CM}/x")).status_code == 200


async def test_delete_collection_by_label(client: httpx.AsyncClient) -> None:
    """DELETE on a collection removes only what the selector matches."""
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        await create(client, CM, configmap(name, {"tier": tier}))
    r = await client.delete(CM, params={"labelSelector": "tier=x"})
    assert r.status_code == 200
    assert sorted(i["metadata"]["name"] for i in r.json()["items"]) == ["a", "b"]
    assert await names(client, CM) == ["c", "kube-root-ca.crt"]


# -- concurrency control ---------------------------------------------------------------------


async def test_stale_update_is_conflict(client: httpx.AsyncClient) -> None:
    """PUT with an old resourceVersion is 409 with a Conflict Status."""
    old = await create(client, CM, configmap("x", v="1"))
    r = await client.put(f"{CM}/x", json=old | {"data": {"v": "2"}})
    assert r.status_code == 200
    r = await client.put(f"{CM}/x", json=old | {"data": {"v": "3"}})
    assert r.status_code == 409
    status = r.json()
    assert status["kind"] == "Status" and status["status"] == "Failure"
    assert status["reason"] == "Conflict" and status["code"] == 409
    assert status["details"] == {"name": "x", "kind": "configmaps"}
    assert status["message"] == (
        'Operation cannot be fulfilled on configmaps "x": the object has been modified; please '
        "apply your changes to the latest version and try again")
    assert (await client.get(f"{CM}/x")).json()["data"] == {"v": "2"}


async def test_update_without_resource_version_is_unconditional(
        client: httpx.AsyncClient) -> None:
    """PUT without metadata.resourceVersion overwrites whatever is stored."""
    await create(client, CM, configmap("x", v="1"))
    await client.patch(f"{CM}/x", json={"data": {"v": "2"}}, headers=MERGE)
    r = await client.put(f"{CM}/x", json=configmap("x", v="3"))
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"v": "3"}


async def test_no_op_update_writes_nothing(client: httpx.AsyncClient, server: Server) -> None:
    """A PUT or patch that changes nothing keeps the resourceVersion and writes no revision."""
    cm = await create(client, CM, configmap("x", v="1"))
    before = await current_revision(server)
    r = await client.put(f"{CM}/x", json=cm)
    assert r.status_code == 200
    assert r.json()["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
    r = await client.patch(f"{CM}/x", json={"data": {"v": "1"}}, headers=MERGE)
    assert r.json()["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
    assert await current_revision(server) == before


async def test_update_of_missing_object_is_not_found(client: httpx.AsyncClient) -> None:
    """PUT does not create a ConfigMap (only Events, Leases, Endpoints allow that)."""
    r = await client.put(f"{CM}/nope", json=configmap("nope"))
    assert r.status_code == 404
    assert r.json()["message"] == 'configmaps "nope" not found'


async def test_update_name_mismatch_is_bad_request(client: httpx.AsyncClient) -> None:
    """The body's name must match the URL's."""
    await create(client, CM, configmap("x"))
    r = await client.put(f"{CM}/x", json=configmap("y"))
    assert r.status_code == 400


async def test_patch_retries_on_conflict(client: httpx.AsyncClient, server: Server,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A patch that loses a compare-and-swap race re-reads and applies again."""
    await create(client, CM, configmap("x", a="1"))
    backend = server.backend
    real_update = backend.update
    raced: list[str] = []

    async def racing_update(key: str, value: bytes, *, expected_revision: int) -> Any:
        if not raced and key.endswith("/configmaps/default/x"):
            raced.append(key)
            current = await backend.get(key)
            assert current is not None
            obj = orjson.loads(current.value)
            obj["data"]["b"] = "2"
            await real_update(key, orjson.dumps(obj), expected_revision=current.mod_revision)
        return await real_update(key, value, expected_revision=expected_revision)

    monkeypatch.setattr(backend, "update", racing_update)
    r = await client.patch(f"{CM}/x", json={"data": {"c": "3"}}, headers=MERGE)
    assert r.status_code == 200, r.text
    assert raced
    assert r.json()["data"] == {"a": "1", "b": "2", "c": "3"}


async def test_concurrent_patches_all_apply(client: httpx.AsyncClient) -> None:
    """Many concurrent patches of one object each land."""
    await create(client, CM, configmap("x"))
    rs = await asyncio.gather(*(
        client.patch(f"{CM}/x", json={"data": {f"k{i}": str(i)}}, headers=MERGE)
        for i in range(8)))
    assert [r.status_code for r in rs] == [200] * 8
    assert (await client.get(f"{CM}/x")).json()["data"] == {f"k{i}": str(i) for i in range(8)}


async def test_patch_with_stale_resource_version_is_conflict(client: httpx.AsyncClient) -> None:
    """A patch that names a resourceVersion is a precondition: no retry, 409."""
    old = await create(client, CM, configmap("x", v="1"))
    await client.patch(f"{CM}/x", json={"data": {"v": "2"}}, headers=MERGE)
    r = await client.patch(f"{CM}/x", headers=MERGE, json={
        "metadata": {"resourceVersion": old["metadata"]["resourceVersion"]},
        "data": {"v": "3"}})
    assert r.status_code == 409


@pytest.mark.parametrize(("headers", "body", "expected"), [
    pytest.param(MERGE, {"data": {"a": None, "c": "3"}}, {"b": "2", "c": "3"}, id="merge"),
    pytest.param(STRATEGIC, {"data": {"a": "9"}}, {"a": "9", "b": "2"}, id="strategic"),
    pytest.param(JSON_PATCH, [{"op": "replace", "path": "/data/a", "value": "5"},
                              {"op": "remove", "path": "/data/b"}], {"a": "5"}, id="json-patch"),
])
async def test_patch_types(client: httpx.AsyncClient, headers: dict[str, str], body: Any,
                           expected: dict[str, str]) -> None:
    """Merge, strategic-merge and JSON patches each apply."""
    await create(client, CM, configmap("x", a="1", b="2"))
    r = await client.patch(f"{CM}/x", content=orjson.dumps(body), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == expected


async def test_patch_with_unsupported_content_type(client: httpx.AsyncClient) -> None:
    """PATCH with a plain JSON body is 415."""
    await create(client, CM, configmap("x"))
    r = await client.patch(f"{CM}/x", json={"data": {}})
    assert r.status_code == 415


@pytest.mark.parametrize(("body", "headers", "code", "text"), [
    pytest.param(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y}\ndata: {a: b}\n",
                 {"Content-Type": "application/yaml"}, 201, "", id="yaml-body"),
    pytest.param(orjson.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "z"}}),
                 {}, 400, 'no kind \\"Secret\\" is registered', id="wrong-kind"),
    pytest.param(orjson.dumps({"apiVersion": "v2", "kind": "ConfigMap",
                               "metadata": {"name": "z"}}),
                 {}, 400, "does not match the expected API version", id="wrong-version"),
    pytest.param(orjson.dumps(configmap("z") | {"metadata": {"name": "z",
                                                            "namespace": "kube-system"}}),
                 {}, 400, "does not match the namespace sent on the request", id="ns-mismatch"),
    pytest.param(orjson.dumps(configmap("Bad_Name")), {}, 422,
                 "a lowercase RFC 1123 subdomain", id="bad-name"),
    pytest.param(b"{not json", {}, 400, "", id="malformed-json"),
    pytest.param(b"[1, 2]", {}, 400, "", id="not-an-object"),
    pytest.param(orjson.dumps(configmap("big", a="x" * (3 * 1024 * 1024 + 10))), {}, 413,
                 "Request entity too large", id="too-large"),
])
async def test_create_body_handling(client: httpx.AsyncClient, body: bytes,
                                    headers: dict[str, str], code: int, text: str) -> None:
    """Create bodies are decoded, type-checked and validated as upstream does."""
    r = await client.post(CM, content=body,
                          headers={"Content-Type": "application/json"} | headers)
    assert r.status_code == code, r.text
    assert text in r.text


async def test_put_creates_events(client: httpx.AsyncClient) -> None:
    """PUT of a missing Event creates it (AllowCreateOnUpdate), answering 201."""
    r = await client.put("/api/v1/namespaces/default/events/e1", json={
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Test", "message": "m", "type": "Normal"})
    assert r.status_code == 201, r.text


async def test_create_existing_is_already_exists(client: httpx.AsyncClient) -> None:
    """A second create with the same name is 409 AlreadyExists."""
    await create(client, CM, configmap("x"))
    r = await client.post(CM, json=configmap("x"))
    assert r.status_code == 409
    assert r.json()["reason"] == "AlreadyExists"
    assert r.json()["message"] == 'configmaps "x" already exists'


# -- namespaces ------------------------------------------------------------------------------


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


async def test_create_in_missing_namespace_is_not_found(client: httpx.AsyncClient) -> None:
    """Creating in a namespace that does not exist is 404 about the namespace."""
    r = await client.post("/api/v1/namespaces/x/configmaps", json=configmap("a"))
    assert r.status_code == 404
    assert r.json()["message"] == 'namespaces "x" not found'
    assert r.json()["details"]["kind"] == "namespaces"


async def test_namespace_gets_root_ca_and_default_service_account(
        client: httpx.AsyncClient) -> None:
    """A new namespace is Active and gets kube-root-ca.crt and the default ServiceAccount."""
    ns = await create(client, "/api/v1/namespaces", namespace("team"))
    assert ns["status"]["phase"] == "Active"
    assert ns["spec"]["finalizers"] == ["kubernetes"]
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team"

    async def ready() -> bool:
        cm = await client.get("/api/v1/namespaces/team/configmaps/kube-root-ca.crt")
        sa = await client.get("/api/v1/namespaces/team/serviceaccounts/default")
        return cm.status_code == 200 and sa.status_code == 200 and \
            cm.json()["data"]["ca.crt"] == CA_PEM.decode()

    await eventually(ready)


async def test_terminating_namespace_refuses_new_objects(client: httpx.AsyncClient) -> None:
    """A deleted namespace is Terminating and refuses new content with 403."""
    await create(client, "/api/v1/namespaces", namespace("doomed"))
    r = await client.delete("/api/v1/namespaces/doomed")
    assert r.status_code == 200, r.text
    got = (await client.get("/api/v1/namespaces/doomed")).json()
    assert got["status"]["phase"] == "Terminating"
    assert got["metadata"]["deletionTimestamp"]
    r = await client.post("/api/v1/namespaces/doomed/configmaps", json=configmap("late"))
    assert r.status_code == 403
    status = r.json()
    assert status["reason"] == "Forbidden"
    assert status["message"] == ('configmaps "late" is forbidden: unable to create new content '
                                 "in namespace doomed because it is being terminated")
    assert await names(client, "/api/v1/namespaces", fieldSelector="status.phase=Terminating") \
        == ["doomed"]


@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
async def test_immortal_namespaces_cannot_be_deleted(client: httpx.AsyncClient,
                                                     name: str) -> None:
    """The system namespaces refuse deletion with 403."""
    r = await client.delete(f"/api/v1/namespaces/{name}")
    assert r.status_code == 403
    assert r.json()["message"] == (f'namespaces "{name}" is forbidden: this namespace may not '
                                   "be deleted")
    got = (await client.get(f"/api/v1/namespaces/{name}")).json()
    assert "deletionTimestamp" not in got["metadata"]


async def test_list_in_missing_namespace_is_empty(client: httpx.AsyncClient) -> None:
    """Listing in a namespace that does not exist is an empty list, not an error."""
    r = await client.get("/api/v1/namespaces/nowhere/configmaps")
    assert r.status_code == 200
    assert r.json()["items"] == []


async def test_cluster_scoped_object_drops_namespace(client: httpx.AsyncClient) -> None:
    """A namespace in the body of a cluster-scoped object is cleared."""
    body = namespace("team")
    body["metadata"]["namespace"] = "default"
    out = await create(client, "/api/v1/namespaces", body)
    assert "namespace" not in out["metadata"]


async def test_namespace_finalize_lets_it_go(client: httpx.AsyncClient) -> None:
    """Emptying spec.finalizers through /finalize removes a terminating namespace."""
    await create(client, "/api/v1/namespaces", namespace("doomed"))
    await client.delete("/api/v1/namespaces/doomed")
    got = (await client.get("/api/v1/namespaces/doomed")).json()
    got["spec"]["finalizers"] = []
    r = await client.put("/api/v1/namespaces/doomed/finalize", json=got)
    assert r.status_code == 200, r.text
    assert (await client.get("/api/v1/namespaces/doomed")).status_code == 404


# -- services --------------------------------------------------------------------------------


SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/12")


async def test_cluster_ip_is_allocated(client: httpx.AsyncClient) -> None:
    """A ClusterIP Service gets a unique address in the service range."""
    a = await create(client, SVC, service("a"))
    b = await create(client, SVC, service("b"))
    for svc in (a, b):
        ip = svc["spec"]["clusterIP"]
        assert ipaddress.ip_address(ip) in SERVICE_RANGE
        assert svc["spec"]["clusterIPs"] == [ip]
        assert svc["spec"]["ipFamilies"] == ["IPv4"]
        assert svc["spec"]["type"] == "ClusterIP"
    assert a["spec"]["clusterIP"] != b["spec"]["clusterIP"]
    assert "10.96.0.1" not in (a["spec"]["clusterIP"], b["spec"]["clusterIP"])


@pytest.mark.parametrize("svc_type", ["NodePort", "LoadBalancer"])
async def test_node_ports_are_allocated(client: httpx.AsyncClient, svc_type: str) -> None:
    """NodePort and LoadBalancer Services get a node port per port in 30000-32767."""
    svc = service("np", type=svc_type, ports=[{"name": "a", "port": 80},
                                               {"name": "b", "port": 81}])
    out = await create(client, SVC, svc)
    ports = [p["nodePort"] for p in out["spec"]["ports"]]
    assert all(30000 <= p <= 32767 for p in ports)
    assert len(set(ports)) == 2
    assert ipaddress.ip_address(out["spec"]["clusterIP"]) in SERVICE_RANGE


async def test_duplicate_node_port_is_invalid(client: httpx.AsyncClient) -> None:
    """Asking for a node port already taken is 422 naming the field."""
    await create(client, SVC, service("a", type="NodePort",
                                      ports=[{"port": 80, "nodePort": 30080}]))
    r = await client.post(SVC, json=service("b", type="NodePort",
                                             ports=[{"port": 80, "nodePort": 30080}]))
    assert r.status_code == 422, r.text
    status = r.json()
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"
    assert "provided port is already allocated" in status["message"]


async def test_duplicate_cluster_ip_is_invalid(client: httpx.AsyncClient) -> None:
    """Asking for a cluster IP already taken is 422."""
    r = await client.post(SVC, json=service("b", clusterIP="10.96.0.1"))
    assert r.status_code == 422, r.text
    assert r.json()["details"]["causes"][0]["field"] == "spec.clusterIPs"
    assert "failed to allocate IP 10.96.0.1: provided IP is already allocated" in r.text


async def test_headless_and_external_name(client: httpx.AsyncClient) -> None:
    """clusterIP None stays None; an ExternalName Service gets no address."""
    headless = await create(client, SVC, service("h", clusterIP="None"))
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["clusterIPs"] == ["None"]
    ext = await create(client, SVC, {"apiVersion": "v1", "kind": "Service",
                                     "metadata": {"name": "ext"},
                                     "spec": {"type": "ExternalName",
                                              "externalName": "db.example.com"}})
    assert "clusterIP" not in ext["spec"]
    assert "clusterIPs" not in ext["spec"]


async def test_service_update_keeps_address(client: httpx.AsyncClient) -> None:
    """A PUT that leaves out clusterIP and nodePort keeps what was allocated."""
    svc = await create(client, SVC, service("a", type="NodePort"))
    body = service("a", type="NodePort")
    body["metadata"]["labels"] = {"x": "y"}
    r = await client.put(f"{SVC}/a", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["clusterIP"] == svc["spec"]["clusterIP"]
    assert r.json()["spec"]["ports"][0]["nodePort"] == svc["spec"]["ports"][0]["nodePort"]
    r = await client.patch(f"{SVC}/a", json={"spec": {"selector": {"app": "b"}}}, headers=MERGE)
    assert r.json()["spec"]["clusterIP"] == svc["spec"]["clusterIP"]


async def test_cluster_ip_is_immutable(client: httpx.AsyncClient) -> None:
    """Changing spec.clusterIP of a Service is 422."""
    await create(client, SVC, service("a"))
    r = await client.patch(f"{SVC}/a", json={"spec": {"clusterIP": "10.96.200.200",
                                                      "clusterIPs": ["10.96.200.200"]}},
                           headers=MERGE)
    assert r.status_code == 422, r.text


async def test_service_delete_releases_addresses(client: httpx.AsyncClient) -> None:
    """After a delete, its cluster IP and node port can be asked for again."""
    svc = await create(client, SVC, service("a", type="NodePort"))
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    assert (await client.delete(f"{SVC}/a")).status_code == 200
    again = await create(client, SVC, service("b", type="NodePort", clusterIP=ip,
                                              ports=[{"port": 80, "nodePort": port}]))
    assert again["spec"]["clusterIP"] == ip
    assert again["spec"]["ports"][0]["nodePort"] == port


async def test_external_name_change_releases_cluster_ip(client: httpx.AsyncClient) -> None:
    """A ClusterIP Service turned ExternalName gives its address back."""
    svc = await create(client, SVC, service("a"))
    ip = svc["spec"]["clusterIP"]
    r = await client.patch(f"{SVC}/a", headers=MERGE, json={"spec": {
        "type": "ExternalName", "externalName": "db.example.com", "clusterIP": None,
        "clusterIPs": None}})
    assert r.status_code == 200, r.text
    assert "clusterIP" not in r.json()["spec"]
    r = await client.post(SVC, json=service("b", clusterIP=ip))
    assert r.status_code == 201, r.text


async def test_node_ports_released_when_type_changes(client: httpx.AsyncClient) -> None:
    """A NodePort Service turned ClusterIP loses its node ports, which become free."""
    await create(client, SVC, service("a", type="NodePort",
                                      ports=[{"port": 80, "nodePort": 30100}]))
    r = await client.patch(f"{SVC}/a", headers=MERGE, json={"spec": {
        "type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]}})
    assert r.status_code == 200, r.text
    assert "nodePort" not in r.json()["spec"]["ports"][0]
    await create(client, SVC, service("b", type="NodePort",
                                      ports=[{"port": 80, "nodePort": 30100}]))


async def test_failed_create_does_not_leak_address(client: httpx.AsyncClient) -> None:
    """A Service create that fails (name taken) gives its requested IP back."""
    await create(client, SVC, service("a"))
    r = await client.post(SVC, json=service("a", clusterIP="10.96.9.9"))
    assert r.status_code == 409
    out = await create(client, SVC, service("b", clusterIP="10.96.9.9"))
    assert out["spec"]["clusterIP"] == "10.96.9.9"


# -- subresources: scale, binding, eviction ---------------------------------------------------


async def test_scale_get(client: httpx.AsyncClient) -> None:
    """GET /scale answers an autoscaling/v1 Scale with the selector as a string."""
    dep = await create(client, DEPLOY, deployment("web", replicas=2))
    r = await client.get(f"{DEPLOY}/web/scale")
    assert r.status_code == 200
    scale = r.json()
    assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["metadata"]["name"] == "web"
    assert scale["metadata"]["uid"] == dep["metadata"]["uid"]
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"]["selector"] == "app=web"


@pytest.mark.parametrize(("method", "headers", "body"), [
    pytest.param("PUT", {}, {"kind": "Scale", "apiVersion": "autoscaling/v1",
                             "metadata": {"name": "web", "namespace": "default"},
                             "spec": {"replicas": 5}}, id="put"),
    pytest.param("PATCH", MERGE, {"spec": {"replicas": 5}}, id="merge-patch"),
    pytest.param("PATCH", STRATEGIC, {"spec": {"replicas": 5}}, id="strategic-patch"),
    pytest.param("PATCH", JSON_PATCH, [{"op": "replace", "path": "/spec/replicas", "value": 5}],
                 id="json-patch"),
])
async def test_scale_write(client: httpx.AsyncClient, method: str, headers: dict[str, str],
                           body: Any) -> None:
    """Writing the Scale sets the Deployment's spec.replicas."""
    await create(client, DEPLOY, deployment("web", replicas=2))
    r = await client.request(method, f"{DEPLOY}/web/scale", content=orjson.dumps(body),
                             headers=headers or {"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "Scale"
    assert r.json()["spec"]["replicas"] == 5
    dep = (await client.get(f"{DEPLOY}/web")).json()
    assert dep["spec"]["replicas"] == 5
    assert dep["metadata"]["generation"] == 2


async def test_scale_put_with_stale_resource_version_conflicts(
        client: httpx.AsyncClient) -> None:
    """kubectl scale --current-replicas sends the Scale's resourceVersion: stale is 409."""
    await create(client, DEPLOY, deployment("web", replicas=2))
    scale = (await client.get(f"{DEPLOY}/web/scale")).json()
    await client.patch(f"{DEPLOY}/web", json={"metadata": {"labels": {"x": "y"}}}, headers=MERGE)
    scale["spec"]["replicas"] = 4
    r = await client.put(f"{DEPLOY}/web/scale", json=scale)
    assert r.status_code == 409


async def test_scale_negative_is_invalid(client: httpx.AsyncClient) -> None:
    """A negative replica count on /scale is 422."""
    await create(client, DEPLOY, deployment("web"))
    r = await client.patch(f"{DEPLOY}/web/scale", json={"spec": {"replicas": -1}}, headers=MERGE)
    assert r.status_code == 422
    assert "spec.replicas" in r.json()["message"]


async def test_scale_of_missing_object(client: httpx.AsyncClient) -> None:
    """GET /scale of a missing Deployment is 404."""
    r = await client.get(f"{DEPLOY}/nope/scale")
    assert r.status_code == 404


def binding(name: str, node: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}


@pytest.mark.parametrize("path", [
    pytest.param(f"{PODS}/p/binding", id="subresource"),
    pytest.param("/api/v1/namespaces/default/bindings", id="legacy-bindings"),
])
async def test_binding_assigns_node_once(client: httpx.AsyncClient, path: str) -> None:
    """A Binding sets spec.nodeName and PodScheduled; binding again is 409."""
    await create(client, PODS, pod("p"))
    r = await client.post(path, json=binding("p", "n1"))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "Success"
    got = (await client.get(f"{PODS}/p")).json()
    assert got["spec"]["nodeName"] == "n1"
    scheduled = [c for c in got["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled and scheduled[0]["status"] == "True"
    r = await client.post(path, json=binding("p", "n2"))
    assert r.status_code == 409
    assert r.json()["reason"] == "Conflict"
    assert (await client.get(f"{PODS}/p")).json()["spec"]["nodeName"] == "n1"


async def test_binding_without_target_is_invalid(client: httpx.AsyncClient) -> None:
    """A Binding needs target.name."""
    await create(client, PODS, pod("p"))
    r = await client.post(f"{PODS}/p/binding", json={"apiVersion": "v1", "kind": "Binding",
                                                      "metadata": {"name": "p"}, "target": {}})
    assert r.status_code == 422


def eviction(name: str) -> Obj:
    return {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default"}}


async def running_pod(client: httpx.AsyncClient, name: str, labels: dict[str, str]) -> None:
    await create(client, PODS, pod(name, labels, node="n1"))
    r = await client.patch(f"{PODS}/{name}/status", json={"status": {"phase": "Running"}},
                           headers=MERGE)
    assert r.status_code == 200, r.text


async def test_eviction_without_budget_deletes(client: httpx.AsyncClient) -> None:
    """Evicting a pod no budget covers deletes it (gracefully: it is on a node)."""
    await running_pod(client, "p", {"app": "web"})
    r = await client.post(f"{PODS}/p/eviction", json=eviction("p"))
    assert r.status_code == 201, r.text
    got = await client.get(f"{PODS}/p")
    assert got.status_code == 404 or got.json()["metadata"].get("deletionTimestamp")


async def test_eviction_respects_disruption_budget(client: httpx.AsyncClient) -> None:
    """With a PodDisruptionBudget allowing 0 disruptions eviction is 429; with 1 it works."""
    await running_pod(client, "p", {"app": "web"})
    pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
    await create(client, pdbs, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                "metadata": {"name": "budget"},
                                "spec": {"minAvailable": 1,
                                         "selector": {"matchLabels": {"app": "web"}}}})
    status = {"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1,
              "desiredHealthy": 1, "expectedPods": 1}
    r = await client.patch(f"{pdbs}/budget/status", json={"status": status}, headers=MERGE)
    assert r.status_code == 200, r.text
    r = await client.post(f"{PODS}/p/eviction", json=eviction("p"))
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert "deletionTimestamp" not in (await client.get(f"{PODS}/p")).json()["metadata"]
    r = await client.patch(f"{pdbs}/budget/status",
                           json={"status": status | {"disruptionsAllowed": 1}}, headers=MERGE)
    assert r.status_code == 200
    r = await client.post(f"{PODS}/p/eviction", json=eviction("p"))
    assert r.status_code == 201, r.text
    pdb = (await client.get(f"{pdbs}/budget")).json()
    assert pdb["status"]["disruptionsAllowed"] == 0
    assert "p" in pdb["status"]["disruptedPods"]


async def test_eviction_of_missing_pod(client: httpx.AsyncClient) -> None:
    """Evicting a pod that does not exist is 404."""
    r = await client.post(f"{PODS}/nope/eviction", json=eviction("nope"))
    assert r.status_code == 404


async def test_unknown_subresource_is_not_found(client: httpx.AsyncClient) -> None:
    """A subresource the resource does not have is 404."""
    await create(client, CM, configmap("x"))
    r = await client.get(f"{CM}/x/scale")
    assert r.status_code == 404


# -- versions that share storage ----------------------------------------------------------------


HPA_V1 = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"
HPA_V2 = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"


async def test_hpa_v1_reads_as_v2(client: httpx.AsyncClient) -> None:
    """targetCPUUtilizationPercentage in v1 is a cpu Utilization metric in v2."""
    await create(client, HPA_V1, {
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "web"},
                 "minReplicas": 2, "maxReplicas": 7, "targetCPUUtilizationPercentage": 60}})
    v2 = (await client.get(f"{HPA_V2}/web")).json()
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"]["maxReplicas"] == 7
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    assert "targetCPUUtilizationPercentage" not in v2["spec"]
    listed = (await client.get(HPA_V2)).json()
    assert listed["kind"] == "HorizontalPodAutoscalerList"
    assert listed["items"][0]["spec"]["metrics"][0]["resource"]["name"] == "cpu"


async def test_hpa_v2_reads_as_v1(client: httpx.AsyncClient) -> None:
    """A v2 cpu Utilization metric reads back as v1 targetCPUUtilizationPercentage."""
    memory = {"type": "Resource", "resource": {
        "name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}
    await create(client, HPA_V2, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "web"},
                 "minReplicas": 1, "maxReplicas": 4,
                 "metrics": [{"type": "Resource", "resource": {
                     "name": "cpu", "target": {"type": "Utilization",
                                               "averageUtilization": 70}}}, memory]}})
    v1 = (await client.get(f"{HPA_V1}/web")).json()
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 70
    assert "metrics" not in v1["spec"]
    others = orjson.loads(v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"])
    assert others == [memory]
    # a v1 write keeps the metric v1 cannot express
    v1["spec"]["maxReplicas"] = 5
    r = await client.put(f"{HPA_V1}/web", json=v1)
    assert r.status_code == 200, r.text
    v2 = (await client.get(f"{HPA_V2}/web")).json()
    assert v2["spec"]["maxReplicas"] == 5
    assert v2["spec"]["metrics"][1] == memory
    assert "annotations" not in v2["metadata"]


async def test_watch_converts_between_versions(client: httpx.AsyncClient,
                                               server: Server) -> None:
    """A watch on autoscaling/v1 sees objects written through v2 in the v1 form."""
    rv = await list_rv(client, HPA_V1)
    async with Watch(server.api, HPA_V1, resourceVersion=rv) as w:
        await create(client, HPA_V2, {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"},
                     "maxReplicas": 3,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": 50}}}]}})
        [event] = await w.next()
    assert event["type"] == "ADDED"
    assert event["object"]["apiVersion"] == "autoscaling/v1"
    assert event["object"]["spec"]["targetCPUUtilizationPercentage"] == 50


async def test_events_v1_visible_as_core_events(client: httpx.AsyncClient) -> None:
    """An events.k8s.io/v1 Event is a core Event with involvedObject and message."""
    regarding = {"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "default",
                 "uid": "u1"}
    await create(client, "/apis/events.k8s.io/v1/namespaces/default/events", {
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "p.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "test/ctl",
        "reportingInstance": "ctl-1", "action": "Testing", "reason": "Tested",
        "type": "Normal", "regarding": regarding, "note": "all good"})
    core = (await client.get("/api/v1/namespaces/default/events/p.1")).json()
    assert core["apiVersion"] == "v1"
    assert core["involvedObject"] == regarding
    assert core["message"] == "all good"
    assert core["reason"] == "Tested"
    assert core["reportingComponent"] == "test/ctl"
    assert "regarding" not in core and "note" not in core
    found = await names(client, "/api/v1/namespaces/default/events",
                        fieldSelector="involvedObject.name=p,involvedObject.uid=u1")
    assert found == ["p.1"]
    back = (await client.get("/apis/events.k8s.io/v1/namespaces/default/events/p.1")).json()
    assert back["regarding"] == regarding and back["note"] == "all good"


# -- representations: Table, PartialObjectMetadata, protobuf ---------------------------------


async def test_table_list(client: httpx.AsyncClient) -> None:
    """A list as a Table has the kind's columns, one row per object and partial metadata."""
    await create(client, CM, configmap("a", {"x": "y"}, k1="1", k2="2"))
    r = await client.get(CM, headers={"Accept": TABLE})
    assert r.status_code == 200
    assert r.headers["content-type"] == TABLE
    table = r.json()
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["metadata"]["resourceVersion"]
    rows = {row["cells"][0]: row for row in table["rows"]}
    assert sorted(rows) == ["a", "kube-root-ca.crt"]
    assert rows["a"]["cells"][1] == 2
    obj = rows["a"]["object"]
    assert (obj["kind"], obj["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
    assert obj["metadata"]["labels"] == {"x": "y"}
    assert "data" not in obj


async def test_table_get_deployment_and_include_object(client: httpx.AsyncClient) -> None:
    """A single get as a Table has one row; includeObject=Object embeds the whole object."""
    await create(client, DEPLOY, deployment("web", replicas=3))
    r = await client.get(f"{DEPLOY}/web", headers={"Accept": TABLE})
    table = r.json()
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]
    assert [c["priority"] for c in table["columnDefinitions"]][-3:] == [1, 1, 1]
    assert len(table["rows"]) == 1
    cells = table["rows"][0]["cells"]
    assert cells[0] == "web" and cells[1] == "0/3"
    assert cells[5:] == ["c", "nginx", "app=web"]
    r = await client.get(DEPLOY, params={"includeObject": "Object"}, headers={"Accept": TABLE})
    obj = r.json()["rows"][0]["object"]
    assert obj["kind"] == "Deployment" and obj["spec"]["replicas"] == 3
    r = await client.get(DEPLOY, params={"includeObject": "None"}, headers={"Accept": TABLE})
    assert "object" not in r.json()["rows"][0]


async def test_table_list_paginates(client: httpx.AsyncClient) -> None:
    """A Table list honours limit and returns the continue token (kubectl get --chunk-size)."""
    for i in range(3):
        await create(client, CM, configmap(f"cm-{i}"))
    table = (await client.get(CM, params={"limit": "2"}, headers={"Accept": TABLE})).json()
    assert len(table["rows"]) == 2
    assert table["metadata"]["continue"]


async def test_partial_object_metadata_list(client: httpx.AsyncClient) -> None:
    """Accept PartialObjectMetadataList answers metadata only."""
    await create(client, CM, configmap("a", {"x": "y"}, k="v"))
    r = await client.get(CM, headers={"Accept": PARTIAL_LIST})
    assert r.status_code == 200
    body = r.json()
    assert (body["kind"], body["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert body["metadata"]["resourceVersion"]
    items = {i["metadata"]["name"]: i for i in body["items"]}
    assert items["a"]["kind"] == "PartialObjectMetadata"
    assert items["a"]["metadata"]["labels"] == {"x": "y"}
    assert "data" not in items["a"]


@pytest.mark.parametrize(("path", "obj"), [
    pytest.param(CM, configmap("pb", a="b", c="d"), id="configmap"),
    pytest.param(DEPLOY, deployment("pb", replicas=2), id="deployment"),
])
async def test_protobuf_request_body(client: httpx.AsyncClient, path: str, obj: Obj) -> None:
    """kubectl create sends protobuf bodies; the object is stored as if sent as JSON."""
    r = await client.post(path, content=protobuf.encode(obj),
                          headers={"Content-Type": "application/vnd.kubernetes.protobuf"},
                          params={"fieldManager": "kubectl-create"})
    assert r.status_code == 201, r.text
    got = (await client.get(f"{path}/pb")).json()
    assert got["kind"] == obj["kind"]
    for key in ("data", "spec"):
        if key in obj:
            for k, v in obj[key].items():
                if k != "template":
                    assert got[key][k] == v
    assert got["metadata"]["managedFields"][0]["manager"] == "kubectl-create"


async def test_garbage_protobuf_body_is_bad_request(client: httpx.AsyncClient) -> None:
    """A protobuf body that does not decode is a 400."""
    r = await client.post(CM, content=b"k8s\x00\xff\xff\xff",
                          headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert r.status_code == 400


async def test_unknown_content_type_is_unsupported(client: httpx.AsyncClient) -> None:
    """A body in a media type the server does not read is 415."""
    r = await client.post(CM, content=b"a=b", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415


# -- discovery, OpenAPI, version, metrics ---------------------------------------------------


def _discovered(doc: Obj, group: str, version: str) -> dict[str, Obj]:
    for g in doc["items"]:
        if g["metadata"].get("name", "") == group:
            for v in g["versions"]:
                if v["version"] == version:
                    assert v["freshness"] == "Current"
                    return {r["resource"]: r for r in v["resources"]}
    raise AssertionError(f"{group}/{version} not discovered")


async def test_aggregated_discovery_core(client: httpx.AsyncClient) -> None:
    """/api with the apidiscovery Accept answers an APIGroupDiscoveryList."""
    r = await client.get("/api", headers={"Accept": AGGREGATED})
    assert r.status_code == 200
    assert r.headers["content-type"] == AGGREGATED
    doc = r.json()
    assert doc["kind"] == "APIGroupDiscoveryList"
    pods = _discovered(doc, "", "v1")["pods"]
    assert pods["scope"] == "Namespaced"
    assert pods["singularResource"] == "pod"
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert "po" in pods["shortNames"] and "all" in pods["categories"]
    subs = {s["subresource"]: s for s in pods["subresources"]}
    assert {"status", "log", "exec", "binding", "eviction"} <= set(subs)
    assert subs["exec"]["responseKind"]["kind"] == "PodExecOptions"


async def test_aggregated_discovery_groups(client: httpx.AsyncClient) -> None:
    """/apis lists apps/v1 deployments with their scale subresource."""
    r = await client.get("/apis", headers={"Accept": AGGREGATED})
    assert r.headers["content-type"] == AGGREGATED
    deploy = _discovered(r.json(), "apps", "v1")["deployments"]
    assert set(deploy["verbs"]) >= {"create", "delete", "get", "list", "patch", "update",
                                    "watch", "deletecollection"}
    scale = {s["subresource"]: s for s in deploy["subresources"]}["scale"]
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    autoscaling = next(g for g in r.json()["items"] if g["metadata"]["name"] == "autoscaling")
    assert autoscaling["versions"][0]["version"] == "v2"


async def test_legacy_discovery(client: httpx.AsyncClient) -> None:
    """Without the aggregated Accept: APIVersions, APIGroupList, APIResourceList."""
    versions = (await client.get("/api")).json()
    assert versions["kind"] == "APIVersions" and versions["versions"] == ["v1"]
    groups = (await client.get("/apis")).json()
    assert groups["kind"] == "APIGroupList"
    apps = next(g for g in groups["groups"] if g["name"] == "apps")
    assert apps["preferredVersion"]["groupVersion"] == "apps/v1"
    r = await client.get("/apis/apps/v1")
    assert r.status_code == 200
    res = r.json()
    assert (res["kind"], res["groupVersion"]) == ("APIResourceList", "apps/v1")
    by_name = {x["name"]: x for x in res["resources"]}
    assert by_name["deployments"]["kind"] == "Deployment"
    assert by_name["deployments"]["namespaced"] is True
    assert by_name["deployments/scale"]["group"] == "autoscaling"
    assert (await client.get("/apis/apps")).json()["kind"] == "APIGroup"
    assert (await client.get("/apis/nope.example.com/v1")).status_code == 404


async def test_openapi_v3(client: httpx.AsyncClient) -> None:
    """The v3 index names apps/v1 with a hash; its document declares patch and fieldValidation."""
    index = (await client.get("/openapi/v3")).json()
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    assert "api/v1" in index["paths"]
    r = await client.get(url)
    assert r.status_code == 200
    assert "immutable" in r.headers["cache-control"]
    doc = r.json()
    item = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    op = item["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1",
                                                     "kind": "Deployment"}
    params = [p.get("name") or p.get("$ref", "").rsplit("/", 1)[-1]
              for p in op.get("parameters", []) + item.get("parameters", [])]
    assert any("fieldValidation" in p for p in params), params
    assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
    assert "io.k8s.api.apps.v1.Deployment" in doc["components"]["schemas"]
    assert (await client.get("/openapi/v3/apis/nope/v1")).status_code == 404


async def test_version(client: httpx.AsyncClient) -> None:
    """/version reports 1.32 (kubectl's dispatcher picks its binary by it)."""
    v = (await client.get("/version")).json()
    assert (v["major"], v["minor"]) == ("1", "32")
    assert v["gitVersion"].startswith("v1.32.")


async def test_metrics_count_requests(client: httpx.AsyncClient) -> None:
    """/metrics exposes apiserver_request_total labelled by verb, resource and code."""
    await create(client, CM, configmap("a"))
    await client.get(f"{CM}/a")
    await client.get(f"{CM}/missing")
    text = (await client.get("/metrics")).text
    lines = [line for line in text.splitlines() if line.startswith("apiserver_request_total{")]
    assert any('verb="GET"' in line or 'verb="get"' in line for line in lines), lines
    assert any('resource="configmaps"' in line and 'code="404"' in line for line in lines)
    assert any('resource="configmaps"' in line and 'code="201"' in line for line in lines)


async def test_unknown_paths(client: httpx.AsyncClient) -> None:
    """Unknown resources and paths are 404; a POST to a named object is 405."""
    assert (await client.get("/api/v1/namespaces/default/foos")).status_code == 404
    assert (await client.get("/nope")).status_code == 404
    r = await client.post(f"{CM}/x", json=configmap("x"))
    assert r.status_code == 405


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "headers", "code"), [
    pytest.param("/api/v1/namespaces", {}, 401, id="no-token"),
    pytest.param("/api/v1/namespaces", {"Authorization": "Bearer wrong"}, 401, id="wrong-token"),
    pytest.param("/api/v1/namespaces", {"Authorization": "Basic dTpw"}, 401, id="basic-auth"),
    pytest.param("/apis", {}, 401, id="discovery-needs-token"),
    pytest.param("/readyz", {}, 200, id="readyz-open"),
    pytest.param("/livez", {}, 200, id="livez-open"),
    pytest.param("/version", {}, 200, id="version-open"),
    pytest.param("/api/v1/namespaces", {"Authorization": "Bearer t"}, 200, id="good-token"),
])
async def test_authentication(server: Server, path: str, headers: dict[str, str],
                              code: int) -> None:
    """Only health and version are open; everything else needs a known bearer token."""
    async with httpx.AsyncClient(transport=asgi(server.api), base_url="https://kyb") as c:
        r = await c.get(path, headers=headers)
    assert r.status_code == code
    if code == 401:
        status = r.json()
        assert (status["kind"], status["reason"], status["code"]) == \
            ("Status", "Unauthorized", 401)


async def test_readyz_before_ready(server: Server, client: httpx.AsyncClient) -> None:
    """/readyz is 500 until the server is marked ready; /livez is 200 throughout."""
    server.api.ready = False
    assert (await client.get("/readyz")).status_code == 500
    assert (await client.get("/livez")).status_code == 200
    server.api.ready = True
    assert (await client.get("/readyz")).text == "ok"


# -- watch ---------------------------------------------------------------------------------


async def test_watch_from_resource_version_replays_later_changes(
        client: httpx.AsyncClient) -> None:
    """resourceVersion=N streams exactly the changes after N, then ends at timeoutSeconds."""
    await create(client, CM, configmap("a"))
    rv = await list_rv(client, CM)
    await client.patch(f"{CM}/a", json={"data": {"v": "1"}}, headers=MERGE)
    await create(client, CM, configmap("b"))
    await client.delete(f"{CM}/a")
    await create(client, "/api/v1/namespaces/kube-system/configmaps", configmap("elsewhere"))
    r = await client.get(CM, params={"watch": "1", "resourceVersion": rv,
                                     "timeoutSeconds": "1"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    events = watch_events(r.content)
    assert summary(events) == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert events[0]["object"]["data"] == {"v": "1"}


async def test_watch_without_resource_version_starts_with_current_state(
        client: httpx.AsyncClient, server: Server) -> None:
    """No resourceVersion: synthetic ADDED events for what exists, then live changes."""
    await create(client, CM, configmap("a"))
    async with Watch(server.api, CM) as w:
        first = await w.next(2)
        assert w.status == 200
        assert sorted(summary(first)) == [("ADDED", "a"), ("ADDED", "kube-root-ca.crt")]
        await create(client, CM, configmap("b"))
        await client.patch(f"{CM}/a", json={"data": {"x": "1"}}, headers=MERGE)
        await client.delete(f"{CM}/b")
        assert summary(await w.next(3)) == [("ADDED", "b"), ("MODIFIED", "a"),
                                            ("DELETED", "b")]
        await w.quiet()


async def test_watch_single_object_by_name(client: httpx.AsyncClient, server: Server) -> None:
    """kubectl get -w NAME: fieldSelector metadata.name and resourceVersion=0."""
    await create(client, CM, configmap("a"))
    await create(client, CM, configmap("b"))
    async with Watch(server.api, CM, fieldSelector="metadata.name=a", resourceVersion="0") as w:
        assert summary(await w.next()) == [("ADDED", "a")]
        await client.patch(f"{CM}/b", json={"data": {"x": "1"}}, headers=MERGE)
        await client.patch(f"{CM}/a", json={"data": {"x": "1"}}, headers=MERGE)
        assert summary(await w.next()) == [("MODIFIED", "a")]
        await w.quiet()


async def test_watch_too_old_resource_version_is_expired(client: httpx.AsyncClient,
                                                         server: Server) -> None:
    """A watch below the compacted revision gets one ERROR event: 410 Expired."""
    await create(client, CM, configmap("a"))
    old = await list_rv(client, CM)
    for i in range(3):
        await client.patch(f"{CM}/a", json={"data": {"i": str(i)}}, headers=MERGE)
    await server.backend.compact(await current_revision(server))
    async with Watch(server.api, CM, resourceVersion=old) as w:
        [event] = await w.next()
        await asyncio.wait_for(w.ended.wait(), 2)
    assert w.status == 200
    assert event["type"] == "ERROR"
    status = event["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert "too old resource version" in status["message"]


async def test_label_selector_watch_turns_updates_into_added_and_deleted(
        client: httpx.AsyncClient, server: Server) -> None:
    """An update into the selector is ADDED, out of it DELETED, unrelated ones are hidden."""
    await create(client, CM, configmap("x", {"app": "db"}))
    rv = await list_rv(client, CM)
    async with Watch(server.api, CM, labelSelector="app=web", resourceVersion=rv) as w:
        await client.patch(f"{CM}/x", json={"data": {"k": "1"}}, headers=MERGE)
        await client.patch(f"{CM}/x", json={"metadata": {"labels": {"app": "web"}}},
                           headers=MERGE)
        added = await w.next()
        assert summary(added) == [("ADDED", "x")]
        assert added[0]["object"]["metadata"]["labels"] == {"app": "web"}
        await client.patch(f"{CM}/x", json={"data": {"k": "2"}}, headers=MERGE)
        assert summary(await w.next()) == [("MODIFIED", "x")]
        await client.patch(f"{CM}/x", json={"metadata": {"labels": {"app": "db"}}},
                           headers=MERGE)
        deleted = await w.next()
        assert summary(deleted) == [("DELETED", "x")]
        assert deleted[0]["object"]["metadata"]["labels"] == {"app": "db"}
        await client.delete(f"{CM}/x")
        await create(client, CM, configmap("y", {"app": "web"}))
        assert summary(await w.next()) == [("ADDED", "y")]
        await w.quiet()


async def test_field_selector_watch_on_pod_phase(client: httpx.AsyncClient,
                                                 server: Server) -> None:
    """A field-selector watch sees a pod enter and leave the selected phase."""
    await create(client, PODS, pod("p", node="n1"))
    rv = await list_rv(client, PODS)
    async with Watch(server.api, PODS, fieldSelector="status.phase=Running",
                     resourceVersion=rv) as w:
        await client.patch(f"{PODS}/p/status", json={"status": {"phase": "Running"}},
                           headers=MERGE)
        assert summary(await w.next()) == [("ADDED", "p")]
        await client.patch(f"{PODS}/p/status", json={"status": {"phase": "Succeeded"}},
                           headers=MERGE)
        assert summary(await w.next()) == [("DELETED", "p")]


async def test_watch_bookmarks(client: httpx.AsyncClient, server: Server,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """allowWatchBookmarks sends BOOKMARK events carrying the current resourceVersion."""
    monkeypatch.setattr(watch_module, "BOOKMARK_INTERVAL", 0.05)
    rv = await list_rv(client, CM)
    async with Watch(server.api, CM, resourceVersion=rv, allowWatchBookmarks="true") as w:
        [event] = await w.next()
    assert event["type"] == "BOOKMARK"
    obj = event["object"]
    assert (obj["kind"], obj["apiVersion"]) == ("ConfigMap", "v1")
    assert int(obj["metadata"]["resourceVersion"]) >= int(rv)


async def test_watch_without_bookmarks_sends_none(client: httpx.AsyncClient, server: Server,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Bookmarks are only sent when asked for."""
    monkeypatch.setattr(watch_module, "BOOKMARK_INTERVAL", 0.02)
    rv = await list_rv(client, CM)
    async with Watch(server.api, CM, resourceVersion=rv) as w:
        await w.quiet(0.15)


async def test_watch_as_table(client: httpx.AsyncClient, server: Server) -> None:
    """With the Table Accept each event's object is a one-row Table."""
    await create(client, CM, configmap("a", k="v"))
    async with Watch(server.api, CM, accept=TABLE, fieldSelector="metadata.name=a") as w:
        [event] = await w.next()
    assert w.headers[b"content-type"] == TABLE.encode()
    assert event["type"] == "ADDED"
    table = event["object"]
    assert table["kind"] == "Table"
    assert len(table["rows"]) == 1 and table["rows"][0]["cells"][0] == "a"


async def test_watch_of_all_namespaces(client: httpx.AsyncClient, server: Server) -> None:
    """A cluster-wide watch sees every namespace; a namespaced one only its own."""
    rv = await list_rv(client, "/api/v1/configmaps")
    async with Watch(server.api, "/api/v1/configmaps", resourceVersion=rv) as everywhere, \
            Watch(server.api, CM, resourceVersion=rv) as here:
        await create(client, "/api/v1/namespaces/kube-system/configmaps", configmap("ks"))
        await create(client, CM, configmap("d"))
        assert summary(await everywhere.next(2)) == [("ADDED", "ks"), ("ADDED", "d")]
        assert summary(await here.next()) == [("ADDED", "d")]
        await here.quiet()


@pytest.mark.parametrize("params", [
    pytest.param({"resourceVersion": "abc"}, id="bad-resource-version"),
    pytest.param({"fieldSelector": "spec.foo=bar"}, id="bad-field"),
    pytest.param({"labelSelector": "a in ("}, id="bad-label"),
])
async def test_bad_watch_requests(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    """A watch that cannot start answers 400 before streaming."""
    r = await client.get(PODS, params={"watch": "true"} | params)
    assert r.status_code == 400


# -- CustomResourceDefinitions ----------------------------------------------------------------


CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MODELS = "/apis/ml.example.com/v1/namespaces/default/models"
MODEL_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "models.ml.example.com"},
    "spec": {
        "group": "ml.example.com", "scope": "Namespaced",
        "names": {"plural": "models", "singular": "model", "kind": "Model",
                  "shortNames": ["mdl"], "listKind": "ModelList"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object", "required": ["framework"],
                        "properties": {
                            "framework": {"type": "string",
                                          "enum": ["pytorch", "tensorflow", "jax"]},
                            "replicas": {"type": "integer", "minimum": 0, "default": 1},
                            "resources": {"type": "object", "default": {},
                                          "properties": {"gpus": {"type": "integer",
                                                                  "default": 0}}},
                            "config": {"type": "object",
                                       "x-kubernetes-preserve-unknown-fields": True},
                        }},
                    "status": {"type": "object",
                               "properties": {"phase": {"type": "string"}}},
                }}},
        }],
    },
}


def model(name: str, **spec: Any) -> Obj:
    return {"apiVersion": "ml.example.com/v1", "kind": "Model", "metadata": {"name": name},
            "spec": spec}


@pytest.fixture
async def models_crd(client: httpx.AsyncClient) -> Obj:
    """The Model CRD, created and Established."""
    await create(client, CRDS, MODEL_CRD)

    async def established() -> bool:
        crd = (await client.get(f"{CRDS}/models.ml.example.com")).json()
        conds = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
        return conds.get("Established") == "True" and bool(crd["metadata"].get("finalizers"))

    await eventually(established)
    out: Obj = (await client.get(f"{CRDS}/models.ml.example.com")).json()
    return out


async def test_crd_is_served_and_discovered(client: httpx.AsyncClient, models_crd: Obj) -> None:
    """An Established CRD appears in discovery and OpenAPI and can hold objects."""
    assert models_crd["metadata"]["finalizers"] == ["customresourcecleanup.apiextensions.k8s.io"]
    conds = {c["type"]: c["status"] for c in models_crd["status"]["conditions"]}
    assert conds == {"NamesAccepted": "True", "Established": "True"}
    doc = (await client.get("/apis", headers={"Accept": AGGREGATED})).json()
    res = _discovered(doc, "ml.example.com", "v1")["models"]
    assert res["responseKind"]["kind"] == "Model"
    assert res["shortNames"] == ["mdl"]
    assert [s["subresource"] for s in res["subresources"]] == ["status"]
    legacy = (await client.get("/apis/ml.example.com/v1")).json()
    assert {r["name"] for r in legacy["resources"]} == {"models", "models/status"}
    assert "apis/ml.example.com/v1" in (await client.get("/openapi/v3")).json()["paths"]
    out = await create(client, MODELS, model("m", framework="jax"))
    assert out["metadata"]["generation"] == 1
    listed = (await client.get(MODELS)).json()
    assert listed["kind"] == "ModelList" and len(listed["items"]) == 1


async def test_crd_defaults_are_applied(client: httpx.AsyncClient, models_crd: Obj) -> None:
    """Schema defaults fill missing fields, nested ones included."""
    out = await create(client, MODELS, model("m", framework="jax"))
    assert out["spec"] == {"framework": "jax", "replicas": 1, "resources": {"gpus": 0}}


@pytest.mark.parametrize(("spec", "field", "reason"), [
    pytest.param({"framework": "caffe"}, "spec.framework", "FieldValueNotSupported",
                 id="enum"),
    pytest.param({}, "spec.framework", "FieldValueRequired", id="required"),
    pytest.param({"framework": "jax", "replicas": -1}, "spec.replicas", "FieldValueInvalid",
                 id="minimum"),
    pytest.param({"framework": "jax", "replicas": "two"}, "spec.replicas", "FieldValueTypeInvalid",
                 id="type"),
])
async def test_crd_schema_validation(client: httpx.AsyncClient, models_crd: Obj, spec: Obj,
                                     field: str, reason: str) -> None:
    """Objects that break the schema are 422 Invalid with a cause naming the field."""
    r = await client.post(MODELS, json=model("bad", **spec))
    assert r.status_code == 422, r.text
    status = r.json()
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Model.ml.example.com "bad" is invalid: ')
    assert status["details"]["group"] == "ml.example.com"
    assert status["details"]["kind"] == "Model"
    causes = {(c["field"], c["reason"]) for c in status["details"]["causes"]}
    assert (field, reason) in causes
    assert (await client.get(f"{MODELS}/bad")).status_code == 404


async def test_crd_unknown_fields_are_pruned(client: httpx.AsyncClient, models_crd: Obj) -> None:
    """Unknown fields are dropped with a warning; preserve-unknown-fields subtrees keep them."""
    body = model("m", framework="jax", bogus=1, config={"anything": {"goes": True}})
    body["extra"] = "x"
    r = await client.post(MODELS, json=body)
    assert r.status_code == 201, r.text
    assert 'unknown field \\"spec.bogus\\"' in r.headers["warning"]
    stored = (await client.get(f"{MODELS}/m")).json()
    assert "bogus" not in stored["spec"] and "extra" not in stored
    assert stored["spec"]["config"] == {"anything": {"goes": True}}


async def test_crd_strict_field_validation(client: httpx.AsyncClient, models_crd: Obj) -> None:
    """fieldValidation=Strict turns an unknown field into a 400."""
    r = await client.post(MODELS, json=model("m", framework="jax", bogus=1),
                          params={"fieldValidation": "Strict"})
    assert r.status_code == 400
    assert r.json()["message"] == ('Model in version "v1" cannot be handled as a Model: '
                                   'strict decoding error: unknown field "spec.bogus"')
    r = await client.post(MODELS, json=model("m", framework="jax", bogus=1),
                          params={"fieldValidation": "Ignore"})
    assert r.status_code == 201 and "warning" not in r.headers


async def test_crd_status_subresource(client: httpx.AsyncClient, models_crd: Obj) -> None:
    """Spec writes ignore status and do not bump generation through /status."""
    await create(client, MODELS, model("m", framework="jax"))
    r = await client.patch(f"{MODELS}/m/status", json={"status": {"phase": "Ready"},
                                                       "spec": {"replicas": 9}}, headers=MERGE)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == {"phase": "Ready"}
    assert r.json()["spec"]["replicas"] == 1
    assert r.json()["metadata"]["generation"] == 1
    r = await client.patch(f"{MODELS}/m", json={"status": {"phase": "Lost"},
                                                "spec": {"replicas": 2}}, headers=MERGE)
    assert r.json()["status"] == {"phase": "Ready"}
    assert r.json()["metadata"]["generation"] == 2


async def test_crd_rejects_strategic_merge_patch(client: httpx.AsyncClient,
                                                 models_crd: Obj) -> None:
    """Custom resources do not take strategic merge patches (415)."""
    await create(client, MODELS, model("m", framework="jax"))
    r = await client.patch(f"{MODELS}/m", json={"spec": {"replicas": 2}}, headers=STRATEGIC)
    assert r.status_code == 415


async def test_crd_field_selector_limits(client: httpx.AsyncClient, models_crd: Obj) -> None:
    """Custom resources select on metadata.name and metadata.namespace only."""
    await create(client, MODELS, model("m", framework="jax"))
    assert await names(client, MODELS, fieldSelector="metadata.name=m") == ["m"]
    r = await client.get(MODELS, params={"fieldSelector": "spec.framework=jax"})
    assert r.status_code == 400
    assert "is not a known field selector" in r.json()["message"]


async def test_crd_delete_removes_objects_and_api(client: httpx.AsyncClient,
                                                  models_crd: Obj) -> None:
    """Deleting the CRD deletes its objects, then stops serving its API."""
    await create(client, MODELS, model("a", framework="jax"))
    await create(client, MODELS, model("b", framework="pytorch"))
    r = await client.delete(f"{CRDS}/models.ml.example.com")
    assert r.status_code == 200, r.text

    async def gone() -> bool:
        crd = await client.get(f"{CRDS}/models.ml.example.com")
        api = await client.get(MODELS)
        return crd.status_code == 404 and api.status_code == 404

    await eventually(gone)
    doc = (await client.get("/apis", headers={"Accept": AGGREGATED})).json()
    assert "ml.example.com" not in {g["metadata"]["name"] for g in doc["items"]}
    assert "apis/ml.example.com/v1" not in (await client.get("/openapi/v3")).json()["paths"]
    # created again, the API is empty: the objects went with the CRD
    await create(client, CRDS, MODEL_CRD)

    async def served_empty() -> bool:
        r = await client.get(MODELS)
        return r.status_code == 200 and r.json()["items"] == []

    await eventually(served_empty)


async def test_crd_names_must_match(client: httpx.AsyncClient) -> None:
    """A CRD's name must be <plural>.<group>."""
    body = orjson.loads(orjson.dumps(MODEL_CRD))
    body["metadata"]["name"] = "wrong.ml.example.com"
    r = await client.post(CRDS, json=body)
    assert r.status_code == 422
    assert "metadata.name" in r.text
