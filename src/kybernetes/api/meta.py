"""Object metadata helpers: timestamps, uids, generated names, owner references."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # upstream's utilrand alphabet (no vowels, no 0/1/3)
_MAX_GENERATED_NAME_LENGTH = 63
_RANDOM_LENGTH = 5


_last_second = -1
_last_text = ""


def rfc3339(epoch: float | None = None) -> str:
    """Whole-second RFC 3339 UTC time, as metav1.Time marshals (``2024-01-02T03:04:05Z``)."""
    global _last_second, _last_text
    second = int(time.time() if epoch is None else epoch)
    if second != _last_second:
        _last_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        _last_second = second
    return _last_text


def rfc3339_micro(epoch: float | None = None) -> str:
    """RFC 3339 with microseconds, as metav1.MicroTime marshals."""
    t = time.time() if epoch is None else epoch
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_uid_random = random.Random(os.urandom(32))  # uniqueness, not secrecy


def new_uid() -> str:
    """A random (version 4) UUID string: unique, not secret (no system call per uid)."""
    n = _uid_random.getrandbits(128)
    n = (n & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_suffix(n: int = _RANDOM_LENGTH) -> str:
    raw = os.urandom(n)
    return "".join(_ALNUM[b % len(_ALNUM)] for b in raw)


def generate_name(base: str) -> str:
    """``generateName`` + 5 random characters, truncating the base as upstream does."""
    max_base = _MAX_GENERATED_NAME_LENGTH - _RANDOM_LENGTH
    if len(base) > max_base:
        base = base[:max_base]
    return base + random_suffix()


def namespace_name(obj: Obj) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return m.get("namespace", "") or "", m.get("name", "") or ""


def object_key(obj: Obj) -> str:
    """``namespace/name`` (or ``name`` for cluster-scoped objects), as informers key them."""
    ns, name = namespace_name(obj)
    return f"{ns}/{name}" if ns else name


def controller_of(obj: Obj) -> Obj | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def is_being_deleted(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))
