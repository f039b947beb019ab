"""kyb server on a real etcd (``--datastore etcd://...``), driven by kubectl."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.cluster import Cluster, free_port, wait_for
from tests.etcd import etcd_cluster, etcd_process, etcd_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with etcd_server(tmp_path_factory.mktemp("etcd")) as url:
        yield url


@pytest.fixture(scope="module")
def cluster(etcd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("on-etcd")
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home",
                extra_args=["--disable-agent", "--datastore",
                            "etcd://" + etcd.removeprefix("http://")])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def etcd_get(etcd: str, key: str) -> bytes | None:
    r = httpx.post(f"{etcd}/v3/kv/range", json={"key": base64.b64encode(key.encode()).decode()},
                   timeout=5)
    kvs = r.json().get("kvs") or []
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def test_objects_live_in_etcd(cluster: Cluster, etcd: str) -> None:
    c = cluster
    c.kubectl("create", "namespace", "ml")
    c.kubectl("create", "configmap", "cfg", "-n", "ml", "--from-literal=lr=0.01")
    c.kubectl("create", "deployment", "web", "-n", "ml", "--image=python:3.11")
    raw = etcd_get(etcd, "/registry/configmaps/ml/cfg")
    assert raw is not None and orjson.loads(raw)["data"] == {"lr": "0.01"}
    rs = wait_for("the ReplicaSet", lambda: c.kubectl_json("get", "rs", "-n", "ml")["items"])
    assert rs[0]["metadata"]["ownerReferences"][0]["name"] == "web"
    cm = c.kubectl_json("get", "configmap", "cfg", "-n", "ml")
    # resourceVersions are etcd's revisions
    assert int(cm["metadata"]["resourceVersion"]) <= int(
        httpx.post(f"{etcd}/v3/kv/range", json={"key": base64.b64encode(b"/").decode(),
                                                 "count_only": True}, timeout=5
                   ).json()["header"]["revision"])


def test_watch_sees_changes_through_etcd(cluster: Cluster) -> None:
    c = cluster
    c.kubectl("create", "namespace", "watched")
    watcher = subprocess.Popen(
        ["/usr/bin/kubectl", "--kubeconfig", str(c.kubeconfig), "get", "configmaps", "-n",
         "watched", "--watch", "--output-watch-events"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for("the watch to list", lambda: c.kubectl(
            "get", "configmap", "kube-root-ca.crt", "-n", "watched", check=False
        ).returncode == 0)
        c.kubectl("create", "configmap", "late", "-n", "watched", "--from-literal=a=b")
        c.kubectl("delete", "configmap", "late", "-n", "watched")
        lines: list[str] = []
        assert watcher.stdout is not None
        while len([ln for ln in lines if " late " in ln]) < 2:
            line = watcher.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        late = [ln.split()[0] for ln in lines if ln.split()[1:2] == ["late"]]
        assert late == ["ADDED", "DELETED"], lines
    finally:
        watcher.kill()
        watcher.wait()


def test_secrets_are_encrypted_in_etcd(cluster: Cluster, etcd: str) -> None:
    c = cluster
    c.kubectl("create", "secret", "generic", "token", "-n", "default",
              "--from-literal=value=hf_super_secret")
    raw = etcd_get(etcd, "/registry/secrets/default/token")
    assert raw is not None and raw.startswith(b"k8s:enc:aesgcm:v1:key1:")
    assert b"hf_super_secret" not in raw and base64.b64encode(b"hf_super_secret") not in raw
    got = c.kubectl("get", "secret", "token", "-o", "jsonpath={.data.value}").stdout
    assert base64.b64decode(got) == b"hf_super_secret"


def test_state_survives_a_restart(cluster: Cluster) -> None:
    c = cluster
    c.kubectl("create", "configmap", "kept", "--from-literal=x=1")
    assert c.stop() == 0
    c.start()
    assert c.kubectl_json("get", "configmap", "kept")["data"] == {"x": "1"}


def test_a_bad_datastore_is_refused(tmp_path: Path) -> None:
    import sys

    out = subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "server",
                          "--data-dir", str(tmp_path / "d"), "--datastore", "mysql://x"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "unsupported datastore 'mysql://x'" in out.stderr


def test_a_lost_etcd_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    """Requests while etcd is down get 503 with Retry-After; acknowledged writes are there
    when it is back."""
    with etcd_process(tmp_path / "etcd") as etcd:
        c = Cluster(data_dir=tmp_path / "data", port=free_port(), log_path=tmp_path / "log",
                    cache_dir=tmp_path / "home",
                    extra_args=["--disable-agent", "--datastore",
                                "etcd://" + etcd.url.removeprefix("http://")])
        c.cache_dir.mkdir(parents=True, exist_ok=True)
        c.start()
        try:
            c.kubectl("create", "configmap", "before", "--from-literal=a=1")
            etcd.stop()
            with c.http() as h:
                r = h.post("/api/v1/namespaces/default/configmaps", json={
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "during"}})
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
                assert r.json()["reason"] == "ServiceUnavailable"
                assert "etcd unavailable" in r.json()["message"]
            etcd.start()
            got = wait_for("etcd back", lambda: c.kubectl(
                "get", "configmap", "before", "-o", "jsonpath={.data.a}", check=False).stdout)
            assert got == "1"
            assert c.kubectl("get", "configmap", "during", check=False).returncode != 0
            c.kubectl("create", "configmap", "after", "--from-literal=a=2")
        finally:
            c.stop()


async def test_killing_a_member_under_write_load_loses_no_acknowledged_write(
        tmp_path: Path) -> None:
    """Three members; four writers; the leader is SIGKILLed midway. Writes fail while a
    new leader is elected (503 upstream), but every acknowledged one is there after."""
    from kybernetes.store import StoreError
    from kybernetes.store.etcd import EtcdBackend

    with etcd_cluster(tmp_path / "etcd3") as cluster:
        leader = cluster.leader()
        # the client starts on the leader: its loss hits the client's own endpoint too
        order = [cluster.url(leader)] + [u for u in cluster.urls if u != cluster.url(leader)]
        store = await EtcdBackend.connect(order, timeout=5)
        acked: list[str] = []
        failed = 0
        killed = asyncio.Event()

        async def writer(w: int) -> None:
            nonlocal failed
            for i in range(120):
                try:
                    kv = await store.create(f"/load/{w}/{i:04d}", b"x" * 100)
                    acked.append(kv.key)
                except StoreError:
                    failed += 1
                if len(acked) >= 150 and not killed.is_set():
                    killed.set()
                    cluster.stop_member(leader, kill=True)

        await asyncio.gather(*(writer(w) for w in range(4)))
        await store.close()
        print(f"ETCD-KILL acknowledged={len(acked)} refused={failed}")
        assert killed.is_set() and len(acked) > 150
        survivors = [cluster.url(n) for n in cluster.names if n != leader]
        check = await EtcdBackend.connect(survivors)
        stored = {kv.key for kv in (await check.list("/load/")).items}
        await check.close()
        missing = [k for k in acked if k not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:5]}"
        assert len(acked) + failed == 480
