"""Informers: list then watch, re-watch, relist on 410 with the right callbacks, indexes."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from kybernetes.aio.backoff import Backoff
from kybernetes.aio.clock import FakeClock
from kybernetes.client import (
    NAMESPACE_INDEX,
    Client,
    Config,
    Informer,
    InformerFactory,
    namespace_index,
    object_key,
)

Object = dict[str, Any]


def status(code: int, reason: str, message: str) -> Object:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "code": code, "reason": reason, "message": message}


class FakeServer:
    """Just enough of an API server for pods: paged list, watch with history and 410."""

    def __init__(self) -> None:
        self.objects: dict[str, Object] = {}
        self.rv = 0
        self.history: list[tuple[int, str, Object]] = []
        self.compacted = 0
        self.gone_as_response = False
        self.fail_lists = 0
        self.watchers: list[asyncio.Queue[tuple[str, Object] | None]] = []
        self.requests: list[httpx.Request] = []

    # -- mutations ---------------------------------------------------------------

    def put(self, name: str, namespace: str = "default", *, silent: bool = False,
            **labels: str) -> Object:
        """Create or replace a pod; ``silent`` changes skip the watch history."""
        key = f"{namespace}/{name}"
        self.rv += 1
        obj = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": labels,
                            "resourceVersion": str(self.rv)}}
        type_ = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = obj
        self._event(type_, obj, silent)
        return obj

    def delete(self, name: str, namespace: str = "default", *, silent: bool = False) -> None:
        obj = copy.deepcopy(self.objects.pop(f"{namespace}/{name}"))
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._event("DELETED", obj, silent)

    def bookmark(self) -> None:
        self._broadcast("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                     "metadata": {"resourceVersion": str(self.rv)}})

    def compact(self) -> None:
        """Forget all history: any watch from an older resourceVersion gets 410."""
        self.compacted = self.rv
        self.history.clear()

    def end_watches(self) -> None:
        """Close every open watch stream, as a server timeout would."""
        for q in self.watchers:
            q.put_nowait(None)
        self.watchers.clear()

    def _event(self, type_: str, obj: Object, silent: bool) -> None:
        if silent:
            return
        self.history.append((self.rv, type_, obj))
        self._broadcast(type_, obj)

    def _broadcast(self, type_: str, obj: Object) -> None:
        for q in self.watchers:
            q.put_nowait((type_, obj))

    # -- HTTP ----------------------------------------------------------------------

    def lists(self) -> list[httpx.Request]:
        return [r for r in self.requests if "watch" not in r.url.params]

    def watches(self) -> list[httpx.Request]:
        return [r for r in self.requests if "watch" in r.url.params]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params = request.url.params
        if "watch" in params:
            return self._watch(int(params.get("resourceVersion") or 0))
        if self.fail_lists:
            self.fail_lists -= 1
            return httpx.Response(500, json=status(500, "InternalError", "database is locked"))
        selector = params.get("labelSelector")
        want = dict([selector.split("=", 1)]) if selector else {}
        items = [o for _, o in sorted(self.objects.items())
                 if want.items() <= o["metadata"]["labels"].items()]
        start = int(params.get("continue") or 0)
        limit = int(params.get("limit") or len(items) or 1)
        meta: Object = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        return httpx.Response(200, json={"kind": "PodList", "apiVersion": "v1", "metadata": meta,
                                         "items": items[start:start + limit]})

    def _watch(self, since: int) -> httpx.Response:
        if since < self.compacted:
            gone = status(410, "Expired", f"too old resource version: {since}")
            if self.gone_as_response:
                return httpx.Response(410, json=gone)
            return httpx.Response(200, content=orjson.dumps({"type": "ERROR", "object": gone}))
        q: asyncio.Queue[tuple[str, Object] | None] = asyncio.Queue()
        self.watchers.append(q)
        for rv, type_, obj in self.history:
            if rv > since:
                q.put_nowait((type_, obj))

        async def stream() -> AsyncIterator[bytes]:
            while (item := await q.get()) is not None:
                yield orjson.dumps({"type": item[0], "object": item[1]}) + b"\n"

        return httpx.Response(200, content=stream())


class Events:
    """Records handler calls as (kind, name, resourceVersion) tuples."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def add(self, obj: Object) -> None:
        self.calls.append(("add", obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    def update(self, old: Object, new: Object) -> None:
        self.calls.append(("update", new["metadata"]["name"],
                           f'{old["metadata"]["resourceVersion"]}->'
                           f'{new["metadata"]["resourceVersion"]}'))

    def delete(self, obj: Object) -> None:
        self.calls.append(("delete", obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    def take(self) -> list[tuple[str, str, str]]:
        calls, self.calls = self.calls, []
        return calls


async def eventually(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds (for at most about a second)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached within a second")


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def client(server: FakeServer) -> AsyncIterator[Client]:
    async with Client(Config.for_server("http://kyb.test"),
                      transport=httpx.MockTransport(server.handle)) as c:
        yield c


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


_running: list[Informer] = []


@pytest.fixture(autouse=True)
async def stop_informers() -> AsyncIterator[None]:
    """Stop what a test started even when it fails half-way."""
    yield
    while _running:
        await _running.pop().stop()


async def started(informer: Informer, events: Events | None = None) -> Informer:
    _running.append(informer)
    if events is not None:
        informer.add_handler(events.add, events.update, events.delete)
    informer.start()
    assert await informer.wait_synced()
    return informer


# -- list and watch ------------------------------------------------------------------


async def test_list_then_watch(server: FakeServer, client: Client, clock: FakeClock) -> None:
    """The first list fills the cache and calls on_add; watch events follow."""
    server.put("a")
    server.put("b", "other")
    events = Events()
    inf = await started(Informer(client, "v1", "pods", clock=clock), events)
    assert inf.has_synced and inf.resource_version == "2"
    assert events.take() == [("add", "a", "1"), ("add", "b", "2")]
    assert sorted(inf.keys()) == ["default/a", "other/b"]

    server.put("a", app="web")
    server.delete("b", "other")
    server.put("c")
    await eventually(lambda: len(events.calls) == 3)
    assert events.take() == [("update", "a", "1->3"), ("delete", "b", "4"), ("add", "c", "5")]
    assert inf.get("default/a") == server.objects["default/a"]
    assert inf.get("other/b") is None
    assert inf.resource_version == "5"
    watch = server.watches()[0]
    assert (watch.url.params["resourceVersion"], watch.url.params["allowWatchBookmarks"]) == (
        "2", "true")
    await inf.stop()
    assert not inf.running


async def test_paginated_list(server: FakeServer, client: Client, clock: FakeClock) -> None:
    """The initial list is fetched in pages of page_size."""
    for n in "abcde":
        server.put(n)
    inf = await started(Informer(client, "v1", "pods", page_size=2, clock=clock))
    assert len(inf.list()) == 5
    assert [dict(r.url.params) for r in server.lists()] == [
        {"limit": "2"}, {"limit": "2", "continue": "2"}, {"limit": "2", "continue": "4"}]
    await inf.stop()


async def test_rewatch_from_last_resource_version(server: FakeServer, client: Client,
                                                  clock: FakeClock) -> None:
    """When a stream ends, the informer watches again from the last version, without a list."""
    server.put("a")
    events = Events()
    inf = await started(Informer(client, "v1", "pods", clock=clock), events)
    server.put("b")
    await eventually(lambda: inf.get("default/b") is not None)
    server.end_watches()
    server.put("c")  # while no watch is open: must be replayed from history
    await eventually(lambda: inf.get("default/c") is not None)
    assert [r.url.params["resourceVersion"] for r in server.watches()] == ["1", "2"]
    assert len(server.lists()) == 1
    assert events.take() == [("add", "a", "1"), ("add", "b", "2"), ("add", "c", "3")]
    await inf.stop()


async def test_bookmark_advances_resource_version(server: FakeServer, client: Client,
                                                  clock: FakeClock) -> None:
    """A BOOKMARK moves the resourceVersion on without calling handlers."""
    server.put("a")
    events = Events()
    inf = await started(Informer(client, "v1", "pods", clock=clock), events)
    await eventually(lambda: len(server.watchers) == 1)
    server.put("x", "elsewhere", silent=True)  # a change to something this informer ignores
    server.bookmark()
    await eventually(lambda: inf.resource_version == "2")
    assert events.take() == [("add", "a", "1")]
    await inf.stop()


@pytest.mark.parametrize("as_response", [pytest.param(False, id="error-event"),
                                         pytest.param(True, id="410-response")])
async def test_gone_relists_and_reports_differences(server: FakeServer, client: Client,
                                                    clock: FakeClock, as_response: bool) -> None:
    """On 410 the informer lists again: deleted → on_delete, new → on_add, changed → on_update."""
    server.gone_as_response = as_response
    for n in "abc":
        server.put(n)
    events = Events()
    inf = await started(Informer(client, "v1", "pods", clock=clock), events)
    events.take()
    await eventually(lambda: len(server.watchers) == 1)
    server.bookmark()  # the watch made progress, so the 410 is handled at once
    await eventually(lambda: inf.resource_version == "3")

    server.delete("a", silent=True)
    server.put("b", silent=True, app="changed")
    server.put("d", silent=True)
    server.compact()
    server.end_watches()

    await eventually(lambda: len(server.lists()) == 2 and len(server.watchers) == 1)
    assert sorted(events.take()) == [("add", "d", "6"), ("delete", "a", "1"),
                                     ("update", "b", "2->5")]
    assert sorted(inf.keys()) == ["default/b", "default/c", "default/d"]
    assert inf.resource_version == "6"
    assert server.watches()[-1].url.params["resourceVersion"] == "6"
    await inf.stop()


async def test_empty_watch_backs_off(server: FakeServer, client: Client,
                                     clock: FakeClock) -> None:
    """A stream that ends at once with no events is retried only after a back-off delay."""
    inf = await started(Informer(client, "v1", "pods", clock=clock,
                                 backoff=Backoff(base=1.0, cap=10.0)))
    await eventually(lambda: len(server.watchers) == 1)
    server.end_watches()
    await asyncio.sleep(0.01)
    assert len(server.watches()) == 1
    clock.advance(1.0)
    await eventually(lambda: len(server.watches()) == 2)
    assert len(server.lists()) == 1
    await inf.stop()


async def test_list_failure_backs_off(server: FakeServer, client: Client,
                                      clock: FakeClock) -> None:
    """A failed list is retried after the back-off delay on the informer's clock."""
    server.put("a")
    server.fail_lists = 2
    inf = Informer(client, "v1", "pods", clock=clock, backoff=Backoff(base=1.0, cap=10.0))
    _running.append(inf)
    inf.start()
    await eventually(lambda: len(server.lists()) == 1)
    clock.advance(0.9)
    await asyncio.sleep(0.01)
    assert len(server.lists()) == 1 and not inf.has_synced
    clock.advance(0.1)
    await eventually(lambda: len(server.lists()) == 2)
    clock.advance(2.0)  # the second delay doubles
    assert await inf.wait_synced()
    assert inf.keys() == ["default/a"]
    await inf.stop()


async def test_selectors_and_namespace(server: FakeServer, client: Client,
                                       clock: FakeClock) -> None:
    """Namespace and selectors shape both the list and the watch requests."""
    server.put("a", app="web")
    server.put("b", app="db")
    inf = await started(Informer(client, "v1", "pods", namespace="default",
                                 label_selector="app=web", clock=clock))
    assert inf.keys() == ["default/a"]
    await eventually(lambda: len(server.watches()) == 1)
    for req in (server.lists()[0], server.watches()[0]):
        assert req.url.path == "/api/v1/namespaces/default/pods"
        assert req.url.params["labelSelector"] == "app=web"
    await inf.stop()


# -- handlers ------------------------------------------------------------------------


async def test_late_handler_gets_existing_objects(server: FakeServer, client: Client,
                                                  clock: FakeClock) -> None:
    """A handler added after sync first receives an add per cached object."""
    server.put("a")
    server.put("b")
    inf = await started(Informer(client, "v1", "pods", clock=clock))
    events = Events()
    handler = inf.add_handler(on_add=events.add)
    assert events.take() == [("add", "a", "1"), ("add", "b", "2")]
    inf.remove_handler(handler)
    server.put("c")
    await eventually(lambda: inf.get("default/c") is not None)
    assert events.take() == []
    await inf.stop()


async def test_failing_handler_does_not_stop_others(server: FakeServer, client: Client,
                                                    clock: FakeClock) -> None:
    """An exception in one handler is logged; other handlers and the cache carry on."""
    def boom(obj: Object) -> None:
        raise RuntimeError("handler bug")

    events = Events()
    inf = Informer(client, "v1", "pods", clock=clock)
    inf.add_handler(on_add=boom)
    await started(inf, events)
    server.put("a")
    await eventually(lambda: events.calls == [("add", "a", "1")])
    await inf.stop()


# -- indexes -------------------------------------------------------------------------


def by_app(obj: Object) -> list[str]:
    app = obj["metadata"]["labels"].get("app")
    return [app] if app else []


async def test_indexes_follow_changes(server: FakeServer, client: Client,
                                      clock: FakeClock) -> None:
    """Indexes track adds, updates (value moves) and deletes; late indexes see the cache."""
    server.put("a", app="web")
    server.put("b", app="web")
    server.put("c", "other", app="db")
    inf = Informer(client, "v1", "pods", clock=clock)
    inf.add_index("app", by_app)
    await started(inf)
    inf.add_index(NAMESPACE_INDEX, namespace_index)
    assert [object_key(o) for o in inf.by_index("app", "web")] == ["default/a", "default/b"]
    assert inf.index_keys(NAMESPACE_INDEX, "other") == {"other/c"}

    server.put("b", app="db")
    server.delete("c", "other")
    await eventually(lambda: inf.get("other/c") is None)
    assert inf.index_keys("app", "web") == {"default/a"}
    assert inf.index_keys("app", "db") == {"default/b"}
    assert inf.index_keys(NAMESPACE_INDEX, "other") == set()
    assert inf.by_index("app", "nothing") == []
    with pytest.raises(KeyError):
        inf.by_index("missing", "x")
    inf.add_index("app", by_app)  # the same index again (a shared informer's users): no-op
    with pytest.raises(ValueError):
        inf.add_index("app", lambda o: [])  # another function under the same name
    await inf.stop()


@pytest.mark.parametrize(
    ("obj", "key"),
    [
        pytest.param({"metadata": {"name": "a", "namespace": "ns"}}, "ns/a", id="namespaced"),
        pytest.param({"metadata": {"name": "n1"}}, "n1", id="cluster-scoped"),
        pytest.param({"metadata": {"name": "n1", "namespace": ""}}, "n1", id="empty-namespace"),
    ],
)
def test_object_key(obj: Object, key: str) -> None:
    """Keys are namespace/name, or just the name for cluster-scoped objects."""
    assert object_key(obj) == key


# -- lifecycle and sharing -----------------------------------------------------------


async def test_wait_synced_returns_false_when_stopped(client: Client, clock: FakeClock) -> None:
    """wait_synced gives up with False when the informer stops before syncing."""
    inf = Informer(client, "v1", "pods", clock=clock)
    waiter = asyncio.ensure_future(inf.wait_synced())
    await asyncio.sleep(0)
    await inf.stop()
    assert await waiter is False


async def test_factory_shares_informers(server: FakeServer, client: Client,
                                        clock: FakeClock) -> None:
    """One informer per resource and selector; start, sync and stop them together."""
    server.put("a")
    factory = InformerFactory(client, clock=clock)
    pods = factory.informer("v1", "pods")
    assert factory.informer("v1", "pods") is pods
    scoped = factory.informer("v1", "pods", namespace="default")
    assert scoped is not pods
    factory.start()
    assert await factory.wait_synced()
    late = factory.informer("v1", "pods", label_selector="app=x")
    assert late.running
    assert await late.wait_synced()
    assert [i.has_synced for i in factory.informers()] == [True, True, True]
    await factory.stop()
    assert not any(i.running for i in factory.informers())


async def test_shared_informer_is_one_per_client_and_stops_with_its_last_user() -> None:
    from kybernetes.client import Client, shared_informer
    from kybernetes.client.kubeconfig import Config

    a = Client(Config(server="https://127.0.0.1:1", token="t"))
    b = Client(Config(server="https://127.0.0.1:1", token="t"))
    try:
        pods = shared_informer(a, "v1", "pods")
        assert shared_informer(a, "v1", "pods") is pods
        assert shared_informer(b, "v1", "pods") is not pods
        assert shared_informer(a, "v1", "pods", field_selector="spec.nodeName=n") is not pods
        pods.start()
        pods.start()  # a second user
        await pods.stop()
        assert pods.running  # the other user still has it
        await pods.stop()
        assert not pods.running
    finally:
        await a.aclose()
        await b.aclose()
