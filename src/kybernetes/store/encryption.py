"""Encryption at rest: a Backend that encrypts chosen resources' values before they are
stored, as kube-apiserver's storage transformers do with an ``EncryptionConfiguration``.

    cfg = load_config(Path("encryption.yaml"))      # apiserver.config.k8s.io/v1
    backend = EncryptedBackend(SQLiteBackend.open(...), cfg)

Values under ``/registry/<resource>/`` are written with the first provider of that
resource and read with whichever provider wrote them: an ``aesgcm`` value is
``k8s:enc:aesgcm:v1:<key name>:`` + a 12-byte nonce + AES-256-GCM ciphertext (the key
path as associated data, so that a value cannot be moved to another key); a value without
that prefix was written by ``identity`` (in clear, e.g. before encryption was configured).
Rotation: put the new key first and keep the old one after it; values are re-encrypted
with the new key when next written (``kubectl get secrets -A -o json | kubectl replace
-f -`` rewrites them all); then the old key can go.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kybernetes.store.backend import (
    Backend,
    Event,
    KeyValue,
    ListResult,
    StoreError,
    Watch,
    batches,
)

PREFIX = b"k8s:enc:aesgcm:v1:"
NONCE = 12


class ConfigError(ValueError):
    pass


class DecryptError(StoreError):
    """A stored value that no configured key decrypts."""


@dataclass(frozen=True)
class Provider:
    """``aesgcm`` with named keys (the first encrypts), or ``identity`` (no keys)."""

    keys: tuple[tuple[str, bytes], ...] = ()

    @property
    def identity(self) -> bool:
        return not self.keys


@dataclass(frozen=True)
class Config:
    resources: dict[str, tuple[Provider, ...]]
    """Plural (``secrets``) → its providers in order."""


def parse_config(doc: Any, *, source: str = "encryption config") -> Config:
    if not isinstance(doc, dict) or doc.get("kind") != "EncryptionConfiguration":
        raise ConfigError(f"{source}: not an apiserver.config.k8s.io/v1 EncryptionConfiguration")
    out: dict[str, tuple[Provider, ...]] = {}
    for i, entry in enumerate(doc.get("resources") or []):
        providers = []
        for j, p in enumerate(entry.get("providers") or []):
            where = f"{source}: resources[{i}].providers[{j}]"
            if not isinstance(p, dict) or len(p) != 1:
                raise ConfigError(f"{where}: exactly one provider type is required")
            kind, spec = next(iter(p.items()))
            if kind == "identity":
                providers.append(Provider())
            elif kind == "aesgcm":
                keys = []
                for k, key in enumerate((spec or {}).get("keys") or []):
                    try:
                        secret = base64.b64decode(str(key.get("secret", "")), validate=True)
                    except (binascii.Error, ValueError):
                        secret = b""
                    if len(secret) not in (16, 24, 32):
                        raise ConfigError(f"{where}.aesgcm.keys[{k}].secret: must be 16, 24 "
                                          "or 32 bytes, base64 encoded")
                    name = str(key.get("name") or "")
                    if not name or ":" in name:
                        raise ConfigError(f"{where}.aesgcm.keys[{k}].name: a name without "
                                          "':' is required")
                    keys.append((name, secret))
                if not keys:
                    raise ConfigError(f"{where}.aesgcm.keys: at least one key is required")
                providers.append(Provider(tuple(keys)))
            else:
                raise ConfigError(f"{where}: unsupported provider {kind!r} (aesgcm, identity)")
        if not providers:
            raise ConfigError(f"{source}: resources[{i}].providers: at least one is required")
        for r in entry.get("resources") or []:
            out[str(r).split(".")[0]] = tuple(providers)
    return Config(out)


def load_config(path: Path) -> Config:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    return parse_config(doc, source=str(path))


def new_config_text() -> str:
    """A config encrypting Secrets with a fresh random AES-256 key (``kyb server``
    writes one into its data directory when given none)."""
    secret = base64.b64encode(os.urandom(32)).decode()
    return ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
            "resources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n"
            f"      - name: key1\n        secret: {secret}\n  - identity: {{}}\n")


class EncryptedBackend:
    """A :class:`Backend` storing the configured resources' values encrypted."""

    def __init__(self, backend: Backend, config: Config) -> None:
        self.backend = backend
        self._prefixes = tuple((f"/registry/{r}/", ps) for r, ps in config.resources.items())
        keys: dict[bytes, AESGCM] = {}
        for _, providers in self._prefixes:
            for p in providers:
                for name, secret in p.keys:
                    keys.setdefault(name.encode(), AESGCM(secret))
        self._keys = keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def _providers(self, key: str) -> tuple[Provider, ...] | None:
        for prefix, providers in self._prefixes:
            if key.startswith(prefix):
                return providers
        return None

    def encrypt(self, key: str, value: bytes) -> bytes:
        providers = self._providers(key)
        if providers is None or providers[0].identity:
            return value
        name, _ = providers[0].keys[0]
        nonce = os.urandom(NONCE)
        sealed = self._keys[name.encode()].encrypt(nonce, value, key.encode())
        return PREFIX + name.encode() + b":" + nonce + sealed

    def decrypt(self, kv: KeyValue) -> KeyValue:
        value = kv.value
        if not value.startswith(PREFIX):
            return kv  # identity (or a resource that is not encrypted)
        name, sep, rest = value[len(PREFIX):].partition(b":")
        aead = self._keys.get(name)
        if not sep or aead is None or len(rest) <= NONCE:
            raise DecryptError(f"{kv.key}: no configured key {name.decode(errors='replace')!r} "
                               "decrypts it")
        try:
            plain = aead.decrypt(rest[:NONCE], rest[NONCE:], kv.key.encode())
        except InvalidTag:
            raise DecryptError(f"{kv.key}: key {name.decode()!r} does not decrypt it") from None
        return kv._replace(value=plain)

    def _may_hold(self, prefix: str) -> bool:
        """Whether keys under ``prefix`` may be encrypted (else reads pass as they are)."""
        return any(p.startswith(prefix) or prefix.startswith(p) for p, _ in self._prefixes)

    def _open(self, kv: KeyValue | None) -> KeyValue | None:
        return self.decrypt(kv) if kv is not None else None

    async def get(self, key: str) -> KeyValue | None:
        return self._open(await self.backend.get(key))

    async def list(self, prefix: str, *, start_after: str = "", limit: int = 0,
                   revision: int = 0) -> ListResult:
        page = await self.backend.list(prefix, start_after=start_after, limit=limit,
                                       revision=revision)
        if not self._may_hold(prefix) or \
                not any(kv.value.startswith(PREFIX) for kv in page.items):
            return page
        return ListResult([self.decrypt(kv) for kv in page.items], page.revision, page.more)

    async def create(self, key: str, value: bytes) -> KeyValue:
        kv = await self.backend.create(key, self.encrypt(key, value))
        return kv._replace(value=value)

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        kv = await self.backend.update(key, self.encrypt(key, value),
                                       expected_revision=expected_revision)
        return kv._replace(value=value)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        return self.decrypt(await self.backend.delete(key, expected_revision=expected_revision))

    async def watch(self, prefix: str, *, after_revision: int) -> Watch:
        watch = await self.backend.watch(prefix, after_revision=after_revision)
        return _DecryptingWatch(self, watch) if self._may_hold(prefix) else watch


class _DecryptingWatch:
    def __init__(self, backend: EncryptedBackend, watch: Watch) -> None:
        self._backend = backend
        self._watch = watch

    @property
    def overflowed(self) -> bool:
        return self._watch.overflowed

    @overflowed.setter
    def overflowed(self, value: bool) -> None:
        self._watch.overflowed = value

    def _open(self, events: list[Event] | None) -> list[Event] | None:
        if not events:
            return events
        out = []
        for e in events:
            if e.kv.value.startswith(PREFIX) or (e.prev is not None
                                                  and e.prev.value.startswith(PREFIX)):
                memo = e.memo.setdefault(("decrypted", id(self._backend)), {})
                opened = memo.get("event")
                if opened is None:
                    opened = memo["event"] = Event(e.type, self._backend.decrypt(e.kv),
                                                   self._backend._open(e.prev))
                out.append(opened)
            else:
                out.append(e)
        return out

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return batches(self)

    async def next(self, timeout: float | None = None) -> list[Event] | None:
        return self._open(await self._watch.next(timeout))

    def poll(self) -> list[Event] | None:
        return self._open(self._watch.poll())

    def close(self) -> None:
        self._watch.close()
