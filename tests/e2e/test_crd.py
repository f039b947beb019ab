"""A CustomResourceDefinition is served like a built-in kind."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.e2e.cluster import KUBECTL, Cluster

pytestmark = pytest.mark.slow

CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: models.ml.example.com
spec:
  group: ml.example.com
  scope: Namespaced
  names: {plural: models, singular: model, kind: Model, shortNames: [mdl]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Framework, type: string, jsonPath: .spec.framework}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [framework]
            properties:
              framework: {type: string, enum: [pytorch, tensorflow, jax]}
              replicas: {type: integer, minimum: 0, default: 1}
              uri: {type: string}
          status:
            type: object
            properties:
              phase: {type: string}
"""

MODEL = """apiVersion: ml.example.com/v1
kind: Model
metadata: {{name: {name}}}
spec: {{framework: {framework}, uri: s3://models/{name}}}
"""


def test_crd_lifecycle(cluster: Cluster, namespace: str) -> None:
    """create CRD -> Established; apply/get/watch/validate CRs; delete CRD removes all."""
    cluster.kubectl("apply", "-f", "-", input=CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/models.ml.example.com",
                    "--timeout=20s")
    crd = cluster.kubectl_json("get", "crd", "models.ml.example.com")
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds == {"NamesAccepted": "True", "Established": "True"}
    ns = ("-n", namespace)
    watcher = subprocess.Popen(
        [KUBECTL, f"--cache-dir={cluster.cache_dir / 'kube-cache'}", "get", "models", *ns, "-w",
         "-o", "custom-columns=NAME:.metadata.name,FW:.spec.framework"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env())
    try:
        time.sleep(1.5)
        cluster.kubectl("apply", *ns, "-f", "-", input=MODEL.format(name="resnet",
                                                                     framework="pytorch"))
        cluster.kubectl("apply", *ns, "-f", "-", input=MODEL.format(name="resnet",
                                                                     framework="jax"))
        time.sleep(1.5)
    finally:
        watcher.send_signal(signal.SIGINT)
        out, _ = watcher.communicate(timeout=10)
    assert [line.split() for line in out.splitlines()[1:]][:2] == [
        ["resnet", "pytorch"], ["resnet", "jax"]], out
    table = cluster.kubectl("get", "mdl", *ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "FRAMEWORK", "REPLICAS", "AGE"]
    assert table[1].split()[:3] == ["resnet", "jax", "1"]  # replicas defaulted by the schema
    bad = cluster.kubectl("apply", *ns, "-f", "-", check=False,
                          input=MODEL.format(name="bad", framework="caffe"))
    assert bad.returncode != 0
    assert 'spec.framework: Unsupported value: "caffe": supported values: "pytorch", ' \
           '"tensorflow", "jax"' in bad.stderr
    status = cluster.kubectl("patch", "model", "resnet", *ns, "--subresource=status",
                             "--type=merge", "-p", '{"status":{"phase":"Ready"}}')
    assert status.returncode == 0
    assert cluster.kubectl_json("get", "model", "resnet", *ns)["status"] == {"phase": "Ready"}
    explain = cluster.kubectl("explain", "model.spec").stdout
    assert "framework\t<string> -required-" in explain
    cluster.kubectl("delete", "crd", "models.ml.example.com", timeout=30)
    # a kubectl without cached discovery, as after the 6-hour discovery cache expires
    gone = cluster.kubectl("get", "models", *ns, check=False, cache="fresh-cache")
    assert gone.returncode != 0
    assert 'the server doesn\'t have a resource type "models"' in gone.stderr
    # re-creating the CRD shows that its objects went with it
    cluster.kubectl("apply", "-f", "-", input=CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/models.ml.example.com",
                    "--timeout=20s")
    assert cluster.kubectl_json("get", "models", *ns)["items"] == []
    cluster.kubectl("delete", "crd", "models.ml.example.com", timeout=30)
