"""The ``certificates.k8s.io`` group: CertificateSigningRequests, and what their
``approval`` and ``status`` subresources may change (upstream's CSR strategies)."""

from __future__ import annotations

import re

from kybernetes.api import certificates
from kybernetes.api.certificates import APPROVED, DENIED, FAILED, GROUP
from kybernetes.api.errors import FieldError
from kybernetes.api.strategy import (
    on_status_update,
    status_validator,
    update_validator,
    validator,
)
from kybernetes.api.validation.common import Errors, Obj, dict_at, list_at

_KIND = "CertificateSigningRequest"
_APPROVAL = (APPROVED, DENIED)
_SIGNER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
                     r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@on_status_update(GROUP, _KIND)
def keep_other_half(new: Obj, old: Obj, subresource: str) -> None:
    """``/approval`` writes only the Approved and Denied conditions; ``/status`` writes
    the certificate and the other conditions (upstream keeps the rest as stored)."""
    old_status = dict_at(old, "status")
    status = new.setdefault("status", {})
    if not isinstance(status, dict):
        status = new["status"] = {}
    conds = [c for c in list_at(status, "conditions") if isinstance(c, dict)]
    old_conds = [c for c in list_at(old_status, "conditions") if isinstance(c, dict)]
    if subresource == "approval":
        merged = [c for c in conds if c.get("type") in _APPROVAL] + \
            [c for c in old_conds if c.get("type") not in _APPROVAL]
        if old_status.get("certificate"):
            status["certificate"] = old_status["certificate"]
        else:
            status.pop("certificate", None)
    else:
        merged = [c for c in old_conds if c.get("type") in _APPROVAL] + \
            [c for c in conds if c.get("type") not in _APPROVAL]
    for c in merged:
        c.setdefault("status", "True")
    if merged:
        status["conditions"] = merged
    else:
        status.pop("conditions", None)


def _validate_conditions(csr: Obj) -> Errors:
    errs: Errors = []
    seen: set[str] = set()
    for i, c in enumerate(list_at(dict_at(csr, "status"), "conditions")):
        path = f"status.conditions[{i}]"
        typ = str((c or {}).get("type") or "")
        if not typ:
            errs.append(FieldError.required(f"{path}.type"))
            continue
        if typ in seen:
            errs.append(FieldError.duplicate(f"{path}.type", typ))
        seen.add(typ)
        if typ in (APPROVED, DENIED, FAILED) and (c.get("status") or "True") != "True":
            errs.append(FieldError.not_supported(f"{path}.status", c.get("status"), ["True"]))
    if APPROVED in seen and DENIED in seen:
        errs.append(FieldError.invalid("status.conditions", None,
                                       "Approved and Denied conditions are mutually "
                                       "exclusive"))
    return errs


@validator(GROUP, _KIND)
def validate_csr(csr: Obj) -> Errors:
    spec = dict_at(csr, "spec")
    errs: Errors = []
    if not spec.get("request"):
        errs.append(FieldError.required("spec.request"))
    else:
        try:
            certificates.parse_request(csr)
        except ValueError as e:
            errs.append(FieldError.invalid("spec.request", "<request>", str(e)))
    signer = spec.get("signerName")
    if not signer:
        errs.append(FieldError.required("spec.signerName"))
    elif not isinstance(signer, str) or not _SIGNER.match(signer):
        errs.append(FieldError.invalid("spec.signerName", signer,
                                       "must be a fully qualified domain and path of the form "
                                       "'example.com/signer-name'"))
    usages = list_at(spec, "usages")
    if not usages:
        errs.append(FieldError.required("spec.usages"))
    for i, u in enumerate(usages):
        if u not in certificates.VALID_USAGES:
            errs.append(FieldError.not_supported(f"spec.usages[{i}]", u,
                                                 sorted(certificates.VALID_USAGES)))
    secs = spec.get("expirationSeconds")
    if isinstance(secs, int) and secs < 600:
        errs.append(FieldError.invalid("spec.expirationSeconds", secs,
                                       "may not specify a duration less than 600 seconds "
                                       "(10 minutes)"))
    return errs + _validate_conditions(csr)


@update_validator(GROUP, _KIND)
def validate_csr_update(new: Obj, old: Obj) -> Errors:
    if new.get("spec") != old.get("spec"):
        return [FieldError.invalid("spec", "<spec>", "field is immutable")]
    return []


@status_validator(GROUP, _KIND)
def validate_csr_status_update(new: Obj, old: Obj) -> Errors:
    errs = _validate_conditions(new)
    have = {c.get("type") for c in list_at(dict_at(new, "status"), "conditions")
            if isinstance(c, dict)}
    for c in list_at(dict_at(old, "status"), "conditions"):
        typ = (c or {}).get("type")
        if typ in (APPROVED, DENIED, FAILED) and typ not in have:
            errs.append(FieldError.forbidden("status.conditions",
                                             f'updates may not remove a condition of type '
                                             f'"{typ}"'))
    old_cert = dict_at(old, "status").get("certificate")
    new_cert = dict_at(new, "status").get("certificate")
    if old_cert and new_cert != old_cert:
        errs.append(FieldError.forbidden("status.certificate",
                                         "updates may not modify existing certificate content"))
    if new_cert and not old_cert and not certificates.is_approved(new):
        errs.append(FieldError.invalid("status.certificate", "<certificate>",
                                       "certificate may only be set on an approved request"))
    return errs
