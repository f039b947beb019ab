"""Defaults of the ``apps`` kinds (``pkg/apis/apps/v1/defaults.go``)."""

from __future__ import annotations

from typing import Any

from kybernetes.api.defaults.podspec import default_pod_template, default_pvc_spec
from kybernetes.api.strategy import defaulter

Obj = dict[str, Any]

DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    return spec


@defaulter("apps", "Deployment")
def default_deployment(deploy: Obj) -> None:
    spec = _spec(deploy)
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
    spec.setdefault("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)
    default_pod_template(spec.get("template"))


@defaulter("apps", "ReplicaSet")
def default_replica_set(rs: Obj) -> None:
    spec = _spec(rs)
    spec.setdefault("replicas", 1)
    default_pod_template(spec.get("template"))


@defaulter("apps", "StatefulSet")
def default_stateful_set(sts: Obj) -> None:
    spec = _spec(sts)
    if not spec.get("podManagementPolicy"):
        spec["podManagementPolicy"] = "OrderedReady"
    strategy = spec.setdefault("updateStrategy", {})
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
        strategy.setdefault("rollingUpdate", {})
    rolling = strategy.get("rollingUpdate")
    if strategy["type"] == "RollingUpdate" and isinstance(rolling, dict):
        rolling.setdefault("partition", 0)
    retention = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    if not retention.get("whenDeleted"):
        retention["whenDeleted"] = "Retain"
    if not retention.get("whenScaled"):
        retention["whenScaled"] = "Retain"
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
    default_pod_template(spec.get("template"))
    for claim in spec.get("volumeClaimTemplates") or []:
        if isinstance(claim, dict):
            default_pvc_spec(claim.setdefault("spec", {}))
            status = claim.setdefault("status", {})
            if not status.get("phase"):
                status["phase"] = "Pending"


@defaulter("apps", "DaemonSet")
def default_daemon_set(ds: Obj) -> None:
    spec = _spec(ds)
    strategy = spec.setdefault("updateStrategy", {})
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
    default_pod_template(spec.get("template"))
