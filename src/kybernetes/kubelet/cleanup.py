"""``kyb killall``: stop every pod a node agent started and remove what they hold on the
machine (processes, network namespaces, addresses, cgroups, mounts, the NetworkPolicy
table), as k3s-killall does.
The API's record of the pods is left alone; a restarted agent starts them again."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from kybernetes.kubelet.cgroups import Cgroups
from kybernetes.kubelet.netpol import remove_recorded_table, remove_table
from kybernetes.kubelet.netpol_rules import table_name
from kybernetes.kubelet.network import (
    POOL_PREFIX,
    ipam_records,
    netns_name,
    netns_path,
    pooled_namespaces,
    remove_netns,
)
from kybernetes.kubelet.routes import remove_all_routes
from kybernetes.kubelet.runtime import pod_uids


def _pids(run_dir: Path) -> list[int]:
    try:
        return [int(x) for x in (run_dir / "pid").read_text().split()]
    except (OSError, ValueError):
        return []


def kill_all(data_dir: Path) -> list[str]:
    """Stop the pods under ``data_dir/pods``; returns the uids cleaned up."""
    pods_dir = data_dir / "pods"
    remove_recorded_table(data_dir)
    uids = sorted(pod_uids(data_dir))
    victims: list[int] = []
    shims: list[int] = []
    for uid in uids:
        for pid_file in (pods_dir / uid / "containers").glob("*/*/pid"):
            pids = _pids(pid_file.parent)
            if len(pids) == 2:
                shims.append(pids[0])
                victims.append(pids[1])  # the container's pid 1: its namespace goes with it
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # the shims record the exits and leave: a cgroup goes only once they have too
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in victims + shims):
        time.sleep(0.05)
    cgroups = Cgroups()
    deleted = 0
    for uid in uids:
        if netns_path(uid).exists():
            deleted += 1
            remove_netns(netns_name(uid))
        cgroups.remove(uid)
        for top in (pods_dir / uid, data_dir / "emptydir" / uid):
            for mount in sorted(top.rglob("*"), reverse=True):
                if mount.is_dir() and os.path.ismount(mount):
                    subprocess.run(["umount", "-l", str(mount)], capture_output=True,
                                   check=False)
    # the pool of namespaces wired ahead, and the addresses host-local handed out
    for cid in pooled_namespaces(data_dir):
        deleted += 1
        remove_netns(netns_name(cid))
    for record, cid in ipam_records(data_dir):
        if cid in uids or cid.startswith(POOL_PREFIX):
            record.unlink(missing_ok=True)
    release_host_network(settle=3.0 if deleted else 0.0)
    if os.path.ismount(pods_dir):  # the pods' state, in memory: gone with them
        subprocess.run(["umount", "-l", str(pods_dir)], capture_output=True, check=False)
    return uids


def remove_masquerade_tables() -> None:
    """The masquerade tables of pod bridges that are gone."""
    from kybernetes.kubelet.network import MASQ_TABLE_PREFIX

    if shutil.which("nft") is None:
        return
    tables = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True,
                            check=False).stdout.split()
    bridges = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"],
                             capture_output=True, text=True, check=False).stdout
    for table in tables:
        if table.startswith(MASQ_TABLE_PREFIX) and \
                f" {table[len(MASQ_TABLE_PREFIX):]}:" not in bridges:
            subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True,
                           check=False)


def release_host_network(settle: float = 0.0) -> None:
    """Remove the pod bridges no pod is attached to, and the local routes once no pod
    network namespace is left. ``settle``: seconds to wait for the veths of namespaces
    just deleted to go (the kernel frees namespaces in the background)."""
    from kybernetes.kubelet.network import BRIDGE_PREFIX, NETNS_DIR

    links = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"],
                           capture_output=True, text=True, check=False).stdout
    for line in links.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0] if ":" in line else ""
        if not name.startswith(BRIDGE_PREFIX) or name.startswith("kyb-"):
            continue
        deadline = time.monotonic() + settle
        while (members := subprocess.run(["ip", "-o", "link", "show", "master", name],
                                         capture_output=True, text=True,
                                         check=False).stdout.strip()) and \
                all("veth" in m for m in members.splitlines()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not members:
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
            remove_table(table_name(name))  # the NetworkPolicies of the bridge's pods
    remove_masquerade_tables()
    if NETNS_DIR.exists() and any(p.name.startswith("kyb-") for p in NETNS_DIR.iterdir()):
        return
    remove_all_routes()  # to other nodes' pods
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
