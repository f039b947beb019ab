"""The official kubernetes Python client works unchanged."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.e2e.cluster import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield c


def _pod(name: str) -> dict[str, Any]:
    """A pod no scheduler profile serves: it stays as the test leaves it."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"a": "1"}},
            "spec": {"schedulerName": "manual", "containers": [{"name": "main", "image": "busybox",
                                     "command": ["sleep", "3600"]}]}}


def test_pods_crud(api: client.ApiClient, namespace: str) -> None:
    """create/read/list/patch (three types)/replace/delete of a pod."""
    core = client.CoreV1Api(api)
    created = core.create_namespaced_pod(namespace, _pod("p1"))
    assert created.metadata.uid and created.status.phase == "Pending"
    assert created.spec.restart_policy == "Always"
    got = core.read_namespaced_pod("p1", namespace)
    assert got.metadata.resource_version == created.metadata.resource_version
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == ["p1"]
    assert core.list_namespaced_pod(namespace, label_selector="a=2").items == []
    core.patch_namespaced_pod("p1", namespace, {"metadata": {"labels": {"b": "2"}}})
    core.patch_namespaced_pod("p1", namespace, [{"op": "add", "path": "/metadata/labels/c",
                                                "value": "3"}])
    got = core.read_namespaced_pod("p1", namespace)
    assert got.metadata.labels == {"a": "1", "b": "2", "c": "3"}
    got.metadata.labels["d"] = "4"
    replaced = core.replace_namespaced_pod("p1", namespace, got)
    assert replaced.metadata.labels["d"] == "4"
    core.delete_namespaced_pod("p1", namespace)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("p1", namespace)
    assert e.value.status == 404


def test_deployments_crud_and_patch_types(api: client.ApiClient, namespace: str) -> None:
    """Deployments: create, strategic/merge/JSON patches, scale, replace, delete."""
    apps = client.AppsV1Api(api)
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    d = apps.create_namespaced_deployment(namespace, body)
    assert d.spec.strategy.type == "RollingUpdate"
    assert d.spec.revision_history_limit == 10
    apps.patch_namespaced_deployment("d", namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "nginx:2"}]}}}})
    d = apps.read_namespaced_deployment("d", namespace)
    assert [c.image for c in d.spec.template.spec.containers] == ["nginx:2"]
    apps.patch_namespaced_deployment("d", namespace,
                                     [{"op": "replace", "path": "/spec/replicas", "value": 3}])
    assert apps.read_namespaced_deployment("d", namespace).spec.replicas == 3
    apps.patch_namespaced_deployment_scale("d", namespace, {"spec": {"replicas": 2}})
    assert apps.read_namespaced_deployment_scale("d", namespace).spec.replicas == 2
    # a replace carries the resourceVersion it read: the controllers' status writes in
    # between make the server answer 409, and the client reads again (client-go's
    # RetryOnConflict)
    for attempt in range(5):
        d = apps.read_namespaced_deployment("d", namespace)
        d.spec.replicas = 4
        try:
            replaced = apps.replace_namespaced_deployment("d", namespace, d)
            break
        except client.exceptions.ApiException as e:
            if e.status != 409 or attempt == 4:
                raise
    assert replaced.spec.replicas == 4
    assert d.metadata.generation >= 1
    apps.delete_namespaced_deployment("d", namespace)
    assert apps.list_namespaced_deployment(namespace).items == []


def test_configmaps_merge_patch(api: client.ApiClient, namespace: str) -> None:
    """ConfigMaps through the generic API client with an explicit merge patch."""
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("cm", namespace, {"data": {"b": "2", "a": None}},
                                     _content_type="application/merge-patch+json")
    assert core.read_namespaced_config_map("cm", namespace).data == {"b": "2"}
    core.delete_namespaced_config_map("cm", namespace)


def test_watch_without_resource_version(api: client.ApiClient, namespace: str) -> None:
    """A watch started without a resourceVersion sees existing objects, then changes."""
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "w0"}})
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def changes() -> None:
        time.sleep(1)
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "w1"}})
        core.patch_namespaced_config_map("w1", namespace, {"data": {"x": "y"}})
        core.delete_namespaced_config_map("w0", namespace)

    t = threading.Thread(target=changes)
    t.start()
    for ev in w.stream(core.list_namespaced_config_map, namespace, timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    t.join()
    assert ("ADDED", "w0") in seen
    assert seen.index(("ADDED", "w0")) < seen.index(("ADDED", "w1"))
    assert seen[-2:] == [("MODIFIED", "w1"), ("DELETED", "w0")]
