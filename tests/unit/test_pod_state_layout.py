"""Where a pod's files live: state in a tmpfs (as root), logs and emptyDir volumes on disk;
a data dir from before logs moved keeps its running containers' logs where they are."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kybernetes.kubelet.runtime import ContainerRuntime, pod_uids

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@root_only
def test_state_in_a_tmpfs_logs_on_disk(tmp_path: Path) -> None:
    rt = ContainerRuntime(tmp_path)
    rt.ensure_state_tmpfs()
    try:
        assert os.path.ismount(tmp_path / "pods")
        rt.ensure_state_tmpfs()  # idempotent
        run = rt._run("u1", "main", 0)
        assert run.dir == tmp_path / "pods" / "u1" / "containers" / "main" / "0"
        assert run.log == tmp_path / "logs" / "u1" / "main" / "0.log"
        assert rt.empty_dir("u1") == tmp_path / "emptydir" / "u1"
        (tmp_path / "logs" / "u2").mkdir(parents=True)
        run.dir.mkdir(parents=True)
        assert pod_uids(tmp_path) == {"u1", "u2"}  # state or logs: still the node's to clean
        rt.remove_pod("u1")
        rt.remove_pod("u2")
        assert pod_uids(tmp_path) == set()
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "pods")], check=False)


@root_only
def test_pods_from_before_keep_their_logs(tmp_path: Path) -> None:
    old = tmp_path / "pods" / "u1" / "containers" / "main" / "0"
    old.mkdir(parents=True)
    (old / "log").write_text("earlier\n")
    rt = ContainerRuntime(tmp_path)
    rt.ensure_state_tmpfs()
    assert not os.path.ismount(tmp_path / "pods")  # its pods' state stays on disk
    [run] = rt.runs("u1", "main")
    assert run.log == old / "log"
    assert rt._run("u1", "main", 1).log == tmp_path / "logs" / "u1" / "main" / "1.log"
