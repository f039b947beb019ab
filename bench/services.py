"""The service data paths on a real ``kyb server`` (root needed): requests/s and p99
latency through a ClusterIP (kernel DNAT) and through the ingress controller, against
calling the pod directly, in one run (``wrk``, loopback and the server's own pod
network only, bounded in time); then the time from a pod turning unready to it receiving
no more requests through its Service.

    python -m bench.services [--seconds 10] [--trials 3]

The backend is serve-model.yaml's model server, one replica (so all three paths reach
the same process). Prints JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.run import Server, free_port, machine, report

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO.parent / "shared" / "scenarios"
KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
READY_FLAG = "/tmp/kyb-bench-ready"


def manifests() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((SCENARIOS / "serve-model.yaml").read_text()) if d]
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    container = {
        "name": "model", "image": "python:3.11", "command": ["python", "/app/server.py"],
        "env": [{"name": "MODEL_PATH", "value": "/app/model.json"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"containerPort": 5000}],
        "volumeMounts": [{"name": "code", "mountPath": "/app"}]}

    def deployment(name: str, replicas: int, probe: dict[str, Any] | None) -> dict[str, Any]:
        c = {**container, **({"readinessProbe": probe} if probe else {})}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}}, "spec": {
                             "terminationGracePeriodSeconds": 1, "containers": [c],
                             "volumes": [{"name": "code",
                                          "configMap": {"name": "ml-model-code"}}]}}}}

    def service(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 5000}]}}

    flag_probe = {"exec": {"command": ["test", "-e", READY_FLAG]}, "periodSeconds": 1,
                  "failureThreshold": 1, "successThreshold": 1}
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "bench"},
               "spec": {"rules": [{"http": {"paths": [{
                   "path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "model", "port": {"number": 80}}}}]}}]}}
    return [configmap, deployment("model", 1, None), service("model"), ingress,
            # applied after the throughput runs: their failing probes would disturb them
            deployment("flip", 2, flag_probe), service("flip")]


def kubectl(server: Server, *args: str, stdin: str | None = None) -> str:
    return subprocess.run([KUBECTL, f"--kubeconfig={server.data_dir / 'kubeconfig'}", *args],
                          input=stdin, capture_output=True, text=True, check=True,
                          timeout=120).stdout


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"per_second": rps, "p50_ms": round(ms("50%"), 2), "p99_ms": round(ms("99%"), 2),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def ask(host: str, port: int) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("POST", "/predict", body=b'{"features": [1, 2, 3]}')
        return str(json.loads(conn.getresponse().read())["pod"])
    finally:
        conn.close()


def unready_trial(server: Server, vip: str, pod: str) -> dict[str, float]:
    """Take ``pod`` out (its readiness flag removed) under a request loop on the
    Service; seconds from the removal, and from its Ready=False being visible in the
    API, to the last request it answered."""
    answers: list[tuple[float, str]] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and len(answers) < 50000:
            try:
                answers.append((time.monotonic(), ask(vip, 80)))
            except OSError:
                pass

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(1)
    t_remove = time.monotonic()
    kubectl(server, "exec", pod, "--", "rm", "-f", READY_FLAG)
    t_unready = 0.0
    with server.client() as c:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = c.get(f"/api/v1/namespaces/default/pods/{pod}").json()["status"]
            ready = next((x["status"] for x in status.get("conditions") or []
                          if x["type"] == "Ready"), "True")
            if ready == "False":
                t_unready = time.monotonic()
                break
            time.sleep(0.02)
    time.sleep(3)
    stop.set()
    worker.join()
    last = max((t for t, p in answers if p == pod), default=t_remove)
    kubectl(server, "exec", pod, "--", "touch", READY_FLAG)
    return {"removal_to_last_request_s": round(last - t_remove, 3),
            "unready_seen_to_last_request_s": round(last - t_unready, 3),
            "requests": len(answers)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("wrk"):
        sys.exit("the services benchmark needs root (pods, nftables) and wrk")
    tmp = Path(tempfile.mkdtemp(prefix="kyb-bench-services-"))
    ingress_port = free_port()
    server = Server(tmp / "data", free_port())
    server.extra_args = ["--node-name", "bench-node", "--agent-port", str(free_port()),
                         "--pod-cidr", "10.42.202.0/24", "--pod-network-pool", "8",
                         "--ingress-http-port", str(ingress_port), "--ingress-https-port", "0"]
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                              "seconds": args.seconds, "connections": args.connections,
                              "backend": "serve-model.yaml's server.py, 1 replica, GET /healthz"}
    try:
        server.start()
        deadline = time.monotonic() + 30
        while not kubectl(server, "get", "nodes", "-o", "name").strip():
            assert time.monotonic() < deadline, "the node did not register"
            time.sleep(0.2)
        docs = manifests()
        kubectl(server, "apply", "-f", "-",
                stdin="\n---\n".join(yaml.safe_dump(d) for d in docs[:4]))
        kubectl(server, "rollout", "status", "deployment/model", "--timeout=90s")
        pod = json.loads(kubectl(server, "get", "pods", "-l", "app=model", "-o", "json"))[
            "items"][0]
        vip = json.loads(kubectl(server, "get", "service", "model", "-o", "json"))[
            "spec"]["clusterIP"]
        server.settle()
        paths = {"direct": f"http://{pod['status']['podIP']}:5000/healthz",
                 "clusterip": f"http://{vip}/healthz",
                 "ingress": f"http://127.0.0.1:{ingress_port}/healthz"}
        wrk(paths["direct"], 5, args.connections)  # warm-up
        figures = {name: wrk(url, args.seconds, args.connections) for name, url in paths.items()}
        # the direct path again, last: its figure is the better of the two (this machine's
        # neighbours make single runs vary)
        again = wrk(paths["direct"], args.seconds, args.connections)
        if again["per_second"] > figures["direct"]["per_second"]:
            figures["direct"] = again
        direct = figures["direct"]["per_second"]
        for name in ("clusterip", "ingress"):
            figures[name]["of_direct_percent"] = round(100 * figures[name]["per_second"] /
                                                       direct, 1)
        result["throughput"] = figures
        result["goals"] = {"clusterip_of_direct_percent": 90, "ingress_of_direct_percent": 50}

        kubectl(server, "apply", "-f", "-",
                stdin="\n---\n".join(yaml.safe_dump(d) for d in docs[4:]))
        deadline = time.monotonic() + 60
        while True:  # running, not ready: their readiness flag does not exist yet
            flip = json.loads(kubectl(server, "get", "pods", "-l", "app=flip", "-o",
                                      "json"))["items"]
            if len(flip) == 2 and all(p["status"].get("phase") == "Running" for p in flip):
                break
            assert time.monotonic() < deadline, "the flip pods did not start"
            time.sleep(0.5)
        flip_pods = sorted(p["metadata"]["name"] for p in flip)
        flip_vip = json.loads(kubectl(server, "get", "service", "flip", "-o", "json"))[
            "spec"]["clusterIP"]
        for p in flip_pods:
            kubectl(server, "exec", p, "--", "touch", READY_FLAG)
        kubectl(server, "wait", "--for=condition=Ready", "pod", "-l", "app=flip",
                "--timeout=30s")
        trials = []
        for i in range(args.trials):
            trials.append(unready_trial(server, flip_vip, flip_pods[i % len(flip_pods)]))
            kubectl(server, "wait", "--for=condition=Ready", "pod", "-l", "app=flip",
                    "--timeout=30s")
            time.sleep(1)
        result["unready"] = {
            "trials": trials,
            "unready_seen_to_last_request_s_max": max(
                t["unready_seen_to_last_request_s"] for t in trials),
            "removal_to_last_request_s_median": statistics.median(
                t["removal_to_last_request_s"] for t in trials),
            "note": "removal: the readiness flag deleted (probe period 1 s); unready seen: "
                    "the pod's Ready=False read from the API (polled every 20 ms)"}
    finally:
        server.stop_and_clean(tmp)
    report(result, args.out)


if __name__ == "__main__":
    main()
