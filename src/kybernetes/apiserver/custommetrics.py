"""``custom.metrics.k8s.io/v1beta2``: metrics that describe objects, for the
HorizontalPodAutoscaler's ``Pods`` and ``Object`` metrics, from a provider the process
registers (``APIServer.custom_metrics``; ``kyb server`` registers the request rates its
service proxy and ingress controller measure, per pod and per Service).

The paths are those of an upstream custom metrics adapter::

    GET .../namespaces/{ns}/{resource}/{name}/{metric}?metricLabelSelector=
    GET .../namespaces/{ns}/{resource}/*/{metric}?labelSelector=&metricLabelSelector=
    GET .../{resource}/{name}/{metric}                 (cluster-scoped objects)
    GET .../namespaces/{ns}/metrics/{metric}           (the namespace itself)

each answered by a ``MetricValueList`` (one item for a named object, one per object the
label selector matches for ``*``). ``resource`` is a plural, group-qualified outside
the core group (``deployments.apps``). An unknown metric, resource or object is 404 with
the adapters' wording, so that an autoscaler's condition reads as it would upstream.
With a provider, discovery lists ``{resource}/{metric}`` per metric it serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Registry
from kybernetes.api.selectors import LabelSelector, SelectorError, parse_label_selector

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer, Request

GROUP = "custom.metrics.k8s.io"
VERSION = "v1beta2"
Obj = dict[str, Any]


class CustomMetrics(Protocol):
    """A provider: the metrics it serves, and their values."""

    @property
    def metrics(self) -> Sequence[tuple[str, str]]:
        """The (resource, metric) pairs discovery lists (it may answer to more)."""
        ...

    async def __call__(self, namespace: str, resource: str, name: str, metric: str,
                       selector: LabelSelector,
                       metric_selector: LabelSelector) -> list[Obj] | None:
        """MetricValue items of ``metric`` for object ``name`` of ``resource`` in
        ``namespace`` (``""`` for a cluster-scoped resource); ``name`` ``*``: every object
        ``selector`` matches. None: the provider has no such metric for that resource."""
        ...


def _namespaced(registry: Registry, resource: str) -> bool:
    plural, _, group = resource.partition(".")
    found = next((r for r in registry.resources(group) if r.plural == plural), None)
    return found is None or found.namespaced


def resources(provider: CustomMetrics, registry: Registry) -> list[Obj]:
    """The group-version's APIResources: ``{resource}/{metric}`` per metric, as the
    upstream adapters list them (scoped as the resource the metric describes)."""
    return [{"name": f"{resource}/{metric}", "singularName": "",
             "namespaced": _namespaced(registry, resource), "kind": "MetricValueList",
             "verbs": ["get"]} for resource, metric in provider.metrics]


_OPERATORS = {"in": "In", "notin": "NotIn", "exists": "Exists", "!": "DoesNotExist",
              "!=": "NotIn"}


def selector_object(sel: LabelSelector) -> Obj:
    """The ``metav1.LabelSelector`` form of a parsed selector (what a MetricValue's
    ``metric.selector`` holds); ``gt``/``lt`` requirements have none and are left out."""
    labels: dict[str, str] = {}
    expressions: list[Obj] = []
    for r in sel.requirements:
        if r.op in ("=", "==") or (r.op == "in" and len(r.values) == 1):
            labels[r.key] = r.values[0]
        elif r.op in _OPERATORS:
            expr: Obj = {"key": r.key, "operator": _OPERATORS[r.op]}
            if r.values:
                expr["values"] = sorted(r.values)
            expressions.append(expr)
    out: Obj = {}
    if labels:
        out["matchLabels"] = labels
    if expressions:
        out["matchExpressions"] = expressions
    return out


def _not_found(message: str = "the server could not find the requested resource") -> StatusError:
    return StatusError(404, "NotFound", message)


async def serve(server: APIServer, req: Request, version: str, rest: list[str]) -> int:
    from kybernetes.apiserver.app import send_bytes

    if req.method != "GET":
        raise StatusError(405, "MethodNotAllowed",
                          "the server does not allow this method on the requested resource")
    provider: CustomMetrics | None = server.custom_metrics
    if version != VERSION or provider is None:
        raise _not_found()
    if len(rest) == 5 and rest[0] == "namespaces":
        ns, resource, name, metric = rest[1:]
    elif len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "metrics":
        ns, resource, name, metric = "", "namespaces", rest[1], rest[3]
    elif len(rest) == 3 and rest[0] != "namespaces":
        ns, resource, name, metric = "", rest[0], rest[1], rest[2]
    else:
        raise _not_found()
    label, _ = server.selectors(req)
    try:
        metric_selector = parse_label_selector(req.query.get("metricLabelSelector"))
    except SelectorError as e:
        raise StatusError.bad_request(str(e)) from None
    items = await provider(ns, resource, name, metric, label, metric_selector)
    if items is None:
        raise _not_found(f"the server could not find the metric {metric} for {resource}")
    if name != "*":
        if not items:
            raise _not_found(
                f"the server could not find the metric {metric} for {resource} {name}")
        items = items[:1]
    if not metric_selector.empty:
        wanted = selector_object(metric_selector)
        for item in items:
            item.setdefault("metric", {}).setdefault("selector", wanted)
    await send_bytes(req.send, 200, orjson.dumps({
        "kind": "MetricValueList", "apiVersion": f"{GROUP}/{VERSION}",
        "metadata": {}, "items": items}))
    return 200
