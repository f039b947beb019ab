"""The cluster's certificate authority, serving certificate and admin credentials,
generated on first start and kept in ``DATA_DIR/pki``."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_VALID_DAYS = 3650
KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"


@dataclass
class PKI:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_token: str
    kubelet_client_cert: Path
    kubelet_client_key: Path
    """The API server's client certificate for node agents (CN KUBELET_CLIENT_CN)."""

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.read_bytes()


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _sans(hosts: list[str]) -> list[Any]:
    from cryptography import x509

    out: list[Any] = []
    for h in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def self_signed_pem(common_name: str, hosts: list[str]) -> tuple[bytes, bytes]:
    """A self-signed serving certificate and its key, in PEM (e.g. the ingress
    controller's default certificate, or a test's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ensure_pki(data_dir: Path, *, extra_hosts: list[str] | None = None) -> PKI:
    """Create (once) the CA, the serving certificate and the admin token."""
    # cryptography is imported only when something must be generated (start-up speed)
    pki = data_dir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    ca_cert_p, ca_key_p = pki / "ca.crt", pki / "ca.key"
    srv_cert_p, srv_key_p = pki / "apiserver.crt", pki / "apiserver.key"
    token_p = pki / "admin.token"
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    if not (ca_cert_p.exists() and ca_key_p.exists()):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID

        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kybernetes-ca")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                             False), critical=True)
                .sign(key, hashes.SHA256()))
        _write(ca_key_p, _key_pem(key))
        _write(ca_cert_p, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        srv_cert_p.unlink(missing_ok=True)
    hosts = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", socket.gethostname(), "127.0.0.1", "::1",
             "10.96.0.1", *(extra_hosts or [])]
    stamp_p = pki / "apiserver.hosts"
    stamp = "\n".join(sorted(set(hosts)))
    if not (srv_cert_p.exists() and srv_key_p.exists() and stamp_p.exists()
            and set(stamp_p.read_text().split()) >= set(hosts)):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID

        ca_key = serialization.load_pem_private_key(ca_key_p.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_p.read_bytes())
        key = _key()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                            "kube-apiserver")]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
                .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
        _write(srv_key_p, _key_pem(key))
        _write(srv_cert_p, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(stamp_p, stamp.encode(), 0o644)
    if not token_p.exists():
        _write(token_p, secrets.token_urlsafe(32).encode())
    kubelet_cert_p, kubelet_key_p = pki / "apiserver-kubelet-client.crt", \
        pki / "apiserver-kubelet-client.key"
    if not (kubelet_cert_p.exists() and kubelet_key_p.exists()):
        # what the API server shows node agents it proxies logs and exec to
        cert_pem, key_pem = issue_client_cert(pki, KUBELET_CLIENT_CN, [], days=_VALID_DAYS)
        _write(kubelet_key_p, key_pem)
        _write(kubelet_cert_p, cert_pem, 0o644)
    return PKI(pki, ca_cert_p, ca_key_p, srv_cert_p, srv_key_p, token_p.read_text().strip(),
               kubelet_cert_p, kubelet_key_p)


def kubeconfig(server: str, ca_pem: bytes, token: str, *, name: str = "kybernetes",
               user: str = "admin") -> str:
    ca = base64.b64encode(ca_pem).decode()
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: {name}\n"
        "  cluster:\n"
        f"    server: {server}\n"
        f"    certificate-authority-data: {ca}\n"
        "contexts:\n"
        f"- name: {name}\n"
        "  context:\n"
        f"    cluster: {name}\n"
        f"    user: {user}\n"
        "    namespace: default\n"
        f"current-context: {name}\n"
        "preferences: {}\n"
        "users:\n"
        f"- name: {user}\n"
        "  user:\n"
        f"    token: {token}\n"
    )


def write_kubeconfig(path: Path, text: str) -> None:
    _write(path, text.encode())


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read (mode 0600), atomically."""
    _write(path, data)


def issue_client_cert(pki: Path, user: str, groups: list[str], *,
                      days: int = 365) -> tuple[bytes, bytes]:
    """A client certificate signed by the cluster CA: CN is the user, each O a group (as
    kube-apiserver reads them). Returns (certificate PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    key = _key()
    subject = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups),
                         x509.NameAttribute(NameOID.COMMON_NAME, user)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False,
                                         False), critical=True)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def client_cert_kubeconfig(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, *,
                           user: str, name: str = "kybernetes") -> str:
    """A kubeconfig that authenticates with a client certificate."""
    text = kubeconfig(server, ca_pem, "", name=name, user=user)
    return text.replace("    token: \n", "    client-certificate-data: "
                        f"{base64.b64encode(cert_pem).decode()}\n"
                        f"    client-key-data: {base64.b64encode(key_pem).decode()}\n")


def user_from_peercert(cert: dict[str, Any] | None) -> tuple[str, list[str]] | None:
    """(user, groups) from a verified client certificate as ``ssl`` reports it (CN, O)."""
    if not cert:
        return None
    cn, orgs = "", []
    for rdn in cert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return (cn, orgs) if cn else None


def sign_request(pki: Path, request_pem: bytes, *, usages: list[str],
                 seconds: int = 365 * 86400) -> bytes:
    """A certificate for a PKCS#10 request, signed by the cluster CA: the request's subject
    and key, the key usages and extended key usages asked for (as upstream's
    ``csrsigning`` controller maps them). Returns the certificate's PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    req = x509.load_pem_x509_csr(request_pem)
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + datetime.timedelta(seconds=seconds), ca_cert.not_valid_after_utc)
    eku = [oid for usage, oid in (("client auth", ExtendedKeyUsageOID.CLIENT_AUTH),
                                  ("server auth", ExtendedKeyUsageOID.SERVER_AUTH))
           if usage in usages]
    builder = (x509.CertificateBuilder().subject_name(req.subject).issuer_name(ca_cert.subject)
               .public_key(req.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   "digital signature" in usages, False, "key encipherment" in usages, False,
                   False, False, False, False, False), critical=True))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM)
