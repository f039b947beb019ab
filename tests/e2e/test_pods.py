"""Pods bound to the server's own node run as isolated processes (the node agent)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.cluster import Cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
    reason="running pods needs root and the CNI plugins (Debian containernetworking-plugins)")]

SERVER = """import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"pod={os.environ['POD_NAME']} hostname={os.uname().nodename}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("serving on 5000", flush=True)
http.server.HTTPServer(("0.0.0.0", 5000), H).serve_forever()
"""



def pod(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.kubectl_json("get", "pod", name, "-n", ns)


def apply(cluster: Cluster, ns: str, *objs: dict[str, Any]) -> None:
    for obj in objs:
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=orjson.dumps(obj).decode())


def server_pod(cluster: Cluster, name: str, **extra: Any) -> dict[str, Any]:
    container = {"name": "web", "image": "python:3.11", "command": ["python", "/app/server.py"],
                 "env": [{"name": "POD_NAME",
                          "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "ports": [{"containerPort": 5000}],
                 "readinessProbe": {"httpGet": {"path": "/", "port": 5000},
                                    "periodSeconds": 1},
                 "volumeMounts": [{"name": "code", "mountPath": "/app"}]}
    container.update(extra)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": cluster.node_name, "terminationGracePeriodSeconds": 2,
                     "containers": [container],
                     "volumes": [{"name": "code", "configMap": {"name": "code"}}]}}


def shell_pod(cluster: Cluster, name: str, script: str, *, restart: str = "Always",
              **extra: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "busybox", "command": ["sh", "-c", script]}
    container.update(extra)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": cluster.node_name, "restartPolicy": restart,
                     "terminationGracePeriodSeconds": 1, "containers": [container]}}


CODE = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "code"},
        "data": {"server.py": SERVER}}


def ready(p: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


def test_pods_serve_on_their_own_ips(cluster: Cluster, namespace: str) -> None:
    """Two pods both listen on port 5000, each on its own IP; logs and events work."""
    apply(cluster, namespace, CODE, server_pod(cluster, "a"), server_pod(cluster, "b"))
    pods = [wait_for(f"pod {n} Ready", lambda n=n: (p := pod(cluster, namespace, n)) and
                     ready(p) and p) for n in ("a", "b")]
    ips = [p["status"]["podIP"] for p in pods]
    prefix = cluster.pod_cidr.rsplit(".", 1)[0] + "."
    assert len(set(ips)) == 2 and all(ip.startswith(prefix) for ip in ips)
    for p, ip in zip(pods, ips, strict=True):
        r = httpx.get(f"http://{ip}:5000/", timeout=5)
        name = p["metadata"]["name"]
        assert r.text == f"pod={name} hostname={name}"
        st = p["status"]["containerStatuses"][0]
        assert st["ready"] and st["started"] and "running" in st["state"]
        assert p["status"]["phase"] == "Running" and p["status"]["hostIP"] == "127.0.0.1"
    assert "serving on 5000" in cluster.kubectl("logs", "a", "-n", namespace).stdout
    table = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout
    assert "1/1     Running" in table
    reasons = {e["reason"] for e in cluster.kubectl_json(
        "get", "events", "-n", namespace,
        "--field-selector", "involvedObject.name=a")["items"]}
    assert {"Pulled", "Created", "Started"} <= reasons


def test_crash_loop_back_off(cluster: Cluster, namespace: str) -> None:
    """A container that keeps exiting 1 is restarted with growing back-off."""
    apply(cluster, namespace, shell_pod(cluster, "crash", "echo boom; exit 1"))

    def looping() -> Any:
        st = (pod(cluster, namespace, "crash").get("status") or {}).get("containerStatuses")
        if st and st[0]["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff":
            return st[0]
        return None

    st = wait_for("CrashLoopBackOff", looping)
    assert st["lastState"]["terminated"]["exitCode"] == 1
    assert st["lastState"]["terminated"]["reason"] == "Error"
    assert "back-off 10s restarting failed container=main" in st["state"]["waiting"]["message"]
    assert pod(cluster, namespace, "crash")["status"]["phase"] == "Running"
    # after the first restart crashes too, the back-off doubles
    second = wait_for("a crash after the first restart", lambda: (s := looping()) and
                      s["restartCount"] == 1 and s, timeout=40)
    assert "back-off 20s" in second["state"]["waiting"]["message"]
    assert "boom" in cluster.kubectl("logs", "crash", "-n", namespace, "--previous").stdout


@pytest.mark.parametrize(("script", "phase", "code", "reason"), [
    pytest.param("exit 0", "Succeeded", 0, "Completed", id="succeeded"),
    pytest.param("exit 3", "Failed", 3, "Error", id="failed"),
])
def test_restart_policy_never(cluster: Cluster, namespace: str, script: str, phase: str,
                              code: int, reason: str) -> None:
    """restartPolicy Never: the pod ends Succeeded or Failed with the exit code."""
    apply(cluster, namespace, shell_pod(cluster, "once", script, restart="Never"))
    p = wait_for(phase, lambda: (p := pod(cluster, namespace, "once")) and
                 p["status"].get("phase") == phase and p)
    term = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (code, reason)


def test_oom_killed(cluster: Cluster, namespace: str) -> None:
    """Going beyond the memory limit ends the container OOMKilled (exit 137)."""
    hog = shell_pod(cluster, "hog", "", restart="Never",
                    image="python:3.11",
                    command=["python", "-c", "x = bytearray(300 * 1024 * 1024); print(len(x))"],
                    resources={"limits": {"memory": "64Mi"}})
    apply(cluster, namespace, hog)
    p = wait_for("OOMKilled", lambda: (p := pod(cluster, namespace, "hog")) and
                 p["status"].get("phase") == "Failed" and p)
    term = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (137, "OOMKilled")


def test_liveness_probe_restarts(cluster: Cluster, namespace: str) -> None:
    """A failing liveness probe restarts the container."""
    sick = shell_pod(cluster, "sick", "sleep 3600", livenessProbe={
        "exec": {"command": ["test", "-f", "/tmp/healthy"]}, "periodSeconds": 1,
        "failureThreshold": 2})
    apply(cluster, namespace, sick)
    st = wait_for("a restart", lambda: (s := (pod(cluster, namespace, "sick").get("status") or {})
                                        .get("containerStatuses")) and
                  s[0]["restartCount"] >= 1 and s[0], timeout=40)
    assert st["lastState"]["terminated"]["exitCode"] == 137
    events = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                                  "involvedObject.name=sick,reason=Unhealthy")["items"]
    assert events and "Liveness probe failed" in events[0]["message"]


def test_unknown_image(cluster: Cluster, namespace: str) -> None:
    """An image the node's catalog does not know waits in ErrImagePull/ImagePullBackOff."""
    p = shell_pod(cluster, "nope", "true", image="tensorflow/serving:2.15")
    apply(cluster, namespace, p)
    st = wait_for("ErrImagePull", lambda: (s := (pod(cluster, namespace, "nope").get("status")
                                                 or {}).get("containerStatuses")) and
                  s[0]["state"].get("waiting", {}).get("reason") in
                  ("ErrImagePull", "ImagePullBackOff") and s[0])
    assert 'image "tensorflow/serving:2.15" is not in the image catalog' in \
        st["state"]["waiting"]["message"]


def _leftovers(uid: str) -> list[str]:
    found = []
    if Path(f"/var/run/netns/kyb-{uid}").exists():
        found.append("netns")
    for ctl in ("memory", "cpu", "pids"):
        if Path(f"/sys/fs/cgroup/{ctl}/kybernetes/pod{uid}").exists():
            found.append(f"cgroup {ctl}")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    if uid in ps:
        found.append("processes")
    return found


def test_delete_ends_the_process_tree_and_cleans_up(cluster: Cluster, namespace: str) -> None:
    """kubectl delete stops every process of the pod and leaves nothing behind."""
    tree = shell_pod(cluster, "tree", "sleep 1000 & sleep 1001 & wait")
    apply(cluster, namespace, tree)
    p = wait_for("Running", lambda: (p := pod(cluster, namespace, "tree")) and
                 p["status"].get("phase") == "Running" and p)
    uid = p["metadata"]["uid"]
    assert _leftovers(uid), "the pod should have a namespace, cgroups and processes"
    assert "sleep 1001" in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                          text=True).stdout
    cluster.kubectl("delete", "pod", "tree", "-n", namespace, "--timeout=30s")
    wait_for("nothing left", lambda: not _leftovers(uid) and
             "sleep 1001" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                text=True).stdout, timeout=15)


def test_restart_adopts_running_pods(fresh_cluster: Cluster) -> None:
    """Restarting kyb server leaves running pods running and adopts them (no duplicates)."""
    cluster = fresh_cluster
    apply(cluster, "default", shell_pod(cluster, "keeper", "sleep 3600"))
    p = wait_for("Running", lambda: (p := pod(cluster, "default", "keeper")) and
                 p["status"].get("phase") == "Running" and p)
    uid = p["metadata"]["uid"]
    pid_file = next((cluster.data_dir / "agent" / "pods" / uid / "containers" / "main")
                    .glob("*/pid"))
    before = pid_file.read_text().split()
    assert cluster.stop() == 0
    os.kill(int(before[1]), 0)  # still running without the agent
    cluster.start()
    time.sleep(2)
    after = pod(cluster, "default", "keeper")
    st = after["status"]["containerStatuses"][0]
    assert "running" in st["state"] and st["restartCount"] == 0
    runs = list(pid_file.parent.parent.iterdir())
    assert len(runs) == 1 and pid_file.read_text().split() == before
    cluster.kubectl("delete", "pod", "keeper", "--timeout=30s")
    wait_for("nothing left", lambda: not _leftovers(uid), timeout=15)


def test_exec_runs_in_the_container(cluster: Cluster, namespace: str) -> None:
    """kubectl exec: output, stderr, stdin and the exit code, inside the pod's namespaces."""
    apply(cluster, namespace, shell_pod(cluster, "box", "sleep 3600", readinessProbe={
        "exec": {"command": ["sh", "-c", "cat /proc/self/cgroup > /tmp/probe-cgroup"]},
        "periodSeconds": 1}))
    wait_for("Ready", lambda: (p := pod(cluster, namespace, "box")) and ready(p))
    out = cluster.kubectl("exec", "box", "-n", namespace, "--", "sh", "-c",
                          "echo out; echo err >&2; hostname; cat /etc/hostname")
    assert out.stdout == "out\nbox\nbox\n" and out.stderr == "err\n"
    failed = cluster.kubectl("exec", "box", "-n", namespace, "--", "sh", "-c", "exit 7",
                             check=False)
    assert failed.returncode == 7
    assert "command terminated with exit code 7" in failed.stderr
    echoed = cluster.kubectl("exec", "-i", "box", "-n", namespace, "--", "cat",
                             input="through stdin\n")
    assert echoed.stdout == "through stdin\n"
    ps = cluster.kubectl("exec", "box", "-n", namespace, "--", "ps", "-e", "-o", "pid,args")
    lines = [line.split(None, 1) for line in ps.stdout.splitlines()[1:]]
    assert lines[0] == ["1", "sh -c sleep 3600"]  # the pod sees only its own processes
    # the command runs in the container's cgroups: counted and limited with it
    uid = pod(cluster, namespace, "box")["metadata"]["uid"]
    groups = cluster.kubectl("exec", "box", "-n", namespace, "--", "cat", "/proc/self/cgroup")
    # (cgroup v1 here: the memory hierarchy; on a v2-only machine the unified one)
    ours = [line for line in groups.stdout.splitlines()
            if line.split(":")[1] == ("memory" if "memory" in groups.stdout else "")]
    assert ours and all(line.endswith(f"/kybernetes/pod{uid}/main") for line in ours), \
        groups.stdout
    # and so do exec probes
    probed = cluster.kubectl("exec", "box", "-n", namespace, "--", "cat", "/tmp/probe-cgroup")
    assert any(line.endswith(f"/kybernetes/pod{uid}/main") for line in probed.stdout.splitlines()
               if line.split(":")[1] == ("memory" if "memory" in probed.stdout else "")), \
        probed.stdout



def millicores(q: str) -> float:
    if q.endswith("m"):
        return float(q[:-1])
    if q.endswith("n"):
        return float(q[:-1]) / 1e6
    if q.endswith("u"):
        return float(q[:-1]) / 1e3
    return float(q) * 1000


def test_top_reports_usage(cluster: Cluster, namespace: str) -> None:
    """kubectl top pod/node: metrics.k8s.io, measured from the pods' cgroups."""
    burn = shell_pod(cluster, "burn", "while :; do :; done",
                     resources={"limits": {"cpu": "300m", "memory": "64Mi"}})
    burn["metadata"]["labels"] = {"role": "burn"}
    apply(cluster, namespace, burn, shell_pod(cluster, "idle", "sleep 3600"))
    for name in ("burn", "idle"):
        wait_for(f"{name} Running", lambda n=name: pod(cluster, namespace, n)["status"]
                 .get("phase") == "Running")
    time.sleep(1)
    raw = orjson.loads(cluster.kubectl(
        "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods").stdout)
    usage = {m["metadata"]["name"]: m["containers"][0]["usage"] for m in raw["items"]}
    assert set(usage) == {"burn", "idle"}
    # capped at 300m by its CFS quota, and busy for all of it that the machine gives
    assert 50 < millicores(usage["burn"]["cpu"]) <= 400, usage
    assert millicores(usage["idle"]["cpu"]) < 50, usage
    assert raw["items"][0]["window"].endswith("s")
    burn_metrics = next(m for m in raw["items"] if m["metadata"]["name"] == "burn")
    assert burn_metrics["metadata"]["labels"] == {"role": "burn"}
    table = cluster.kubectl("top", "pod", "-n", namespace, "--sort-by=cpu").stdout.splitlines()
    assert table[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert table[1].split()[0] == "burn" and table[2].split()[0] == "idle"
    by_label = cluster.kubectl("top", "pod", "-n", namespace, "-l", "role=burn",
                               "--containers").stdout.splitlines()
    assert by_label[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert [line.split()[:2] for line in by_label[1:]] == [["burn", "main"]]
    nodes = cluster.kubectl("top", "node").stdout.splitlines()
    assert nodes[0].split()[:3] == ["NAME", "CPU(cores)", "CPU(%)"]
    row = next(line.split() for line in nodes[1:] if line.split()[0] == cluster.node_name)
    assert millicores(row[1]) > 50 and row[2].endswith("%")
    missing = cluster.kubectl("top", "pod", "nope", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert 'podmetrics.metrics.k8s.io "nope" not found' in missing.stderr


def local_only_server(cluster: Cluster) -> dict[str, Any]:
    """A web server that listens on the pod's own 127.0.0.1 only."""
    return server_pod(cluster, "local", command=[
        "python", "-c", "import os, runpy, sys; os.chdir('/app'); "
        "sys.argv = ['http.server', '5000', '--bind', '127.0.0.1']; "
        "runpy.run_module('http.server', run_name='__main__')"], readinessProbe={
            "exec": {"command": ["python", "-c", "import urllib.request as u; "
                                 "u.urlopen('http://127.0.0.1:5000/server.py')"]},
            "periodSeconds": 1})


@pytest.mark.parametrize("websockets", [True, False], ids=["websocket", "spdy"])
def test_port_forward(cluster: Cluster, namespace: str, websockets: bool) -> None:
    """kubectl port-forward reaches a port inside the pod's network namespace (also one
    bound to the pod's localhost), over SPDY-in-WebSocket and over the SPDY fallback."""
    from tests.e2e.cluster import KUBECTL, free_port

    apply(cluster, namespace, CODE, local_only_server(cluster))
    wait_for("pod Ready", lambda: ready(pod(cluster, namespace, "local")))
    good, bad = free_port(), free_port()
    env = {**cluster.env(), "KUBECTL_PORT_FORWARD_WEBSOCKETS": str(websockets).lower()}
    proc = subprocess.Popen(
        [KUBECTL, f"--cache-dir={cluster.cache_dir / 'kube-cache'}", "port-forward",
         "-n", namespace, "pod/local", f"{good}:5000", f"{bad}:5999"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith(f"Forwarding from 127.0.0.1:{good} -> 5000"), lines
        for _ in range(3):  # one stream pair per connection
            r = httpx.get(f"http://127.0.0.1:{good}/server.py", timeout=10)
            assert r.status_code == 200 and r.text == SERVER
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{bad}/", timeout=10)
        # the agent's message is shown, and kubectl gives up as it does on a real cluster
        assert proc.wait(timeout=20) != 0
        err = proc.stderr.read() if proc.stderr else ""
        assert "error forwarding port 5999 to pod" in err
        assert "dial tcp4 127.0.0.1:5999: connect: connection refused" in err
    finally:
        proc.kill()
        proc.wait()


def test_port_forward_python_client(cluster: Cluster, namespace: str) -> None:
    """The Python client's port-forward (v4.channel.k8s.io over WebSocket)."""
    from kubernetes import client, config
    from kubernetes.stream import portforward

    apply(cluster, namespace, CODE, local_only_server(cluster))
    wait_for("pod Ready", lambda: ready(pod(cluster, namespace, "local")))
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        pf = portforward(core.connect_get_namespaced_pod_portforward, "local", namespace,
                         ports="5000,5999")
        try:
            sock = pf.socket(5000)
            sock.setblocking(True)
            sock.settimeout(10)
            sock.sendall(b"GET /server.py HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.0 200 OK") and data.endswith(SERVER.encode())
            assert pf.error(5000) is None
            refused = pf.socket(5999)
            refused.setblocking(True)
            refused.settimeout(10)
            assert refused.recv(10) == b""
            assert "connect: connection refused" in (pf.error(5999) or "")
        finally:
            pf.close()


def test_two_servers_share_the_machine(cluster: Cluster, namespace: str,
                                       fresh_cluster: Cluster) -> None:
    """Two servers on one machine: each node's pods on its own bridge; starting and
    cleaning up one leaves the other's pods (namespaces, addresses, bridge) alone."""
    apply(cluster, namespace, CODE, server_pod(cluster, "a"))
    first = wait_for("pod a Ready", lambda: (p := pod(cluster, namespace, "a")) and
                     ready(p) and p)
    other = fresh_cluster
    apply(other, "default", CODE, server_pod(other, "b"))
    second = wait_for("pod b Ready", lambda: (p := pod(other, "default", "b")) and
                      ready(p) and p)
    for p in (first, second):
        ip = p["status"]["podIP"]
        assert httpx.get(f"http://{ip}:5000/", timeout=5).text.startswith(
            f"pod={p['metadata']['name']}")
    other.stop()
    other.killall()  # kills b and releases what only it held
    ip = first["status"]["podIP"]
    assert httpx.get(f"http://{ip}:5000/", timeout=5).text.startswith("pod=a")
    assert ready(pod(cluster, namespace, "a"))


def test_lifecycle_hooks(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """postStart runs in the container before it counts as started; preStop runs before
    SIGTERM on deletion; a failing postStart kills the container."""
    out = tmp_path / "out"
    out.mkdir()
    script = ("until [ -f /tmp/post-start ]; do sleep 0.1; done; echo saw-post-start >> "
              "/out/log; trap 'echo term >> /out/log; exit 0' TERM; "
              "while :; do sleep 0.1; done")
    hooked = shell_pod(cluster, "hooked", script, lifecycle={
        "postStart": {"exec": {"command": ["sh", "-c", "touch /tmp/post-start"]}},
        "preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop >> /out/log"]}}},
        volumeMounts=[{"name": "out", "mountPath": "/out"}])
    hooked["spec"]["terminationGracePeriodSeconds"] = 10
    hooked["spec"]["volumes"] = [{"name": "out", "hostPath": {"path": str(out)}}]
    failing = shell_pod(cluster, "failing", "sleep 3600", restart="Never", lifecycle={
        "postStart": {"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}}})
    apply(cluster, namespace, hooked, failing)
    wait_for("the post-start hook's mark", lambda: (out / "log").exists() and
             "saw-post-start" in (out / "log").read_text())
    cluster.kubectl("delete", "pod", "hooked", "-n", namespace, "--timeout=30s")
    assert (out / "log").read_text().split() == ["saw-post-start", "pre-stop", "term"]

    st = wait_for("the failing pod to fail", lambda: (s := pod(
        cluster, namespace, "failing").get("status") or {}).get("phase") == "Failed" and s)
    assert "terminated" in st["containerStatuses"][0]["state"]

    def failing_events() -> dict[str, str]:
        return {e["reason"]: e["message"] for e in cluster.kubectl_json(
            "get", "events", "-n", namespace, "--field-selector",
            "involvedObject.name=failing")["items"]}

    # events are posted in the background, as the kubelet's: they may follow the status
    events = wait_for("the hook's events", lambda: (ev := failing_events()).keys() >= {
        "FailedPostStartHook", "Killing"} and ev)
    assert "exited with 3" in events["FailedPostStartHook"] or \
        "nope" in events["FailedPostStartHook"]
    assert events["Killing"] == "FailedPostStartHook"


def test_active_deadline_seconds(cluster: Cluster, namespace: str) -> None:
    """A pod running past activeDeadlineSeconds is stopped and Failed (DeadlineExceeded)."""
    p = shell_pod(cluster, "deadline", "sleep 3600")
    p["spec"]["activeDeadlineSeconds"] = 2
    apply(cluster, namespace, p)
    st = wait_for("DeadlineExceeded", lambda: (s := pod(
        cluster, namespace, "deadline").get("status") or {}).get("phase") == "Failed" and s)
    assert st["reason"] == "DeadlineExceeded"
    assert st["message"] == "Pod was active on the node longer than the specified deadline"
    assert "terminated" in st["containerStatuses"][0]["state"]
    # the agent posts events in the background: the status may come first
    wait_for("the DeadlineExceeded event", lambda: "DeadlineExceeded" in {
        e["reason"] for e in cluster.kubectl_json(
            "get", "events", "-n", namespace, "--field-selector",
            "involvedObject.name=deadline")["items"]})


def test_termination_messages(cluster: Cluster, namespace: str) -> None:
    """The file at terminationMessagePath becomes the terminated state's message; with
    FallbackToLogsOnError an error exit without one shows the end of the log."""
    wrote = shell_pod(cluster, "wrote", "echo 'model saved to /models/v3' > "
                      "/dev/termination-log; exit 0", restart="Never")
    custom = shell_pod(cluster, "custom", "mkdir -p /tmp/x; echo custom path > /tmp/x/msg; "
                       "exit 2", restart="Never", terminationMessagePath="/tmp/x/msg")
    fallback = shell_pod(cluster, "fallback", "echo first; echo 'CUDA out of memory'; exit 1",
                         restart="Never", terminationMessagePolicy="FallbackToLogsOnError")
    apply(cluster, namespace, wrote, custom, fallback)

    def message(name: str) -> Any:
        st = (pod(cluster, namespace, name).get("status") or {}).get("containerStatuses")
        term = st and st[0]["state"].get("terminated")
        return term and (term.get("message") or "-")

    assert wait_for("wrote", lambda: message("wrote")) == "model saved to /models/v3\n"
    assert wait_for("custom", lambda: message("custom")) == "custom path\n"
    assert wait_for("fallback", lambda: message("fallback")) == \
        "first\nCUDA out of memory\n"

@pytest.fixture
def gpu_cluster(tmp_path: Path) -> Any:
    """A server whose node declares 4 fake GPUs."""
    from tests.e2e.cluster import free_port

    c = Cluster(data_dir=tmp_path / "data", port=free_port(), log_path=tmp_path / "server.log",
                cache_dir=tmp_path / "home", extra_args=["--fake-gpus", "4"])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    yield c
    c.stop()
    c.killall()


def test_gpus_are_handed_out_once(gpu_cluster: Cluster) -> None:
    """With --fake-gpus 4, pods get distinct devices; asking for more than is free fails."""
    cluster = gpu_cluster
    node = wait_for("the node", lambda: cluster.kubectl(
        "get", "node", cluster.node_name, "-o", "json", check=False).stdout)
    assert orjson.loads(node)["status"]["capacity"]["nvidia.com/gpu"] == "4"

    def gpu_pod(name: str, count: int) -> dict[str, Any]:
        return shell_pod(cluster, name, "echo $CUDA_VISIBLE_DEVICES; sleep 3600",
                         resources={"limits": {"nvidia.com/gpu": count}})

    apply(cluster, "default", gpu_pod("g1", 1), gpu_pod("g2", 1))
    seen = []
    for name in ("g1", "g2"):
        wait_for(f"{name} Running", lambda n=name: pod(cluster, "default", n)["status"]
                 .get("phase") == "Running")
        out = wait_for("its devices in the log", lambda n=name: cluster.kubectl(
            "logs", n).stdout.strip())
        seen.append(out)
    assert sorted(seen) == ["0", "1"] or len(set(seen)) == 2
    apply(cluster, "default", gpu_pod("g3", 3))
    st = wait_for("refused", lambda: (s := pod(cluster, "default", "g3").get("status") or {})
                  .get("phase") == "Failed" and s)
    assert st["reason"] == "UnexpectedAdmissionError"
    assert "Requested: 3, Available: 2" in st["message"]
    cluster.kubectl("delete", "pod", "g1", "--timeout=30s")
    apply(cluster, "default", gpu_pod("g4", 1))
    wait_for("g4 Running", lambda: pod(cluster, "default", "g4")["status"].get("phase") ==
             "Running")
    assert wait_for("g4's device", lambda: cluster.kubectl("logs", "g4").stdout.strip()) == \
        seen[0]



def test_log_rotation(tmp_path: Path) -> None:
    """--container-log-max-size/-files: the log rotates between whole lines, the newest
    files are kept, and kubectl logs shows the current one."""
    from tests.e2e.cluster import free_port

    c = Cluster(data_dir=tmp_path / "data", port=free_port(), log_path=tmp_path / "server.log",
                cache_dir=tmp_path / "home", extra_args=[
                    "--container-log-max-size", "4Ki", "--container-log-max-files", "3"])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    try:
        apply(c, "default", shell_pod(c, "chatty", "i=0; while [ $i -lt 300 ]; do "
                                      "i=$((i+1)); echo \"line $i $(printf '%060d' 0)\"; done",
                                      restart="Never"))
        p = wait_for("Succeeded", lambda: (q := pod(c, "default", "chatty")).get(
            "status", {}).get("phase") == "Succeeded" and q)
        # logs are on disk (DATA/logs/<uid>/<container>/<run>.log), apart from the pod's
        # state (in memory)
        run_dir = c.data_dir / "agent" / "logs" / p["metadata"]["uid"] / "main"
        files = sorted(f.name for f in run_dir.iterdir())
        assert files == ["0.log", "0.log.1", "0.log.2"]
        numbers = []
        for name in ("0.log.2", "0.log.1", "0.log"):
            data = (run_dir / name).read_bytes()
            assert len(data) < 4096 + 200
            for line in data.splitlines():
                _, stream, tag, text = line.split(b" ", 3)
                assert stream == b"stdout" and tag == b"F" and text.startswith(b"line ")
                numbers.append(int(text.split()[1]))
        # consecutive lines, the last ones, nothing split or lost between the files kept
        assert numbers == list(range(numbers[0], 301)) and numbers[0] > 1
        shown = c.kubectl("logs", "chatty").stdout.splitlines()
        assert shown[-1].startswith("line 300 ") and len(shown) == len(
            (run_dir / "0.log").read_bytes().splitlines())
    finally:
        c.stop()
        c.killall()



GRPC_SERVER = """import os, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
servicer = health.HealthServicer()
status = health_pb2.HealthCheckResponse.ServingStatus.Value(os.environ["STATUS"])
servicer.set("model", status)
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("0.0.0.0:9000")
server.start()
print("serving", os.environ["STATUS"], flush=True)
server.wait_for_termination()
"""


def test_grpc_probes(cluster: Cluster, namespace: str) -> None:
    """grpc readiness probes call grpc.health.v1.Health/Check on the pod (a real grpcio
    server): SERVING is Ready, NOT_SERVING is not, with kubelet's message."""
    pytest.importorskip("grpc_health.v1.health",
                        reason="grpcio-health-checking (a dev dependency) is not installed")
    code = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "grpc"},
            "data": {"server.py": GRPC_SERVER}}

    def grpc_pod(name: str, status: str) -> dict[str, Any]:
        p = server_pod(cluster, name, command=["python", "/app/server.py"],
                       env=[{"name": "STATUS", "value": status}],
                       readinessProbe={"grpc": {"port": 9000, "service": "model"},
                                       "periodSeconds": 1, "timeoutSeconds": 2})
        p["spec"]["volumes"] = [{"name": "code", "configMap": {"name": "grpc"}}]
        return p

    apply(cluster, namespace, code, grpc_pod("good", "SERVING"),
          grpc_pod("bad", "NOT_SERVING"))
    wait_for("good Ready", lambda: ready(pod(cluster, namespace, "good")), timeout=60)

    def unhealthy() -> Any:
        return {e["message"] for e in cluster.kubectl_json(
            "get", "events", "-n", namespace, "--field-selector",
            "involvedObject.name=bad")["items"] if e["reason"] == "Unhealthy"} & {
            'Readiness probe failed: service unhealthy (responded with "NOT_SERVING")'}

    wait_for("bad's probe to say NOT_SERVING", unhealthy, timeout=60)
    assert not ready(pod(cluster, namespace, "bad"))


def test_node_pressure_eviction(tmp_path: Path) -> None:
    """Below a hard eviction threshold the node reports pressure and evicts its pods one by
    one, the one most over its request first."""
    from tests.e2e.cluster import free_port

    total = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                 .splitlines() if line.startswith("MemTotal:"))
    # a threshold no machine can meet: memory is always short
    c = Cluster(data_dir=tmp_path / "data", port=free_port(), log_path=tmp_path / "server.log",
                cache_dir=tmp_path / "home", extra_args=[
                    "--eviction-hard", f"memory.available<{total + 1024 * 1024}Ki",
                    "--eviction-monitoring-period", "3"])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    try:
        hog = shell_pod(c, "hog", "x=$(head -c 40000000 /dev/zero | tr '\\0' a); sleep 3600")
        modest = shell_pod(c, "modest", "sleep 3600",
                           resources={"requests": {"memory": "200Mi"}})
        apply(c, "default", hog, modest)
        first = wait_for("an eviction", lambda: [
            p for p in c.kubectl_json("get", "pods")["items"]
            if (p.get("status") or {}).get("reason") == "Evicted"], timeout=60)
        assert [p["metadata"]["name"] for p in first] == ["hog"]
        st = first[0]["status"]
        assert st["phase"] == "Failed"
        assert st["message"].startswith("The node was low on resource: memory. ")
        assert "Container main was using" in st["message"]
        cond = next(x for x in st["conditions"] if x["type"] == "DisruptionTarget")
        assert cond["status"] == "True" and cond["reason"] == "TerminationByKubelet"
        assert "terminated" in st["containerStatuses"][0]["state"]
        node = wait_for("MemoryPressure", lambda: (n := c.kubectl_json(
            "get", "node", c.node_name)) and any(
                x["type"] == "MemoryPressure" and x["status"] == "True"
                for x in n["status"]["conditions"]) and n)
        mp = next(x for x in node["status"]["conditions"] if x["type"] == "MemoryPressure")
        assert mp["reason"] == "KubeletHasInsufficientMemory"
        # the pressure stays: the next pod goes too
        wait_for("modest evicted", lambda: (pod(c, "default", "modest").get("status") or {})
                 .get("reason") == "Evicted", timeout=30)
    finally:
        c.stop()
        c.killall()


def test_network_namespace_pool(tmp_path: Path) -> None:
    """--pod-network-pool: namespaces are wired ahead; a pod takes one over (its name, its
    address's record), the pool refills, and deletion and killall leave nothing behind."""
    from kybernetes.kubelet.network import ipam_records, pooled_namespaces
    from tests.e2e.cluster import free_port

    c = Cluster(data_dir=tmp_path / "data", port=free_port(), log_path=tmp_path / "server.log",
                cache_dir=tmp_path / "home", extra_args=["--pod-network-pool", "3"])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    agent_dir = c.data_dir / "agent"
    c.start()
    try:
        def pool() -> set[str]:
            recorded = {cid for _, cid in ipam_records(agent_dir)}
            return {cid for cid in pooled_namespaces(agent_dir) if cid in recorded}

        first = wait_for("3 wired namespaces", lambda: len(p := pool()) == 3 and p)
        apply(c, "default", shell_pod(c, "pooled", "sleep 3600"))
        p = wait_for("Running", lambda: (q := pod(c, "default", "pooled"))["status"].get(
            "phase") == "Running" and q)
        uid, ip = p["metadata"]["uid"], p["status"]["podIP"]
        # the pod holds one of the wired namespaces, under its own name and record
        assert Path(f"/var/run/netns/kyb-{uid}").exists()
        records = {cid: f.name for f, cid in ipam_records(agent_dir)}
        assert records[uid] == ip
        assert len(first - set(pooled_namespaces(agent_dir))) == 1
        addr = subprocess.run(["ip", "-n", f"kyb-{uid}", "-4", "-o", "addr", "show", "eth0"],
                              capture_output=True, text=True, check=True).stdout
        assert f"{ip}/" in addr
        # the pool is wired again once pods stop coming
        wait_for("the pool refilled", lambda: len(pool()) == 3)
        # deletion releases the pod's namespace and address
        c.kubectl("delete", "pod", "pooled", "--timeout=30s")
        wait_for("nothing left of the pod", lambda: not _leftovers(uid) and uid not in {
            cid for _, cid in ipam_records(agent_dir)})
        assert c.stop() == 0
        assert len(pooled_namespaces(agent_dir)) == 3  # kept for the next start
    finally:
        c.stop()
        c.killall()
    assert pooled_namespaces(agent_dir) == []
    assert [cid for _, cid in ipam_records(agent_dir)] == []
