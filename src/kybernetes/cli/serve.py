"""``kyb server``: the control plane and the components that run beside it."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from kybernetes.apiserver.server import ControlPlane

log = logging.getLogger(__name__)


async def run_server(*, data_dir: Path, port: int, host: str, advertise_address: str,
                     fsync: bool) -> int:
    from kybernetes.cli.main import install_stop_signals

    stop = asyncio.Event()
    install_stop_signals(stop)
    cp = ControlPlane(data_dir=data_dir, port=port, host=host,
                      advertise_address=advertise_address, fsync=fsync)
    try:
        await cp.start()
    except OSError as e:
        log.error("cannot start the API server: %s", e)
        await cp.stop()
        return 1
    components = await start_components(cp)
    print(f"kybernetes is ready: export KUBECONFIG={cp.kubeconfig_path}", flush=True)
    await stop.wait()
    log.info("shutting down")
    for stop_component in reversed(components):
        await stop_component()
    await cp.stop()
    return 0


async def start_components(cp: ControlPlane) -> list[Callable[[], Awaitable[None]]]:
    """Controllers and other components that talk to the API server; returns stoppers.

    Imported here, after the API server is ready, and on a thread so that the event
    loop keeps answering requests meanwhile.
    """
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.garbagecollector")
    await asyncio.to_thread(importlib.import_module, "kybernetes.controllers.namespace")
    from kybernetes.client import Client
    from kybernetes.controllers.garbagecollector import GarbageCollector
    from kybernetes.controllers.namespace import NamespaceController

    client = Client.from_kubeconfig(cp.kubeconfig_path)
    gc = GarbageCollector(client)
    namespaces = NamespaceController(client)
    await gc.start()
    await namespaces.start()
    return [client.aclose, gc.stop, namespaces.stop]
