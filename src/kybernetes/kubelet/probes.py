"""Container probes: httpGet, tcpSocket, exec and grpc, with kubelet's thresholds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass
class ProbeState:
    """Results of one probe of one container run."""

    spec: Obj
    successes: int = 0
    failures: int = 0
    result: bool | None = None
    """None until the probe has decided (success/failure threshold reached)."""
    next_at: float = 0.0
    last_message: str = ""
    started: float = field(default=0.0)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def schedule(self, now: float, *, first: bool = False) -> None:
        delay = float(self.spec.get("initialDelaySeconds") or 0) if first else \
            float(self.spec.get("periodSeconds") or 10)
        self.next_at = now + delay

    def record(self, ok: bool, message: str) -> bool | None:
        """Count one result; returns the new decision when it changes."""
        self.last_message = message
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold") or 1) and \
                    self.result is not True:
                self.result = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold") or 3) and \
                    self.result is not False:
                self.result = False
                return False
        return None


def _port(value: Any, container: Obj) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    for p in container.get("ports") or []:
        if p.get("name") == value:
            return int(p.get("containerPort", 0))
    raise ValueError(f"port {value!r} is not a port of the container")


async def run_probe(spec: Obj, container: Obj, *, pod_ip: str, container_pid: int | None,
                    env: list[str] | None = None, cgroups: Sequence[str] = ()
                    ) -> tuple[bool, str]:
    """Run a probe once: (succeeded, message for the Unhealthy event when it did not)."""
    timeout = float(spec.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in spec:
            return await _http(spec["httpGet"], container, pod_ip, timeout)
        if "tcpSocket" in spec:
            tcp = spec["tcpSocket"]
            host = tcp.get("host") or pod_ip
            port = _port(tcp.get("port"), container)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            except (OSError, TimeoutError) as e:
                return False, f"dial tcp {host}:{port}: {e or 'i/o timeout'}"
            writer.close()
            return True, ""
        if "exec" in spec:
            return await _exec(spec["exec"].get("command") or [], container_pid, timeout,
                               env or [], cgroups)
        if "grpc" in spec:
            from kybernetes.kubelet import grpcprobe

            g = spec["grpc"] or {}
            return await grpcprobe.check(pod_ip, int(g.get("port", 0)),
                                         str(g.get("service") or ""), timeout)
    except ValueError as e:
        return False, str(e)
    return False, "probe has no handler"


async def run_hook(handler: Obj, container: Obj, *, pod_ip: str, container_pid: int | None,
                   env: list[str], timeout: float, cgroups: Sequence[str] = ()
                   ) -> tuple[bool, str]:
    """Run a lifecycle hook (``exec``, ``httpGet`` or ``sleep``) once, within ``timeout``:
    (succeeded, why not)."""
    if "sleep" in handler:
        await asyncio.sleep(min(timeout, float((handler["sleep"] or {}).get("seconds") or 0)))
        return True, ""
    if not any(k in handler for k in ("exec", "httpGet", "tcpSocket")):
        return False, "lifecycle hook has no handler"
    return await run_probe({**handler, "timeoutSeconds": max(timeout, 0.001)}, container,
                           pod_ip=pod_ip, container_pid=container_pid, env=env,
                           cgroups=cgroups)


async def _http(get: Obj, container: Obj, pod_ip: str, timeout: float) -> tuple[bool, str]:
    host = get.get("host") or pod_ip
    port = _port(get.get("port"), container)
    path = get.get("path") or "/"
    scheme = (get.get("scheme") or "HTTP").upper()
    ctx = None
    if scheme == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    url = f"{scheme.lower()}://{host}:{port}{path}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx), timeout)
    except (OSError, TimeoutError) as e:
        return False, f"Get \"{url}\": dial tcp {host}:{port}: connect: {e or 'i/o timeout'}"
    try:
        headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.32",
                   "Accept": "*/*", "Connection": "close"}
        for h in get.get("httpHeaders") or []:
            headers[h.get("name", "")] = h.get("value", "")
        head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((head + "\r\n").encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
        return False, f"Get \"{url}\": {e or 'context deadline exceeded'}"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def _exec(command: list[str], pid: int | None, timeout: float, env: list[str],
                cgroups: Sequence[str] = ()) -> tuple[bool, str]:
    if not command:
        return False, "exec probe has no command"
    if pid is None:
        return False, "container is not running"
    proc = await asyncio.create_subprocess_exec(
        *nsenter_args(pid), "env", "-i", *env, *command, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, preexec_fn=join_cgroups(cgroups) if cgroups else None)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False, f"command {command!r} timed out"
    if proc.returncode == 0:
        return True, ""
    return False, out.decode(errors="replace").strip() or \
        f"command {command!r} exited with {proc.returncode}"


def join_cgroups(dirs: Sequence[str]) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the new process into ``dirs`` (a container's cgroups)
    before it runs anything, so that nothing it starts escapes them (as ``runc exec``)."""
    def join() -> None:
        me = str(os.getpid())
        for d in dirs:
            with contextlib.suppress(OSError), open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(me)
    return join


def nsenter_args(pid: int) -> list[str]:
    """Run a command inside a container's namespaces (mount, UTS, IPC, net, pid)."""
    return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--"]
