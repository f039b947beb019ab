"""``external.metrics.k8s.io/v1beta1``: external metrics for the HorizontalPodAutoscaler,
from a provider the process registers (``APIServer.external_metrics``; ``kyb server``
registers the request rates its service proxy and ingress controller measure).

``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=...``
answers an ``ExternalMetricValueList``; an unknown metric, or no provider, is 404. With a
provider, discovery lists the group and its metrics (:func:`resources`), as an external
metrics adapter's APIService would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from kybernetes.api.errors import StatusError
from kybernetes.api.selectors import LabelSelector

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer, Request

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
Obj = dict[str, Any]


class ExternalMetrics(Protocol):
    """A provider: the metrics it serves, and their values."""

    @property
    def metrics(self) -> Sequence[str]:
        """The metric names discovery lists (it may answer to more)."""
        ...

    async def __call__(self, namespace: str, metric: str,
                       selector: LabelSelector) -> list[Obj] | None:
        """ExternalMetricValue items of ``metric`` in ``namespace`` whose labels
        ``selector`` matches, or None: no such metric."""
        ...


def resources(provider: ExternalMetrics) -> list[Obj]:
    """The group-version's APIResources: one per metric, as the upstream adapters list
    them (a namespaced "resource" named after the metric, read with ``get``)."""
    return [{"name": m, "singularName": "", "namespaced": True,
             "kind": "ExternalMetricValueList", "verbs": ["get"]} for m in provider.metrics]


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
