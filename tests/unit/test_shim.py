"""The container shim (C) on its own: a container's pid is published only once its root
is in place, so that nothing entering its namespaces by that pid (exec probes, kubectl
exec) can meet the host's file system."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from kybernetes.kubelet.shim import Spec, binary, launch

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("cc") or shutil.which("gcc")),
    reason="the shim needs root (namespaces, mounts) and a C compiler to build it")

HOST_DIRS = ("/bin", "/sbin", "/lib", "/lib64", "/usr")


def _spec(tmp: Path, n: int) -> Spec:
    root = tmp / f"root{n}"
    root.mkdir()
    # many mounts: the container's set-up takes a while (tens of ms), the window in
    # which a pid published too early would lead into the host's file system
    spec = Spec(args=["sh", "-c", "sleep 30"], log=str(tmp / f"log{n}"),
                exit=str(tmp / f"exit{n}"), pidfile=str(tmp / f"pid{n}"), root=str(root),
                tmpfs=[("/tmp", "0"), *((f"/slow/{i}", "0") for i in range(500))])
    for d in HOST_DIRS:
        if os.path.islink(d):
            spec.links.append((os.readlink(d), d))
        elif os.path.isdir(d):
            spec.binds.append((d, d, True))
    return spec


async def test_the_pid_appears_once_the_container_has_its_root(tmp_path: Path) -> None:
    shim = binary(tmp_path)
    host_tmp = os.stat("/tmp").st_dev
    shims = []
    for n in range(5):
        spec = _spec(tmp_path, n)
        spec_path = tmp_path / f"spec{n}"
        spec_path.write_text(spec.render())
        await launch(shim, spec_path)
        deadline = time.monotonic() + 10
        while not Path(spec.pidfile).exists():
            assert time.monotonic() < deadline, "no pid file"
        shim_pid, container = (int(x) for x in Path(spec.pidfile).read_text().split())
        shims.append(shim_pid)
        try:
            # at once: the container's /tmp is already its own tmpfs, not the host's
            assert os.stat(f"/proc/{container}/root/tmp").st_dev != host_tmp
        finally:
            os.kill(container, signal.SIGKILL)
    deadline = time.monotonic() + 15  # the shims record the exits and leave
    while any(Path(f"/proc/{p}").exists() for p in shims) and \
            time.monotonic() < deadline:  # noqa: ASYNC110 - polling other processes
        await asyncio.sleep(0.05)
