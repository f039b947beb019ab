"""Server-side apply and managedFields behave as kube-apiserver 1.32's field manager."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kybernetes.api import fieldmanager as fm
from kybernetes.api.errors import StatusError
from kybernetes.api.schema import builtin_definitions
from kybernetes.api.structural import Compiler, Node

T0, T1, T2, T3 = (f"2024-05-01T10:00:0{i}Z" for i in range(4))

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def compiler() -> Compiler:
    return Compiler(builtin_definitions())


@pytest.fixture(scope="module")
def deployment(compiler: Compiler) -> Node:
    return compiler.definition("io.k8s.api.apps.v1.Deployment")


@pytest.fixture(scope="module")
def configmap(compiler: Compiler) -> Node:
    return compiler.definition("io.k8s.api.core.v1.ConfigMap")


@pytest.fixture(scope="module")
def daemonset(compiler: Compiler) -> Node:
    return compiler.definition("io.k8s.api.apps.v1.DaemonSet")


CRD_SCHEMA: Obj = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def crd() -> Node:
    return Compiler().compile(CRD_SCHEMA, crd=True)


def k(**keys: Any) -> str:
    """A ``k:`` path element as Kubernetes serializes it."""
    return "k:" + json.dumps(dict(sorted(keys.items())), separators=(",", ":"))


def deploy(*, image: str = "nginx:1.25", replicas: int | None = 3, **spec: Any) -> Obj:
    obj: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image}]},
            },
            **spec,
        },
    }
    if replicas is not None:
        obj["spec"]["replicas"] = replicas
    return obj


def stored(obj: Obj) -> Obj:
    """``obj`` as the store hands it back: server metadata filled in."""
    out = copy.deepcopy(obj)
    out["metadata"].update(uid="0b5f", resourceVersion="7", creationTimestamp=T0, generation=1)
    return out


def entries(obj: Obj) -> list[tuple[str, str, Obj]]:
    return [(e["manager"], e["operation"], e["fieldsV1"])
            for e in obj["metadata"].get("managedFields", [])]


def owned(obj: Obj, manager: str, operation: str) -> Obj:
    for m, op, fields in entries(obj):
        if (m, op) == (manager, operation):
            return fields
    raise AssertionError(f"no {operation} entry for {manager}: {entries(obj)}")


# -- FieldsV1 encoding ------------------------------------------------------------------


def test_fields_v1_of_a_deployment(deployment: Node) -> None:
    """List-maps by key (two keys sorted), sets by value, maps per key, "." on items."""
    obj = deploy(replicas=2)
    obj["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    obj["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"containerPort": 80, "protocol": "TCP", "name": "http"},
        {"containerPort": 53, "protocol": "UDP"},
    ]
    got = fm.fields_v1(obj, deployment)
    want = {
        "f:metadata": {
            "f:finalizers": {'v:"example.com/a"': {}, 'v:"example.com/b"': {}},
            "f:labels": {"f:app": {}},
        },
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {k(name="nginx"): {
                    ".": {},
                    "f:image": {},
                    "f:name": {},
                    "f:ports": {
                        k(containerPort=53, protocol="UDP"): {
                            ".": {}, "f:containerPort": {}, "f:protocol": {}},
                        k(containerPort=80, protocol="TCP"): {
                            ".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}},
                    },
                }}},
            },
        },
    }
    # the wire form is ordered too: "." first, then field names, keys by value
    assert json.dumps(got) == json.dumps(want)
    assert k(containerPort=80, protocol="TCP") == 'k:{"containerPort":80,"protocol":"TCP"}'


@pytest.mark.parametrize(
    ("value", "element"),
    [
        pytest.param("a<b&c", 'v:"a\\u003cb\\u0026c"', id="html-escaped-like-go"),
        pytest.param("snow☃", 'v:"snow☃"', id="utf8-kept"),
    ],
)
def test_set_values_are_serialized_as_go_json(deployment: Node, value: str, element: str) -> None:
    """Set elements use Go's JSON encoding (HTML characters escaped)."""
    obj = {"metadata": {"finalizers": [value]}}
    assert fm.fields_v1(obj, deployment) == {"f:metadata": {"f:finalizers": {element: {}}}}


def test_managed_time() -> None:
    """Timestamps are RFC 3339 seconds in UTC."""
    assert fm.managed_time(1714557600.9) == "2024-05-01T10:00:00Z"


# -- updates (create, update, patch) ------------------------------------------------------


def test_create_records_one_update_entry(deployment: Node) -> None:
    """On create the manager owns everything it set; new maps and items carry "."."""
    obj = deploy(replicas=1, strategy={"type": "RollingUpdate",
                                       "rollingUpdate": {"maxSurge": "25%"}})
    obj["status"] = {"replicas": 0}
    fm.update_managed_fields(None, obj, manager="kubectl-create", schema=deployment, now=T0)
    assert obj["metadata"]["managedFields"] == [{
        "manager": "kubectl-create",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                # strategy, template and template.spec are non-pointer structs in Go:
                # present in the zero object, so not owned themselves
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}, "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {k(name="nginx"): {
                        ".": {}, "f:image": {}, "f:name": {}}}},
                },
            },
        },
    }]


def test_creates_alike_reuse_their_fields(deployment: Node,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A create just like an earlier one but for the metadata nobody owns (name, uid, ...)
    records the same fields, looked up instead of walked; one that differs anywhere else
    (a value, a container's name, the manager) is walked; no two objects share a part."""
    memo = fm._CreateMemo()
    monkeypatch.setattr(fm, "_CREATES", memo)

    def create(obj: Obj, name: str, manager: str = "kubectl-create") -> list[Obj]:
        obj["metadata"].update(name=name, uid=f"u-{name}", creationTimestamp=T1)
        fm.update_managed_fields(None, obj, manager=manager, schema=deployment, now=T0)
        fields: list[Obj] = obj["metadata"]["managedFields"]
        return fields

    first = create(deploy(), "a")
    again = create(deploy(), "b")
    assert memo.counts[id(deployment)] == [2, 1]
    assert again == first and again[0]["fieldsV1"] is not first[0]["fieldsV1"]
    sidecar = deploy()
    sidecar["spec"]["template"]["spec"]["containers"][0]["name"] = "sidecar"
    for variant, manager in ((deploy(image="redis"), "kubectl-create"),
                             (deploy(replicas=None), "kubectl-create"),
                             (sidecar, "kubectl-create"), (deploy(), "helm")):
        fresh = copy.deepcopy(variant)
        got = create(variant, "c", manager)
        monkeypatch.setattr(fm, "_CREATES", fm._CreateMemo())  # walked for sure
        assert got == create(fresh, "c", manager)
        monkeypatch.setattr(fm, "_CREATES", memo)
    assert memo.counts[id(deployment)] == [6, 1]


def test_create_of_a_configmap(configmap: Node) -> None:
    """The cheap path: maps absent from the zero object are owned with "."."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "c", "namespace": "default", "uid": "u", "generation": 1},
           "data": {"a": "1", "b": "2"}}
    fm.update_managed_fields(None, obj, manager="kubectl-create", schema=configmap, now=T0)
    assert entries(obj) == [("kubectl-create", "Update",
                             {"f:data": {".": {}, "f:a": {}, "f:b": {}}})]


def test_noop_update_keeps_entries(configmap: Node) -> None:
    """An update that changes nothing leaves the entries and their times alone."""
    old: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"a": "1"}}
    fm.update_managed_fields(None, old, manager="creator", schema=configmap, now=T0)
    old = stored(old)
    new = copy.deepcopy(old)
    fm.update_managed_fields(old, new, manager="editor", schema=configmap, now=T1)
    assert new["metadata"]["managedFields"] == old["metadata"]["managedFields"]


def test_update_takes_changed_fields_from_others(configmap: Node) -> None:
    """Changed fields move to the updater; its own entries merge and get the new time."""
    old: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"a": "1", "b": "2"}}
    fm.update_managed_fields(None, old, manager="creator", schema=configmap, now=T0)
    old = stored(old)
    new = copy.deepcopy(old)
    new["data"] = {"a": "changed", "c": "3"}  # b removed
    fm.update_managed_fields(old, new, manager="editor", schema=configmap, now=T1)
    assert entries(new) == [
        ("creator", "Update", {"f:data": {}}),
        ("editor", "Update", {"f:data": {"f:a": {}, "f:c": {}}}),
    ]
    later = copy.deepcopy(new)
    later["data"]["d"] = "4"
    fm.update_managed_fields(stored(new), later, manager="editor", schema=configmap, now=T2)
    assert later["metadata"]["managedFields"][1]["time"] == T2
    assert owned(later, "editor", "Update") == {"f:data": {"f:a": {}, "f:c": {}, "f:d": {}}}


@pytest.mark.parametrize(
    ("subresource", "change", "expect"),
    [
        pytest.param("", {"status": {"phase": "Active"}}, [], id="main-resource-ignores-status"),
        pytest.param("status", {"status": {"phase": "Active"}},
                     [("ctrl", "Update", {"f:status": {"f:phase": {}}})], id="status-owns-status"),
        pytest.param("status", {"spec": {"finalizers": ["x"]}}, [], id="status-ignores-spec"),
    ],
)
def test_reset_fields_per_subresource(compiler: Compiler, subresource: str, change: Obj,
                                      expect: list[Any]) -> None:
    """Status is owned only through /status, spec only through the main resource."""
    schema = compiler.definition("io.k8s.api.core.v1.Namespace")
    old = stored({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}})
    new = copy.deepcopy(old)
    new.update(change)
    fm.update_managed_fields(old, new, manager="ctrl", subresource=subresource,
                             schema=schema, now=T1)
    # an object without managedFields is only tracked from its creation on
    assert entries(new) == []
    old["metadata"]["managedFields"] = [{
        "manager": "creator", "operation": "Update", "apiVersion": "v1", "time": T0,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}}]
    new = copy.deepcopy(old)
    new.update(change)
    fm.update_managed_fields(old, new, manager="ctrl", subresource=subresource,
                             schema=schema, now=T1)
    assert [e for e in entries(new) if e[0] == "ctrl"] == expect
    if subresource:
        assert new["metadata"]["managedFields"][-1].get("subresource", "") == (
            subresource if expect else "")


@pytest.mark.parametrize(
    ("sent", "expect"),
    [
        pytest.param(None, ["creator"], id="absent-keeps-live"),
        pytest.param([{}], [], id="single-empty-entry-resets"),
        pytest.param([], [], id="empty-list-resets"),
        pytest.param([{"manager": "x", "operation": "Apply", "apiVersion": "v1",
                       "fieldsType": "", "fieldsV1": {}}], ["creator"], id="invalid-falls-back"),
        pytest.param([{"manager": "renamed", "operation": "Update", "apiVersion": "v1",
                       "time": T0, "fieldsType": "FieldsV1",
                       "fieldsV1": {"f:data": {".": {}, "f:a": {}}}}], ["renamed"],
                     id="valid-is-honoured"),
    ],
)
def test_client_sent_managed_fields(configmap: Node, sent: Any, expect: list[str]) -> None:
    """Clients may rewrite or clear managedFields; garbage is ignored."""
    old: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"a": "1"}}
    fm.update_managed_fields(None, old, manager="creator", schema=configmap, now=T0)
    old = stored(old)
    new = copy.deepcopy(old)
    if sent is None:
        del new["metadata"]["managedFields"]
    else:
        new["metadata"]["managedFields"] = sent
    fm.update_managed_fields(old, new, manager="editor", schema=configmap, now=T1)
    assert [m for m, _, _ in entries(new)] == expect
    if not expect:
        # once cleared, later writes are not tracked either
        newer = copy.deepcopy(new)
        newer["data"]["a"] = "2"
        fm.update_managed_fields(stored(new), newer, manager="editor", schema=configmap,
                                 now=T2)
        assert "managedFields" not in newer["metadata"]


def test_update_managers_are_capped(configmap: Node) -> None:
    """Beyond ten Update entries the oldest fold into "ancient-changes"."""
    obj: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {}}
    fm.update_managed_fields(None, obj, manager="m00", schema=configmap, now=T0)
    for i in range(1, 12):
        new = copy.deepcopy(stored(obj))
        new["data"][f"k{i:02}"] = "v"
        fm.update_managed_fields(stored(obj), new, manager=f"m{i:02}", schema=configmap,
                                 now=fm.managed_time(1714557600 + i))
        obj = new
    managers = [m for m, _, _ in entries(obj)]
    assert len(managers) == 10
    assert managers[0] == "ancient-changes"
    assert owned(obj, "ancient-changes", "Update") == {
        "f:data": {".": {}, "f:k01": {}, "f:k02": {}}}


# -- server-side apply ------------------------------------------------------------------


def test_apply_creates(deployment: Node) -> None:
    """Apply on a missing object returns the configuration and records an Apply entry."""
    cfg = deploy(replicas=2)
    out = fm.apply(None, cfg, manager="kubectl", force=False, schema=deployment, now=T0)
    assert {k: v for k, v in out.items() if k != "metadata"} == \
        {k: v for k, v in cfg.items() if k != "metadata"}
    assert out["metadata"]["managedFields"] == [{
        "manager": "kubectl",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": fm.fields_v1(cfg, deployment),
    }]
    assert cfg["metadata"].get("managedFields") is None  # the input is not touched


def test_reapply_with_a_new_image(deployment: Node) -> None:
    """The same manager re-applying a changed value has no conflict with itself."""
    live = stored(fm.apply(None, deploy(), manager="kubectl", force=False,
                           schema=deployment, now=T0))
    out = fm.apply(live, deploy(image="nginx:1.27"), manager="kubectl", force=False,
                   schema=deployment, now=T1)
    assert out["spec"]["template"]["spec"]["containers"] == [
        {"name": "nginx", "image": "nginx:1.27"}]
    assert out["metadata"]["managedFields"][0]["time"] == T1
    assert out["metadata"]["uid"] == "0b5f" and out["metadata"]["resourceVersion"] == "7"
    # nothing changes: the entry keeps its time
    again = fm.apply(stored(out), deploy(image="nginx:1.27"), manager="kubectl",
                     force=False, schema=deployment, now=T2)
    assert again["metadata"]["managedFields"][0]["time"] == T1


def created_by_update(deployment: Node, manager: str = "kubectl-client-side-apply") -> Obj:
    obj = deploy(replicas=1)
    fm.update_managed_fields(None, obj, manager=manager, schema=deployment, now=T0)
    return stored(obj)


@pytest.mark.parametrize(
    ("cfg", "conflicts", "message"),
    [
        pytest.param(
            {"spec": {"replicas": 5}},
            [("kubectl-client-side-apply", ".spec.replicas")],
            'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" '
            "using apps/v1: .spec.replicas",
            id="one-field"),
        pytest.param(
            {"spec": {"replicas": 5, "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:2"}]}}}},
            [("kubectl-client-side-apply", ".spec.replicas"),
             ("kubectl-client-side-apply",
              '.spec.template.spec.containers[name="nginx"].image')],
            'Apply failed with 2 conflicts: conflicts with "kubectl-client-side-apply" '
            "using apps/v1:\n- .spec.replicas\n"
            '- .spec.template.spec.containers[name="nginx"].image',
            id="two-fields"),
        pytest.param({"spec": {"replicas": 1}}, [], "", id="same-value-is-shared"),
    ],
)
def test_apply_conflicts_with_an_updater(deployment: Node, cfg: Obj,
                                         conflicts: list[tuple[str, str]],
                                         message: str) -> None:
    """Changing a value another manager owns is a 409 listing each field."""
    live = created_by_update(deployment)
    applied = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default"}, **cfg}
    if not conflicts:
        out = fm.apply(live, applied, manager="ssa", force=False, schema=deployment, now=T1)
        assert owned(out, "ssa", "Apply") == {"f:spec": {"f:replicas": {}}}
        assert "f:replicas" in owned(out, "kubectl-client-side-apply", "Update")["f:spec"]
        return
    with pytest.raises(fm.ApplyConflict) as info:
        fm.apply(live, applied, manager="ssa", force=False, schema=deployment, now=T1)
    assert info.value.conflicts == conflicts
    assert info.value.message == message
    status = info.value.status_error().status()
    assert status["code"] == 409 and status["reason"] == "Conflict"
    assert status["details"]["causes"][0] == {
        "reason": "FieldManagerConflict",
        "message": 'conflict with "kubectl-client-side-apply" using apps/v1',
        "field": ".spec.replicas"}


def test_force_moves_ownership(deployment: Node) -> None:
    """With force the applier takes the field and the other manager loses it."""
    live = created_by_update(deployment)
    applied = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 5}}
    out = fm.apply(live, applied, manager="ssa", force=True, schema=deployment, now=T1)
    assert out["spec"]["replicas"] == 5
    assert owned(out, "ssa", "Apply") == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in owned(out, "kubectl-client-side-apply", "Update")["f:spec"]
    assert [(m, op) for m, op, _ in entries(out)] == [
        ("ssa", "Apply"), ("kubectl-client-side-apply", "Update")]


@pytest.mark.parametrize(
    ("co_owner", "kept"),
    [
        pytest.param(None, False, id="exclusively-owned-is-removed"),
        pytest.param("other-applier", True, id="shared-with-an-applier-is-kept"),
    ],
)
def test_apply_drops_omitted_fields(deployment: Node, co_owner: str | None, kept: bool) -> None:
    """Fields this manager applied before and omits now go, unless someone else owns them."""
    first = deploy(replicas=3)
    first["spec"]["template"]["spec"]["hostname"] = "h"
    live = stored(fm.apply(None, first, manager="a", force=False, schema=deployment, now=T0))
    if co_owner:
        live = stored(fm.apply(live, first, manager=co_owner, force=False,
                               schema=deployment, now=T1))
    out = fm.apply(live, deploy(replicas=None), manager="a", force=False, schema=deployment,
                   now=T2)
    assert ("replicas" in out["spec"]) is kept
    assert ("hostname" in out["spec"]["template"]["spec"]) is kept
    assert "f:replicas" not in owned(out, "a", "Apply")["f:spec"]


def test_apply_removes_list_items_and_empty_structs(compiler: Compiler) -> None:
    """Dropped list-map items and empty marker structs ({}) are removed."""
    pod = compiler.definition("io.k8s.api.core.v1.Pod")
    cfg: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "a", "image": "i", "ports": [
                    {"containerPort": 80}, {"containerPort": 81}]}],
                         "volumes": [{"name": "cache", "emptyDir": {}}]}}
    live = stored(fm.apply(None, cfg, manager="a", force=False, schema=pod, now=T0))
    assert owned(live, "a", "Apply")["f:spec"]["f:volumes"][k(name="cache")]["f:emptyDir"] == {}
    for port in live["spec"]["containers"][0]["ports"]:
        port["protocol"] = "TCP"  # what defaulting adds; the key default matches it
    cfg2 = copy.deepcopy(cfg)
    del cfg2["spec"]["containers"][0]["ports"][1]
    del cfg2["spec"]["volumes"][0]["emptyDir"]
    out = fm.apply(live, cfg2, manager="a", force=False, schema=pod, now=T1)
    assert out["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert out["spec"]["volumes"] == [{"name": "cache"}]


def test_update_takes_ownership_from_an_applier(deployment: Node) -> None:
    """A later update of a field moves it from the applier, who then cannot prune it."""
    live = stored(fm.apply(None, deploy(replicas=3), manager="a", force=False,
                           schema=deployment, now=T0))
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 4
    fm.update_managed_fields(live, new, manager="hpa", schema=deployment, now=T1)
    assert "f:replicas" not in owned(new, "a", "Apply")["f:spec"]
    assert owned(new, "hpa", "Update") == {"f:spec": {"f:replicas": {}}}
    out = fm.apply(stored(new), deploy(replicas=None), manager="a", force=False,
                   schema=deployment, now=T2)
    assert out["spec"]["replicas"] == 4


def test_first_apply_to_an_untracked_object(configmap: Node) -> None:
    """Fields of an object without managedFields belong to "before-first-apply"."""
    live = stored({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                   "data": {"a": "1", "b": "2"}})
    cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
           "data": {"a": "changed"}}
    with pytest.raises(fm.ApplyConflict) as info:
        fm.apply(live, cfg, manager="helm", force=False, schema=configmap, now=T1)
    assert info.value.message == ('Apply failed with 1 conflict: conflict with '
                                  '"before-first-apply" using v1: .data.a')
    out = fm.apply(live, cfg, manager="helm", force=True, schema=configmap, now=T1)
    assert entries(out) == [
        ("helm", "Apply", {"f:data": {"f:a": {}}}),
        ("before-first-apply", "Update", {"f:data": {".": {}, "f:b": {}}}),
    ]


def test_kubectl_upgrades_from_client_side_apply(deployment: Node) -> None:
    """kubectl may take fields whose live value still matches its last-applied annotation."""
    last = deploy(replicas=3)
    live = deploy(replicas=10)
    live["metadata"]["annotations"] = {fm.LAST_APPLIED: json.dumps(last)}
    fm.update_managed_fields(None, live, manager="kubectl-client-side-apply",
                             schema=deployment, now=T0)
    live = stored(live)
    with pytest.raises(fm.ApplyConflict) as info:  # replicas drifted from last-applied
        fm.apply(live, deploy(replicas=3), manager="kubectl", force=False,
                 schema=deployment, now=T1)
    assert [p for _, p in info.value.conflicts] == [".spec.replicas"]
    out = fm.apply(live, deploy(replicas=None, image="nginx:2"), manager="kubectl",
                   force=False, schema=deployment, now=T1)
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    assert out["spec"]["replicas"] == 10
    synced = json.loads(out["metadata"]["annotations"][fm.LAST_APPLIED])
    assert synced == deploy(replicas=None, image="nginx:2")
    assert out["metadata"]["annotations"][fm.LAST_APPLIED].endswith("}\n")


def test_apply_keeps_duplicates_semantics_of_upstream(daemonset: Node) -> None:
    """Duplicate list keys are owned atomically, as in upstream's integration test."""
    obj: Obj = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "ds", "labels": {"app": "x"}},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [
                {"name": "A", "value": "1"}, {"name": "P", "value": "1"},
                {"name": "P", "value": "2"}]}]}}}}
    fm.update_managed_fields(None, obj, manager="create", schema=daemonset, now=T0)
    env = owned(obj, "create", "Update")["f:spec"]["f:template"]["f:spec"]["f:containers"][
        k(name="c")]["f:env"]
    assert env[k(name="P")] == {}
    cfg = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"},
           "spec": {"template": {"spec": {"containers": [
               {"name": "c", "image": "i", "env": [{"name": "P", "value": "3"}]}]}}}}
    with pytest.raises(fm.ApplyConflict):
        fm.apply(stored(obj), cfg, manager="a", force=False, schema=daemonset, now=T1)
    out = fm.apply(stored(obj), cfg, manager="a", force=True, schema=daemonset, now=T1)
    assert out["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "1"}, {"name": "P", "value": "3"}]


@pytest.mark.parametrize(
    ("cfg", "status", "message"),
    [
        pytest.param({"metadata": {"name": "web", "managedFields": []}}, 400,
                     "metadata.managedFields must be nil", id="managed-fields-set"),
        pytest.param({"metadata": {"name": "web"}, "spec": {"template": {"spec": {
            "containers": [{"name": "a"}, {"name": "a"}]}}}}, 500,
            "failed to create typed patch object (/web; apps/v1, Kind=Deployment): "
            '.spec.template.spec.containers: duplicate entries for key [name="a"]',
            id="duplicate-key"),
        pytest.param({"metadata": {"name": "web"}, "spec": {"template": {"spec": {
            "containers": [{"image": "a"}]}}}}, 500,
            "failed to create typed patch object (/web; apps/v1, Kind=Deployment): "
            ".spec.template.spec.containers: element 0: associative list with keys has an "
            'element that omits key field "name" (and doesn\'t have default value)',
            id="missing-key"),
    ],
)
def test_apply_rejects_malformed_configurations(deployment: Node, cfg: Obj, status: int,
                                                message: str) -> None:
    """Configurations upstream cannot type are refused with its messages."""
    applied = {"apiVersion": "apps/v1", "kind": "Deployment", **cfg}
    with pytest.raises(StatusError) as info:
        fm.apply(None, applied, manager="a", force=False, schema=deployment, now=T0)
    assert (info.value.code, info.value.message) == (status, message)


# -- custom resources ----------------------------------------------------------------------


def test_custom_resource_with_preserved_unknown_fields(crd: Node) -> None:
    """Unknown fields are maps owned per key; their lists are atomic."""
    obj: Obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                "spec": {"replicas": 1, "tags": ["a", "b"],
                         "config": {"nested": {"x": 1}, "list": [1, 2]}}}
    created = copy.deepcopy(obj)
    fm.update_managed_fields(None, created, manager="kubectl-create", schema=crd, now=T0)
    assert entries(created) == [("kubectl-create", "Update", {"f:spec": {
        ".": {},
        "f:config": {".": {}, "f:list": {}, "f:nested": {".": {}, "f:x": {}}},
        "f:replicas": {},
        "f:tags": {},
    }})]
    applied = fm.apply(None, obj, manager="ssa", force=False, schema=crd, now=T0)
    assert owned(applied, "ssa", "Apply") == {"f:spec": {
        "f:config": {"f:list": {}, "f:nested": {".": {}, "f:x": {}}},
        "f:replicas": {},
        "f:tags": {},
    }}
    cfg = copy.deepcopy(obj)
    cfg["spec"]["config"] = {"nested": {"y": 2}, "list": [3]}
    out = fm.apply(stored(applied), cfg, manager="ssa", force=False, schema=crd, now=T1)
    assert out["spec"]["config"] == {"nested": {"y": 2}, "list": [3]}


# -- parity with upstream's integration test (TestDuplicatesInAssociativeLists) -----------


def _ds_container(ports: list[tuple[str, int]], env: list[tuple[str, str]], *,
                  defaults: bool) -> Obj:
    c: Obj = {"name": "nginx", "image": "nginx",
              "ports": [{"name": n, "containerPort": p, **({"protocol": "TCP"} if defaults
                                                            else {})} for n, p in ports],
              "env": [{"name": n, "value": v} for n, v in env]}
    if defaults:
        c.update(resources={}, terminationMessagePath="/dev/termination-log",
                 terminationMessagePolicy="File", imagePullPolicy="Always")
    return c


def _ds(container: Obj, *, generation: str | None = None) -> Obj:
    obj: Obj = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "example-daemonset", "namespace": "default",
                     "labels": {"app": "example"}},
        "spec": {
            "selector": {"matchLabels": {"app": "example"}},
            "template": {"metadata": {"labels": {"app": "example"}},
                         "spec": {"containers": [container]}},
        },
    }
    if generation is not None:  # what the server adds and defaults on its own
        obj["metadata"]["annotations"] = {"deprecated.daemonset.template.generation":
                                          generation}
        obj["spec"]["template"]["spec"].update(
            restartPolicy="Always", terminationGracePeriodSeconds=30,
            dnsPolicy="ClusterFirst", securityContext={}, schedulerName="default-scheduler")
        obj["spec"].update(revisionHistoryLimit=10, updateStrategy={
            "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    return obj


def test_upstream_duplicates_scenario(daemonset: Node) -> None:
    """Create, additive apply, update of duplicates, forced apply: entries as upstream."""
    created = _ds(_ds_container([("port0", 1), ("port1", 80), ("port2", 80)],
                                [("ENV0", "/env0value"), ("PATH", "/bin"),
                                 ("PATH", "$PATH:/usr/bin")], defaults=True), generation="1")
    fm.update_managed_fields(None, created, manager="create", schema=daemonset, now=T0)
    applied = _ds(_ds_container([("port3", 443)], [("HOME", "/usr/home")], defaults=False))
    del applied["spec"]["template"]["metadata"]
    out = fm.apply(stored(created), applied, manager="apply", force=False, schema=daemonset,
                   now=T1)
    for port in out["spec"]["template"]["spec"]["containers"][0]["ports"]:
        port.setdefault("protocol", "TCP")
    updated = copy.deepcopy(out)
    del updated["metadata"]["managedFields"]
    updated["metadata"]["annotations"]["deprecated.daemonset.template.generation"] = "2"
    container = updated["spec"]["template"]["spec"]["containers"][0]
    container.update(_ds_container(
        [("port0", 1), ("port3", 443), ("port4", 80), ("port5", 80)],
        [("ENV0", "/env0value"), ("PATH", "/bin"), ("PATH", "$PATH:/usr/bin:/usr/local/bin"),
         ("HOME", "/usr/home")], defaults=True))
    fm.update_managed_fields(stored(out), updated, manager="update", schema=daemonset, now=T2)
    forced = _ds(_ds_container([("port80", 80)], [("PATH", "/bin:/usr/bin:/usr/local/bin")],
                               defaults=False))
    del forced["spec"]["template"]["metadata"]
    final = fm.apply(stored(updated), forced, manager="apply", force=True, schema=daemonset,
                     now=T3)

    spec = final["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in spec["env"]] == ["ENV0", "PATH"]
    assert [p["containerPort"] for p in spec["ports"]] == [1, 80]
    nginx = k(name="nginx")
    assert entries(final) == [
        ("apply", "Apply", {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:selector": {}, "f:template": {"f:spec": {"f:containers": {nginx: {
                ".": {},
                "f:env": {k(name="PATH"): {".": {}, "f:name": {}, "f:value": {}}},
                "f:image": {},
                "f:name": {},
                "f:ports": {k(containerPort=80, protocol="TCP"): {
                    ".": {}, "f:containerPort": {}, "f:name": {}}},
            }}}}}}),
        ("create", "Update", {
            "f:metadata": {"f:annotations": {}, "f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:revisionHistoryLimit": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {
                        "f:containers": {nginx: {
                            ".": {},
                            "f:env": {".": {}, k(name="ENV0"): {
                                ".": {}, "f:name": {}, "f:value": {}}},
                            "f:image": {},
                            "f:imagePullPolicy": {},
                            "f:name": {},
                            "f:ports": {".": {}, k(containerPort=1, protocol="TCP"): {
                                ".": {}, "f:containerPort": {}, "f:name": {},
                                "f:protocol": {}}},
                            "f:resources": {},
                            "f:terminationMessagePath": {},
                            "f:terminationMessagePolicy": {},
                        }},
                        "f:dnsPolicy": {},
                        "f:restartPolicy": {},
                        "f:schedulerName": {},
                        "f:securityContext": {},
                        "f:terminationGracePeriodSeconds": {},
                    },
                },
                "f:updateStrategy": {
                    "f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}},
                    "f:type": {},
                },
            },
        }),
        ("update", "Update", {
            "f:metadata": {"f:annotations": {"f:deprecated.daemonset.template.generation": {}}},
        }),
    ]
    assert json.dumps(owned(final, "create", "Update")).startswith(
        '{"f:metadata": {"f:annotations": {}, "f:labels": {".": {}')


def test_apply_through_the_status_subresource(compiler: Compiler) -> None:
    """An apply to /status owns only status and is recorded with its subresource."""
    pod = compiler.definition("io.k8s.api.core.v1.Pod")
    live = stored(fm.apply(None, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}},
                           manager="a", force=False, schema=pod, now=T0))
    cfg = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"nodeName": "ignored"}, "status": {"phase": "Running"}}
    out = fm.apply(live, cfg, manager="kubelet", force=False, schema=pod, now=T1,
                   subresource="status")
    assert out["status"] == {"phase": "Running"}
    last = out["metadata"]["managedFields"][-1]
    assert (last["manager"], last["subresource"], last["fieldsV1"]) == (
        "kubelet", "status", {"f:status": {"f:phase": {}}})
