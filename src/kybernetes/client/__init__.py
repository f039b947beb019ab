"""L3: what every component uses to talk to the API server: REST client, informers, workqueue."""

from kybernetes.client.informer import (
    NAMESPACE_INDEX,
    EventHandler,
    Informer,
    InformerFactory,
    namespace_index,
    object_key,
    shared_informer,
)
from kybernetes.client.kubeconfig import Config, KubeconfigError, load_kubeconfig
from kybernetes.client.leaderelection import LeaderElector
from kybernetes.client.rest import Client, Object, WatchEvent, resource_path
from kybernetes.client.workqueue import Result, ShutDown, TerminalError, WorkQueue, run_workers

__all__ = [
    "NAMESPACE_INDEX",
    "Client",
    "Config",
    "EventHandler",
    "Informer",
    "InformerFactory",
    "KubeconfigError",
    "LeaderElector",
    "Object",
    "Result",
    "ShutDown",
    "TerminalError",
    "WatchEvent",
    "WorkQueue",
    "load_kubeconfig",
    "namespace_index",
    "object_key",
    "resource_path",
    "run_workers",
    "shared_informer",
]
