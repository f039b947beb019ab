"""The VolumeBinding and VolumeRestrictions scheduler plugins."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from tests.unit.schedfakes import FakeHandle, run_filter

from kybernetes.api import storage
from kybernetes.api.errors import StatusError
from kybernetes.scheduler.framework import Action, Code, CycleState, Status
from kybernetes.scheduler.plugins import volumebinding, volumerestrictions
from kybernetes.scheduler.plugins.volumebinding import (
    NO_PROVISIONER,
    REASON_BIND_CONFLICT,
    REASON_NODE_CONFLICT,
    REASON_PV_NOT_EXIST,
    REASON_UNBOUND_IMMEDIATE,
    VolumeBinding,
)
from kybernetes.scheduler.plugins.volumerestrictions import (
    REASON_DISK_CONFLICT,
    REASON_RWOP_CONFLICT,
)
from kybernetes.scheduler.types import PodInfo, make_node, make_pod

Obj = dict[str, Any]

WFFC, IMMEDIATE = "WaitForFirstConsumer", "Immediate"


# -- objects ------------------------------------------------------------------------------


def sc(name: str = "local", *, mode: str = WFFC, provisioner: str = NO_PROVISIONER,
       topologies: list[Obj] | None = None) -> Obj:
    obj: Obj = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": name}, "provisioner": provisioner,
                "volumeBindingMode": mode}
    if topologies is not None:
        obj["allowedTopologies"] = topologies
    return obj


def pvc(name: str = "c1", *, cls: str | None = "local", size: str = "1Gi",
        modes: tuple[str, ...] = ("ReadWriteOnce",), volume: str = "", bound: bool = False,
        ns: str = "default", annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    ann = dict(annotations or {})
    if bound:
        ann[storage.ANN_BIND_COMPLETED] = "yes"
    body: Obj = {"accessModes": list(modes), "resources": {"requests": {"storage": size}},
                 **spec}
    if cls is not None:
        body["storageClassName"] = cls
    if volume:
        body["volumeName"] = volume
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                         "annotations": ann},
            "spec": body, "status": {"phase": "Bound" if bound else "Pending"}}


def on_host(*names: str) -> Obj:
    return {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": list(names)}]}]}}


def pv(name: str = "pv1", *, cls: str = "local", size: str = "1Gi",
       modes: tuple[str, ...] = ("ReadWriteOnce",), node: str | None = "n1",
       affinity: Obj | None = None, phase: str = "Available", ref: Obj | None = None,
       labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    body: Obj = {"capacity": {"storage": size}, "accessModes": list(modes),
                 "storageClassName": cls, **spec}
    if affinity is not None:
        body["nodeAffinity"] = affinity
    elif node is not None:
        body["nodeAffinity"] = on_host(node)
    if ref is not None:
        body["claimRef"] = ref
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": body, "status": {"phase": phase}}


def ref(claim: str = "c1", uid: str = "", ns: str = "default") -> Obj:
    return {"kind": "PersistentVolumeClaim", "namespace": ns, "name": claim, "uid": uid}


def pod(*claims: str, name: str = "p", ns: str = "default", node: str = "",
        volumes: list[Obj] | None = None) -> Obj:
    vols = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
            for i, c in enumerate(claims)] + list(volumes or ())
    extra: Obj = {"nodeName": node} if node else {}
    return make_pod(name, ns, volumes=vols, **extra)


NODES = [make_node("n1", labels={"zone": "a", "rank": "5"}),
         make_node("n2", labels={"zone": "b", "rank": "1"})]


def handle(claims: Sequence[Obj] = (), volumes: Sequence[Obj] = (),
           classes: list[Obj] | None = None, pods: Sequence[Obj] = ()) -> FakeHandle:
    return FakeHandle(NODES, pods, objects={
        "persistentvolumeclaims": list(claims), "persistentvolumes": list(volumes),
        "storageclasses": [sc(), sc("fast", mode=IMMEDIATE),
                           sc("dynamic", provisioner=storage.LOCAL_PATH)]
        if classes is None else classes})


def reasons(st: Status | None) -> tuple[Code, list[str]] | None:
    return None if st is None else (st.code, st.reasons)


UNRESOLVABLE = Code.UNSCHEDULABLE_AND_UNRESOLVABLE
ADD_UPDATE = Action.ADD | Action.UPDATE


# -- VolumeBinding: PreFilter -----------------------------------------------------------


@pytest.mark.parametrize(("claims", "volumes", "want"), [
    pytest.param([], [], (Code.SKIP, []), id="no-claims"),
    pytest.param([pvc("other")], [], (UNRESOLVABLE, ['persistentvolumeclaim "c1" not found']),
                 id="missing-claim"),
    pytest.param([{**pvc(volume="gone"), "status": {"phase": "Lost"}}], [],
                 (UNRESOLVABLE, ['persistentvolumeclaim "c1" bound to non-existent '
                                 'persistentvolume "gone"']), id="lost-claim"),
    pytest.param([{**pvc(), "metadata": {**pvc()["metadata"], "deletionTimestamp": "t"}}], [],
                 (UNRESOLVABLE, ['persistentvolumeclaim "c1" is being deleted']),
                 id="deleting-claim"),
    pytest.param([pvc(cls="fast")], [], (UNRESOLVABLE, [REASON_UNBOUND_IMMEDIATE]),
                 id="unbound-immediate"),
    pytest.param([pvc(cls="")], [], (UNRESOLVABLE, [REASON_UNBOUND_IMMEDIATE]),
                 id="unbound-no-class-is-immediate"),
    pytest.param([pvc(cls="nosuch")], [], (UNRESOLVABLE, [REASON_UNBOUND_IMMEDIATE]),
                 id="unbound-unknown-class-is-immediate"),
    pytest.param([pvc(volume="pv1")], [pv()], (UNRESOLVABLE, [REASON_UNBOUND_IMMEDIATE]),
                 id="prebound-claim-left-to-controller"),
    pytest.param([pvc(cls="fast", volume="pv1", bound=True)], [pv(cls="fast")], None,
                 id="bound-immediate"),
    pytest.param([pvc()], [], None, id="unbound-wait-for-first-consumer"),
])
def test_volume_binding_pre_filter(claims: list[Obj], volumes: list[Obj],
                                   want: tuple[Code, list[str]] | None) -> None:
    """PreFilter: claims exist, are usable, and immediate ones are already bound."""
    p = pod() if want == (Code.SKIP, []) else pod("c1")
    h = handle(claims, volumes)
    st, _ = run_filter(VolumeBinding(h), p, h)
    assert reasons(st) == want


# -- VolumeBinding: Filter --------------------------------------------------------------


BOUND = pvc(volume="pv1", bound=True)
NC = (UNRESOLVABLE, [REASON_NODE_CONFLICT])
BC = (UNRESOLVABLE, [REASON_BIND_CONFLICT])


@pytest.mark.parametrize(("claims", "volumes", "want"), [
    pytest.param([BOUND], [pv(phase="Bound", ref=ref(uid="uid-c1"))], {"n1": None, "n2": NC},
                 id="bound-local-volume"),
    pytest.param([BOUND], [pv(node=None, phase="Bound")], {"n1": None, "n2": None},
                 id="bound-volume-without-affinity"),
    pytest.param([BOUND], [], {"n1": (UNRESOLVABLE, [REASON_PV_NOT_EXIST]),
                               "n2": (UNRESOLVABLE, [REASON_PV_NOT_EXIST])},
                 id="bound-volume-missing"),
    pytest.param([BOUND], [pv(phase="Bound", affinity={"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["3"]}]}]}})],
        {"n1": None, "n2": NC}, id="bound-affinity-gt"),
    pytest.param([BOUND], [pv(phase="Bound", affinity={"required": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}})],
        {"n1": NC, "n2": None}, id="bound-affinity-match-fields"),
    pytest.param([pvc()], [pv()], {"n1": None, "n2": BC}, id="available-local-volume"),
    pytest.param([pvc()], [pv(node=None)], {"n1": None, "n2": None},
                 id="available-volume-anywhere"),
    pytest.param([pvc(size="2Gi")], [pv()], {"n1": BC, "n2": BC}, id="volume-too-small"),
    pytest.param([pvc(modes=("ReadWriteMany",))], [pv()], {"n1": BC, "n2": BC},
                 id="access-modes-missing"),
    pytest.param([pvc(volumeMode="Block")], [pv()], {"n1": BC, "n2": BC},
                 id="volume-mode-differs"),
    pytest.param([pvc()], [pv(phase="Pending")], {"n1": BC, "n2": BC},
                 id="volume-not-available"),
    pytest.param([pvc()], [pv(cls="other")], {"n1": BC, "n2": BC}, id="volume-of-other-class"),
    pytest.param([pvc()], [pv(ref=ref("someone", "x"), phase="Bound")], {"n1": BC, "n2": BC},
                 id="volume-bound-elsewhere"),
    pytest.param([pvc()], [{**pv(), "metadata": {"name": "pv1", "deletionTimestamp": "t"}}],
                 {"n1": BC, "n2": BC}, id="volume-being-deleted"),
    pytest.param([pvc()], [pv(ref=ref(), phase="Pending")], {"n1": None, "n2": BC},
                 id="volume-prebound-to-claim"),
    pytest.param([pvc()], [pv(node="n2", ref=ref()), pv("pv2", node="n1")],
                 {"n1": BC, "n2": None}, id="prebound-volume-wins-and-pins-node"),
    pytest.param([pvc(selector={"matchLabels": {"disk": "ssd"}})],
                 [pv(labels={"disk": "hdd"}), pv("pv2", node="n2", labels={"disk": "ssd"})],
                 {"n1": BC, "n2": None}, id="selector"),
    pytest.param([pvc(), pvc("c2")], [pv()], {"n1": BC, "n2": BC},
                 id="two-claims-one-volume"),
    pytest.param([pvc(), pvc("c2")], [pv(), pv("pv2")], {"n1": None, "n2": BC},
                 id="two-claims-two-volumes"),
    pytest.param([pvc(cls="dynamic")], [], {"n1": None, "n2": None}, id="dynamic-provisioning"),
    pytest.param([pvc(cls="topo")], [], {"n1": None, "n2": BC},
                 id="dynamic-allowed-topologies"),
    pytest.param([pvc()], [], {"n1": BC, "n2": BC}, id="no-provisioner-no-volume"),
    pytest.param([pvc(cls="dynamic", annotations={storage.ANN_SELECTED_NODE: "n2"})], [],
                 {"n1": BC, "n2": None}, id="already-provisioning-for-a-node"),
    pytest.param([pvc(cls="dynamic", size="5Gi"), pvc("c2", cls="dynamic")],
                 [pv("small", cls="dynamic", node="n2")], {"n1": None, "n2": None},
                 id="static-and-dynamic-mixed"),
    pytest.param([BOUND, pvc("c2")], [pv(node="n2", phase="Bound"), pv("pv2", node="n2")],
                 {"n1": (UNRESOLVABLE, [REASON_NODE_CONFLICT, REASON_BIND_CONFLICT]),
                  "n2": None}, id="bound-and-unbound-conflicts"),
])
def test_volume_binding_filter(claims: list[Obj], volumes: list[Obj],
                               want: dict[str, tuple[Code, list[str]] | None]) -> None:
    """Filter: bound volumes must allow the node; unbound claims need a volume or a
    provisioner reachable from it."""
    classes = [sc(), sc("dynamic", provisioner=storage.LOCAL_PATH),
               sc("topo", provisioner=storage.LOCAL_PATH, topologies=[
                   {"matchLabelExpressions": [{"key": "zone", "values": ["a"]}]}])]
    h = handle(claims, volumes, classes)
    names = [c["metadata"]["name"] for c in claims]
    st, out = run_filter(VolumeBinding(h), pod(*names), h)
    assert st is None
    assert {n: reasons(s) for n, s in out.items()} == want


def test_filter_smallest_volume_is_chosen() -> None:
    """Of several fitting volumes the smallest is the one Reserve assumes."""
    h = handle([pvc()], [pv("big", size="10Gi"), pv("small", size="2Gi"),
                         pv("tiny", size="500Mi")])
    plugin = VolumeBinding(h)
    state, pi = CycleState(), PodInfo(pod("c1"))
    assert plugin.pre_filter(state, pi, h.nodes()) == (None, None)
    assert plugin.filter(state, pi, h.nodes()[0]) is None
    assert plugin.reserve(state, pi, "n1") is None
    assert plugin.volumes()["small"]["spec"]["claimRef"]["name"] == "c1"


def test_filter_bad_selector_is_an_error() -> None:
    """A claim selector that cannot be parsed fails the attempt with an Error."""
    bad = pvc(selector={"matchExpressions": [{"key": "k", "operator": "Sideways"}]})
    h = handle([bad], [pv()])
    _, out = run_filter(VolumeBinding(h), pod("c1"), h)
    assert out["n1"] is not None and out["n1"].code == Code.ERROR


# -- VolumeBinding: Reserve / Unreserve -------------------------------------------------


def schedule(plugin: VolumeBinding, h: FakeHandle, p: Obj, node: str
             ) -> tuple[CycleState, PodInfo, Status | None]:
    """PreFilter, Filter on ``node``, then Reserve there."""
    state, pi = CycleState(), PodInfo(p)
    _, st = plugin.pre_filter(state, pi, h.nodes())
    assert st is None or st.code == Code.SKIP
    info = h.node(node)
    assert info is not None
    if st is None:
        assert plugin.filter(state, pi, info) is None
    return state, pi, plugin.reserve(state, pi, node)


def test_reserve_hides_the_volume_from_the_next_pod() -> None:
    """A volume assumed for one claim is not offered to another until Unreserve."""
    h = handle([pvc(), pvc("c2")], [pv()])
    plugin = VolumeBinding(h)
    state, pi, st = schedule(plugin, h, pod("c1"), "n1")
    assert st is None
    _, out = run_filter(plugin, pod("c2", name="q"), h)
    assert reasons(out["n1"]) == BC
    plugin.unreserve(state, pi, "n1")
    _, out = run_filter(plugin, pod("c2", name="q"), h)
    assert out["n1"] is None


def test_reserve_assumes_selected_node_for_a_shared_claim() -> None:
    """A second pod of a claim being provisioned must follow it to the selected node."""
    h = handle([pvc(cls="dynamic")], [])
    plugin = VolumeBinding(h)
    schedule(plugin, h, pod("c1"), "n2")
    _, out = run_filter(plugin, pod("c1", name="q"), h)
    assert {n: reasons(s) for n, s in out.items()} == {"n1": BC, "n2": None}


def test_assumption_dropped_when_the_cache_moves_on() -> None:
    """Once the informer has a newer version of the object the assumed copy is dropped."""
    volume = {**pv(), "metadata": {"name": "pv1", "resourceVersion": "1"}}
    h = handle([pvc(), pvc("c2")], [volume])
    plugin = VolumeBinding(h)
    schedule(plugin, h, pod("c1"), "n1")
    assert plugin.volumes()["pv1"]["spec"]["claimRef"]["name"] == "c1"
    h._objects["persistentvolumes"] = [{**volume, "metadata": {"name": "pv1",
                                                               "resourceVersion": "2"}}]
    assert "claimRef" not in plugin.volumes()["pv1"]["spec"]


# -- VolumeBinding: PreBind -------------------------------------------------------------


class FakeClient:
    """The API as PreBind sees it: objects by (plural, key), recorded patches, and a
    reaction standing in for the volume controller."""

    def __init__(self, objects: list[Obj], *, react: Callable[[FakeClient], None] | None = None,
                 fail: StatusError | None = None) -> None:
        self.store: dict[tuple[str, str], Obj] = {}
        for o in objects:
            self.put(copy.deepcopy(o))
        self.react = react
        self.fail = fail
        self.patches: list[tuple[str, str, str | None, Obj]] = []
        self.gets = 0

    def put(self, obj: Obj) -> None:
        plural = {"Pod": "pods", "PersistentVolume": "persistentvolumes",
                  "PersistentVolumeClaim": "persistentvolumeclaims"}[obj["kind"]]
        md = obj["metadata"]
        key = f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"]
        self.store[(plural, key)] = obj

    def obj(self, plural: str, name: str, namespace: str | None = None) -> Obj:
        return self.store[(plural, f"{namespace}/{name}" if namespace else name)]

    async def get(self, api_version: str, plural: str, name: str, *,
                  namespace: str | None = None, subresource: str | None = None) -> Obj:
        self.gets += 1
        try:
            return copy.deepcopy(self.obj(plural, name, namespace))
        except KeyError:
            raise StatusError.not_found(plural, name) from None

    async def patch(self, api_version: str, plural: str, name: str, patch: Any, *,
                    namespace: str | None = None, **kwargs: Any) -> Obj:
        self.patches.append((plural, name, namespace, patch))
        if self.fail is not None:
            raise self.fail
        obj = self.obj(plural, name, namespace)
        for part in ("metadata", "spec"):
            for k, v in (patch.get(part) or {}).items():
                if isinstance(v, dict) and isinstance(obj[part].get(k), dict):
                    obj[part][k] = {**obj[part][k], **v}
                else:
                    obj[part][k] = v
        if self.react is not None:
            self.react(self)
        return copy.deepcopy(obj)


def bind_claim(volume: str, claim: str = "c1") -> Callable[[FakeClient], None]:
    """The volume controller's part: the claim names its volume, binding complete."""
    def react(client: FakeClient) -> None:
        c = client.obj("persistentvolumeclaims", claim, "default")
        c["spec"]["volumeName"] = volume
        c["metadata"]["annotations"][storage.ANN_BIND_COMPLETED] = "yes"
        if ("persistentvolumes", volume) not in client.store:
            client.put(pv(volume, cls=storage.class_of(c), ref=ref(claim, f"uid-{claim}"),
                          phase="Bound", node=c["metadata"]["annotations"].get(
                              storage.ANN_SELECTED_NODE)))
    return react


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def pre_bind(claims: list[Obj], volumes: list[Obj], client: FakeClient, *,
                   node: str = "n1", timeout: float = 600) -> Status | None:
    """Schedule pod ``p`` (claims c1...) onto ``node`` and run PreBind against ``client``."""
    h = handle(claims, volumes)
    h.client = client
    clock = Clock()
    plugin = VolumeBinding(h, bind_timeout=timeout, sleep=clock.sleep, clock=clock)
    state, pi, st = schedule(plugin, h, pod(*[c["metadata"]["name"] for c in claims]), node)
    assert st is None
    return await plugin.pre_bind(state, pi, node)


P = pod("c1")
P["kind"] = "Pod"


async def test_pre_bind_static_volume() -> None:
    """A matched volume gets the claim in its claimRef; PreBind waits for the binding."""
    client = FakeClient([P, pvc(), pv()], react=bind_claim("pv1"))
    assert await pre_bind([pvc()], [pv()], client) is None
    [(plural, name, ns, patch)] = client.patches
    assert (plural, name, ns) == ("persistentvolumes", "pv1", None)
    assert patch["spec"]["claimRef"] == storage.claim_ref(pvc())
    assert patch["metadata"]["annotations"] == {storage.ANN_BOUND_BY_CONTROLLER: "yes"}


async def test_pre_bind_dynamic_provisioning() -> None:
    """A claim to provision is annotated with the node; PreBind waits for its volume."""
    client = FakeClient([P, pvc(cls="dynamic")], react=bind_claim("pvc-uid-c1"))
    assert await pre_bind([pvc(cls="dynamic")], [], client, node="n2") is None
    assert client.patches == [("persistentvolumeclaims", "c1", "default", {
        "metadata": {"annotations": {storage.ANN_SELECTED_NODE: "n2"}}})]


async def test_pre_bind_all_bound_does_nothing() -> None:
    """With every claim bound PreBind makes no API call."""
    client = FakeClient([])
    assert await pre_bind([BOUND], [pv(phase="Bound")], client) is None
    assert client.patches == [] and client.gets == 0


def undo_claim_ref(client: FakeClient) -> None:
    client.obj("persistentvolumes", "pv1")["spec"]["claimRef"] = None


def drop_selected_node(client: FakeClient) -> None:
    client.obj("persistentvolumeclaims", "c1", "default")["metadata"]["annotations"] = {
        "other": "x"}


def delete_pod(client: FakeClient) -> None:
    client.store.pop(("pods", "default/p"))


def bind_elsewhere(client: FakeClient) -> None:
    bind_claim("pvc-uid-c1")(client)
    client.obj("persistentvolumes", "pvc-uid-c1")["spec"]["nodeAffinity"] = on_host("n2")


@pytest.mark.parametrize(("claim", "react", "fail", "want"), [
    pytest.param(pvc(), None, None, "binding volumes: context deadline exceeded",
                 id="timeout"),
    pytest.param(pvc(), undo_claim_ref, None,
                 'binding volumes: ClaimRef got reset for pv "pv1"', id="claim-ref-reset"),
    pytest.param(pvc(cls="dynamic"), drop_selected_node, None,
                 'binding volumes: provisioning failed for PVC "c1"', id="provisioning-failed"),
    pytest.param(pvc(), delete_pod, None,
                 'binding volumes: pod does not exist any more: pod "p" not found',
                 id="pod-deleted"),
    pytest.param(pvc(cls="dynamic"), bind_elsewhere, None,
                 "binding volumes: pv \"pvc-uid-c1\" node affinity doesn't match node \"n1\": "
                 "no matching NodeSelectorTerms", id="provisioned-on-another-node"),
    pytest.param(pvc(), None, StatusError.conflict("persistentvolumes", "pv1", "stale"),
                 StatusError.conflict("persistentvolumes", "pv1", "stale").message,
                 id="api-conflict"),
])
async def test_pre_bind_failures(claim: Obj, react: Callable[[FakeClient], None] | None,
                                 fail: StatusError | None, want: str) -> None:
    """PreBind fails (an Error, the pod goes back to the queue) when binding is undone,
    rejected or takes too long."""
    client = FakeClient([P, claim, pv()], react=react, fail=fail)
    st = await pre_bind([claim], [pv()], client, timeout=5)
    assert st is not None and (st.code, st.reasons) == (Code.ERROR, [want])


async def test_pre_bind_without_filter_for_node() -> None:
    """PreBind on a node that Filter never saw is an error."""
    h = handle([pvc()], [pv()])
    plugin = VolumeBinding(h)
    state, pi, _ = schedule(plugin, h, pod("c1"), "n1")
    st = await plugin.pre_bind(state, pi, "n2")
    assert st is not None and st.reasons == ['no pod volumes found for node "n2"']


# -- VolumeBinding: events and args -----------------------------------------------------


def test_volume_binding_events() -> None:
    """Claims of the pod, classes, volumes and node labels can make it schedulable."""
    events = {(e.event.resource, e.event.action): e.hint
              for e in VolumeBinding(handle()).events_to_register()}
    assert set(events) >= {("PersistentVolumeClaim", ADD_UPDATE),
                           ("PersistentVolume", ADD_UPDATE), ("StorageClass", ADD_UPDATE)}
    pi = PodInfo(pod("c1"))
    claim_hint = events[("PersistentVolumeClaim", ADD_UPDATE)]
    assert claim_hint is not None
    assert claim_hint(pi, None, pvc())
    assert not claim_hint(pi, None, pvc("c2"))
    assert not claim_hint(pi, None, pvc(ns="other"))
    class_hint = events[("StorageClass", ADD_UPDATE)]
    assert class_hint is not None
    assert class_hint(pi, None, sc())
    assert not class_hint(pi, sc(), sc())
    assert class_hint(pi, sc(), sc(topologies=[]))


@pytest.mark.parametrize(("args", "want"), [
    pytest.param({}, 600, id="default"),
    pytest.param({"bindTimeoutSeconds": 30}, 30, id="set"),
    pytest.param({"bindTimeoutSeconds": -1}, None, id="negative"),
])
def test_volume_binding_args(args: Obj, want: int | None) -> None:
    """bindTimeoutSeconds defaults to 600 and may not be negative."""
    if want is None:
        with pytest.raises(ValueError, match="should not be a negative value"):
            volumebinding.new(args, handle())
    else:
        plugin = volumebinding.new(args, handle())
        assert plugin.bind_timeout == want and plugin.name == "VolumeBinding"


# -- VolumeRestrictions -----------------------------------------------------------------


RWOP = ("ReadWriteOncePod",)


def gce(pd: str, ro: bool = False) -> Obj:
    return {"name": "d", "gcePersistentDisk": {"pdName": pd, "readOnly": ro}}


def rbd(image: str, mons: list[str], ro: bool = False) -> Obj:
    return {"name": "d", "rbd": {"monitors": mons, "image": image, "readOnly": ro}}


RC = (Code.UNSCHEDULABLE, [REASON_RWOP_CONFLICT])
DC = (Code.UNSCHEDULABLE, [REASON_DISK_CONFLICT])


@pytest.mark.parametrize(("claims", "existing", "p", "want"), [
    pytest.param([], [], pod(), (Code.SKIP, None), id="no-volumes"),
    pytest.param([pvc(modes=RWOP)], [], pod("c1"), (Code.SKIP, None), id="rwop-unused"),
    pytest.param([pvc(modes=RWOP)], [pod("c1", name="user", node="n1")], pod("c1"),
                 (None, {"n1": RC, "n2": RC}), id="rwop-in-use"),
    pytest.param([pvc()], [pod("c1", name="user", node="n1")], pod("c1"), (Code.SKIP, None),
                 id="rwo-shared"),
    pytest.param([pvc(modes=RWOP), pvc(modes=RWOP, ns="other")],
                 [pod("c1", name="user", node="n1", ns="other")], pod("c1"), (Code.SKIP, None),
                 id="same-name-other-namespace"),
    pytest.param([], [], pod("c1"),
                 ((UNRESOLVABLE, ['persistentvolumeclaim "c1" not found']), None),
                 id="missing-claim"),
    pytest.param([], [pod(name="user", node="n1", volumes=[gce("disk")])],
                 pod(volumes=[gce("disk")]), (None, {"n1": DC, "n2": None}), id="gce-same-disk"),
    pytest.param([], [pod(name="user", node="n1", volumes=[gce("disk", True)])],
                 pod(volumes=[gce("disk", True)]), (None, {"n1": None, "n2": None}),
                 id="gce-both-read-only"),
    pytest.param([], [pod(name="user", node="n1", volumes=[gce("other")])],
                 pod(volumes=[gce("disk")]), (None, {"n1": None, "n2": None}),
                 id="gce-other-disk"),
    pytest.param([], [pod(name="user", node="n2", volumes=[
        {"name": "d", "awsElasticBlockStore": {"volumeID": "vol-1", "readOnly": True}}])],
        pod(volumes=[{"name": "d", "awsElasticBlockStore": {"volumeID": "vol-1",
                                                            "readOnly": True}}]),
        (None, {"n1": None, "n2": DC}), id="ebs-always-exclusive"),
    pytest.param([], [pod(name="user", node="n1", volumes=[rbd("img", ["m1", "m2"])])],
                 pod(volumes=[rbd("img", ["m2"])]), (None, {"n1": DC, "n2": None}),
                 id="rbd-shared-monitor"),
    pytest.param([], [pod(name="user", node="n1", volumes=[
        {"name": "d", "iscsi": {"iqn": "iqn.x", "readOnly": True}}])],
        pod(volumes=[{"name": "d", "iscsi": {"iqn": "iqn.x"}}]),
        (None, {"n1": DC, "n2": None}), id="iscsi-one-writer"),
])
def test_volume_restrictions(claims: list[Obj], existing: list[Obj], p: Obj,
                             want: tuple[Any, dict[str, Any] | None]) -> None:
    """ReadWriteOncePod claims admit one pod in the cluster; in-tree disks one writer
    per node."""
    h = handle(claims, pods=existing)
    st, out = run_filter(volumerestrictions.new({}, h), p, h)
    want_pre, want_nodes = want
    if isinstance(want_pre, Code):
        assert st is not None and st.code == want_pre
    else:
        assert reasons(st) == want_pre
    if want_nodes is not None:
        assert {n: reasons(s) for n, s in out.items()} == want_nodes


def test_volume_restrictions_preemption_removes_the_user() -> None:
    """Removing the pod that uses the claim (a preemption victim) makes the nodes fit."""
    user = pod("c1", name="user", node="n1")
    h = handle([pvc(modes=RWOP)], pods=[user])
    plugin = volumerestrictions.new({}, h)
    state, pi = CycleState(), PodInfo(pod("c1"))
    assert plugin.pre_filter(state, pi, h.nodes()) == (None, None)
    n1 = h.node("n1")
    assert n1 is not None
    assert reasons(plugin.filter(state, pi, n1)) == RC
    victim = PodInfo(user)
    sim = state.clone()
    assert plugin.remove_pod(sim, pi, victim, n1) is None
    assert plugin.filter(sim, pi, n1) is None
    assert reasons(plugin.filter(state, pi, n1)) == RC  # the original state is untouched
    assert plugin.add_pod(sim, pi, victim, n1) is None
    assert reasons(plugin.filter(sim, pi, n1)) == RC


def test_volume_restrictions_events() -> None:
    """A deleted pod sharing a claim or disk, a new node or the claim's creation."""
    hints = {e.event.resource: e.hint
             for e in volumerestrictions.new({}, handle()).events_to_register()}
    assert set(hints) == {"Pod", "Node", "PersistentVolumeClaim"}
    pi = PodInfo(pod("c1", volumes=[gce("disk")]))
    on_pod, on_claim = hints["Pod"], hints["PersistentVolumeClaim"]
    assert on_pod is not None and on_claim is not None
    assert on_pod(pi, pod("c1", name="gone"), None)
    assert on_pod(pi, pod(name="gone", volumes=[gce("disk")]), None)
    assert not on_pod(pi, pod("c2", name="gone"), None)
    assert not on_pod(pi, pod("c1", name="gone", ns="other"), None)
    assert on_claim(pi, None, pvc())
    assert not on_claim(pi, None, pvc("c2"))
