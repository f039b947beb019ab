"""Pod networking: one network namespace per pod, wired by the CNI ``bridge``,
``host-local`` and ``loopback`` plugins (Debian's containernetworking-plugins).

The node's pod range is a /24 on a bridge of its own (``kyb`` and the range's address in
hex, e.g. ``kyb0a2a0000``: a bridge holds one IPv4 gateway, so two agents on one machine
need two bridges). The whole pod range (10.42.0.0/16)
and the service range (10.96.0.0/12) also get ``unreachable`` routes on the host, so that
no packet for them can ever leave through the default gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


async def run_process(argv: list[str], *, env: dict[str, str] | None = None,
                      stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a short command on a worker thread: Python's subprocess starts it with vfork,
    which costs the (big) agent process far less than the event loop's fork, and the loop
    keeps serving meanwhile."""
    return await asyncio.to_thread(subprocess.run, argv, input=stdin, capture_output=True,
                                   env=env, check=False)

CNI_PATHS = ("/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni")
BRIDGE_PREFIX = "kyb"


def bridge_name(pod_cidr: str) -> str:
    """The bridge of a node's pod range (at most 15 characters, as Linux allows)."""
    net = ipaddress.ip_network(pod_cidr, strict=False)
    return f"{BRIDGE_PREFIX}{int(net.network_address):08x}"
NETNS_DIR = Path("/var/run/netns")


class NetworkError(Exception):
    pass


async def _run(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
               check: bool = True) -> tuple[int, bytes, bytes]:
    proc = await run_process(list(args), env=env, stdin=stdin)
    out, err = proc.stdout, proc.stderr
    code = proc.returncode
    if check and code != 0:
        raise NetworkError(f"{' '.join(args)}: {err.decode(errors='replace').strip() or out!r}")
    return code, out, err


def netns_name(pod_uid: str) -> str:
    return f"kyb-{pod_uid}"


def netns_path(pod_uid: str) -> Path:
    return NETNS_DIR / netns_name(pod_uid)


class PodNetwork:
    def __init__(self, data_dir: Path, pod_cidr: str, *, cluster_cidr: str = "10.42.0.0/16",
                 service_cidr: str = "10.96.0.0/12") -> None:
        self.data_dir = data_dir
        self.pod_cidr = ipaddress.ip_network(pod_cidr)
        self.bridge = bridge_name(pod_cidr)
        self.cluster_cidr = cluster_cidr
        self.service_cidr = service_cidr
        self.cni_dir = next((p for p in CNI_PATHS if Path(p, "bridge").exists()), "")
        self.gateway = str(next(self.pod_cidr.hosts()))
        self._ready = False

    def available(self) -> bool:
        return bool(self.cni_dir) and os.geteuid() == 0

    def _bridge_conf(self) -> bytes:
        return json.dumps({
            "cniVersion": "1.0.0", "name": "kybernetes", "type": "bridge", "bridge": self.bridge,
            "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": str(self.pod_cidr),
                                                         "gateway": self.gateway}]],
                     "dataDir": str(self.data_dir / "ipam"),
                     "routes": [{"dst": "0.0.0.0/0"}]},
        }).encode()

    def _loopback_conf(self) -> bytes:
        return json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}).encode()

    async def ensure_host_routes(self) -> None:
        """Keep the pod and service ranges on this machine (unreachable beyond it)."""
        if self._ready:
            return
        for cidr in (self.cluster_cidr, self.service_cidr):
            await _run("ip", "route", "replace", "unreachable", cidr, check=False)
        self._ready = True

    def _env(self, command: str, pod_uid: str, ifname: str) -> dict[str, str]:
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": pod_uid,
                "CNI_NETNS": str(netns_path(pod_uid)), "CNI_IFNAME": ifname,
                "CNI_PATH": self.cni_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    async def setup(self, pod_uid: str) -> str:
        """Create the pod's network namespace and address; returns its IP (idempotent)."""
        if not self.available():
            raise NetworkError("pod networking needs root and the CNI plugins "
                               "(Debian package containernetworking-plugins)")
        await self.ensure_host_routes()
        existing = await self.address(pod_uid)
        if existing:
            return existing
        if not netns_path(pod_uid).exists():
            await _run("ip", "netns", "add", netns_name(pod_uid))
        await _run(f"{self.cni_dir}/loopback", env=self._env("ADD", pod_uid, "lo"),
                   stdin=self._loopback_conf())
        _, out, _ = await _run(f"{self.cni_dir}/bridge", env=self._env("ADD", pod_uid, "eth0"),
                               stdin=self._bridge_conf())
        result = json.loads(out)
        ips = result.get("ips") or []
        if not ips:
            raise NetworkError(f"CNI gave pod {pod_uid} no address: {result}")
        return str(ips[0]["address"]).split("/")[0]

    async def address(self, pod_uid: str) -> str:
        """The pod's IP if its namespace is already wired (after an agent restart)."""
        if not netns_path(pod_uid).exists():
            return ""
        code, out, _ = await _run("ip", "-n", netns_name(pod_uid), "-4", "-o", "addr", "show",
                                  "eth0", check=False)
        if code != 0:
            return ""
        for word in out.decode().split():
            if "/" in word and word[0].isdigit():
                return word.split("/")[0]
        return ""

    async def teardown(self, pod_uid: str) -> None:
        """Release the pod's address and remove its namespace (idempotent)."""
        if not self.cni_dir:
            return
        if netns_path(pod_uid).exists():
            await _run(f"{self.cni_dir}/bridge", env=self._env("DEL", pod_uid, "eth0"),
                       stdin=self._bridge_conf(), check=False)
            await _run("ip", "netns", "del", netns_name(pod_uid), check=False)
        else:
            # the namespace is gone but host-local may still hold the address
            env = self._env("DEL", pod_uid, "eth0")
            env["CNI_NETNS"] = ""
            await _run(f"{self.cni_dir}/bridge", env=env, stdin=self._bridge_conf(),
                       check=False)

    def allocated_pods(self) -> set[str]:
        """Pod uids holding an address from this node's range (host-local's records:
        one file per address, naming the container)."""
        out = set()
        root = self.data_dir / "ipam"
        if root.exists():
            for f in root.rglob("*"):
                if f.is_file() and f.name[:1].isdigit():
                    with contextlib.suppress(OSError):
                        out.add(f.read_text(errors="ignore").split("\n", 1)[0].strip())
        return out

    def known_pods(self) -> list[str]:
        """Pod uids with a network namespace on this node."""
        if not NETNS_DIR.exists():
            return []
        return [p.name[4:] for p in NETNS_DIR.iterdir() if p.name.startswith("kyb-")]
