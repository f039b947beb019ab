"""LimitRange admission: defaults and min/max/ratio checks with upstream's messages."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.apiserver.limitrange import (
    ANNOTATION,
    apply_defaults,
    validate_claim,
    validate_pod,
)

Obj = dict[str, Any]


def pod(*containers: Obj) -> Obj:
    return {"metadata": {"name": "p"}, "spec": {"containers": list(containers)}}


def ctr(name: str = "c", requests: Obj | None = None, limits: Obj | None = None) -> Obj:
    res: Obj = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": name, "resources": res}


CONTAINER = {"type": "Container", "max": {"cpu": "2", "memory": "4Gi"},
             "min": {"cpu": "100m"}, "default": {"cpu": "500m", "memory": "512Mi"},
             "defaultRequest": {"cpu": "250m", "memory": "256Mi"}}


def test_defaults_fill_missing_only() -> None:
    p = pod(ctr("a"), ctr("b", requests={"cpu": "1"}, limits={"cpu": "2"}))
    apply_defaults(p, [CONTAINER])
    assert p["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "500m", "memory": "512Mi"},
        "requests": {"cpu": "250m", "memory": "256Mi"}}
    assert p["spec"]["containers"][1]["resources"] == {
        "limits": {"cpu": "2", "memory": "512Mi"}, "requests": {"cpu": "1", "memory": "256Mi"}}
    assert p["metadata"]["annotations"][ANNOTATION] == (
        "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for "
        "container a; memory request for container b; memory limit for container b")


@pytest.mark.parametrize(("obj", "items", "errors"), [
    pytest.param(pod(ctr(requests={"cpu": "1", "memory": "1Gi"},
                         limits={"cpu": "4", "memory": "1Gi"})), [CONTAINER],
                 ["maximum cpu usage per Container is 2, but limit is 4"], id="max-limit"),
    pytest.param(pod(ctr(requests={"cpu": "1"})), [{"type": "Container", "max": {"cpu": "2"}}],
                 ["maximum cpu usage per Container is 2.  No limit is specified"],
                 id="max-no-limit"),
    pytest.param(pod(ctr(requests={"cpu": "50m", "memory": "1Gi"},
                         limits={"cpu": "1", "memory": "1Gi"})), [CONTAINER],
                 ["minimum cpu usage per Container is 100m, but request is 50m"],
                 id="min-request"),
    pytest.param(pod(ctr(limits={"memory": "1Gi"})),
                 [{"type": "Container", "min": {"memory": "100Mi"}}],
                 ["minimum memory usage per Container is 100Mi.  No request is specified"],
                 id="min-no-request"),
    pytest.param(pod(ctr(requests={"cpu": "100m"}, limits={"cpu": "1"})),
                 [{"type": "Container", "maxLimitRequestRatio": {"cpu": "4"}}],
                 ["cpu max limit to request ratio per Container is 4, but provided ratio is "
                  "10.000000"], id="ratio"),
    pytest.param(pod(ctr("a", requests={"cpu": "1"}, limits={"cpu": "1"}),
                     ctr("b", requests={"cpu": "1"}, limits={"cpu": "1"})),
                 [{"type": "Pod", "max": {"cpu": "1500m"}}],
                 ["maximum cpu usage per Pod is 1500m, but limit is 2"], id="pod-max"),
    pytest.param(pod(ctr(requests={"cpu": "1", "memory": "1Gi"},
                         limits={"cpu": "1", "memory": "1Gi"})), [CONTAINER], [], id="fits"),
])
def test_validate_pod(obj: Obj, items: list[Obj], errors: list[str]) -> None:
    assert validate_pod(obj, items) == errors


@pytest.mark.parametrize(("storage", "errors"), [
    pytest.param("1Gi", [], id="fits"),
    pytest.param("20Gi", ["maximum storage usage per PersistentVolumeClaim is 10Gi, but "
                          "request is 20Gi"], id="too-big"),
    pytest.param("100Mi", ["minimum storage usage per PersistentVolumeClaim is 500Mi, but "
                           "request is 100Mi"], id="too-small"),
])
def test_validate_claim(storage: str, errors: list[str]) -> None:
    claim = {"spec": {"resources": {"requests": {"storage": storage}}}}
    items = [{"type": "PersistentVolumeClaim", "min": {"storage": "500Mi"},
              "max": {"storage": "10Gi"}}]
    assert validate_claim(claim, items) == errors
