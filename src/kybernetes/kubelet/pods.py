"""Running the pods bound to this node: one worker per pod, level-triggered.

A worker wakes on every change of its pod and on its own timers (probes, back-off,
a periodic resync), compares what runs with what the pod asks for, takes one step
towards it, and writes the pod's status. All state lives in the pod's directory, the
network namespace and the cgroups, so a restarted agent adopts running pods as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339
from kybernetes.client import Client, Informer, shared_informer
from kybernetes.client.events import EventRecorder
from kybernetes.kubelet import env as envmod
from kybernetes.kubelet import images as imagesmod
from kybernetes.kubelet.cgroups import Cgroups
from kybernetes.kubelet.devices import (
    DeviceError,
    DeviceManager,
    discover,
    requested,
    scheduled_devices,
    visible_env,
)
from kybernetes.kubelet.logs import parse_line
from kybernetes.kubelet.network import NetworkError, PodNetwork
from kybernetes.kubelet.probes import ProbeState, run_hook, run_probe
from kybernetes.kubelet.runtime import ContainerRuntime, Run
from kybernetes.kubelet.shim import ShimError, Spec
from kybernetes.kubelet.volumes import VolumeError, Volumes

log = logging.getLogger(__name__)
Obj = dict[str, Any]

RESYNC = 10.0
BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0
"""A container that ran this long without failing starts its back-off afresh."""
OBJECT_CACHE_TTL = 5.0
CLUSTER_DOMAIN = "cluster.local"
STARTING_CONCURRENCY = 4
"""Pods brought up at once: a burst then finishes pod after pod (first come, first
ready) instead of all pods together at the end."""


@dataclass
class ContainerState:
    """What the worker knows of one container beyond its run files."""

    probes: dict[str, ProbeState] = field(default_factory=dict)
    probe_run: int = -1
    """Run number the probes belong to (a restart starts them afresh)."""
    ready: bool = False
    started: bool = False
    next_start: float = 0.0
    waiting: tuple[str, str] | None = None
    """(reason, message) while the container cannot be started."""
    env: list[str] = field(default_factory=list)
    killed_for: str = ""


class PodWorker:
    def __init__(self, mgr: PodManager, uid: str, pod: Obj) -> None:
        self.mgr = mgr
        self.uid = uid
        self.pod = pod
        self.wake = asyncio.Event()
        self.containers: dict[str, ContainerState] = {}
        self.pod_ip = ""
        self.volumes = Volumes(mgr.runtime.pod_dir(uid), mgr.get_object,
                               empty_dir=mgr.runtime.empty_dir(uid),
                               node_allocatable=mgr.node_allocatable, node_name=mgr.node_name,
                               token=mgr.service_account_token)
        self.last_status: Obj | None = None
        self.volume_paths: dict[str, Path] = {}
        """Each volume's directory on the node, as its last set-up found it."""
        self.gone = False
        self.task: asyncio.Task[None] | None = None
        self.events_sent: set[tuple[str, str]] = set()
        self.start_time = ""
        self.rejected: tuple[str, str] | None = None
        """(reason, message) when the node refused the pod (it is then Failed)."""

    # -- helpers --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.pod["metadata"].get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"].get("namespace", ""))

    @property
    def spec(self) -> Obj:
        return self.pod.get("spec") or {}

    def state(self, name: str) -> ContainerState:
        st = self.containers.get(name)
        if st is None:
            st = self.containers[name] = ContainerState()
        return st

    async def event(self, reason: str, message: str, *, typ: str = "Normal",
                    field_path: str = "", once: bool = False) -> None:
        key = (reason, message)
        if once and key in self.events_sent:
            return
        self.events_sent.add(key)
        await self.mgr.event(self.pod, reason, message, typ=typ, field_path=field_path)

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        first = True
        while not self.gone:
            self.wake.clear()
            try:
                if first:
                    first = False
                    self.mgr.starting_now += 1
                    try:
                        async with self.mgr.starting:
                            delay = await self.sync()
                    finally:
                        self.mgr.starting_now -= 1
                else:
                    delay = await self.sync()
            except Exception:
                log.exception("syncing pod %s/%s failed", self.namespace, self.name)
                delay = 2.0
            if self.gone:
                return
            with contextlib.suppress(TimeoutError):
                # not wait_for: on 3.11 it can lose the cancellation of a stopping agent
                async with asyncio.timeout(max(0.05, delay)):
                    await self.wake.wait()

    async def sync(self) -> float:
        """One step towards the pod's spec; returns how long until the next check."""
        pod = self.pod
        if pod["metadata"].get("deletionTimestamp"):
            await self.terminate(float(pod["metadata"].get("deletionGracePeriodSeconds") or 0))
            await self.finish_deletion()
            return RESYNC
        phase = (pod.get("status") or {}).get("phase")
        if self.rejected is not None:
            if not self.all_stopped():
                await self.terminate(0)  # evicted: nothing may keep running
            await self.write_status()
            await self.release_sandbox()
            return RESYNC
        if phase in ("Succeeded", "Failed") and self.all_stopped():
            await self.release_sandbox()
            return RESYNC
        now = time.monotonic()
        next_check = RESYNC
        if not self.start_time:
            self.start_time = (self.pod.get("status") or {}).get("startTime") or \
                rfc3339(time.time())
        deadline = self.spec.get("activeDeadlineSeconds")
        if deadline is not None and phase not in ("Succeeded", "Failed"):
            left = _epoch(self.start_time) + float(deadline) - time.time()
            if left <= 0:
                # as kubelet: the pod fails for good, its containers are stopped
                msg = "Pod was active on the node longer than the specified deadline"
                await self.event("DeadlineExceeded", msg, once=True)
                await self.terminate(self.grace())
                self.rejected = ("DeadlineExceeded", msg)
                await self.write_status()
                await self.release_sandbox()
                return RESYNC
            next_check = min(next_check, left)
        if not await self.ensure_sandbox():
            await self.write_status()
            return 2.0
        # init containers, in order; each must succeed before the next
        init_done = True
        for c in self.spec.get("initContainers") or []:
            run = self.mgr.runtime.current(self.uid, c["name"])
            ended = run.exit() if run else None
            if ended is not None and ended[0] == 0:
                continue
            init_done = False
            if run is not None and run.running():
                self.mgr.watch_exit(run, self.wake)
                break
            if ended is not None and self.spec.get("restartPolicy") == "Never":
                break  # the pod has failed
            delay = await self.maybe_start(c, run, init=True, now=now)
            next_check = min(next_check, delay)
            break
        if init_done:
            for c in self.spec.get("containers") or []:
                run = self.mgr.runtime.current(self.uid, c["name"])
                st = self.state(c["name"])
                if run is not None and run.running():
                    self.mgr.watch_exit(run, self.wake)
                    next_check = min(next_check, await self.check_probes(c, run, now))
                    continue
                delay = await self.maybe_start(c, run, init=False, now=now)
                next_check = min(next_check, delay)
                now_run = self.mgr.runtime.current(self.uid, c["name"])
                fresh = now_run is not None and now_run.running() and \
                    (run is None or now_run.number != run.number)
                if not fresh:
                    st.ready = False
        await self.write_status()
        if self.terminal_phase() in ("Succeeded", "Failed"):
            await self.release_sandbox()
        return next_check

    # -- sandbox --------------------------------------------------------------------------

    async def ensure_sandbox(self) -> bool:
        if self.spec.get("hostNetwork"):
            self.pod_ip = self.mgr.node_address
        elif not self.pod_ip:
            try:
                # a namespace wired ahead if there is one, else one wired now
                self.pod_ip = self.mgr.network.claim(self.uid) or \
                    await self.mgr.network.setup(self.uid)
            except NetworkError as e:
                await self.event("FailedCreatePodSandBox",
                                 f"Failed to create pod sandbox: {e}", typ="Warning", once=True)
                return False
        self.write_etc()
        try:
            self.volume_paths = await self.volumes.setup(self.pod)
        except VolumeError as e:
            await self.event("FailedMount", f"MountVolume.SetUp failed: {e}", typ="Warning",
                             once=True)
            return False
        return True

    def write_etc(self) -> None:
        etc = self.mgr.runtime.pod_dir(self.uid) / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        hostname = self.spec.get("hostname") or self.name
        sub = self.spec.get("subdomain")
        fqdn = f"{hostname}.{sub}.{self.namespace}.svc.{CLUSTER_DOMAIN}" if sub else ""
        if self.spec.get("hostNetwork"):
            hostname = os.uname().nodename
        lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback"]
        if self.pod_ip and not self.spec.get("hostNetwork"):
            lines.append(f"{self.pod_ip}\t{fqdn + chr(9) if fqdn else ''}{hostname}")
        for alias in self.spec.get("hostAliases") or []:
            lines.append(f"{alias.get('ip')}\t{' '.join(alias.get('hostnames') or [])}")
        _write_if_changed(etc / "hosts", "\n".join(lines) + "\n")
        _write_if_changed(etc / "hostname", hostname + "\n")
        _write_if_changed(etc / "resolv.conf", self.mgr.resolv_conf(self.pod))

    async def release_sandbox(self) -> None:
        """A finished pod keeps its logs and status but not its network, cgroups or
        devices."""
        self.mgr.devices.release(self.uid)
        if self.pod_ip and not self.spec.get("hostNetwork"):
            await self.mgr.network.teardown(self.uid)
            self.pod_ip = ""
        self.mgr.cgroups.remove(self.uid)

    # -- containers -----------------------------------------------------------------------

    def restart_allowed(self, run: Run | None, *, init: bool) -> bool:
        if run is None:
            return True
        ended = run.exit()
        policy = self.spec.get("restartPolicy", "Always")
        if ended is None:
            return True  # lost: start again
        if init:
            return ended[0] != 0 and policy != "Never"
        if policy == "Always":
            return True
        if policy == "OnFailure":
            return ended[0] != 0
        return False

    async def maybe_start(self, c: Obj, run: Run | None, *, init: bool, now: float) -> float:
        st = self.state(c["name"])
        if not self.restart_allowed(run, init=init):
            return RESYNC
        if run is not None and run.exit() is not None:
            # back-off before a restart: 10 s doubling to 5 min, reset after 10 min running
            ended = run.exit()
            assert ended is not None
            ran = _epoch(ended[2]) - run.started_at()
            delay = 0.0 if ran >= BACKOFF_RESET else \
                min(BACKOFF_MAX, BACKOFF_START * 2 ** run.number)
            if st.next_start == 0.0:
                st.next_start = now + delay
                if delay:
                    st.waiting = ("CrashLoopBackOff",
                                  f"back-off {_duration(delay)} restarting failed container="
                                  f"{c['name']} pod={self.name}_{self.namespace}({self.uid})")
                    await self.event("BackOff", f"Back-off restarting failed container "
                                     f"{c['name']} in pod {self.name}_{self.namespace}"
                                     f"({self.uid})", typ="Warning",
                                     field_path=self.field_path(c))
            if now < st.next_start:
                return st.next_start - now
        st.next_start = 0.0
        await self.start_container(c, init=init)
        return 0.05

    def field_path(self, c: Obj) -> str:
        kind = "initContainers" if any(i.get("name") == c.get("name")
                                       for i in self.spec.get("initContainers") or []) \
            else "containers"
        return f"spec.{kind}{{{c.get('name')}}}"

    async def start_container(self, c: Obj, *, init: bool) -> None:
        st = self.state(c["name"])
        fp = self.field_path(c)
        try:
            image = self.mgr.images.resolve(c.get("image", ""))
        except imagesmod.ImageError as e:
            first = st.waiting is None or st.waiting[0] != "ErrImagePull"
            st.waiting = ("ErrImagePull" if first else "ImagePullBackOff", str(e))
            await self.event("Failed", f"Failed to pull image \"{c.get('image')}\": {e}",
                             typ="Warning", field_path=fp, once=True)
            return
        await self.event("Pulled", f"Container image \"{c.get('image')}\" already present on "
                         "machine", field_path=fp, once=True)
        try:
            env = await envmod.container_env(
                self.pod, c, self.mgr.get_object, service_env=self.mgr.service_env(self.pod),
                node_allocatable=self.mgr.node_allocatable)
        except envmod.ConfigError as e:
            st.waiting = ("CreateContainerConfigError", str(e))
            await self.event("Failed", f"Error: {e}", typ="Warning", field_path=fp, once=True)
            return
        try:
            scheduled = scheduled_devices(self.pod, c, self.mgr.devices.devices)
            hints: dict[str, str] = {}
            if scheduled is not None:
                gpus, hints = scheduled
            else:
                gpus = self.mgr.devices.assign(self.uid, c["name"], requested(c),
                                               self.mgr.runtime.pod_dir(self.uid))
        except DeviceError as e:
            # as kubelet's admission: the pod is rejected for good, not retried
            self.rejected = ("UnexpectedAdmissionError", f"Pod was rejected: {e}")
            await self.event("UnexpectedAdmissionError", str(e), typ="Warning", once=True)
            return
        env.update(visible_env(gpus))
        env.update(hints)
        env.setdefault("PATH", image.path)
        env.setdefault("HOSTNAME", self.spec.get("hostname") or self.name)
        for item in image.env:
            k, _, v = item.partition("=")
            env.setdefault(k, v)
        # command replaces ENTRYPOINT, args replaces CMD (and command drops CMD)
        if c.get("command"):
            argv = list(c["command"]) + list(c.get("args") or [])
        else:
            argv = list(image.entrypoint) + list(c.get("args") or image.cmd)
        argv = [envmod.expand(a, env) for a in argv]
        if not argv:
            st.waiting = ("CreateContainerError", "no command specified")
            await self.event("Failed", "Error: no command specified", typ="Warning",
                             field_path=fp, once=True)
            return
        spec = Spec(args=argv, env=[f"{k}={v}" for k, v in env.items()],
                    log_max_size=self.mgr.log_max_size, log_max_files=self.mgr.log_max_files)
        spec.hostname = (self.spec.get("hostname") or self.name)[:63]
        if not self.spec.get("hostNetwork"):
            spec.netns = str(self.mgr.network_ns(self.uid))
        else:
            spec.hostname = os.uname().nodename
        for d in imagesmod.SYSTEM_DIRS:
            if Path(d).is_symlink():
                spec.links.append((os.readlink(d), d))
            elif Path(d).exists():
                spec.binds.append((d, d, True))
        for d in image.binds:
            spec.binds.append((d, d, True))
        etc = self.mgr.runtime.pod_dir(self.uid) / "etc"
        for f in ("hosts", "hostname", "resolv.conf"):
            spec.binds.append((str(etc / f), f"/etc/{f}", False))
        vol_paths = {v["name"]: self.volumes.path(v["name"])
                     for v in self.spec.get("volumes") or []}
        for vol in self.spec.get("volumes") or []:
            if "hostPath" in vol:
                vol_paths[vol["name"]] = Path((vol["hostPath"] or {}).get("path", "/"))
        vol_paths.update(self.volume_paths)
        read_only = {v["name"] for v in self.spec.get("volumes") or []
                     if (v.get("persistentVolumeClaim") or {}).get("readOnly")}
        for m in c.get("volumeMounts") or []:
            src = vol_paths.get(m.get("name", ""))
            if src is None:
                continue
            if m.get("name") in read_only:
                m = {**m, "readOnly": True}
            if m.get("subPath"):
                src = src / envmod.expand(m["subPath"], env)
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            spec.binds.append((str(src), m.get("mountPath", "/"), bool(m.get("readOnly"))))
        # the termination message: a file of this run, where the container expects it
        runs = self.mgr.runtime.runs(self.uid, c["name"])
        number = runs[-1].number + 1 if runs else 0
        message = message_file(self.mgr.runtime.pod_dir(self.uid), c["name"], number)
        message.parent.mkdir(parents=True, exist_ok=True)
        message.touch()
        os.chmod(message, 0o666)
        spec.binds.append((str(message), c.get("terminationMessagePath") or
                           "/dev/termination-log", False))
        spec.tmpfs.append(("/tmp", "0"))
        spec.workdir = c.get("workingDir") or image.workdir
        sc = {**(self.spec.get("securityContext") or {}), **(c.get("securityContext") or {})}
        if sc.get("runAsUser") is not None:
            spec.uid = int(sc["runAsUser"])
            spec.gid = int(sc.get("runAsGroup", sc["runAsUser"]))
        elif sc.get("runAsGroup") is not None:
            spec.gid = int(sc["runAsGroup"])
        if sc.get("runAsNonRoot") and not spec.uid:
            st.waiting = ("CreateContainerConfigError",
                          "container has runAsNonRoot and image will run as root")
            return
        groups = list((self.spec.get("securityContext") or {}).get("supplementalGroups") or [])
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        if fs_group is not None:
            groups.append(int(fs_group))
        spec.groups = [int(g) for g in groups]
        spec.cgroups = self.mgr.cgroups.create(self.uid, c["name"],
                                               c.get("resources") or {})
        try:
            run = await self.mgr.runtime.start(self.uid, c["name"], spec)
        except (ShimError, OSError) as e:
            st.waiting = ("RunContainerError", str(e))
            await self.event("Failed", f"Error: {e}", typ="Warning", field_path=fp)
            return
        st.waiting = None
        st.env = spec.env
        st.ready = False
        st.started = False
        st.probes = {}
        st.probe_run = run.number
        await self.event("Created", f"Created container: {c['name']}", field_path=fp)
        await self.event("Started", f"Started container {c['name']}", field_path=fp)
        failure = await self.hook(c, "postStart", run, timeout=max(30.0, self.grace()))
        if failure is not None:
            # as kubelet: the container is killed, its restart policy decides what follows
            await self.event("FailedPostStartHook", failure, typ="Warning", field_path=fp)
            await self.event("Killing", "FailedPostStartHook", field_path=fp)
            await self.mgr.runtime.stop(run, grace=self.grace())
            return
        # without probes to wait for, started and ready now: the first status is the
        # final one (one write fewer per pod, no second sync before Ready)
        st.started = "startupProbe" not in c
        st.ready = st.started and "readinessProbe" not in c and not init

    def grace(self) -> float:
        return float(self.spec.get("terminationGracePeriodSeconds", 30) or 0)

    async def hook(self, c: Obj, kind: str, run: Run, *, timeout: float) -> str | None:
        """Run the container's ``postStart``/``preStop`` hook; the failure message if it
        failed (None if it succeeded or there is none)."""
        handler = (c.get("lifecycle") or {}).get(kind)
        if not handler:
            return None
        pids = run.pids()
        ok, msg = await run_hook(handler, c, pod_ip=self.pod_ip,
                                 container_pid=pids[1] if pids else None,
                                 env=self.state(c["name"]).env, timeout=timeout,
                                 cgroups=run.spec_values("cgroup"))
        if ok:
            return None
        label = "PostStartHook" if kind == "postStart" else "PreStopHook"
        if "exec" in handler:
            return (f"Exec lifecycle hook ({handler['exec'].get('command')}) for Container "
                    f'"{c["name"]}" in Pod "{self.name}_{self.namespace}({self.uid})" failed - '
                    f'error: {msg}')
        if "httpGet" in handler:
            return (f"HTTP lifecycle hook ({(handler['httpGet'] or {}).get('path', '/')}) for "
                    f'Container "{c["name"]}" in Pod "{self.name}_{self.namespace}({self.uid})" '
                    f"failed - error: {msg}")
        return f"{label} failed: {msg}"

    async def stop_container(self, c: Obj, run: Run, grace: float) -> None:
        """preStop hook, then SIGTERM; SIGKILL once ``grace`` seconds (both together) have
        passed — 2 s more if the hook used them all, as kubelet allows."""
        start = time.monotonic()
        if grace > 0:
            failure = await self.hook(c, "preStop", run, timeout=grace)
            if failure is not None:
                await self.event("FailedPreStopHook", failure, typ="Warning",
                                 field_path=self.field_path(c))
        left = grace - (time.monotonic() - start)
        await self.mgr.runtime.stop(run, grace=left if left > 0 else min(grace, 2.0))

    async def check_probes(self, c: Obj, run: Run, now: float) -> float:
        st = self.state(c["name"])
        if st.probe_run != run.number:
            st.probes = {}
            st.probe_run = run.number
        nxt = RESYNC
        kinds = ("startupProbe", "livenessProbe", "readinessProbe")
        for kind in kinds:
            if kind not in c:
                continue
            ps = st.probes.get(kind)
            if ps is None:
                ps = st.probes[kind] = ProbeState(c[kind])
                ps.schedule(now, first=True)
            startup = st.probes.get("startupProbe")
            if kind != "startupProbe" and startup is not None and startup.result is not True:
                continue  # other probes wait for the startup probe
            if ps.due(now):
                pids = run.pids()
                ok, msg = await run_probe(c[kind], c, pod_ip=self.pod_ip,
                                          container_pid=pids[1] if pids else None,
                                          env=st.env, cgroups=run.spec_values("cgroup"))
                ps.schedule(time.monotonic())
                decision = ps.record(ok, msg)
                label = {"startupProbe": "Startup", "livenessProbe": "Liveness",
                         "readinessProbe": "Readiness"}[kind]
                if not ok:
                    await self.event("Unhealthy", f"{label} probe failed: {msg}",
                                     typ="Warning", field_path=self.field_path(c))
                if decision is False and kind in ("livenessProbe", "startupProbe"):
                    await self.event("Killing", f"Container {c['name']} failed "
                                     f"{label.lower()} probe, will be restarted",
                                     field_path=self.field_path(c))
                    await self.stop_container(c, run, self.grace())
                    return 0.05
            nxt = min(nxt, max(0.05, ps.next_at - time.monotonic()))
        startup = st.probes.get("startupProbe")
        st.started = startup is None or startup.result is True
        readiness = st.probes.get("readinessProbe")
        st.ready = st.started and (readiness.result is True if readiness is not None else True)
        return nxt

    def all_stopped(self) -> bool:
        for c in [*(self.spec.get("initContainers") or []), *(self.spec.get("containers") or [])]:
            run = self.mgr.runtime.current(self.uid, c["name"])
            if run is not None and run.running():
                return False
        return True

    async def terminate(self, grace: float) -> None:
        """Stop every container: SIGTERM, ``grace`` seconds, SIGKILL (whole tree)."""
        runs = []
        for c in [*(self.spec.get("containers") or []), *(self.spec.get("initContainers") or [])]:
            run = self.mgr.runtime.current(self.uid, c["name"])
            if run is not None and run.running():
                runs.append((c, run))
        for c, _ in runs:
            await self.event("Killing", f"Stopping container {c['name']}",
                             field_path=self.field_path(c))
        await asyncio.gather(*(self.stop_container(c, r, grace) for c, r in runs))

    async def finish_deletion(self) -> None:
        """Everything is stopped: release the node's resources and let the pod go."""
        await self.cleanup()
        try:
            await self.mgr.client.delete("v1", "pods", self.name, namespace=self.namespace,
                                         grace_period_seconds=0,
                                         preconditions={"uid": self.uid})
        except StatusError as e:
            if e.code not in (404, 409):
                raise
        self.gone = True

    async def cleanup(self) -> None:
        await self.terminate(0)
        self.mgr.devices.release(self.uid)
        self.volumes.teardown()
        if not self.spec.get("hostNetwork"):
            await self.mgr.network.teardown(self.uid)
        self.mgr.cgroups.remove(self.uid)
        self.mgr.runtime.remove_pod(self.uid)

    # -- status ---------------------------------------------------------------------------

    def container_status(self, c: Obj, *, init: bool) -> Obj:
        st = self.state(c["name"])
        runs = self.mgr.runtime.runs(self.uid, c["name"])
        cur = runs[-1] if runs else None
        out: Obj = {"name": c["name"], "image": c.get("image", ""), "imageID": "",
                    "ready": False, "restartCount": cur.number if cur else 0,
                    "started": False}
        if cur is None:
            reason, msg = st.waiting or ("PodInitializing" if init else "ContainerCreating", "")
            out["state"] = {"waiting": {"reason": reason, **({"message": msg} if msg else {})}}
            return out
        out["containerID"] = f"kyb://{self.uid}/{c['name']}/{cur.number}"
        out["imageID"] = f"kyb://{c.get('image', '')}"
        started = rfc3339(cur.started_at())
        ended = cur.exit()
        previous = runs[-2] if len(runs) > 1 else None
        if cur.running():
            out["state"] = {"running": {"startedAt": started}}
            out["ready"] = st.ready and not init
            out["started"] = st.started if not init else True
            last = previous
        else:
            # read again: the container may have ended (and its shim with it) since the
            # first read, and a missing exit file would then look like a lost container
            ended = cur.exit()
            if ended is not None:
                term = self.terminated(c, ended, started, cur)
            else:
                term = {"exitCode": 137, "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was "
                                   "terminated", "startedAt": started, "finishedAt": started}
            if self.restart_allowed(cur, init=init) and self.rejected is None and \
                    not self.pod["metadata"].get("deletionTimestamp"):
                reason, msg = st.waiting or ("ContainerCreating", "")
                out["state"] = {"waiting": {"reason": reason,
                                            **({"message": msg} if msg else {})}}
                out["lastState"] = {"terminated": term}
                return out
            out["state"] = {"terminated": term}
            last = previous
        if last is not None:
            le = last.exit()
            if le is not None:
                out["lastState"] = {"terminated": self.terminated(
                    c, le, rfc3339(last.started_at()), last)}
        return out

    def terminated(self, c: Obj, ended: tuple[int, int, str], started: str,
                   run: Run | None = None) -> Obj:
        code, sig, finished = ended
        oom = code == 137 and self.mgr.cgroups.oom_killed(self.uid, c["name"])
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        out: Obj = {"exitCode": code, "reason": reason, "startedAt": started,
                    "finishedAt": finished}
        if sig:
            out["signal"] = sig
        if run is not None:
            message = termination_message(run, code, c.get("terminationMessagePolicy"))
            if message:
                out["message"] = message
        return out

    def terminal_phase(self) -> str:
        containers = self.spec.get("containers") or []
        policy = self.spec.get("restartPolicy", "Always")
        inits = self.spec.get("initContainers") or []
        for c in inits:
            run = self.mgr.runtime.current(self.uid, c["name"])
            ended = run.exit() if run else None
            if ended is None or ended[0] == 0:
                continue
            if policy == "Never":
                return "Failed"
        results = []
        for c in containers:
            run = self.mgr.runtime.current(self.uid, c["name"])
            ended = run.exit() if run else None
            if run is None or ended is None:
                return ""
            results.append(ended[0])
        if policy == "Always":
            return ""
        if all(code == 0 for code in results):
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return ""

    def compute_status(self) -> Obj:
        old = self.pod.get("status") or {}
        now = rfc3339(time.time())
        inits = [self.container_status(c, init=True)
                 for c in self.spec.get("initContainers") or []]
        mains = [self.container_status(c, init=False) for c in self.spec.get("containers") or []]
        initialized = all(s["state"].get("terminated", {}).get("exitCode") == 0 for s in inits)
        terminal = _terminal_phase(inits, mains, self.spec.get("restartPolicy", "Always"))
        if terminal:
            phase = terminal
        elif any("running" in s["state"] or "terminated" in s["state"] or s.get("lastState")
                 for s in mains):
            phase = "Running"  # started at least once (crash-looping pods are Running too)
        else:
            phase = "Pending"
        ready = initialized and all(s["ready"] for s in mains) and bool(mains) and \
            phase == "Running"
        sandbox_ready = bool(self.pod_ip) or bool(self.spec.get("hostNetwork"))
        # our own last write first: it is never older than what a watch event says
        old_conds = {c.get("type"): c for c in old.get("conditions") or []}
        if self.last_status is not None:
            old_conds.update({c.get("type"): c for c in self.last_status["conditions"]})

        def cond(typ: str, ok: bool, reason: str = "") -> Obj:
            status = "True" if ok else "False"
            prev = old_conds.get(typ) or {}
            out: Obj = {"type": typ, "status": status, "lastProbeTime": None,
                        "lastTransitionTime": prev.get("lastTransitionTime")
                        if prev.get("status") == status else now}
            if reason and not ok:
                out["reason"] = reason
            return out

        conds = [
            cond("PodReadyToStartContainers", sandbox_ready),
            cond("Initialized", initialized, "ContainersNotInitialized"),
            cond("Ready", ready, "PodCompleted" if terminal else "ContainersNotReady"),
            cond("ContainersReady", ready, "PodCompleted" if terminal else "ContainersNotReady"),
        ]
        scheduled = old_conds.get("PodScheduled") or {"type": "PodScheduled", "status": "True",
                                                      "lastProbeTime": None,
                                                      "lastTransitionTime": now}
        conds.append(scheduled)
        status: Obj = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.mgr.node_address,
            "hostIPs": [{"ip": self.mgr.node_address}],
            "startTime": self.start_time or now,
            "containerStatuses": mains,
            "qosClass": old.get("qosClass", "BestEffort"),
        }
        if inits:
            status["initContainerStatuses"] = inits
        if self.rejected is not None:
            status["phase"] = "Failed"
            status["reason"], status["message"] = self.rejected
            if self.rejected[0] == "Evicted":
                prev = old_conds.get("DisruptionTarget") or {}
                conds.append({"type": "DisruptionTarget", "status": "True",
                              "lastProbeTime": None,
                              "lastTransitionTime": prev.get("lastTransitionTime") or now,
                              "reason": "TerminationByKubelet",
                              "message": self.rejected[1]})
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        return status

    async def write_status(self) -> None:
        if self.rejected is not None and not self.all_stopped():
            return  # Failed only once its containers are: the rejected path stops them
        status = self.compute_status()
        if status == self.last_status:
            return
        if self.last_status is not None and log.isEnabledFor(logging.DEBUG):
            diff = {k: (self.last_status.get(k), v) for k, v in status.items()
                    if self.last_status.get(k) != v}
            log.debug("status of %s/%s changes: %s", self.namespace, self.name, diff)
        try:
            out = await self.mgr.client.patch(
                "v1", "pods", self.name, {"status": status}, patch_type="merge",
                namespace=self.namespace, subresource="status")
            self.last_status = status
            self.pod = out
        except StatusError as e:
            if e.code == 404:
                return
            log.warning("status of pod %s/%s: %s", self.namespace, self.name, e.message)


class PodManager:
    """Every pod bound to this node, each with its worker."""

    def __init__(self, client: Client, *, node_name: str, node_address: str, data_dir: Path,
                 pod_cidr: str, node_allocatable: dict[str, str] | None = None,
                 fake_gpus: int = 0, log_max_size: int = 0, log_max_files: int = 5,
                 network_pool: int = 0) -> None:
        self.client = client
        self.node_name = node_name
        self.node_address = node_address
        self.data_dir = data_dir
        self.runtime = ContainerRuntime(data_dir)
        self.network = PodNetwork(data_dir, pod_cidr, pool_size=network_pool)
        self.cgroups = Cgroups()
        self.images = imagesmod.Catalog(data_dir)
        self.devices = DeviceManager(discover(fake_gpus))
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.node_allocatable = node_allocatable or {}
        self.workers: dict[str, PodWorker] = {}
        self.starting = asyncio.Semaphore(STARTING_CONCURRENCY)
        self.starting_now = 0
        """Pods waiting for, or in, their first sync."""
        self.pods = Informer(client, "v1", "pods", field_selector=f"spec.nodeName={node_name}")
        self.services = shared_informer(client, "v1", "services")
        self._cache: dict[tuple[str, str, str], tuple[float, Obj | None]] = {}
        # events wait while pods are being started (the loop is theirs first)
        self.recorder = EventRecorder(client, "kubelet", host=node_name,
                                      hold=lambda: self.starting_now > 0)
        self._tokens: dict[tuple[str, str, str, int], tuple[str, float]] = {}
        self._exit_watches: dict[int, int] = {}
        """shim pid -> pidfd watched by the event loop."""
        """(pod uid, service account, audience, expiration) -> (token, refresh after)."""
        self._tasks: list[asyncio.Task[Any]] = []

    def network_ns(self, uid: str) -> Path:
        from kybernetes.kubelet.network import netns_path

        return netns_path(uid)

    async def get_object(self, plural: str, ns: str, name: str) -> Obj | None:
        key = (plural, ns, name)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < OBJECT_CACHE_TTL:
            return copy.deepcopy(hit[1]) if hit[1] is not None else None
        try:
            obj: Obj | None = await self.client.get("v1", plural, name, namespace=ns)
        except StatusError as e:
            if e.code != 404:
                raise
            obj = None
        if plural != "persistentvolumeclaims" or \
                (obj is not None and (obj.get("status") or {}).get("phase") == "Bound"):
            # a claim is looked up again until it is bound (the pod waits on it)
            self._cache[key] = (time.monotonic(), obj)
        return copy.deepcopy(obj) if obj is not None else None

    def watch_exit(self, run: Run, wake: asyncio.Event) -> None:
        """Wake the pod's worker the moment the container's shim exits (a pidfd in the
        event loop: exits are seen at once, with no polling, as kubelet's PLEG would)."""
        pids = run.pids()
        if pids is None or pids[0] in self._exit_watches:
            return
        pid = pids[0]
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            wake.set()  # already gone
            return
        loop = asyncio.get_running_loop()

        def fired() -> None:
            self._unwatch(pid)
            wake.set()

        loop.add_reader(fd, fired)
        self._exit_watches[pid] = fd

    def _unwatch(self, pid: int) -> None:
        fd = self._exit_watches.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    async def service_account_token(self, pod: Obj, src: Obj) -> str:
        """A token of the pod's service account bound to the pod (TokenRequest), asked for
        again once 80 % of its life has passed, as kubelet does."""
        md, spec = pod["metadata"], pod.get("spec") or {}
        sa = spec.get("serviceAccountName") or "default"
        audience = src.get("audience") or ""
        expiration = int(src.get("expirationSeconds") or 3600)
        key = (md.get("uid", ""), sa, audience, expiration)
        hit = self._tokens.get(key)
        now = time.time()
        if hit is not None and now < hit[1]:
            return hit[0]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience] if audience else None,
                         "expirationSeconds": expiration,
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                            "name": md.get("name"), "uid": md.get("uid")}}}
        try:
            out = await self.client.request(
                "POST", f"/api/v1/namespaces/{md.get('namespace')}/serviceaccounts/{sa}/token",
                body=body)
        except StatusError as e:
            raise VolumeError(f"failed to fetch token: {e.message}") from None
        token = str((out.get("status") or {}).get("token", ""))
        self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        self._tokens[key] = (token, now + 0.8 * expiration)
        return token

    def service_env(self, pod: Obj) -> dict[str, str]:
        ns = pod["metadata"].get("namespace", "")
        svcs = [s for s in self.services.list() if s["metadata"].get("namespace") == ns]
        out = envmod.service_env(svcs)
        master = self.services.get("default/kubernetes")
        if master is not None:
            spec = master.get("spec") or {}
            port = (spec.get("ports") or [{}])[0].get("port", 443)
            out.update({"KUBERNETES_SERVICE_HOST": spec.get("clusterIP", ""),
                        "KUBERNETES_SERVICE_PORT": str(port),
                        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                        "KUBERNETES_PORT": f"tcp://{spec.get('clusterIP')}:{port}"})
        return out

    def resolv_conf(self, pod: Obj) -> str:
        """The pod's ``/etc/resolv.conf``, as the kubelet writes it: ``ClusterFirst`` (the
        default; ``ClusterFirstWithHostNet`` with ``hostNetwork``) asks the node's cluster
        DNS (on the pod gateway) with the namespace's search path and ``ndots:5``;
        ``Default`` (and ``ClusterFirst`` with ``hostNetwork``) takes the host's; ``None``
        only ``dnsConfig``, which the others are merged with."""
        spec = pod.get("spec") or {}
        ns = pod["metadata"].get("namespace", "default")
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        host = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
        words = [line.split() for line in host.splitlines() if not line.startswith(("#", ";"))]
        nameservers = [w[1] for w in words if len(w) > 1 and w[0] == "nameserver"]
        search = [d for w in words if w and w[0] in ("search", "domain") for d in w[1:]]
        options = [o for w in words if w and w[0] == "options" for o in w[1:]]
        cluster = policy == "ClusterFirstWithHostNet" or (
            policy == "ClusterFirst" and not spec.get("hostNetwork"))
        if policy == "None":
            nameservers, search, options = [], [], []
        elif cluster and self.network.available():
            nameservers = [self.network.gateway]
            search = [f"{ns}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN,
                      *search]
            options = ["ndots:5"]
        cfg = spec.get("dnsConfig") or {}
        nameservers = list(dict.fromkeys([*nameservers, *(cfg.get("nameservers") or [])]))
        search = list(dict.fromkeys([*search, *(cfg.get("searches") or [])]))
        merged = {o.split(":", 1)[0]: o for o in options}
        for o in cfg.get("options") or []:
            name = o.get("name", "")
            merged[name] = f"{name}:{o['value']}" if o.get("value") is not None else name
        lines = [f"nameserver {n}" for n in nameservers[:3]] or ["nameserver 127.0.0.1"]
        if search:
            lines.append("search " + " ".join(search[:32]))
        if merged:
            lines.append("options " + " ".join(merged.values()))
        return "\n".join(lines) + "\n"

    async def event(self, pod: Obj, reason: str, message: str, *, typ: str = "Normal",
                    field_path: str = "") -> None:
        self.recorder.post({**pod, "kind": "Pod", "apiVersion": "v1"}, typ, reason, message,
                           field_path=field_path)

    # -- informer callbacks --------------------------------------------------------------

    def _on_pod(self, pod: Obj) -> None:
        uid = pod["metadata"].get("uid", "")
        w = self.workers.get(uid)
        if w is None:
            w = self.workers[uid] = PodWorker(self, uid, pod)
            w.task = spawn(self._run_worker(w), name=f"pod:{pod['metadata'].get('name')}")
        else:
            # watch events may lag behind what our own status writes returned: never go
            # back to an older version (its stale conditions would be written again)
            if _rv(pod) >= _rv(w.pod):
                w.pod = pod
            w.wake.set()

    async def _run_worker(self, w: PodWorker) -> None:
        try:
            await w.run()
        finally:
            if self.workers.get(w.uid) is w:
                del self.workers[w.uid]

    def _on_pod_deleted(self, pod: Obj) -> None:
        uid = pod["metadata"].get("uid", "")
        w = self.workers.get(uid)
        if w is None:
            return
        # deleted in the API without us (forced): stop everything at once
        w.gone = True
        w.wake.set()
        spawn(self._force_cleanup(w), name=f"pod-cleanup:{uid}")

    async def _force_cleanup(self, w: PodWorker) -> None:
        if w.task is not None:
            await cancel_and_wait(w.task)
        await w.cleanup()

    async def cleanup_orphans(self) -> None:
        """Remove what belongs to pods no longer bound here (after a restart); take back
        the devices of the ones still here."""
        live = {p["metadata"].get("uid") for p in self.pods.list()}
        for uid in live:
            self.devices.restore(str(uid), self.runtime.pod_dir(str(uid)))
        # network namespaces and cgroups are the machine's: only those of pods this agent
        # ran (its pod dirs, its addresses) are its to clean; other agents may share it
        mine = set(self.runtime.known_pods()) | self.network.allocated_pods()
        known = set(self.runtime.known_pods()) | \
            (mine & (set(self.network.known_pods()) | set(self.cgroups.known_pods())))
        for uid in known - live:
            log.info("cleaning up what is left of pod %s", uid)
            orphan = PodWorker(self, uid, {"metadata": {"uid": uid, "name": uid,
                                                        "namespace": ""}, "spec": {}})
            for c in _containers_on_disk(self.runtime, uid):
                run = self.runtime.current(uid, c)
                if run is not None and run.running():
                    await self.runtime.stop(run, grace=0)
            await orphan.cleanup()

    async def start(self) -> None:
        self.services.start()
        self.pods.add_handler(on_add=self._on_pod, on_update=lambda _o, n: self._on_pod(n),
                              on_delete=self._on_pod_deleted)
        self.pods.start()
        await self.pods.wait_synced()
        await self.services.wait_synced()
        self.runtime.ensure_state_tmpfs()
        await self.cleanup_orphans()
        if self.network.available():  # the pod range stays here before any pod runs
            await self.network.ensure_host_routes()
        self.network.start_pool()

    async def stop(self) -> None:
        """Stop watching; running pods keep running (they are adopted on restart)."""
        for pid in list(self._exit_watches):
            self._unwatch(pid)
        await self.network.stop_pool()
        await self.pods.stop()
        await self.services.stop()
        await cancel_and_wait(*(w.task for w in list(self.workers.values())))
        await self.recorder.aclose()


def message_file(pod_dir: Path, container: str, number: int) -> Path:
    """The termination message of one run (beside, not in, the runs' own directories:
    their names count the restarts)."""
    return pod_dir / "messages" / container / str(number)


MESSAGE_MAX = 4096
"""Bytes of a termination message kept (as kubelet)."""
FALLBACK_LINES, FALLBACK_MAX = 80, 2048


def termination_message(run: Run, code: int, policy: str | None) -> str:
    """What the container left at its terminationMessagePath, or with
    ``FallbackToLogsOnError`` and an error exit, the end of its log."""
    try:
        with message_file(run.dir.parents[2], run.dir.parent.name, run.number).open("rb") as f:
            data = f.read(MESSAGE_MAX)
    except OSError:
        data = b""
    if not data and policy == "FallbackToLogsOnError" and code != 0:
        try:
            raw = run.log.read_bytes()[-64 * 1024:]
        except OSError:
            raw = b""
        texts = []
        for line in raw.splitlines()[-FALLBACK_LINES:]:
            parsed = parse_line(line)
            if parsed is not None:
                texts.append(parsed[3] + (b"" if parsed[2] else b"\n"))
        data = b"".join(texts)[-FALLBACK_MAX:]
    return data.decode(errors="replace")


def _terminal_phase(inits: list[Obj], mains: list[Obj], policy: str) -> str:
    """Succeeded/Failed from one snapshot of the container statuses ("" while running).

    A container that will be restarted shows as waiting, so "all terminated" already
    means that none of them will run again."""
    if policy == "Never" and any(
            s["state"].get("terminated", {}).get("exitCode", 0) != 0 for s in inits):
        return "Failed"
    if not mains or not all("terminated" in s["state"] for s in mains):
        return ""
    if all(s["state"]["terminated"].get("exitCode") == 0 for s in mains):
        return "Succeeded"
    return "Failed"


def _rv(pod: Obj) -> int:
    try:
        return int((pod.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _containers_on_disk(runtime: ContainerRuntime, uid: str) -> list[str]:
    base = runtime.pod_dir(uid) / "containers"
    return [p.name for p in base.iterdir()] if base.exists() else []


_WRITTEN: dict[str, tuple[str, int]] = {}
"""File -> (the text last written there, its inode): the periodic resync skips reading
back what it wrote, unless the file was replaced since."""


def _write_if_changed(path: Path, text: str) -> None:
    key = str(path)
    last = _WRITTEN.get(key)
    if last is not None and last[0] == text:
        with contextlib.suppress(OSError):
            if os.stat(key).st_ino == last[1]:
                return
    try:
        if path.read_text() == text:
            _WRITTEN[key] = (text, os.stat(key).st_ino)
            return
    except OSError:
        pass
    if len(_WRITTEN) >= 8192:
        _WRITTEN.clear()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    _WRITTEN[key] = (text, os.stat(key).st_ino)


def _epoch(stamp: str) -> float:
    from kybernetes.api.meta import parse_time

    return parse_time(stamp) or 0.0


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"
