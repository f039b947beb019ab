"""Informers: a local cache of one resource kept current by list + watch.

An :class:`Informer` lists (page by page), then watches from the list's resourceVersion,
re-watching from the last one it saw when a stream ends. When the server answers 410
Gone it lists again and tells its handlers what changed in between::

    pods = Informer(client, "v1", "pods", namespace="default")
    pods.add_handler(on_add=lambda p: queue.add(object_key(p)))
    pods.add_index("node", lambda p: [p["spec"].get("nodeName", "")])
    pods.start()
    await pods.wait_synced()
    pods.by_index("node", "gpu-1")
    await pods.stop()

Handlers are plain callables, run in the informer's task in event order, and get the
cached dicts themselves: they must not modify them.

:class:`InformerFactory` shares one informer per resource and selector among components.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import random
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kybernetes.aio.backoff import Backoff
from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api.errors import StatusError
from kybernetes.client.rest import Client, Object, status_error

log = logging.getLogger(__name__)

IndexFunc = Callable[[Object], Iterable[str]]
AddFunc = Callable[[Object], None]
UpdateFunc = Callable[[Object, Object], None]
DeleteFunc = Callable[[Object], None]

NAMESPACE_INDEX = "namespace"

# A watch that lasted at least this long counts as healthy even if it saw no event.
_HEALTHY_WATCH_S = 1.0


def object_key(obj: Object) -> str:
    """The cache key of an object: ``namespace/name``, or ``name`` when cluster-scoped."""
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace"), meta.get("name", "")
    return f"{ns}/{name}" if ns else str(name)


def namespace_index(obj: Object) -> list[str]:
    """Index function for :data:`NAMESPACE_INDEX`: the object's namespace."""
    ns = (obj.get("metadata") or {}).get("namespace")
    return [ns] if ns else []


def _rv(obj: Object) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclass(frozen=True, eq=False)
class EventHandler:
    """One registration of add/update/delete callbacks (``None`` ignores that event)."""

    on_add: AddFunc | None = None
    on_update: UpdateFunc | None = None
    on_delete: DeleteFunc | None = None


class Informer:
    """List + watch cache for one resource, with handlers and indexes."""

    def __init__(self, client: Client, api_version: str, plural: str, *,
                 namespace: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None, page_size: int = 500,
                 clock: Clock = SYSTEM_CLOCK, backoff: Backoff | None = None,
                 watch_timeout: tuple[int, int] = (300, 600),
                 transform: Callable[[Object], Object] | None = None) -> None:
        self.client = client
        self.api_version = api_version
        self.plural = plural
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self._clock = clock
        self._backoff = backoff or Backoff(base=0.8, cap=30.0)
        self._watch_timeout = watch_timeout
        self._transform = transform
        """Applied to every object before it is cached (e.g. keep only metadata)."""
        self._cache: dict[str, Object] = {}
        self._handlers: list[EventHandler] = []
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        self._resource_version = ""
        self._synced = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.shared = False
        """Handed out by :func:`shared_informer`: each ``start`` is then one more user,
        each ``stop`` one fewer, and it stops with its last user."""
        self._users = 0

    def __repr__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"<Informer {self.api_version} {self.plural}{where}>"

    # -- reading -----------------------------------------------------------------

    def get(self, key: str) -> Object | None:
        """The cached object with key ``namespace/name`` (or ``name``), if any."""
        return self._cache.get(key)

    def list(self) -> builtins.list[Object]:
        """Every cached object."""
        return [*self._cache.values()]

    def keys(self) -> builtins.list[str]:
        """Every cached key."""
        return [*self._cache]

    @property
    def resource_version(self) -> str:
        """The last resourceVersion seen (from a list, an event or a bookmark)."""
        return self._resource_version

    @property
    def has_synced(self) -> bool:
        """Whether the first full list has been loaded into the cache."""
        return self._synced.is_set()

    async def wait_synced(self) -> bool:
        """Wait for the first list; False if the informer was stopped first.

        Bound the wait with ``asyncio.timeout`` where needed.
        """
        synced = asyncio.ensure_future(self._synced.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
            stopped.cancel()
            await asyncio.gather(synced, stopped, return_exceptions=True)
        return self.has_synced

    # -- handlers and indexes ------------------------------------------------------

    def add_handler(self, on_add: AddFunc | None = None, on_update: UpdateFunc | None = None,
                    on_delete: DeleteFunc | None = None) -> EventHandler:
        """Register callbacks; a late handler first gets an add for every cached object."""
        handler = EventHandler(on_add, on_update, on_delete)
        self._handlers.append(handler)
        if on_add is not None:
            for obj in self.list():
                self._call(on_add, obj)
        return handler

    def remove_handler(self, handler: EventHandler) -> None:
        """Stop calling ``handler``."""
        with contextlib.suppress(ValueError):
            self._handlers.remove(handler)

    def add_index(self, name: str, fn: IndexFunc) -> None:
        """Index cached objects by ``fn(obj)`` (a list of values) under ``name``."""
        if name in self._index_funcs:
            if self._index_funcs[name] is fn:
                return  # the same index, asked for again (by another user of a shared one)
            raise ValueError(f"index {name!r} already exists on {self!r}")
        self._index_funcs[name] = fn
        self._indices[name] = {}
        for key, obj in self._cache.items():
            self._index_one(name, key, obj)

    def by_index(self, name: str, value: str) -> builtins.list[Object]:
        """Cached objects whose index ``name`` includes ``value``."""
        return [self._cache[k] for k in sorted(self.index_keys(name, value))]

    def index_keys(self, name: str, value: str) -> set[str]:
        """Keys of the cached objects whose index ``name`` includes ``value``."""
        try:
            index = self._indices[name]
        except KeyError:
            raise KeyError(f"no index {name!r} on {self!r}") from None
        return set(index.get(value, ()))

    def _index_one(self, name: str, key: str, obj: Object) -> None:
        try:
            values = set(self._index_funcs[name](obj))
        except Exception:
            log.exception("index %s failed on %s %s", name, self.plural, key)
            return
        index = self._indices[name]
        for v in values:
            index.setdefault(v, set()).add(key)

    def _unindex_one(self, name: str, key: str, obj: Object) -> None:
        index = self._indices[name]
        try:
            values = set(self._index_funcs[name](obj))
        except Exception:
            values = {v for v, keys in index.items() if key in keys}
        for v in values:
            keys = index.get(v)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[v]

    # -- cache changes -----------------------------------------------------------

    def _store(self, key: str, obj: Object) -> Object | None:
        old = self._cache.get(key)
        for name in self._index_funcs:
            if old is not None:
                self._unindex_one(name, key, old)
            self._index_one(name, key, obj)
        self._cache[key] = obj
        return old

    def _remove(self, key: str) -> Object | None:
        old = self._cache.pop(key, None)
        if old is not None:
            for name in self._index_funcs:
                self._unindex_one(name, key, old)
        return old

    def _call(self, fn: Callable[..., None], *args: Object) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%r handler %s failed", self, getattr(fn, "__qualname__", fn))

    def _notify_add(self, obj: Object) -> None:
        for h in [*self._handlers]:
            if h.on_add is not None:
                self._call(h.on_add, obj)

    def _notify_update(self, old: Object, new: Object) -> None:
        for h in [*self._handlers]:
            if h.on_update is not None:
                self._call(h.on_update, old, new)

    def _notify_delete(self, obj: Object) -> None:
        for h in [*self._handlers]:
            if h.on_delete is not None:
                self._call(h.on_delete, obj)

    def _replace(self, items: builtins.list[Object], resource_version: str) -> None:
        """Load a full list, telling handlers what differs from the cache."""
        if self._transform is not None:
            items = [self._transform(o) for o in items]
        fresh = {object_key(o): o for o in items}
        for key in [k for k in self._cache if k not in fresh]:
            old = self._remove(key)
            if old is not None:
                self._notify_delete(old)
        for key, obj in fresh.items():
            old = self._store(key, obj)
            if old is None:
                self._notify_add(obj)
            elif _rv(old) != _rv(obj) or (not _rv(obj) and old != obj):
                self._notify_update(old, obj)
        self._resource_version = resource_version
        self._synced.set()

    def _apply(self, type_: str, obj: Object) -> None:
        """Apply one watch event (not ERROR) to the cache and the handlers."""
        rv = _rv(obj)
        if self._transform is not None and type_ != "BOOKMARK":
            obj = self._transform(obj)
        if type_ == "BOOKMARK":
            pass
        elif type_ in ("ADDED", "MODIFIED"):
            old = self._store(object_key(obj), obj)
            if old is None:
                self._notify_add(obj)
            else:
                self._notify_update(old, obj)
        elif type_ == "DELETED":
            self._remove(object_key(obj))
            self._notify_delete(obj)
        else:
            log.warning("%r: ignoring watch event of type %r", self, type_)
            return
        if rv:
            self._resource_version = rv

    # -- running -----------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start listing and watching in a named background task (idempotent)."""
        self._users += 1
        if self._task is None or self._task.done():
            self._stopped.clear()
            name = f"informer:{self.api_version}/{self.plural}"
            if self.namespace:
                name += f"@{self.namespace}"
            self._task = spawn(self._run(), name=name)
        return self._task

    async def stop(self) -> None:
        """Cancel the background task and wait until it has ended (a shared informer: once
        every user has stopped it)."""
        self._users = max(0, self._users - 1)
        if self.shared and self._users > 0:
            return
        task, self._task = self._task, None
        self._stopped.set()
        await cancel_and_wait(task)

    @property
    def running(self) -> bool:
        """Whether the background task is alive."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        need_list = True
        gone_again = False  # a 410 since the last healthy watch: back off before listing
        key = ("informer", id(self))
        while True:
            delay = 0.0
            try:
                if need_list:
                    await self._list()
                    need_list = False
                if await self._watch():
                    self._backoff.forget(key)
                    gone_again = False
                    continue
                delay = self._backoff.next(key)
            except StatusError as e:
                if e.code == 410:
                    log.info("%r: resourceVersion %s is too old, listing again",
                             self, self._resource_version)
                    need_list = True
                    if gone_again:
                        delay = self._backoff.next(key)
                    gone_again = True
                else:
                    delay = self._backoff.next(key)
                    log.warning("%r: %s (%s); retrying in %.1fs", self, e.message, e.reason, delay)
            except Exception as e:
                delay = self._backoff.next(key)
                log.warning("%r: %s: %s; retrying in %.1fs", self, type(e).__name__, e, delay)
            if delay > 0:
                await self._clock.sleep(delay)

    async def _list(self) -> None:
        result = await self.client.list_all(
            self.api_version, self.plural, namespace=self.namespace,
            label_selector=self.label_selector, field_selector=self.field_selector,
            page_size=self.page_size)
        rv = str((result.get("metadata") or {}).get("resourceVersion") or "")
        self._replace(list(result.get("items") or []), rv)

    async def _watch(self) -> bool:
        """Watch until the stream ends; True if it was healthy (events, or it lasted)."""
        started = self._clock.monotonic()
        progressed = False
        events = self.client.watch(
            self.api_version, self.plural, namespace=self.namespace,
            resource_version=self._resource_version or None,
            label_selector=self.label_selector, field_selector=self.field_selector,
            timeout_seconds=random.randint(*self._watch_timeout), allow_bookmarks=True)
        async with contextlib.aclosing(events):
            async for type_, obj in events:
                if type_ == "ERROR":
                    raise status_error(obj)
                self._apply(type_, obj)
                progressed = True
        return progressed or self._clock.monotonic() - started >= _HEALTHY_WATCH_S


_SHARED: weakref.WeakKeyDictionary[Client, dict[tuple[str, ...], Informer]] = \
    weakref.WeakKeyDictionary()


def shared_informer(client: Client, api_version: str, plural: str, *,
                    namespace: str | None = None, label_selector: str | None = None,
                    field_selector: str | None = None) -> Informer:
    """The one informer of ``client``'s process for these arguments, so that components
    sharing a client (scheduler, controllers, fake nodes in ``kyb server``) cache and decode
    each object once. Each user calls ``start()`` and ``stop()`` as for its own informer;
    handlers and indexes add up (an index of the same name must be the same function)."""
    try:
        registry = _SHARED.setdefault(client, {})
    except TypeError:  # a stand-in client (tests) that cannot be shared
        return Informer(client, api_version, plural, namespace=namespace,
                        label_selector=label_selector, field_selector=field_selector)
    key = (api_version, plural, namespace or "", label_selector or "", field_selector or "")
    inf = registry.get(key)
    if inf is None:
        inf = registry[key] = Informer(client, api_version, plural, namespace=namespace,
                                       label_selector=label_selector,
                                       field_selector=field_selector)
        inf.shared = True
    return inf


class InformerFactory:
    """One shared :class:`Informer` per resource, namespace and selectors.

    ::

        factory = InformerFactory(client)
        pods = factory.informer("v1", "pods")
        factory.start()
        await factory.wait_synced()
        ...
        await factory.stop()
    """

    def __init__(self, client: Client, *, clock: Clock = SYSTEM_CLOCK,
                 **informer_options: Any) -> None:
        self.client = client
        self._clock = clock
        self._options = informer_options
        self._informers: dict[tuple[str, str, str | None, str | None, str | None], Informer] = {}
        self._started = False

    def informer(self, api_version: str, plural: str, *, namespace: str | None = None,
                 label_selector: str | None = None,
                 field_selector: str | None = None) -> Informer:
        """The shared informer for these arguments (started at once if the factory is)."""
        key = (api_version, plural, namespace, label_selector, field_selector)
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(self.client, api_version, plural, namespace=namespace,
                           label_selector=label_selector, field_selector=field_selector,
                           clock=self._clock, **self._options)
            self._informers[key] = inf
            if self._started:
                inf.start()
        return inf

    def informers(self) -> list[Informer]:
        """Every informer handed out so far."""
        return [*self._informers.values()]

    def start(self) -> None:
        """Start every informer, and any asked for later."""
        self._started = True
        for inf in self._informers.values():
            inf.start()

    async def wait_synced(self) -> bool:
        """Wait until every informer has synced; False if one was stopped first."""
        results = await asyncio.gather(*(inf.wait_synced() for inf in self._informers.values()))
        return all(results)

    async def stop(self) -> None:
        """Stop every informer and wait for them."""
        self._started = False
        await asyncio.gather(*(inf.stop() for inf in self._informers.values()))
