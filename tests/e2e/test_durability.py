"""Acknowledged writes survive kill -9; watches continue across a restart without gaps."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from tests.e2e.cluster import Cluster

pytestmark = pytest.mark.slow

N = 1000


async def _create_all(cluster: Cluster) -> dict[str, int]:
    acked: dict[str, int] = {}
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=cluster.url, verify=cluster.ssl_context(),
                                 limits=limits, timeout=30,
                                 headers={"Authorization": f"Bearer {cluster.token}"}) as c:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                r = await c.post("/api/v1/namespaces/default/configmaps", content=orjson.dumps(
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"d-{i}"},
                     "data": {"i": str(i)}}), headers={"Content-Type": "application/json"})
                assert r.status_code == 201, r.text
                acked[f"d-{i}"] = int(r.json()["metadata"]["resourceVersion"])

        await asyncio.gather(*(one(i) for i in range(N)))
    return acked


def test_kill9_loses_nothing_acknowledged(fresh_cluster: Cluster) -> None:
    """1,000 acknowledged creates, kill -9, restart: all there, same resourceVersions, and a
    watch from the last revision continues without a gap."""
    cluster = fresh_cluster
    acked = asyncio.run(_create_all(cluster))
    assert len(acked) == N
    last = max(acked.values())
    assert cluster.stop(kill=True) == -9
    cluster.start()
    with cluster.http() as c:
        items = c.get("/api/v1/namespaces/default/configmaps").json()["items"]
        found = {i["metadata"]["name"]: int(i["metadata"]["resourceVersion"]) for i in items
                 if i["metadata"]["name"].startswith("d-")}
        assert found == acked
        # replay from a revision in the middle: every later create, in order, no gaps
        mid = sorted(acked.values())[N // 2]
        with c.stream("GET", "/api/v1/namespaces/default/configmaps",
                      params={"watch": "true", "resourceVersion": str(mid),
                              "timeoutSeconds": "2"}) as r:
            replayed = [int(orjson.loads(line)["object"]["metadata"]["resourceVersion"])
                        for line in r.iter_lines() if line]
        assert replayed == sorted(v for v in acked.values() if v > mid)
        # a watch from the last acknowledged revision sees the next write, and only it
        with c.stream("GET", "/api/v1/namespaces/default/configmaps",
                      params={"watch": "true", "resourceVersion": str(last),
                              "timeoutSeconds": "3"}) as r:
            created = c.post("/api/v1/namespaces/default/configmaps", json={
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}})
            assert created.status_code == 201
            events = [orjson.loads(line) for line in r.iter_lines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "after")]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) == \
        int(created.json()["metadata"]["resourceVersion"]) > last


def test_sigterm_shuts_down_cleanly_and_restart_keeps_state(fresh_cluster: Cluster) -> None:
    """SIGTERM exits 0; the same data dir serves the same objects afterwards."""
    cluster = fresh_cluster
    cluster.kubectl("create", "configmap", "keep", "--from-literal=a=b")
    before = cluster.kubectl_json("get", "cm", "keep")
    assert cluster.stop() == 0
    cluster.start()
    after = cluster.kubectl_json("get", "cm", "keep")
    assert after == before
    assert cluster.kubectl("get", "ns", "default").returncode == 0
