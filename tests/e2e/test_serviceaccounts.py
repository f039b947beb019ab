"""Service-account tokens: kubectl create token (TokenRequest), authentication with them,
and the token, CA and namespace mounted in every pod."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.test_pods import apply, pod, shell_pod, wait_for

pytestmark = pytest.mark.slow

MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def claims(token: str) -> Any:
    body = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_create_token_authenticates_as_the_service_account(cluster: Cluster,
                                                           namespace: str) -> None:
    token = cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip()
    c = claims(token)
    assert c["sub"] == f"system:serviceaccount:{namespace}:default"
    assert c["exp"] - c["iat"] == 3600
    with httpx.Client(base_url=cluster.url, verify=cluster.ssl_context(),
                      headers={"Authorization": f"Bearer {token}"}) as http:
        r = http.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        # authenticated, but a service account holds no role until one is bound (RBAC)
        assert r.status_code == 403, r.text
        assert r.json()["message"] == (
            f'serviceaccounts "default" is forbidden: User "system:serviceaccount:'
            f'{namespace}:default" cannot get resource "serviceaccounts" in API group "" '
            f'in the namespace "{namespace}"')
        cluster.kubectl("create", "rolebinding", "default-view", "--clusterrole=view",
                        f"--serviceaccount={namespace}:default", "-n", namespace)
        r = http.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        assert r.status_code == 200, r.text
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        r = http.get("/api/v1/namespaces", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401
    short = cluster.kubectl("create", "token", "default", "-n", namespace, "--duration=1m",
                            check=False)
    assert short.returncode != 0
    assert "spec.expirationSeconds: Invalid value: 60: may not specify a duration less " \
           "than 10 minutes" in short.stderr
    missing = cluster.kubectl("create", "token", "nobody", "-n", namespace, check=False)
    assert 'serviceaccounts "nobody" not found' in missing.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
                    reason="running pods needs root and the CNI plugins "
                           "(Debian containernetworking-plugins)")
def test_pods_get_their_service_account_token(cluster: Cluster, namespace: str) -> None:
    script = (f"cat {MOUNT}/token; echo; cat {MOUNT}/namespace; echo; "
              f"grep -c BEGIN {MOUNT}/ca.crt; sleep 3600")
    nomount = shell_pod(cluster, "nomount", f"ls {MOUNT} 2>/dev/null || echo none; "
                        "sleep 3600")
    nomount["spec"]["automountServiceAccountToken"] = False
    apply(cluster, namespace, shell_pod(cluster, "client", script), nomount)
    p = pod(cluster, namespace, "client")
    vol = next(v for v in p["spec"]["volumes"] if v["name"].startswith("kube-api-access-"))
    assert [next(iter(s)) for s in vol["projected"]["sources"]] == \
        ["serviceAccountToken", "configMap", "downwardAPI"]
    mount = p["spec"]["containers"][0]["volumeMounts"][0]
    assert mount == {"name": vol["name"], "readOnly": True, "mountPath": MOUNT}
    assert not any(v["name"].startswith("kube-api-access-")
                   for v in pod(cluster, namespace, "nomount")["spec"].get("volumes") or [])

    lines = wait_for("the pod's output", lambda: (out := cluster.kubectl(
        "logs", "client", "-n", namespace, check=False).stdout.split()) and len(out) >= 3
        and out)
    token, ns, certs = lines[:3]
    assert ns == namespace and certs == "1"
    c = claims(token)
    assert c["kubernetes.io"]["pod"] == {"name": "client", "uid": p["metadata"]["uid"]}
    assert c["exp"] - c["iat"] == 3607
    cluster.kubectl("create", "rolebinding", "default-view", "--clusterrole=view",
                    f"--serviceaccount={namespace}:default", "-n", namespace)
    with httpx.Client(base_url=cluster.url, verify=cluster.ssl_context()) as http:
        r = http.get(f"/api/v1/namespaces/{namespace}/pods/client",
                     headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["metadata"]["name"] == "client"
        # bound to the pod: the token dies with it (upstream's bound token check)
        cluster.kubectl("delete", "pod", "client", "-n", namespace, "--grace-period=0",
                        "--force")
        wait_for("the pod gone", lambda: cluster.kubectl(
            "get", "pod", "client", "-n", namespace, check=False).returncode != 0)
        r = http.get(f"/api/v1/namespaces/{namespace}/pods",
                     headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, r.text
    out = wait_for("nomount's output", lambda: cluster.kubectl(
        "logs", "nomount", "-n", namespace, check=False).stdout.strip())
    assert out == "none"
