"""ResourceQuota arithmetic and admission decisions (upstream's messages)."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.api import quota as q
from kybernetes.apiserver.quota import QuotaError, evaluate
from kybernetes.controllers.resourcequota import quota_status, status_changed

Obj = dict[str, Any]


def pod(*containers: Obj, phase: str = "") -> Obj:
    p: Obj = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": list(containers)}}
    if phase:
        p["status"] = {"phase": phase}
    return p


def ctr(name: str = "c", requests: Obj | None = None, limits: Obj | None = None) -> Obj:
    res: Obj = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": name, "resources": res}


def quota(hard: Obj, used: Obj | None = None) -> Obj:
    return {"metadata": {"name": "compute", "namespace": "ns"}, "spec": {"hard": hard},
            "status": {"hard": hard, "used": used if used is not None else
                       {k: "0" for k in hard}}}


TEAM = {"requests.cpu": "2", "requests.memory": "4Gi", "requests.nvidia.com/gpu": "2",
        "pods": "10"}


@pytest.mark.parametrize(("obj", "expected"), [
    pytest.param(pod(ctr(requests={"cpu": "500m", "memory": "1Gi"}, limits={"cpu": "1"})),
                 {"count/pods": "1", "pods": "1", "cpu": "500m", "requests.cpu": "500m",
                  "memory": "1Gi", "requests.memory": "1Gi", "limits.cpu": "1"}, id="compute"),
    pytest.param(pod(ctr(requests={"nvidia.com/gpu": "1"})),
                 {"count/pods": "1", "pods": "1", "requests.nvidia.com/gpu": "1"},
                 id="extended"),
    pytest.param(pod(ctr(requests={"cpu": "1"}), phase="Succeeded"), {"count/pods": "1"},
                 id="terminal-pod"),
    pytest.param(pod(ctr("a", requests={"cpu": "1"}), ctr("b", requests={"cpu": "250m"})),
                 {"count/pods": "1", "pods": "1", "cpu": "1250m", "requests.cpu": "1250m"},
                 id="summed"),
])
def test_pod_usage(obj: Obj, expected: Obj) -> None:
    assert q.to_list(q.pod_usage(obj)) == dict(sorted(expected.items()))


@pytest.mark.parametrize(("plural", "group", "obj", "expected"), [
    pytest.param("persistentvolumeclaims", "", {"spec": {"resources": {"requests": {
        "storage": "1Gi"}}}}, {"count/persistentvolumeclaims": "1",
                               "persistentvolumeclaims": "1", "requests.storage": "1Gi"},
        id="claim"),
    pytest.param("services", "", {"spec": {"type": "NodePort", "ports": [{}, {}]}},
                 {"count/services": "1", "services": "1", "services.nodeports": "2"},
                 id="nodeport-service"),
    pytest.param("configmaps", "", {}, {"count/configmaps": "1", "configmaps": "1"},
                 id="configmap"),
    pytest.param("deployments", "apps", {}, {"count/deployments.apps": "1"}, id="count-group"),
])
def test_object_usage(plural: str, group: str, obj: Obj, expected: Obj) -> None:
    assert q.to_list(q.object_usage(plural, group, obj)) == dict(sorted(expected.items()))


@pytest.mark.parametrize(("obj", "hard", "used", "message"), [
    pytest.param(pod(ctr(requests={"cpu": "3", "memory": "1Gi"})), TEAM, None,
                 "exceeded quota: compute, requested: requests.cpu=3, used: requests.cpu=0, "
                 "limited: requests.cpu=2", id="exceeded-cpu"),
    pytest.param(pod(ctr(requests={"cpu": "1", "memory": "1Gi"})), TEAM,
                 {**{k: "0" for k in TEAM}, "requests.cpu": "2", "pods": "2"},
                 "exceeded quota: compute, requested: requests.cpu=1, used: requests.cpu=2, "
                 "limited: requests.cpu=2", id="exceeded-used"),
    pytest.param(pod(ctr(requests={"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "3"})),
                 TEAM, None,
                 "exceeded quota: compute, requested: requests.nvidia.com/gpu=3, used: "
                 "requests.nvidia.com/gpu=0, limited: requests.nvidia.com/gpu=2", id="gpu"),
    pytest.param(pod(ctr()), {"requests.cpu": "2", "limits.cpu": "2"}, None,
                 "failed quota: compute: must specify limits.cpu for: c; requests.cpu for: c",
                 id="must-specify"),
    pytest.param(pod(ctr(requests={"cpu": "1"})), {"requests.cpu": "2"}, {},
                 "status unknown for quota: compute, resources: requests.cpu",
                 id="status-unknown"),
    pytest.param(pod(ctr("a", requests={"cpu": "1"}), ctr("b", requests={"memory": "1Gi"})),
                 {"requests.cpu": "4", "requests.memory": "1Gi"}, None,
                 "failed quota: compute: must specify requests.cpu for: b; requests.memory "
                 "for: a", id="must-specify-two"),
])
def test_evaluate_refuses(obj: Obj, hard: Obj, used: Obj | None, message: str) -> None:
    usage = q.object_usage("pods", "", obj)
    with pytest.raises(QuotaError) as e:
        evaluate("pods", "", obj, quota(hard, used), usage)
    assert str(e.value) == message


@pytest.mark.parametrize(("plural", "obj", "hard", "used", "new"), [
    pytest.param("pods", pod(ctr(requests={"cpu": "1", "memory": "1Gi"})), TEAM,
                 {**{k: "0" for k in TEAM}, "requests.cpu": "1", "pods": "1"},
                 {"pods": "2", "requests.cpu": "2", "requests.memory": "1Gi",
                  "requests.nvidia.com/gpu": "0"}, id="charges-to-the-limit"),
    pytest.param("pods", pod(ctr(requests={"cpu": "5", "memory": "9Gi"}), phase="Failed"),
                 TEAM, None, None, id="terminal-not-charged"),
    pytest.param("configmaps", {}, {"configmaps": "1"}, None, {"configmaps": "1"},
                 id="count"),
    pytest.param("secrets", {}, {"configmaps": "1"}, None, None, id="not-concerned"),
])
def test_evaluate_charges(plural: str, obj: Obj, hard: Obj, used: Obj | None,
                          new: Obj | None) -> None:
    out = evaluate(plural, "", obj, quota(hard, used), q.object_usage(plural, "", obj))
    assert (q.to_list(out) if out is not None else None) == new


def test_controller_status() -> None:
    qt = {"metadata": {"name": "compute", "namespace": "ns"}, "spec": {"hard": TEAM}}
    pods = [pod(ctr(requests={"cpu": "500m", "memory": "512Mi"})),
            pod(ctr(requests={"cpu": "1", "memory": "1Gi"})),
            pod(ctr(requests={"cpu": "4"}), phase="Succeeded")]
    used = q.used_by(TEAM, [q.pod_usage(p) for p in pods])
    status = quota_status(qt, used)
    assert status == {"hard": {"pods": "10", "requests.cpu": "2", "requests.memory": "4Gi",
                               "requests.nvidia.com/gpu": "2"},
                      "used": {"pods": "2", "requests.cpu": "1500m",
                               "requests.memory": "1536Mi", "requests.nvidia.com/gpu": "0"}}
    assert status_changed(qt, status)
    assert not status_changed({**qt, "status": status}, status)
