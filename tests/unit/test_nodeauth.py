"""Node credentials: bootstrap tokens, CertificateSigningRequests (approval, signing), the
Node authorizer and NodeRestriction, against the real API server in-process."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from kybernetes.api import certificates, nodeauth
from kybernetes.api.builtin import build_registry
from kybernetes.apiserver import certs
from kybernetes.apiserver.app import APIServer, User
from kybernetes.apiserver.bootstrap import Bootstrap
from kybernetes.apiserver.context import Context
from kybernetes.apiserver.csrsigning import CSRSigner
from kybernetes.client import Client, Config
from kybernetes.kubelet import credential
from kybernetes.store.sqlite import SQLiteBackend

Obj = dict[str, Any]
CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def node_user(name: str) -> User:
    return User(f"system:node:{name}", ("system:nodes", "system:authenticated"))


class Cluster:
    def __init__(self, api: APIServer, pki: certs.PKI, join_token: str) -> None:
        self.api = api
        self.pki = pki
        self.join_token = join_token

    def http(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.api),  # type: ignore[arg-type]
                                 base_url="https://kyb",
                                 headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    pki = certs.ensure_pki(tmp_path)
    backend = SQLiteBackend.open(tmp_path / "s.db")
    api = APIServer(Context(backend, build_registry()), tokens={
        "t": User("admin", ("system:masters",)), "n1": node_user("n1"),
        "n2": node_user("n2"), "alice": User("alice", ("system:authenticated",))})
    boot = Bootstrap(api, ca_pem=pki.ca_pem, advertise_address="127.0.0.1", port=6443)
    await boot.run()
    token = await boot.ensure_join_token(tmp_path / "join-token")
    CSRSigner(api, pki_dir=pki.dir)
    api.ready = True
    try:
        yield Cluster(api, pki, token)
    finally:
        await backend.close()


def pod(name: str, node: str, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                     **spec}}


async def ok(resp: httpx.Response) -> Obj:
    assert resp.status_code < 300, resp.text
    return resp.json()  # type: ignore[no-any-return]


def forbidden(resp: httpx.Response) -> str:
    assert resp.status_code == 403, resp.text
    return str(resp.json()["message"])


# -- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "groups", "want"), [
    pytest.param("system:node:gpu-1", ("system:nodes",), "gpu-1", id="node"),
    pytest.param("system:node:gpu-1", (), None, id="not-in-group"),
    pytest.param("alice", ("system:nodes",), None, id="not-a-node-name"),
    pytest.param("system:node:", ("system:nodes",), "", id="nameless"),
])
def test_node_identity(user: str, groups: tuple[str, ...], want: str | None) -> None:
    """A node is system:node:<name> in system:nodes, as upstream's NodeIdentity."""
    assert nodeauth.node_name(user, groups) == want


def test_forbidden_labels() -> None:
    """Restricted and unknown kubernetes.io labels are refused; kubelet's own are not."""
    keys = {"node-restriction.kubernetes.io/pool", "example.node-restriction.kubernetes.io/a",
            "kubernetes.io/hostname", "node.kubernetes.io/instance-type", "team",
            "node-role.kubernetes.io/control-plane", "nvidia.com/gpu.product"}
    assert nodeauth.forbidden_labels(keys) == [
        "example.node-restriction.kubernetes.io/a", "node-restriction.kubernetes.io/pool",
        "node-role.kubernetes.io/control-plane"]


def test_bootstrap_tokens() -> None:
    """Tokens are [a-z0-9]{6}.[a-z0-9]{16}; their Secret names the groups."""
    token = certificates.new_bootstrap_token()
    assert certificates.parse_bootstrap_token(token) is not None
    for bad in ("abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef"):
        assert certificates.parse_bootstrap_token(bad) is None
    secret = certificates.bootstrap_token_secret(
        token, description="d", extra_groups=[certificates.DEFAULT_NODE_TOKEN_GROUP])
    assert secret["metadata"]["name"] == "bootstrap-token-" + token[:6]
    assert certificates.bootstrap_token_groups(secret) == [
        "system:bootstrappers", certificates.DEFAULT_NODE_TOKEN_GROUP]
    secret["data"]["auth-extra-groups"] = base64.b64encode(b"system:masters").decode()
    assert certificates.bootstrap_token_groups(secret) is None, "groups outside the prefix"


def test_node_client_request_checks() -> None:
    """A kubelet client request: O system:nodes, CN system:node:<name>, client usages."""
    good, _ = certificates.make_request("system:node:n1", ["system:nodes"])
    csr = certificates.node_csr("n1", good)
    assert certificates.node_client_problems(csr, certificates.parse_request(csr)) == []
    bad, _ = certificates.make_request("alice", ["system:masters"])
    csr = certificates.node_csr("n1", bad)
    assert certificates.node_client_problems(csr, certificates.parse_request(csr)) == [
        "subject organization is not system:nodes",
        'subject common name does not begin with "system:node:"']


# -- TLS bootstrapping ------------------------------------------------------------------------


async def test_join_token_authenticates_as_a_bootstrapper(cluster: Cluster) -> None:
    """The join token is user system:bootstrap:<id>; it may ask for certificates, not more;
    deleting its Secret revokes it."""
    async with cluster.http(cluster.join_token) as c:
        who = await ok(await c.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                    json={"apiVersion": "authentication.k8s.io/v1",
                                          "kind": "SelfSubjectReview"}))
        info = who["status"]["userInfo"]
        assert info["username"] == "system:bootstrap:" + cluster.join_token[:6]
        assert certificates.DEFAULT_NODE_TOKEN_GROUP in info["groups"]
        assert (await c.get(CSRS)).status_code == 200
        assert "cannot list resource \"pods\"" in forbidden(await c.get("/api/v1/pods"))
    async with cluster.http(cluster.join_token[:7] + "0" * 16) as c:
        assert (await c.get(CSRS)).status_code == 401, "wrong secret"
    async with cluster.http("t") as admin:
        await ok(await admin.delete("/api/v1/namespaces/kube-system/secrets/bootstrap-token-" +
                                    cluster.join_token[:6]))
    async with cluster.http(cluster.join_token) as c:
        assert (await c.get(CSRS)).status_code == 401


async def test_expired_bootstrap_token_is_refused(cluster: Cluster) -> None:
    token = "abcdef.0123456789abcdef"
    secret = certificates.bootstrap_token_secret(
        token, description="old", extra_groups=[], expiration="2000-01-01T00:00:00Z")
    async with cluster.http("t") as admin:
        await ok(await admin.post("/api/v1/namespaces/kube-system/secrets", json=secret))
    async with cluster.http(token) as c:
        assert (await c.get(CSRS)).status_code == 401


async def test_bootstrapper_node_csr_is_approved_and_signed(cluster: Cluster) -> None:
    """A join token's request for system:node:<name> is approved at once and signed by the
    cluster CA; the agent's credential code gets the certificate."""
    client = Client(Config(server="https://kyb", token=cluster.join_token),
                    transport=httpx.ASGITransport(app=cluster.api))  # type: ignore[arg-type]
    async with client:
        cert_pem, key_pem = await credential.request_certificate(client, "n1", poll=0.01)
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(cluster.pki.ca_pem)
    assert cert.issuer == ca.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "system:node:n1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "system:nodes"
    async with cluster.http("t") as admin:
        [csr] = (await ok(await admin.get(CSRS)))["items"]
    assert csr["spec"]["username"] == "system:bootstrap:" + cluster.join_token[:6]
    [approved] = csr["status"]["conditions"]
    assert (approved["type"], approved["reason"]) == ("Approved", "AutoApproved")
    # kept across restarts (mode 0600), checked against the node name
    pki = Path(cluster.pki.dir.parent / "agent" / "pki")
    credential._write_private(pki / credential.CERT_FILE, cert_pem)
    credential._write_private(pki / credential.KEY_FILE, key_pem)
    assert (pki / credential.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert credential.stored_credential(pki, "n1") == (cert_pem, key_pem)
    assert credential.stored_credential(pki, "n2") is None


async def test_other_csrs_wait_for_approval(cluster: Cluster) -> None:
    """A client certificate for a user is not auto-approved; kubectl certificate approve
    (PUT /approval) gets it signed. system:masters may not be asked for."""
    req, _ = certificates.make_request("alice", ["ml-team"])
    csr = certificates.node_csr("x", req, generate_name="alice-")
    csr["spec"]["signerName"] = certificates.CLIENT_SIGNER
    async with cluster.http("t") as admin:
        made = await ok(await admin.post(CSRS, json=csr))
        name = made["metadata"]["name"]
        got = await ok(await admin.get(f"{CSRS}/{name}"))
        assert "status" not in got or not got["status"].get("conditions")
        got.setdefault("status", {})["conditions"] = [
            {"type": "Approved", "status": "True", "reason": "KubectlApprove"}]
        await ok(await admin.put(f"{CSRS}/{name}/approval", json=got))
        signed = await ok(await admin.get(f"{CSRS}/{name}"))
        assert signed["status"]["certificate"]
        # the approval subresource cannot write the certificate, nor status the approval
        signed["status"]["conditions"] = []
        kept = await ok(await admin.put(f"{CSRS}/{name}/status", json=signed))
        assert [c["type"] for c in kept["status"]["conditions"]] == ["Approved"]
        table = await admin.get(CSRS, headers={
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        assert table.json()["rows"][0]["cells"][-1] == "Approved,Issued"
        masters, _ = certificates.make_request("mallory", ["system:masters"])
        csr = certificates.node_csr("x", masters, generate_name="m-")
        csr["spec"]["signerName"] = certificates.CLIENT_SIGNER
        assert "with system:masters group is not allowed" in forbidden(
            await admin.post(CSRS, json=csr))


async def test_bootstrapper_cannot_get_a_certificate_for_another_identity(
        cluster: Cluster) -> None:
    """A join token asking for a kubelet certificate with other groups gets it failed."""
    req, _ = certificates.make_request("system:node:n1", ["system:masters"])
    async with cluster.http(cluster.join_token) as c:
        made = await ok(await c.post(CSRS, json=certificates.node_csr("n1", req)))
    async with cluster.http("t") as admin:
        got = await ok(await admin.get(f"{CSRS}/{made['metadata']['name']}"))
    assert not (got.get("status") or {}).get("certificate")
    assert not certificates.is_approved(got)


# -- the Node authorizer and NodeRestriction ---------------------------------------------------


async def setup_pods(cluster: Cluster) -> None:
    async with cluster.http("t") as admin:
        for name in ("settings", "other-settings"):
            await ok(await admin.post("/api/v1/namespaces/default/configmaps", json={
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}))
        vol = [{"name": "v", "configMap": {"name": "settings"}}]
        await ok(await admin.post("/api/v1/namespaces/default/pods",
                                  json=pod("p1", "n1", volumes=vol)))
        vol = [{"name": "v", "configMap": {"name": "other-settings"}}]
        await ok(await admin.post("/api/v1/namespaces/default/pods",
                                  json=pod("p2", "n2", volumes=vol)))


async def test_node_may_touch_its_own_pods_only(cluster: Cluster) -> None:
    await setup_pods(cluster)
    pods = "/api/v1/namespaces/default/pods"
    merge = {"Content-Type": "application/merge-patch+json"}
    status = b'{"status": {"message": "hi"}}'
    async with cluster.http("n1") as n1:
        assert (await ok(await n1.get(f"{pods}/p2")))["spec"]["nodeName"] == "n2"
        await ok(await n1.patch(f"{pods}/p1/status", content=status, headers=merge))
        assert forbidden(await n1.patch(f"{pods}/p2/status", content=status, headers=merge)) \
            == ('pods "p2" is forbidden: User "system:node:n1" cannot patch resource '
                '"pods/status" in API group "" in the namespace "default": node "n1" can only '
                'update pod status for pods with spec.nodeName set to itself')
        assert forbidden(await n1.delete(f"{pods}/p2")) == (
            'pods "p2" is forbidden: User "system:node:n1" cannot delete resource "pods" in '
            'API group "" in the namespace "default": node "n1" can only delete pods with '
            "spec.nodeName set to itself")
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": "p2", "namespace": "default"}}
        assert "can only evict pods" in forbidden(
            await n1.post(f"{pods}/p2/eviction", json=eviction))
        assert "can only create mirror pods" in forbidden(
            await n1.post(pods, json=pod("p3", "n1")))
        assert (await n1.delete(f"{pods}/p1")).status_code == 200
        assert forbidden(await n1.delete(pods)).startswith("pods is forbidden")


async def test_node_reads_only_what_its_pods_use(cluster: Cluster) -> None:
    await setup_pods(cluster)
    cms = "/api/v1/namespaces/default/configmaps"
    async with cluster.http("n1") as n1:
        await ok(await n1.get(f"{cms}/settings"))
        assert forbidden(await n1.get(f"{cms}/other-settings")).endswith(
            "no relationship found between node 'n1' and this object")
        assert "can only get individual resources" in forbidden(await n1.get(cms))
        assert (await n1.get(f"{cms}?fieldSelector=metadata.name%3Dsettings")).status_code \
            == 200


async def test_node_may_write_its_own_node_and_lease_only(cluster: Cluster) -> None:
    def node(name: str, **labels: str) -> Obj:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels}}

    merge = {"Content-Type": "application/merge-patch+json"}
    async with cluster.http("t") as admin:
        await ok(await admin.post("/api/v1/nodes", json=node("n2")))
    async with cluster.http("n1") as n1:
        assert forbidden(await n1.post("/api/v1/nodes", json=node("n3"))).endswith(
            'node "n1" is not allowed to modify node "n3"')
        assert "is not allowed to set the following labels: node-restriction.kubernetes.io/a" \
            in forbidden(await n1.post("/api/v1/nodes", json=node(
                "n1", **{"node-restriction.kubernetes.io/a": "x"})))
        await ok(await n1.post("/api/v1/nodes", json=node("n1", team="ml")))
        assert forbidden(await n1.patch("/api/v1/nodes/n2", content=b'{"metadata": {}}',
                                        headers=merge)) == (
            'nodes "n2" is forbidden: User "system:node:n1" cannot patch resource "nodes" in '
            'API group "" at the cluster scope: node "n1" is not allowed to modify node "n2"')
        assert "is not allowed to modify labels: node-restriction.kubernetes.io/a" in forbidden(
            await n1.patch("/api/v1/nodes/n1", headers=merge, content=b'{"metadata": '
                           b'{"labels": {"node-restriction.kubernetes.io/a": "x"}}}'))
        assert "is not allowed to modify taints" in forbidden(await n1.patch(
            "/api/v1/nodes/n1", headers=merge,
            content=b'{"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}}'))
        await ok(await n1.patch("/api/v1/nodes/n1/status", headers=merge,
                                content=b'{"status": {"phase": "Running"}}'))
        leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"

        def lease(name: str) -> Obj:
            return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name}, "spec": {"holderIdentity": name}}

        await ok(await n1.post(leases, json=lease("n1")))
        assert forbidden(await n1.post(leases, json=lease("n2"))).endswith(
            "can only access node lease with the same name as the requesting node")
        assert "can only access leases in the" in forbidden(await n1.get(
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1"))


async def test_can_i_agrees(cluster: Cluster) -> None:
    """kubectl auth can-i's reviews give the answer the request gets."""
    await setup_pods(cluster)

    async def can(token: str, verb: str, resource: str, name: str, sub: str = "",
                  ns: str = "default") -> bool:
        async with cluster.http(token) as c:
            out = await ok(await c.post(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                json={"apiVersion": "authorization.k8s.io/v1",
                      "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {
                          "verb": verb, "resource": resource, "subresource": sub,
                          "name": name, "namespace": ns}}}))
        return bool(out["status"]["allowed"])

    assert await can("n1", "delete", "pods", "p1")
    assert not await can("n1", "delete", "pods", "p2")
    assert await can("n1", "patch", "pods", "p1", "status")
    assert not await can("n1", "patch", "pods", "p2", "status")
    assert await can("n1", "patch", "nodes", "n1", ns="")
    assert not await can("n1", "patch", "nodes", "n2", ns="")
    assert not await can("n1", "get", "secrets", "anything")
    assert not await can("alice", "delete", "pods", "p1"), "nobody else gains anything"


async def test_dry_run_csr_is_neither_stored_nor_signed(cluster: Cluster) -> None:
    req, _ = certificates.make_request("system:node:n1", ["system:nodes"])
    async with cluster.http(cluster.join_token) as c:
        await ok(await c.post(CSRS + "?dryRun=All", json=certificates.node_csr("n1", req)))
    async with cluster.http("t") as admin:
        assert (await ok(await admin.get(CSRS)))["items"] == []
