"""``kyb controller-manager`` and ``kyb scheduler``: controllers and the scheduler in their
own processes, one leading at a time."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.cluster import REPO, Cluster, free_port, wait_for

pytestmark = pytest.mark.slow

# short durations: a dead leader is replaced within about 3 s
FAST = ["--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s",
        "--leader-elect-retry-period", "500ms"]
IDENTITY = re.compile(r"leader election identity (\S+)")


@dataclass
class Manager:
    """One ``kyb controller-manager`` process."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    @property
    def identity(self) -> str:
        m = wait_for(f"the identity in {self.log_path.name}",
                     lambda: IDENTITY.search(self.log()), timeout=30)
        return m.group(1)

    def leads(self) -> bool:
        return "started leading" in self.log()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def managers(tmp_path: Path) -> Iterator[Callable[..., Manager]]:
    """Start controller managers; every one is stopped after the test, failed or not
    (SIGTERM, so that a leader releases the Lease for the next test; then SIGKILL)."""
    started: list[Manager] = []

    def start(cluster: Cluster, *args: str, command: str = "controller-manager") -> Manager:
        log_path = tmp_path / f"cm-{len(started)}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kybernetes.cli.main", command,
                 "--kubeconfig", str(cluster.kubeconfig), *args],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        started.append(Manager(proc, log_path))
        return started[-1]

    yield start
    for m in started:
        m.stop()


def _cluster(base: Path, *args: str) -> Iterator[Cluster]:
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home", extra_args=["--disable-agent", *args])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        c.start()
        yield c
    finally:
        assert c.stop() == 0, f"kyb server did not exit cleanly:\n{c.log_path.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An API server with a scheduler and two fake nodes, but no controllers."""
    yield from _cluster(tmp_path_factory.mktemp("bare"), "--disable-controllers",
                        "--fake-nodes", "2")


@pytest.fixture
def full(tmp_path: Path) -> Iterator[Cluster]:
    """A normal server, whose own controllers campaign for the Lease."""
    yield from _cluster(tmp_path, "--fake-nodes", "1")



def lease(cluster: Cluster, name: str = "kube-controller-manager") -> dict[str, Any]:
    p = cluster.kubectl("-n", "kube-system", "get", "lease", name, "-o", "json", check=False)
    if p.returncode != 0:
        return {}
    spec: dict[str, Any] = orjson.loads(p.stdout).get("spec") or {}
    return spec


def holder(cluster: Cluster, name: str = "kube-controller-manager") -> str:
    return str(lease(cluster, name).get("holderIdentity") or "")


def deployment_reconciled(cluster: Cluster, name: str, namespace: str,
                          replicas: int = 2) -> None:
    """The Deployment gets a ReplicaSet and its pods, all Running on the fake nodes."""
    cluster.kubectl("-n", namespace, "create", "deployment", name, "--image=busybox",
                    f"--replicas={replicas}")

    def running() -> bool:
        pods = cluster.kubectl_json("-n", namespace, "get", "pods", "-l", f"app={name}")
        return sum(p["status"].get("phase") == "Running" for p in pods["items"]) == replicas

    wait_for(f"{replicas} running pods of {name}", running)
    rs = cluster.kubectl_json("-n", namespace, "get", "rs", "-l", f"app={name}")["items"]
    assert len(rs) == 1
    assert rs[0]["metadata"]["ownerReferences"][0]["name"] == name


@pytest.fixture
def namespace(bare: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "cm-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    bare.kubectl("create", "namespace", name)
    yield name
    bare.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_one_leads_and_a_standby_takes_over_after_kill9(
        bare: Cluster, managers: Callable[..., Manager], namespace: str) -> None:
    """Two controller managers: exactly one holds the Lease and reconciles; killed with -9,
    the other takes over once the lease expires and reconciles new Deployments."""
    a, b = managers(bare, *FAST), managers(bare, *FAST)
    ids = {a.identity: a, b.identity: b}
    leader_id = wait_for("a holder", lambda: holder(bare) in ids and holder(bare))
    leader = ids[leader_id]
    standby = b if leader is a else a
    wait_for("the leader's controllers", leader.leads)
    deployment_reconciled(bare, "first", namespace)
    assert not standby.leads(), standby.log()[-2000:]
    assert holder(bare) == leader_id
    transitions = int(lease(bare).get("leaseTransitions") or 0)

    assert leader.stop(signal.SIGKILL) == -9
    wait_for("the standby to take over", lambda: holder(bare) == standby.identity)
    assert int(lease(bare)["leaseTransitions"]) == transitions + 1
    wait_for("the new leader's controllers", standby.leads)
    deployment_reconciled(bare, "second", namespace)
    assert standby.proc.poll() is None


def test_sigterm_releases_the_lease(bare: Cluster, managers: Callable[..., Manager],
                                    namespace: str) -> None:
    """A leader stopped with SIGTERM exits 0 and empties the Lease; the standby takes it
    over without waiting for it to expire."""
    slow = ["--leader-elect-lease-duration", "60s", "--leader-elect-renew-deadline", "2s",
            "--leader-elect-retry-period", "500ms"]
    a = managers(bare, *slow)
    wait_for("the first to lead", lambda: holder(bare) == a.identity, timeout=30)
    b = managers(bare, *slow)
    b_id = b.identity
    time.sleep(1)
    assert holder(bare) == a.identity
    t0 = time.monotonic()
    assert a.stop() == 0, a.log()[-2000:]
    wait_for("the standby to take over", lambda: holder(bare) == b_id, timeout=15)
    assert time.monotonic() - t0 < 15  # far less than the 60 s lease
    deployment_reconciled(bare, "after-release", namespace, replicas=1)


def test_losing_the_lease_exits_nonzero(bare: Cluster,
                                        managers: Callable[..., Manager]) -> None:
    """A leader whose lease is taken exits 1 with "leaderelection lost", like
    kube-controller-manager."""
    a = managers(bare, *FAST)
    wait_for("it to lead", lambda: holder(bare) == a.identity and a.leads())
    bare.kubectl("-n", "kube-system", "patch", "lease", "kube-controller-manager",
                 "--type=merge", "-p", '{"spec":{"holderIdentity":"intruder",'
                 '"leaseDurationSeconds":1}}')
    wait_for("it to exit", lambda: a.proc.poll() is not None, timeout=20)
    assert a.proc.returncode == 1
    assert "leaderelection lost" in a.log()


def test_standby_against_a_full_server(full: Cluster,
                                       managers: Callable[..., Manager]) -> None:
    """`kyb server` runs its controllers under the same Lease: a controller manager pointed
    at it stays standby."""
    server_id = wait_for("the server to lead", lambda: holder(full))
    uid = (full.data_dir / "leader-election-id").read_text().strip()
    assert server_id.endswith("_" + uid)
    cm = managers(full, *FAST)
    cm_id = cm.identity
    assert cm_id != server_id
    time.sleep(5)  # longer than the controller manager's own lease duration
    assert holder(full) == server_id
    assert not cm.leads()
    assert cm.proc.poll() is None
    assert cm.stop() == 0, cm.log()[-2000:]
    assert holder(full) == server_id


@pytest.fixture
def unscheduled(tmp_path: Path) -> Iterator[Cluster]:
    """A server with two fake nodes and no scheduler of its own."""
    yield from _cluster(tmp_path, "--disable-scheduler", "--fake-nodes", "2")


def _pod(cluster: Cluster, name: str) -> None:
    cluster.kubectl("run", name, "--image=busybox", "--restart=Never")


def _node_of(cluster: Cluster, name: str) -> str:
    return str(cluster.kubectl_json("get", "pod", name)["spec"].get("nodeName") or "")


def test_a_scheduler_process_schedules_and_a_standby_takes_over(
        unscheduled: Cluster, managers: Callable[..., Manager]) -> None:
    """``kyb scheduler`` beside ``kyb server --disable-scheduler``: pods wait until one
    runs; two of them: one holds the kube-scheduler Lease, and killed with -9 the other
    takes over and schedules."""
    c = unscheduled
    _pod(c, "early")
    time.sleep(1.5)
    assert _node_of(c, "early") == ""  # nothing schedules yet
    a = managers(c, *FAST, command="scheduler")
    wait_for("the pod scheduled by kyb scheduler", lambda: _node_of(c, "early"))
    assert holder(c, "kube-scheduler") == a.identity
    b = managers(c, *FAST, command="scheduler")
    b_id = b.identity
    time.sleep(1)
    assert holder(c, "kube-scheduler") == a.identity and not b.leads()
    assert a.stop(signal.SIGKILL) == -9
    wait_for("the standby to take over", lambda: holder(c, "kube-scheduler") == b_id)
    _pod(c, "late")
    wait_for("a pod scheduled by the standby", lambda: _node_of(c, "late"))
