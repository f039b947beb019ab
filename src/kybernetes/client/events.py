"""Events about objects, as components record them (``core/v1`` Events).

The same event (object, type, reason, message) repeated within ten minutes updates the
first one's ``count`` and ``lastTimestamp`` instead of adding another, as client-go's
recorder aggregates them; ``kubectl describe`` then shows ``(x3 over 2m)``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kybernetes.api.errors import StatusError
from kybernetes.api.meta import rfc3339
from kybernetes.client.rest import Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]

REPEAT_WINDOW = 600.0
_MAX_REMEMBERED = 4096


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str = "") -> None:
        self.client = client
        self.component = component
        self.host = host
        self._seen: dict[tuple[str, ...], tuple[float, str, str, int]] = {}
        """key -> (first seen, event namespace, event name, count)."""

    async def emit(self, obj: Obj, typ: str, reason: str, message: str, *,
                   field_path: str = "") -> None:
        md = obj.get("metadata") or {}
        api_version = obj.get("apiVersion") or "v1"
        ns = md.get("namespace") or "default"
        key = (md.get("uid", ""), md.get("name", ""), typ, reason, message, field_path)
        now = time.monotonic()
        stamp = rfc3339(time.time())
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < REPEAT_WINDOW:
            _, ev_ns, ev_name, count = seen
            try:
                await self.client.patch("v1", "events", ev_name, {
                    "count": count + 1, "lastTimestamp": stamp}, namespace=ev_ns)
                self._seen[key] = (seen[0], ev_ns, ev_name, count + 1)
                return
            except StatusError as e:
                if e.code != 404:
                    log.debug("event %s for %s: %s", reason, md.get("name"), e.message)
                    return
        involved: Obj = {"apiVersion": api_version, "kind": obj.get("kind", ""),
                         "name": md.get("name"), "uid": md.get("uid"),
                         "resourceVersion": md.get("resourceVersion", "")}
        if md.get("namespace"):
            involved["namespace"] = md["namespace"]
        if field_path:
            involved["fieldPath"] = field_path
        name = f"{md.get('name')}.{time.time_ns():x}"
        source: Obj = {"component": self.component}
        if self.host:
            source["host"] = self.host
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": name, "namespace": ns},
              "involvedObject": involved, "reason": reason, "message": message, "type": typ,
              "source": source, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
              "reportingComponent": self.component, "reportingInstance": self.host}
        try:
            await self.client.create("v1", "events", ev, namespace=ns)
        except StatusError as e:
            log.debug("event %s for %s: %s", reason, md.get("name"), e.message)
            return
        if len(self._seen) >= _MAX_REMEMBERED:
            cutoff = now - REPEAT_WINDOW
            self._seen = {k: v for k, v in self._seen.items() if v[0] > cutoff}
            if len(self._seen) >= _MAX_REMEMBERED:
                self._seen.clear()
        self._seen[key] = (now, ns, name, 1)
