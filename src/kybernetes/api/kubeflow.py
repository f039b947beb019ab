"""Schemas of the Kubeflow training operator's ``kubeflow.org/v1`` jobs (PyTorchJob, TFJob),
served as built-in kinds. Pod templates refer to the Kubernetes definitions, so they are
checked like any pod template.

Field names and types follow training-operator release-1.9 ``pkg/apis/kubeflow.org/v1``.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_CORE = "#/$defs/io.k8s.api.core.v1."
_META = "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."
P = "org.kubeflow.v1."


def _obj(props: Schema, desc: str = "", required: list[str] | None = None) -> Schema:
    out: Schema = {"type": "object", "properties": props}
    if desc:
        out["description"] = desc
    if required:
        out["required"] = required
    return out


def _s(desc: str) -> Schema:
    return {"type": "string", "description": desc}


def _i(desc: str, fmt: str = "int32") -> Schema:
    return {"type": "integer", "format": fmt, "description": desc}


def _ref(name: str, desc: str = "") -> Schema:
    out: Schema = {"$ref": name}
    if desc:
        out["description"] = desc
    return out


DEFINITIONS: dict[str, Schema] = {
    P + "ReplicaSpec": _obj({
        "replicas": _i("Replicas is the desired number of replicas of the given template. "
                       "If unspecified, defaults to 1."),
        "template": _ref(_CORE + "PodTemplateSpec", "Template is the object that describes "
                         "the pod that will be created for this replica."),
        "restartPolicy": _s("Restart policy for all replicas within the job. One of Always, "
                            "OnFailure, Never and ExitCode. Default to Never."),
    }, "ReplicaSpec is a description of the replica"),
    P + "SchedulingPolicy": _obj({
        "minAvailable": _i("MinAvailable is the minimum number of pods that must run together "
                           "(gang scheduling)."),
        "queue": _s("Queue is the name of the queue the job is submitted to."),
        "minResources": {"type": "object", "description": "MinResources is the minimum "
                         "resources the job needs to start.",
                         "additionalProperties": _ref(
                             "#/$defs/io.k8s.apimachinery.pkg.api.resource.Quantity")},
        "priorityClass": _s("PriorityClass is the name of the PriorityClass of the job's "
                            "pods."),
        "scheduleTimeoutSeconds": _i("ScheduleTimeoutSeconds is how long the gang may wait "
                                     "to be scheduled."),
    }, "SchedulingPolicy encapsulates various scheduling policies of the distributed "
       "training job, for example `minAvailable` for gang-scheduling."),
    P + "RunPolicy": _obj({
        "cleanPodPolicy": _s("CleanPodPolicy defines the policy to kill pods after the job "
                             "completes: All, Running or None. Default to None."),
        "ttlSecondsAfterFinished": _i("TTLSecondsAfterFinished is the TTL to clean up jobs."),
        "activeDeadlineSeconds": _i("Specifies the duration in seconds relative to the "
                                    "startTime that the job may be active before the system "
                                    "tries to terminate it.", "int64"),
        "backoffLimit": _i("Optional number of retries before marking this job failed."),
        "schedulingPolicy": _ref("#/$defs/" + P + "SchedulingPolicy",
                                 "SchedulingPolicy defines the policy related to scheduling, "
                                 "e.g. gang-scheduling"),
        "suspend": {"type": "boolean", "description": "suspend specifies whether the Job "
                    "controller should create Pods or not."},
        "managedBy": _s("ManagedBy is used to indicate the controller or entity that manages "
                        "a job."),
        "restartScope": {"type": "string", "enum": ["Replica", "Job"], "description": (
            "RestartScope (a kybernetes extension, not in the Kubeflow API) says what is "
            "restarted when a replica fails and its restartPolicy allows a restart: "
            "\"Replica\" (the default, the Kubeflow training operator's behaviour) restarts "
            "the failed replica's pod alone; \"Job\" restarts every replica of the job "
            "together, so that collective jobs (torch.distributed, MPI-style all-reduce), "
            "whose surviving ranks would otherwise wait forever for the lost one, never "
            "hang. Left unset it means Replica, and no default is written into the object.")},
    }, "RunPolicy encapsulates various runtime policies of the distributed training job."),
    P + "RDZVConf": _obj({"key": _s("key"), "value": _s("value")}),
    P + "ElasticPolicy": _obj({
        "minReplicas": _i("minReplicas is the lower limit for the number of replicas to "
                          "which the training job can scale down."),
        "maxReplicas": _i("upper limit for the number of pods that can be set by the "
                          "autoscaler."),
        "rdzvBackend": _s("rendezvous backend"),
        "rdzvPort": _i("rendezvous port"),
        "rdzvHost": _s("rendezvous host"),
        "rdzvId": _s("rendezvous id"),
        "rdzvConf": {"type": "array", "items": _ref("#/$defs/" + P + "RDZVConf"),
                     "description": "RDZVConf contains additional rendezvous configuration."},
        "standalone": {"type": "boolean", "description": "Start a local standalone "
                       "rendezvous backend."},
        "nProcPerNode": _i("Number of workers per node."),
        "maxRestarts": _i("maximum number of restarts"),
        "metrics": {"type": "array", "description": "Metrics for the HPA of an elastic job.",
                    "items": _ref("#/$defs/io.k8s.api.autoscaling.v2.MetricSpec")},
    }),
    P + "JobCondition": _obj({
        "type": _s("Type of job condition."),
        "status": _s("Status of the condition, one of True, False, Unknown."),
        "reason": _s("The reason for the condition's last transition."),
        "message": _s("A human readable message indicating details about the transition."),
        "lastUpdateTime": _ref(_META + "Time", "The last time this condition was updated."),
        "lastTransitionTime": _ref(_META + "Time", "Last time the condition transitioned from "
                                   "one status to another."),
    }, "JobCondition describes the state of the job at a certain point.",
        ["type", "status"]),
    P + "ReplicaStatus": _obj({
        "active": _i("The number of actively running pods."),
        "succeeded": _i("The number of pods which reached phase Succeeded."),
        "failed": _i("The number of pods which reached phase Failed."),
        "labelSelector": _ref(_META + "LabelSelector", "Deprecated: Use Selector instead"),
        "selector": _s("A Selector is a label query over a set of resources."),
    }, "ReplicaStatus represents the current observed state of the replica."),
    P + "JobStatus": _obj({
        "conditions": {"type": "array", "items": _ref("#/$defs/" + P + "JobCondition"),
                       "description": "Conditions is an array of current observed job "
                                      "conditions."},
        "replicaStatuses": {"type": "object", "description": "ReplicaStatuses is map of "
                            "ReplicaType and ReplicaStatus, specifies the status of each "
                            "replica.",
                            "additionalProperties": _ref("#/$defs/" + P + "ReplicaStatus")},
        "startTime": _ref(_META + "Time", "Represents time when the job was acknowledged by "
                          "the job controller."),
        "completionTime": _ref(_META + "Time", "Represents time when the job was completed."),
        "lastReconcileTime": _ref(_META + "Time", "Represents last time when the job was "
                                  "reconciled."),
    }, "JobStatus represents the current observed state of the training Job."),
    P + "PyTorchJobSpec": _obj({
        "runPolicy": _ref("#/$defs/" + P + "RunPolicy", "RunPolicy encapsulates various "
                          "runtime policies of the distributed training job."),
        "elasticPolicy": _ref("#/$defs/" + P + "ElasticPolicy", "elastic policy"),
        "pytorchReplicaSpecs": {"type": "object", "description": "A map of "
                                "PyTorchReplicaType (type) to ReplicaSpec (value): Master and "
                                "Worker.",
                                "additionalProperties": _ref("#/$defs/" + P + "ReplicaSpec")},
        "nprocPerNode": _s("Number of workers per node; auto, cpu, gpu or an integer."),
    }, "PyTorchJobSpec is a desired state description of the PyTorchJob.",
        ["pytorchReplicaSpecs"]),
    P + "TFJobSpec": _obj({
        "runPolicy": _ref("#/$defs/" + P + "RunPolicy", "RunPolicy encapsulates various "
                          "runtime policies of the distributed training job."),
        "successPolicy": _s("SuccessPolicy defines the policy to mark the TFJob as succeeded: "
                            "\"\" (chief or worker 0) or AllWorkers."),
        "tfReplicaSpecs": {"type": "object", "description": "A map of TFReplicaType (type) to "
                           "ReplicaSpec (value): PS, Worker, Chief, Master, Evaluator.",
                           "additionalProperties": _ref("#/$defs/" + P + "ReplicaSpec")},
        "enableDynamicWorker": {"type": "boolean", "description": "Whether workers may be "
                                "added or removed while the job runs."},
    }, "TFJobSpec is a desired state description of the TFJob.", ["tfReplicaSpecs"]),
}


def _kind(kind: str, spec: str, desc: str) -> Schema:
    return {
        "description": desc,
        "type": "object",
        "properties": {
            "apiVersion": _s("APIVersion defines the versioned schema of this representation "
                             "of an object."),
            "kind": _s("Kind is a string value representing the REST resource this object "
                       "represents."),
            "metadata": _ref(_META + "ObjectMeta", "Standard object's metadata."),
            "spec": _ref("#/$defs/" + P + spec, "Specification of the desired state."),
            "status": _ref("#/$defs/" + P + "JobStatus", "Most recently observed status."),
        },
        "x-kubernetes-group-version-kind": [{"group": "kubeflow.org", "version": "v1",
                                             "kind": kind}],
    }


def _list(kind: str) -> Schema:
    return {
        "description": f"{kind}List is a list of {kind}s.",
        "type": "object",
        "properties": {
            "apiVersion": _s("APIVersion"),
            "kind": _s("Kind"),
            "metadata": _ref(_META + "ListMeta", "Standard list metadata."),
            "items": {"type": "array", "items": _ref("#/$defs/" + P + kind)},
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [{"group": "kubeflow.org", "version": "v1",
                                             "kind": kind + "List"}],
    }


DEFINITIONS[P + "PyTorchJob"] = _kind("PyTorchJob", "PyTorchJobSpec",
                                      "PyTorchJob Represents a PyTorchJob resource.")
DEFINITIONS[P + "TFJob"] = _kind("TFJob", "TFJobSpec", "TFJob represents a TFJob resource.")
DEFINITIONS[P + "PyTorchJobList"] = _list("PyTorchJob")
DEFINITIONS[P + "TFJobList"] = _list("TFJob")

PRINTER_COLUMNS = [
    {"name": "State", "type": "string", "jsonPath": ".status.conditions[-1:].type"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
