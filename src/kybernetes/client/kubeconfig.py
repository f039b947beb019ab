"""Connection settings for one API server, read from a kubeconfig file.

The current context picks a cluster (server URL, CA, TLS verification) and a user
(bearer token or client certificate)::

    config = load_kubeconfig("/var/lib/kyb/kubeconfig")
    config.server, config.namespace   # ("https://127.0.0.1:6443", "default")
    ctx = config.ssl_context()         # an ssl.SSLContext trusting only that CA
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(ValueError):
    """The kubeconfig file is missing, malformed, or does not name what it needs."""


@dataclass
class Config:
    """Where the API server is and how to authenticate to it."""

    server: str
    token: str | None = None
    ca_data: bytes | None = None
    client_cert_data: bytes | None = None
    client_key_data: bytes | None = None
    insecure: bool = False
    namespace: str = "default"
    fallback_servers: list[str] = field(default_factory=list)
    """Other API servers of the same cluster, tried in turn when one cannot be reached."""

    @classmethod
    def for_server(cls, url: str, token: str | None = None,
                   ca_pem: bytes | str | None = None) -> Config:
        """Settings for ``url`` (or several servers of one cluster, comma-separated) with
        an optional bearer token and CA bundle (PEM)."""
        ca = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
        first, *others = [u.strip().rstrip("/") for u in url.split(",") if u.strip()] or [url]
        return cls(server=first, token=token, ca_data=ca, fallback_servers=others)

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context trusting ``ca_data`` (or the system CAs) with the client cert loaded."""
        if self.ca_data:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode())
        else:
            ctx = ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert_data and self.client_key_data:
            _load_cert_chain(ctx, self.client_cert_data, self.client_key_data)
        return ctx


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # The ssl module reads certificates only from files, so stage them privately.
    with tempfile.TemporaryDirectory(prefix="kyb-tls-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)


def default_kubeconfig_path() -> Path:
    """``$KUBECONFIG`` (its first entry) or ``~/.kube/config``."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return Path(first) if first else Path.home() / ".kube" / "config"


def load_kubeconfig(path: str | os.PathLike[str] | None = None, *,
                    context: str | None = None) -> Config:
    """Read ``path`` (default: :func:`default_kubeconfig_path`) and resolve ``context``."""
    file = Path(path) if path is not None else default_kubeconfig_path()
    try:
        text = file.read_text()
    except OSError as e:
        raise KubeconfigError(f"cannot read kubeconfig {file}: {e.strerror}") from e
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise KubeconfigError(f"kubeconfig {file} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise KubeconfigError(f"kubeconfig {file} is not a mapping")
    return config_from_dict(doc, context=context, base_dir=file.parent, source=str(file))


def config_from_dict(doc: dict[str, Any], *, context: str | None = None,
                     base_dir: Path | None = None, source: str = "kubeconfig") -> Config:
    """Resolve a parsed kubeconfig document; relative file paths are taken from ``base_dir``."""
    ctx_name = context or doc.get("current-context") or ""
    if not ctx_name:
        raise KubeconfigError(f"{source}: no current-context is set")
    ctx = _named(doc, "contexts", "context", ctx_name, source)
    cluster = _named(doc, "clusters", "cluster", ctx.get("cluster", ""), source)
    user = _named(doc, "users", "user", ctx["user"], source) if ctx.get("user") else {}
    base = base_dir or Path.cwd()

    server = cluster.get("server")
    if not server:
        raise KubeconfigError(f'{source}: cluster "{ctx.get("cluster")}" has no server')
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = _read(base, user["tokenFile"], source).decode().strip()
    return Config(
        server=str(server).rstrip("/"),
        token=token or None,
        ca_data=_data_or_file(cluster, "certificate-authority", base, source),
        client_cert_data=_data_or_file(user, "client-certificate", base, source),
        client_key_data=_data_or_file(user, "client-key", base, source),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=ctx.get("namespace") or "default",
    )


def _named(doc: dict[str, Any], section: str, field: str, name: str,
           source: str) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field) or {}
            if not isinstance(value, dict):
                raise KubeconfigError(f'{source}: {field} "{name}" is not a mapping')
            return value
    raise KubeconfigError(f'{source}: {field} "{name}" not found')


def _data_or_file(section: dict[str, Any], field: str, base: Path, source: str) -> bytes | None:
    data = section.get(f"{field}-data")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError as e:
            raise KubeconfigError(f"{source}: {field}-data is not valid base64") from e
    if section.get(field):
        return _read(base, section[field], source)
    return None


def _read(base: Path, name: str, source: str) -> bytes:
    path = base / Path(name).expanduser()
    try:
        return path.read_bytes()
    except OSError as e:
        raise KubeconfigError(f"{source}: cannot read {path}: {e.strerror}") from e
