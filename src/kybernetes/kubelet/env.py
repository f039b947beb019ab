"""Container environment: ``env``, ``envFrom``, ``$(VAR)`` expansion, and the variables
Kubernetes injects for Services."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kybernetes.api import quantity

Obj = dict[str, Any]
Getter = Callable[[str, str, str], Awaitable[Obj | None]]
"""(plural, namespace, name) -> object or None (configmaps and secrets)."""

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """The container cannot be configured yet (CreateContainerConfigError)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables replaced, ``$$`` escapes ``$``,
    unknown references kept as written."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, text)


def field_value(pod: Obj, path: str) -> str:
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple = {
        "metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""), "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(p.get("ip", "") for p in status.get("podIPs") or []),
        "status.hostIPs": ",".join(p.get("ip", "") for p in status.get("hostIPs") or []),
    }
    if path in simple:
        return str(simple[path])
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = md.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef path {path!r}")


def resource_value(container: Obj, ref: Obj, node_allocatable: Mapping[str, str]) -> str:
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    res = (container.get("resources") or {}).get(kind) or {}
    value = res.get(name)
    if value is None and kind == "limits":
        value = node_allocatable.get(name, "0")
    if value is None:
        value = "0"
    divisor = quantity.parse(ref.get("divisor") or "1")
    v = quantity.parse(value) / divisor
    import math

    return str(math.ceil(v))


async def container_env(pod: Obj, container: Obj, get: Getter, *,
                        service_env: Mapping[str, str],
                        node_allocatable: Mapping[str, str]) -> dict[str, str]:
    """The container's environment, in Kubernetes' order (services, envFrom, env)."""
    ns = pod["metadata"].get("namespace", "default")
    env: dict[str, str] = {}
    if (pod.get("spec") or {}).get("enableServiceLinks", True) is not False:
        env.update(service_env)
    else:
        env.update({k: v for k, v in service_env.items() if k.startswith("KUBERNETES_")})
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, plural in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            ref = src.get(kind)
            if ref is None:
                continue
            obj = await get(plural, ns, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{plural[:-1]} "{ref.get("name")}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode(errors="replace") \
                    if plural == "secrets" else str(v)
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        src = var["valueFrom"]
        if "fieldRef" in src:
            env[name] = field_value(pod, src["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in src:
            env[name] = resource_value(container, src["resourceFieldRef"], node_allocatable)
        else:
            for kind, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
                ref = src.get(kind)
                if ref is None:
                    continue
                obj = await get(plural, ns, ref.get("name", ""))
                key = ref.get("key", "")
                data = (obj or {}).get("data") or {}
                if obj is None or key not in data:
                    if ref.get("optional"):
                        break
                    what = f'{plural[:-1]} "{ref.get("name")}"'
                    raise ConfigError(f"{what} not found" if obj is None else
                                      f'couldn\'t find key {key} in {plural[:-1].title()} '
                                      f'{ns}/{ref.get("name")}')
                value = data[key]
                env[name] = base64.b64decode(value).decode(errors="replace") \
                    if plural == "secrets" else str(value)
    return env


def service_env(services: list[Obj]) -> dict[str, str]:
    """``FOO_SERVICE_HOST``/``_PORT`` and the Docker-link style variables."""
    env: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP", "")
        if not ip or ip == "None" or spec.get("type") == "ExternalName":
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        ports = spec.get("ports") or []
        if not ports:
            continue
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0].get("port"))
        for p in ports:
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
        first = ports[0]
        proto = first.get("protocol", "TCP")
        env[f"{name}_PORT"] = f"{proto.lower()}://{ip}:{first.get('port')}"
        for p in ports:
            pr = p.get("protocol", "TCP")
            base = f"{name}_PORT_{p.get('port')}_{pr.upper()}"
            env[base] = f"{pr.lower()}://{ip}:{p.get('port')}"
            env[f"{base}_PROTO"] = pr.lower()
            env[f"{base}_PORT"] = str(p.get("port"))
            env[f"{base}_ADDR"] = ip
    return env
