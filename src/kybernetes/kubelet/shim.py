"""The container shim (``kyb-shim``, C, beside this file): built on first use, then one
per container, outliving agent restarts like conmon does."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("shim") / "kyb-shim.c"


class ShimError(Exception):
    pass


def binary(data_dir: Path) -> Path:
    """The shim binary for this source, compiled into ``data_dir/bin`` if needed."""
    src = SOURCE.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:12]
    out = data_dir / "bin" / f"kyb-shim-{digest}"
    if out.exists():
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ShimError("no C compiler (cc/gcc) to build kyb-shim; install gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    import subprocess

    proc = subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ShimError(f"building kyb-shim failed: {proc.stderr.strip()}")
    os.replace(tmp, out)
    return out


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def unescape(value: str) -> str:
    """The inverse of the spec file's escaping of one field."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


@dataclass
class Spec:
    """What one container is: its program, namespaces, mounts and files."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    log: str = ""
    exit: str = ""
    pidfile: str = ""
    cgroups: list[str] = field(default_factory=list)
    netns: str = ""
    hostname: str = ""
    root: str = ""
    binds: list[tuple[str, str, bool]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    """(target, path) symbolic links, e.g. merged-/usr systems' /bin -> usr/bin."""
    tmpfs: list[tuple[str, str]] = field(default_factory=list)
    dev: bool = True
    proc: bool = True
    sys: bool = True
    workdir: str = ""
    uid: int | None = None
    gid: int | None = None
    groups: list[int] = field(default_factory=list)
    log_max_size: int = 0
    """Bytes after which the log is rotated (0: never), keeping ``log_max_files`` files."""
    log_max_files: int = 5

    def render(self) -> str:
        lines: list[str] = []

        def add(*fields: str) -> None:
            lines.append("\t".join(_esc(f) for f in fields))

        for name in ("log", "exit", "pidfile", "netns", "hostname", "root", "workdir"):
            value = getattr(self, name)
            if value:
                add(name, value)
        if self.log_max_size > 0:
            add("logmax", str(self.log_max_size), str(max(1, self.log_max_files)))
        for cg in self.cgroups:
            add("cgroup", cg)
        for target, path in self.links:
            add("link", target, path)
        for src, dst, ro in self.binds:
            add("bind", src, dst, "ro" if ro else "rw")
        for dst, size in self.tmpfs:
            add("tmpfs", dst, size)
        for flag in ("dev", "proc", "sys"):
            if getattr(self, flag):
                add(flag)
        if self.uid is not None:
            add("uid", str(self.uid))
        if self.gid is not None:
            add("gid", str(self.gid))
        for g in self.groups:
            add("group", str(g))
        for e in self.env:
            add("env", e)
        for a in self.args:
            add("arg", a)
        return "\n".join(lines) + "\n"


async def launch(shim: Path, spec_path: Path) -> int:
    """Start a shim for the spec at ``spec_path``; returns the shim's pid (detached)."""
    import subprocess

    proc = await asyncio.to_thread(subprocess.run, [str(shim), str(spec_path)],
                                   capture_output=True, check=False)
    if proc.returncode != 0:
        raise ShimError(proc.stderr.decode(errors="replace").strip() or
                        f"kyb-shim exited {proc.returncode}")
    return int(proc.stdout.decode().strip())
