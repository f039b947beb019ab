"""Audit policies (kybernetes.apiserver.audit): which level a request is logged at."""

from __future__ import annotations

from pathlib import Path

import pytest

from kybernetes.apiserver.audit import PolicyError, load_policy

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  users: ["system:kube-scheduler"]
- level: None
  verbs: ["get", "list", "watch"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["pods/log", "configmaps"]
    resourceNames: ["settings"]
  namespaces: ["team"]
- level: Request
  userGroups: ["ml-team"]
- level: None
  nonResourceURLs: ["/healthz*"]
- level: Metadata
"""


def level(rules: list, *, user: str = "alice", groups: tuple[str, ...] = (),
          verb: str = "create", group: str = "", resource: str = "pods", namespace: str = "ns",
          name: str = "", path: str = "", resource_request: bool = True) -> str:
    for r in rules:
        if r.matches(user, groups, verb, group, resource, namespace, name, path,
                     resource_request):
            return str(r.level)
    return "None"


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    rules = load_policy(p)
    assert level(rules, user="system:kube-scheduler") == "None"
    assert level(rules, verb="list") == "None"
    assert level(rules, resource="configmaps", namespace="team", name="settings") == \
        "RequestResponse"
    assert level(rules, resource="configmaps", namespace="team", name="other") == "Metadata"
    assert level(rules, resource="configmaps", namespace="other", name="settings") == \
        "Metadata"
    assert level(rules, groups=("ml-team",)) == "Request"
    assert level(rules, verb="get", path="/healthz/ready", resource_request=False,
                 resource="") == "None"
    assert level(rules, verb="post", path="/metrics", resource_request=False,
                 resource="") == "Metadata"


def test_bad_policies_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Verbose\n")
    with pytest.raises(PolicyError, match=r"rules\[0\].level: Unsupported value: 'Verbose'"):
        load_policy(p)
    p.write_text("kind: ConfigMap\n")
    with pytest.raises(PolicyError, match=r"not an audit\.k8s\.io/v1 Policy"):
        load_policy(p)
