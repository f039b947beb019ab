"""Deployments and ReplicaSets end to end: a real ``kyb server`` with five fake nodes,
driven by the real kubectl — the serve-model scenario, pod replacement, a rolling update
that never drops below ``replicas - maxUnavailable`` available, rollout
status/history/undo/pause/resume/restart, scaling, Recreate, a progress deadline, and
deletion with each propagation policy; then the scale targets on ten fake nodes."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import SCENARIOS, Cluster, free_port, wait_for

pytestmark = pytest.mark.slow

Obj = dict[str, Any]
SERVE_MODEL = SCENARIOS / "serve-model.yaml"
HASH = "pod-template-hash"


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, nodes: int) -> Cluster:
    base = tmp_path_factory.mktemp(name)
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home",
                extra_args=["--disable-agent", "--fake-nodes", str(nodes)])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    wait_for(f"{nodes} nodes", lambda: len(c.kubectl_json("get", "nodes")["items"]) == nodes)
    return c


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server without a real node and with five fake ones."""
    c = _start(tmp_path_factory, "deployments", 5)
    try:
        yield c
    finally:
        assert c.stop() == 0, "kyb server did not exit cleanly"



def namespace(c: Cluster, name: str) -> str:
    c.kubectl("create", "namespace", name)
    return name


def ready_pods(c: Cluster, ns: str, selector: str) -> list[Obj]:
    """Pods that are Ready and not being deleted."""
    pods = c.kubectl_json("get", "pods", "-n", ns, "-l", selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        cond["type"] == "Ready" and cond["status"] == "True"
        for cond in p["status"].get("conditions") or [])]


def deployment_yaml(name: str, *, replicas: int = 2, image: str = "busybox:1",
                    extra_spec: str = "", pod_spec: str = "") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  {extra_spec}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      {pod_spec}
      containers: [{{name: main, image: "{image}", resources: {{requests: {{cpu: 10m}}}}}}]
"""


def replicasets(c: Cluster, ns: str, selector: str) -> list[Obj]:
    items: list[Obj] = c.kubectl_json("get", "rs", "-n", ns, "-l", selector)["items"]
    return sorted(items, key=lambda rs: int(rs["metadata"]["annotations"].get(
        "deployment.kubernetes.io/revision", "0")))


def image_of(c: Cluster, ns: str, name: str) -> str:
    d = c.kubectl_json("get", "deployment", name, "-n", ns)
    return str(d["spec"]["template"]["spec"]["containers"][0]["image"])


def history(c: Cluster, ns: str, name: str) -> list[int]:
    out = c.kubectl("rollout", "history", f"deployment/{name}", "-n", ns).stdout
    return [int(m.group(1)) for m in re.finditer(r"^(\d+)\s", out, re.M)]


# -- the serve-model scenario --------------------------------------------------------------


@pytest.fixture(scope="module")
def model(fake_cluster: Cluster) -> str:
    """serve-model.yaml applied unchanged (its ConfigMap and LoadBalancer Service are served
    too) in a namespace of its own, with its three replicas ready."""
    ns = namespace(fake_cluster, "serve")
    fake_cluster.kubectl("apply", "-n", ns, "-f", str(SERVE_MODEL))
    fake_cluster.kubectl("rollout", "status", "deployment/ml-model", "-n", ns,
                         "--timeout=60s", timeout=70)
    return ns


def test_serve_model_has_three_ready_replicas(fake_cluster: Cluster, model: str) -> None:
    """Three ready pods named <rs>-<5 chars>, owned by one ReplicaSet <deploy>-<hash>."""
    pods = wait_for("3 ready pods", lambda: len(p := ready_pods(
        fake_cluster, model, "app=ml-model")) == 3 and p)
    rss = replicasets(fake_cluster, model, "app=ml-model")
    assert len(rss) == 1
    rs = rss[0]
    assert rs["metadata"]["name"] == f"ml-model-{rs['metadata']['labels'][HASH]}"
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    for p in pods:
        ref = p["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["controller"], ref["blockOwnerDeletion"]) == \
            ("ReplicaSet", rs["metadata"]["name"], True, True)
        assert re.fullmatch(rf"{rs['metadata']['name']}-[a-z0-9]{{5}}", p["metadata"]["name"])
    d = fake_cluster.kubectl_json("get", "deployment", "ml-model", "-n", model)
    status = d["status"]
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"],
            status["availableReplicas"]) == (3, 3, 3, 3)
    assert status["observedGeneration"] == d["metadata"]["generation"]
    conds = {c["type"]: c["reason"] for c in status["conditions"]}
    assert conds == {"Available": "MinimumReplicasAvailable",
                     "Progressing": "NewReplicaSetAvailable"}
    table = fake_cluster.kubectl("get", "deployment", "ml-model", "-n", model,
                                 "--no-headers").stdout.split()
    assert table[:4] == ["ml-model", "3/3", "3", "3"]
    events = fake_cluster.kubectl("get", "events", "-n", model).stdout
    assert f"Scaled up replica set {rs['metadata']['name']} from 0 to 3" in events
    assert "Created pod: ml-model-" in events


def test_deleted_pod_is_replaced(fake_cluster: Cluster, model: str) -> None:
    """kubectl delete pod: the ReplicaSet creates another at once."""
    victim = ready_pods(fake_cluster, model, "app=ml-model")[0]["metadata"]["name"]
    fake_cluster.kubectl("delete", "pod", victim, "-n", model)

    def replaced() -> bool:
        names = {p["metadata"]["name"] for p in ready_pods(fake_cluster, model, "app=ml-model")}
        return len(names) == 3 and victim not in names

    wait_for("a replacement pod", replaced)


def test_rolling_update_keeps_availability(fake_cluster: Cluster, model: str) -> None:
    """kubectl set image rolls out with never fewer than replicas - maxUnavailable ready
    pods (3 - floor(25% of 3) = 3); rollout status succeeds; history has two revisions."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with fake_cluster.http() as http:
            while not stop.is_set():
                r = http.get(f"/api/v1/namespaces/{model}/pods",
                             params={"labelSelector": "app=ml-model"})
                samples.append(sum(
                    1 for p in r.json()["items"] if not p["metadata"].get("deletionTimestamp")
                    and any(c["type"] == "Ready" and c["status"] == "True"
                            for c in p["status"].get("conditions") or [])))
                time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        time.sleep(0.2)
        fake_cluster.kubectl("set", "image", "deployment/ml-model", "ml-model=python:3.12",
                             "-n", model)
        out = fake_cluster.kubectl("rollout", "status", "deployment/ml-model", "-n", model,
                                   "--timeout=60s", timeout=70).stdout
        time.sleep(0.3)
    finally:
        stop.set()
        sampler.join()
    assert 'deployment "ml-model" successfully rolled out' in out
    assert len(samples) > 10 and min(samples) >= 3, samples
    pods = ready_pods(fake_cluster, model, "app=ml-model")
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["python:3.12"] * 3
    assert history(fake_cluster, model, "ml-model") == [1, 2]
    rss = replicasets(fake_cluster, model, "app=ml-model")
    assert [rs["spec"]["replicas"] for rs in rss] == [0, 3]
    events = fake_cluster.kubectl("get", "events", "-n", model).stdout
    assert f"Scaled down replica set {rss[0]['metadata']['name']} from 1 to 0" in events


def test_rollout_undo_restores_old_image(fake_cluster: Cluster, model: str) -> None:
    """kubectl rollout undo (a client-side patch from the old ReplicaSet) brings the old
    image back; the old ReplicaSet is reused as revision 3."""
    assert image_of(fake_cluster, model, "ml-model") == "python:3.12"
    first = replicasets(fake_cluster, model, "app=ml-model")[0]["metadata"]["name"]
    fake_cluster.kubectl("rollout", "undo", "deployment/ml-model", "-n", model)
    fake_cluster.kubectl("rollout", "status", "deployment/ml-model", "-n", model,
                         "--timeout=60s", timeout=70)
    assert image_of(fake_cluster, model, "ml-model") == "python:3.11"
    pods = ready_pods(fake_cluster, model, "app=ml-model")
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["python:3.11"] * 3
    assert history(fake_cluster, model, "ml-model") == [2, 3]
    rs = fake_cluster.kubectl_json("get", "rs", first, "-n", model)
    ann = rs["metadata"]["annotations"]
    assert (ann["deployment.kubernetes.io/revision"],
            ann["deployment.kubernetes.io/revision-history"]) == ("3", "1")
    d = fake_cluster.kubectl_json("get", "deployment", "ml-model", "-n", model)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"


def test_scale(fake_cluster: Cluster, model: str) -> None:
    """kubectl scale to 5 and back to 3; the ReplicaSet's annotations follow."""
    for n in (5, 3):
        fake_cluster.kubectl("scale", "deployment/ml-model", f"--replicas={n}", "-n", model)
        wait_for(f"{n} ready pods", lambda n=n: len(ready_pods(
            fake_cluster, model, "app=ml-model")) == n and fake_cluster.kubectl_json(
            "get", "deployment", "ml-model", "-n", model)["status"].get(
            "availableReplicas") == n)
    rs = next(x for x in replicasets(fake_cluster, model, "app=ml-model")
              if x["spec"]["replicas"])
    ann = rs["metadata"]["annotations"]
    assert (ann["deployment.kubernetes.io/desired-replicas"],
            ann["deployment.kubernetes.io/max-replicas"]) == ("3", "4")


def test_pause_and_resume(fake_cluster: Cluster, model: str) -> None:
    """A paused Deployment takes a template change without rolling it out; resume does."""
    fake_cluster.kubectl("rollout", "pause", "deployment/ml-model", "-n", model)
    before = {rs["metadata"]["name"] for rs in replicasets(fake_cluster, model, "app=ml-model")}
    fake_cluster.kubectl("set", "image", "deployment/ml-model", "ml-model=python:3.13",
                         "-n", model)

    def paused_observed() -> bool:
        d = fake_cluster.kubectl_json("get", "deployment", "ml-model", "-n", model)
        conds = {c["type"]: c["reason"] for c in d["status"].get("conditions") or []}
        return d["status"].get("observedGeneration") == d["metadata"]["generation"] and \
            conds.get("Progressing") == "DeploymentPaused"

    wait_for("the pause to be observed", paused_observed)
    time.sleep(1)
    after = {rs["metadata"]["name"] for rs in replicasets(fake_cluster, model, "app=ml-model")}
    assert after == before
    pods = ready_pods(fake_cluster, model, "app=ml-model")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"python:3.11"}
    fake_cluster.kubectl("rollout", "resume", "deployment/ml-model", "-n", model)
    fake_cluster.kubectl("rollout", "status", "deployment/ml-model", "-n", model,
                         "--timeout=60s", timeout=70)
    pods = ready_pods(fake_cluster, model, "app=ml-model")
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["python:3.13"] * 3


def test_rollout_restart(fake_cluster: Cluster, model: str) -> None:
    """kubectl rollout restart replaces every pod through a new ReplicaSet."""
    before = {p["metadata"]["name"] for p in ready_pods(fake_cluster, model, "app=ml-model")}
    revisions = history(fake_cluster, model, "ml-model")
    fake_cluster.kubectl("rollout", "restart", "deployment/ml-model", "-n", model)
    fake_cluster.kubectl("rollout", "status", "deployment/ml-model", "-n", model,
                         "--timeout=60s", timeout=70)
    pods = wait_for("3 ready pods", lambda: len(p := ready_pods(
        fake_cluster, model, "app=ml-model")) == 3 and p)
    assert not before & {p["metadata"]["name"] for p in pods}
    assert all("kubectl.kubernetes.io/restartedAt" in p["metadata"]["annotations"] for p in pods)
    assert history(fake_cluster, model, "ml-model") == [*revisions, revisions[-1] + 1]


# -- other strategies and conditions -------------------------------------------------------


def test_recreate_strategy(fake_cluster: Cluster) -> None:
    """Recreate scales the old ReplicaSet to zero before the new one gets any pod."""
    ns = namespace(fake_cluster, "recreate")
    fake_cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment_yaml(
        "rc", replicas=3, extra_spec="strategy: {type: Recreate}"))
    fake_cluster.kubectl("rollout", "status", "deployment/rc", "-n", ns, "--timeout=60s")
    fake_cluster.kubectl("set", "image", "deployment/rc", "main=busybox:2", "-n", ns)
    fake_cluster.kubectl("rollout", "status", "deployment/rc", "-n", ns, "--timeout=60s")
    wait_for("the new pods", lambda: [p["spec"]["containers"][0]["image"] for p in
                                      ready_pods(fake_cluster, ns, "app=rc")] ==
             ["busybox:2"] * 3)
    messages = [e["message"] for e in sorted(
        fake_cluster.kubectl_json("get", "events", "-n", ns)["items"],
        key=lambda e: (e["lastTimestamp"], e["metadata"]["name"]))
        if e["reason"] == "ScalingReplicaSet"]
    old, new = (rs["metadata"]["name"] for rs in replicasets(fake_cluster, ns, "app=rc"))
    assert messages.index(f"Scaled down replica set {old} from 3 to 0") < \
        messages.index(f"Scaled up replica set {new} from 0 to 3")


def test_progress_deadline_exceeded(fake_cluster: Cluster) -> None:
    """Pods that cannot be scheduled: after progressDeadlineSeconds, Progressing=False
    with ProgressDeadlineExceeded, and kubectl rollout status fails."""
    ns = namespace(fake_cluster, "deadline")
    fake_cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment_yaml(
        "stuck", extra_spec="progressDeadlineSeconds: 5",
        pod_spec="nodeSelector: {kybernetes.io/no-such-node: 'true'}"))
    out = fake_cluster.kubectl("rollout", "status", "deployment/stuck", "-n", ns,
                               "--timeout=40s", check=False, timeout=50)
    assert out.returncode != 0
    assert 'deployment "stuck" exceeded its progress deadline' in out.stderr
    d = fake_cluster.kubectl_json("get", "deployment", "stuck", "-n", ns)
    conds = {c["type"]: c for c in d["status"]["conditions"]}
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == \
        ("False", "ProgressDeadlineExceeded")
    assert (conds["Available"]["status"], conds["Available"]["reason"]) == \
        ("False", "MinimumReplicasUnavailable")
    assert d["status"]["unavailableReplicas"] == 2


def test_min_ready_seconds(fake_cluster: Cluster) -> None:
    """Ready pods count as available only after minReadySeconds."""
    ns = namespace(fake_cluster, "min-ready")
    fake_cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment_yaml(
        "slow", extra_spec="minReadySeconds: 4"))
    status = wait_for("ready replicas", lambda: (s := fake_cluster.kubectl_json(
        "get", "deployment", "slow", "-n", ns)["status"]).get("readyReplicas") == 2 and s)
    assert not status.get("availableReplicas")
    t0 = time.monotonic()
    fake_cluster.kubectl("rollout", "status", "deployment/slow", "-n", ns, "--timeout=30s")
    assert time.monotonic() - t0 > 1
    rs = replicasets(fake_cluster, ns, "app=slow")[0]
    assert (rs["spec"]["minReadySeconds"], rs["status"]["availableReplicas"]) == (4, 2)


@pytest.mark.parametrize("cascade,kept", [
    pytest.param("background", False, id="background"),
    pytest.param("foreground", False, id="foreground"),
    pytest.param("orphan", True, id="orphan"),
])
def test_delete_deployment(fake_cluster: Cluster, cascade: str, kept: bool) -> None:
    """Deleting a Deployment deletes its ReplicaSets and pods, or orphans them."""
    ns = namespace(fake_cluster, f"delete-{cascade}")
    fake_cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment_yaml("web"))
    fake_cluster.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    fake_cluster.kubectl("delete", "deployment", "web", "-n", ns, f"--cascade={cascade}",
                         timeout=60)
    if not kept:
        wait_for("the ReplicaSet and pods to go", lambda: not replicasets(
            fake_cluster, ns, "app=web") and not fake_cluster.kubectl_json(
            "get", "pods", "-n", ns)["items"])
        return
    time.sleep(1)
    rss = replicasets(fake_cluster, ns, "app=web")
    assert len(rss) == 1 and not rss[0]["metadata"].get("ownerReferences")
    assert len(ready_pods(fake_cluster, ns, "app=web")) == 2
    # the same Deployment again adopts the orphaned ReplicaSet instead of making another
    fake_cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment_yaml("web"))
    fake_cluster.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    rss = wait_for("adoption", lambda: [
        rs for rs in replicasets(fake_cluster, ns, "app=web")
        if (rs["metadata"].get("ownerReferences") or [{}])[0].get("kind") == "Deployment"])
    assert len(rss) == 1 and len(replicasets(fake_cluster, ns, "app=web")) == 1


def test_bare_replicaset_adopts_and_releases(fake_cluster: Cluster) -> None:
    """A ReplicaSet adopts a matching orphan pod, and releases a pod relabelled away."""
    ns = namespace(fake_cluster, "bare-rs")
    fake_cluster.kubectl("apply", "-n", ns, "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: stray, labels: {app: bare}}
spec: {containers: [{name: main, image: busybox}]}
""")
    wait_for("the stray pod", lambda: ready_pods(fake_cluster, ns, "app=bare"))
    fake_cluster.kubectl("apply", "-n", ns, "-f", "-", input="""
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: bare}
spec:
  replicas: 2
  selector: {matchLabels: {app: bare}}
  template:
    metadata: {labels: {app: bare}}
    spec: {containers: [{name: main, image: busybox}]}
""")

    def adopted() -> bool:
        pod = fake_cluster.kubectl_json("get", "pod", "stray", "-n", ns)
        refs = pod["metadata"].get("ownerReferences") or []
        return bool(refs) and refs[0]["name"] == "bare" and \
            len(ready_pods(fake_cluster, ns, "app=bare")) == 2

    wait_for("adoption of the stray pod", adopted)
    rs = fake_cluster.kubectl_json("get", "rs", "bare", "-n", ns)
    assert (rs["status"]["replicas"], rs["status"]["fullyLabeledReplicas"],
            rs["status"]["readyReplicas"], rs["status"]["availableReplicas"]) == (2, 2, 2, 2)
    fake_cluster.kubectl("label", "pod", "stray", "app=elsewhere", "--overwrite", "-n", ns)
    wait_for("release and a replacement", lambda: not fake_cluster.kubectl_json(
        "get", "pod", "stray", "-n", ns)["metadata"].get("ownerReferences") and len(
        ready_pods(fake_cluster, ns, "app=bare")) == 2)


# -- scale targets -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Ten fake nodes: room for 1,100 pods (110 each)."""
    c = _start(tmp_path_factory, "deployments-scale", 10)
    try:
        yield c
    finally:
        assert c.stop() == 0, "kyb server did not exit cleanly"


def test_hundred_deployments_of_ten(big_cluster: Cluster) -> None:
    """100 Deployments x 10 replicas all become available."""
    ns = namespace(big_cluster, "many")
    manifests = "\n---\n".join(deployment_yaml(f"d{i}", replicas=10) for i in range(100))
    t0 = time.monotonic()
    big_cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifests, timeout=120)

    def all_available() -> bool:
        items = big_cluster.kubectl_json("get", "deployments", "-n", ns)["items"]
        return len(items) == 100 and all(
            d["status"].get("availableReplicas") == 10 and
            d["status"].get("updatedReplicas") == 10 for d in items)

    wait_for("1,000 available replicas", all_available, timeout=240)
    elapsed = time.monotonic() - t0
    pods = big_cluster.kubectl("get", "pods", "-n", ns, "--no-headers").stdout.splitlines()
    assert len(pods) == 1000, f"{len(pods)} pods after {elapsed:.0f}s"
    big_cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_hundred_replica_rollout(big_cluster: Cluster) -> None:
    """A 100-replica Deployment rolls out a new image to completion."""
    ns = namespace(big_cluster, "big")
    big_cluster.kubectl("apply", "-n", ns, "-f", "-",
                        input=deployment_yaml("big", replicas=100))
    big_cluster.kubectl("rollout", "status", "deployment/big", "-n", ns, "--timeout=180s",
                        timeout=190)
    big_cluster.kubectl("set", "image", "deployment/big", "main=busybox:2", "-n", ns)
    big_cluster.kubectl("rollout", "status", "deployment/big", "-n", ns, "--timeout=180s",
                        timeout=190)
    rss = replicasets(big_cluster, ns, "app=big")
    assert [(rs["spec"]["replicas"], rs["status"].get("availableReplicas", 0)) for rs in rss] \
        == [(0, 0), (100, 100)]
    images = {p["spec"]["containers"][0]["image"] for p in ready_pods(big_cluster, ns, "app=big")}
    assert images == {"busybox:2"}
