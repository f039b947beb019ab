"""Every controller of kube-controller-manager, started together over shared informers.

``kyb server`` runs them in its own process and ``kyb controller-manager`` in a separate
one, each only while it leads (kybernetes.client.leaderelection)::

    stoppers = await start_controllers(client)
    ...
    for stop in reversed(stoppers):
        await stop()

The controllers' modules are imported on a thread, so that an API server sharing the
event loop keeps answering requests while they load.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Awaitable, Callable

from kybernetes.client import Client, shared_informer

Stopper = Callable[[], Awaitable[None]]


MODULES = ("garbagecollector", "namespace", "persistentvolume", "deployment", "daemonset",
           "statefulset", "cronjob", "job", "ttlafterfinished", "endpointslice", "disruption",
           "servicelb", "nodelifecycle", "resourcequota", "podautoscaler", "training.controller",
           "podgroup", "gpuallocation")


async def _load(*modules: str) -> None:
    for name in modules:
        await asyncio.to_thread(importlib.import_module, f"kybernetes.controllers.{name}")


async def load_controllers() -> None:
    """Import every controller's module now, on a thread (a process that may lead later
    then starts its controllers at once, and its other imports do not interleave)."""
    await _load(*MODULES)


async def start_controllers(client: Client, *, node_monitor_grace_period: float = 40.0,
                            hpa_sync_period: float = 15.0,
                            hpa_downscale_stabilization: float = 300.0) -> list[Stopper]:
    """Start the controllers; returns their stoppers, to be called in reverse order.

    ``client`` stays the caller's to close.
    """
    await _load("garbagecollector", "namespace", "persistentvolume")
    from kybernetes.controllers.garbagecollector import GarbageCollector
    from kybernetes.controllers.namespace import NamespaceController
    from kybernetes.controllers.persistentvolume import PersistentVolumeController

    gc = GarbageCollector(client)
    namespaces = NamespaceController(client)
    volumes = PersistentVolumeController(client)
    await gc.start()
    await namespaces.start()
    await volumes.start()
    stoppers: list[Stopper] = [gc.stop, namespaces.stop, volumes.stop]
    # ReplicaSets and Deployments: one pod and one ReplicaSet informer shared by both
    await _load("deployment")
    from kybernetes.controllers.deployment import DeploymentController
    from kybernetes.controllers.replicaset import ReplicaSetController

    replicasets = ReplicaSetController(client)
    deployments = DeploymentController(client, pods=replicasets.pods,
                                       replicasets=replicasets.replicasets)
    await replicasets.start()
    await deployments.start()
    stoppers += [replicasets.stop, deployments.stop]
    # StatefulSets and DaemonSets: sharing the ReplicaSet controller's pod informer
    await _load("daemonset", "statefulset")
    from kybernetes.controllers.daemonset import DaemonSetController
    from kybernetes.controllers.statefulset import StatefulSetController

    for workload in (StatefulSetController(client, pods=replicasets.pods),
                     DaemonSetController(client, pods=replicasets.pods)):
        await workload.start()
        stoppers.append(workload.stop)
    # Jobs, CronJobs and the TTL-after-finished cleanup: one Job informer shared by the three
    await _load("cronjob", "job", "ttlafterfinished")
    from kybernetes.controllers.cronjob import CronJobController
    from kybernetes.controllers.job import JobController
    from kybernetes.controllers.ttlafterfinished import TTLAfterFinishedController

    jobs_informer = shared_informer(client, "batch/v1", "jobs")
    # the pod failure back-off's base (10 s); tests shorten it
    job_backoff = float(os.environ.get("KYB_JOB_BACKOFF_BASE_SECONDS") or 10.0)
    job_ctl = JobController(client, jobs=jobs_informer, backoff_base=job_backoff)
    cronjob_ctl = CronJobController(client, jobs=jobs_informer)
    ttl_ctl = TTLAfterFinishedController(client, jobs=jobs_informer)
    for start_controller in (job_ctl.start, cronjob_ctl.start, ttl_ctl.start):
        await start_controller()
    jobs_informer.start()
    stoppers += [jobs_informer.stop, job_ctl.stop, cronjob_ctl.stop, ttl_ctl.stop]
    # Endpoints, EndpointSlices and PodDisruptionBudget status: one pod and one Service
    # informer shared by the three
    await _load("endpointslice", "disruption", "servicelb")
    from kybernetes.controllers.disruption import DisruptionController
    from kybernetes.controllers.endpoints import EndpointsController
    from kybernetes.controllers.endpointslice import EndpointSliceController
    from kybernetes.controllers.servicelb import ServiceLBController

    ep_pods = shared_informer(client, "v1", "pods")
    ep_services = shared_informer(client, "v1", "services")
    endpoints_ctl = EndpointsController(client, pods=ep_pods, services=ep_services)
    slices_ctl = EndpointSliceController(client, pods=ep_pods, services=ep_services)
    disruption_ctl = DisruptionController(client, pods=ep_pods)
    service_lb = ServiceLBController(client, services=ep_services)
    for start_controller in (endpoints_ctl.start, slices_ctl.start, disruption_ctl.start,
                             service_lb.start):
        await start_controller()
    ep_pods.start()
    ep_services.start()
    stoppers += [ep_pods.stop, ep_services.stop, endpoints_ctl.stop, slices_ctl.stop,
                 disruption_ctl.stop, service_lb.stop]
    # node lifecycle and taint eviction: silent nodes go Unknown and tainted, pods evicted
    await _load("nodelifecycle")
    from kybernetes.controllers.nodelifecycle import NodeLifecycleController

    node_lifecycle = NodeLifecycleController(client, grace_period=node_monitor_grace_period,
                                             pods=replicasets.pods)
    await node_lifecycle.start()
    stoppers.append(node_lifecycle.stop)
    # ResourceQuota status: hard and used, released as objects go (shares the pod informer)
    await _load("resourcequota")
    from kybernetes.controllers.resourcequota import ResourceQuotaController

    quota_ctl = ResourceQuotaController(client, pods=replicasets.pods)
    await quota_ctl.start()
    stoppers.append(quota_ctl.stop)
    # HorizontalPodAutoscalers (share the pod informer)
    await _load("podautoscaler")
    from kybernetes.controllers.podautoscaler import PodAutoscalerController

    hpa_ctl = PodAutoscalerController(client, pods=replicasets.pods,
                                      sync_period=hpa_sync_period,
                                      downscale_stabilization=hpa_downscale_stabilization)
    await hpa_ctl.start()
    stoppers.append(hpa_ctl.stop)
    # Kubeflow training jobs (PyTorchJob, TFJob; share the pod informer)
    await _load("training.controller")
    from kybernetes.controllers.training.controller import TrainingJobController

    training_ctl = TrainingJobController(client, pods=replicasets.pods)
    await training_ctl.start()
    stoppers.append(training_ctl.stop)
    # coscheduling PodGroups' status (shares the pod informer)
    await _load("podgroup")
    from kybernetes.controllers.podgroup import PodGroupController

    podgroup_ctl = PodGroupController(client, pods=replicasets.pods)
    await podgroup_ctl.start()
    stoppers.append(podgroup_ctl.stop)
    # per-device GPU allocation on the nodes (shares the pod informer)
    await _load("gpuallocation")
    from kybernetes.controllers.gpuallocation import GpuAllocationController

    gpu_ctl = GpuAllocationController(client, pods=replicasets.pods)
    await gpu_ctl.start()
    stoppers.append(gpu_ctl.stop)
    return stoppers


async def stop_controllers(stoppers: list[Stopper]) -> None:
    """Stop what :func:`start_controllers` started, last first."""
    for stop in reversed(stoppers):
        await stop()
