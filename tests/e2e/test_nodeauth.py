"""A second node joins a running ``kyb server`` with its join token (TLS bootstrapping):
it gets a certificate of its own, runs pods, survives a restart after the token is
revoked, and its credential cannot touch another node's pods (the real kubectl)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster import (
    REPO,
    Cluster,
    agent_cluster,
    free_port,
    new_pod_cidr,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.slow

JOINED = "kyb-joined-node"


@dataclass
class Agent:
    """A ``kyb agent`` process joined to a test's server."""

    cluster: Cluster
    data_dir: Path
    log_path: Path
    token: str
    port: int
    pod_cidr: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kybernetes.cli.main", "agent", "--server", self.cluster.url,
             "--token", self.token, "--ca-file", self.cluster.ca, "--data-dir",
             str(self.data_dir), "--node-name", JOINED, "--address", "127.0.0.1",
             "--port", str(self.port), "--pod-cidr", self.pod_cidr,
             "--pod-network-pool", "2"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()

    def stop(self) -> int:
        code = stop_process(self.proc)
        self.proc = None
        return code

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "node.kubeconfig"

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl with the node's own credential."""
        return self.cluster.kubectl(*args, check=check, cache="node-cache",
                                    env={"KUBECONFIG": str(self.kubeconfig)})


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    base = tmp_path_factory.mktemp("nodeauth")
    server = agent_cluster(base)
    cluster = next(server)
    try:
        token = (cluster.data_dir / "join-token").read_text().strip()
        agent = Agent(cluster, base / "agent", base / "agent.log", token, free_port(),
                      new_pod_cidr())
        agent.start()
        try:
            yield agent
        finally:
            code = agent.stop()
            subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "killall",
                            "--data-dir", str(agent.data_dir)], capture_output=True,
                           check=False, cwd=REPO)
            assert code == 0, agent.log_path.read_text()[-3000:]
    finally:
        server.close()


def node_ready(cluster: Cluster, name: str) -> bool:
    p = cluster.kubectl("get", "node", name, "-o", "json", check=False)
    if p.returncode != 0:
        return False
    conds = {c["type"]: c["status"] for c in json.loads(p.stdout)["status"]["conditions"]}
    return conds.get("Ready") == "True"


def shell_pod(name: str, node: str, script: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                 "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "busybox",
                                 "command": ["sh", "-c", script]}]}})


def phase(cluster: Cluster, name: str) -> str:
    p = cluster.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}", check=False)
    return p.stdout


def test_join_with_token_gets_a_certificate_and_runs_pods(joined: Agent) -> None:
    """The agent's CSR is approved and signed; its node is Ready and runs a pod whose logs
    the API server reads from it (with its kubelet client certificate)."""
    c = joined.cluster
    wait_for("the joined node Ready", lambda: node_ready(c, JOINED), timeout=60)
    cert = joined.data_dir / "pki" / "node-client.crt"
    assert cert.exists() and (joined.data_dir / "pki" / "node-client.key").stat().st_mode \
        & 0o777 == 0o600
    assert (c.data_dir / "join-token").stat().st_mode & 0o777 == 0o600
    csrs = c.kubectl("get", "csr").stdout.splitlines()
    assert csrs[0].split() == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION",
                               "CONDITION"]
    row = csrs[1].split()
    assert row[2:] == ["kubernetes.io/kube-apiserver-client-kubelet",
                       "system:bootstrap:" + joined.token[:6], "<none>", "Approved,Issued"]
    who = joined.kubectl("auth", "whoami", "-o", "json")
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:node:{JOINED}" and "system:nodes" in info["groups"]
    c.kubectl("apply", "-f", "-", input=shell_pod("mine", JOINED, "echo hello; sleep 3600"))
    wait_for("mine Running", lambda: phase(c, "mine") == "Running", timeout=60)
    assert wait_for("logs", lambda: c.kubectl("logs", "mine", check=False).stdout) == "hello\n"


def test_node_credential_cannot_touch_another_nodes_pods(joined: Agent) -> None:
    c = joined.cluster
    wait_for("the joined node Ready", lambda: node_ready(c, JOINED), timeout=60)
    c.kubectl("apply", "-f", "-", input=shell_pod("mine", JOINED, "echo hello; sleep 3600"))
    c.kubectl("apply", "-f", "-", input=shell_pod("theirs", c.node_name, "sleep 3600"))
    wait_for("pods Running", lambda: phase(c, "mine") == phase(c, "theirs") == "Running",
             timeout=60)
    # its own pods' status: yes
    assert joined.kubectl("get", "pod", "mine", "-o",
                          "jsonpath={.status.phase}").stdout == "Running"
    # another node's pod: delete Forbidden
    gone = joined.kubectl("delete", "pod", "theirs", "--wait=false", check=False)
    assert gone.returncode != 0
    assert 'Error from server (Forbidden): pods "theirs" is forbidden: User ' \
           f'"system:node:{JOINED}" cannot delete resource "pods" in API group "" in the ' \
           f'namespace "default": node "{JOINED}" can only delete pods with spec.nodeName ' \
           "set to itself" in gone.stderr
    assert phase(c, "theirs") == "Running"
    # another Node: patch Forbidden
    patched = joined.kubectl("patch", "node", c.node_name, "-p",
                             '{"metadata":{"labels":{"stolen":"yes"}}}', check=False)
    assert patched.returncode != 0
    assert f'nodes "{c.node_name}" is forbidden' in patched.stderr
    assert f'node "{JOINED}" is not allowed to modify node "{c.node_name}"' in patched.stderr
    # nor a restricted label on its own Node
    labelled = joined.kubectl("label", "node", JOINED,
                              "node-restriction.kubernetes.io/pool=gpu", check=False)
    assert "is not allowed to modify labels: node-restriction.kubernetes.io/pool" in \
        labelled.stderr
    # kubectl auth can-i agrees (and says why not)
    for args, want in (
            (("delete", "pod/theirs"), f'no - node "{JOINED}" can only delete pods with '
                                       "spec.nodeName set to itself"),
            (("delete", "pod/mine"), "yes"),
            (("patch", "node/" + c.node_name), f'no - node "{JOINED}" is not allowed to '
                                               f'modify node "{c.node_name}"'),
            (("patch", "node/" + JOINED), "yes"),
            (("get", "secrets"), "no - can only get individual resources of this type"),
            (("list", "pods"), "yes")):
        got = joined.kubectl("auth", "can-i", *args, check=False).stdout.strip()
        assert got == want, (args, got)
    # its own pod: deletion allowed
    joined.kubectl("delete", "pod", "mine", "--wait=false")
    c.kubectl("delete", "pod", "theirs", "--wait=false")


def test_restart_keeps_the_certificate_after_the_token_is_revoked(joined: Agent) -> None:
    c = joined.cluster
    wait_for("the joined node Ready", lambda: node_ready(c, JOINED), timeout=60)
    cert = (joined.data_dir / "pki" / "node-client.crt").read_bytes()
    c.kubectl("-n", "kube-system", "delete", "secret", "bootstrap-token-" + joined.token[:6])
    assert joined.stop() == 0
    lease = c.kubectl("-n", "kube-node-lease", "get", "lease", JOINED, "-o",
                      "jsonpath={.spec.renewTime}").stdout
    joined.start()
    wait_for("the lease renewed by the restarted agent",
             lambda: c.kubectl("-n", "kube-node-lease", "get", "lease", JOINED, "-o",
                               "jsonpath={.spec.renewTime}").stdout != lease, timeout=40)
    assert (joined.data_dir / "pki" / "node-client.crt").read_bytes() == cert
    assert node_ready(c, JOINED)
    assert len(c.kubectl("get", "csr", "-o", "name").stdout.split()) == 1, "no new request"
    # the revoked token itself no longer authenticates
    revoked = c.kubectl("--token", joined.token, "--kubeconfig", str(c.kubeconfig), "get",
                        "csr", check=False)
    assert "Unauthorized" in revoked.stderr or "must be logged in" in revoked.stderr


def test_kubectl_certificate_approve(joined: Agent) -> None:
    """A user's client certificate request waits; kubectl certificate approve gets it
    signed, and the certificate authenticates; deny sticks."""
    import base64

    from kybernetes.api.certificates import make_request

    c = joined.cluster
    for name in ("alice", "eve"):
        request, key = make_request(name, ["ml-team"])
        c.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {"request": base64.b64encode(request).decode(),
                     "signerName": "kubernetes.io/kube-apiserver-client",
                     "usages": ["digital signature", "client auth"]}}))
        if name == "alice":
            alice_key = key
    assert c.kubectl("get", "csr", "alice").stdout.split()[-1] == "Pending"
    c.kubectl("certificate", "approve", "alice")
    c.kubectl("certificate", "deny", "eve")
    cert = wait_for("alice's certificate", lambda: c.kubectl(
        "get", "csr", "alice", "-o", "jsonpath={.status.certificate}").stdout)
    assert c.kubectl("get", "csr", "alice").stdout.split()[-1] == "Approved,Issued"
    assert c.kubectl("get", "csr", "eve").stdout.split()[-1] == "Denied"
    kubeconfig = joined.data_dir.parent / "alice.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "a", "cluster": {
            "server": c.url, "certificate-authority": c.ca}}],
        "contexts": [{"name": "a", "context": {"cluster": "a", "user": "alice"}}],
        "users": [{"name": "alice", "user": {
            "client-certificate-data": cert,
            "client-key-data": base64.b64encode(alice_key).decode()}}]}))
    who = c.kubectl("auth", "whoami", "-o", "json", env={"KUBECONFIG": str(kubeconfig)},
                    cache="alice-cache")
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == "alice" and "ml-team" in info["groups"]
