"""Authorization: RBAC over the stored roles and bindings, for every request.

Nodes first: a node agent's credential is decided by the Node authorizer
(:mod:`.nodeauthz`), which allows or has no opinion; RBAC then decides the rest, and a
refusal carries the Node authorizer's reason.

The four RBAC kinds are mirrored in-process (:class:`~.watchcache.KindCache`, current as of
every acknowledged write) and indexed into an :class:`~kybernetes.api.rbac.Snapshot`, built
again only when one of them changed. Members of ``system:masters`` (the admin kubeconfig,
the server's own components) are allowed without a lookup, as upstream's authorizer
chain allows them first.

Also here: the request attributes of a resource request (upstream's ``RequestInfo``), the
403 Status, and ``authorization.k8s.io``'s reviews (``kubectl auth can-i``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.api import nodeauth, rbac
from kybernetes.api.errors import FieldError, StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver import codec
from kybernetes.apiserver.nodeauthz import NodeAuthorizer

if TYPE_CHECKING:
    from kybernetes.apiserver.app import Request, User
    from kybernetes.apiserver.context import Context
    from kybernetes.apiserver.watchcache import KindCache

Obj = dict[str, Any]
GROUP = "authorization.k8s.io"
REVIEW_GROUPS = (GROUP, "authentication.k8s.io")
_KINDS = (("clusterroles", False), ("roles", True), ("clusterrolebindings", False),
          ("rolebindings", True))


class Authorizer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._caches: list[KindCache] | None = None
        self._snapshot: rbac.Snapshot | None = None
        self._generations: tuple[int, ...] = ()
        self.nodes = NodeAuthorizer(ctx)

    async def snapshot(self) -> rbac.Snapshot:
        if self._caches is None:
            reg = self.ctx.registry
            caches = []
            for plural, _namespaced in _KINDS:
                res = reg.get(rbac.GROUP, "v1", plural)
                assert res is not None
                caches.append(self.ctx.kind_cache(res))
            self._caches = caches
        for c in self._caches:
            await c.refresh()
        generations = tuple(c.generation for c in self._caches)
        if self._snapshot is None or generations != self._generations:
            objs = [[orjson.loads(kv.value) for kv in await c.all()] for c in self._caches]
            self._snapshot = rbac.Snapshot(*objs)
            self._generations = generations
        return self._snapshot

    async def decide(self, a: rbac.Attributes) -> tuple[bool, str]:
        """(allowed, why not): the Node authorizer, then RBAC."""
        if rbac.MASTERS in a.groups:
            return True, ""
        allowed, reason = await self.nodes.authorize(a)
        if allowed:
            return True, ""
        if (await self.snapshot()).allows(a):
            return True, ""
        return False, reason

    async def allows(self, a: rbac.Attributes) -> bool:
        return (await self.decide(a))[0]

    async def check(self, a: rbac.Attributes, res: Resource | None = None) -> None:
        """Raise the 403 upstream answers when ``a`` is not allowed."""
        allowed, reason = await self.decide(a)
        if not allowed:
            raise forbidden(a, res, reason)


def attributes(user: User, verb: str, *, namespace: str = "", group: str = "",
               resource: str = "", subresource: str = "", name: str = "") -> rbac.Attributes:
    return rbac.Attributes(user.name, user.groups, verb, namespace=namespace, api_group=group,
                           resource=resource, subresource=subresource, name=name)


def request_verb(req: Request, name: str, sub: str) -> str:
    """The verb of a resource request, as upstream's RequestInfo names it."""
    m = req.method
    if m in ("GET", "HEAD"):
        if name or sub:
            return "get"
        return "watch" if req.query.get("watch") in ("1", "true", "True") else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if name or sub else "deletecollection"}.get(m, m.lower())


def forbidden(a: rbac.Attributes, res: Resource | None, reason: str = "") -> StatusError:
    message = rbac.forbidden_message(a) + (f": {reason}" if reason else "")
    if not a.resource_request:
        return StatusError(403, "Forbidden", f"forbidden: {message}")
    qualified = f"{a.resource}.{a.api_group}" if a.api_group else a.resource
    head = f'{qualified} "{a.name}" is forbidden' if a.name else f"{qualified} is forbidden"
    details: Obj = {"kind": a.resource}
    if a.name:
        details["name"] = a.name
    if a.api_group:
        details["group"] = a.api_group
    return StatusError(403, "Forbidden", f"{head}: {message}", details)


# -- authorization.k8s.io ------------------------------------------------------------------


def _review_attributes(spec: Obj, user: str, groups: tuple[str, ...]) -> rbac.Attributes:
    ra = spec.get("resourceAttributes")
    if isinstance(ra, dict):
        return rbac.Attributes(user, groups, str(ra.get("verb") or ""),
                               namespace=str(ra.get("namespace") or ""),
                               api_group=str(ra.get("group") or ""),
                               resource=str(ra.get("resource") or ""),
                               subresource=str(ra.get("subresource") or ""),
                               name=str(ra.get("name") or ""))
    nra = spec.get("nonResourceAttributes") or {}
    return rbac.Attributes(user, groups, str(nra.get("verb") or ""),
                           path=str(nra.get("path") or ""), resource_request=False)


async def review(authz: Authorizer, req: Request, res: Resource, ns: str) -> Obj:
    """The answered review of a POST to ``authorization.k8s.io/v1``'s review kinds."""
    assert req.user is not None
    body = codec.decode_object(req.header(b"content-type"), await req.body())
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    kind = res.kind
    if kind == "SelfSubjectReview":  # authentication.k8s.io: kubectl auth whoami
        info: Obj = {"username": req.user.name, "groups": list(req.user.groups)}
        if req.user.uid:
            info["uid"] = req.user.uid
        return {"kind": kind, "apiVersion": res.api_version,
                "metadata": body.get("metadata") or {}, "status": {"userInfo": info}}
    if kind == "SelfSubjectRulesReview":
        namespace = str(spec.get("namespace") or "")
        snap = await authz.snapshot()
        rules = ([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                  {"nonResourceURLs": ["*"], "verbs": ["*"]}]
                 if rbac.MASTERS in req.user.groups
                 else list(snap.rules_for(req.user.name, req.user.groups, namespace)))
        if nodeauth.node_name(req.user.name, req.user.groups) is not None:
            rules += nodeauth.NODE_RULES
        status: Obj = {
            "resourceRules": [{k: r[k] for k in ("verbs", "apiGroups", "resources",
                                                   "resourceNames") if r.get(k)}
                              for r in rules if not r.get("nonResourceURLs")],
            "nonResourceRules": [{"verbs": r.get("verbs") or [],
                                  "nonResourceURLs": r["nonResourceURLs"]}
                                 for r in rules if r.get("nonResourceURLs")],
            "incomplete": False}
    else:
        if kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
            user = str(spec.get("user") or "")
            groups = tuple(str(g) for g in spec.get("groups") or ())
        else:
            user, groups = req.user.name, req.user.groups
        if not isinstance(spec.get("resourceAttributes"), dict) and \
                not isinstance(spec.get("nonResourceAttributes"), dict):
            raise StatusError.invalid(kind, "", [FieldError.invalid(
                "spec.resourceAttributes", None, "exactly one of nonResourceAttributes or "
                "resourceAttributes must be specified")], res.group)
        a = _review_attributes(spec, user, groups)
        if kind == "LocalSubjectAccessReview":
            a = rbac.Attributes(a.user, a.groups, a.verb, namespace=ns,
                                api_group=a.api_group, resource=a.resource,
                                subresource=a.subresource, name=a.name)
        allowed, reason = await authz.decide(a)
        status = {"allowed": allowed}
        if allowed and rbac.MASTERS not in a.groups and not (await authz.nodes.authorize(a))[0]:
            status["reason"] = "allowed by RBAC"
        elif reason:
            status["reason"] = reason
    return {"kind": kind, "apiVersion": res.api_version,
            "metadata": body.get("metadata") or {}, "spec": spec, "status": status}


# -- escalation prevention -------------------------------------------------------------------


def _rule_text(rule: Obj) -> str:
    parts = []
    for key, name in (("apiGroups", "APIGroups"), ("resources", "Resources"),
                      ("resourceNames", "ResourceNames"), ("nonResourceURLs", "NonResourceURLs"),
                      ("verbs", "Verbs")):
        if rule.get(key):
            parts.append(f"{name}:[{' '.join(orjson.dumps(v).decode() for v in rule[key])}]")
    return "{" + ", ".join(parts) + "}"


async def check_escalation(authorizer: Authorizer, user: User, res: Resource, obj: Obj) -> None:
    """Upstream's escalation prevention: a user may create or update a role only with
    permissions it holds itself (or ``escalate`` on roles), and bind a role only if it
    holds the role's permissions (or ``bind`` on that role)."""
    if rbac.MASTERS in user.groups:
        return
    md = obj.get("metadata") or {}
    ns, name = md.get("namespace") or "", md.get("name") or ""
    snap = await authorizer.snapshot()
    if res.kind in ("Role", "ClusterRole"):
        special = rbac.Attributes(user.name, user.groups, "escalate", namespace=ns,
                                  api_group=rbac.GROUP, resource=res.plural, name=name)
        rules = list(obj.get("rules") or [])
    else:
        ref = obj.get("roleRef") or {}
        role_plural = "roles" if ref.get("kind") == "Role" else "clusterroles"
        special = rbac.Attributes(user.name, user.groups, "bind", namespace=ns,
                                  api_group=rbac.GROUP, resource=role_plural,
                                  name=str(ref.get("name") or ""))
        rules = (snap.cluster_role_rules(str(ref.get("name") or ""))
                 if ref.get("kind") == "ClusterRole"
                 else list((snap.roles.get((ns, str(ref.get("name") or ""))) or {})
                           .get("rules") or []))
    if snap.allows(special):
        return
    missing = snap.covers(user.name, user.groups, ns, rules)
    if missing:
        groups = " ".join(orjson.dumps(g).decode() for g in user.groups)
        raise StatusError.forbidden(
            res.plural, name, f'user "{user.name}" (groups=[{groups}]) is attempting to '
            "grant RBAC permissions not currently held:\n" +
            "\n".join(_rule_text(r) for r in missing), res.group)
