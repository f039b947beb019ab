"""The dashboard's metrics history and request handling (without a server)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from kybernetes.api.errors import StatusError
from kybernetes.apiserver.app import Request, User
from kybernetes.dashboard.history import History
from kybernetes.dashboard.server import Dashboard


def test_history_keeps_the_last_slots_in_order() -> None:
    h = History(slots=3)
    for t in range(5):
        h.record(float(t), {("pod", "ns/a"): (t * 0.1, 100.0 + t)})
    s = h.series(("pod", "ns/a"))
    assert s["t"] == [2.0, 3.0, 4.0]
    assert s["values"] == [[pytest.approx(0.2), pytest.approx(0.3), pytest.approx(0.4)],
                           [102.0, 103.0, 104.0]]
    assert h.series(("pod", "ns/a"), since=3.0)["t"] == [3.0, 4.0]
    assert h.latest(("pod", "ns/a")) == [pytest.approx(0.4), 104.0]


def test_history_marks_missed_rounds_and_forgets_gone_series() -> None:
    h = History(slots=4)
    h.record(1.0, {("pod", "ns/a"): (1.0,), ("pod", "ns/b"): (2.0,)})
    h.record(2.0, {("pod", "ns/b"): (3.0,)})
    assert h.series(("pod", "ns/a"))["values"] == [[1.0, None]]
    assert h.latest(("pod", "ns/a")) is None
    assert h.latest_of("pod") == {"ns/b": [3.0]}
    for t in range(3, 7):
        h.record(float(t), {("pod", "ns/b"): (float(t),)})
    assert len(h) == 1, "a series unseen for a whole ring is dropped"
    assert h.series(("pod", "ns/a")) == {"t": [], "values": []}
    assert h.series(("node", "never"))["t"] == []


def test_history_memory_is_bounded_per_series() -> None:
    h = History(slots=720)
    for t in range(2000):
        h.record(float(t), {("pod", f"ns/p{i}"): (0.5, 1e6) for i in range(3)})
    assert len(h.times) == 720
    assert all(len(a) == 720 for arrays in h._series.values() for a in arrays)
    assert not any(math.isnan(v) for v in h.series(("pod", "ns/p0"))["values"][0])


class _Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


def _request(path: str, *, user: User | None = None, method: str = "GET") -> tuple[Request,
                                                                                   _Sent]:
    sent = _Sent()

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    return Request({}, receive, sent, method, path, {}, {}, user=user), sent


class _API:
    """What the dashboard asks of the API server: a mount, and authorization (here: a
    user named "nobody" may do nothing)."""

    def __init__(self) -> None:
        self.mounted: dict[str, Any] = {}
        self.asked: list[tuple[str, str, str, str]] = []

    def mount(self, prefix: str, handler: Any) -> None:
        self.mounted[prefix] = handler

    async def authorize(self, req: Request, verb: str, *, namespace: str = "",
                        group: str = "", resource: str = "", subresource: str = "",
                        name: str = "") -> None:
        self.asked.append((verb, namespace, resource, name))
        if req.user is not None and req.user.name == "nobody":
            raise StatusError(403, "Forbidden", f"{resource} is forbidden")


def _dashboard() -> Dashboard:
    return Dashboard(_API(), interval=10.0)  # type: ignore[arg-type]


async def test_the_page_is_public_and_the_api_is_not() -> None:
    d = _dashboard()
    req, sent = _request("/dashboard/")
    assert await d.handle(req) == 200
    assert b"<title>kybernetes</title>" in sent.body
    assert dict(sent.messages[0]["headers"])[b"content-type"].startswith(b"text/html")
    req, sent = _request("/dashboard")
    assert await d.handle(req) == 301
    for path in ("/dashboard/api/history/pods/ns/a", "/dashboard/api/watch",
                 "/dashboard/api/latest/pods"):
        req, _ = _request(path)
        with pytest.raises(StatusError) as e:
            await d.handle(req)
        assert e.value.code == 401


@pytest.mark.parametrize("name", ["../server.py", "../../apiserver/app.py", "nope.js",
                                  "/etc/passwd"])
async def test_static_files_stay_in_their_folder(name: str) -> None:
    req, _ = _request(f"/dashboard/static/{name}")
    with pytest.raises(StatusError) as e:
        await _dashboard().handle(req)
    assert e.value.code == 404


async def test_history_and_latest_answer_with_the_samples() -> None:
    d = _dashboard()
    d.history.record(100.0, {("pod", "ns/a"): (0.25, 5e6), ("node", "n1"): (1.5, 2e9)})
    admin = User("admin")
    req, sent = _request("/dashboard/api/history/pods/ns/a", user=admin)
    assert await d.handle(req) == 200
    assert orjson.loads(sent.body) == {"interval": 10.0, "t": [100.0],
                                       "values": [[0.25], [5e6]]}
    req, sent = _request("/dashboard/api/latest/nodes", user=admin)
    await d.handle(req)
    assert orjson.loads(sent.body) == {"n1": [1.5, 2e9]}
    for bad in ("/dashboard/api/history/pods/a", "/dashboard/api/history/nodes/a/b",
                "/dashboard/api/history/secrets/ns/a", "/dashboard/api/nope"):
        req, _ = _request(bad, user=admin)
        with pytest.raises(StatusError) as e:
            await d.handle(req)
        assert e.value.code == 404
    assert d.api.asked[:2] == [("get", "ns", "pods", "a"), ("list", "", "nodes", "")]
    req, sent = _request("/dashboard/api/latest/pods", user=admin)
    req.query["namespace"] = "other"
    await d.handle(req)
    assert orjson.loads(sent.body) == {}, "only the namespace asked for"
    for path in ("/dashboard/api/history/pods/ns/a", "/dashboard/api/latest/nodes"):
        req, _ = _request(path, user=User("nobody"))
        with pytest.raises(StatusError) as e:
            await d.handle(req)
        assert e.value.code == 403
    req, _ = _request("/dashboard/api/latest/pods", user=admin, method="POST")
    with pytest.raises(StatusError) as e:
        await d.handle(req)
    assert e.value.code == 405


class _Traffic:
    def __init__(self) -> None:
        self.now: dict[tuple[str, str], tuple[int, int, float, int]] = {}

    def totals(self) -> dict[tuple[str, str], tuple[int, int, float, int]]:
        return dict(self.now)


def test_service_rates_are_over_a_trailing_window() -> None:
    d = _dashboard()
    t = _Traffic()
    d.traffic = t
    t.now = {("ns", "svc"): (0, 0, 0.0, 0)}
    assert d._traffic(0.0) == {}
    t.now = {("ns", "svc"): (100, 10, 2.0, 100)}
    rate, errors, latency = d._traffic(10.0)[("service", "ns/svc")]
    assert (rate, errors, latency) == (10.0, 1.0, 0.02)
    t.now = {("ns", "svc"): (100, 10, 2.0, 100), ("ns", "new"): (30, 0, 0.0, 0)}
    out = d._traffic(40.0)  # the window slid past t=0: rates since t=10
    assert out[("service", "ns/svc")][:2] == (0.0, 0.0)
    assert math.isnan(out[("service", "ns/svc")][2])
    assert out[("service", "ns/new")][0] == 1.0
    assert math.isnan(out[("service", "ns/new")][2]), "untimed connections give no latency"


def test_traffic_totals_add_up_every_path() -> None:
    from kybernetes.proxy.traffic import Traffic

    tr = Traffic()
    tr.record("ns", "svc", 200, 0.01, ingress="ing", now=1.0)
    tr.record("ns", "svc", 503, 0.03, ingress="canary", now=1.0)
    tr.record("ns", "svc", 200, 0.02, via="service", now=1.0)
    tr.add_connections("ns", "svc", 5, now=1.0)
    tr.record("other", "svc", 200, 0.5, now=1.0)
    n, errors, seconds, timed = tr.totals()[("ns", "svc")]
    assert (n, errors, timed) == (8, 1, 3)
    assert seconds == pytest.approx(0.06)
    assert tr.totals()[("other", "svc")][0] == 1
