"""The node's image catalog: what an ``image:`` name means on this machine.

kybernetes runs no container engine: an image names an environment that already exists on
the node. Built in:

- ``python:*`` — the Python environment kybernetes itself runs in (with what ``make
  install`` put there: numpy, torch, ...), ``python`` on its PATH;
- ``busybox*``, ``alpine*``, ``debian*``, ``ubuntu*`` — the host's POSIX shell and utilities.

More can be declared in ``DATA_DIR/images.yaml``::

    my-trainer:
      entrypoint: [/opt/trainer/bin/train]     # ENTRYPOINT; `cmd:` is CMD
      path: /opt/trainer/bin:/usr/bin:/bin
      binds: [/opt/trainer]
      workingDir: /opt/trainer
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
POSIX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Image:
    name: str
    entrypoint: tuple[str, ...] = ()
    """The image's ENTRYPOINT (replaced by a container's ``command``)."""
    cmd: tuple[str, ...] = ()
    """The image's CMD (replaced by ``args``, dropped when ``command`` is given)."""
    path: str = POSIX_PATH
    binds: tuple[str, ...] = ()
    """Host directories made visible (read-only) besides the system ones."""
    workdir: str = "/"
    env: tuple[str, ...] = field(default_factory=tuple)


def _python_image(name: str) -> Image:
    prefix = Path(sys.prefix)
    base = Path(sys.base_prefix)
    bins = [str(prefix / "bin")]
    if base != prefix:
        bins.append(str(base / "bin"))
    binds = tuple(dict.fromkeys(str(p) for p in (prefix, base) if p.exists()))
    # an editable install points into the source tree: keep it importable
    src = Path(__file__).resolve().parents[2]
    extra = (str(src),) if (src / "kybernetes").is_dir() else ()
    return Image(name=name, cmd=("python3",), path=":".join([*bins, POSIX_PATH]),
                 binds=binds + extra, workdir="/",
                 env=("PYTHONUNBUFFERED=1", "LANG=C.UTF-8"))


class ImageError(Exception):
    """The catalog does not know the image (ErrImagePull)."""


class Catalog:
    def __init__(self, data_dir: Path) -> None:
        self.file = data_dir / "images.yaml"
        self._custom: dict[str, Any] | None = None
        self._mtime = 0.0

    def _load(self) -> dict[str, Any]:
        try:
            mtime = self.file.stat().st_mtime
        except OSError:
            return {}
        if self._custom is None or mtime != self._mtime:
            import yaml

            self._custom = yaml.safe_load(self.file.read_text()) or {}
            self._mtime = mtime
        return self._custom

    def resolve(self, image: str) -> Image:
        ref = image.rsplit("@", 1)[0]
        repo = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        short = repo.rsplit("/", 1)[-1]
        custom = self._load()
        for key in (image, ref, repo, short):
            entry = custom.get(key)
            if isinstance(entry, dict):
                return Image(name=image, entrypoint=tuple(entry.get("entrypoint") or ()),
                             cmd=tuple(entry.get("command") or entry.get("cmd") or ()),
                             path=str(entry.get("path") or POSIX_PATH),
                             binds=tuple(entry.get("binds") or ()),
                             workdir=str(entry.get("workingDir") or "/"),
                             env=tuple(f"{k}={v}" for k, v in (entry.get("env") or {}).items()))
        if short in ("python", "python3", "pytorch", "torch"):
            return _python_image(image)
        if short in ("busybox", "alpine", "debian", "ubuntu", "bash", "sh"):
            return Image(name=image, cmd=("sh",))
        raise ImageError(
            f'image "{image}" is not in the image catalog of this node: kybernetes runs '
            f"environments that exist on the node; add an entry for it to {self.file}")
