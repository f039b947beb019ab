"""Schemas of the resource metrics API, ``metrics.k8s.io/v1beta1`` (NodeMetrics and
PodMetrics, read-only), as metrics-server serves it; field names follow
``k8s.io/metrics/pkg/apis/metrics/v1beta1``."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
P = "io.k8s.metrics.pkg.apis.metrics.v1beta1."
_META = "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."
_QUANTITY = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.api.resource.Quantity"}


def _gvk(kind: str) -> list[Schema]:
    return [{"group": GROUP, "version": VERSION, "kind": kind}]


def _usage(desc: str) -> Schema:
    return {"type": "object", "additionalProperties": _QUANTITY, "description": desc}


def _kind(kind: str, props: Schema, desc: str) -> Schema:
    return {"description": desc, "type": "object",
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"$ref": _META + "ObjectMeta"},
                           "timestamp": {"$ref": _META + "Time",
                                         "description": "The time the usage was read."},
                           "window": {"type": "string",
                                      "description": "The interval the usage rate covers."},
                           **props},
            "x-kubernetes-group-version-kind": _gvk(kind)}


def _list(kind: str) -> Schema:
    return {"description": f"{kind}List is a list of {kind}.", "type": "object",
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"$ref": _META + "ListMeta"},
                           "items": {"type": "array", "items": {"$ref": "#/$defs/" + P + kind}}},
            "required": ["items"], "x-kubernetes-group-version-kind": _gvk(kind + "List")}


DEFINITIONS: dict[str, Schema] = {
    P + "ContainerMetrics": {
        "description": "ContainerMetrics sets resource usage metrics of a container.",
        "type": "object", "required": ["name", "usage"],
        "properties": {"name": {"type": "string", "description": "Container name."},
                       "usage": _usage("The memory and CPU usage of the container.")}},
    P + "NodeMetrics": _kind("NodeMetrics", {
        "usage": _usage("The memory and CPU usage of the node.")},
        "NodeMetrics sets resource usage metrics of a node."),
    P + "PodMetrics": _kind("PodMetrics", {
        "containers": {"type": "array", "items": {"$ref": "#/$defs/" + P + "ContainerMetrics"},
                       "description": "Metrics for all containers are collected within the "
                                      "same time window."}},
        "PodMetrics sets resource usage metrics of a pod."),
    P + "NodeMetricsList": _list("NodeMetrics"),
    P + "PodMetricsList": _list("PodMetrics"),
}
