"""Service-account JWTs: what is signed verifies, anything else does not."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kybernetes.apiserver.serviceaccounts import ISSUER, TokenIssuer, claims_for

SA = {"metadata": {"name": "default", "uid": "sa-uid"}}


def test_issue_and_verify(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path / "sa.key")
    claims = claims_for(ISSUER, namespace="ml", sa=SA, audiences=[ISSUER], expiration=3600,
                        bound={"kind": "Pod", "name": "p", "uid": "pod-uid"}, now=1000.0)
    token = issuer.issue(claims)
    got = issuer.verify(token, now=1000.0)
    assert got is not None
    assert got["sub"] == "system:serviceaccount:ml:default"
    assert got["kubernetes.io"] == {"namespace": "ml",
                                    "serviceaccount": {"name": "default", "uid": "sa-uid"},
                                    "pod": {"name": "p", "uid": "pod-uid"}}
    assert got["exp"] == 4600
    # the key is kept: another issuer on the same file verifies it
    assert TokenIssuer(tmp_path / "sa.key").verify(token, now=1000.0) == got
    assert (tmp_path / "sa.key").stat().st_mode & 0o777 == 0o600


def test_rejects_expired_tampered_and_foreign(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path / "a.key")
    token = issuer.issue(claims_for(ISSUER, namespace="ml", sa=SA, audiences=[ISSUER],
                                    expiration=600, bound=None, now=1000.0))
    assert issuer.verify(token, now=1599.0) is not None
    assert issuer.verify(token, now=1600.0) is None  # expired
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert issuer.verify(f"{head}.{forged}.{sig}", now=1000.0) is None
    assert TokenIssuer(tmp_path / "b.key").verify(token, now=1000.0) is None
    assert issuer.verify("not-a-jwt", now=1000.0) is None
    assert issuer.verify("a.b.c", now=1000.0) is None
