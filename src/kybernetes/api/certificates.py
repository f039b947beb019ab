"""``certificates.k8s.io``: CertificateSigningRequests, and the bootstrap tokens that let a
new node ask for its client certificate (upstream's kubelet TLS bootstrapping).

Pure functions over the wire form (no I/O)::

    parse_bootstrap_token("abcdef.0123456789abcdef")   # ("abcdef", "0123456789abcdef")
    csr = parse_request(obj)                           # the PKCS#10 request of a CSR
    node_client_problems(obj, csr)                     # [] for a kubelet client request

``cryptography`` is imported only by the functions that read or make certificates.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

Obj = dict[str, Any]
GROUP = "certificates.k8s.io"

KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
LEGACY_UNKNOWN_SIGNER = "kubernetes.io/legacy-unknown"
CLUSTER_SIGNERS = (KUBELET_CLIENT_SIGNER, CLIENT_SIGNER)
"""The signers the cluster CA issues for (the certificates the API server trusts)."""

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

# -- bootstrap tokens (kube-system Secrets ``bootstrap-token-<id>``) --------------------

BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"
BOOTSTRAP_SECRET_PREFIX = "bootstrap-token-"
BOOTSTRAP_USER_PREFIX = "system:bootstrap:"
BOOTSTRAPPERS_GROUP = "system:bootstrappers"
DEFAULT_NODE_TOKEN_GROUP = "system:bootstrappers:kyb:default-node-token"
"""The extra group of the join token ``kyb server`` makes (kubeadm's is
``system:bootstrappers:kubeadm:default-node-token``)."""
_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def parse_bootstrap_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a token shaped ``[a-z0-9]{6}.[a-z0-9]{16}``, else None."""
    m = _TOKEN.match(token)
    return (m.group(1), m.group(2)) if m else None


def new_bootstrap_token() -> str:
    def part(n: int) -> str:
        return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))

    return f"{part(6)}.{part(16)}"


def bootstrap_token_secret(token: str, *, description: str, extra_groups: list[str],
                           expiration: str = "") -> Obj:
    """The kube-system Secret that makes ``token`` a bootstrap token (for
    authentication only, as kubeadm's node join tokens are)."""
    parsed = parse_bootstrap_token(token)
    assert parsed is not None, "not a bootstrap token"
    tid, secret = parsed
    data = {"token-id": tid, "token-secret": secret, "description": description,
            "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
            "auth-extra-groups": ",".join(extra_groups)}
    if expiration:
        data["expiration"] = expiration
    return {"apiVersion": "v1", "kind": "Secret", "type": BOOTSTRAP_TOKEN_TYPE,
            "metadata": {"name": BOOTSTRAP_SECRET_PREFIX + tid, "namespace": "kube-system"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def bootstrap_token_groups(secret: Obj) -> list[str] | None:
    """The groups a valid bootstrap token Secret authenticates with (None when it does
    not authenticate: wrong type, not for authentication, bad extra groups). Expiration
    and the token's secret are the caller's to check."""
    if secret.get("type") != BOOTSTRAP_TOKEN_TYPE or \
            (secret.get("metadata") or {}).get("deletionTimestamp"):
        return None
    data = secret_data(secret)
    if data.get("usage-bootstrap-authentication") != "true":
        return None
    groups = [BOOTSTRAPPERS_GROUP]
    for g in (data.get("auth-extra-groups") or "").split(","):
        g = g.strip()
        if not g:
            continue
        if not g.startswith(BOOTSTRAPPERS_GROUP + ":"):
            return None  # upstream refuses tokens with groups outside its prefix
        groups.append(g)
    return groups


def secret_data(secret: Obj) -> dict[str, str]:
    out = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(v).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    return out


# -- certificate signing requests --------------------------------------------------------

APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
VALID_USAGES = frozenset({
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc"})
_KUBELET_CLIENT_USAGES = ({"digital signature", "client auth"},
                          {"key encipherment", "digital signature", "client auth"})


def condition(csr: Obj, type_: str) -> Obj | None:
    for c in (csr.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def is_approved(csr: Obj) -> bool:
    c = condition(csr, APPROVED)
    return c is not None and c.get("status", "True") == "True"


def is_finished(csr: Obj) -> bool:
    """Denied, failed, or issued: nothing more for a signer to do."""
    return bool(condition(csr, DENIED) or condition(csr, FAILED) or
                (csr.get("status") or {}).get("certificate"))


def request_pem(csr: Obj) -> bytes:
    """The PEM of ``spec.request`` (base64 in the wire form)."""
    try:
        return base64.b64decode((csr.get("spec") or {}).get("request") or "", validate=True)
    except ValueError:
        return b""


def parse_request(csr: Obj) -> Any:
    """The ``cryptography`` CertificateSigningRequest of ``spec.request`` (ValueError when
    it is not one PEM ``CERTIFICATE REQUEST`` with a valid signature)."""
    from cryptography import x509

    pem = request_pem(csr)
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in pem:
        raise ValueError('PEM block type must be CERTIFICATE REQUEST')
    req = x509.load_pem_x509_csr(pem)
    if not req.is_signature_valid:
        raise ValueError("the request's signature is invalid")
    return req


def subject(req: Any) -> tuple[str, list[str]]:
    """(common name, organizations) of a parsed request."""
    from cryptography.x509.oid import NameOID

    cn = [str(a.value) for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value)
            for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return (cn[0] if cn else ""), orgs


def _has_sans(req: Any) -> bool:
    from cryptography import x509

    try:
        ext = req.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    return len(list(ext.value)) > 0


def node_client_problems(csr: Obj, req: Any) -> list[str]:
    """Why ``csr`` is not a kubelet client certificate request (upstream's
    ``ValidateKubeletClientCSR``): O exactly ``system:nodes``, CN ``system:node:<name>``,
    no subject alternative names, usages ``digital signature`` and ``client auth`` (and
    optionally ``key encipherment``)."""
    cn, orgs = subject(req)
    problems = []
    if orgs != [NODES_GROUP]:
        problems.append('subject organization is not system:nodes')
    if not cn.startswith(NODE_USER_PREFIX) or len(cn) == len(NODE_USER_PREFIX):
        problems.append('subject common name does not begin with "system:node:"')
    if _has_sans(req):
        problems.append("subject alternative names are not allowed")
    usages = set((csr.get("spec") or {}).get("usages") or [])
    if usages not in _KUBELET_CLIENT_USAGES:
        problems.append('usages did not match ["client auth" "digital signature"] or '
                        '["client auth" "digital signature" "key encipherment"]')
    return problems


def make_request(common_name: str, organizations: list[str]) -> tuple[bytes, bytes]:
    """A new EC P-256 key and a PKCS#10 request for it: (request PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)
                        for o in organizations),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    req = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return (req.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def node_csr(node_name: str, request: bytes, *, generate_name: str = "node-csr-") -> Obj:
    """The CertificateSigningRequest a node agent posts for its client certificate."""
    return {"apiVersion": f"{GROUP}/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": generate_name},
            "spec": {"request": base64.b64encode(request).decode(),
                     "signerName": KUBELET_CLIENT_SIGNER,
                     "usages": ["digital signature", "client auth"]}}
