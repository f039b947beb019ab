"""Several API servers on one etcd: the secrets they must share.

Every server of a cluster signs and trusts with the same cluster CA, verifies the same
service-account tokens, decrypts Secrets with the same keys and knows the same admin
token. The first server started on an etcd datastore publishes those files in etcd
(key ``/kybernetes.io/bootstrap``, outside the API's ``/registry``), sealed with AES-GCM
under a key derived from its *server token* (``DATA_DIR/pki/server.token``); ``kyb server
--join --token T`` reads them back before it starts, as k3s's servers share their
bootstrap data. Without the token, the data in etcd opens nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import orjson

from kybernetes.apiserver import certs
from kybernetes.store import AlreadyExistsError, Backend

BOOTSTRAP_KEY = "/kybernetes.io/bootstrap"
TOKEN_FILE = "server.token"
SHARED_FILES = ("ca.crt", "ca.key", "sa.key", "admin.token", "encryption-config.yaml")
"""Under ``DATA_DIR/pki``; each server makes its own serving certificate."""
_ITERATIONS = 200_000


class JoinError(Exception):
    """The datastore holds no cluster to join, or another one, or the token is wrong."""


def server_token(pki_dir: Path, given: str = "") -> str:
    """The server token: ``given`` (kept for restarts) or the one kept in ``pki_dir``
    (made at the first start)."""
    path = pki_dir / TOKEN_FILE
    if given:
        if path.exists() and path.read_text().strip() != given:
            raise JoinError(f"--token differs from the server token kept in {path}")
        _write(path, given.encode())
        return given
    if not path.exists():
        _write(path, secrets.token_urlsafe(32).encode())
    return path.read_text().strip()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    certs.write_private(path, data)


def _key(token: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", token.encode(), salt, _ITERATIONS, 32)


def seal(files: dict[str, bytes], token: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(12)
    plain = orjson.dumps({k: base64.b64encode(v).decode() for k, v in files.items()})
    sealed = AESGCM(_key(token, salt)).encrypt(nonce, plain, BOOTSTRAP_KEY.encode())
    return orjson.dumps({"v": 1, "salt": base64.b64encode(salt).decode(),
                         "nonce": base64.b64encode(nonce).decode(),
                         "data": base64.b64encode(sealed).decode()})


def unseal(blob: bytes, token: str) -> dict[str, bytes]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        doc = orjson.loads(blob)
        salt, nonce, data = (base64.b64decode(doc[k]) for k in ("salt", "nonce", "data"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise JoinError(f"the cluster's bootstrap data in the datastore is damaged: {e}") from None
    try:
        plain = AESGCM(_key(token, salt)).decrypt(nonce, data, BOOTSTRAP_KEY.encode())
    except InvalidTag:
        raise JoinError("the token does not open the cluster's bootstrap data: give the "
                        "server token of the cluster's first server (its DATA_DIR/pki/"
                        f"{TOKEN_FILE})") from None
    return {k: base64.b64decode(v) for k, v in orjson.loads(plain).items()}


async def fetch(backend: Backend, pki_dir: Path, token: str) -> None:
    """``--join``: write the cluster's shared files into ``pki_dir`` (a file already
    there must be the same)."""
    kv = await backend.get(BOOTSTRAP_KEY)
    if kv is None:
        raise JoinError("the datastore holds no cluster to join: start its first server "
                        "without --join")
    files = unseal(kv.value, token)
    pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki_dir, 0o700)
    for name, data in files.items():
        path = pki_dir / Path(name).name
        if path.exists():
            if not hmac.compare_digest(path.read_bytes(), data):
                raise JoinError(f"{path} differs from the cluster's: this data dir belongs "
                                "to another cluster")
            continue
        _write(path, data)
        if name == "ca.crt":
            os.chmod(path, 0o644)


async def check_datastore(backend: Backend, pki_dir: Path) -> None:
    """A first server (no ``--join``) must not take over a datastore that holds another
    cluster."""
    if await backend.get(BOOTSTRAP_KEY) is not None and not (pki_dir / "ca.crt").exists():
        raise JoinError("the datastore already holds a cluster: to add a server to it, "
                        "start with --join --token <its server token>")


async def publish(backend: Backend, pki_dir: Path, token: str) -> None:
    """Put this server's shared files in the datastore, unless they are there; those
    there must be this cluster's."""
    files = {n: (pki_dir / n).read_bytes() for n in SHARED_FILES if (pki_dir / n).exists()}
    try:
        await backend.create(BOOTSTRAP_KEY, seal(files, token))
        return
    except AlreadyExistsError:
        pass
    kv = await backend.get(BOOTSTRAP_KEY)
    if kv is None:
        return
    theirs = unseal(kv.value, token)
    if theirs.get("ca.crt") != files.get("ca.crt"):
        raise JoinError("the datastore holds another cluster (its CA is not this data "
                        "dir's)")
