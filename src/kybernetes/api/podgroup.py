"""The coscheduling ``PodGroup`` of kubernetes-sigs/scheduler-plugins
(``scheduling.x-k8s.io/v1alpha1``), served as a built-in kind: a gang of pods that the
scheduler places all together or not at all.

Pods join a group by the label ``scheduling.x-k8s.io/pod-group: <group name>`` (same
namespace). Field names, types and printer columns follow scheduler-plugins'
``apis/scheduling/v1alpha1`` and its CRD (``manifests/coscheduling/crd.yaml``); the status
keeps ``scheduled`` and the ``PreScheduling``/``Scheduled`` phases of the releases that
still had them.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]
Obj = dict[str, Any]

GROUP = "scheduling.x-k8s.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PodGroup"
PLURAL = "podgroups"

POD_GROUP_LABEL = f"{GROUP}/pod-group"
"""The label that makes a pod a member of the PodGroup it names (same namespace)."""

POD_GROUP_INDEX = "pod-group"
"""Name of the pod informer index by :func:`pod_group_index` (``<namespace>/<group>``),
shared by the scheduler and the PodGroup controller."""

PENDING = "Pending"
PRE_SCHEDULING = "PreScheduling"
SCHEDULING = "Scheduling"
SCHEDULED = "Scheduled"
RUNNING = "Running"
UNKNOWN = "Unknown"
FINISHED = "Finished"
FAILED = "Failed"
PHASES = (PENDING, PRE_SCHEDULING, SCHEDULING, SCHEDULED, RUNNING, UNKNOWN, FINISHED, FAILED)


def pod_group_name(pod: Obj) -> str:
    """The name of the PodGroup ``pod`` belongs to ("" when none)."""
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(POD_GROUP_LABEL) or "")


def pod_group_index(pod: Obj) -> list[str]:
    """Index function for :data:`POD_GROUP_INDEX`: ``[<namespace>/<group>]`` or ``[]``."""
    md = pod.get("metadata") or {}
    name = (md.get("labels") or {}).get(POD_GROUP_LABEL)
    return [f"{md.get('namespace') or ''}/{name}"] if name else []


def min_member(pg: Obj) -> int:
    return int((pg.get("spec") or {}).get("minMember") or 0)


def schedule_timeout(pg: Obj) -> int | None:
    """``spec.scheduleTimeoutSeconds`` when set and positive."""
    value = (pg.get("spec") or {}).get("scheduleTimeoutSeconds")
    return int(value) if isinstance(value, int) and value > 0 else None


# -- schema ------------------------------------------------------------------------------

_META = "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."
_QUANTITY = "#/$defs/io.k8s.apimachinery.pkg.api.resource.Quantity"
P = "io.x-k8s.scheduling.v1alpha1."


def _s(desc: str) -> Schema:
    return {"type": "string", "description": desc}


def _i(desc: str) -> Schema:
    return {"type": "integer", "format": "int32", "description": desc}


DEFINITIONS: dict[str, Schema] = {
    P + "PodGroupSpec": {
        "description": "PodGroupSpec represents the template of a pod group.",
        "type": "object",
        "properties": {
            "minMember": _i("MinMember defines the minimal number of members/tasks to run the "
                            "pod group; if there's not enough resources to start all tasks, "
                            "the scheduler will not start anyone."),
            "minResources": {"type": "object", "description": "MinResources defines the "
                             "minimal resource of members/tasks to run the pod group; if "
                             "there's not enough resources to start all tasks, the scheduler "
                             "will not start anyone.",
                             "additionalProperties": {"$ref": _QUANTITY}},
            "scheduleTimeoutSeconds": _i("ScheduleTimeoutSeconds defines the maximal time of "
                                         "members/tasks to wait before run the pod group;"),
        },
    },
    P + "PodGroupStatus": {
        "description": "PodGroupStatus represents the current state of a pod group.",
        "type": "object",
        "properties": {
            "phase": _s("Current phase of PodGroup."),
            "occupiedBy": _s("OccupiedBy marks the workload (e.g., deployment, statefulset) "
                             "UID that occupy the podgroup. It is empty if not initialized."),
            "scheduled": _i("The number of pods of the group bound to a node."),
            "running": _i("The number of actively running pods."),
            "succeeded": _i("The number of pods which reached phase Succeeded."),
            "failed": _i("The number of pods which reached phase Failed."),
            "scheduleStartTime": {"$ref": _META + "Time",
                                  "description": "ScheduleStartTime of the group"},
        },
    },
    P + "PodGroup": {
        "description": "PodGroup is a collection of Pod; used for batch workload.",
        "type": "object",
        "properties": {
            "apiVersion": _s("APIVersion defines the versioned schema of this representation "
                             "of an object."),
            "kind": _s("Kind is a string value representing the REST resource this object "
                       "represents."),
            "metadata": {"$ref": _META + "ObjectMeta",
                         "description": "Standard object's metadata."},
            "spec": {"$ref": "#/$defs/" + P + "PodGroupSpec",
                     "description": "Specification of the desired behavior of the pod group."},
            "status": {"$ref": "#/$defs/" + P + "PodGroupStatus",
                       "description": "Status represents the current information about a pod "
                                      "group. This data may not be up to date."},
        },
        "x-kubernetes-group-version-kind": [{"group": GROUP, "version": VERSION,
                                             "kind": KIND}],
    },
    P + "PodGroupList": {
        "description": "PodGroupList is a collection of pod groups.",
        "type": "object",
        "properties": {
            "apiVersion": _s("APIVersion"),
            "kind": _s("Kind"),
            "metadata": {"$ref": _META + "ListMeta", "description": "Standard list metadata."},
            "items": {"type": "array", "items": {"$ref": "#/$defs/" + P + "PodGroup"},
                      "description": "Items is the list of PodGroup"},
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [{"group": GROUP, "version": VERSION,
                                             "kind": "PodGroupList"}],
    },
}

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "Current phase of PodGroup."},
    {"name": "MinMember", "type": "integer", "jsonPath": ".spec.minMember",
     "description": "MinMember defines the minimal number of members/tasks to run the pod "
                    "group."},
    {"name": "Running", "type": "string", "jsonPath": ".status.running",
     "description": "The number of actively running pods."},
    {"name": "Succeeded", "type": "string", "jsonPath": ".status.succeeded",
     "description": "The number of pods which reached phase Succeeded."},
    {"name": "Failed", "type": "string", "jsonPath": ".status.failed",
     "description": "The number of pods which reached phase Failed."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": "Age is the time PodGroup was created."},
]
"""As scheduler-plugins' CRD declares them."""
