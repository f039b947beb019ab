"""ResourceQuota and LimitRange end to end: a real ``kyb server`` with two fake nodes,
driven by the real kubectl — the teams scenario's quotas refuse what exceeds them with
upstream's message, charge what they admit, show it in ``kubectl describe quota`` and
release it when a pod goes; a LimitRange gives defaults and refuses a too-large limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.cluster import SCENARIOS, Cluster, fake_node_cluster
from tests.e2e.test_pods import wait_for

pytestmark = pytest.mark.slow

NS = "team-research"


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server without a real node and with two fake ones."""
    yield from fake_node_cluster(tmp_path_factory.mktemp("quota"), 2)


def pod_yaml(name: str, ns: str, cpu: str | None, *, limit_cpu: str | None = None) -> str:
    lines = [f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
             "spec:\n  containers:\n  - name: c\n    image: busybox\n"]
    if cpu is not None or limit_cpu is not None:
        lines.append("    resources:\n")
        if cpu is not None:
            lines.append(f"      requests:\n        cpu: \"{cpu}\"\n        memory: 128Mi\n")
        if limit_cpu is not None:
            lines.append(f"      limits:\n        cpu: \"{limit_cpu}\"\n")
    return "".join(lines)


def used(c: Cluster, resource: str) -> str:
    q = c.kubectl_json("get", "resourcequota", "compute", "-n", NS)
    return str(((q.get("status") or {}).get("used") or {}).get(resource, ""))


def test_quota_refuses_charges_and_releases(fake_cluster: Cluster) -> None:
    c = fake_cluster
    c.kubectl("apply", "-f", str(SCENARIOS / "teams.yaml"))
    wait_for("the quota's status", lambda: used(c, "requests.cpu") == "0")
    big = c.kubectl("apply", "-f", "-", input=pod_yaml("big", NS, "3"), check=False)
    assert big.returncode != 0
    assert ('pods "big" is forbidden: exceeded quota: compute, requested: requests.cpu=3, '
            "used: requests.cpu=0, limited: requests.cpu=2") in big.stderr
    bare = c.kubectl("apply", "-f", "-", input=pod_yaml("bare", NS, None), check=False)
    assert "failed quota: compute: must specify requests.cpu for: c; requests.memory for: c" \
        in bare.stderr
    for name in ("one", "two"):
        c.kubectl("apply", "-f", "-", input=pod_yaml(name, NS, "1"))
    assert used(c, "requests.cpu") == "2"
    assert used(c, "pods") == "2"
    third = c.kubectl("apply", "-f", "-", input=pod_yaml("three", NS, "1"), check=False)
    assert third.returncode != 0
    assert ("exceeded quota: compute, requested: requests.cpu=1, used: requests.cpu=2, "
            "limited: requests.cpu=2") in third.stderr
    described = c.kubectl("describe", "quota", "compute", "-n", NS).stdout
    assert "Used" in described and "requests.cpu" in described and "256Mi" in described
    c.kubectl("delete", "pod", "one", "-n", NS, "--grace-period=0", "--force")
    wait_for("usage released", lambda: used(c, "requests.cpu") == "1")
    c.kubectl("apply", "-f", "-", input=pod_yaml("three", NS, "1"))
    assert used(c, "requests.cpu") == "2"


def test_limitrange_defaults_and_max(fake_cluster: Cluster) -> None:
    c = fake_cluster
    ns = "limits"
    c.kubectl("create", "namespace", ns)
    c.kubectl("apply", "-f", "-", input=f"""apiVersion: v1
kind: LimitRange
metadata:
  name: defaults
  namespace: {ns}
spec:
  limits:
  - type: Container
    max:
      cpu: "2"
    default:
      cpu: 500m
      memory: 256Mi
    defaultRequest:
      cpu: 250m
      memory: 128Mi
""")
    c.kubectl("apply", "-f", "-", input=pod_yaml("plain", ns, None))
    res = c.kubectl_json("get", "pod", "plain", "-n", ns)["spec"]["containers"][0]["resources"]
    assert res == {"limits": {"cpu": "500m", "memory": "256Mi"},
                   "requests": {"cpu": "250m", "memory": "128Mi"}}
    big = c.kubectl("apply", "-f", "-", input=pod_yaml("big", ns, "1", limit_cpu="4"),
                    check=False)
    assert big.returncode != 0
    assert 'pods "big" is forbidden: maximum cpu usage per Container is 2, but limit is 4' \
        in big.stderr
