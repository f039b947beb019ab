"""The ASGI application: authentication, routing, and the REST verbs.

Resource URLs are parsed by hand (no framework router) because this is the hot path::

    /api/v1/namespaces/{ns}/{plural}/{name}/{subresource}
    /apis/{group}/{version}/{plural}/{name}
"""

from __future__ import annotations

import builtins
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from kybernetes.api import certificates, meta, rbac
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.api.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from kybernetes.apiserver import (
    authz,
    certs,
    codec,
    custommetrics,
    externalmetrics,
    subresources,
    tables,
)
from kybernetes.apiserver.audit import AuditLog, capture_response
from kybernetes.apiserver.authz import Authorizer
from kybernetes.apiserver.context import Context, Options
from kybernetes.apiserver.discovery import AGGREGATED_CONTENT_TYPE, Discovery
from kybernetes.apiserver.metrics import Metrics
from kybernetes.apiserver.objects import ObjectStore
from kybernetes.apiserver.openapi import OpenAPI
from kybernetes.apiserver.watch import WatchStream
from kybernetes.store import UnavailableError

if TYPE_CHECKING:
    from kybernetes.apiserver.custommetrics import CustomMetrics
    from kybernetes.apiserver.externalmetrics import ExternalMetrics

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Obj = dict[str, Any]

MAX_BODY = 3 * 1024 * 1024
_JSON = b"application/json"
_PUBLIC = {"/healthz", "/livez", "/readyz", "/version", "/healthz/", "/livez/", "/readyz/"}
_WATCH_TIMEOUT = 1800.0


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    bound: tuple[tuple[str, str, str, str], ...] = ()
    """For a service account token: (plural, namespace, name, uid) of the objects it is
    bound to (the service account, the pod), which must still exist for it to work."""


@dataclass
class Request:
    scope: Scope
    receive: Receive
    send: Send
    method: str
    path: str
    query: dict[str, str]
    headers: dict[bytes, bytes]
    user: User | None = None
    verb: str = ""
    resource: Resource | None = None
    subresource: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: bytes) -> str:
        return self.headers.get(name, b"").decode("latin-1")

    async def body(self) -> bytes:
        chunks = []
        size = 0
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise StatusError.too_large(
                    "Request entity too large: limit is 3145728")
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        data = self.extra["body"] = b"".join(chunks)  # for the audit log's Request level
        return data


async def send_bytes(send: Send, status: int, body: bytes, *,
                     content_type: bytes = _JSON, headers: list[tuple[bytes, bytes]] | None = None
                     ) -> None:
    hdrs = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache, private")]
    if headers:
        hdrs.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def _warning_headers(warnings: list[str]) -> list[tuple[bytes, bytes]]:
    out = []
    for w in dict.fromkeys(warnings):
        text = w.replace("\\", "\\\\").replace('"', '\\"')
        out.append((b"warning", f'299 - "{text}"'.encode()))
    return out


class APIServer:
    """The Kubernetes REST API as an ASGI application."""

    def __init__(self, ctx: Context, *, tokens: dict[str, User], server_address: str = "",
                 metrics: Metrics | None = None) -> None:
        self.ctx = ctx
        self.tokens = tokens
        self.metrics = metrics or Metrics()
        self.discovery = Discovery(ctx.registry, server_address=server_address)
        assert ctx.compiler.defs is not None
        self.openapi = OpenAPI(ctx.registry, ctx.compiler.defs)
        self._stores: dict[int, ObjectStore] = {}
        self.ready = False
        self.version_info = {
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-kybernetes",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-11-22T00:00:00Z",
            "goVersion": "python", "compiler": "cpython", "platform": "linux/amd64"}
        self.watches = 0
        self._external_metrics: ExternalMetrics | None = None
        self._custom_metrics: CustomMetrics | None = None
        self._mounts: dict[str, Callable[[Request], Awaitable[int]]] = {}
        self.authorizer = Authorizer(ctx)
        self.audit: AuditLog | None = None
        """Where each request is recorded (``--audit-log-path``), if anywhere."""
        ctx.extra["authorizer"] = self.authorizer  # admission's escalation check

    def mount(self, prefix: str, handler: Callable[[Request], Awaitable[int]]) -> None:
        """Serve ``prefix`` and the paths under it with ``handler`` (the dashboard). The
        handler authenticates for itself: ``req.user`` is None without a token, and a
        wrong token is refused before the handler is called."""
        self._mounts[prefix.rstrip("/")] = handler

    def _mounted(self, path: str) -> Callable[[Request], Awaitable[int]] | None:
        if not self._mounts or path.startswith("/api"):  # the hot path: /api, /apis
            return None
        first = "/" + path.split("/", 2)[1] if path.startswith("/") else path
        return self._mounts.get(first)

    @property
    def external_metrics(self) -> ExternalMetrics | None:
        """The provider of ``external.metrics.k8s.io`` (see :mod:`.externalmetrics`);
        discovery lists the group while there is one."""
        return self._external_metrics

    @external_metrics.setter
    def external_metrics(self, provider: ExternalMetrics | None) -> None:
        self._external_metrics = provider
        self.discovery.serve(externalmetrics.GROUP, externalmetrics.VERSION,
                             externalmetrics.resources(provider) if provider else None)

    @property
    def custom_metrics(self) -> CustomMetrics | None:
        """The provider of ``custom.metrics.k8s.io`` (see :mod:`.custommetrics`);
        discovery lists the group while there is one."""
        return self._custom_metrics

    @custom_metrics.setter
    def custom_metrics(self, provider: CustomMetrics | None) -> None:
        self._custom_metrics = provider
        self.discovery.serve(custommetrics.GROUP, custommetrics.VERSION,
                             custommetrics.resources(provider, self.ctx.registry)
                             if provider else None)

    def store(self, res: Resource) -> ObjectStore:
        s = self._stores.get(id(res))
        if s is None or s.res is not res:
            s = self._stores[id(res)] = ObjectStore(self.ctx, res)
        return s

    def forget(self, res: Resource) -> None:
        self._stores.pop(id(res), None)

    # -- entry ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        typ = scope["type"]
        if typ == "lifespan":
            await self._lifespan(receive, send)
            return
        headers = dict(scope["headers"])
        qs = scope.get("query_string", b"")
        response: list[bytes] | None = None
        if self.audit is not None:  # the answer, for the RequestResponse level
            send, response = capture_response(send)
        req = Request(scope, receive, send, scope["method"], scope["path"],
                      dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True)) if qs else {},
                      headers)
        start = time.perf_counter()
        received = datetime.now(UTC) if self.audit is not None else None
        code = 500
        try:
            req.user = await self.authenticate(req)
            if req.user is not None and req.user.bound:
                await self.check_bound(req.user)
            if req.user is not None and b"impersonate-user" in headers:
                req.extra["impersonator"] = req.user
                req.user = await self.impersonate(req, req.user)
            mounted = self._mounted(req.path)
            if mounted is not None:
                code = await mounted(req)
            else:
                if req.user is None and req.path not in _PUBLIC:
                    raise StatusError.unauthorized()
                code = await self.route(req)
        except StatusError as e:
            code = e.code
            await send_bytes(send, e.code, orjson.dumps(e.status()),
                             headers=[(k.encode(), v.encode()) for k, v in e.headers.items()])
        except UnavailableError as e:  # the datastore did not answer: nothing was done
            code = 503
            err = StatusError(503, "ServiceUnavailable", str(e))
            await send_bytes(send, 503, orjson.dumps(err.status()),
                             headers=[(b"retry-after", b"1")])
        except Exception as e:
            log.exception("internal error serving %s %s", req.method, req.path)
            err = StatusError.internal(str(e))
            await send_bytes(send, 500, orjson.dumps(err.status()))
        finally:
            res = req.resource
            if res is not None and req.verb != "watch":
                self.metrics.observe(req.verb, res.group, res.version, res.plural,
                                     req.subresource, code, time.perf_counter() - start)
            if received is not None and self.audit is not None:
                self.audit.record(req, code, received, response=response)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def authenticate(self, req: Request) -> User | None:
        auth = req.headers.get(b"authorization")
        if not auth:
            return self.user_from_cert(req.scope)
        scheme, _, token = auth.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise StatusError.unauthorized()
        user = await self.authenticate_bearer(token.strip())
        if user is None:
            raise StatusError.unauthorized()
        return user

    async def authenticate_bearer(self, token: str) -> User | None:
        """The user of a bearer token: a static or service-account token, or a bootstrap
        token (a kube-system Secret, looked up)."""
        user = self.authenticate_token(token)
        if user is None and certificates.parse_bootstrap_token(token) is not None:
            user = await self.authenticate_bootstrap_token(token)
        return user

    async def authenticate_bootstrap_token(self, token: str) -> User | None:
        """Upstream's bootstrap token authenticator: ``<id>.<secret>`` is user
        ``system:bootstrap:<id>`` while the Secret ``kube-system/bootstrap-token-<id>``
        holds that secret, is for authentication and has not expired."""
        parsed = certificates.parse_bootstrap_token(token)
        res = self.ctx.registry.get("", "v1", "secrets")
        if parsed is None or res is None:
            return None
        tid, secret = parsed
        kv = await self.ctx.backend.get(res.key(
            "kube-system", certificates.BOOTSTRAP_SECRET_PREFIX + tid))
        if kv is None:
            return None
        obj = orjson.loads(kv.value)
        groups = certificates.bootstrap_token_groups(obj)
        data = certificates.secret_data(obj)
        if groups is None or data.get("token-id", tid) != tid or \
                not hmac.compare_digest(data.get("token-secret", "").encode(), secret.encode()):
            return None
        expiration = data.get("expiration")
        if expiration:
            when = meta.parse_time(expiration)
            if when is None or when <= self.ctx.clock.now():
                log.info("bootstrap token %s has expired", tid)
                return None
        return User(certificates.BOOTSTRAP_USER_PREFIX + tid,
                    (*groups, "system:authenticated"))

    @staticmethod
    def user_from_cert(scope: Scope) -> User | None:
        """The user of a client certificate signed by the cluster CA (CN: name, O: groups),
        as kube-apiserver's x509 authenticator reads it."""
        found = certs.user_from_peercert(scope.get("kyb.peercert"))
        if found is None:
            return None
        name, groups = found
        return User(name, (*groups, "system:authenticated"))

    async def impersonate(self, req: Request, user: User) -> User:
        """``Impersonate-User`` / ``-Group`` / ``-Uid`` (``kubectl --as``): act as another
        user when allowed to ``impersonate`` it (users, groups, service accounts)."""
        name = req.header(b"impersonate-user")
        groups = [v.decode("latin-1") for k, v in req.scope["headers"]
                  if k == b"impersonate-group"]
        uid = req.header(b"impersonate-uid")
        checks = []
        if name.startswith("system:serviceaccount:") and name.count(":") == 3:
            _, _, sa_ns, sa_name = name.split(":")
            checks.append(("serviceaccounts", sa_ns, sa_name))
        else:
            checks.append(("users", "", name))
        checks.extend(("groups", "", g) for g in groups)
        if uid:
            checks.append(("uids", "", uid))
        if rbac.MASTERS not in user.groups:
            for resource, ns, target in checks:
                a = rbac.Attributes(user.name, user.groups, "impersonate", namespace=ns,
                                    api_group="authentication.k8s.io" if resource == "uids"
                                    else "", resource=resource, name=target)
                if not await self.authorizer.allows(a):
                    raise StatusError(403, "Forbidden", f'{resource} "{target}" is forbidden: '
                                      f'{rbac.forbidden_message(a)}',
                                      {"name": target, "kind": resource})
        if name.startswith("system:serviceaccount:"):
            groups += ["system:serviceaccounts",
                       "system:serviceaccounts:" + name.split(":")[2]]
        if "system:authenticated" not in groups:
            groups.append("system:authenticated")
        return User(name, tuple(groups), uid)

    def authenticate_token(self, token: str) -> User | None:
        """The user a bearer token belongs to, or None."""
        user = self.tokens.get(token)
        if user is not None:
            return user
        for known, u in self.tokens.items():  # constant time, whatever the dict did
            if hmac.compare_digest(known, token):
                return u
        issuer = self.ctx.extra.get("token_issuer")
        if issuer is not None and token.count(".") == 2:
            claims = issuer.verify(token)
            if claims is not None and issuer.issuer in (claims.get("aud") or []):
                k8s = claims.get("kubernetes.io") or {}
                ns = k8s.get("namespace", "")
                sa = k8s.get("serviceaccount") or {}
                bound = [("serviceaccounts", ns, str(sa.get("name", "")),
                          str(sa.get("uid", "")))]
                for kind, plural in (("pod", "pods"), ("secret", "secrets")):
                    ref = k8s.get(kind)
                    if isinstance(ref, dict):
                        bound.append((plural, ns, str(ref.get("name", "")),
                                      str(ref.get("uid", ""))))
                return User(str(claims.get("sub", "")),
                            ("system:serviceaccounts", f"system:serviceaccounts:{ns}",
                             "system:authenticated"), str(sa.get("uid", "")), tuple(bound))
        return None

    async def check_bound(self, user: User) -> None:
        """A service account token stops working when its service account or the pod it
        was issued for is gone (or was replaced by one of the same name): 401, as
        upstream's token authenticator answers."""
        for plural, ns, name, uid in user.bound:
            res = self.ctx.registry.get("", "v1", plural)
            assert res is not None
            kv = await self.ctx.backend.get(res.key(ns, name))
            if kv is None or (uid and orjson.loads(kv.value)["metadata"].get("uid") != uid):
                raise StatusError.unauthorized()

    async def handle_upgrade(self, scope: Scope, conn: Any) -> None:
        """HTTP upgrades (``kubectl exec``, ``attach``, ``port-forward``)."""
        from kybernetes.apiserver import nodeproxy

        await nodeproxy.upgrade(self, scope, conn)

    # -- routing ---------------------------------------------------------------------------

    def _privileged(self, req: Request) -> bool:
        """Whether the request needs no authorization (system:masters, or no user on a
        public path)."""
        user = req.user
        return user is None or rbac.MASTERS in user.groups

    async def authorize_path(self, req: Request) -> None:
        """RBAC for a request that is not for a resource (``nonResourceURLs``)."""
        if self._privileged(req):
            return
        assert req.user is not None
        verb = {"GET": "get", "HEAD": "get", "POST": "post", "PUT": "put", "PATCH": "patch",
                "DELETE": "delete"}.get(req.method, req.method.lower())
        await self.authorizer.check(rbac.Attributes(
            req.user.name, req.user.groups, verb, path=req.path, resource_request=False))

    async def authorize(self, req: Request, verb: str, *, namespace: str = "",
                        group: str = "", resource: str = "", subresource: str = "",
                        name: str = "") -> None:
        """RBAC for a resource request; raises the 403 upstream answers."""
        if self._privileged(req):
            return
        assert req.user is not None
        await self.authorizer.check(authz.attributes(
            req.user, verb, namespace=namespace, group=group, resource=resource,
            subresource=subresource, name=name))

    async def route(self, req: Request) -> int:
        path = req.path
        if path.startswith("/api/") or path.startswith("/apis/"):
            return await self.resource_request(req)
        await self.authorize_path(req)
        if req.method != "GET":
            raise StatusError(405, "MethodNotAllowed", "the server does not allow this method "
                              "on the requested resource")
        send = req.send
        if path in ("/api", "/api/"):
            if "apidiscovery.k8s.io" in req.header(b"accept"):
                await send_bytes(send, 200, self.discovery.aggregated(core=True),
                                 content_type=AGGREGATED_CONTENT_TYPE.encode(),
                                 headers=[(b"vary", b"Accept")])
            else:
                await send_bytes(send, 200, self.discovery.api_versions())
            return 200
        if path in ("/apis", "/apis/"):
            if "apidiscovery.k8s.io" in req.header(b"accept"):
                await send_bytes(send, 200, self.discovery.aggregated(core=False),
                                 content_type=AGGREGATED_CONTENT_TYPE.encode(),
                                 headers=[(b"vary", b"Accept")])
            else:
                await send_bytes(send, 200, self.discovery.api_groups())
            return 200
        if path == "/version":
            await send_bytes(send, 200, orjson.dumps(self.version_info))
            return 200
        if path.rstrip("/") in ("/healthz", "/livez", "/readyz") or \
                path.startswith(("/healthz/", "/livez/", "/readyz/")):
            ok = self.ready or not path.startswith("/readyz")
            body = b"ok" if ok else b"[-]startup not finished\nreadyz check failed"
            if "verbose" in req.query:
                body = (b"[+]ping ok\n[+]etcd ok\nreadyz check passed" if ok else body)
            await send_bytes(send, 200 if ok else 500, body, content_type=b"text/plain")
            return 200 if ok else 500
        if path == "/metrics":
            await send_bytes(send, 200, self.metrics.render(),
                             content_type=b"text/plain; version=0.0.4")
            return 200
        if path == "/openapi/v3":
            await send_bytes(send, 200, self.openapi.index())
            return 200
        if path.startswith("/openapi/v3/"):
            doc = self.openapi.document(path[len("/openapi/v3/"):])
            if doc is None:
                raise StatusError(404, "NotFound", "the server could not find the requested "
                                  "resource")
            data, digest = doc
            hdrs = [(b"etag", f'"{digest}"'.encode())]
            if req.query.get("hash") == digest:
                hdrs.append((b"cache-control", b"public, immutable"))
            await send_bytes(send, 200, data, headers=hdrs)
            return 200
        if path == "/openapi/v2":
            if "protobuf" in req.header(b"accept") and "json" not in req.header(b"accept"):
                # kubectl only falls back to v2 for group-versions /openapi/v3 does not
                # serve; an empty OpenAPIv2 Document says "nothing known" about them.
                await send_bytes(send, 200, b"", content_type=b"application/octet-stream")
                return 200
            await send_bytes(send, 200, self.openapi.swagger_v2())
            return 200
        raise StatusError(404, "NotFound", "the server could not find the requested resource")

    async def resource_request(self, req: Request) -> int:
        segs = [s for s in req.path.split("/") if s]
        if segs[0] == "api":
            if len(segs) < 2:
                raise _not_found()
            group, version, rest = "", segs[1], segs[2:]
        else:
            if len(segs) < 2:
                raise _not_found()
            if len(segs) == 2:
                await self.authorize_path(req)
                data = self.discovery.api_group(segs[1])
                if data is None or req.method != "GET":
                    raise _not_found()
                await send_bytes(req.send, 200, data)
                return 200
            group, version, rest = segs[1], segs[2], segs[3:]
            if rest and group in (externalmetrics.GROUP, custommetrics.GROUP):
                ns = rest[1] if rest[0] == "namespaces" and len(rest) > 2 else ""
                what = rest[2:] if ns else rest
                await self.authorize(req, "get", namespace=ns, group=group,
                                     resource=what[0] if what else "")
                if group == externalmetrics.GROUP:
                    return await externalmetrics.serve(self, req, version, rest)
                return await custommetrics.serve(self, req, version, rest)
        if not rest:
            await self.authorize_path(req)
            data = self.discovery.resource_list(group, version)
            if data is None or req.method != "GET":
                raise _not_found()
            await send_bytes(req.send, 200, data)
            return 200
        ns = ""
        reg = self.ctx.registry
        if rest[0] == "namespaces" and len(rest) >= 3:
            cand = reg.get(group, version, rest[2])
            if (cand is not None and cand.namespaced) or (group == "" and rest[2] == "bindings"):
                ns, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise _not_found()
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        res = reg.get(group, version, plural)
        if res is None:
            if group == "" and plural == "bindings" and ns and req.method == "POST":
                await self.authorize(req, "create", namespace=ns, resource="bindings")
                pods = reg.get("", "v1", "pods")
                assert pods is not None
                req.resource = pods
                req.verb = "create"
                req.subresource = "binding"
                return await subresources.binding(self, req, pods, ns, "")
            raise _not_found()
        if sub and sub not in res.subresources:
            raise _not_found()
        req.resource = res
        req.subresource = sub
        req.extra["namespace"], req.extra["name"] = ns, name
        if res.namespaced and not ns and name:
            raise _not_found()
        if not self._privileged(req):
            await self._authorize_resource(req, res, ns, name, sub)
        if group in authz.REVIEW_GROUPS and res.verbs == ("create",):
            if req.method != "POST" or name:
                raise StatusError(405, "MethodNotAllowed", "the server does not allow this "
                                  "method on the requested resource")
            req.verb = "create"
            review = await authz.review(self.authorizer, req, res, ns)
            await send_bytes(req.send, 201, orjson.dumps(review))
            return 201
        if group == "metrics.k8s.io":
            from kybernetes.apiserver import metricsapi

            return await metricsapi.serve(self, req, res, ns, name)
        return await self.dispatch(req, res, ns, name, sub)

    async def _authorize_resource(self, req: Request, res: Resource, ns: str, name: str,
                                  sub: str) -> None:
        verb = req.verb = authz.request_verb(req, name, sub)
        namespace = name if res.group == "" and res.plural == "namespaces" and name else ns
        if not name and verb in ("list", "watch"):
            fs = req.query.get("fieldSelector", "")
            if fs.startswith("metadata.name=") and "," not in fs:
                name = fs[len("metadata.name="):]
        await self.authorize(req, verb, namespace=namespace, group=res.group,
                             resource=res.plural, subresource=sub, name=name)

    async def dispatch(self, req: Request, res: Resource, ns: str, name: str, sub: str) -> int:
        m = req.method
        if sub and sub not in ("status", "approval"):
            return await subresources.dispatch(self, req, res, ns, name, sub)
        if m == "GET":
            if not name:
                if _truthy(req.query.get("watch")):
                    req.verb = "watch"
                    return await self.watch(req, res, ns)
                req.verb = "list"
                return await self.list(req, res, ns)
            req.verb = "get"
            return await self.get(req, res, ns, name)
        if m == "POST" and not name:
            req.verb = "create"
            if res.namespaced and not ns:
                raise StatusError(405, "MethodNotAllowed", "the server does not allow this "
                                  "method on the requested resource")
            return await self.create(req, res, ns)
        if m == "PUT" and name:
            req.verb = "update"
            return await self.update(req, res, ns, name, sub)
        if m == "PATCH" and name:
            req.verb = "patch"
            return await self.patch(req, res, ns, name, sub)
        if m == "DELETE":
            if name:
                req.verb = "delete"
                return await self.delete(req, res, ns, name)
            req.verb = "deletecollection"
            return await self.delete_collection(req, res, ns)
        raise StatusError(405, "MethodNotAllowed",
                          "the server does not allow this method on the requested resource")

    # -- verbs -------------------------------------------------------------------------------

    def options(self, req: Request) -> Options:
        q = req.query
        fv = q.get("fieldValidation", "Warn") or "Warn"
        if fv not in ("Strict", "Warn", "Ignore"):
            raise StatusError.bad_request(
                f"fieldValidation must be one of Ignore, Warn, or Strict, got {fv}")
        dry = q.get("dryRun", "")
        if dry and dry != "All":
            raise StatusError.bad_request(f'unsupported dry run option "{dry}"')
        return Options(dry_run=dry == "All", field_manager=q.get("fieldManager", ""),
                       field_validation=fv, user_agent=req.header(b"user-agent"),
                       force=_truthy(q.get("force")), user=req.user)

    async def respond_object(self, req: Request, res: Resource, obj: Obj, status: int,
                             opts: Options | None = None) -> int:
        fmt = tables.wants(req.header(b"accept"))
        if fmt == "Table":
            body = orjson.dumps(tables.table(
                res, [obj], self.ctx.clock.now(), include=req.query.get("includeObject", "")
                or "Metadata"))
            ctype = tables.TABLE_CONTENT_TYPE.encode()
        elif fmt == "PartialObjectMetadata":
            body, ctype = orjson.dumps(tables.partial(obj)), _JSON
        else:
            body, ctype = orjson.dumps(obj), _JSON
        await send_bytes(req.send, status, body, content_type=ctype,
                         headers=_warning_headers(opts.warnings) if opts and opts.warnings
                         else None)
        return status

    async def get(self, req: Request, res: Resource, ns: str, name: str) -> int:
        store = self.store(res)
        if tables.wants(req.header(b"accept")):
            return await self.respond_object(req, res, await store.get(ns, name), 200)
        await send_bytes(req.send, 200, await store.get_bytes(ns, name))
        return 200

    def selectors(self, req: Request) -> tuple[Any, Any]:
        try:
            label = parse_label_selector(req.query.get("labelSelector"))
            fld = parse_field_selector(req.query.get("fieldSelector"))
        except SelectorError as e:
            raise StatusError.bad_request(str(e)) from None
        return label, fld

    async def list(self, req: Request, res: Resource, ns: str) -> int:
        label, fld = self.selectors(req)
        q = req.query
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise StatusError.bad_request("invalid limit") from None
        store = self.store(res)
        page = await store.list(ns, label=label, field=fld, limit=limit,
                                cont=q.get("continue", ""), rv=q.get("resourceVersion", ""),
                                rv_match=q.get("resourceVersionMatch", ""))
        fmt = tables.wants(req.header(b"accept"))
        if fmt == "Table":
            body = orjson.dumps(tables.table(
                res, page.objects(), self.ctx.clock.now(),
                include=q.get("includeObject", "") or "Metadata",
                resource_version=str(page.revision), cont=page.cont))
            await send_bytes(req.send, 200, body, content_type=tables.TABLE_CONTENT_TYPE.encode())
            return 200
        if fmt == "PartialObjectMetadata":
            meta: Obj = {"resourceVersion": str(page.revision)}
            if page.cont:
                meta["continue"] = page.cont
            body = orjson.dumps({"kind": "PartialObjectMetadataList",
                                 "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                                 "items": [tables.partial(o) for o in page.objects()]})
            await send_bytes(req.send, 200, body)
            return 200
        head = b'{"kind":"%s","apiVersion":"%s","metadata":{"resourceVersion":"%d"%s},"items":[' % (
            res.list_kind.encode(), res.api_version.encode(), page.revision,
            b',"continue":"%s"' % page.cont.encode() if page.cont else b"")
        body = head + b",".join(page.raw_items()) + b"]}"
        await send_bytes(req.send, 200, body)
        return 200

    async def watch(self, req: Request, res: Resource, ns: str) -> int:
        label, fld = self.selectors(req)
        store = self.store(res)
        store.check_field_selector(fld)
        q = req.query
        try:
            timeout = float(q.get("timeoutSeconds") or _WATCH_TIMEOUT)
        except ValueError:
            timeout = _WATCH_TIMEOUT
        stream = WatchStream(store, ns, label=label, field=fld,
                             fmt=tables.wants(req.header(b"accept")),
                             include=q.get("includeObject", "") or "Metadata",
                             bookmarks=_truthy(q.get("allowWatchBookmarks")),
                             now=self.ctx.clock.now)
        rv = q.get("resourceVersion", "")
        if rv not in ("", "0"):
            try:
                int(rv)
            except ValueError:
                raise StatusError.bad_request(f'invalid resource version "{rv}"') from None
        gauge = self.metrics.watch_gauge(res.group, res.version, res.plural)
        gauge.inc()
        self.watches += 1
        try:
            await stream.run(req.send, req.receive, start=rv, timeout=timeout)
        finally:
            gauge.dec()
            self.watches -= 1
        return 200

    async def read_object(self, req: Request, store: ObjectStore, opts: Options) -> Obj:
        body = await req.body()
        obj = codec.decode_object(req.header(b"content-type"), body)
        store.check_type(obj)
        store.decode_walk(obj, opts)
        return obj

    async def create(self, req: Request, res: Resource, ns: str) -> int:
        store = self.store(res)
        opts = self.options(req)
        obj = await self.read_object(req, store, opts)
        out = await store.create(ns, obj, opts)
        await self.after_write(res, out)
        return await self.respond_object(req, res, out, 201, opts)

    async def update(self, req: Request, res: Resource, ns: str, name: str, sub: str) -> int:
        store = self.store(res)
        opts = self.options(req)
        obj = await self.read_object(req, store, opts)
        out, created = await store.update(ns, name, obj, opts, subresource=sub)
        await self.after_write(res, out)
        return await self.respond_object(req, res, out, 201 if created else 200, opts)

    async def patch(self, req: Request, res: Resource, ns: str, name: str, sub: str) -> int:
        store = self.store(res)
        opts = self.options(req)
        ctype = codec.media_type(req.header(b"content-type"))
        if ctype not in (codec.JSON_PATCH, codec.MERGE_PATCH, codec.STRATEGIC_PATCH,
                         codec.APPLY_PATCH):
            raise StatusError.unsupported_media_type(ctype)
        body = await req.body()
        out, created = await store.patch(ns, name, ctype, body, opts, subresource=sub)
        await self.after_write(res, out)
        return await self.respond_object(req, res, out, 201 if created else 200, opts)

    async def delete_options(self, req: Request) -> Obj:
        body = await req.body()
        options: Obj = {}
        if body.strip():
            decoded = codec.decode_object(req.header(b"content-type") or "application/json", body)
            options = decoded
        q = req.query
        if "gracePeriodSeconds" in q:
            try:
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise StatusError.bad_request("invalid gracePeriodSeconds") from None
        if "propagationPolicy" in q:
            options["propagationPolicy"] = q["propagationPolicy"]
        if "orphanDependents" in q:
            options["orphanDependents"] = _truthy(q["orphanDependents"])
        policy = options.get("propagationPolicy")
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise StatusError.invalid("DeleteOptions", "", [], "") if False else \
                StatusError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: '
                            f'propagationPolicy: Unsupported value: "{policy}": supported '
                            f'values: "Foreground", "Background", "Orphan", "nil"')
        return options

    async def delete(self, req: Request, res: Resource, ns: str, name: str) -> int:
        store = self.store(res)
        opts = self.options(req)
        options = await self.delete_options(req)
        out, status = await store.delete(ns, name, options, opts)
        await self.after_delete(res, out)
        return await self.respond_object(req, res, out, status, opts)

    async def delete_collection(self, req: Request, res: Resource, ns: str) -> int:
        label, fld = self.selectors(req)
        store = self.store(res)
        opts = self.options(req)
        options = await self.delete_options(req)
        deleted = await store.delete_collection(ns, label=label, field=fld, options=options,
                                                opts=opts)
        for obj in deleted:
            await self.after_delete(res, obj)
        body = {"kind": res.list_kind, "apiVersion": res.api_version, "metadata": {},
                "items": deleted}
        await send_bytes(req.send, 200, orjson.dumps(body))
        return 200

    # -- hooks for objects that change what is served (CRDs) --------------------------------

    after_write_hooks: builtins.list[Callable[[Resource, Obj], Awaitable[None]]]
    after_delete_hooks: builtins.list[Callable[[Resource, Obj], Awaitable[None]]]

    async def after_write(self, res: Resource, obj: Obj) -> None:
        for hook in getattr(self, "after_write_hooks", ()):
            await hook(res, obj)

    async def after_delete(self, res: Resource, obj: Obj) -> None:
        for hook in getattr(self, "after_delete_hooks", ()):
            await hook(res, obj)


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes")


def _not_found() -> StatusError:
    return StatusError(404, "NotFound", "the server could not find the requested resource",
                       {})
