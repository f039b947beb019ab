"""The audit log: who did what to which object, one ``audit.k8s.io/v1`` Event per request
as a JSON line, as kube-apiserver writes with ``--audit-log-path``.

A policy (``--audit-policy-file``, an ``audit.k8s.io/v1`` Policy) picks each request's
level from the first rule that matches its user, groups, verb, resource and namespace:
``None`` (not logged), ``Metadata`` (who, what, when, the answer's code), ``Request``
(also the request's body), ``RequestResponse`` (also the answer's body, up to 1 MiB).
Without a policy every request is logged at ``Metadata``. Secrets and the service
accounts' TokenRequests are never logged above ``Metadata``: their bodies hold
credentials. Only the ``ResponseComplete`` stage is written (a watch's when it ends).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from kybernetes.api.errors import StatusError
from kybernetes.apiserver import codec

if TYPE_CHECKING:
    from kybernetes.apiserver.app import Request

log = logging.getLogger(__name__)
Obj = dict[str, Any]
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
_SECRET_RESOURCES = {("", "secrets"), ("", "serviceaccounts/token")}


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    level: str
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()
    resources: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = ()
    """(group, resources, resourceNames); empty resources: every resource of the group."""
    namespaces: frozenset[str] = frozenset()
    urls: tuple[str, ...] = ()

    def matches(self, user: str, groups: tuple[str, ...], verb: str, group: str,
                resource: str, namespace: str, name: str, path: str,
                resource_request: bool) -> bool:
        if self.users and user not in self.users:
            return False
        if self.groups and not self.groups.intersection(groups):
            return False
        if self.verbs and verb not in self.verbs:
            return False
        if not resource_request:
            if self.resources or self.namespaces:
                return False
            return not self.urls or any(
                u == path or (u.endswith("*") and path.startswith(u[:-1])) for u in self.urls)
        if self.urls:
            return False
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.resources:
            for g, plurals, names in self.resources:
                if g != group:
                    continue
                base = resource.split("/")[0]
                if plurals and not (resource in plurals or base in plurals
                                    or "*" in plurals or f"*/{resource.partition('/')[2]}"
                                    in plurals):
                    continue
                if names and name not in names:
                    continue
                return True
            return False
        return True


def load_policy(path: Path) -> list[Rule]:
    """The rules of an ``audit.k8s.io/v1`` Policy file (YAML or JSON)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PolicyError(f"{path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "Policy" or \
            not str(doc.get("apiVersion", "")).startswith("audit.k8s.io/"):
        raise PolicyError(f"{path}: not an audit.k8s.io/v1 Policy")
    rules = []
    for i, r in enumerate(doc.get("rules") or []):
        level = r.get("level") if isinstance(r, dict) else None
        if level not in LEVELS:
            raise PolicyError(f"{path}: rules[{i}].level: Unsupported value: {level!r}: "
                              f"supported values: {', '.join(LEVELS)}")
        resources = tuple((str(g.get("group", "")), frozenset(g.get("resources") or ()),
                           frozenset(g.get("resourceNames") or ()))
                          for g in r.get("resources") or [])
        rules.append(Rule(level, frozenset(r.get("users") or ()),
                          frozenset(r.get("userGroups") or ()), frozenset(r.get("verbs") or ()),
                          resources, frozenset(r.get("namespaces") or ()),
                          tuple(r.get("nonResourceURLs") or ())))
    return rules


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class AuditLog:
    path: Path
    rules: list[Rule] | None = None
    _file: Any = field(default=None, repr=False)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab", buffering=0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def level(self, req: Request, group: str, resource: str, namespace: str,
              name: str) -> str:
        user = req.user
        username, groups = (user.name, user.groups) if user else ("system:anonymous", ())
        if self.rules is None:
            level = "Metadata"
        else:
            level = "None"
            for rule in self.rules:
                if rule.matches(username, groups, req.verb or req.method.lower(), group,
                                resource, namespace, name, req.path, bool(resource)):
                    level = rule.level
                    break
        if level in ("Request", "RequestResponse") and (group, resource) in _SECRET_RESOURCES:
            level = "Metadata"
        return level

    def record(self, req: Request, code: int, received: datetime, *,
               response: list[bytes] | None = None) -> None:
        """Write the request's Event (if its level is not None); ``response``: the
        answer's body as sent (from :func:`capture_response`)."""
        if self._file is None:
            return
        res = req.resource
        group = res.group if res else ""
        plural = res.plural if res else ""
        resource = f"{plural}/{req.subresource}" if req.subresource else plural
        ns = req.extra.get("namespace", "")
        name = req.extra.get("name", "")
        body = req.extra.get("body")
        obj: Obj | None = None
        if body and res is not None:
            try:  # JSON, YAML or protobuf, as the request sent it
                obj = codec.decode_object(req.header(b"content-type"), body)
            except StatusError:
                obj = None
            if not name and req.method == "POST" and obj is not None and not req.subresource:
                name = str((obj.get("metadata") or {}).get("name") or "")
        level = self.level(req, group, resource, ns, name)
        if level == "None":
            return
        user = req.user
        event: Obj = {
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level,
            "auditID": str(uuid.uuid4()), "stage": "ResponseComplete",
            "requestURI": req.path + ("?" + req.scope["query_string"].decode("latin-1")
                                      if req.scope.get("query_string") else ""),
            "verb": req.verb or req.method.lower(),
            "user": {"username": user.name if user else "system:anonymous",
                     "groups": list(user.groups) if user else ["system:unauthenticated"]},
            "sourceIPs": [req.scope["client"][0]] if req.scope.get("client") else [],
            "userAgent": req.header(b"user-agent"),
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": _stamp(received),
            "stageTimestamp": _stamp(datetime.now(UTC)),
        }
        if user is not None and user.uid:
            event["user"]["uid"] = user.uid
        if req.extra.get("impersonator") is not None:
            imp = req.extra["impersonator"]
            event["impersonatedUser"] = event["user"]
            event["user"] = {"username": imp.name, "groups": list(imp.groups)}
        if res is not None:
            ref: Obj = {"resource": plural, "apiVersion": res.version}
            if group:
                ref["apiGroup"] = group
            if ns:
                ref["namespace"] = ns
            if name:
                ref["name"] = name
            if req.subresource:
                ref["subresource"] = req.subresource
            event["objectRef"] = ref
        if level in ("Request", "RequestResponse") and obj is not None:
            event["requestObject"] = obj
        answer = _json_body(response) if (level == "RequestResponse" or code >= 400) \
            and req.verb != "watch" else None
        if isinstance(answer, dict):
            if code >= 400 and answer.get("kind") == "Status":
                event["responseStatus"] = {k: answer[k] for k in (
                    "metadata", "status", "message", "reason", "details", "code")
                    if k in answer}
            if level == "RequestResponse" and res is not None:
                event["responseObject"] = answer
        try:
            self._file.write(orjson.dumps(event) + b"\n")
        except OSError as e:
            log.error("cannot write the audit log %s: %s", self.path, e)


_MAX_RESPONSE = 1 << 20


def capture_response(send: Any) -> tuple[Any, list[bytes]]:
    """``send`` that also keeps the body it sends (up to 1 MiB: a bigger one, or a
    stream, is not kept whole and is left out of the log)."""
    chunks: list[bytes] = []
    size = 0

    async def capturing(message: dict[str, Any]) -> None:
        nonlocal size
        if message.get("type") == "http.response.body" and size <= _MAX_RESPONSE:
            body = message.get("body", b"")
            size += len(body)
            if size <= _MAX_RESPONSE:
                chunks.append(body)
            else:
                chunks.clear()
        await send(message)

    return capturing, chunks


def _json_body(chunks: list[bytes] | None) -> Any:
    if not chunks:
        return None
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        return None  # protobuf, a table as text, or cut short
