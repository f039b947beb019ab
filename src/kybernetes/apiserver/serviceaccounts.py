"""Service-account tokens: the TokenRequest API (``serviceaccounts/{name}/token``), the
JWTs it issues, and their authentication.

Tokens are ES256 JWTs signed with the server's own key (``pki/sa.key``), with the claims
kube-apiserver puts in them: ``iss``, ``aud``, ``sub`` (``system:serviceaccount:NS:NAME``),
``iat``/``nbf``/``exp`` and ``kubernetes.io`` naming the namespace, the service account and
the object the token is bound to (a pod, as the node agents ask). A request authenticated
with one acts as the service account (groups ``system:serviceaccounts`` and
``system:serviceaccounts:NS``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kybernetes.api import meta
from kybernetes.api.errors import FieldError, StatusError

if TYPE_CHECKING:
    from kybernetes.api.registry import Resource
    from kybernetes.apiserver.app import APIServer, Request

Obj = dict[str, Any]

ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 2 ** 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Signs and verifies service-account JWTs with one EC P-256 key, read (or made) on
    first use: ``cryptography`` is not loaded before a token is needed."""

    def __init__(self, key_path: Path, *, issuer: str = ISSUER) -> None:
        self.key_path = key_path
        self.issuer = issuer
        self._key: Any = None
        self.kid = ""

    def ensure_key(self) -> None:
        """Make the key now if there is none (servers sharing it publish it at start)."""
        self._load()

    def _load(self) -> Any:
        if self._key is not None:
            return self._key
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        if self.key_path.exists():
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            tmp = self.key_path.with_suffix(".tmp")
            tmp.write_bytes(pem)
            tmp.chmod(0o600)
            tmp.replace(self.key_path)
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64(hashlib.sha256(der).digest())
        self._key = key
        return key

    def issue(self, claims: Obj) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        key = self._load()
        header = {"alg": "ES256", "kid": self.kid}
        signing = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                   _b64(json.dumps(claims, separators=(",", ":")).encode()))
        r, s = decode_dss_signature(key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return signing + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def verify(self, token: str, *, now: float | None = None) -> Obj | None:
        """The claims of a token this issuer signed that is valid now, else None."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            sig = _unb64(parts[2])
            if header.get("alg") != "ES256" or len(sig) != 64:
                return None
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                       int.from_bytes(sig[32:], "big"))
            self._load().public_key().verify(der, f"{parts[0]}.{parts[1]}".encode(),
                                             ec.ECDSA(hashes.SHA256()))
            claims: Obj = json.loads(_unb64(parts[1]))
        except (ValueError, InvalidSignature, TypeError):
            return None
        t = time.time() if now is None else now
        if claims.get("iss") != self.issuer or not isinstance(claims.get("exp"), int) or \
                t >= claims["exp"] or t + 60 < int(claims.get("nbf") or 0):
            return None
        return claims


def claims_for(issuer: str, *, namespace: str, sa: Obj, audiences: list[str],
               expiration: int, bound: Obj | None, now: float) -> Obj:
    iat = int(now)
    k8s: Obj = {"namespace": namespace,
                "serviceaccount": {"name": sa["metadata"]["name"],
                                   "uid": sa["metadata"].get("uid", "")}}
    if bound is not None:
        k8s[bound["kind"].lower()] = {"name": bound["name"], "uid": bound["uid"]}
    return {"aud": audiences, "exp": iat + expiration, "iat": iat, "iss": issuer,
            "jti": str(uuid.uuid4()), "kubernetes.io": k8s, "nbf": iat,
            "sub": f"system:serviceaccount:{namespace}:{sa['metadata']['name']}"}


async def token_request(server: APIServer, req: Request, res: Resource, ns: str,
                        name: str) -> int:
    """POST serviceaccounts/{name}/token: a TokenRequest answered with a token."""
    from kybernetes.apiserver import codec
    from kybernetes.apiserver.app import send_bytes

    issuer: TokenIssuer | None = server.ctx.extra.get("token_issuer")
    if issuer is None:
        raise StatusError.service_unavailable("this server issues no service-account tokens")
    body = codec.decode_object(req.header(b"content-type"), await req.body())
    spec = body.get("spec") or {}
    errs = []
    expiration = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
    if not isinstance(expiration, int) or expiration < MIN_EXPIRATION:
        errs.append(FieldError.invalid("spec.expirationSeconds", expiration,
                                       "may not specify a duration less than 10 minutes"))
    elif expiration > MAX_EXPIRATION:
        errs.append(FieldError.invalid("spec.expirationSeconds", expiration,
                                       "may not specify a duration larger than 2^32 seconds"))
    ref = spec.get("boundObjectRef")
    if ref is not None and ref.get("kind") not in ("Pod", "Secret", "Node"):
        errs.append(FieldError.not_supported("spec.boundObjectRef.kind", ref.get("kind"),
                                             ["Pod", "Secret", "Node"]))
    if errs:
        raise StatusError.invalid("TokenRequest", name, errs, group="authentication.k8s.io")
    sa = await server.store(res).get(ns, name)
    bound = None
    if ref is not None:
        plural = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}[ref["kind"]]
        target = server.ctx.registry.get("", "v1", plural)
        assert target is not None
        obj = await server.store(target).get("" if ref["kind"] == "Node" else ns,
                                             ref.get("name", ""))
        uid = obj["metadata"].get("uid", "")
        if ref.get("uid") and ref["uid"] != uid:
            raise StatusError.conflict(plural, ref.get("name", ""),
                                       f"the UID in the bound object reference ({ref['uid']}) "
                                       f"does not match the UID in record. The object might "
                                       f"have been deleted and then recreated")
        bound = {"kind": ref["kind"], "name": ref.get("name", ""), "uid": uid}
    now = time.time()
    audiences = list(spec.get("audiences") or [issuer.issuer])
    token = issuer.issue(claims_for(issuer.issuer, namespace=ns, sa=sa, audiences=audiences,
                                    expiration=expiration, bound=bound, now=now))
    out = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
           "metadata": {"name": name, "namespace": ns,
                        "creationTimestamp": meta.rfc3339(now)},
           "spec": {"audiences": audiences, "expirationSeconds": expiration,
                    "boundObjectRef": ref},
           "status": {"token": token, "expirationTimestamp": meta.rfc3339(now + expiration)}}
    await send_bytes(req.send, 201, json.dumps(out).encode())
    return 201
