"""The API server process: store, registry, HTTPS listener, bootstrap and maintenance.

    cp = ControlPlane(data_dir=Path("/var/lib/kyb"), port=6443)
    await cp.start()          # listening and ready; DIR/kubeconfig written
    ...
    await cp.stop()
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psutil

from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.builtin import build_registry
from kybernetes.apiserver import admission, certs, join
from kybernetes.apiserver.app import APIServer, User
from kybernetes.apiserver.audit import AuditLog, load_policy
from kybernetes.apiserver.bootstrap import APIServerEndpoints, Bootstrap
from kybernetes.apiserver.context import Context
from kybernetes.apiserver.crds import CRDManager
from kybernetes.apiserver.csrsigning import CSRSigner
from kybernetes.apiserver.http import HTTPServer
from kybernetes.apiserver.metrics import Metrics, TimedBackend
from kybernetes.apiserver.serviceaccounts import TokenIssuer
from kybernetes.store.encryption import Config as EncryptionConfig
from kybernetes.store.encryption import EncryptedBackend, load_config, new_config_text
from kybernetes.store.sqlite import SQLiteBackend

if TYPE_CHECKING:
    from kybernetes.store.etcd import EtcdBackend

log = logging.getLogger(__name__)

KEEP_REVISIONS = 1000
COMPACT_INTERVAL = 300.0
REPAIR_INTERVAL = 180.0
FULL_GC_INTERVAL = 60.0
FULL_GC_THAW = 10


def default_advertise_address() -> str:
    """The first non-loopback IPv4 address of this host (127.0.0.1 if none)."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127.") and \
                    not a.address.startswith("10.42.") and not a.address.startswith("169.254."):
                return str(a.address)
    return "127.0.0.1"


def read_token_file(path: Path) -> dict[str, User]:
    """kube-apiserver's ``--token-auth-file``: CSV lines ``token,user,uid,"group1,group2"``
    (uid and groups optional; ``#`` starts a comment). Every user is also in
    ``system:authenticated``. Raises ValueError naming the bad line."""
    import csv

    tokens: dict[str, User] = {}
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"{path}:{n}: want token,user[,uid[,\"group1,group2\"]]")
            groups = [g.strip() for g in row[3].split(",") if g.strip()] if len(row) > 3 else []
            tokens[row[0].strip()] = User(row[1].strip(),
                                          (*groups, "system:authenticated"),
                                          row[2].strip() if len(row) > 2 else "")
    return tokens


def parse_datastore(url: str) -> tuple[list[str], bool]:
    """``etcd://h1:2379,h2:2379`` (``etcds://`` for TLS) → the endpoints' URLs and whether
    they use TLS. Raises ValueError for anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds") or not rest.strip("/"):
        raise ValueError(f"unsupported datastore {url!r}: want etcd://host:port[,host:port...] "
                         "or etcds://... (TLS)")
    proto = "https" if scheme == "etcds" else "http"
    hosts = [h.strip() for h in rest.strip("/").split(",") if h.strip()]
    for h in hosts:
        host, _, port = h.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"datastore endpoint {h!r}: want host:port")
    return [f"{proto}://{h}" for h in hosts], scheme == "etcds"


class ControlPlane:
    def __init__(self, *, data_dir: Path, port: int = 6443, host: str = "0.0.0.0",
                 advertise_address: str = "", fsync: bool = False,
                 token_auth_file: Path | None = None, audit_log: Path | None = None,
                 audit_policy: Path | None = None,
                 encryption_config: Path | None = None, datastore: str = "",
                 etcd_tls: dict[str, Path] | None = None, join: bool = False,
                 token: str = "", toleration_seconds: tuple[int, int] = (300, 300)) -> None:
        self.toleration_seconds = toleration_seconds
        self.join = join
        self.token = token
        self.encryption_config = encryption_config
        self.datastore = datastore
        self.etcd_tls = etcd_tls or {}
        self.data_dir = data_dir
        self.token_auth_file = token_auth_file
        self.audit_log = audit_log
        self.audit_policy = audit_policy
        self.port = port
        self.host = host
        self.advertise_address = advertise_address or default_advertise_address()
        self.fsync = fsync
        self.backend: SQLiteBackend | EtcdBackend | None = None
        self.api: APIServer | None = None
        self.crds: CRDManager | None = None
        self._http: HTTPServer | None = None
        self._warmup: asyncio.Task[Any] | None = None
        self._full_gc: asyncio.Task[Any] | None = None
        self._compactor: asyncio.Task[Any] | None = None
        self._repair: asyncio.Task[Any] | None = None
        self._members: APIServerEndpoints | None = None
        self._members_task: asyncio.Task[Any] | None = None
        self.kubeconfig_path = data_dir / "kubeconfig"
        self.join_token_path = data_dir / "join-token"
        self.join_token = ""
        self.pki: certs.PKI | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.join and not self.datastore:
            raise join.JoinError("--join needs a shared --datastore etcd://...")
        self.backend = backend = await self._open_datastore()
        pki_dir = self.data_dir / "pki"
        if self.datastore:
            if self.join:
                await join.fetch(backend, pki_dir, self.token)
            else:
                await join.check_datastore(backend, pki_dir)
        self.pki = pki = certs.ensure_pki(self.data_dir, extra_hosts=[self.advertise_address])
        issuer = TokenIssuer(pki.dir / "sa.key")
        encryption = self._encryption()
        if self.datastore:
            token = join.server_token(pki_dir, self.token)
            issuer.ensure_key()
            await join.publish(backend, pki_dir, token)
        metrics = Metrics()
        ctx = Context(TimedBackend(EncryptedBackend(backend, encryption), metrics),
                      build_registry())
        tokens = read_token_file(self.token_auth_file) if self.token_auth_file else {}
        tokens[pki.admin_token] = User("kyb-admin", ("system:masters", "system:authenticated"))
        self.api = api = APIServer(
            ctx, tokens=tokens,
            server_address=f"{self.advertise_address}:{self.port}", metrics=metrics)
        if self.audit_log is not None:
            api.audit = AuditLog(self.audit_log, load_policy(self.audit_policy)
                                 if self.audit_policy else None)
            api.audit.open()
        self.crds = CRDManager(api)
        bootstrap = Bootstrap(api, ca_pem=pki.ca_pem, advertise_address=self.advertise_address,
                              port=self.port)
        # what is already stored: CRD APIs and allocated service addresses
        await self.crds.start()
        svc_page = await backend.list("/registry/services/")
        await admission.restore_allocations(ctx, [orjson.loads(kv.value)
                                                  for kv in svc_page.items])
        await bootstrap.run()
        if not ipaddress.ip_address(self.advertise_address).is_loopback:
            self._members = APIServerEndpoints(bootstrap)
            self._members_task = spawn(self._members.run(), name="apiserver-endpoints")
        self.join_token = await bootstrap.ensure_join_token(self.join_token_path)
        signer = CSRSigner(api, pki_dir=pki.dir)
        await signer.resync()
        ctx_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx_ssl.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        # client certificates signed by the cluster CA authenticate (kyb kubeconfig)
        ctx_ssl.load_verify_locations(cafile=str(pki.ca_cert))
        ctx_ssl.verify_mode = ssl.CERT_OPTIONAL
        self._http = HTTPServer(api, ssl_context=ctx_ssl, upgrade_handler=api.handle_upgrade)
        ctx.extra["agent_token"] = pki.admin_token  # node agents given the admin token
        ctx.extra["agent_client_cert"] = (pki.kubelet_client_cert, pki.kubelet_client_key)
        ctx.extra["token_issuer"] = issuer
        ctx.extra["toleration_seconds"] = self.toleration_seconds
        await self._http.start(self.host, self.port)
        certs.write_kubeconfig(self.kubeconfig_path,
                               certs.kubeconfig(self.url, pki.ca_pem, pki.admin_token))
        self._compactor = spawn(self._compact_loop(), name="store-compactor")
        self._repair = spawn(self._repair_loop(ctx), name="service-allocations-repair")
        # Schemas and registry are long-lived: keep them out of the cyclic collector's
        # full passes, which would otherwise pause requests for tens of milliseconds.
        gc.collect()
        gc.freeze()
        # Only the youngest collections stay automatic (rarer); the others run on a timer
        # instead of in the middle of bursts of requests. Most garbage is freed by
        # reference counts: with 5,000 nodes and 10,000 pods cached, automatic middle
        # collections (every 50 young ones) walked every object made since the last full
        # one, 70-330 ms each, ~10 % of the CPU, and found almost nothing.
        gc.set_threshold(10_000, 1_000_000, 1_000_000)
        self._full_gc = spawn(self._collect_loop(), name="full-gc")
        api.ready = True
        self._warmup = spawn(self._warm_up(), name="apiserver-warm-up")
        log.info("API server ready at %s (data in %s)", self.url, self.data_dir)

    async def _warm_up(self) -> None:
        """Import what the first requests will need, now that start-up is over."""
        import importlib

        from kybernetes.api.strategy import load_kind_code

        # on a thread: the loop keeps serving while modules load
        for name in ("kybernetes.api.fieldmanager", "kybernetes.api.validation.meta",
                     "kybernetes.api.printers", "yaml", "prometheus_client"):
            await asyncio.to_thread(importlib.import_module, name)
        await asyncio.to_thread(load_kind_code)
        assert self.api is not None
        self.api.metrics.render()
        await asyncio.sleep(0)
        gc.freeze()

    async def _collect_loop(self) -> None:
        """A full collection every FULL_GC_INTERVAL; what survives it (the caches'
        objects, mostly) is frozen, so that the next one walks only what came since.
        Every FULL_GC_THAW-th one first thaws everything, for cycles among older
        objects that have become garbage since."""
        rounds = 0
        while True:
            await asyncio.sleep(FULL_GC_INTERVAL)
            rounds += 1
            if rounds % FULL_GC_THAW == 0:
                gc.unfreeze()
            gc.collect()
            gc.freeze()

    async def _repair_loop(self, ctx: Context) -> None:
        """Give back Service addresses and node ports reserved for Services that were never
        written (a request cut short between the two writes)."""
        while True:
            await asyncio.sleep(REPAIR_INTERVAL)
            try:
                page = await ctx.backend.list("/registry/services/")
                released = await ctx.allocations.repair(
                    [orjson.loads(kv.value) for kv in page.items])
            except Exception as e:  # the store may be unavailable a while: next time
                log.warning("repairing service allocations: %s", e)
                continue
            if released:
                log.info("released %d service allocations no Service holds: %s",
                         len(released), ", ".join(released))

    async def _compact_loop(self) -> None:
        assert self.backend is not None
        seen: list[int] = []
        while True:
            await asyncio.sleep(COMPACT_INTERVAL)
            rev = await self.backend.current_revision()
            seen.append(rev)
            # compact to what was current one interval ago, always keeping the newest 1000
            if len(seen) >= 2:
                target = min(seen[-2], rev - KEEP_REVISIONS)
                if target > self.backend.compacted_revision():
                    await self.backend.compact(target)
                seen = seen[-2:]

    async def _open_datastore(self) -> SQLiteBackend | EtcdBackend:
        """SQLite in the data directory, or the etcd cluster of ``--datastore``."""
        if not self.datastore:
            return SQLiteBackend.open(self.data_dir / "state.db", fsync=self.fsync)
        from kybernetes.store.etcd import EtcdBackend

        endpoints, tls = parse_datastore(self.datastore)
        verify: Any = str(self.etcd_tls.get("cafile")) if self.etcd_tls.get("cafile") \
            else tls
        cert = ((str(self.etcd_tls["certfile"]), str(self.etcd_tls["keyfile"]))
                if self.etcd_tls.get("certfile") else None)
        return await EtcdBackend.connect(endpoints, verify=verify, cert=cert)

    def _encryption(self) -> EncryptionConfig:
        """``--encryption-provider-config``, or the data directory's own (a fresh AES-256
        key for Secrets, written at the first start)."""
        path = self.encryption_config
        if path is None:
            path = self.data_dir / "pki" / "encryption-config.yaml"
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(new_config_text())
        return load_config(path)

    async def stop(self) -> None:
        if self.api is not None:
            self.api.ready = False
        await cancel_and_wait(self._members_task)
        if self._members is not None:
            try:  # out of the kubernetes Service's endpoints before going
                async with asyncio.timeout(3):
                    await self._members.leave()
            except Exception as e:
                log.warning("leaving the kubernetes Service's endpoints: %s", e)
        if self.backend is not None:
            self.backend.close_watches()
        if self._http is not None:
            await self._http.stop()
        await cancel_and_wait(self._compactor, self._repair, self._warmup, self._full_gc)
        if self.crds is not None:
            await self.crds.stop()
        if self.backend is not None:
            await self.backend.close()
            self.backend = None
        if self.api is not None and self.api.audit is not None:
            self.api.audit.close()
