"""RBAC against a running server, driven by the real kubectl: users from a token file,
roles bound per namespace, ``kubectl auth can-i`` and ``whoami``, escalation prevention."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.cluster import Cluster, free_port

pytestmark = pytest.mark.slow

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789"}
AUDIT_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  verbs: ["get", "list", "watch"]
- level: None
  nonResourceURLs: ["/api*", "/version", "/openapi*", "/healthz*", "/readyz*", "/livez*"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["configmaps", "secrets"]
  namespaces: ["team-research"]
- level: Request
  resources:
  - group: ""
    resources: ["configmaps", "secrets"]
- level: Metadata
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("rbac")
    tokens = base / "tokens.csv"
    tokens.write_text(f'{TOKENS["alice"]},alice,uid-alice,"ml-team,researchers"\n'
                      f'# a comment\n{TOKENS["bob"]},bob,uid-bob\n')
    policy = base / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home",
                extra_args=["--disable-agent", "--token-auth-file", str(tokens),
                            "--audit-log-path", str(base / "audit.log"),
                            "--audit-policy-file", str(policy)])
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    c.start()
    try:
        for ns in ("team-research", "team-serving"):
            c.kubectl("create", "namespace", ns)
            c.kubectl("create", "configmap", "settings", "-n", ns, "--from-literal=a=b")
        c.kubectl("create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice",
                  "-n", "team-research")
        yield c
    finally:
        assert c.stop() == 0, "kyb server did not exit cleanly"


def as_user(c: Cluster, who: str, *args: str, check: bool = False) -> Any:
    return c.kubectl(f"--token={TOKENS[who]}", *args, check=check)


def test_view_lists_but_does_not_delete_and_sees_nothing_elsewhere(cluster: Cluster) -> None:
    c = cluster
    got = as_user(c, "alice", "get", "configmaps", "-n", "team-research", "-o", "name",
                  check=True)
    assert "configmap/settings" in got.stdout.split()
    deleted = as_user(c, "alice", "delete", "configmap", "settings", "-n", "team-research")
    assert deleted.returncode != 0
    assert ('Error from server (Forbidden): configmaps "settings" is forbidden: User "alice" '
            'cannot delete resource "configmaps" in API group "" in the namespace '
            '"team-research"') in deleted.stderr
    assert c.kubectl_json("get", "configmap", "settings", "-n", "team-research")
    other = as_user(c, "alice", "get", "configmaps", "-n", "team-serving")
    assert other.returncode != 0
    assert ('configmaps is forbidden: User "alice" cannot list resource "configmaps" in API '
            'group "" in the namespace "team-serving"') in other.stderr
    everywhere = as_user(c, "alice", "get", "pods", "-A")
    assert 'cannot list resource "pods" in API group "" at the cluster scope' in \
        everywhere.stderr
    secrets = as_user(c, "alice", "get", "secrets", "-n", "team-research")
    assert secrets.returncode != 0, "view does not read secrets"


def test_kubectl_auth_can_i_agrees(cluster: Cluster) -> None:
    c = cluster
    for args, want in ((("list", "configmaps", "-n", "team-research"), "yes"),
                       (("delete", "configmaps", "-n", "team-research"), "no"),
                       (("list", "configmaps", "-n", "team-serving"), "no"),
                       (("get", "deployments.apps", "-n", "team-research"), "yes"),
                       (("create", "pods", "-n", "team-research"), "no")):
        out = as_user(c, "alice", "auth", "can-i", *args)
        assert out.stdout.strip() == want, (args, out.stdout, out.stderr)
        assert out.returncode == (0 if want == "yes" else 1)
    assert c.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"  # the admin
    listed = as_user(c, "alice", "auth", "can-i", "--list", "-n", "team-research",
                     check=True).stdout
    assert any(line.startswith("configmaps ") and "[get list watch]" in line
               for line in listed.splitlines()), listed
    assert "selfsubjectaccessreviews.authorization.k8s.io" in listed
    who = as_user(c, "alice", "auth", "whoami", "-o", "json", check=True)
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info == {"username": "alice", "uid": "uid-alice",
                    "groups": ["ml-team", "researchers", "system:authenticated"]}


def test_bindings_take_effect_and_are_revoked(cluster: Cluster) -> None:
    c = cluster
    assert as_user(c, "bob", "auth", "can-i", "create", "deployments.apps", "-n",
                   "team-serving").stdout.strip() == "no"
    c.kubectl("create", "rolebinding", "bob-edit", "--clusterrole=edit", "--user=bob",
              "-n", "team-serving")
    made = as_user(c, "bob", "create", "deployment", "web", "--image=python:3.11", "-n",
                   "team-serving")
    assert made.returncode == 0, made.stderr
    scaled = as_user(c, "bob", "scale", "deployment", "web", "--replicas=2", "-n",
                     "team-serving")
    assert scaled.returncode == 0, scaled.stderr
    c.kubectl("delete", "rolebinding", "bob-edit", "-n", "team-serving")
    again = as_user(c, "bob", "scale", "deployment", "web", "--replicas=3", "-n",
                    "team-serving")
    # kubectl scale reads the Deployment first: refused from the first request on
    assert again.returncode != 0
    assert ('deployments.apps "web" is forbidden: User "bob" cannot get resource '
            '"deployments" in API group "apps" in the namespace "team-serving"') in again.stderr
    assert c.kubectl_json("get", "deployment", "web", "-n", "team-serving")["spec"][
        "replicas"] == 2


def test_no_escalation_through_roles_or_bindings(cluster: Cluster) -> None:
    c = cluster
    c.kubectl("create", "rolebinding", "alice-admin", "--clusterrole=admin", "--user=alice",
              "-n", "team-serving")
    # admin may manage roles and bindings in the namespace, but only with what it holds
    ok = as_user(c, "alice", "create", "role", "reader", "--verb=get,list",
                 "--resource=pods", "-n", "team-serving")
    assert ok.returncode == 0, ok.stderr
    bad = as_user(c, "alice", "create", "role", "nodes", "--verb=get", "--resource=nodes",
                  "-n", "team-serving")
    assert bad.returncode != 0
    assert ('roles.rbac.authorization.k8s.io "nodes" is forbidden: user "alice" (groups=['
            '"ml-team" "researchers" "system:authenticated"]) is attempting to grant RBAC '
            'permissions not currently held:') in bad.stderr
    assert 'Resources:["nodes"]' in bad.stderr
    bind = as_user(c, "alice", "create", "rolebinding", "bob-root",
                   "--clusterrole=cluster-admin", "--user=bob", "-n", "team-serving")
    assert bind.returncode != 0 and "attempting to grant RBAC permissions" in bind.stderr
    fine = as_user(c, "alice", "create", "rolebinding", "bob-view", "--clusterrole=view",
                   "--user=bob", "-n", "team-serving")
    assert fine.returncode == 0, fine.stderr
    assert as_user(c, "bob", "auth", "can-i", "list", "pods", "-n",
                   "team-serving").stdout.strip() == "yes"


def test_unknown_tokens_and_paths(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, verify=cluster.ssl_context(), timeout=10) as h:
        assert h.get("/api/v1/namespaces").status_code == 401
        assert h.get("/api/v1/namespaces",
                     headers={"Authorization": "Bearer nope"}).status_code == 401
        alice = {"Authorization": f"Bearer {TOKENS['alice']}"}
        assert h.get("/version", headers=alice).status_code == 200
        assert h.get("/apis", headers=alice).status_code == 200, "discovery for everyone"
        r = h.get("/metrics", headers=alice)
        assert r.status_code == 403
        assert r.json()["message"] == 'forbidden: User "alice" cannot get path "/metrics"'
        r = h.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", headers=alice,
                   json={"apiVersion": "authorization.k8s.io/v1",
                         "kind": "SelfSubjectAccessReview",
                         "spec": {"resourceAttributes": {"namespace": "team-research",
                                                         "verb": "watch",
                                                         "resource": "pods"}}})
        assert r.status_code == 201 and r.json()["status"]["allowed"] is True
        r = h.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", headers=alice,
                   json={"apiVersion": "authorization.k8s.io/v1",
                         "kind": "SelfSubjectAccessReview", "spec": {}})
        assert r.status_code == 422


def test_a_bad_token_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.csv"
    bad.write_text("only-a-token\n")
    out = subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "server",
                          "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
                          "--token-auth-file", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "Invalid value for --token-auth-file" in out.stderr
    assert f"{bad}:1: want token,user" in out.stderr
    assert not (tmp_path / "data").exists(), "refused before anything started"


def audit_events(c: Cluster) -> list[Any]:
    path = c.data_dir.parent / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_the_audit_log_records_who_deleted_what(cluster: Cluster) -> None:
    c = cluster
    c.kubectl("create", "configmap", "doomed", "-n", "team-serving", "--from-literal=k=v")
    c.kubectl("delete", "configmap", "doomed", "-n", "team-serving")
    as_user(c, "alice", "delete", "configmap", "settings", "-n", "team-research")
    c.kubectl("create", "secret", "generic", "api-key", "-n", "team-serving",
              "--from-literal=key=s3cr3t-value")
    events = audit_events(c)
    deletes = [e for e in events if e["verb"] == "delete"
               and e.get("objectRef", {}).get("resource") == "configmaps"]
    mine = next(e for e in deletes if e["objectRef"].get("name") == "doomed")
    assert mine["user"]["username"] == "kyb-admin"
    assert "system:masters" in mine["user"]["groups"]
    assert mine["objectRef"] == {"resource": "configmaps", "apiVersion": "v1",
                                 "namespace": "team-serving", "name": "doomed"}
    assert mine["responseStatus"]["code"] == 200
    assert mine["apiVersion"] == "audit.k8s.io/v1" and mine["stage"] == "ResponseComplete"
    assert "kubectl" in mine["userAgent"]
    refused = next(e for e in deletes if e["user"]["username"] == "alice")
    assert refused["responseStatus"]["code"] == 403
    assert refused["objectRef"]["name"] == "settings"
    created = next(e for e in events if e["verb"] == "create"
                   and e.get("objectRef", {}).get("name") == "doomed")
    assert created["level"] == "Request" and created["requestObject"]["data"] == {"k": "v"}
    secret = next(e for e in events if e["verb"] == "create"
                  and e.get("objectRef", {}).get("resource") == "secrets")
    assert secret["level"] == "Metadata" and "requestObject" not in secret
    # RequestResponse: the answer too (team-research's configmaps), and why one failed
    c.kubectl("create", "configmap", "kept", "-n", "team-research", "--from-literal=a=b")
    events = audit_events(c)
    kept = next(e for e in events if e["verb"] == "create"
                and e.get("objectRef", {}).get("name") == "kept")
    assert kept["level"] == "RequestResponse"
    assert kept["responseObject"]["metadata"]["uid"] and \
        kept["responseObject"]["data"] == {"a": "b"}
    refused = next(e for e in events if e["verb"] == "delete"
                   and e["user"]["username"] == "alice")
    assert refused["responseStatus"]["reason"] == "Forbidden"
    assert "cannot delete resource" in refused["responseStatus"]["message"]
    assert refused["level"] == "RequestResponse" and \
        refused["responseObject"]["kind"] == "Status"  # the answer, as upstream logs it
    raw = (c.data_dir.parent / "audit.log").read_text()
    assert "s3cr3t" not in raw and "czNjcjN0" not in raw, "a secret's value was logged"
    assert not any(e["verb"] in ("get", "list", "watch") for e in events), "level None"


def test_secrets_are_encrypted_in_the_datastore(cluster: Cluster) -> None:
    c = cluster
    c.kubectl("create", "secret", "generic", "db-password", "-n", "team-research",
              "--from-literal=password=correct-horse-battery")
    c.kubectl("create", "configmap", "not-secret", "-n", "team-research",
              "--from-literal=motto=plain-visible-words")
    got = c.kubectl("get", "secret", "db-password", "-n", "team-research", "-o",
                    "jsonpath={.data.password}").stdout
    assert base64.b64decode(got) == b"correct-horse-battery"
    stored = b"".join(p.read_bytes() for p in c.data_dir.glob("state.db*"))
    assert b"plain-visible-words" in stored, "the check reads the right files"
    for clear in (b"correct-horse-battery", base64.b64encode(b"correct-horse-battery")):
        assert clear not in stored
    assert b"k8s:enc:aesgcm:v1:key1:" in stored


def test_client_certificates_from_kyb_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    """``kyb kubeconfig --user carol --group ml-team``: a certificate signed by the cluster
    CA authenticates carol in ml-team; RBAC decides the rest; another CA is refused."""
    c = cluster
    conf = tmp_path / "carol.yaml"
    out = subprocess.run([sys.executable, "-m", "kybernetes.cli.main", "kubeconfig",
                          "--data-dir", str(c.data_dir), "--user", "carol", "--group",
                          "ml-team", "--group", "annotators", "-o", str(conf)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    c.kubectl("create", "rolebinding", "ml-team-view", "--clusterrole=view",
              "--group=ml-team", "-n", "team-research")

    def as_carol(*args: str) -> Any:
        return subprocess.run(["/usr/bin/kubectl", "--kubeconfig", str(conf), *args],
                              capture_output=True, text=True, timeout=60)

    who = json.loads(as_carol("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert who == {"username": "carol",
                   "groups": ["ml-team", "annotators", "system:authenticated"]}
    got = as_carol("get", "configmaps", "-n", "team-research", "-o", "name")
    assert got.returncode == 0 and "configmap/settings" in got.stdout.split(), got.stderr
    denied = as_carol("delete", "configmap", "settings", "-n", "team-research")
    assert 'User "carol" cannot delete resource "configmaps"' in denied.stderr

    from kybernetes.apiserver import certs

    other = certs.ensure_pki(tmp_path / "other")  # another cluster's CA
    cert, key = certs.issue_client_cert(other.dir, "mallory", ["system:masters"])
    forged = tmp_path / "forged.yaml"
    forged.write_text(certs.client_cert_kubeconfig(c.url, c.data_dir.joinpath(
        "pki", "ca.crt").read_bytes(), cert, key, user="mallory"))
    refused = subprocess.run(["/usr/bin/kubectl", "--kubeconfig", str(forged), "get", "nodes"],
                             capture_output=True, text=True, timeout=60)
    # refused at the TLS handshake (upstream answers 401 after it): no request is served
    assert refused.returncode != 0 and not refused.stdout
    assert "EOF" in refused.stderr or "connection reset" in refused.stderr, refused.stderr
