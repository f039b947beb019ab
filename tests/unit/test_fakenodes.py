"""Fake nodes: node lists (YAML, CSV), the objects built, and the component against a fake API."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kybernetes.aio.clock import FakeClock
from kybernetes.client import Client, Config
from kybernetes.kubelet.fakenodes import (
    FAKE_NODE_LABEL,
    FakeNodes,
    FakeNodeSpec,
    NodeListError,
    _Node,
    build_nodes,
    lease_object,
    needs_sync,
    node_object,
    parse_csv,
    parse_labels,
    parse_yaml,
    pod_cidr,
    running_status,
)

Obj = dict[str, Any]
DEFAULTS = FakeNodeSpec("", cpu="16", memory="64Gi", gpus=1, pods=50, labels={"pool": "sim"})


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("specs", "want"), [
    pytest.param(["a=1,b=2"], {"a": "1", "b": "2"}, id="comma-separated"),
    pytest.param(["a=1", "b=2", "a=3"], {"a": "3", "b": "2"}, id="repeated-last-wins"),
    pytest.param([" zone = eu-1 ,"], {"zone": "eu-1"}, id="spaces-and-trailing-comma"),
    pytest.param(["empty="], {"empty": ""}, id="empty-value"),
    pytest.param([], {}, id="none"),
])
def test_parse_labels(specs: list[str], want: dict[str, str]) -> None:
    """Labels are k=v pairs, comma separated, from one or more flags."""
    assert parse_labels(specs) == want


@pytest.mark.parametrize("spec", ["novalue", "=v", "a=1,b"])
def test_parse_labels_rejects(spec: str) -> None:
    """A pair without ``=`` or without a key is an error naming it."""
    with pytest.raises(NodeListError, match="invalid label"):
        parse_labels([spec])


def test_yaml_list() -> None:
    """Entries take what they give, the flags' defaults otherwise; labels add to the flags'."""
    nodes = parse_yaml("""
- name: a100-0
  cpu: 96
  memory: 1Ti
  gpus: 8
  pods: 250
  labels: {gpu: a100, pool: big}
  taints:
  - {key: nvidia.com/gpu, value: "true", effect: NoSchedule}
  - dedicated=ml:NoExecute
- {}
- name: cpu-1
  labels: "tier=batch,zone=b"
""", DEFAULTS)
    assert nodes[0] == FakeNodeSpec(
        "a100-0", cpu="96", memory="1Ti", gpus=8, pods=250,
        labels={"pool": "big", "gpu": "a100"},
        taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "ml", "effect": "NoExecute"}])
    assert nodes[1] == FakeNodeSpec("fake-node-1", cpu="16", memory="64Gi", gpus=1, pods=50,
                                    labels={"pool": "sim"})
    assert nodes[2].labels == {"pool": "sim", "tier": "batch", "zone": "b"}
    assert parse_yaml("nodes:\n- name: x\n", DEFAULTS)[0].name == "x"
    assert parse_yaml("", DEFAULTS) == []


@pytest.mark.parametrize(("text", "match"), [
    pytest.param("- name: a\n  gpu: 2\n", "unknown field.*gpu", id="typo"),
    pytest.param("name: a\n", "want a list", id="not-a-list"),
    pytest.param("- [a]\n", "want a mapping", id="entry-not-mapping"),
    pytest.param("- gpus: many\n", "gpus: want a whole number", id="gpus-not-int"),
    pytest.param("- labels: [a]\n", "labels must be a mapping", id="labels-list"),
    pytest.param("- taints: [bad]\n", "invalid taint", id="taint-no-effect"),
    pytest.param("- taints: [{key: a, effect: NoSchedule, x: 1}]\n", "invalid taint",
                 id="taint-extra-field"),
    pytest.param("- a: [\n", "not valid YAML", id="syntax"),
])
def test_yaml_errors(text: str, match: str) -> None:
    """A bad list file says which entry and what is wrong."""
    with pytest.raises(NodeListError, match=match):
        parse_yaml(text, DEFAULTS)


def test_csv_list() -> None:
    """CSV: a header, labels as k=v;k=v, empty cells take the defaults."""
    nodes = parse_csv("name,cpu,memory,gpus,labels\n"
                      "gpu-0,64,512Gi,4,gpu=h100;zone=a\n"
                      "\n"
                      ",,,,\n"
                      ",8,,0,\n", DEFAULTS)
    assert nodes == [
        FakeNodeSpec("gpu-0", cpu="64", memory="512Gi", gpus=4, pods=50,
                     labels={"pool": "sim", "gpu": "h100", "zone": "a"}),
        FakeNodeSpec("fake-node-1", cpu="8", memory="64Gi", gpus=0, pods=50,
                     labels={"pool": "sim"}),
    ]
    assert parse_csv("name, pods\nsmall, 10\n", DEFAULTS)[0].pods == 10


@pytest.mark.parametrize(("text", "match"), [
    pytest.param("name,cpus\na,1\n", "unknown column", id="typo-column"),
    pytest.param("", "no header", id="empty"),
    pytest.param("name,cpu\na,1,2\n", "line 2: more cells", id="extra-cell"),
    pytest.param("name,gpus\na,x\n", "line 2: gpus", id="gpus-not-int"),
    pytest.param("name,labels\na,zone\n", "line 2: invalid label", id="bad-label"),
])
def test_csv_errors(text: str, match: str) -> None:
    """A bad CSV says which line and what is wrong."""
    with pytest.raises(NodeListError, match=match):
        parse_csv(text, DEFAULTS)


def test_build_nodes_names_and_files(tmp_path: Path) -> None:
    """List entries come first; --fake-nodes adds fake-node-<i> after them; .csv or YAML."""
    csv_file = tmp_path / "nodes.csv"
    csv_file.write_text("name,cpu\nbig,128\n,\n,4\n")
    nodes = build_nodes(count=2, template=DEFAULTS, list_file=csv_file)
    assert [n.name for n in nodes] == ["big", "fake-node-1", "fake-node-2", "fake-node-3"]
    assert [n.cpu for n in nodes] == ["128", "4", "16", "16"]
    yaml_file = tmp_path / "nodes.yaml"
    yaml_file.write_text("- name: x\n")
    assert [n.name for n in build_nodes(list_file=yaml_file)] == ["x"]
    assert [n.name for n in build_nodes(count=3)] == ["fake-node-0", "fake-node-1",
                                                      "fake-node-2"]


@pytest.mark.parametrize(("template", "text", "match"), [
    pytest.param(FakeNodeSpec("", cpu="lots"), "", "invalid cpu 'lots'", id="cpu"),
    pytest.param(FakeNodeSpec("", memory="0"), "", "memory must be positive", id="memory"),
    pytest.param(FakeNodeSpec("", gpus=-1), "", "gpus must not be negative", id="gpus"),
    pytest.param(FakeNodeSpec("", pods=0), "", "pods must be positive", id="pods"),
    pytest.param(FakeNodeSpec("", labels={"a b": "c"}), "", "invalid label", id="label-key"),
    pytest.param(FakeNodeSpec(""), "- name: fake-node-1\n", "given twice", id="duplicate"),
    pytest.param(FakeNodeSpec(""), "- name: Big_Node\n", "invalid fake node name",
                 id="name"),
    pytest.param(FakeNodeSpec(""), "- taints: [{key: a, effect: Never}]\n", "invalid taint",
                 id="taint-effect"),
    pytest.param(FakeNodeSpec(""), "- taints: [a:NoSchedule, a=b:NoSchedule]\n",
                 "given twice", id="taint-duplicate"),
])
def test_build_nodes_rejects(tmp_path: Path, template: FakeNodeSpec, text: str,
                             match: str) -> None:
    """Invalid resources, names, labels or taints are refused before anything starts."""
    path = tmp_path / "nodes.yaml"
    path.write_text(text)
    with pytest.raises(NodeListError, match=match):
        build_nodes(count=2, template=template, list_file=path)


def test_missing_list_file(tmp_path: Path) -> None:
    with pytest.raises(NodeListError, match="cannot read"):
        build_nodes(list_file=tmp_path / "nope.yaml")


# -- objects ------------------------------------------------------------------------------


def test_node_object() -> None:
    """A fake node looks real: labels, capacity = allocatable, four conditions, nodeInfo."""
    spec = FakeNodeSpec("gpu-7", cpu="64", memory="0.5Ti", gpus=4, labels={"zone": "a"},
                        taints=[{"key": "gpu", "effect": "NoSchedule"}])
    node = node_object(spec, index=7, now=1_700_000_000)
    labels = node["metadata"]["labels"]
    assert labels[FAKE_NODE_LABEL] == "true"
    assert {k: labels[k] for k in ("kubernetes.io/hostname", "kubernetes.io/os",
                                   "kubernetes.io/arch", "zone")} == {
        "kubernetes.io/hostname": "gpu-7", "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "zone": "a"}
    assert node["spec"] == {"podCIDR": "10.128.7.0/24", "podCIDRs": ["10.128.7.0/24"],
                            "taints": [{"key": "gpu", "effect": "NoSchedule"}]}
    status = node["status"]
    assert status["capacity"] == status["allocatable"] == {
        "cpu": "64", "memory": "512Gi", "ephemeral-storage": "1Ti", "pods": "110",
        "nvidia.com/gpu": "4", "kybernetes.io/gpu-milli": "4000"}
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds == {"Ready": ("True", "KubeletReady"),
                     "MemoryPressure": ("False", "KubeletHasSufficientMemory"),
                     "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
                     "PIDPressure": ("False", "KubeletHasSufficientPID")}
    assert status["addresses"] == [{"type": "InternalIP", "address": "127.16.0.8"},
                                   {"type": "Hostname", "address": "gpu-7"}]
    assert ipaddress.ip_address(status["addresses"][0]["address"]).is_loopback
    info = status["nodeInfo"]
    assert info["operatingSystem"] == "linux" and info["architecture"] == "amd64"
    assert info["kubeletVersion"].startswith("v1.32")
    assert node_object(spec, index=7, now=0)["status"]["nodeInfo"] == info  # stable
    plain = node_object(FakeNodeSpec("cpu-0"), index=0, now=0)
    assert "taints" not in plain["spec"]
    assert "nvidia.com/gpu" not in plain["status"]["capacity"]
    assert not any(k.startswith("nvidia.com/") for k in plain["metadata"]["labels"])


def test_pod_cidrs_are_disjoint() -> None:
    cidrs = [ipaddress.ip_network(pod_cidr(i)) for i in (0, 1, 255, 256, 4999)]
    assert [str(c) for c in cidrs] == ["10.128.0.0/24", "10.128.1.0/24", "10.128.255.0/24",
                                       "10.129.0.0/24", "10.147.135.0/24"]


def test_lease_object() -> None:
    lease = lease_object("n1", "uid-1", 1_700_000_000.5)
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert lease["spec"] == {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                             "renewTime": "2023-11-14T22:13:20.500000Z"}


def _pod(name: str = "p", node: str = "fake-node-1", **status: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "img:1"},
                                                      {"name": "side", "image": "img:2"}]},
            "status": status}


def test_running_status() -> None:
    """One write makes the pod Running and Ready, keeping what the scheduler wrote."""
    scheduled = {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": "2020-01-01T00:00:00Z"}
    pod = _pod(phase="Pending", conditions=[scheduled])
    pod["spec"]["initContainers"] = [{"name": "init", "image": "i"},
                                     {"name": "proxy", "image": "p", "restartPolicy": "Always"}]
    st = running_status(pod, pod_ip="10.128.1.2", host_ip="127.16.0.2", now=1_700_000_000)
    assert st["phase"] == "Running"
    conds = {c["type"]: c for c in st["conditions"]}
    assert {t: c["status"] for t, c in conds.items()} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True",
        "Ready": "True", "PodReadyToStartContainers": "True"}
    assert conds["PodScheduled"] == scheduled
    assert conds["Ready"]["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    assert [(c["name"], c["ready"], c["started"], list(c["state"]))
            for c in st["containerStatuses"]] == [("main", True, True, ["running"]),
                                                  ("side", True, True, ["running"])]
    assert [(c["name"], list(c["state"])) for c in st["initContainerStatuses"]] == [
        ("init", ["terminated"]), ("proxy", ["running"])]
    assert st["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert (st["podIP"], st["podIPs"], st["hostIP"], st["hostIPs"]) == (
        "10.128.1.2", [{"ip": "10.128.1.2"}], "127.16.0.2", [{"ip": "127.16.0.2"}])
    assert st["startTime"] == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize(("pod", "want"), [
    pytest.param(_pod(), True, id="new"),
    pytest.param(_pod(phase="Pending"), True, id="pending"),
    pytest.param(_pod(phase="Running"), False, id="running"),
    pytest.param(_pod(phase="Succeeded"), False, id="succeeded"),
    pytest.param({**_pod(phase="Running"), "metadata": {"name": "p", "deletionTimestamp": "x"}},
                 True, id="terminating"),
])
def test_needs_sync(pod: Obj, want: bool) -> None:
    assert needs_sync(pod) is want


def test_pod_addresses() -> None:
    """Each pod gets its own address of the node's range, kept until the pod is gone."""
    node = _Node(FakeNodeSpec("n"), 3, "127.16.0.4", "10.128.3.0/24")
    node.remember("default/old", "10.128.3.3")
    a, b = node.allocate("default/a"), node.allocate("default/b")
    assert (a, b) == ("10.128.3.2", "10.128.3.4")
    assert node.allocate("default/a") == a
    node.release("default/a")
    got = {node.allocate(f"default/p{i}") for i in range(252)}
    assert None in got and a in got and "10.128.3.3" not in got  # .2-.254: 253, 2 taken
    assert not {ip for ip in got if ip and not ip.startswith("10.128.3.")}


# -- the component, against a fake API server ---------------------------------------------


class FakeAPI:
    """Just enough of an API server for nodes, leases and pods (with a pod watch)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.rv = 0
        self.uids = itertools.count(1)
        self.requests: list[tuple[str, str, Obj | None]] = []
        self.watchers: list[asyncio.Queue[tuple[str, Obj] | None]] = []

    def calls(self, method: str, plural: str = "", sub: str = "") -> list[str]:
        out = []
        for m, path, _ in self.requests:
            parts = path.split("/")
            if m == method and (not plural or plural in parts) and \
                    (not sub or parts[-1] == sub):
                out.append(path)
        return out

    def put(self, plural: str, obj: Obj, *, event: str | None = None) -> Obj:
        md = obj["metadata"]
        key = (plural, md.get("namespace", ""), md["name"])
        self.rv += 1
        md["resourceVersion"] = str(self.rv)
        md.setdefault("uid", f"uid-{next(self.uids)}")
        event = event or ("MODIFIED" if key in self.objects else "ADDED")
        self.objects[key] = obj
        if plural == "pods":
            self._broadcast(event, obj)
        return obj

    def get(self, plural: str, name: str, ns: str = "") -> Obj | None:
        return self.objects.get((plural, ns, name))

    def _broadcast(self, type_: str, obj: Obj) -> None:
        for q in self.watchers:
            q.put_nowait((type_, copy.deepcopy(obj)))

    async def close_watches(self) -> None:
        for q in self.watchers:
            q.put_nowait(None)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        parts = request.url.path.strip("/").split("/")
        parts = parts[2:] if parts[0] == "api" else parts[3:]
        ns = ""
        if parts[0] == "namespaces":
            ns, parts = parts[1], parts[2:]
        plural, name = parts[0], parts[1] if len(parts) > 1 else ""
        params = request.url.params
        if request.method == "GET" and not name:
            if "watch" in params:
                return self._watch()
            sel = params.get("labelSelector")
            want = dict([sel.split("=", 1)]) if sel else {}
            items = [o for (p, n, _), o in self.objects.items() if p == plural and
                     (not ns or n == ns) and
                     want.items() <= (o["metadata"].get("labels") or {}).items()]
            return httpx.Response(200, json={"items": items,
                                             "metadata": {"resourceVersion": str(self.rv)}})
        key = (plural, ns, name)
        old = self.objects.get(key)
        if request.method == "PUT" and old is None and plural == "leases":
            assert body is not None  # as upstream, a Lease may be created by a PUT
            body["metadata"].pop("uid", None)
            return httpx.Response(201, json=self.put(plural, body))
        if request.method == "POST":
            assert body is not None
            if ns:
                body["metadata"].setdefault("namespace", ns)
            if self.get(plural, body["metadata"]["name"], ns) is not None:
                return _status(409, "AlreadyExists")
            return httpx.Response(201, json=self.put(plural, body))
        if old is None:
            return _status(404, "NotFound")
        if request.method == "GET":
            return httpx.Response(200, json=old)
        if request.method == "PUT":
            assert body is not None
            if body["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
                return _status(409, "Conflict")
            return httpx.Response(200, json=self.put(plural, body))
        if request.method == "PATCH":
            new = _merge(copy.deepcopy(old), body)
            return httpx.Response(200, json=self.put(plural, new))
        if request.method == "DELETE":
            del self.objects[key]
            if plural == "pods":
                self._broadcast("DELETED", old)
            return httpx.Response(200, json=old)
        raise AssertionError(request)

    def _watch(self) -> httpx.Response:
        q: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue()
        self.watchers.append(q)

        async def stream() -> AsyncIterator[bytes]:
            while (item := await q.get()) is not None:
                yield orjson.dumps({"type": item[0], "object": item[1]}) + b"\n"

        return httpx.Response(200, content=stream())


def _status(code: int, reason: str) -> httpx.Response:
    return httpx.Response(code, json={"kind": "Status", "apiVersion": "v1", "code": code,
                                      "reason": reason, "message": reason})


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = _merge(target.get(k), v)
    return target


async def eventually(predicate: Callable[[], object]) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
async def client(api: FakeAPI) -> AsyncIterator[Client]:
    async with Client(Config.for_server("http://kyb.test"),
                      transport=httpx.MockTransport(api.handle)) as c:
        yield c


@pytest.fixture
async def started(client: Client, api: FakeAPI) -> AsyncIterator[list[FakeNodes]]:
    """FakeNodes a test starts, stopped afterwards even when it fails."""
    running: list[FakeNodes] = []
    yield running
    for fake in running:
        await fake.stop()
    await api.close_watches()


async def _start(running: list[FakeNodes], client: Client, nodes: list[FakeNodeSpec],
                 **kwargs: Any) -> FakeNodes:
    fake = FakeNodes(client, nodes, **kwargs)
    running.append(fake)
    await fake.start()
    await asyncio.wait_for(fake.registered.wait(), 5)
    return fake


async def test_registers_nodes_and_leases(api: FakeAPI, client: Client,
                                          started: list[FakeNodes]) -> None:
    """Every node is created once with its status, and gets a Lease owned by it."""
    await _start(started, client, build_nodes(count=3, template=FakeNodeSpec("", gpus=2)),
                 clock=FakeClock())
    assert sorted(api.calls("POST", "nodes")) == ["/api/v1/nodes"] * 3
    for i in range(3):
        node = api.get("nodes", f"fake-node-{i}")
        assert node is not None
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
        lease = api.get("leases", f"fake-node-{i}", "kube-node-lease")
        assert lease is not None
        assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
        assert lease["spec"]["holderIdentity"] == f"fake-node-{i}"


async def test_restart_updates_existing(api: FakeAPI, client: Client,
                                        started: list[FakeNodes]) -> None:
    """Nodes already there (a restart) are patched, not created again; podCIDR stays."""
    old = node_object(FakeNodeSpec("fake-node-0", gpus=4), index=9, now=0)
    old["metadata"]["uid"] = "kept"
    api.put("nodes", old)
    api.put("leases", {**lease_object("fake-node-0", "kept", 0)})
    await _start(started, client, build_nodes(count=2, template=FakeNodeSpec(
        "", labels={"zone": "b"}, taints=[{"key": "k", "effect": "NoSchedule"}])),
        clock=FakeClock())
    node = api.get("nodes", "fake-node-0")
    assert node is not None
    assert node["metadata"]["uid"] == "kept"
    assert node["spec"]["podCIDR"] == "10.128.9.0/24"
    assert node["spec"]["taints"] == [{"key": "k", "effect": "NoSchedule"}]
    assert node["metadata"]["labels"]["zone"] == "b"
    assert "nvidia.com/gpu.count" not in node["metadata"]["labels"]
    assert "nvidia.com/gpu" not in node["status"]["capacity"]
    assert [p for p in api.calls("POST") if "nodes" in p] == ["/api/v1/nodes"]  # node 1 only
    assert api.calls("PUT", "leases") == [
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/fake-node-0"]


async def test_restart_without_changes_writes_only_status(api: FakeAPI, client: Client,
                                                          started: list[FakeNodes]) -> None:
    """A node whose labels and taints are as wanted gets its status written, nothing more."""
    api.put("nodes", node_object(FakeNodeSpec("fake-node-0"), index=0, now=0))
    await _start(started, client, build_nodes(count=1), clock=FakeClock())
    assert api.calls("PATCH", "nodes") == ["/api/v1/nodes/fake-node-0/status"]
    assert not api.calls("POST", "nodes")


async def test_refuses_to_take_over_a_real_node(api: FakeAPI, client: Client,
                                                started: list[FakeNodes]) -> None:
    """A node of the same name that is not ours is left alone."""
    api.put("nodes", {"metadata": {"name": "fake-node-0", "labels": {}}, "spec": {}})
    fake = await _start(started, client, build_nodes(count=1), clock=FakeClock())
    assert not api.calls("PATCH", "nodes")
    assert fake.nodes["fake-node-0"].gone


async def test_pods_run_and_are_deleted(api: FakeAPI, client: Client,
                                        started: list[FakeNodes]) -> None:
    """A pod bound to a fake node goes Running in one status write; a graceful delete is
    finished at once; pods of other nodes are not touched."""
    await _start(started, client, build_nodes(count=2), clock=FakeClock())
    api.put("pods", _pod("other", node="real-node"))
    api.put("pods", _pod("p", node="fake-node-1"))

    def status() -> Obj:
        pod = api.get("pods", "p", "default")
        assert pod is not None
        return dict(pod["status"])

    await eventually(lambda: status().get("phase") == "Running")
    st = status()
    assert st["podIP"].startswith("10.128.1.") and st["hostIP"] == "127.16.0.2"
    assert all(c["ready"] for c in st["containerStatuses"])
    patches = api.calls("PATCH", "pods", "status")
    assert patches == ["/api/v1/namespaces/default/pods/p/status"]
    await asyncio.sleep(0.02)
    assert api.calls("PATCH", "pods", "status") == patches  # Running: nothing more to do
    pod = api.get("pods", "p", "default")
    assert pod is not None
    pod = copy.deepcopy(pod)
    pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    api.put("pods", pod)
    await eventually(lambda: api.get("pods", "p", "default") is None)
    deletes = [b for m, _, b in api.requests if m == "DELETE"]
    assert deletes == [{"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                        "preconditions": {"uid": "uid-p"}}]
    other = api.get("pods", "other", "default")
    assert other is not None and other["status"] == {}


async def test_leases_renewed_in_spread_batches(api: FakeAPI, client: Client,
                                                started: list[FakeNodes]) -> None:
    """One loop renews every Lease once per interval, a batch per tick (one PUT each)."""
    clock = FakeClock()
    fake = await _start(started, client, build_nodes(count=10), clock=clock,
                        lease_interval=5.0, tick=1.0, status_interval=1e9)

    def puts() -> list[str]:
        return api.calls("PUT", "leases")

    await asyncio.sleep(0.01)
    assert puts() == []
    seen: list[str] = []
    for _ in range(5):
        clock.advance(1.0)
        want = len(seen) + 2
        await eventually(lambda: len(puts()) == want)  # noqa: B023 - awaited at once
        seen = puts()
    assert sorted(p.rsplit("/", 1)[1] for p in seen) == sorted(fake.nodes)
    clock.advance(1.0)
    await eventually(lambda: len(puts()) == 12)
    assert puts()[10:] == seen[:2]  # the next round starts over, same order
    lease = api.get("leases", "fake-node-0", "kube-node-lease")
    assert lease is not None and lease["spec"]["renewTime"].startswith("2023-11-14T22:13:2")


async def test_deleted_node_is_left_alone(api: FakeAPI, client: Client,
                                          started: list[FakeNodes]) -> None:
    """A fake node someone deleted stops heartbeating instead of coming back."""
    clock = FakeClock()
    fake = await _start(started, client, build_nodes(count=1), clock=clock,
                        lease_interval=1.0, tick=1.0)
    del api.objects[("nodes", "", "fake-node-0")]
    del api.objects[("leases", "kube-node-lease", "fake-node-0")]
    clock.advance(1.0)
    await eventually(lambda: fake.nodes["fake-node-0"].gone)
    assert api.calls("GET", "nodes")[-1] == "/api/v1/nodes/fake-node-0"
    puts = len(api.calls("PUT", "leases"))
    clock.advance(1.0)
    await asyncio.sleep(0.02)
    assert len(api.calls("PUT", "leases")) == puts  # no more heartbeats
