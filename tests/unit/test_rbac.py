"""RBAC evaluation (kybernetes.api.rbac) with upstream's semantics."""

from __future__ import annotations

from typing import Any

from kybernetes.api import rbac
from kybernetes.api.rbac import Attributes, Snapshot

Obj = dict[str, Any]


def binding(kind: str, name: str, role_kind: str, role: str, *subjects: Obj,
            namespace: str = "") -> Obj:
    md: Obj = {"name": name}
    if namespace:
        md["namespace"] = namespace
    return {"kind": kind, "metadata": md, "roleRef": {"kind": role_kind, "name": role},
            "subjects": list(subjects)}


def user(name: str) -> Obj:
    return {"kind": "User", "name": name}


def snapshot(*objs: Obj) -> Snapshot:
    by_kind: dict[str, list[Obj]] = {"ClusterRole": [], "Role": [], "ClusterRoleBinding": [],
                                     "RoleBinding": []}
    for o in [*rbac.default_cluster_roles(), *rbac.default_cluster_role_bindings(), *objs]:
        by_kind[o["kind"]].append(o)
    return Snapshot(by_kind["ClusterRole"], by_kind["Role"], by_kind["ClusterRoleBinding"],
                    by_kind["RoleBinding"])


def can(s: Snapshot, who: str, verb: str, resource: str, namespace: str = "", *,
        group: str = "", sub: str = "", name: str = "",
        groups: tuple[str, ...] = ("system:authenticated",)) -> bool:
    return s.allows(Attributes(who, groups, verb, namespace=namespace, api_group=group,
                               resource=resource, subresource=sub, name=name))


def test_view_in_one_namespace_reads_there_and_nowhere_else() -> None:
    s = snapshot(binding("RoleBinding", "alice-view", "ClusterRole", "view", user("alice"),
                         namespace="research"))
    assert can(s, "alice", "list", "pods", "research")
    assert can(s, "alice", "get", "deployments", "research", group="apps")
    assert can(s, "alice", "get", "pods", "research", sub="log")
    assert not can(s, "alice", "delete", "pods", "research")
    assert not can(s, "alice", "list", "secrets", "research"), "view does not read secrets"
    assert not can(s, "alice", "list", "pods", "serving")
    assert not can(s, "alice", "list", "pods"), "a RoleBinding grants nothing cluster-wide"
    assert not can(s, "bob", "list", "pods", "research")
    assert can(s, "alice", "get", "namespaces", "research", name="research")


def test_edit_and_admin_aggregate_what_they_include() -> None:
    s = snapshot(binding("RoleBinding", "e", "ClusterRole", "edit", user("ed"),
                         namespace="ns"),
                 binding("RoleBinding", "a", "ClusterRole", "admin", user("ad"),
                         namespace="ns"))
    assert can(s, "ed", "delete", "pods", "ns") and can(s, "ed", "get", "secrets", "ns")
    assert can(s, "ed", "patch", "deployments", "ns", group="apps", sub="scale")
    assert can(s, "ed", "list", "pytorchjobs", "ns", group="kubeflow.org")
    assert not can(s, "ed", "create", "rolebindings", "ns", group=rbac.GROUP)
    assert can(s, "ad", "create", "rolebindings", "ns", group=rbac.GROUP)
    assert can(s, "ad", "list", "pods", "ns"), "admin includes edit includes view"


def test_a_crd_role_aggregated_into_view() -> None:
    crd_role = {"kind": "ClusterRole", "metadata": {
        "name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view":
                                           "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"],
                   "verbs": ["get", "list"]}]}
    s = snapshot(crd_role, binding("ClusterRoleBinding", "v", "ClusterRole", "view",
                                   user("vic")))
    assert can(s, "vic", "list", "widgets", "any", group="example.com")
    assert can(s, "vic", "list", "widgets", group="example.com")


def test_rule_matching() -> None:
    role = {"kind": "Role", "metadata": {"name": "r", "namespace": "ns"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"],
         "verbs": ["get", "update"]},
        {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments/*"], "verbs": ["*"]}]}
    s = snapshot(role, binding("RoleBinding", "b", "Role", "r", user("u"), namespace="ns"))
    assert can(s, "u", "get", "configmaps", "ns", name="cfg")
    assert not can(s, "u", "get", "configmaps", "ns", name="other")
    assert not can(s, "u", "list", "configmaps", "ns"), "resourceNames: named requests only"
    assert can(s, "u", "get", "pods", "ns", sub="status")
    assert can(s, "u", "get", "jobs", "ns", group="batch", sub="status")
    assert not can(s, "u", "get", "pods", "ns")
    # upstream knows "*/sub" but not "resource/*": the rule is for a subresource named "*"
    assert not can(s, "u", "update", "deployments", "ns", group="apps", sub="scale")
    assert not can(s, "u", "update", "deployments", "ns", group="apps")
    assert not can(s, "u", "get", "configmaps", "other", name="cfg"), "a Role stays home"


def test_subjects_groups_and_service_accounts() -> None:
    s = snapshot(
        binding("RoleBinding", "g", "ClusterRole", "view", {"kind": "Group", "name": "ml"},
                namespace="ns"),
        binding("RoleBinding", "sa", "ClusterRole", "edit",
                {"kind": "ServiceAccount", "name": "trainer"}, namespace="ns"))
    assert can(s, "x", "list", "pods", "ns", groups=("ml", "system:authenticated"))
    assert can(s, "system:serviceaccount:ns:trainer", "create", "pods", "ns")
    assert not can(s, "system:serviceaccount:other:trainer", "create", "pods", "ns")
    assert can(s, "root", "delete", "nodes", groups=("system:masters",))


def test_everyone_authenticated_may_discover_and_review_themselves() -> None:
    s = snapshot()
    for path in ("/api", "/apis/apps/v1", "/version", "/openapi/v3"):
        assert s.allows(Attributes("anyone", ("system:authenticated",), "get", path=path,
                                   resource_request=False))
    assert not s.allows(Attributes("anyone", ("system:authenticated",), "get",
                                   path="/metrics", resource_request=False))
    assert can(s, "anyone", "create", "selfsubjectaccessreviews",
               group="authorization.k8s.io")
    assert not can(s, "anyone", "list", "namespaces")


def test_escalation_check_names_what_is_not_held() -> None:
    s = snapshot(binding("RoleBinding", "e", "ClusterRole", "edit", user("ed"),
                         namespace="ns"))
    mine = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]}]
    more = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    assert s.covers("ed", ("system:authenticated",), "ns", mine) == []
    assert s.covers("ed", ("system:authenticated",), "ns", more) == more
    assert s.covers("root", ("system:masters",), "", more) == []


def test_forbidden_messages_read_as_upstream() -> None:
    a = Attributes("alice", (), "list", namespace="team", resource="pods")
    assert rbac.forbidden_message(a) == ('User "alice" cannot list resource "pods" in API '
                                         'group "" in the namespace "team"')
    a = Attributes("alice", (), "patch", api_group="apps", resource="deployments",
                   subresource="scale")
    assert rbac.forbidden_message(a).endswith('"deployments/scale" in API group "apps" at '
                                              'the cluster scope')
    a = Attributes("alice", (), "get", path="/metrics", resource_request=False)
    assert rbac.forbidden_message(a) == 'User "alice" cannot get path "/metrics"'
