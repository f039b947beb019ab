"""Start a real etcd (Debian's etcd-server) for tests, on loopback ports of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ETCD = os.environ.get("ETCD", shutil.which("etcd") or "/usr/bin/etcd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_etcd() -> None:
    if not Path(ETCD).exists():
        pytest.skip(f"etcd not found at {ETCD} (Debian package etcd-server; set ETCD=...)")


class Etcd:
    """A one-member etcd cluster that a test may stop and start again (same data)."""

    def __init__(self, data_dir: Path) -> None:
        require_etcd()
        self.data_dir = data_dir
        self.client, self.peer = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.client}"
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 20.0) -> None:
        log = (self.data_dir / "etcd.log").open("ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", str(self.data_dir / "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
             "--initial-cluster", f"t=http://127.0.0.1:{self.peer}"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("etcd did not start: " +
                                   (self.data_dir / "etcd.log").read_text()[-2000:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def etcd_server(data_dir: Path) -> Iterator[str]:
    """A running etcd; yields its client URL; stops it and removes its data after."""
    with etcd_process(data_dir) as e:
        yield e.url


@contextmanager
def etcd_process(data_dir: Path) -> Iterator[Etcd]:
    e = Etcd(data_dir)
    e.start()
    try:
        yield e
    finally:
        e.stop()
        shutil.rmtree(data_dir / "data", ignore_errors=True)


class EtcdCluster:
    """Several etcd members on loopback forming one cluster; members can be stopped."""

    def __init__(self, data_dir: Path, members: int = 3) -> None:
        require_etcd()
        self.data_dir = data_dir
        self.names = [f"m{i}" for i in range(members)]
        self.ports = {n: (_free_port(), _free_port()) for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        initial = ",".join(f"{n}=http://127.0.0.1:{self.ports[n][1]}" for n in self.names)
        self._initial = initial
        data_dir.mkdir(parents=True, exist_ok=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name][0]}"

    @property
    def urls(self) -> list[str]:
        return [self.url(n) for n in self.names]

    def start_member(self, name: str) -> None:
        peer = self.ports[name][1]
        log = (self.data_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [ETCD, "--name", name, "--data-dir", str(self.data_dir / name),
             "--listen-client-urls", self.url(name), "--advertise-client-urls", self.url(name),
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", self._initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", "kyb-test"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop_member(self, name: str, *, kill: bool = False) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def leader(self) -> str:
        for n in self.procs:
            try:
                r = httpx.post(self.url(n) + "/v3/maintenance/status", json={}, timeout=2)
                body = r.json()
            except (httpx.HTTPError, ValueError):
                continue
            if body.get("leader") and body.get("leader") == body["header"].get("member_id"):
                return n
        raise RuntimeError("no leader")

    def start(self, timeout: float = 30.0) -> None:
        for n in self.names:
            self.start_member(n)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.leader()
                if all(httpx.get(u + "/health", timeout=1).status_code == 200
                       for u in self.urls):
                    return
            except (httpx.HTTPError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("etcd cluster did not start: " + "".join(
                    (self.data_dir / f"{n}.log").read_text()[-800:] for n in self.names))
            time.sleep(0.1)

    def stop(self) -> None:
        for n in list(self.procs):
            self.stop_member(n)


@contextmanager
def etcd_cluster(data_dir: Path, members: int = 3) -> Iterator[EtcdCluster]:
    c = EtcdCluster(data_dir, members)
    c.start()
    try:
        yield c
    finally:
        c.stop()
        for n in c.names:
            shutil.rmtree(data_dir / n, ignore_errors=True)
