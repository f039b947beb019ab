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
