"""The NetworkPolicy enforcer beside the node agent: policies, pods and namespaces,
watched, kept as one nftables table for this node's pods.

    enforcer = NetworkPolicyEnforcer(client, pod_cidr="10.42.0.0/24", data_dir=...)
    await enforcer.start()
    ...
    await enforcer.stop()   # removes the table

Every change that could alter a verdict (a policy, a namespace's labels, a pod's
labels, address or named ports) marks the rules stale; a task then recompiles them
from the informers' caches (:mod:`kybernetes.kubelet.netpol_rules`) and, if they
changed, replaces the table in one ``nft -f`` transaction, coalescing the changes that
arrive meanwhile. Each node judges the connections of its own pods, both ways (a pod's
ingress where it runs, a pod's egress where it runs); peers are chosen from every pod of
the cluster, so the informers list all pods, not this node's only.

The table is named after the node's bridge (``kybernetes_netpol_<hex>``), so that two
agents on one machine keep two; its name is also written to ``DATA_DIR/netpol-table`` for
``kyb killall``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.client import Client, EventHandler, Informer, shared_informer
from kybernetes.kubelet.netpol_rules import (
    PodRules,
    compile_rules,
    pod_info,
    render,
    table_name,
)
from kybernetes.kubelet.network import bridge_name

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COALESCE_SECONDS = 0.05
RETRY_SECONDS = 1.0
START_SECONDS = 10.0
"""How long ``start`` waits for the first rules."""
TABLE_RECORD = "netpol-table"
"""The file in the agent's data dir naming its table (for ``kyb killall``)."""
BRIDGE_NF = Path("/proc/sys/net/bridge")


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def available() -> tuple[bool, str]:
    """Whether policies can be enforced here, and why not."""
    if os.geteuid() != 0:
        return False, "NetworkPolicies are enforced only by a node agent running as root"
    if _run("nft", "--version").returncode != 0:
        return False, "NetworkPolicies need nft (Debian package nftables)"
    return True, ""


def apply(script: str) -> str:
    """Run an ``nft -f`` script as one transaction; returns nft's error, or ''."""
    proc = _run("nft", "-f", "-", stdin=script)
    return proc.stderr.strip() if proc.returncode else ""


def remove_table(table: str) -> None:
    if shutil.which("nft") is not None:  # without nft there is none to remove
        _run("nft", "delete", "table", "inet", table)


def remove_recorded_table(data_dir: Path) -> None:
    """Delete the table the enforcer of the agent with this data dir installed."""
    try:
        table = (data_dir / TABLE_RECORD).read_text().strip()
    except OSError:
        return
    if table:
        remove_table(table)


def bridge_to_inet_hooks(bridge: str) -> str:
    """Make the frames ``bridge`` forwards between its ports (pod to pod on this node)
    pass the ``inet`` hooks, with conntrack (``br_netfilter``: built in, or loaded here);
    returns what is missing, or ''."""
    if not BRIDGE_NF.exists():
        _run("modprobe", "br_netfilter")
    if not BRIDGE_NF.exists():
        return "br_netfilter is not available"
    for name in ("nf_call_iptables", "nf_call_ip6tables"):
        knob = Path("/sys/class/net", bridge, "bridge", name)
        try:
            if knob.exists() and knob.read_text().strip() != "1":
                knob.write_text("1")
        except OSError as e:
            return f"cannot set {knob}: {e}"
    return ""


def verdict_inputs(pod: Obj) -> Any:
    """What of a pod the rules depend on (an update changing none of it is ignored)."""
    info = pod_info(pod)
    return None if info is None else (info, tuple(sorted(info.labels.items())))


class NetworkPolicyEnforcer:
    """Enforces NetworkPolicies for the pods on this node's bridge."""

    def __init__(self, client: Client, *, pod_cidr: str, data_dir: Path,
                 nft: Callable[[str], str] | None = None) -> None:
        """``nft``: runs a script, returns the error or '' (default: the real ``nft``,
        where this machine has it)."""
        self.client = client
        self._nft = nft
        self.pod_cidr = pod_cidr
        self.bridge = bridge_name(pod_cidr)
        self.table = table_name(self.bridge)
        self.data_dir = data_dir
        self.policies: Informer = shared_informer(client, "networking.k8s.io/v1",
                                                  "networkpolicies")
        self.pods: Informer = shared_informer(client, "v1", "pods")
        self.namespaces: Informer = shared_informer(client, "v1", "namespaces")
        self._dirty = asyncio.Event()
        self._handlers: list[tuple[Informer, EventHandler]] = []
        self._task: asyncio.Task[None] | None = None
        self._last: list[PodRules] | None = None
        self._warned = ""
        self._first_sync = asyncio.Event()
        self.syncs = 0
        self.last_sync = 0.0

    async def start(self) -> bool:
        """Watch policies, pods and namespaces and keep the table (returns whether this
        machine can: without, policies are not enforced on this node)."""
        ok, why = (True, "") if self._nft else await asyncio.to_thread(available)
        if not ok:
            log.warning("%s: NetworkPolicies are not enforced on this node", why)
            return False
        mark = self._dirty.set

        def pod_changed(old: Obj, new: Obj) -> None:
            if verdict_inputs(old) != verdict_inputs(new):
                mark()

        def ns_changed(old: Obj, new: Obj) -> None:
            if (old.get("metadata") or {}).get("labels") != \
                    (new.get("metadata") or {}).get("labels"):
                mark()

        for inf, on_update in ((self.policies, lambda _o, _n: mark()),
                               (self.pods, pod_changed), (self.namespaces, ns_changed)):
            self._handlers.append((inf, inf.add_handler(
                on_add=lambda _o: mark(), on_update=on_update, on_delete=lambda _o: mark())))
            inf.start()
        (self.data_dir / TABLE_RECORD).write_text(self.table + "\n")
        self._dirty.set()
        self._task = spawn(self._run(), name=f"netpol:{self.bridge}")
        try:
            # the first rules in place before the agent starts its pods, unless the API
            # is slow to answer (or forbids the lists): the agent does not wait on that
            await asyncio.wait_for(self._first_sync.wait(), START_SECONDS)
        except TimeoutError:
            log.warning("NetworkPolicies: no rules after %.0f s; going on in the background",
                        START_SECONDS)
        return True

    async def _synced(self) -> None:
        for inf in (self.policies, self.pods, self.namespaces):
            await inf.wait_synced()

    async def stop(self) -> None:
        """Stop watching and remove the table."""
        for inf, handler in self._handlers:
            inf.remove_handler(handler)
            await inf.stop()
        self._handlers = []
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None
        if self._nft is not None:
            self._nft(render([], table=self.table, bridge=self.bridge))
        else:
            await asyncio.to_thread(remove_table, self.table)

    async def _run(self) -> None:
        await self._synced()
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._dirty.clear()
            # (on a thread: with thousands of pods it takes a while; the informers replace
            # cached objects, never change them, so the lists are a consistent snapshot)
            rules = await asyncio.to_thread(
                compile_rules, self.policies.list(), self.pods.list(),
                self.namespaces.list(), pod_cidr=self.pod_cidr)
            if rules and self._nft is None:
                # (again each time: a bridge removed with its last pod comes back without)
                self._check_bridge()
            if rules == self._last:
                continue
            script = render(rules, table=self.table, bridge=self.bridge)
            t0 = time.monotonic()
            error = await asyncio.to_thread(self._nft or apply, script)
            if error:
                log.error("cannot install the NetworkPolicy rules: %s", error)
                self._last = None
                await asyncio.sleep(RETRY_SECONDS)
                self._dirty.set()
                continue
            self._last = rules
            self._first_sync.set()
            self.syncs += 1
            self.last_sync = time.time()
            log.debug("NetworkPolicy rules synced: %d isolated pods in %.1f ms", len(rules),
                      (time.monotonic() - t0) * 1000)

    def _check_bridge(self) -> None:
        missing = bridge_to_inet_hooks(self.bridge)
        if missing and missing != self._warned:
            log.warning("%s: NetworkPolicies are not enforced between pods of this node",
                        missing)
        self._warned = missing
