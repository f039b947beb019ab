"""The built-in resources kybernetes serves, with upstream names and scopes."""

from __future__ import annotations

from kybernetes.api import conversion, kubeflow, podgroup
from kybernetes.api.registry import ALL_VERBS, Registry, Resource
from kybernetes.api.strategy import Strategy

_NO_COLLECTION = ("create", "delete", "get", "list", "patch", "update", "watch")
_ALL = ("all",)
_READ_ONLY = ("get", "list")

# group, version, kind, plural, namespaced, short names, categories, subresources, definition
_CORE = "io.k8s.api.core.v1."
_TABLE: list[tuple[str, str, str, str, bool, tuple[str, ...], tuple[str, ...], tuple[str, ...], str]] = [
    ("", "v1", "Namespace", "namespaces", False, ("ns",), (), ("status", "finalize"), _CORE),
    ("", "v1", "Pod", "pods", True, ("po",), _ALL,
     ("status", "binding", "eviction", "log", "exec", "portforward", "attach", "proxy",
      "ephemeralcontainers"), _CORE),
    ("", "v1", "Node", "nodes", False, ("no",), (), ("status", "proxy"), _CORE),
    ("", "v1", "Service", "services", True, ("svc",), _ALL, ("status", "proxy"), _CORE),
    ("", "v1", "Endpoints", "endpoints", True, ("ep",), (), (), _CORE),
    ("", "v1", "ConfigMap", "configmaps", True, ("cm",), (), (), _CORE),
    ("", "v1", "Secret", "secrets", True, (), (), (), _CORE),
    ("", "v1", "Event", "events", True, ("ev",), (), (), _CORE),
    ("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), (), ("token",), _CORE),
    ("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), (), ("status",), _CORE),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), (),
     ("status",), _CORE),
    ("", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), (), ("status",), _CORE),
    ("", "v1", "LimitRange", "limitranges", True, ("limits",), (), (), _CORE),
    ("apps", "v1", "Deployment", "deployments", True, ("deploy",), _ALL, ("status", "scale"),
     "io.k8s.api.apps.v1."),
    ("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), _ALL, ("status", "scale"),
     "io.k8s.api.apps.v1."),
    ("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), _ALL, ("status", "scale"),
     "io.k8s.api.apps.v1."),
    ("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), _ALL, ("status",),
     "io.k8s.api.apps.v1."),
    ("apps", "v1", "ControllerRevision", "controllerrevisions", True, (), (), (),
     "io.k8s.api.apps.v1."),
    ("batch", "v1", "Job", "jobs", True, (), _ALL, ("status",), "io.k8s.api.batch.v1."),
    ("batch", "v1", "CronJob", "cronjobs", True, ("cj",), _ALL, ("status",),
     "io.k8s.api.batch.v1."),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ("hpa",),
     _ALL, ("status",), "io.k8s.api.autoscaling.v2."),
    ("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ("hpa",),
     _ALL, ("status",), "io.k8s.api.autoscaling.v1."),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), (), ("status",),
     "io.k8s.api.networking.v1."),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False, (), (), (),
     "io.k8s.api.networking.v1."),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",), (), (),
     "io.k8s.api.networking.v1."),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), (),
     ("status",), "io.k8s.api.policy.v1."),
    ("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ("pc",), (), (),
     "io.k8s.api.scheduling.v1."),
    ("coordination.k8s.io", "v1", "Lease", "leases", True, (), (), (),
     "io.k8s.api.coordination.v1."),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, (), (), (),
     "io.k8s.api.discovery.v1."),
    ("events.k8s.io", "v1", "Event", "events", True, ("ev",), (), (), "io.k8s.api.events.v1."),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", True, (), (), (),
     "io.k8s.api.rbac.v1."),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, (), (), (),
     "io.k8s.api.rbac.v1."),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, (), (), (),
     "io.k8s.api.rbac.v1."),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False, (),
     (), (), "io.k8s.api.rbac.v1."),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",), (), (),
     "io.k8s.api.storage.v1."),
    ("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests",
     False, ("csr",), (), ("status", "approval"), "io.k8s.api.certificates.v1."),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
     False, ("crd", "crds"), (), ("status",),
     "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."),
    ("kubeflow.org", "v1", "PyTorchJob", "pytorchjobs", True, (), (), ("status",),
     "org.kubeflow.v1."),
    ("kubeflow.org", "v1", "TFJob", "tfjobs", True, (), (), ("status",), "org.kubeflow.v1."),
    ("scheduling.x-k8s.io", "v1alpha1", "PodGroup", "podgroups", True, ("pg", "pgs"), (),
     ("status",), podgroup.P),
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
     False, (), (), (), "io.k8s.api.authorization.v1."),
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False,
     (), (), (), "io.k8s.api.authorization.v1."),
    ("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", False, (),
     (), (), "io.k8s.api.authorization.v1."),
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews",
     True, (), (), (), "io.k8s.api.authorization.v1."),
    ("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False, (), (),
     (), "io.k8s.api.authentication.v1."),
    ("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", False, (), (), (),
     "io.k8s.metrics.pkg.apis.metrics.v1beta1."),
    ("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", True, (), (), (),
     "io.k8s.metrics.pkg.apis.metrics.v1beta1."),
]

_VERBS = {
    "namespaces": _NO_COLLECTION,
    "selfsubjectaccessreviews": ("create",),
    "selfsubjectrulesreviews": ("create",),
    "subjectaccessreviews": ("create",),
    "localsubjectaccessreviews": ("create",),
    "selfsubjectreviews": ("create",),
    "bindings": ("create",),
}

# Resources stored under another version's schema, with converters.
_CONVERTED = {
    ("autoscaling", "v1"): ("v2", conversion.hpa_v1_to_v2, conversion.hpa_v2_to_v1),
    ("events.k8s.io", "v1"): ("v1", conversion.event_v1_to_core, conversion.event_core_to_v1),
}


def build_registry() -> Registry:
    """A registry holding every built-in resource (CRDs are added by the server)."""
    reg = Registry()
    for group, version, kind, plural, namespaced, short, cats, subs, defprefix in _TABLE:
        res = Resource(
            group=group,
            version=version,
            kind=kind,
            plural=plural,
            namespaced=namespaced,
            short_names=short,
            categories=cats,
            verbs=_READ_ONLY if group == "metrics.k8s.io" else _VERBS.get(plural, ALL_VERBS),
            subresources=subs,
            definition=defprefix + kind,
            strategy=Strategy(group, kind, has_status="status" in subs),
        )
        conv = _CONVERTED.get((group, version))
        if conv is not None:
            res.storage_version, res.to_storage, res.from_storage = conv
            if group == "events.k8s.io":
                res.storage_group_resource = "events"
                # validation and defaulting run on the stored (core) form
                res.strategy = Strategy("", "Event", has_status=False)
        if group == "kubeflow.org":
            res.printer_columns = list(kubeflow.PRINTER_COLUMNS)
        elif group == podgroup.GROUP:
            res.printer_columns = list(podgroup.PRINTER_COLUMNS)
        reg.add(res)
    return reg
