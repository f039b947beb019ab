"""Start real ``kyb server`` processes for end-to-end tests, and drive them with kubectl."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from kybernetes.kubelet.network import bridge_name

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO.parent / "shared" / "scenarios"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_HANDED_OUT: set[int] = set()


def new_pod_cidr(low: int = 100, high: int = 250) -> str:
    """A /24 of 10.42.0.0/16 (third octet in ``low..high``) for a test node of its own:
    never one handed out before in this test run (the session's shared server lives
    throughout it, beside each module's own) nor one whose bridge is on the machine. Two
    nodes on one range would share a bridge and a gateway, and a pod would ask the other
    server's cluster DNS (seen in CI: a Service name unknown, NXDOMAIN)."""
    def free() -> list[int]:
        return [i for i in range(low, high + 1) if i not in _HANDED_OUT
                and not Path("/sys/class/net", bridge_name(f"10.42.{i}.0/24")).exists()]
    choices = free()
    if not choices:  # all handed out once: only the bridges still there count now
        _HANDED_OUT.difference_update(range(low, high + 1))
        choices = free()
    third = random.choice(choices)
    _HANDED_OUT.add(third)
    return f"10.42.{third}.0/24"


@dataclass
class Cluster:
    """One running ``kyb server`` (a real process) and what a test needs to reach it."""

    data_dir: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cache_dir: Path = field(default_factory=Path)
    startup_seconds: float = 0.0
    node_name: str = "kyb-test-node"
    agent_port: int = field(default_factory=free_port)
    pod_cidr: str = field(default_factory=new_pod_cidr)
    """Each test server's own range (and so its own bridge): several may run side by side."""
    extra_args: list[str] = field(default_factory=list)
    ingress_port: int = field(default_factory=free_port)
    ingress_tls_port: int = field(default_factory=free_port)
    """The ingress controller's ports (free ones: the defaults would clash between the
    servers the suite runs side by side)."""

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "pki" / "admin.token").read_text().strip()

    @property
    def ca(self) -> str:
        return str(self.data_dir / "pki" / "ca.crt")

    def start(self, *, timeout: float = 30.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kybernetes.cli.main", "server", "--data-dir",
             str(self.data_dir), "--port", str(self.port), "--bind-address", "127.0.0.1",
             "--advertise-address", "127.0.0.1", "--node-name", self.node_name,
             "--agent-port", str(self.agent_port), "--pod-cidr", self.pod_cidr,
             *self.pool_args(), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kyb server exited with {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.url}/readyz", verify=False, timeout=1)
                if r.status_code == 200 and self.kubeconfig.exists():
                    self.startup_seconds = time.monotonic() - t0
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"kyb server not ready in {timeout}s:\n"
                           f"{self.log_path.read_text()[-3000:]}")

    def pool_args(self) -> list[str]:
        """A small pool of pre-wired pod networks unless the test asks otherwise (the
        default, the node's 110 pods, costs ~4 s of CPU per server start, which the
        suite's many servers need not spend), and the ingress controller's ports."""
        if "--disable-agent" in self.extra_args:
            return []
        ingress = ["--ingress-http-port", str(self.ingress_port), "--ingress-https-port",
                   str(self.ingress_tls_port)]
        if "--pod-network-pool" in self.extra_args:
            return ingress
        return ["--pod-network-pool", "4", *ingress]

    def killall(self) -> None:
        """Stop the pods the server's node agent left running (tests clean up after
        themselves: a stopped agent leaves its pods running by design)."""
        subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "killall", "--data-dir",
                        str(self.data_dir)], capture_output=True, check=False, cwd=REPO)

    def stop(self, *, kill: bool = False) -> int:
        code = stop_process(self.proc, kill=kill)
        self.proc = None
        return code

    # -- clients ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["HOME"] = str(self.cache_dir)
        return env

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                env: dict[str, str] | None = None, timeout: float = 60,
                cache: str = "kube-cache") -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this server (``cache``: its discovery cache dir)."""
        proc = subprocess.run(
            [KUBECTL, f"--cache-dir={self.cache_dir / cache}", *args],
            input=input, capture_output=True, text=True, env={**self.env(), **(env or {})},
            timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl_json(self, *args: str) -> Any:
        return orjson.loads(self.kubectl(*args, "-o", "json").stdout)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def http(self, *, token: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), headers=headers,
                            timeout=30)


def stop_process(proc: subprocess.Popen[bytes] | None, *, kill: bool = False,
                 timeout: float = 15) -> int:
    """SIGTERM (or SIGKILL) ``proc``, SIGKILL it if it has not exited in ``timeout``
    seconds; its exit code (0 if there was none)."""
    if proc is None:
        return 0
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 30.0, *,
             every: float = 0.2) -> Any:
    """Poll ``fn`` every ``every`` seconds until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def load_scenario(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SCENARIOS / name).read_text()) if d]


def agent_cluster(base: Path, *extra_args: str) -> Iterator[Cluster]:
    """A server of a test's own, with this machine's node agent and ``extra_args``
    (``yield from agent_cluster(tmp_path, "--fake-gpus", "4")``); its pods are stopped
    after it."""
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home", extra_args=list(extra_args))
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    try:
        yield c
    finally:
        c.stop()
        c.killall()


def fake_node_cluster(base: Path, nodes: int) -> Iterator[Cluster]:
    """A server without a real node and with ``nodes`` fake ones, for a module fixture:
    ``yield from fake_node_cluster(tmp_path_factory.mktemp("x"), 2)``."""
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home",
                extra_args=["--disable-agent", "--fake-nodes", str(nodes)])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    try:
        deadline = time.monotonic() + 30
        while len(c.kubectl_json("get", "nodes")["items"]) < nodes:
            assert time.monotonic() < deadline, f"{nodes} fake nodes not registered in 30 s"
            time.sleep(0.2)
        yield c
    finally:
        assert c.stop() == 0, "kyb server did not exit cleanly"
