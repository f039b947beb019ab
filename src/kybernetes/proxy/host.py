"""The service proxy's footprint on the host: its nftables table, the service range's
route and ``route_localnet`` on the pod bridges.

The service range (10.96.0.0/12) is routed to ``kyb-svc``, a bridge with no ports: a
packet for a virtual IP is DNATed to a pod before that route is used, and one for an
address no Service has is rejected by the table (or, were the table gone, would end on
a bridge that leads nowhere), so none can reach the default gateway. When the last
proxy on the machine stops, the route becomes ``unreachable`` while pod namespaces
remain (the node agent's cleanup removes it with the last of them), else it goes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from pathlib import Path

from kybernetes.proxy.rules import TABLE_PREFIX

log = logging.getLogger(__name__)

SERVICE_BRIDGE = "kyb-svc"
NETNS_DIR = Path("/var/run/netns")
_POD_BRIDGE = re.compile(r"^kyb[0-9a-f]{8}$")


def table_name(data_dir: Path) -> str:
    """The nftables table of the proxy whose agent keeps its state in ``data_dir``."""
    return TABLE_PREFIX + hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def available() -> tuple[bool, str]:
    """Whether the kernel data path can be used here, and why not."""
    if os.geteuid() != 0:
        return False, "the service proxy's kernel data path needs root"
    if _run("nft", "--version").returncode != 0:
        return False, "the service proxy needs nft (Debian package nftables)"
    return True, ""


def apply(script: str) -> str:
    """Run an ``nft -f`` script as one transaction; returns nft's error, or ''."""
    proc = _run("nft", "-f", "-", stdin=script)
    return proc.stderr.strip() if proc.returncode else ""


def counters(table: str) -> dict[str, int]:
    """The packets each named counter of ``table`` counted ({} if it cannot be read)."""
    import json

    proc = _run("nft", "-j", "list", "counters", "table", "ip", table)
    if proc.returncode:
        return {}
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return {}
    return {c["counter"]["name"]: int(c["counter"].get("packets", 0))
            for c in doc.get("nftables", []) if "counter" in c}


def tables() -> list[str]:
    """The proxies' tables on this machine."""
    out = _run("nft", "list", "tables", "ip").stdout
    return [line.split()[-1] for line in out.splitlines()
            if line.split()[-1:] and line.split()[-1].startswith(TABLE_PREFIX)]


def ensure_service_route(service_cidr: str) -> None:
    """Route the service range to the port-less ``kyb-svc`` bridge (idempotent)."""
    if not Path("/sys/class/net", SERVICE_BRIDGE).exists():
        _run("ip", "link", "add", SERVICE_BRIDGE, "type", "bridge")
        _run("ip", "link", "set", SERVICE_BRIDGE, "up")
    _run("ip", "route", "replace", service_cidr, "dev", SERVICE_BRIDGE)


def allow_localhost_node_ports() -> None:
    """Let packets from 127.0.0.1 that were DNATed to a pod leave through the pod
    bridges (``route_localnet``): NodePorts answer on localhost, as with kube-proxy's
    iptables mode. The table drops packets for 127.0.0.0/8 arriving from outside."""
    for dev in Path("/sys/class/net").iterdir():
        if _POD_BRIDGE.match(dev.name):
            knob = Path("/proc/sys/net/ipv4/conf", dev.name, "route_localnet")
            try:
                if knob.read_text().strip() != "1":
                    knob.write_text("1")
            except OSError as e:
                log.debug("cannot set %s: %s", knob, e)


USERSPACE_DIR = Path("/run/kybernetes/userspace-proxies")
"""One file per userspace proxy that made the service range local (named after its
table name), so that the last one to stop removes the route."""


def ensure_local_service_range(table: str, service_cidr: str) -> str:
    """Make the service range an address range of this machine (``local`` route in the
    local table) for the userspace proxy's listeners; returns the error, or ''."""
    proc = _run("ip", "route", "replace", "local", service_cidr, "dev", "lo", "table", "local")
    if proc.returncode:
        return proc.stderr.strip()
    USERSPACE_DIR.mkdir(parents=True, exist_ok=True)
    (USERSPACE_DIR / table).touch()
    return ""


def remove_local_service_range(table: str, service_cidr: str) -> None:
    """Forget this proxy's claim on the local service range; the last one removes it."""
    (USERSPACE_DIR / table).unlink(missing_ok=True)
    if USERSPACE_DIR.exists() and any(USERSPACE_DIR.iterdir()):
        return
    _run("ip", "route", "del", "local", service_cidr, "dev", "lo", "table", "local")


def remove(table: str, service_cidr: str) -> None:
    """Delete ``table``; the last proxy's also takes the service route and bridge."""
    _run("nft", "delete", "table", "ip", table)
    if tables():
        return
    pods_left = NETNS_DIR.exists() and any(p.name.startswith("kyb-")
                                           for p in NETNS_DIR.iterdir())
    if pods_left:
        _run("ip", "route", "replace", "unreachable", service_cidr)
    else:
        _run("ip", "route", "del", service_cidr, "dev", SERVICE_BRIDGE)
    _run("ip", "link", "del", SERVICE_BRIDGE)
