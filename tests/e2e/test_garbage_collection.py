"""The garbage collector at scale, on a real ``kyb server``: an owner with 10,000 dependents,
deleted in the background (every dependent goes) and in the foreground (the owner stays,
with the ``foregroundDeletion`` finalizer, until every blocking dependent is gone)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.e2e.cluster import Cluster, wait_for

pytestmark = pytest.mark.slow

DEPENDENTS = 10_000


async def _create_dependents(c: Cluster, ns: str, owner: dict[str, Any], n: int) -> None:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True}
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=c.url, verify=c.ssl_context(), timeout=60,
                                 headers={"Authorization": f"Bearer {c.token}"}) as http:
        async def one(i: int) -> None:
            async with sem:
                r = await http.post(f"/api/v1/namespaces/{ns}/configmaps", json={
                    "metadata": {"name": f"dep-{i}", "labels": {"owner": ref["name"]},
                                 "ownerReferences": [ref]}, "data": {"i": str(i)}})
                r.raise_for_status()
        await asyncio.gather(*(one(i) for i in range(n)))


def _count(c: Cluster, ns: str, owner: str) -> int:
    with c.http() as http:
        r = http.get(f"/api/v1/namespaces/{ns}/configmaps",
                     params={"labelSelector": f"owner={owner}"})
        return len(r.json()["items"])


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_ten_thousand_dependents(cluster: Cluster, namespace: str, policy: str) -> None:
    c, ns = cluster, namespace
    name = f"owner-{policy.lower()}"
    with c.http() as http:
        owner = http.post(f"/api/v1/namespaces/{ns}/configmaps",
                          json={"metadata": {"name": name}}).json()
    asyncio.run(_create_dependents(c, ns, owner, DEPENDENTS))
    assert _count(c, ns, name) == DEPENDENTS
    c.kubectl("delete", "configmap", name, "-n", ns, f"--cascade={policy.lower()}",
              "--wait=false")
    if policy == "Foreground":
        kept = c.kubectl_json("get", "configmap", name, "-n", ns)
        assert "foregroundDeletion" in kept["metadata"]["finalizers"]
        assert kept["metadata"].get("deletionTimestamp")
    left = [DEPENDENTS]

    def all_gone() -> bool:
        owner_there = c.kubectl("get", "configmap", name, "-n", ns,
                                check=False).returncode == 0
        left.append(_count(c, ns, name))
        if policy == "Foreground" and not owner_there:
            # the owner waits for its dependents: gone, it has none left
            assert left[-1] == 0, f"the owner went with {left[-1]} dependents left"
        return left[-1] == 0
    wait_for(f"the {DEPENDENTS} dependents deleted", all_gone, timeout=240)
    wait_for("the owner gone", lambda: c.kubectl(
        "get", "configmap", name, "-n", ns, check=False).returncode != 0, timeout=30)
