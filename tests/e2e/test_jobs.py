"""Jobs and CronJobs on a real server: pods run as processes, driven with the real kubectl.

The shared server's pod failure back-off base is shortened to 1 s (10 s upstream) through
``KYB_JOB_BACKOFF_BASE_SECONDS``, set here before the session's server starts, so that a
job that fails three times retries after 1, 2 and 4 s instead of 10, 20 and 40 s.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.cluster import SCENARIOS, Cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
    reason="running pods needs root and the CNI plugins (Debian containernetworking-plugins)")]

# Read by `kyb server` when it starts (the shared server starts after collection).
os.environ.setdefault("KYB_JOB_BACKOFF_BASE_SECONDS", "1")

CRON_NAMESPACE = "t-jobs-retrain-cron"



def apply(cluster: Cluster, ns: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=orjson.dumps(obj).decode())


def job(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.kubectl_json("get", "job", name, "-n", ns)  # type: ignore[no-any-return]


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions") or []
            if c.get("status") == "True"}


def finished(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    """The Job once it has a Complete or Failed condition."""
    j = job(cluster, ns, name)
    return j if {"Complete", "Failed"} & set(conditions(j)) else None


def pods_of(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", ns, "-l", f"batch.kubernetes.io/job-name={name}")["items"]
    return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])


def shell_job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {**spec, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "busybox",
                                "command": ["sh", "-c", script]}]}}}}


def table(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    """``kubectl get job NAME``'s columns."""
    head, row = cluster.kubectl("get", "job", name, "-n", ns).stdout.splitlines()[:2]
    return dict(zip(head.split(), row.split(), strict=False))


@pytest.fixture(scope="module", autouse=True)
def retrain_cron(cluster: Cluster) -> Iterator[str]:
    """retrain-cron.yaml, applied unchanged when the module starts (its every-minute
    schedule then fires while the other tests run); checked by the last test."""
    cluster.kubectl("create", "namespace", CRON_NAMESPACE)
    cluster.kubectl("apply", "-n", CRON_NAMESPACE, "-f", str(SCENARIOS / "retrain-cron.yaml"))
    yield CRON_NAMESPACE
    cluster.kubectl("delete", "namespace", CRON_NAMESPACE, "--wait=false", check=False)


def test_train_job_scenario_completes(cluster: Cluster, namespace: str) -> None:
    """train-job.yaml, unchanged: one pod trains, writes its model and the Job completes,
    with upstream's status, conditions, events, pod labels and kubectl columns."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(SCENARIOS / "train-job.yaml"))
    done = wait_for("the training job to finish", lambda: finished(cluster, namespace, "train"),
                    timeout=120)
    conds = conditions(done)
    assert "Complete" in conds, done["status"]
    assert conds["Complete"]["reason"] == "CompletionsReached"
    assert conds["Complete"]["message"] == "Reached expected number of succeeded pods"
    assert "SuccessCriteriaMet" in conds
    status = done["status"]
    assert status["succeeded"] == 1 and not status.get("failed")
    assert status["active"] == 0 and status["ready"] == 0 and status["terminating"] == 0
    assert status["startTime"] <= status["completionTime"]
    assert not status.get("uncountedTerminatedPods")
    cols = table(cluster, namespace, "train")
    assert cols["STATUS"] == "Complete" and cols["COMPLETIONS"] == "1/1"
    assert cols["DURATION"].endswith("s")

    [pod] = pods_of(cluster, namespace, "train")
    md, uid = pod["metadata"], done["metadata"]["uid"]
    assert md["name"].startswith("train-") and len(md["name"]) == len("train-") + 5
    assert md["labels"]["batch.kubernetes.io/controller-uid"] == uid
    assert md["labels"]["controller-uid"] == uid
    assert md["labels"]["job-name"] == "train" and md["labels"]["app"] == "train"
    assert md["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "train",
                                      "uid": uid, "controller": True,
                                      "blockOwnerDeletion": True}]
    assert "batch.kubernetes.io/job-tracking" not in (md.get("finalizers") or [])
    assert "trained" in cluster.kubectl("logs", md["name"], "-n", namespace).stdout
    events = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                                  "involvedObject.kind=Job")["items"]
    messages = {(e["reason"], e["message"]) for e in events}
    assert ("SuccessfulCreate", f"Created pod: {md['name']}") in messages
    assert ("Completed", "Job completed") in messages


def test_job_retries_with_backoff_then_succeeds(cluster: Cluster, namespace: str,
                                                tmp_path: Path) -> None:
    """A pod that fails three times (an attempt counter in a hostPath file) then succeeds:
    the Job completes within its backoffLimit, counting 3 failed pods, and each
    replacement waits longer than the one before (1 s, 2 s, 4 s here)."""
    tmp_path.chmod(0o777)
    spec = shell_job("flaky", "n=$(cat /state/count 2>/dev/null || echo 0); n=$((n+1)); "
                     "echo $n > /state/count; echo attempt $n; [ $n -ge 4 ]", backoffLimit=4)
    pod_spec = spec["spec"]["template"]["spec"]
    pod_spec["containers"][0]["volumeMounts"] = [{"name": "state", "mountPath": "/state"}]
    pod_spec["volumes"] = [{"name": "state", "hostPath": {"path": str(tmp_path)}}]
    apply(cluster, namespace, spec)
    done = wait_for("the flaky job to finish", lambda: finished(cluster, namespace, "flaky"),
                    timeout=60)
    assert "Complete" in conditions(done), done["status"]
    assert done["status"]["failed"] == 3 and done["status"]["succeeded"] == 1
    assert (tmp_path / "count").read_text().strip() == "4"
    pods = pods_of(cluster, namespace, "flaky")
    assert [p["status"]["phase"] for p in pods] == ["Failed"] * 3 + ["Succeeded"]
    assert all("batch.kubernetes.io/job-tracking" not in (p["metadata"].get("finalizers") or [])
               for p in pods)
    # each replacement is created a back-off after the previous pod ended
    gaps = []
    for before, after in itertools.pairwise(pods):
        ended = before["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
        gaps.append(_epoch(after["metadata"]["creationTimestamp"]) - _epoch(ended))
    assert gaps[0] >= 1 and gaps[1] >= 2 and gaps[2] >= 4, gaps
    assert "attempt 4" in cluster.kubectl("logs", pods[-1]["metadata"]["name"], "-n",
                                          namespace).stdout


def test_job_fails_after_backoff_limit(cluster: Cluster, namespace: str) -> None:
    """A pod that always fails: after backoffLimit + 1 failures the Job is Failed with
    reason BackoffLimitExceeded (FailureTarget first), a warning event says why."""
    apply(cluster, namespace, shell_job("doomed", "echo no; exit 3", backoffLimit=1))
    done = wait_for("the doomed job to fail", lambda: finished(cluster, namespace, "doomed"),
                    timeout=60)
    conds = conditions(done)
    assert "Failed" in conds and "Complete" not in conds, done["status"]
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
    assert conds["Failed"]["message"] == "Job has reached the specified backoff limit"
    assert conds["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    assert done["status"]["failed"] == 2 and not done["status"].get("succeeded")
    assert "completionTime" not in done["status"]
    assert table(cluster, namespace, "doomed")["STATUS"] == "Failed"
    assert len(pods_of(cluster, namespace, "doomed")) == 2
    events = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                                  "involvedObject.name=doomed")["items"]
    assert any(e["reason"] == "BackoffLimitExceeded" and e["type"] == "Warning"
               for e in events)


def test_indexed_job_gives_each_pod_its_index(cluster: Cluster, namespace: str) -> None:
    """completionMode Indexed: pods <job>-<index>-xxxxx, each sees JOB_COMPLETION_INDEX
    (its logs say so), and status.completedIndexes lists them all."""
    apply(cluster, namespace, shell_job("shards", "echo index=$JOB_COMPLETION_INDEX "
                                        "host=$(hostname)", completions=3, parallelism=3,
                                        completionMode="Indexed"))
    done = wait_for("the indexed job to finish", lambda: finished(cluster, namespace, "shards"),
                    timeout=60)
    assert "Complete" in conditions(done), done["status"]
    assert done["status"]["completedIndexes"] == "0-2" and done["status"]["succeeded"] == 3
    assert table(cluster, namespace, "shards")["COMPLETIONS"] == "3/3"
    pods = pods_of(cluster, namespace, "shards")
    assert len(pods) == 3
    for p in pods:
        index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        assert p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == index
        assert p["metadata"]["name"].startswith(f"shards-{index}-")
        logs = cluster.kubectl("logs", p["metadata"]["name"], "-n", namespace).stdout
        assert f"index={index} host=shards-{index}" in logs
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                  for p in pods) == ["0", "1", "2"]


def test_retrain_cron_scenario_runs_without_overlap(cluster: Cluster,
                                                    retrain_cron: str) -> None:
    """retrain-cron.yaml, unchanged (every minute, concurrencyPolicy Forbid): a run named
    <cronjob>-<minutes since the epoch> is created at a minute boundary and completes;
    at no point are two runs active; the CronJob's status records it."""
    ns, most_active = retrain_cron, 0

    def run_done() -> dict[str, Any] | None:
        nonlocal most_active
        jobs = cluster.kubectl_json("get", "jobs", "-n", ns)["items"]
        most_active = max(most_active, sum(1 for j in jobs if not (
            {"Complete", "Failed"} & set(conditions(j)))))
        done = [j for j in jobs if "Complete" in conditions(j)]
        return done[0] if done else None

    # the schedule fires at the next minute boundary: at most 60 s after the module began
    run = wait_for("a scheduled run to complete", run_done, timeout=100, every=0.5)
    assert most_active <= 1
    md = run["metadata"]
    stamp = md["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    scheduled = _epoch(stamp)
    assert scheduled % 60 == 0 and md["name"] == f"nightly-retrain-{int(scheduled) // 60}"
    assert md["ownerReferences"][0]["kind"] == "CronJob"
    assert md["ownerReferences"][0]["name"] == "nightly-retrain"
    cj = wait_for("the CronJob's status", lambda: (c := cluster.kubectl_json(
        "get", "cronjob", "nightly-retrain", "-n", ns))["status"].get("lastSuccessfulTime")
        and c, timeout=60)
    assert cj["status"]["lastScheduleTime"] == stamp
    assert not any(a["name"] == md["name"] for a in cj["status"].get("active") or [])
    [pod] = pods_of(cluster, ns, md["name"])
    logs = cluster.kubectl("logs", pod["metadata"]["name"], "-n", ns).stdout
    assert "retraining at" in logs and "done" in logs
    events = cluster.kubectl_json("get", "events", "-n", ns, "--field-selector",
                                  "involvedObject.kind=CronJob")["items"]
    assert any(e["reason"] == "SuccessfulCreate" and e["message"] == f"Created job {md['name']}"
               for e in events)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
