"""Defaults of pod specs, shared by Pods and every pod template (``SetDefaults_PodSpec``).

    default_pod_template(deploy["spec"].setdefault("template", {}))

Pod-only defaults (requests from limits, ``enableServiceLinks``) are in :func:`default_pod`;
upstream applies them to Pods but not to templates.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

from kybernetes.api import quantity
from kybernetes.api.validation.resources import parse_with_format
from kybernetes.api.validation.volumes import SOURCE_FIELDS

Obj = dict[str, Any]

DEFAULT_TERMINATION_GRACE_PERIOD = 30
DEFAULT_SCHEDULER = "default-scheduler"
FILE_MODE_0644 = 0o644

# Declarative (+default=) values of legacy volume sources, also used by PersistentVolumes.
VOLUME_SOURCE_DEFAULTS: dict[str, Obj] = {
    "iscsi": {"iscsiInterface": "default"},
    "rbd": {"pool": "rbd", "user": "admin", "keyring": "/etc/ceph/keyring"},
    "azureDisk": {"cachingMode": "ReadWrite", "fsType": "ext4", "readOnly": False,
                  "kind": "Shared"},
    "scaleIO": {"storageMode": "ThinProvisioned", "fsType": "xfs"},
}
_PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
                   "failureThreshold": 3}
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(f"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"\w[\w.-]{0,127}")


def image_tag(image: str) -> str | None:
    """The tag of an image reference: ``latest`` when none is given, ``""`` for a digest alone,
    ``None`` when the reference does not parse (as upstream's ``ParseImageName``)."""
    name, _, digest = image.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        return None
    first, slash, rest = name.partition("/")
    registry = slash and ("." in first or ":" in first or first == "localhost")
    path = rest if registry else name
    tag = ""
    if ":" in path:
        path, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            return None
    if not _PATH.fullmatch(path):
        return None
    if tag:
        return tag
    return "" if digest else "latest"


def image_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` (or no tag), ``IfNotPresent`` otherwise."""
    return "Always" if image_tag(image) == "latest" else "IfNotPresent"


def round_up_to_milli(value: Any) -> Any:
    """``SetDefaults_ResourceList``: quantities finer than 1m are rounded up to 1m."""
    parsed = parse_with_format(value)
    if parsed is None:
        return value
    v, fmt = parsed
    milli = v * 1000
    if milli.denominator == 1:
        return value
    return quantity.format_quantity(Fraction(math.ceil(milli), 1000), fmt)


def _default_resource_list(resources: Any) -> None:
    if not isinstance(resources, dict):
        return
    for field in ("limits", "requests"):
        values = resources.get(field)
        if isinstance(values, dict):
            for k, v in values.items():
                values[k] = round_up_to_milli(v)


def _default_handler(handler: Any) -> None:
    if not isinstance(handler, dict):
        return
    http = handler.get("httpGet")
    if isinstance(http, dict):
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")
    grpc = handler.get("grpc")
    if isinstance(grpc, dict):
        grpc.setdefault("service", "")


def default_container(c: Obj) -> None:
    """``SetDefaults_Container`` and the defaults of everything inside a container."""
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = image_pull_policy(str(c.get("image", "")))
    if not c.get("terminationMessagePath"):
        c["terminationMessagePath"] = "/dev/termination-log"
    if not c.get("terminationMessagePolicy"):
        c["terminationMessagePolicy"] = "File"
    for port in c.get("ports") or []:
        if isinstance(port, dict) and not port.get("protocol"):
            port["protocol"] = "TCP"
    for var in c.get("env") or []:
        field_ref = var.get("valueFrom", {}).get("fieldRef") if isinstance(var, dict) else None
        if isinstance(field_ref, dict) and not field_ref.get("apiVersion"):
            field_ref["apiVersion"] = "v1"
    _default_resource_list(c.get("resources"))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if isinstance(p, dict):
            for k, v in _PROBE_DEFAULTS.items():
                if not p.get(k):
                    p[k] = v
            _default_handler(p)
    lifecycle = c.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            _default_handler(lifecycle.get(hook))


def _default_field_refs(items: Any) -> None:
    for item in items or []:
        ref = item.get("fieldRef") if isinstance(item, dict) else None
        if isinstance(ref, dict) and not ref.get("apiVersion"):
            ref["apiVersion"] = "v1"


def default_volume_sources(obj: Obj) -> None:
    """Defaults inside volume sources (pod volumes and PersistentVolume specs)."""
    for source, values in VOLUME_SOURCE_DEFAULTS.items():
        if isinstance(obj.get(source), dict):
            for k, v in values.items():
                obj[source].setdefault(k, v)
    host_path = obj.get("hostPath")
    if isinstance(host_path, dict):
        host_path.setdefault("type", "")


def default_volume(vol: Obj) -> None:
    if not any(k in vol for k in SOURCE_FIELDS):
        vol["emptyDir"] = {}
    for source in ("configMap", "secret", "downwardAPI", "projected"):
        if isinstance(vol.get(source), dict):
            vol[source].setdefault("defaultMode", FILE_MODE_0644)
    _default_field_refs((vol.get("downwardAPI") or {}).get("items"))
    for src in (vol.get("projected") or {}).get("sources") or []:
        if not isinstance(src, dict):
            continue
        _default_field_refs((src.get("downwardAPI") or {}).get("items"))
        token = src.get("serviceAccountToken")
        if isinstance(token, dict):
            token.setdefault("expirationSeconds", 3600)
    default_volume_sources(vol)
    claim = ((vol.get("ephemeral") or {}).get("volumeClaimTemplate") or {}).get("spec")
    if isinstance(claim, dict):
        default_pvc_spec(claim)


def default_pvc_spec(spec: Obj) -> None:
    spec.setdefault("volumeMode", "Filesystem")


def default_pod_spec(spec: Obj) -> None:
    if not spec.get("dnsPolicy"):
        spec["dnsPolicy"] = "ClusterFirst"
    if not spec.get("restartPolicy"):
        spec["restartPolicy"] = "Always"
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = DEFAULT_TERMINATION_GRACE_PERIOD
    if not spec.get("schedulerName"):
        spec["schedulerName"] = DEFAULT_SCHEDULER
    for vol in spec.get("volumes") or []:
        if isinstance(vol, dict):
            default_volume(vol)
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            if isinstance(c, dict):
                default_container(c)
    if isinstance(spec.get("overhead"), dict):
        _default_resource_list({"limits": spec["overhead"]})


def default_pod_template(template: Any) -> None:
    if not isinstance(template, dict):
        return
    spec = template.get("spec")
    if isinstance(spec, dict):
        default_pod_spec(spec)


def default_pod(pod: Obj) -> None:
    """``SetDefaults_Pod`` on top of the pod spec defaults."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return
    default_pod_spec(spec)
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            resources = c.get("resources") if isinstance(c, dict) else None
            if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
                requests = resources.setdefault("requests", {})
                for k, v in resources["limits"].items():
                    requests.setdefault(k, v)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    if spec.get("hostNetwork"):
        for field in ("containers", "initContainers"):
            for c in spec.get(field) or []:
                for port in (c.get("ports") or []) if isinstance(c, dict) else []:
                    if isinstance(port, dict) and not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort", 0)
