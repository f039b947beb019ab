"""PersistentVolumeClaims: the built-in local-path provisioner, binding, protection and
reclaim, with pods that really write and read the volume."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.e2e.cluster import SCENARIOS, Cluster
from tests.e2e.test_pods import apply, pod, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
    reason="running pods needs root and the CNI plugins (Debian containernetworking-plugins)")]


def train_job(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    """The claim of ../shared/scenarios/train-job.yaml and its Job's pod, as a plain pod
    on the server's node (Jobs get their controller later)."""
    docs = list(yaml.safe_load_all((SCENARIOS / "train-job.yaml").read_text()))
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    job = next(d for d in docs if d["kind"] == "Job")
    template = copy.deepcopy(job["spec"]["template"])
    template["spec"]["nodeName"] = cluster.node_name
    for c in template["spec"]["containers"]:
        c["env"] = [{"name": "EPOCHS", "value": "20"}]  # fewer epochs: the test's time
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "train", **template["metadata"]}, "spec": template["spec"]}
    return claim, pod


def reader(cluster: Cluster, name: str, claim: str, script: str, *,
           read_only: bool = False, restart: str = "Never") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": cluster.node_name, "restartPolicy": restart,
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "busybox",
                                     "command": ["sh", "-c", script],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {
                         "claimName": claim, "readOnly": read_only}}]}}


def phase(cluster: Cluster, ns: str, name: str) -> str:
    return str((pod(cluster, ns, name).get("status") or {}).get("phase", ""))


def gone(cluster: Cluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, check=False).returncode != 0


def test_train_job_model_survives_in_its_claim(cluster: Cluster, namespace: str) -> None:
    """train-job.yaml's pod writes the model into its claim, provisioned on first use;
    a second pod mounting the same claim reads it; deleting the claim waits for the pods
    that use it, then removes the volume and its directory (reclaim policy Delete)."""
    sc = cluster.kubectl_json("get", "storageclass", "local-path")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == \
        "true" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    claim, train = train_job(cluster)
    apply(cluster, namespace, claim)
    pvc = wait_for("the claim to wait for a consumer", lambda: (c := cluster.kubectl_json(
        "get", "pvc", "models", "-n", namespace)).get("status", {}).get("phase") and c)
    assert pvc["status"]["phase"] == "Pending"
    assert pvc["spec"]["storageClassName"] == "local-path"  # the default class
    assert "kubernetes.io/pvc-protection" in pvc["metadata"]["finalizers"]

    apply(cluster, namespace, train)
    wait_for("training to finish", lambda: phase(cluster, namespace, "train") == "Succeeded",
             timeout=90)
    assert "trained" in cluster.kubectl("logs", "train", "-n", namespace).stdout
    pvc = cluster.kubectl_json("get", "pvc", "models", "-n", namespace)
    assert pvc["status"]["phase"] == "Bound" and pvc["status"]["capacity"]["storage"] == "1Gi"
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == \
        cluster.node_name
    pv = cluster.kubectl_json("get", "pv", pvc["spec"]["volumeName"])
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["name"] == "models"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    directory = Path(pv["spec"]["hostPath"]["path"])
    assert directory.is_relative_to(cluster.data_dir)
    model = orjson.loads((directory / "model.json").read_bytes())
    assert set(model) == {"weights", "bias"}

    apply(cluster, namespace, reader(cluster, "serve", "models",
                                     "cat /data/model.json; echo; echo x > /data/other || "
                                     "echo read-only; sleep 3600",
                                     read_only=True, restart="Always"))
    out = wait_for("the reader's output", lambda: "read-only" in (s := cluster.kubectl(
        "logs", "serve", "-n", namespace, check=False).stdout) and s)
    assert orjson.loads(out.splitlines()[0]) == model
    reasons = [e["reason"] for e in cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector",
        "involvedObject.kind=PersistentVolumeClaim")["items"]]
    assert {"WaitForFirstConsumer", "Provisioning", "ProvisioningSucceeded"} <= set(reasons)

    # in use by a running pod: the claim stays, Terminating
    cluster.kubectl("delete", "pvc", "models", "-n", namespace, "--wait=false")
    pvc = cluster.kubectl_json("get", "pvc", "models", "-n", namespace)
    assert pvc["metadata"].get("deletionTimestamp")
    assert "Terminating" in cluster.kubectl("get", "pvc", "models", "-n", namespace).stdout
    cluster.kubectl("delete", "pod", "serve", "-n", namespace)
    wait_for("the claim to go", lambda: gone(cluster, "pvc", "models", "-n", namespace))
    wait_for("the volume to go", lambda: gone(cluster, "pv", pv["metadata"]["name"]))
    assert not directory.exists()


def test_static_volumes_bind_smallest_fit_and_retain(cluster: Cluster, namespace: str,
                                                     tmp_path: Path) -> None:
    """A claim binds the smallest Available volume of its class that fits; deleting it
    leaves a Retain volume Released, with its data."""
    cls = f"manual-{namespace}"[:60]

    def volume(name: str, size: str) -> dict[str, Any]:
        path = tmp_path / name
        path.mkdir()
        return {"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"{namespace}-{name}"[:60], "labels": {"size": size}},
                "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain", "storageClassName": cls,
                         "hostPath": {"path": str(path)}}}

    big, small, tiny = volume("big", "5Gi"), volume("small", "2Gi"), volume("tiny", "500Mi")
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                      "resources": {"requests": {"storage": "1Gi"}}}}
    try:
        apply(cluster, namespace, big, small, tiny)  # cluster-scoped: -n is ignored
        for v in (big, small, tiny):
            wait_for("Available", lambda v=v: cluster.kubectl_json(
                "get", "pv", v["metadata"]["name"]).get("status", {}).get("phase")
                == "Available")
        apply(cluster, namespace, claim)
        pvc = wait_for("Bound", lambda: (c := cluster.kubectl_json(
            "get", "pvc", "data", "-n", namespace)).get("status", {}).get("phase")
            == "Bound" and c)
        assert pvc["spec"]["volumeName"] == small["metadata"]["name"]
        assert pvc["status"]["capacity"]["storage"] == "2Gi"
        apply(cluster, namespace, reader(cluster, "w", "data", "echo kept > /data/f"))
        wait_for("written", lambda: phase(cluster, namespace, "w") == "Succeeded")
        cluster.kubectl("delete", "pod", "w", "-n", namespace)
        cluster.kubectl("delete", "pvc", "data", "-n", namespace)
        pv = wait_for("Released", lambda: (v := cluster.kubectl_json(
            "get", "pv", small["metadata"]["name"])).get("status", {}).get("phase")
            == "Released" and v)
        assert pv["spec"]["claimRef"]["name"] == "data"
        assert (tmp_path / "small" / "f").read_text() == "kept\n"
        # the other volumes were never touched
        assert cluster.kubectl_json("get", "pv", big["metadata"]["name"])["status"][
            "phase"] == "Available"
    finally:
        for v in (big, small, tiny):
            cluster.kubectl("delete", "pv", v["metadata"]["name"], "--wait=false",
                            check=False)


def test_claim_without_class_or_volume_stays_pending(cluster: Cluster,
                                                     namespace: str) -> None:
    """storageClassName "" asks for no provisioning: Pending, with the reason as an
    event; a pod using it waits in ContainerCreating with a FailedMount event."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "none"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                      "resources": {"requests": {"storage": "1Gi"}}}}
    apply(cluster, namespace, claim, reader(cluster, "waits", "none", "true"))

    def event(reason: str) -> Any:
        items = cluster.kubectl_json("get", "events", "-n", namespace)["items"]
        return next((e for e in items if e["reason"] == reason), None)

    failed = wait_for("FailedBinding", lambda: event("FailedBinding"))
    assert failed["message"] == ("no persistent volumes available for this claim and no "
                                 "storage class is set")
    mount = wait_for("FailedMount", lambda: event("FailedMount"))
    assert 'persistentvolumeclaim "none" is not bound' in mount["message"]
    assert cluster.kubectl_json("get", "pvc", "none", "-n", namespace)["status"][
        "phase"] == "Pending"
    assert phase(cluster, namespace, "waits") == "Pending"


def test_scheduler_binds_a_wait_for_first_consumer_claim(cluster: Cluster,
                                                         namespace: str) -> None:
    """A pod without a node and a fresh local-path claim: the scheduler picks the node,
    has the volume provisioned there (selected-node), waits for the binding, then binds
    the pod, which writes to the volume."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "scratch"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "10Mi"}}}}
    writer = reader(cluster, "writer", "scratch", "echo ok > /data/out && cat /data/out")
    del writer["spec"]["nodeName"]
    apply(cluster, namespace, claim, writer)
    wait_for("the writer to succeed", lambda: phase(cluster, namespace, "writer") == "Succeeded",
             timeout=60)
    bound = cluster.kubectl_json("get", "pvc", "scratch", "-n", namespace)
    assert bound["status"]["phase"] == "Bound"
    assert bound["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == \
        cluster.node_name
    assert pod(cluster, namespace, "writer")["spec"]["nodeName"] == cluster.node_name
    assert cluster.kubectl("logs", "writer", "-n", namespace).stdout == "ok\n"
