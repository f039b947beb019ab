"""Pod networking: one network namespace per pod, wired by the CNI ``bridge``,
``host-local`` and ``loopback`` plugins (Debian's containernetworking-plugins).

The node's pod range is a /24 on a bridge of its own (``kyb`` and the range's address in
hex, e.g. ``kyb0a2a0000``: a bridge holds one IPv4 gateway, so two agents on one machine
need two bridges). The whole pod range (10.42.0.0/16)
also gets an ``unreachable`` route on the host, so that no packet for it can ever leave
through the default gateway (the service range is the service proxy's to route).

Wiring a namespace costs ~30 ms of CPU (three plugin processes; the bridge's kernel work is
most of it), and host-local serializes on its lock: ~60 namespaces a second at best. So the
agent keeps a pool of namespaces wired ahead of time (``kyb-pool-<data dir hash>-<hex>``,
their addresses recorded by host-local under that id) and a new pod claims one: the namespace is bind-mounted
at the pod's name and the address's record is re-keyed to the pod under host-local's lock,
after which the pod's namespace is exactly what the plugins would have made for it (and
``bridge`` DEL releases it as usual). The pool is refilled when the node is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import subprocess
import time
from pathlib import Path

from kybernetes.aio.tasks import spawn
from kybernetes.kubelet.node import MAX_PODS

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
NETWORK_NAME = "kybernetes"
"""The CNI network's name (host-local keeps its records under ``ipam/<name>``)."""


def bridge_name(pod_cidr: str) -> str:
    """The bridge of a node's pod range (at most 15 characters, as Linux allows)."""
    net = ipaddress.ip_network(pod_cidr, strict=False)
    return f"{BRIDGE_PREFIX}{int(net.network_address):08x}"
NETNS_DIR = Path("/var/run/netns")
POOL_PREFIX = "pool-"
"""Ids of wired namespaces no pod holds yet (pod uids never start so)."""
POOL_QUIET_SECONDS = 1.0
"""The pool is refilled once no pod has claimed from it or waited for a network this long."""
MS_BIND, MNT_DETACH = 4096, 2


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


def pool_prefix(data_dir: Path) -> str:
    """The ids of the pooled namespaces of the agent with this data dir (``kyb killall``
    finds them by it, recorded or not)."""
    return f"{POOL_PREFIX}{hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:6]}-"


def pooled_namespaces(data_dir: Path) -> list[str]:
    """Ids of the pooled namespaces on the machine of the agent with this data dir."""
    prefix = pool_prefix(data_dir)
    if not NETNS_DIR.exists():
        return []
    return [p.name[4:] for p in NETNS_DIR.iterdir() if p.name[4:].startswith(prefix)]


def remove_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def ipam_records(data_dir: Path) -> list[tuple[Path, str]]:
    """host-local's records under ``data_dir``: one file per address, named by it, holding
    the container id (then the interface, after ``\\r\\n``)."""
    root = data_dir / "ipam"
    out = []
    if root.exists():
        for f in root.rglob("*"):
            if f.name[:1].isdigit() and f.is_file():
                with contextlib.suppress(OSError):
                    out.append((f, f.read_text(errors="ignore").split("\n", 1)[0].strip()))
    return out


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, loaded once (mount, umount2, setns)."""
    return ctypes.CDLL(None, use_errno=True)


def move_netns(src: Path, dst: Path) -> None:
    """Give a named network namespace another name (a mount point cannot be renamed: bind
    the namespace at the new name, then detach the old one)."""
    c = libc()
    fd = os.open(dst, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    if c.mount(str(src).encode(), str(dst).encode(), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        dst.unlink(missing_ok=True)
        raise OSError(err, f"bind {src} at {dst}: {os.strerror(err)}")
    if c.umount2(str(src).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        log.warning("detach %s: %s", src, os.strerror(err))
    src.unlink(missing_ok=True)


MASQ_TABLE_PREFIX = "kyb-masq-"


def masquerade_rules(bridge: str, pod_cidr: str, cluster_cidr: str) -> str:
    """The ``nft -f`` script of a node's masquerade table: what its pods send to
    addresses outside the cluster's pod range (other hosts, the API servers behind the
    ``kubernetes`` Service) leaves with the node's address, so that the answers find their
    way back; traffic between pods keeps the pods' own addresses (as flannel does)."""
    table = f"ip {MASQ_TABLE_PREFIX}{bridge}"
    return (f"table {table} {{}}\ndelete table {table}\ntable {table} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {pod_cidr} ip daddr != {cluster_cidr} oifname != \"{bridge}\" "
            "masquerade\n  }\n}\n")


class PodNetwork:
    def __init__(self, data_dir: Path, pod_cidr: str, *, cluster_cidr: str = "10.42.0.0/16",
                 pool_size: int = 0) -> None:
        self.data_dir = data_dir
        self.pod_cidr = ipaddress.ip_network(pod_cidr)
        self.bridge = bridge_name(pod_cidr)
        self.cluster_cidr = cluster_cidr
        self.cni_dir = next((p for p in CNI_PATHS if Path(p, "bridge").exists()), "")
        self.gateway = str(next(self.pod_cidr.hosts()))
        self._ready = False
        # never so many that the node's own pods (MAX_PODS) could run out of addresses
        self.pool_size = max(0, min(pool_size, self.pod_cidr.num_addresses - 3 - MAX_PODS))
        self.pool_prefix = pool_prefix(data_dir)
        self.pool: list[tuple[str, str]] = []
        """Wired namespaces no pod holds: (pool id, address), oldest first."""
        self._pool_low = asyncio.Event()
        self._last_demand = 0.0
        self._pool_task: asyncio.Task[None] | None = None

    def available(self) -> bool:
        return bool(self.cni_dir) and os.geteuid() == 0

    def _bridge_conf(self) -> bytes:
        return json.dumps({
            "cniVersion": "1.0.0", "name": NETWORK_NAME, "type": "bridge", "bridge": self.bridge,
            "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": str(self.pod_cidr),
                                                         "gateway": self.gateway}]],
                     "dataDir": str(self.data_dir / "ipam"),
                     "routes": [{"dst": "0.0.0.0/0"}]},
        }).encode()

    def _loopback_conf(self) -> bytes:
        return json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}).encode()

    async def ensure_host_routes(self) -> None:
        """Keep the pod range on this machine (unreachable beyond it, but for the routes
        to other nodes' ranges; the service range is the service proxy's), and
        masquerade what pods send beyond the cluster's pod range."""
        if self._ready:
            return
        await _run("ip", "route", "replace", "unreachable", self.cluster_cidr, check=False)
        try:
            code, _, err = await _run("nft", "-f", "-", stdin=masquerade_rules(
                self.bridge, str(self.pod_cidr), self.cluster_cidr).encode(), check=False)
            problem = err.decode(errors="replace").strip() if code != 0 else ""
        except OSError as e:  # no nft here
            problem = str(e)
        if problem:
            log.warning("pods' traffic beyond the cluster is not masqueraded: %s", problem)
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
        return await self._wire(pod_uid)

    async def _wire(self, pod_uid: str) -> str:
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
        """Pod uids holding an address from this node's range."""
        return {cid for _, cid in ipam_records(self.data_dir)
                if not cid.startswith(POOL_PREFIX)}

    def known_pods(self) -> list[str]:
        """Pod uids with a network namespace on this node."""
        if not NETNS_DIR.exists():
            return []
        return [p.name[4:] for p in NETNS_DIR.iterdir()
                if p.name.startswith("kyb-") and not p.name[4:].startswith(POOL_PREFIX)]

    # -- the pool of wired namespaces -----------------------------------------------------

    def claim(self, pod_uid: str) -> str:
        """A wired namespace from the pool, now the pod's; its address ("" if the pool is
        empty)."""
        # a pod wants a network: refill only once such demand has stopped for a while
        # (refilling competes with the pods for the CPU)
        self._last_demand = time.monotonic()
        self._pool_low.set()
        if netns_path(pod_uid).exists():
            return ""  # the pod's own (after a restart): set up finds its address
        while self.pool:
            cid, ip = self.pool.pop(0)
            try:
                self._rekey(ip, cid, pod_uid)
            except OSError as e:
                log.warning("pooled network namespace %s: %s", cid, e)
                spawn(self.teardown(cid), name=f"netns-pool-drop:{cid}")
                continue
            try:
                move_netns(netns_path(cid), netns_path(pod_uid))
            except OSError as e:
                log.warning("pooled network namespace %s: %s", cid, e)
                with contextlib.suppress(OSError):
                    self._rekey(ip, pod_uid, cid)
                spawn(self.teardown(cid), name=f"netns-pool-drop:{cid}")
                continue
            return ip
        return ""

    def _rekey(self, ip: str, old: str, new: str) -> None:
        """Make host-local's record of ``ip`` name ``new`` instead of ``old`` (under its
        lock, so no plugin reads it half-written)."""
        net_dir = self.data_dir / "ipam" / NETWORK_NAME
        record = net_dir / ip
        with open(net_dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            content = record.read_bytes()
            head, sep, rest = content.partition(b"\r\n")
            if head.strip() != old.encode():
                raise OSError(f"the record of {ip} names {head!r}, not {old}")
            tmp = net_dir / f".{ip}.claim"
            tmp.write_bytes(new.encode() + sep + rest)
            os.replace(tmp, record)

    def adopt_pool(self) -> None:
        """Take back the pool a previous run of this agent wired (by host-local's records
        in its data dir); records whose namespace is gone are released."""
        recorded = set()
        for record, cid in ipam_records(self.data_dir):
            if not cid.startswith(self.pool_prefix):
                continue
            recorded.add(cid)
            if netns_path(cid).exists():
                self.pool.append((cid, record.name))
            else:
                record.unlink(missing_ok=True)
        for cid in pooled_namespaces(self.data_dir):
            if cid not in recorded:  # wiring was cut short
                remove_netns(netns_name(cid))

    def start_pool(self) -> None:
        """Keep ``pool_size`` namespaces wired, filling when pods have stopped coming."""
        if self.pool_size <= 0 or not self.available():
            return
        self.adopt_pool()
        self._pool_low.set()
        self._pool_task = spawn(self._keep_pool(), name=f"netns-pool:{self.bridge}")

    async def stop_pool(self) -> None:
        """Stop refilling; the pooled namespaces stay for the next run (``kyb killall``
        removes them)."""
        if self._pool_task is not None:
            self._pool_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pool_task
            self._pool_task = None

    async def _keep_pool(self) -> None:
        await self.ensure_host_routes()
        while True:
            await self._pool_low.wait()
            self._pool_low.clear()
            while len(self.pool) < self.pool_size:
                quiet = time.monotonic() - self._last_demand
                if quiet < POOL_QUIET_SECONDS:
                    await asyncio.sleep(max(0.1, POOL_QUIET_SECONDS - quiet))
                    continue
                cid = self.pool_prefix + secrets.token_hex(6)
                wiring = asyncio.ensure_future(self._wire(cid))
                try:
                    ip = await asyncio.shield(wiring)
                except asyncio.CancelledError:
                    # stopping: let the plugins finish, then undo what they made
                    with contextlib.suppress(Exception):
                        await wiring
                    await self.teardown(cid)
                    raise
                except NetworkError as e:
                    log.warning("wiring a pooled network namespace: %s", e)
                    await self.teardown(cid)
                    await asyncio.sleep(5)
                    continue
                self.pool.append((cid, ip))
