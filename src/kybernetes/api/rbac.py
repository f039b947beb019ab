"""Role-based access control: whether roles and bindings allow a request.

Upstream's semantics (``plugin/pkg/auth/authorizer/rbac``): a request is allowed when a
rule of a role bound to the user (by name, by one of its groups, or as a service
account) covers it. ClusterRoleBindings grant their ClusterRole everywhere; a
RoleBinding grants its Role or ClusterRole only in its own namespace. Nothing denies:
without a covering rule the answer is no. A ClusterRole with an ``aggregationRule`` also
holds the rules of every ClusterRole its selectors match (``admin``, ``edit`` and
``view`` grow that way when a CRD's roles carry ``aggregate-to-*`` labels).

    rbac = Snapshot(cluster_roles, roles, cluster_bindings, bindings)
    rbac.allows(Attributes("alice", ("ml-team",), "list", namespace="research",
                           resource="pods"))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kybernetes.api import certificates, nodeauth
from kybernetes.api.selectors import SelectorError, from_label_selector

Obj = dict[str, Any]
GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do (upstream's ``authorizer.Attributes``)."""

    user: str
    groups: tuple[str, ...]
    verb: str
    namespace: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""
    """For requests that are not for a resource (``/version``, ``/apis``)."""
    resource_request: bool = True


def _has(values: Iterable[str] | None, want: str) -> bool:
    vals = values or ()
    return "*" in vals or want in vals


def resource_matches(rule_resources: Iterable[str] | None, resource: str,
                     subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule_resources or ():
        if r in ("*", combined):
            return True
        if subresource and r == "*/" + subresource:
            return True
    return False


def url_matches(rule_urls: Iterable[str] | None, path: str) -> bool:
    for u in rule_urls or ():
        if u == "*" or u == path or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(rule: Obj, a: Attributes) -> bool:
    if not _has(rule.get("verbs"), a.verb):
        return False
    if not a.resource_request:
        return url_matches(rule.get("nonResourceURLs"), a.path)
    if not _has(rule.get("apiGroups"), a.api_group):
        return False
    if not resource_matches(rule.get("resources"), a.resource, a.subresource):
        return False
    names = rule.get("resourceNames")
    return not names or a.name in names


def subject_matches(subject: Obj, user: str, groups: tuple[str, ...], binding_ns: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user)
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user == f"system:serviceaccount:{ns}:{name}"
    return False


def _binds(binding: Obj, user: str, groups: tuple[str, ...]) -> bool:
    ns = (binding.get("metadata") or {}).get("namespace") or ""
    return any(subject_matches(s, user, groups, ns) for s in binding.get("subjects") or [])


class Snapshot:
    """The cluster's roles and bindings at one moment, indexed for lookups."""

    def __init__(self, cluster_roles: Iterable[Obj], roles: Iterable[Obj],
                 cluster_bindings: Iterable[Obj], bindings: Iterable[Obj]) -> None:
        self.cluster_roles = {(r.get("metadata") or {}).get("name", ""): r
                              for r in cluster_roles}
        self.roles = {((r.get("metadata") or {}).get("namespace", ""),
                       (r.get("metadata") or {}).get("name", "")): r for r in roles}
        self.cluster_bindings = list(cluster_bindings)
        self.bindings: dict[str, list[Obj]] = {}
        for b in bindings:
            self.bindings.setdefault((b.get("metadata") or {}).get("namespace", ""),
                                     []).append(b)
        self._cluster_rules: dict[str, list[Obj]] = {}

    def cluster_role_rules(self, name: str, seen: frozenset[str] = frozenset()) -> list[Obj]:
        """A ClusterRole's rules, with those it aggregates."""
        cached = self._cluster_rules.get(name)
        if cached is not None:
            return cached
        role = self.cluster_roles.get(name)
        if role is None or name in seen:
            return []
        rules = list(role.get("rules") or [])
        for sel in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []:
            try:
                selector = from_label_selector(sel)
            except (SelectorError, TypeError, ValueError):
                continue
            for other, obj in sorted(self.cluster_roles.items()):
                labels = (obj.get("metadata") or {}).get("labels") or {}
                if other != name and selector.matches(labels):
                    for rule in self.cluster_role_rules(other, seen | {name}):
                        if rule not in rules:
                            rules.append(rule)
        if not seen:
            self._cluster_rules[name] = rules
        return rules

    def _ref_rules(self, ref: Obj, namespace: str) -> list[Obj]:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            return self.cluster_role_rules(name)
        if kind == "Role":
            role = self.roles.get((namespace, name))
            return list(role.get("rules") or []) if role else []
        return []

    def rules_for(self, user: str, groups: tuple[str, ...], namespace: str) -> Iterator[Obj]:
        """Every rule that applies to the user in ``namespace`` ("" : cluster-wide only)."""
        for b in self.cluster_bindings:
            if _binds(b, user, groups):
                yield from self._ref_rules(b.get("roleRef") or {}, "")
        if namespace:
            for b in self.bindings.get(namespace, ()):
                if _binds(b, user, groups):
                    yield from self._ref_rules(b.get("roleRef") or {}, namespace)

    def allows(self, a: Attributes) -> bool:
        if MASTERS in a.groups:
            return True
        return any(rule_allows(r, a) for r in self.rules_for(a.user, a.groups, a.namespace))

    def covers(self, user: str, groups: tuple[str, ...], namespace: str,
               rules: Iterable[Obj]) -> list[Obj]:
        """The parts of ``rules`` the user does not hold itself in ``namespace`` (empty:
        it may grant them; upstream's escalation check, rule by rule and item by item)."""
        if MASTERS in groups:
            return []
        held = list(self.rules_for(user, groups, namespace))
        missing = []
        for rule in rules:
            for a in _expand(rule, user, groups, namespace):
                if not any(rule_allows(h, a) for h in held):
                    missing.append(rule)
                    break
        return missing


def _expand(rule: Obj, user: str, groups: tuple[str, ...], namespace: str
            ) -> Iterator[Attributes]:
    """Every single permission a rule grants, as request attributes (a ``*`` stays a
    ``*``: only a rule holding ``*`` there covers it)."""
    for verb in rule.get("verbs") or []:
        for url in rule.get("nonResourceURLs") or []:
            yield Attributes(user, groups, verb, path=url, resource_request=False)
        for group in rule.get("apiGroups") or []:
            for res in rule.get("resources") or []:
                resource, _, sub = res.partition("/")
                for name in rule.get("resourceNames") or [""]:
                    yield Attributes(user, groups, verb, namespace=namespace, api_group=group,
                                     resource=resource, subresource=sub, name=name)


def forbidden_message(a: Attributes) -> str:
    """Upstream's wording of a refusal (after ``<resource> "<name>" is forbidden: ``)."""
    if not a.resource_request:
        return f'User "{a.user}" cannot {a.verb} path "{a.path}"'
    resource = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    return (f'User "{a.user}" cannot {a.verb} resource "{resource}" in API group '
            f'"{a.api_group}" {where}')


# -- the default roles (upstream's bootstrap policy, trimmed to what this server serves) ----

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_VIEW_RULES: list[Obj] = [
    {"apiGroups": [""], "verbs": _READ, "resources": [
        "configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status",
        "pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
        "services", "services/status", "bindings", "events", "limitranges",
        "namespaces/status", "pods/log", "pods/status", "replicationcontrollers/status",
        "resourcequotas", "resourcequotas/status", "namespaces"]},
    {"apiGroups": ["apps"], "verbs": _READ, "resources": [
        "controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
        "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
        "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"]},
    {"apiGroups": ["autoscaling"], "verbs": _READ,
     "resources": ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]},
    {"apiGroups": ["batch"], "verbs": _READ,
     "resources": ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]},
    {"apiGroups": ["policy"], "verbs": _READ,
     "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"]},
    {"apiGroups": ["networking.k8s.io"], "verbs": _READ,
     "resources": ["ingresses", "ingresses/status", "networkpolicies"]},
    {"apiGroups": ["discovery.k8s.io"], "verbs": _READ, "resources": ["endpointslices"]},
    {"apiGroups": ["kubeflow.org"], "verbs": _READ, "resources": [
        "pytorchjobs", "pytorchjobs/status", "tfjobs", "tfjobs/status"]},
    {"apiGroups": ["scheduling.x-k8s.io"], "verbs": _READ,
     "resources": ["podgroups", "podgroups/status"]},
    {"apiGroups": ["metrics.k8s.io"], "verbs": _READ, "resources": ["pods", "nodes"]},
]
_EDIT_RULES: list[Obj] = [
    {"apiGroups": [""], "verbs": _WRITE, "resources": [
        "pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "configmaps",
        "endpoints", "persistentvolumeclaims", "replicationcontrollers",
        "replicationcontrollers/scale", "secrets", "serviceaccounts", "services",
        "services/proxy"]},
    {"apiGroups": [""], "verbs": ["create"],
     "resources": ["pods/eviction", "serviceaccounts/token"]},
    {"apiGroups": [""], "verbs": _READ, "resources": [
        "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets",
        "services/proxy"]},
    {"apiGroups": [""], "verbs": ["impersonate"], "resources": ["serviceaccounts"]},
    {"apiGroups": ["apps"], "verbs": _WRITE, "resources": [
        "daemonsets", "deployments", "deployments/rollback", "deployments/scale",
        "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"]},
    {"apiGroups": ["autoscaling"], "verbs": _WRITE, "resources": ["horizontalpodautoscalers"]},
    {"apiGroups": ["batch"], "verbs": _WRITE, "resources": ["cronjobs", "jobs"]},
    {"apiGroups": ["policy"], "verbs": _WRITE, "resources": ["poddisruptionbudgets"]},
    {"apiGroups": ["networking.k8s.io"], "verbs": _WRITE,
     "resources": ["ingresses", "networkpolicies"]},
    {"apiGroups": ["discovery.k8s.io"], "verbs": _WRITE, "resources": ["endpointslices"]},
    {"apiGroups": ["kubeflow.org"], "verbs": _WRITE, "resources": ["pytorchjobs", "tfjobs"]},
    {"apiGroups": ["scheduling.x-k8s.io"], "verbs": _WRITE, "resources": ["podgroups"]},
]
_ADMIN_RULES: list[Obj] = [
    {"apiGroups": ["authorization.k8s.io"], "verbs": ["create"],
     "resources": ["localsubjectaccessreviews"]},
    {"apiGroups": [GROUP], "verbs": [*_READ, *_WRITE], "resources": ["rolebindings", "roles"]},
]
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                   "/openapi/*", "/readyz", "/version", "/version/"]
_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def _cluster_role(name: str, rules: list[Obj], *, labels: Obj | None = None,
                  aggregate_from: str = "") -> Obj:
    md: Obj = {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults",
                                        **(labels or {})},
               "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}
    role: Obj = {"apiVersion": f"{GROUP}/v1", "kind": "ClusterRole", "metadata": md,
                 "rules": rules}
    if aggregate_from:
        role["aggregationRule"] = {"clusterRoleSelectors": [
            {"matchLabels": {f"rbac.authorization.k8s.io/aggregate-to-{aggregate_from}":
                             "true"}}]}
    return role


def _binding(name: str, role: str, *groups: str) -> Obj:
    return {"apiVersion": f"{GROUP}/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name,
                         "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups]}


def default_cluster_roles() -> list[Obj]:
    """``cluster-admin``, ``admin``, ``edit``, ``view`` (aggregated as upstream's are) and
    the roles every authenticated user holds (discovery, self reviews, public info)."""
    return [
        _cluster_role("cluster-admin", [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        _cluster_role("admin", [], aggregate_from="admin"),
        _cluster_role("edit", [], aggregate_from="edit",
                      labels={"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
        _cluster_role("view", [], aggregate_from="view",
                      labels={"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        _cluster_role("system:aggregate-to-admin", _ADMIN_RULES,
                      labels={"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
        _cluster_role("system:aggregate-to-edit", _EDIT_RULES,
                      labels={"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        _cluster_role("system:aggregate-to-view", _VIEW_RULES,
                      labels={"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
        _cluster_role("system:discovery", [{"nonResourceURLs": _DISCOVERY_URLS,
                                            "verbs": ["get"]}]),
        _cluster_role("system:basic-user", [
            {"apiGroups": ["authorization.k8s.io"], "verbs": ["create"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
            {"apiGroups": ["authentication.k8s.io"], "verbs": ["create"],
             "resources": ["selfsubjectreviews"]}]),
        _cluster_role("system:public-info-viewer", [{"nonResourceURLs": _PUBLIC_URLS,
                                                     "verbs": ["get"]}]),
        # TLS bootstrapping: a join token may ask for a node client certificate, which is
        # approved at once; a node may renew its own (upstream's and kubeadm's roles)
        _cluster_role("system:node-bootstrapper", [
            {"apiGroups": [certificates.GROUP], "resources": ["certificatesigningrequests"],
             "verbs": ["create", "get", "list", "watch"]}]),
        _cluster_role(NODE_CLIENT_ROLE, [
            {"apiGroups": [certificates.GROUP],
             "resources": ["certificatesigningrequests/nodeclient"], "verbs": ["create"]}]),
        _cluster_role(SELF_NODE_CLIENT_ROLE, [
            {"apiGroups": [certificates.GROUP],
             "resources": ["certificatesigningrequests/selfnodeclient"], "verbs": ["create"]}]),
        # what the Node authorizer grants a node, for reference (bound to nobody, as
        # upstream's: binding it would let any node act on every other node's objects)
        _cluster_role("system:node", nodeauth.NODE_RULES),
    ]


NODE_CLIENT_ROLE = "system:certificates.k8s.io:certificatesigningrequests:nodeclient"
SELF_NODE_CLIENT_ROLE = "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"


def default_cluster_role_bindings() -> list[Obj]:
    return [
        _binding("cluster-admin", "cluster-admin", MASTERS),
        _binding("system:discovery", "system:discovery", AUTHENTICATED),
        _binding("system:basic-user", "system:basic-user", AUTHENTICATED),
        _binding("system:public-info-viewer", "system:public-info-viewer", AUTHENTICATED,
                 UNAUTHENTICATED),
        _binding("kyb:kubelet-bootstrap", "system:node-bootstrapper",
                 certificates.DEFAULT_NODE_TOKEN_GROUP),
        _binding("kyb:node-autoapprove-bootstrap", NODE_CLIENT_ROLE,
                 certificates.DEFAULT_NODE_TOKEN_GROUP),
        _binding("kyb:node-autoapprove-certificate-rotation", SELF_NODE_CLIENT_ROLE,
                 certificates.NODES_GROUP),
    ]
