"""``external.metrics.k8s.io/v1beta1``: external metrics for the HorizontalPodAutoscaler,
from a provider the process registers (``APIServer.external_metrics``; ``kyb server``
registers the request rates its service proxy and ingress controller measure).

``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=...``
answers an ``ExternalMetricValueList``; an unknown metric, or no provider, is 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.api.errors import StatusError
from kybernetes.api.selectors import LabelSelector

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer, Request

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
Obj = dict[str, Any]
ExternalMetrics = Callable[[str, str, LabelSelector], Awaitable[list[Obj] | None]]
"""(namespace, metric, selector) -> ExternalMetricValue items, or None: no such metric."""


async def serve(server: APIServer, req: Request, version: str, rest: list[str]) -> int:
    from kybernetes.apiserver.app import send_bytes

    if req.method != "GET":
        raise StatusError(405, "MethodNotAllowed",
                          "the server does not allow this method on the requested resource")
    if version != VERSION or len(rest) != 3 or rest[0] != "namespaces":
        raise StatusError(404, "NotFound", "the server could not find the requested resource")
    ns, metric = rest[1], rest[2]
    label, _ = server.selectors(req)
    provider: ExternalMetrics | None = server.external_metrics
    items = await provider(ns, metric, label) if provider is not None else None
    if items is None:
        raise StatusError(404, "NotFound",
                          f'the server could not find the metric {metric} for namespace {ns}')
    await send_bytes(req.send, 200, orjson.dumps({
        "kind": "ExternalMetricValueList", "apiVersion": f"{GROUP}/{VERSION}",
        "metadata": {}, "items": items}))
    return 200
