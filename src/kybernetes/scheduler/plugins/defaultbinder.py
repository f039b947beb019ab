"""DefaultBinder: binds a pod by POSTing a ``Binding`` to its ``binding`` subresource."""

from __future__ import annotations

from typing import Any

from kybernetes.api.errors import StatusError
from kybernetes.scheduler.framework import BINDING_ANNOTATIONS, CycleState, Handle, Status
from kybernetes.scheduler.types import PodInfo


class DefaultBinder:
    name = "DefaultBinder"

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        md: dict[str, Any] = {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}
        annotations = state.read(BINDING_ANNOTATIONS)
        if annotations:
            md["annotations"] = dict(annotations)  # copied onto the pod with the binding
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": md,
                "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}
        try:
            await self.handle.client.request(
                "POST", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/binding",
                body=body)
        except StatusError as e:
            return Status.error(e.message)
        return None


def new(args: dict[str, Any], handle: Handle) -> DefaultBinder:
    return DefaultBinder(handle)
