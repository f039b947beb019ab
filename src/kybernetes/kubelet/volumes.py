"""Pod volumes on the node: each is a host directory bind-mounted at its mountPath.

configMap, secret, downwardAPI and projected volumes are written the way kubelet's
atomic writer does: the files live in a ``..data`` directory swapped by renaming a
symlink, so a running container sees an update all at once.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kybernetes.api import storage
from kybernetes.kubelet.env import ConfigError, field_value, resource_value

Obj = dict[str, Any]
Getter = Callable[[str, str, str], Awaitable[Obj | None]]

DEFAULT_MODE = 0o644
_PV_COMMON = {"capacity", "accessModes", "claimRef", "persistentVolumeReclaimPolicy",
              "storageClassName", "mountOptions", "volumeMode", "nodeAffinity",
              "volumeAttributesClassName"}


class VolumeError(Exception):
    """A volume cannot be set up yet (FailedMount)."""


_WRITTEN: dict[str, tuple[int, str]] = {}
"""Volume directory -> (digest of the files last made visible there, the ``..data`` link
they are behind): a periodic resync whose sources did not change then costs one readlink
instead of reading every file back."""
_WRITTEN_MAX = 8192


def _digest(files: dict[str, tuple[bytes, int]]) -> int:
    return hash(tuple(sorted((k, v[0], v[1]) for k, v in files.items())))


def write_atomic_dir(target: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Make ``target`` show exactly ``files`` ({relative path: (data, mode)}); True if it
    changed."""
    key, digest = str(target), _digest(files)
    last = _WRITTEN.get(key)
    if last is not None and last[0] == digest:
        with contextlib.suppress(OSError):
            if os.readlink(os.path.join(key, "..data")) == last[1]:
                return False
    if len(_WRITTEN) >= _WRITTEN_MAX:
        _WRITTEN.clear()
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    current = data_link.resolve() if data_link.is_symlink() else None
    if current is not None and current.is_dir():
        same = set(files) == {str(p.relative_to(current)) for p in current.rglob("*")
                              if p.is_file()}
        if same and all((current / k).read_bytes() == v[0] for k, v in files.items()):
            _WRITTEN[key] = (digest, os.readlink(data_link))
            return False
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    new = target / stamp
    new.mkdir()
    for rel, (data, mode) in files.items():
        path = new / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
    tmp_link = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, data_link)
    _WRITTEN[key] = (digest, stamp)
    for rel in {r.split("/", 1)[0] for r in files}:
        link = target / rel
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            link.symlink_to(Path("..data") / rel)
    for entry in target.iterdir():
        name = entry.name
        if entry.is_symlink() and not name.startswith("..") and \
                name not in {r.split("/", 1)[0] for r in files}:
            entry.unlink()
    if current is not None and current.is_dir() and current != new:
        shutil.rmtree(current, ignore_errors=True)
    return True


def _items(data: dict[str, bytes], items: list[Obj] | None, default_mode: int,
           optional: bool, what: str) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    out = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f'configmap references non-existent config key: {key}'
                              if what == "configmap" else f"references non-existent secret "
                              f"key: {key}")
        out[item.get("path") or key] = (data[key], int(item.get("mode") or default_mode))
    return out


class Volumes:
    def __init__(self, pod_dir: Path, get: Getter, *, ca_pem: bytes = b"",
                 token: Callable[[Obj, Obj], Awaitable[str]] | None = None,
                 node_allocatable: dict[str, str] | None = None, node_name: str = "",
                 empty_dir: Path | None = None) -> None:
        self.pod_dir = pod_dir
        self.empty_root = empty_dir or pod_dir / "volumes"
        """emptyDir volumes (on the node's disk, unless their medium is Memory)."""
        self.node_name = node_name
        self.get = get
        self.ca_pem = ca_pem
        self.token = token
        self.node_allocatable = node_allocatable or {}
        self.tmpfs_mounted: set[Path] = set()

    def path(self, name: str) -> Path:
        return self.pod_dir / "volumes" / name

    async def _source_files(self, pod: Obj, src: Obj, kind: str) -> dict[str, tuple[bytes, int]]:
        ns = pod["metadata"].get("namespace", "default")
        default_mode = int(src.get("defaultMode") or DEFAULT_MODE)
        optional = bool(src.get("optional"))
        if kind in ("configMap", "secret"):
            name = src.get("name") or src.get("secretName", "")
            plural = "configmaps" if kind == "configMap" else "secrets"
            obj = await self.get(plural, ns, name)
            if obj is None:
                if optional:
                    return {}
                raise VolumeError(f'{plural[:-1]} "{name}" not found')
            data: dict[str, bytes] = {}
            if kind == "configMap":
                data.update({k: str(v).encode() for k, v in (obj.get("data") or {}).items()})
                data.update({k: base64.b64decode(v)
                             for k, v in (obj.get("binaryData") or {}).items()})
            else:
                data.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
            return _items(data, src.get("items"), default_mode, optional, plural[:-1])
        if kind == "downwardAPI":
            out = {}
            for item in src.get("items") or []:
                try:
                    if "fieldRef" in item:
                        value = field_value(pod, item["fieldRef"].get("fieldPath", ""))
                    else:
                        ref = item.get("resourceFieldRef") or {}
                        container = next((c for c in pod["spec"].get("containers") or []
                                          if c.get("name") == ref.get("containerName")),
                                         (pod["spec"].get("containers") or [{}])[0])
                        value = resource_value(container, ref, self.node_allocatable)
                except ConfigError as e:
                    raise VolumeError(str(e)) from None
                out[item.get("path", "")] = (value.encode(), int(item.get("mode") or
                                                                  default_mode))
            return out
        if kind == "serviceAccountToken":
            if self.token is None:
                raise VolumeError("this node cannot request service-account tokens")
            token = await self.token(pod, src)
            return {src.get("path", "token"): (token.encode(), default_mode)}
        raise VolumeError(f"unsupported projected source {kind}")

    async def setup(self, pod: Obj) -> dict[str, Path]:
        """Create or refresh every volume of the pod; returns {name: host path}."""
        out: dict[str, Path] = {}
        for vol in pod["spec"].get("volumes") or []:
            name = vol.get("name", "")
            target = self.path(name)
            if "emptyDir" in vol:
                target = self.empty_root / name
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, 0o777)
                if (vol["emptyDir"] or {}).get("medium") == "Memory" and \
                        target not in self.tmpfs_mounted and not os.path.ismount(target):
                    size = (vol["emptyDir"] or {}).get("sizeLimit")
                    opts = "mode=1777" + (f",size={_bytes(size)}" if size else "")
                    subprocess.run(  # noqa: ASYNC221 - a quick mount, once per volume
                        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)],
                        check=False, capture_output=True)
                    self.tmpfs_mounted.add(target)
                out[name] = target
            elif "hostPath" in vol:
                hp = vol["hostPath"] or {}
                path = Path(hp.get("path", "/"))
                typ = hp.get("type", "")
                if typ == "DirectoryOrCreate":
                    path.mkdir(parents=True, exist_ok=True)
                elif typ == "FileOrCreate" and not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                elif typ in ("Directory", "File", "Socket", "CharDevice", "BlockDevice") and \
                        not path.exists():
                    raise VolumeError(f"hostPath type check failed: {path} is not a "
                                      f"{typ.lower()}")
                out[name] = path
            elif any(k in vol for k in ("configMap", "secret", "downwardAPI")):
                kind = next(k for k in ("configMap", "secret", "downwardAPI") if k in vol)
                write_atomic_dir(target, await self._source_files(pod, vol[kind] or {}, kind))
                out[name] = target
            elif "projected" in vol:
                proj = vol["projected"] or {}
                files: dict[str, tuple[bytes, int]] = {}
                for source in proj.get("sources") or []:
                    for kind in ("configMap", "secret", "downwardAPI", "serviceAccountToken"):
                        if kind in source:
                            src = dict(source[kind] or {})
                            src.setdefault("defaultMode", proj.get("defaultMode"))
                            files.update(await self._source_files(pod, src, kind))
                write_atomic_dir(target, files)
                out[name] = target
            elif "persistentVolumeClaim" in vol:
                out[name] = await self._claim_path(pod, vol["persistentVolumeClaim"] or {})
            else:
                kinds = [k for k in vol if k != "name"]
                raise VolumeError(f"unsupported volume type {kinds[0] if kinds else '?'}")
        return out

    async def _claim_path(self, pod: Obj, src: Obj) -> Path:
        """The directory of the volume bound to the claim (hostPath or local)."""
        ns = pod["metadata"].get("namespace", "default")
        claim_name = src.get("claimName", "")
        claim = await self.get("persistentvolumeclaims", ns, claim_name)
        if claim is None:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" not found')
        if claim["metadata"].get("deletionTimestamp"):
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" is being deleted')
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if (claim.get("status") or {}).get("phase") != "Bound" or not volume_name:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" is not bound yet')
        volume = await self.get("persistentvolumes", "", volume_name)
        if volume is None:
            raise VolumeError(f'persistentvolume "{volume_name}" not found')
        if not storage.node_allowed(volume, self.node_name):
            raise VolumeError(f'persistentvolume "{volume_name}" has a node affinity that '
                              f'does not allow node "{self.node_name}"')
        spec = volume.get("spec") or {}
        if "hostPath" in spec:
            path = Path((spec["hostPath"] or {}).get("path", ""))
            if (spec["hostPath"] or {}).get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
        elif "local" in spec:
            path = Path((spec["local"] or {}).get("path", ""))
        else:
            kinds = [k for k in spec if k not in _PV_COMMON]
            raise VolumeError(f'persistentvolume "{volume_name}": volume type '
                              f'{kinds[0] if kinds else "?"} is not supported by this node')
        if not path.is_dir():
            raise VolumeError(f'persistentvolume "{volume_name}": path "{path}" does not '
                              "exist on this node")
        return path

    def teardown(self) -> None:
        for target in list(self.tmpfs_mounted):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)
        self.tmpfs_mounted.clear()
        for vol_root in (self.pod_dir / "volumes", self.empty_root):
            if vol_root.exists():
                for entry in vol_root.iterdir():
                    if os.path.ismount(entry):
                        subprocess.run(["umount", "-l", str(entry)], check=False,
                                       capture_output=True)


def _bytes(q: str) -> int:
    from kybernetes.api import quantity

    return quantity.value(q)
