"""The node's own client certificate, from TLS bootstrapping (kubelet's
``--bootstrap-kubeconfig``).

With a bootstrap token the agent makes a key, posts a CertificateSigningRequest for
``system:node:<name>`` (group ``system:nodes``), waits until it is approved and signed,
and keeps certificate and key in ``DATA_DIR/pki`` (mode 0600). From then on, restarts
included, it authenticates with that certificate; the bootstrap token is no longer
needed (nor, once it is revoked, accepted)::

    config = await node_credential(Config.for_server(url, token, ca), data_dir=d,
                                   node_name="gpu-1")
    client = Client(config)   # user system:node:gpu-1
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import logging
import os
from pathlib import Path

from kybernetes.api import certificates
from kybernetes.api.errors import StatusError
from kybernetes.client import Client, Config

log = logging.getLogger(__name__)

CERT_FILE = "node-client.crt"
KEY_FILE = "node-client.key"
KUBECONFIG_FILE = "node.kubeconfig"
POLL_INTERVAL = 1.0
RENEW_BEFORE = datetime.timedelta(days=1)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stored_credential(pki_dir: Path, node_name: str) -> tuple[bytes, bytes] | None:
    """(certificate, key) PEMs kept from an earlier bootstrap, if they are this node's,
    match each other and stay valid for more than a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    try:
        cert_pem = (pki_dir / CERT_FILE).read_bytes()
        key_pem = (pki_dir / KEY_FILE).read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
    except (OSError, ValueError):
        return None
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if cn != [certificates.NODE_USER_PREFIX + node_name] or \
            cert.public_key().public_bytes(serialization.Encoding.DER, pub) != \
            key.public_key().public_bytes(serialization.Encoding.DER, pub):
        return None
    if cert.not_valid_after_utc - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return None
    return cert_pem, key_pem


async def request_certificate(client: Client, node_name: str, *,
                              poll: float = POLL_INTERVAL) -> tuple[bytes, bytes]:
    """Post a node client CSR with a new key and wait for its certificate: (cert, key)."""
    request, key_pem = certificates.make_request(certificates.NODE_USER_PREFIX + node_name,
                                                 [certificates.NODES_GROUP])
    created = await client.create(f"{certificates.GROUP}/v1", "certificatesigningrequests",
                                  certificates.node_csr(node_name, request))
    name = created["metadata"]["name"]
    log.info("certificate signing request %s posted for node %s", name, node_name)
    waited = 0.0
    while True:
        csr = await client.get(f"{certificates.GROUP}/v1", "certificatesigningrequests", name)
        cert = (csr.get("status") or {}).get("certificate")
        if cert:
            return base64.b64decode(cert), key_pem
        for kind in (certificates.DENIED, certificates.FAILED):
            cond = certificates.condition(csr, kind)
            if cond is not None:
                raise RuntimeError(f"certificate signing request {name} {kind.lower()}: "
                                   f"{cond.get('reason', '')} {cond.get('message', '')}".strip())
        if waited in (10.0, 60.0) or (waited > 60 and waited % 600 == 0):
            log.warning("waiting for certificate signing request %s to be approved "
                        "(kubectl certificate approve %s)", name, name)
        await asyncio.sleep(poll)
        waited += poll


async def node_credential(bootstrap: Config, *, data_dir: Path, node_name: str) -> Config:
    """``bootstrap`` (authenticating with a bootstrap token) turned into the settings of
    this node's own credential: the stored certificate, or a new one asked for now."""
    pki_dir = data_dir / "pki"
    found = stored_credential(pki_dir, node_name)
    if found is None:
        log.info("asking %s for a client certificate for node %s", bootstrap.server, node_name)
        async with Client(bootstrap) as client:
            try:
                cert_pem, key_pem = await request_certificate(client, node_name)
            except StatusError as e:
                raise RuntimeError(f"TLS bootstrap failed: {e.message}") from None
        _write_private(pki_dir / KEY_FILE, key_pem)
        _write_private(pki_dir / CERT_FILE, cert_pem)
        found = cert_pem, key_pem
        log.info("node %s has its client certificate (%s)", node_name, pki_dir / CERT_FILE)
    config = dataclasses.replace(bootstrap, token=None, client_cert_data=found[0],
                                 client_key_data=found[1])
    _write_private(data_dir / KUBECONFIG_FILE, kubeconfig(config, node_name).encode())
    return config


def kubeconfig(config: Config, node_name: str) -> str:
    """A kubeconfig of the node's credential (for ``kubectl --kubeconfig``)."""
    import yaml

    def b64(data: bytes | None) -> str:
        return base64.b64encode(data or b"").decode()

    cluster: dict[str, object] = {"server": config.server}
    if config.ca_data:
        cluster["certificate-authority-data"] = b64(config.ca_data)
    if config.insecure:
        cluster["insecure-skip-tls-verify"] = True
    user = certificates.NODE_USER_PREFIX + node_name
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": "default", "cluster": cluster}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": user}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(config.client_cert_data),
            "client-key-data": b64(config.client_key_data)}}]}, sort_keys=False)
