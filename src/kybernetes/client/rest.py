"""An async REST client for the Kubernetes API, over lean HTTP/1.1 (httpx for test transports).

Resources are addressed by ``(api_version, plural)`` plus a namespace for namespaced
ones; objects are plain dicts in their wire form::

    async with Client.from_kubeconfig("/var/lib/kyb/kubeconfig") as client:
        pod = await client.get("v1", "pods", "web-0", namespace="default")
        await client.patch("apps/v1", "deployments", "web", {"spec": {"replicas": 3}},
                           namespace="default")
        async with contextlib.aclosing(client.watch("v1", "pods")) as events:
            async for type_, obj in events:
                ...

Failures come back as :class:`kybernetes.api.errors.StatusError`, built from the
server's ``metav1.Status``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

import httpx
import orjson

from kybernetes.api.errors import StatusError
from kybernetes.client.inprocess import ASGIApp, InProcessPool
from kybernetes.client.kubeconfig import Config, load_kubeconfig
from kybernetes.client.stream import HTTPPool, stream_lines

Object = dict[str, Any]
"""A Kubernetes object (or List, or Status) in its JSON wire form."""

PatchType = Literal["merge", "strategic", "json", "apply"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}

# What client-go reports when an error response carries no Status body.
_REASONS: dict[int, str] = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
    413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}

Params = Mapping[str, str | int | bool | None]


class WatchEvent(NamedTuple):
    """One watch event: ``type`` is ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."""

    type: str
    object: Object


def resource_path(api_version: str, plural: str, *, namespace: str | None = None,
                  name: str | None = None, subresource: str | None = None) -> str:
    """The URL path of a collection or object, e.g. ``/apis/apps/v1/namespaces/d/deployments/web``."""
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = root
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name is not None:
        if not name:
            raise ValueError(f"resource name may not be empty ({plural})")
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


def status_error(status: Mapping[str, Any], *, http_code: int = 500) -> StatusError:
    """A :class:`StatusError` from a ``metav1.Status`` body (as in a watch ERROR event)."""
    code = int(status.get("code") or http_code)
    return StatusError(
        code=code,
        reason=str(status.get("reason") or _REASONS.get(code, "Unknown")),
        message=str(status.get("message") or f"the server responded with status {code}"),
        details=status.get("details"),
    )


def error_from_response(code: int, body: bytes, headers: Mapping[str, str] | None = None) -> StatusError:
    """The error for a non-2xx response: its Status body, or a generic one like client-go's."""
    parsed: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(body) if body else None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        err = status_error(parsed, http_code=code)
    else:
        text = body.decode(errors="replace").strip()
        err = StatusError(code, _REASONS.get(code, "Unknown"),
                          text or f"the server responded with status {code}")
    if headers and "retry-after" in headers:
        err.headers["Retry-After"] = headers["retry-after"]
    return err


def _query(params: Params | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (params or {}).items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _namespace_of(obj: Mapping[str, Any], namespace: str | None) -> str | None:
    return namespace if namespace is not None else obj.get("metadata", {}).get("namespace")


def _name_of(obj: Mapping[str, Any]) -> str:
    name = obj.get("metadata", {}).get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    return str(name)


class Client:
    """The Kubernetes REST API over one keep-alive HTTP/1.1 connection pool.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); ``app``, the
    API server's ASGI app in this process, is called directly instead of over the network
    (:mod:`kybernetes.client.inprocess`).
    """

    def __init__(self, config: Config, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 30.0, user_agent: str = "kybernetes/0.1.0",
                 trust_env: bool = False, app: ASGIApp | None = None) -> None:
        self.config = config
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        verify: Any = True
        if transport is None and config.server.startswith("https:"):
            verify = config.ssl_context()
        self._headers = headers
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else None
        self._timeout = timeout
        # the network: a lean keep-alive pool of our own; httpx only to carry a given
        # transport (``httpx.MockTransport`` in tests)
        self._pool: HTTPPool | InProcessPool | None = None
        if app is not None:
            self._pool = InProcessPool(app, config.server, headers=headers)
        elif transport is None:
            self._pool = HTTPPool([config.server, *config.fallback_servers],
                                  ssl_context=self._ssl, headers=headers, timeout=timeout)
        self._http = httpx.AsyncClient(
            base_url=config.server, headers=headers, transport=transport,
            timeout=httpx.Timeout(timeout), trust_env=trust_env,
        ) if transport is not None else None

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str] | None = None, *,
                        context: str | None = None, **kwargs: Any) -> Client:
        """A client for the kubeconfig's current (or given) context."""
        return cls(load_kubeconfig(path, context=context), **kwargs)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            await self._pool.aclose()
        if self._http is not None:
            await self._http.aclose()

    # -- raw -------------------------------------------------------------------

    async def request(self, method: str, path: str, *, params: Params | None = None,
                      body: Any = None, content_type: str = "application/json",
                      headers: Mapping[str, str] | None = None) -> Any:
        """Send one request; return the decoded JSON body (``None`` if empty).

        ``body`` may be bytes (sent as is) or anything orjson can encode.
        """
        hdrs = dict(headers or {})
        content: bytes | None = None
        if body is not None:
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            hdrs["Content-Type"] = content_type
        if self._pool is not None:
            code, resp_headers, data = await self._pool.request(method, path, _query(params),
                                                                hdrs, content)
        else:
            assert self._http is not None
            resp = await self._http.request(method, path, params=_query(params),
                                            content=content, headers=hdrs)
            code, resp_headers, data = resp.status_code, dict(resp.headers), resp.content
        if not 200 <= code < 300:
            raise error_from_response(code, data, resp_headers)
        if not data:
            return None
        if "json" not in resp_headers.get("content-type", "application/json"):
            return data.decode(errors="replace")
        return orjson.loads(data)

    # -- verbs -----------------------------------------------------------------

    async def get(self, api_version: str, plural: str, name: str, *,
                  namespace: str | None = None, subresource: str | None = None) -> Object:
        """GET one object (or one of its subresources)."""
        path = resource_path(api_version, plural, namespace=namespace, name=name,
                             subresource=subresource)
        result: Object = await self.request("GET", path)
        return result

    async def list(self, api_version: str, plural: str, *, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None,
                   limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None) -> Object:
        """LIST one page of a collection; returns the ``...List`` object."""
        params = {"labelSelector": label_selector, "fieldSelector": field_selector,
                  "limit": limit, "continue": continue_, "resourceVersion": resource_version}
        result: Object = await self.request(
            "GET", resource_path(api_version, plural, namespace=namespace), params=params)
        return result

    async def list_all(self, api_version: str, plural: str, *, namespace: str | None = None,
                       label_selector: str | None = None, field_selector: str | None = None,
                       page_size: int = 500) -> Object:
        """LIST every page (``limit``/``continue``) into one List with all items.

        If a continue token expires mid-way (410), the list restarts without paging,
        as client-go's pager does.
        """
        kwargs: dict[str, Any] = {"namespace": namespace, "label_selector": label_selector,
                                  "field_selector": field_selector}
        items: list[Object] = []
        token: str | None = None
        while True:
            try:
                page = await self.list(api_version, plural, limit=page_size or None,
                                       continue_=token, **kwargs)
            except StatusError as e:
                if e.code != 410 or token is None:
                    raise
                return await self.list(api_version, plural, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                page["items"] = items
                page.setdefault("metadata", {}).pop("continue", None)
                return page

    async def create(self, api_version: str, plural: str, obj: Object, *,
                     namespace: str | None = None, dry_run: bool = False,
                     field_manager: str | None = None) -> Object:
        """POST a new object; the namespace defaults to ``obj.metadata.namespace``."""
        path = resource_path(api_version, plural, namespace=_namespace_of(obj, namespace))
        result: Object = await self.request("POST", path, body=obj, params={
            "dryRun": "All" if dry_run else None, "fieldManager": field_manager})
        return result

    async def update(self, api_version: str, plural: str, obj: Object, *,
                     namespace: str | None = None, dry_run: bool = False,
                     field_manager: str | None = None,
                     subresource: str | None = None) -> Object:
        """PUT a whole object (a conflict is a 409 if its resourceVersion is stale)."""
        path = resource_path(api_version, plural, namespace=_namespace_of(obj, namespace),
                             name=_name_of(obj), subresource=subresource)
        result: Object = await self.request("PUT", path, body=obj, params={
            "dryRun": "All" if dry_run else None, "fieldManager": field_manager})
        return result

    async def update_status(self, api_version: str, plural: str, obj: Object, *,
                            namespace: str | None = None, dry_run: bool = False,
                            field_manager: str | None = None) -> Object:
        """PUT the object's ``status`` subresource."""
        return await self.update(api_version, plural, obj, namespace=namespace,
                                 dry_run=dry_run, field_manager=field_manager,
                                 subresource="status")

    async def patch(self, api_version: str, plural: str, name: str, patch: Any, *,
                    patch_type: PatchType = "merge", namespace: str | None = None,
                    subresource: str | None = None, field_manager: str | None = None,
                    force: bool | None = None, dry_run: bool = False) -> Object:
        """PATCH an object: merge, strategic merge, JSON patch (a list) or server-side apply."""
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"unknown patch type {patch_type!r}") from None
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        path = resource_path(api_version, plural, namespace=namespace, name=name,
                             subresource=subresource)
        result: Object = await self.request("PATCH", path, body=patch, content_type=content_type,
                                            params={"fieldManager": field_manager, "force": force,
                                                    "dryRun": "All" if dry_run else None})
        return result

    async def delete(self, api_version: str, plural: str, name: str, *,
                     namespace: str | None = None, propagation_policy: str | None = None,
                     grace_period_seconds: int | None = None,
                     preconditions: Mapping[str, str] | None = None,
                     dry_run: bool = False) -> Object:
        """DELETE an object; returns the object (if finalizers keep it) or a Status."""
        options: Object = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            options["preconditions"] = dict(preconditions)
        if dry_run:
            options["dryRun"] = ["All"]
        path = resource_path(api_version, plural, namespace=namespace, name=name)
        result: Object = await self.request("DELETE", path, body=options)
        return result

    async def watch(self, api_version: str, plural: str, *, namespace: str | None = None,
                    resource_version: str | None = None, label_selector: str | None = None,
                    field_selector: str | None = None, timeout_seconds: int | None = None,
                    allow_bookmarks: bool = True) -> AsyncGenerator[WatchEvent, None]:
        """Stream watch events until the server ends the response.

        ERROR events (e.g. a Status with code 410 when ``resource_version`` is too old)
        are yielded like any other; a non-2xx response raises :class:`StatusError`.
        Close the iterator (``contextlib.aclosing``) to drop the connection early.
        """
        params = _query({
            "watch": True, "resourceVersion": resource_version, "labelSelector": label_selector,
            "fieldSelector": field_selector, "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": allow_bookmarks or None,
        })
        # The server may stay quiet for as long as the watch lasts; allow that plus slack.
        read = None if timeout_seconds is None else timeout_seconds + self._timeout
        timeout = httpx.Timeout(self._timeout, read=read)
        path = resource_path(api_version, plural, namespace=namespace)
        if self._http is None:
            # the network: a lean reader of our own (watches are a controller's hot path)
            server = self._pool.server if self._pool is not None else self.config.server
            lines = self._pool.stream_lines(path, params) \
                if isinstance(self._pool, InProcessPool) else \
                stream_lines(server, path, params, headers=self._headers, ssl_context=self._ssl)
            try:
                async for raw in lines:
                    event = orjson.loads(raw)
                    yield WatchEvent(str(event.get("type", "")), event.get("object") or {})
            finally:
                await lines.aclose()
            return
        async with self._http.stream("GET", path, params=params, timeout=timeout) as resp:
            if not 200 <= resp.status_code < 300:
                raise error_from_response(resp.status_code, await resp.aread(), resp.headers)
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                event = orjson.loads(line)
                yield WatchEvent(str(event.get("type", "")), event.get("object") or {})
