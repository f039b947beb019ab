"""``kyb killall``: stop every pod a node agent started and remove what they hold on the
machine (processes, network namespaces, addresses, cgroups, mounts), as k3s-killall does.
The API's record of the pods is left alone; a restarted agent starts them again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from kybernetes.kubelet.cgroups import Cgroups
from kybernetes.kubelet.network import netns_name, netns_path


def _pids(run_dir: Path) -> list[int]:
    try:
        return [int(x) for x in (run_dir / "pid").read_text().split()]
    except (OSError, ValueError):
        return []


def kill_all(data_dir: Path) -> list[str]:
    """Stop the pods under ``data_dir/pods``; returns the uids cleaned up."""
    pods_dir = data_dir / "pods"
    if not pods_dir.exists():
        return []
    uids = [p.name for p in pods_dir.iterdir() if p.is_dir()]
    victims: list[int] = []
    for uid in uids:
        for pid_file in (pods_dir / uid / "containers").glob("*/*/pid"):
            pids = _pids(pid_file.parent)
            if len(pids) == 2:
                victims.append(pids[1])  # the container's pid 1: its namespace goes with it
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in victims):
        time.sleep(0.05)
    cgroups = Cgroups()
    for uid in uids:
        if netns_path(uid).exists():
            subprocess.run(["ip", "netns", "del", netns_name(uid)], capture_output=True,
                           check=False)
        cgroups.remove(uid)
        for mount in sorted((pods_dir / uid).rglob("*"), reverse=True):
            if mount.is_dir() and os.path.ismount(mount):
                subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
    # the addresses host-local handed out
    ipam = data_dir / "ipam"
    if ipam.exists():
        for f in ipam.rglob("*"):
            if f.is_file() and f.read_text(errors="ignore").strip().split("\n")[0] in uids:
                f.unlink(missing_ok=True)
    release_host_network()
    return uids


def release_host_network() -> None:
    """Remove the pod bridges no pod is attached to, and the local routes once no pod
    network namespace is left."""
    from kybernetes.kubelet.network import BRIDGE_PREFIX, NETNS_DIR

    links = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"],
                           capture_output=True, text=True, check=False).stdout
    for line in links.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0] if ":" in line else ""
        if not name.startswith(BRIDGE_PREFIX) or name.startswith("kyb-"):
            continue
        members = subprocess.run(["ip", "-o", "link", "show", "master", name],
                                 capture_output=True, text=True, check=False).stdout
        if not members.strip():
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    if NETNS_DIR.exists() and any(p.name.startswith("kyb-") for p in NETNS_DIR.iterdir()):
        return
    for cidr in ("10.42.0.0/16", "10.96.0.0/12"):
        subprocess.run(["ip", "route", "del", "unreachable", cidr], capture_output=True,
                       check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
