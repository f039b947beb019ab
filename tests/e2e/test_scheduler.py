"""The scheduler end to end: a real ``kyb server`` with 12 simulated nodes, driven by the
real kubectl — placement, the reason a pod cannot be placed, profiles, gates, pod
anti-affinity, and preemption with the teams scenario."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import Cluster, free_port

pytestmark = pytest.mark.slow

Obj = dict[str, Any]
GPU_TAINT = {"key": "gpu", "value": "true", "effect": "NoSchedule"}
NODES = (
    [{"name": f"cpu-{i}", "cpu": "4", "memory": "16Gi", "labels": {"pool": "general"}}
     for i in range(4)]
    + [{"name": f"pack-{i}", "cpu": "4", "memory": "16Gi", "labels": {"pool": "pack"}}
       for i in range(2)]
    + [{"name": f"team-{i}", "cpu": "1", "memory": "4Gi", "labels": {"pool": "teams"}}
       for i in range(2)]
    + [{"name": f"gpu-{i}", "cpu": "8", "memory": "64Gi", "gpus": 1, "taints": [GPU_TAINT],
        "labels": {"pool": "gpu"}} for i in range(4)]
)
CONFIG = {
    "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
    "profiles": [
        {"schedulerName": "default-scheduler"},
        {"schedulerName": "bin-packing",
         "plugins": {"score": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}]}},
         "pluginConfig": [
            {"name": "NodeResourcesFit", "args": {"scoringStrategy": {
                "type": "MostAllocated",
                "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}]}}}]},
    ],
}


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server without a real node, with 12 fake nodes and two scheduler profiles."""
    base = tmp_path_factory.mktemp("sched")
    nodes = base / "nodes.yaml"
    nodes.write_text(yaml.safe_dump(NODES))
    cfg = base / "scheduler.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home",
                extra_args=["--disable-agent", "--fake-node-list", str(nodes),
                            "--scheduler-config", str(cfg)])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    try:
        _wait(lambda: len(c.kubectl_json("get", "nodes")["items"]) == len(NODES), "nodes")
        yield c
    finally:
        assert c.stop() == 0, "kyb server did not exit cleanly"


def _wait(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _pod(name: str, *, cpu: str = "100m", ns: str = "default", **spec: Any) -> Obj:
    labels = spec.pop("labels", {"app": name})
    resources = spec.pop("resources", {"requests": {"cpu": cpu}})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                 "resources": resources}], **spec}}


def _apply(c: Cluster, *objs: Obj) -> None:
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))


def _get(c: Cluster, name: str, ns: str = "default") -> Obj | None:
    p = c.kubectl("get", "pod", name, "-n", ns, "-o", "json", check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


def _node_of(c: Cluster, name: str, ns: str = "default") -> str:
    def bound() -> str:
        pod = _get(c, name, ns) or {}
        return str((pod.get("spec") or {}).get("nodeName") or "")
    return str(_wait(bound, f"pod {ns}/{name} to be bound"))


def _scheduled_condition(c: Cluster, name: str, ns: str = "default") -> Obj:
    def cond() -> Obj | None:
        pod = _get(c, name, ns) or {}
        for x in (pod.get("status") or {}).get("conditions") or []:
            if x.get("type") == "PodScheduled" and x.get("status") == "False" \
                    and x.get("reason") == "Unschedulable":
                return dict(x)
        return None
    return dict(_wait(cond, f"pod {ns}/{name} to be unschedulable"))


def test_pod_is_scheduled_and_runs(fake: Cluster) -> None:
    """A pod without a node is bound by the scheduler and runs; an event says where."""
    _apply(fake, _pod("web", nodeSelector={"pool": "general"}))
    node = _node_of(fake, "web")
    assert node.startswith("cpu-")
    _wait(lambda: (_get(fake, "web") or {}).get("status", {}).get("phase") == "Running",
          "web to run")
    events = fake.kubectl("get", "events", "--field-selector",
                          "involvedObject.name=web,reason=Scheduled", "-o", "json")
    msgs = [e["message"] for e in json.loads(events.stdout)["items"]]
    assert msgs == [f"Successfully assigned default/web to {node}"]
    wide = fake.kubectl("get", "pod", "web", "-o", "wide").stdout
    assert node in wide


def test_unschedulable_gpu_pod_explains_why(fake: Cluster) -> None:
    """kubectl describe shows upstream's reason counts for a GPU pod that fits nowhere."""
    _apply(fake, _pod("train", resources={"requests": {"nvidia.com/gpu": "1"},
                                          "limits": {"nvidia.com/gpu": "1"}}))
    want = ("0/12 nodes are available: 4 node(s) had untolerated taint {gpu: true}, "
            "8 Insufficient nvidia.com/gpu. preemption: 0/12 nodes are available: "
            "12 Preemption is not helpful for scheduling.")
    assert _scheduled_condition(fake, "train")["message"] == want
    described = _wait(lambda: (lambda out: out if "FailedScheduling" in out else "")(
        fake.kubectl("describe", "pod", "train").stdout), "the FailedScheduling event")
    assert "FailedScheduling" in described
    assert want in " ".join(described.split())
    # with the toleration, the same pod fits a GPU node
    _apply(fake, _pod("train2", resources={"requests": {"nvidia.com/gpu": "1"},
                                           "limits": {"nvidia.com/gpu": "1"}},
                      tolerations=[{"key": "gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]))
    assert _node_of(fake, "train2").startswith("gpu-")


def test_profiles_spread_or_pack(fake: Cluster) -> None:
    """The default profile spreads pods over the pool; the bin-packing profile packs them."""
    for i in range(2):
        _apply(fake, _pod(f"spread-{i}", cpu="1", nodeSelector={"pool": "pack"}))
    spread = {_node_of(fake, f"spread-{i}") for i in range(2)}
    assert spread == {"pack-0", "pack-1"}
    for i in range(2):
        _apply(fake, _pod(f"packed-{i}", cpu="1", nodeSelector={"pool": "pack"},
                          schedulerName="bin-packing"))
        _node_of(fake, f"packed-{i}")
    packed = {_node_of(fake, f"packed-{i}") for i in range(2)}
    assert len(packed) == 1, packed


def test_scheduling_gates_hold_a_pod_back(fake: Cluster) -> None:
    """A gated pod shows SchedulingGated until its gates are removed."""
    _apply(fake, _pod("gated", schedulingGates=[{"name": "example.com/wait"}],
                      nodeSelector={"pool": "general"}))
    time.sleep(1.0)
    out = fake.kubectl("get", "pod", "gated").stdout
    assert "SchedulingGated" in out
    assert not (_get(fake, "gated") or {}).get("spec", {}).get("nodeName")
    fake.kubectl("patch", "pod", "gated", "--type=json",
                 "-p", '[{"op": "remove", "path": "/spec/schedulingGates"}]')
    assert _node_of(fake, "gated").startswith("cpu-")


def test_required_anti_affinity_spreads_replicas(fake: Cluster) -> None:
    """Pods that must not share a node take one node each; the next one waits, saying why."""
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}},
         "topologyKey": "kubernetes.io/hostname"}]}}
    for i in range(5):
        _apply(fake, _pod(f"cache-{i}", labels={"app": "cache"}, affinity=anti,
                          nodeSelector={"pool": "general"}))
    nodes = {_node_of(fake, f"cache-{i}") for i in range(4)}
    assert nodes == {f"cpu-{i}" for i in range(4)}
    msg = _scheduled_condition(fake, "cache-4")["message"]
    assert "4 node(s) didn't match pod anti-affinity rules" in msg, msg


def test_teams_preemption(fake: Cluster) -> None:
    """teams.yaml: serving-critical preempts batch work, sparing a PDB-protected pod;
    a preemptionPolicy Never pod waits instead."""
    from tests.e2e.cluster import SCENARIOS

    fake.kubectl("apply", "-f", str(Path(SCENARIOS) / "teams.yaml"))
    # quota admission: the controller fills in the quotas' status first, and a quota on
    # requests.memory needs every container to state one
    _wait(lambda: all((q.get("status") or {}).get("used") for q in json.loads(fake.kubectl(
        "get", "resourcequota", "-A", "-o", "json").stdout)["items"]), "the quotas' status")
    mem = {"requests": {"cpu": "500m", "memory": "64Mi"}}
    pool = {"pool": "teams"}
    # team-0: a default-priority pod protected by a budget; team-1: two batch pods
    _apply(fake, _pod("filler", cpu="1", labels={"app": "filler"}, nodeName="team-0"),
           {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "filler", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "filler"}}}},
           *[_pod(f"exp-{i}", resources=mem, ns="team-research", priorityClassName="batch-low",
                  nodeName="team-1") for i in range(2)])
    fake.kubectl("patch", "pdb", "filler", "--subresource=status", "--type=merge", "-p",
                 json.dumps({"status": {"disruptionsAllowed": 0, "currentHealthy": 1,
                                        "desiredHealthy": 1, "expectedPods": 1}}))
    # a batch-low pod could only fit by preempting the priority-0 filler: it must wait
    _apply(fake, _pod("exp-2", resources=mem, ns="team-research", priorityClassName="batch-low",
                      nodeSelector=pool))
    msg = _scheduled_condition(fake, "exp-2", "team-research")["message"]
    assert msg.endswith("not eligible due to preemptionPolicy=Never."), msg
    assert _get(fake, "filler") is not None
    # serving-critical preempts: team-1's batch pods, not the budget-protected filler
    _apply(fake, _pod("serve", resources=mem, ns="team-serving",
                      priorityClassName="serving-critical", nodeSelector=pool))
    assert _node_of(fake, "serve", "team-serving") == "team-1"
    survivors = [i for i in range(2) if _get(fake, f"exp-{i}", "team-research")]
    assert len(survivors) == 1, survivors
    assert _get(fake, "filler") is not None
    events = json.loads(fake.kubectl("get", "events", "-n", "team-research",
                                     "--field-selector", "reason=Preempted",
                                     "-o", "json").stdout)["items"]
    assert len(events) == 1 and events[0]["message"].startswith("Preempted by pod ")
    # the waiting batch pod did not take the freed space
    assert not (_get(fake, "exp-2", "team-research") or {}).get("spec", {}).get("nodeName")


def test_metrics(fake: Cluster) -> None:
    """Scheduling attempts and pending pods are exported with upstream's metric names."""
    with fake.http() as h:
        text = h.get("/metrics").text
    assert 'scheduler_schedule_attempts_total{profile="default-scheduler",result="scheduled"}' \
        in text
    assert "scheduler_pending_pods{" in text
    assert "scheduler_pod_scheduling_sli_duration_seconds_bucket" in text
