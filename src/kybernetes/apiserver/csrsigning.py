"""CertificateSigningRequests: approved at once when they are a bootstrapping node's own
client certificate, and signed by the cluster CA once approved.

This runs in the API server process because the CA key lives there (upstream's
``csrapproving`` and ``csrsigning`` controllers, which kube-controller-manager runs with
the CA files). A request is looked at after every write to it and, at start-up, every
unfinished one:

- Approval (upstream's ``sarapprove``): a ``kubernetes.io/kube-apiserver-client-kubelet``
  request that is a valid node client request (O ``system:nodes``, CN
  ``system:node:<name>``, no SANs, client usages) is approved if its requester may
  ``create`` ``certificatesigningrequests/nodeclient`` (a bootstrap token's group holds
  that), or ``/selfnodeclient`` when it renews its own (CN = requester). Anything else
  waits for ``kubectl certificate approve``.
- Signing: approved requests for the two client signers the API server trusts
  (``kube-apiserver-client-kubelet``, ``kube-apiserver-client``) get a certificate of at
  most a year (or ``spec.expirationSeconds``). A kubelet request that is not a valid node
  client request gets a ``Failed`` condition instead.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from kybernetes.api import certificates, meta, rbac
from kybernetes.api.certificates import GROUP
from kybernetes.api.errors import StatusError
from kybernetes.api.registry import Resource
from kybernetes.apiserver import certs
from kybernetes.apiserver.context import Options

if TYPE_CHECKING:
    from kybernetes.apiserver.app import APIServer

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_KIND = "CertificateSigningRequest"
MAX_SECONDS = 365 * 86400


class CSRSigner:
    def __init__(self, server: APIServer, *, pki_dir: Path) -> None:
        self.server = server
        self.pki_dir = pki_dir
        server.after_write_hooks = [*getattr(server, "after_write_hooks", []),
                                    self.after_write]

    def _res(self) -> Resource:
        res = self.server.ctx.registry.get(GROUP, "v1", "certificatesigningrequests")
        assert res is not None
        return res

    async def after_write(self, res: Resource, obj: Obj) -> None:
        if (res.group, res.kind) != (GROUP, _KIND) or certificates.is_finished(obj):
            return
        try:
            await self.process(obj["metadata"]["name"])
        except Exception:  # the write itself succeeded: its answer must not fail
            log.exception("certificate signing request %s", obj["metadata"].get("name"))

    async def resync(self) -> None:
        """Process every request left unfinished (approved while no server ran...)."""
        res = self._res()
        page = await self.server.ctx.backend.list(res.key_prefix())
        for kv in page.items:
            csr = orjson.loads(kv.value)
            if not certificates.is_finished(csr):
                try:
                    await self.process(csr["metadata"]["name"])
                except Exception:
                    log.exception("certificate signing request %s", csr["metadata"]["name"])

    async def process(self, name: str) -> None:
        store = self.server.store(self._res())
        try:
            csr = await store.get("", name)
        except StatusError as e:
            if e.code == 404:  # a dry run, or deleted meanwhile
                return
            raise
        if certificates.is_finished(csr):
            return
        if not certificates.is_approved(csr) and \
                not certificates.condition(csr, certificates.DENIED):
            if await self.recognized(csr):
                csr = await self._write(name, "approval", lambda c: _add_condition(
                    c, certificates.APPROVED, "AutoApproved",
                    "Auto approving kubelet client certificate after SubjectAccessReview.",
                    self.server.ctx.clock.now()))
                log.info("approved certificate signing request %s of %s", name,
                         (csr.get("spec") or {}).get("username"))
        if certificates.is_approved(csr):
            await self.sign(csr)

    async def recognized(self, csr: Obj) -> bool:
        """Whether ``csr`` is a node client request its requester may have approved."""
        spec = csr.get("spec") or {}
        if spec.get("signerName") != certificates.KUBELET_CLIENT_SIGNER:
            return False
        try:
            req = certificates.parse_request(csr)
        except ValueError:
            return False
        if certificates.node_client_problems(csr, req):
            return False
        cn, _ = certificates.subject(req)
        sub = "selfnodeclient" if spec.get("username") == cn else "nodeclient"
        a = rbac.Attributes(str(spec.get("username") or ""),
                            tuple(str(g) for g in spec.get("groups") or ()), "create",
                            api_group=GROUP, resource="certificatesigningrequests",
                            subresource=sub)
        return await self.server.authorizer.allows(a)

    async def sign(self, csr: Obj) -> None:
        name = csr["metadata"]["name"]
        spec = csr.get("spec") or {}
        signer = spec.get("signerName")
        if signer not in certificates.CLUSTER_SIGNERS:
            return  # another signer's to issue
        try:
            req = certificates.parse_request(csr)
        except ValueError as e:
            await self._fail(name, str(e))
            return
        if signer == certificates.KUBELET_CLIENT_SIGNER:
            problems = certificates.node_client_problems(csr, req)
            if problems:
                await self._fail(name, "invalid kubelet client certificate request: " +
                                 "; ".join(problems))
                return
        seconds = MAX_SECONDS
        if isinstance(spec.get("expirationSeconds"), int):
            seconds = min(seconds, int(spec["expirationSeconds"]))
        pem = certs.sign_request(self.pki_dir, certificates.request_pem(csr),
                                 usages=list(spec.get("usages") or []), seconds=seconds)

        def issue(c: Obj) -> Obj:
            c.setdefault("status", {})["certificate"] = base64.b64encode(pem).decode()
            return c

        await self._write(name, "status", issue)
        log.info("signed certificate signing request %s", name)

    async def _fail(self, name: str, message: str) -> None:
        log.warning("certificate signing request %s failed: %s", name, message)
        await self._write(name, "status", lambda c: _add_condition(
            c, certificates.FAILED, "SignerValidationFailure", message,
            self.server.ctx.clock.now()))

    async def _write(self, name: str, subresource: str, fn: Any) -> Obj:
        store = self.server.store(self._res())
        try:
            return await store.guaranteed_update(
                "", name, fn, Options(field_manager="kube-controller-manager",
                                      field_validation="Ignore"), subresource=subresource)
        except StatusError as e:
            if e.code == 404:
                return {}
            raise


def _add_condition(csr: Obj, type_: str, reason: str, message: str, now: float) -> Obj:
    stamp = meta.rfc3339(now)
    conds = [c for c in (csr.setdefault("status", {}).get("conditions") or [])
             if c.get("type") != type_]
    conds.append({"type": type_, "status": "True", "reason": reason, "message": message,
                  "lastUpdateTime": stamp, "lastTransitionTime": stamp})
    csr["status"]["conditions"] = conds
    return csr
