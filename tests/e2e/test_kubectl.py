"""The real kubectl 1.32 drives kyb server as it drives a Kubernetes cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.e2e.cluster import KUBECTL, SCENARIOS, Cluster

pytestmark = pytest.mark.slow


def test_version_and_discovery(cluster: Cluster) -> None:
    """version, api-resources and cluster-info succeed and show what is served."""
    out = cluster.kubectl("version", "-o", "json").stdout
    server = orjson.loads(out)["serverVersion"]
    assert (server["major"], server["minor"]) == ("1", "32")
    resources = cluster.kubectl("api-resources").stdout
    for line in ("deployments   deploy   apps/v1", "horizontalpodautoscalers   hpa",
                 "customresourcedefinitions   crd,crds", "pytorchjobs", "events   ev   events.k8s.io/v1"):
        assert " ".join(line.split()) in " ".join(resources.split()), line
    info = cluster.kubectl("cluster-info").stdout
    assert "Kubernetes control plane is running at" in info
    assert cluster.url in info


def test_apply_every_scenario(cluster: Cluster, namespace: str) -> None:
    """Every manifest in shared/scenarios applies unchanged with server-side validation."""
    files = sorted(SCENARIOS.glob("*.yaml"))
    assert len(files) >= 9
    # teams.yaml creates its own namespaces; the rest go to the test namespace
    for f in files:
        # teams.yaml names its own namespaces
        where = () if f.name == "teams.yaml" else ("-n", namespace)
        out = cluster.kubectl("apply", *where, "-f", str(f)).stdout
        assert "created" in out or "configured" in out or "unchanged" in out, out
    pods = cluster.kubectl_json("get", "deploy", "-n", namespace)
    names = {d["metadata"]["name"] for d in pods["items"]}
    assert {"ml-model", "model1", "model2", "gpu-model"} <= names
    assert cluster.kubectl_json("get", "pytorchjob", "ddp-linear", "-n", namespace)["kind"] == \
        "PyTorchJob"
    # applying again changes nothing
    again = cluster.kubectl("apply", "-n", namespace, "-f",
                            str(SCENARIOS / "serve-model.yaml")).stdout
    assert "unchanged" in again
    cluster.kubectl("delete", "-f", str(SCENARIOS / "teams.yaml"), "--wait=false",
                    "--ignore-not-found")  # the namespaces may take their quotas first


def test_reapply_edited_manifest_is_a_strategic_merge(cluster: Cluster, namespace: str,
                                                     tmp_path: Path) -> None:
    """Editing an env var and the image, then applying, patches just those fields."""
    src = (SCENARIOS / "ab-test.yaml").read_text()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=src)
    edited = src.replace("MODEL_VERSION, value: v1}", "MODEL_VERSION, value: v1-canary}", 1) \
        .replace("image: python:3.11", "image: python:3.12", 1)
    assert edited != src
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=edited).stdout
    assert "deployment.apps/model1 configured" in out
    assert "deployment.apps/model2 unchanged" in out
    dep = cluster.kubectl_json("get", "deploy", "model1", "-n", namespace)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "python:3.12"
    assert {"name": "MODEL_VERSION", "value": "v1-canary"} in c["env"]
    assert {"name": "MODEL_PATH", "value": "/app/model.json"} in c["env"]
    assert dep["metadata"]["generation"] == 2
    yml = cluster.kubectl("get", "deploy", "model1", "-n", namespace, "-o", "yaml").stdout
    assert "image: python:3.12" in yml and "value: v1-canary" in yml


def test_apply_server_side(cluster: Cluster, namespace: str) -> None:
    """apply --server-side creates, records managedFields, and reports conflicts."""
    manifest = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: '1'\n")
    out = cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                          input=manifest).stdout
    assert "configmap/ssa serverside-applied" in out
    cm = cluster.kubectl_json("get", "cm", "ssa", "-n", namespace, "--show-managed-fields")
    managers = {m["manager"]: m for m in cm["metadata"]["managedFields"]}
    assert managers["kubectl"]["operation"] == "Apply"
    assert managers["kubectl"]["fieldsV1"] == {"f:data": {"f:a": {}}}
    # another manager changes the field; a plain re-apply of a different value conflicts
    cluster.kubectl("patch", "cm", "ssa", "-n", namespace, "--type=merge",
                    "-p", '{"data":{"a":"2"}}')
    conflict = cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                               input=manifest.replace("'1'", "'3'"), check=False)
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr.lower() and ".data.a" in conflict.stderr
    forced = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace,
                             "-f", "-", input=manifest.replace("'1'", "'3'"))
    assert forced.returncode == 0
    assert cluster.kubectl_json("get", "cm", "ssa", "-n", namespace)["data"]["a"] == "3"


def test_the_creator_owns_what_it_sent_not_what_admission_added(cluster: Cluster,
                                                                 namespace: str) -> None:
    """As upstream, ``kubectl run`` owns the fields it sent and their defaults, not the
    service account volume, its mount or the tolerations admission adds to the pod."""
    pod = cluster.kubectl_json("run", "owned", "--image=busybox", "-n", namespace,
                               "--dry-run=server", "--show-managed-fields")
    assert any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])
    assert pod["spec"]["containers"][0]["volumeMounts"]
    assert {t["key"] for t in pod["spec"]["tolerations"]} >= {
        "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    [entry] = pod["metadata"]["managedFields"]
    assert entry["manager"] == "kubectl-run" and entry["operation"] == "Update"
    spec = entry["fieldsV1"]["f:spec"]
    container = spec['f:containers']['k:{"name":"owned"}']
    assert {"f:image", "f:imagePullPolicy", "f:terminationMessagePath"} <= set(container)
    assert "f:volumeMounts" not in container
    assert {"f:dnsPolicy", "f:restartPolicy", "f:schedulerName"} <= set(spec)
    assert "f:volumes" not in spec and "f:tolerations" not in spec


def test_get_output_formats(cluster: Cluster, namespace: str) -> None:
    """get with -o wide/yaml/json, -l, -A and --sort-by."""
    for name, tier in (("b-web", "front"), ("a-api", "back"), ("c-db", "back")):
        cluster.kubectl("create", "deployment", name, "--image=nginx:1.27", "-n", namespace)
        cluster.kubectl("label", "deployment", name, f"tier={tier}", "-n", namespace)
    wide = cluster.kubectl("get", "deploy", "-n", namespace, "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                      "SELECTOR"]
    assert "nginx:1.27" in wide and "app=b-web" in wide
    sel = cluster.kubectl("get", "deploy", "-n", namespace, "-l", "tier=back",
                          "-o", "name").stdout.split()
    assert sorted(sel) == ["deployment.apps/a-api", "deployment.apps/c-db"]
    by_name = cluster.kubectl("get", "deploy", "-n", namespace, "--sort-by=.metadata.name",
                              "-o", "name").stdout.split()
    assert by_name == ["deployment.apps/a-api", "deployment.apps/b-web", "deployment.apps/c-db"]
    all_ns = cluster.kubectl("get", "deploy", "-A").stdout
    assert all_ns.splitlines()[0].split()[0] == "NAMESPACE"
    assert namespace in all_ns
    as_json = cluster.kubectl_json("get", "deploy", "-n", namespace)
    assert as_json["kind"] == "List" or as_json["kind"] == "DeploymentList"
    assert len(as_json["items"]) == 3
    yml = cluster.kubectl("get", "deploy", "a-api", "-n", namespace, "-o", "yaml").stdout
    assert "kind: Deployment" in yml and "resourceVersion:" in yml
    jobs = cluster.kubectl("get", "jobs", "-n", namespace).stderr
    assert "No resources found" in jobs


def test_get_watch_receives_live_changes(cluster: Cluster, namespace: str) -> None:
    """get -w prints the existing object, then each change as it happens."""
    cluster.kubectl("create", "configmap", "watched", "--from-literal=k=v0", "-n", namespace)
    proc = subprocess.Popen(
        [KUBECTL, f"--cache-dir={cluster.cache_dir / 'kube-cache'}", "get", "cm", "-n",
         namespace, "-w", "-o", "custom-columns=NAME:.metadata.name,VALUE:.data.k"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env())
    try:
        time.sleep(1.5)
        for i in range(1, 4):
            cluster.kubectl("patch", "cm", "watched", "-n", namespace, "--type=merge",
                            "-p", f'{{"data":{{"k":"v{i}"}}}}')
        cluster.kubectl("create", "configmap", "late", "--from-literal=k=new", "-n", namespace)
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    rows = [line.split() for line in out.splitlines() if line.strip()]
    values = [r[1] for r in rows if r[0] == "watched"]
    assert values[:4] == ["v0", "v1", "v2", "v3"], out
    assert ["late", "new"] in rows, out


def test_describe_shows_object_and_events(cluster: Cluster, namespace: str) -> None:
    """describe reads the object and its events by field selector."""
    cluster.kubectl("create", "deployment", "desc", "--image=nginx", "--replicas=2",
                    "-n", namespace)
    dep = cluster.kubectl_json("get", "deploy", "desc", "-n", namespace)
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=orjson.dumps({
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "desc.1"},
        "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "desc",
                           "namespace": namespace, "uid": dep["metadata"]["uid"]},
        "reason": "ScalingReplicaSet", "message": "Scaled up replica set desc-1 to 2",
        "type": "Normal", "source": {"component": "deployment-controller"}, "count": 1,
        "firstTimestamp": dep["metadata"]["creationTimestamp"],
        "lastTimestamp": dep["metadata"]["creationTimestamp"]}).decode())
    out = cluster.kubectl("describe", "deployment", "desc", "-n", namespace).stdout
    assert "Name:                   desc" in out
    assert "Replicas:               2 desired" in out
    assert "StrategyType:           RollingUpdate" in out
    assert "ScalingReplicaSet" in out and "Scaled up replica set desc-1 to 2" in out


def test_imperative_commands(cluster: Cluster, namespace: str) -> None:
    """create (protobuf bodies), expose, scale, autoscale, set image, label, annotate."""
    ns = ("-n", namespace)
    cluster.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", *ns)
    cluster.kubectl("create", "configmap", "cfg", "--from-literal=a=b", "--from-literal=c=d",
                    *ns)
    assert cluster.kubectl_json("get", "cm", "cfg", *ns)["data"] == {"a": "b", "c": "d"}
    cluster.kubectl("expose", "deployment", "web", "--port=80", "--target-port=8080", *ns)
    svc = cluster.kubectl_json("get", "svc", "web", *ns)
    assert svc["spec"]["selector"] == {"app": "web"}
    assert svc["spec"]["ports"][0]["targetPort"] == 8080
    assert svc["spec"]["clusterIP"].startswith("10.")
    cluster.kubectl("scale", "deployment", "web", "--replicas=5", *ns)
    assert cluster.kubectl_json("get", "deploy", "web", *ns)["spec"]["replicas"] == 5
    cluster.kubectl("scale", "deployment", "web", "--replicas=3", "--current-replicas=5", *ns)
    assert cluster.kubectl_json("get", "deploy", "web", *ns)["spec"]["replicas"] == 3
    cluster.kubectl("autoscale", "deployment", "web", "--min=2", "--max=7",
                    "--cpu-percent=60", *ns)
    hpa = cluster.kubectl_json("get", "hpa", "web", *ns)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["maxReplicas"] == 7
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    cluster.kubectl("set", "image", "deployment/web", "nginx=nginx:1.27", *ns)
    cluster.kubectl("label", "deployment", "web", "team=ml", *ns)
    cluster.kubectl("annotate", "deployment", "web", "owner=alice", *ns)
    dep = cluster.kubectl_json("get", "deploy", "web", *ns)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert dep["metadata"]["labels"]["team"] == "ml"
    assert dep["metadata"]["annotations"]["owner"] == "alice"
    cluster.kubectl("label", "deployment", "web", "team-", *ns)
    assert "team" not in cluster.kubectl_json("get", "deploy", "web", *ns)["metadata"]["labels"]
    created_ns = cluster.kubectl("create", "namespace", f"{namespace}-extra").stdout
    assert "created" in created_ns
    cluster.kubectl("delete", "namespace", f"{namespace}-extra", "--wait=false")


def test_patch_all_three_types(cluster: Cluster, namespace: str) -> None:
    """patch with strategic (default), merge and json patches."""
    ns = ("-n", namespace)
    cluster.kubectl("create", "deployment", "p", "--image=nginx", *ns)
    cluster.kubectl("patch", "deployment", "p", *ns, "-p",
                    '{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":'
                    '[{"name":"A","value":"1"}]}]}}}}')
    c = cluster.kubectl_json("get", "deploy", "p", *ns)["spec"]["template"]["spec"]["containers"]
    assert len(c) == 1 and c[0]["image"] == "nginx" and c[0]["env"] == [{"name": "A", "value": "1"}]
    cluster.kubectl("patch", "deployment", "p", *ns, "--type=merge",
                    "-p", '{"metadata":{"labels":{"m":"x"}},"spec":{"replicas":4}}')
    dep = cluster.kubectl_json("get", "deploy", "p", *ns)
    assert dep["metadata"]["labels"]["m"] == "x" and dep["spec"]["replicas"] == 4
    cluster.kubectl("patch", "deployment", "p", *ns, "--type=json",
                    "-p", '[{"op":"replace","path":"/spec/replicas","value":2},'
                          '{"op":"remove","path":"/metadata/labels/m"}]')
    dep = cluster.kubectl_json("get", "deploy", "p", *ns)
    assert dep["spec"]["replicas"] == 2 and "m" not in dep["metadata"]["labels"]
    bad = cluster.kubectl("patch", "deployment", "p", *ns, "--type=json",
                          "-p", '[{"op":"test","path":"/spec/replicas","value":9}]', check=False)
    assert bad.returncode != 0


def test_edit_with_scripted_editor(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """edit opens the object in $EDITOR and applies the change."""
    cluster.kubectl("create", "deployment", "ed", "--image=nginx", "--replicas=1",
                    "-n", namespace)
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/replicas: 1/replicas: 6/' \"$1\"\n")
    editor.chmod(0o755)
    out = cluster.kubectl("edit", "deployment", "ed", "-n", namespace,
                          env={"EDITOR": str(editor), "KUBE_EDITOR": str(editor)}).stdout
    assert "deployment.apps/ed edited" in out
    assert cluster.kubectl_json("get", "deploy", "ed", "-n", namespace)["spec"]["replicas"] == 6


def _child(cluster: Cluster, namespace: str, name: str, owner: str, *, block: bool) -> None:
    uid = cluster.kubectl_json("get", "deploy", owner, "-n", namespace)["metadata"]["uid"]
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=orjson.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner, "uid": uid,
             "blockOwnerDeletion": block}]}}).decode())


@pytest.mark.parametrize("cascade", ["background", "foreground", "orphan"])
def test_delete_cascade_modes(cluster: Cluster, namespace: str, cascade: str) -> None:
    """delete --cascade=background|foreground|orphan treats dependents as upstream does."""
    name = f"owner-{cascade}"
    cluster.kubectl("create", "deployment", name, "--image=nginx", "-n", namespace)
    _child(cluster, namespace, f"dep-{cascade}", name, block=cascade == "foreground")
    out = cluster.kubectl("delete", "deployment", name, "-n", namespace,
                          f"--cascade={cascade}", timeout=30).stdout
    assert f'deployment.apps "{name}" deleted' in out
    gone = cluster.kubectl("get", "deploy", name, "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    deadline = time.monotonic() + 15
    while True:
        child = cluster.kubectl("get", "cm", f"dep-{cascade}", "-n", namespace, "-o", "json",
                                check=False)
        if cascade == "orphan":
            assert child.returncode == 0
            refs = orjson.loads(child.stdout)["metadata"].get("ownerReferences")
            if not refs:
                break
        elif child.returncode != 0:
            assert "NotFound" in child.stderr
            break
        assert time.monotonic() < deadline, child.stdout
        time.sleep(0.2)


def test_wait_for_delete(cluster: Cluster, namespace: str) -> None:
    """wait --for=delete returns once the object is gone."""
    cluster.kubectl("create", "configmap", "doomed", "-n", namespace)
    waiter = subprocess.Popen(
        [KUBECTL, f"--cache-dir={cluster.cache_dir / 'kube-cache'}", "wait", "--for=delete",
         "configmap/doomed", "-n", namespace, "--timeout=30s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env())
    time.sleep(1)
    assert waiter.poll() is None
    cluster.kubectl("delete", "configmap", "doomed", "-n", namespace)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert "condition met" in out


def test_explain(cluster: Cluster) -> None:
    """explain reads the OpenAPI v3 schemas."""
    out = cluster.kubectl("explain", "deployment.spec.strategy").stdout
    assert "KIND:       Deployment" in out
    assert "rollingUpdate\t<RollingUpdateDeployment>" in out
    assert "type\t<string>" in out


def test_unauthenticated_requests_are_rejected(cluster: Cluster) -> None:
    """No token or a wrong token: 401; health endpoints stay open."""
    with cluster.http(token=False) as c:
        assert c.get("/api/v1/namespaces").status_code == 401
        r = c.get("/api/v1/namespaces", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
        assert c.get("/readyz").text == "ok"
    env = {"KUBECONFIG": os.devnull}
    proc = subprocess.run([KUBECTL, "--server", cluster.url, "--certificate-authority",
                           cluster.ca, "--token", "wrong", "get", "pods"],
                          capture_output=True, text=True, env={**cluster.env(), **env})
    assert proc.returncode != 0
    assert "Unauthorized" in proc.stderr or "must be logged in" in proc.stderr
