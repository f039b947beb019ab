"""Containers as processes: each run of a container is a directory with its shim spec,
pid file and exit file, and a log, so that a restarted agent finds them again.

    DATA/pods/<uid>/containers/<name>/<run>/{spec,pid,exit}
    DATA/logs/<uid>/<name>/<run>.log

``DATA/pods`` holds what pods need while they run (these files, /etc files, the files of
configMap, secret, projected and downwardAPI volumes). As kubelet keeps secrets and tokens,
it lives in memory (a tmpfs, mounted by the agent): creating a pod's two dozen files there
costs microseconds, where a disk's allocator can take milliseconds each. Logs and emptyDir
volumes (``DATA/emptydir``) stay on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from kybernetes.kubelet import shim
from kybernetes.kubelet.shim import Spec

log = logging.getLogger(__name__)


_PIDS: dict[str, tuple[int, int]] = {}
"""Run directory -> (shim pid, container pid), as read from its pid file."""


@dataclass
class Run:
    """One start of a container (``number`` counts from 0, the restart count)."""

    dir: Path
    number: int
    log: Path

    def pids(self) -> tuple[int, int] | None:
        key = str(self.dir)
        known = _PIDS.get(key)
        if known is not None:
            return known
        try:
            with open(os.path.join(key, "pid")) as f:
                shim_pid, container_pid = f.read().split()
            known = int(shim_pid), int(container_pid)
        except (OSError, ValueError):
            return None
        if len(_PIDS) >= 8192:
            _PIDS.clear()
        _PIDS[key] = known  # the shim writes it once: read it once
        return known

    def exit(self) -> tuple[int, int, str] | None:
        """(exit code, signal, finished at) once the container has ended."""
        try:
            code, sig, finished = (self.dir / "exit").read_text().split()
            return int(code), int(sig), _rfc3339_seconds(finished)
        except (OSError, ValueError):
            return None

    def spec_values(self, key: str) -> list[str]:
        """The values of ``key`` lines in the run's spec file (``env``, ``cgroup``, ...)."""
        try:
            lines = (self.dir / "spec").read_text().splitlines()
        except OSError:
            return []
        prefix = key + "\t"
        return [shim.unescape(line[len(prefix):]) for line in lines if line.startswith(prefix)]

    def started_at(self) -> float:
        try:
            return (self.dir / "pid").stat().st_mtime
        except OSError:
            return 0.0

    def running(self) -> bool:
        if self.exit() is not None:
            return False
        pids = self.pids()
        if pids is None:
            # just launched: the pid file follows within milliseconds
            return (self.dir / "spec").exists() and time.time() - _mtime(self.dir / "spec") < 5
        return _alive(pids[0]) or _alive(pids[1])

    def lost(self) -> bool:
        """Neither running nor ended properly (its shim died, e.g. with the machine)."""
        return self.pids() is not None and self.exit() is None and not self.running()


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _rfc3339_seconds(stamp: str) -> str:
    # "2024-01-02T03:04:05.123456789Z" -> "2024-01-02T03:04:05Z"
    return stamp.split(".", 1)[0] + "Z" if "." in stamp else stamp


class ContainerRuntime:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._shim: Path | None = None
        self.legacy_logs = False
        """Pods state on disk from before logs moved out: runs may log in their own dir."""

    def shim(self) -> Path:
        if self._shim is None:
            self._shim = shim.binary(self.data_dir)
        return self._shim

    def pod_dir(self, uid: str) -> Path:
        return self.data_dir / "pods" / uid

    def log_dir(self, uid: str) -> Path:
        return self.data_dir / "logs" / uid

    def empty_dir(self, uid: str) -> Path:
        """Where the pod's emptyDir volumes (on the node's disk) are."""
        return self.data_dir / "emptydir" / uid

    def ensure_state_tmpfs(self) -> None:
        """Mount a tmpfs at ``DATA/pods`` (as root; a directory holding pods from before
        is left as it is)."""
        root = self.data_dir / "pods"
        if os.geteuid() != 0 or os.path.ismount(root):
            return
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            # pods of an earlier version: their containers still log beside their state
            self.legacy_logs = True
            return
        import subprocess

        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "kyb-pods", str(root)],
                              capture_output=True, check=False)
        if done.returncode != 0:
            log.warning("pod state stays on disk: mount tmpfs at %s: %s", root,
                        done.stderr.decode(errors="replace").strip())

    def _run(self, uid: str, container: str, number: int) -> Run:
        run_dir = self.pod_dir(uid) / "containers" / container / str(number)
        if self.legacy_logs and (run_dir / "log").exists():
            return Run(run_dir, number, run_dir / "log")
        return Run(run_dir, number, self.log_dir(uid) / container / f"{number}.log")

    def runs(self, uid: str, container: str) -> list[Run]:
        base = self.pod_dir(uid) / "containers" / container
        try:
            names = os.listdir(base)
        except OSError:
            return []
        return sorted((self._run(uid, container, int(n)) for n in names if n.isdigit()),
                      key=lambda r: r.number)

    def current(self, uid: str, container: str) -> Run | None:
        runs = self.runs(uid, container)
        return runs[-1] if runs else None

    async def start(self, uid: str, container: str, spec: Spec) -> Run:
        runs = self.runs(uid, container)
        number = runs[-1].number + 1 if runs else 0
        run = self._run(uid, container, number)
        run_dir = run.dir
        run_dir.mkdir(parents=True, exist_ok=True)
        run.log.parent.mkdir(parents=True, exist_ok=True)
        _remove_log(run.log)  # left by a run before the state was lost (killall, reboot)
        spec.log = str(run.log)
        spec.exit = str(run_dir / "exit")
        spec.pidfile = str(run_dir / "pid")
        if not spec.root:
            spec.root = str(run_dir / "root")
        (run_dir / "spec").write_text(spec.render())
        await shim.launch(self.shim(), run_dir / "spec")
        for _ in range(200):  # the pid file appears as soon as the namespaces exist
            if run.pids() is not None or run.exit() is not None:
                break
            await asyncio.sleep(0.005)
        # keep the two newest runs (current and previous, for `logs --previous`)
        for old in runs[:-1]:
            _remove_tree(old.dir)
            _remove_log(old.log)
        return run

    async def stop(self, run: Run, *, grace: float) -> None:
        """SIGTERM the container's first process, SIGKILL its pid namespace after
        ``grace`` seconds, and wait until it has ended."""
        pids = run.pids()
        if pids is None or run.exit() is not None:
            return
        _, container = pids
        with contextlib.suppress(ProcessLookupError):
            os.kill(container, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, grace)
        while run.running() and time.monotonic() < deadline:  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.05)
        if run.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(container, signal.SIGKILL)
            for _ in range(200):
                if not run.running():
                    break
                await asyncio.sleep(0.025)

    def remove_pod(self, uid: str) -> None:
        for path in (self.pod_dir(uid), self.log_dir(uid), self.empty_dir(uid)):
            _remove_tree(path)

    def known_pods(self) -> list[str]:
        return sorted(pod_uids(self.data_dir))


def pod_uids(data_dir: Path) -> set[str]:
    """The pods with anything left under ``data_dir`` (state, logs or emptyDir volumes)."""
    out: set[str] = set()
    for sub in ("pods", "logs", "emptydir"):
        with contextlib.suppress(OSError):
            out.update(os.listdir(data_dir / sub))
    return out


def _remove_log(log_file: Path) -> None:
    """A run's log and its rotated files (``N.log.1``, ...)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(log_file.parent):
            if name == log_file.name or name.startswith(log_file.name + "."):
                os.unlink(log_file.parent / name)


def _remove_tree(path: Path) -> None:
    import shutil

    prefix = str(path)
    for key in [k for k in _PIDS if k == prefix or k.startswith(prefix + "/")]:
        del _PIDS[key]

    # a root that is still a mount point (should not happen) must not be walked into
    for p in sorted(path.rglob("root"), reverse=True):
        if os.path.ismount(p):
            os.system(f"umount -l {p} 2>/dev/null")
    shutil.rmtree(path, ignore_errors=True)
