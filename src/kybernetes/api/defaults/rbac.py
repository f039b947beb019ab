"""Defaults of role bindings: the RBAC API group on role references and subjects."""

from __future__ import annotations

from typing import Any

from kybernetes.api.strategy import defaulter

Obj = dict[str, Any]
GROUP = "rbac.authorization.k8s.io"


def default_binding(binding: Obj) -> None:
    ref = binding.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = GROUP
    for subject in binding.get("subjects") or []:
        if isinstance(subject, dict) and not subject.get("apiGroup") \
                and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = GROUP


defaulter(GROUP, "RoleBinding")(default_binding)
defaulter(GROUP, "ClusterRoleBinding")(default_binding)
