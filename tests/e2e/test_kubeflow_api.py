"""kubectl applies Kubeflow PyTorchJobs and TFJobs: stored with the training operator's
defaults, refused (naming the field) when its webhooks would refuse them. API behaviour only:
the objects are deleted again before any controller would need to run them."""

from __future__ import annotations

import pytest

from tests.e2e.cluster import SCENARIOS, Cluster

pytestmark = pytest.mark.slow

BAD_PYTORCH = """\
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata:
  name: bad-ddp
spec:
  pytorchReplicaSpecs:
    Master:
      replicas: 2
      template:
        spec:
          containers:
          - name: trainer
            image: python:3.11
"""

BAD_TF = """\
apiVersion: kubeflow.org/v1
kind: TFJob
metadata:
  name: bad-tf
spec:
  runPolicy:
    restartScope: Everything
  tfReplicaSpecs:
    Chief:
      template:
        spec:
          containers:
          - {name: tensorflow, image: python:3.11}
    Master:
      template:
        spec:
          containers:
          - {name: tensorflow, image: python:3.11}
"""


def _ports(spec: dict[str, object]) -> list[object]:
    template = spec["template"]
    assert isinstance(template, dict)
    return [p for c in template["spec"]["containers"] for p in c.get("ports", [])]


def test_scenario_jobs_are_stored_defaulted(cluster: Cluster, namespace: str) -> None:
    """pytorchjob.yaml and tfjob.yaml apply unchanged; the stored jobs carry the defaults."""
    for name in ("pytorchjob.yaml", "tfjob.yaml"):
        out = cluster.kubectl("apply", "-n", namespace, "-f", str(SCENARIOS / name)).stdout
        assert "created" in out, out
    try:
        pt = cluster.kubectl_json("get", "pytorchjob", "ddp-linear", "-n", namespace)
        spec = pt["spec"]
        assert spec["runPolicy"] == {"cleanPodPolicy": "None", "suspend": False}
        assert spec["nprocPerNode"] == "auto"
        for rtype in ("Master", "Worker"):
            rspec = spec["pytorchReplicaSpecs"][rtype]
            assert rspec["restartPolicy"] == "OnFailure"
            assert _ports(rspec) == []  # the pods get the port; the job keeps its lists
        assert spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3

        tf = cluster.kubectl_json("get", "tfjob", "distributed-training", "-n", namespace)
        spec = tf["spec"]
        assert spec["runPolicy"] == {"cleanPodPolicy": "None", "suspend": False}
        assert spec["successPolicy"] == ""
        assert set(spec["tfReplicaSpecs"]) == {"Chief", "Worker", "PS"}
        for rspec in spec["tfReplicaSpecs"].values():
            assert _ports(rspec) == [] and rspec["restartPolicy"] == "OnFailure"

        # Applying again changes nothing, and kubectl says so (it sends these kinds a JSON
        # merge patch, which replaces whole lists: defaults stored inside the pod templates'
        # lists would make every apply "configured").
        for name, kind, job in (("pytorchjob.yaml", "pytorchjob", pt),
                                ("tfjob.yaml", "tfjob", tf)):
            out = cluster.kubectl("apply", "-n", namespace, "-f", str(SCENARIOS / name)).stdout
            assert "unchanged" in out and "configured" not in out, out
            now = cluster.kubectl_json("get", kind, job["metadata"]["name"], "-n", namespace)
            assert now["spec"] == job["spec"]
            assert now["metadata"]["generation"] == 1
    finally:
        for name in ("pytorchjob.yaml", "tfjob.yaml"):
            cluster.kubectl("delete", "-n", namespace, "-f", str(SCENARIOS / name),
                            "--ignore-not-found", check=False)
    assert cluster.kubectl_json("get", "pytorchjobs,tfjobs", "-n", namespace)["items"] == []


def test_restart_scope_is_explained(cluster: Cluster) -> None:
    """Our runPolicy.restartScope extension is in the published schema."""
    out = cluster.kubectl("explain", "pytorchjob.spec.runPolicy.restartScope").stdout
    assert "Replica" in out and "Job" in out, out


@pytest.mark.parametrize(("manifest", "kind", "expected"), [
    pytest.param(BAD_PYTORCH, "pytorchjob", [
        'The PyTorchJob "bad-ddp" is invalid',
        "spec.pytorchReplicaSpecs[Master].template.spec.containers: Required value: must have "
        "at least one container with name pytorch",
        "spec.pytorchReplicaSpecs[Master].replicas: Forbidden: must be 1",
    ], id="pytorch"),
    pytest.param(BAD_TF, "tfjob", [
        'The TFJob "bad-tf" is invalid',
        "spec.tfReplicaSpecs: Forbidden: must not have more than 1 Chief or Master role",
        'spec.runPolicy.restartScope: Unsupported value: "Everything": supported values: '
        '"Replica", "Job"',
    ], id="tf"),
])
def test_invalid_jobs_are_refused(cluster: Cluster, namespace: str, manifest: str, kind: str,
                                  expected: list[str]) -> None:
    """Invalid jobs are refused with a message naming each field, and nothing is created."""
    proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert cluster.kubectl_json("get", kind, "-n", namespace)["items"] == []
