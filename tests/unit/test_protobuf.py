"""Protobuf request bodies decode to, and encode from, the Kubernetes JSON form."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from typing import Any

import pytest

from kybernetes.api import protobuf
from kybernetes.api.protobuf import ProtobufError, decode, encode, is_protobuf

Obj = dict[str, Any]

# --- wire bytes written by hand, independent of encode() ----------------------------


def varint(n: int) -> bytes:
    """A base-128 varint; negative numbers as 64-bit two's complement (10 bytes)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(number: int, wire: int) -> bytes:
    """A field key: number << 3 | wire type."""
    return varint(number << 3 | wire)


def vfield(number: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return tag(number, 0) + varint(value)


def lfield(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (wire type 2)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return tag(number, 2) + varint(len(data)) + data


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    """``k8s\\0`` + runtime.Unknown{typeMeta{apiVersion=1, kind=2}, raw=2, 3, 4}."""
    type_meta = lfield(1, api_version) + lfield(2, kind)
    return b"k8s\x00" + lfield(1, type_meta) + lfield(2, raw) + lfield(3, "") + lfield(4, "")


# Bodies captured from kubectl v1.32.4 (`kubectl create ...` against a recording server).
KUBECTL_CREATE_DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412ab010a1f0a0377656212001a0022002a"
    "003200380042005a0a0a036170701203776562127a0803120c0a0a0a0361707012037765621a600a1c0a0012"
    "001a0022002a003200380042005a0a0a036170701203776562124012220a056e67696e7812056e67696e782a"
    "0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100"
    "c2010022020a00280038001a0c0800100018002000280038001a002200"
)
KUBECTL_CREATE_SERVICE = bytes.fromhex(
    "6b3873000a0d0a027631120753657276696365128d010a1f0a0377656212001a0022002a003200380042005a"
    "0a0a03617070120377656212660a1b0a0738302d38303830120354435018502207080010903f1a0028000a22"
    "0a093434332d6874747073120354435018bb03220b080110001a0568747470732800120a0a03617070120377"
    "65621a002209436c757374657249503a00420052005a00600068001a020a001a002200"
)
KUBECTL_AUTOSCALE = bytes.fromhex(
    "6b3873000a290a0e6175746f7363616c696e672f76311217486f72697a6f6e74616c506f644175746f736361"
    "6c6572123f0a130a0377656212001a0022002a0032003800420012220a1a0a0a4465706c6f796d656e741203"
    "7765621a07617070732f76311002180520501a04180020001a002200"
)

# --- objects in Go's JSON form (what kubectl would send as JSON, nulls left out) -----

DEPLOYMENT: Obj = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]},
        },
        "strategy": {},
    },
    "status": {},
}
SERVICE: Obj = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "ports": [
            {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
            {"name": "443-https", "protocol": "TCP", "port": 443, "targetPort": "https"},
        ],
        "selector": {"app": "web"},
        "type": "ClusterIP",
    },
    "status": {"loadBalancer": {}},
}
HPA: Obj = {
    "apiVersion": "autoscaling/v1",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web"},
    "spec": {
        "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
        "minReplicas": 2,
        "maxReplicas": 5,
        "targetCPUUtilizationPercentage": 80,
    },
    "status": {"currentReplicas": 0, "desiredReplicas": 0},
}
CONFIGMAP: Obj = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "cfg", "namespace": "ml"},
    "data": {"a": "1", "b": "two", "empty": ""},
    "binaryData": {"blob": "YmluAP8=", "none": ""},
}
SECRET: Obj = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "creds", "namespace": "ml"},
    "data": {"password": "aHVudGVyMg==", "token": "AAECAw=="},
    "type": "Opaque",
    "immutable": False,
}
NAMESPACE: Obj = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": "ml", "labels": {"team": "research"}, "finalizers": ["x/y"]},
    "spec": {"finalizers": ["kubernetes"]},
    "status": {},
}
JOB_TEMPLATE: Obj = {
    "metadata": {},
    "spec": {
        "containers": [
            {"name": "j1", "image": "busybox", "command": ["echo", "hi"], "resources": {}}
        ],
        "restartPolicy": "Never",
    },
}
JOB: Obj = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "j1"},
    "spec": {"backoffLimit": 4, "activeDeadlineSeconds": 3600, "template": JOB_TEMPLATE},
    "status": {},
}
CRONJOB: Obj = {
    "apiVersion": "batch/v1",
    "kind": "CronJob",
    "metadata": {"name": "cj"},
    "spec": {
        "schedule": "*/5 * * * *",
        "suspend": False,
        "jobTemplate": {"metadata": {"name": "cj"}, "spec": {"template": JOB_TEMPLATE}},
    },
    "status": {},
}
DEPLOYMENT_STORED: Obj = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "namespace": "default",
        "uid": "6f1c",
        "resourceVersion": "42",
        "generation": 2,
        "creationTimestamp": "2024-05-06T07:08:09Z",
        "annotations": {"deployment.kubernetes.io/revision": "1"},
        "managedFields": [
            {
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": "2024-05-06T07:08:09Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}}},
            }
        ],
    },
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": DEPLOYMENT["spec"]["template"],
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1},
        },
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
    },
    "status": {
        "observedGeneration": 2,
        "replicas": 1,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "lastUpdateTime": "2024-05-06T07:08:19Z",
                "lastTransitionTime": "2024-05-06T07:08:19Z",
                "reason": "MinimumReplicasAvailable",
                "message": "ok",
            }
        ],
    },
}
POD: Obj = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "trainer", "namespace": "ml"},
    "spec": {
        "volumes": [
            {"name": "scratch", "emptyDir": {"sizeLimit": "10Gi"}},
            {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
        ],
        "containers": [
            {
                "name": "main",
                "image": "pytorch:2",
                "args": ["--epochs", "3"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                    },
                    {"name": "MODE", "value": "train"},
                    {
                        "name": "CPU",
                        "valueFrom": {
                            "resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}
                        },
                    },
                ],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"},
                    "requests": {"cpu": "250m"},
                },
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": 8080},
                    "periodSeconds": 10,
                },
                "readinessProbe": {"tcpSocket": {"port": "http"}},
            }
        ],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsUser": 1000, "supplementalGroups": [1000, 2000]},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "status": {},
}
EVENT: Obj = {
    "apiVersion": "events.k8s.io/v1",
    "kind": "Event",
    "metadata": {"name": "e1", "namespace": "ml"},
    "eventTime": "2024-01-02T03:04:05.123456Z",
    "series": {"count": 2, "lastObservedTime": "2024-01-02T03:05:00.000001Z"},
    "reportingController": "kyb/scheduler",
    "reportingInstance": "kyb-1",
    "action": "Scheduling",
    "reason": "FailedScheduling",
    "regarding": {"kind": "Pod", "namespace": "ml", "name": "trainer"},
    "note": "0/1 nodes are available",
    "type": "Warning",
    "deprecatedSource": {},
}
CONTROLLER_REVISION: Obj = {
    "apiVersion": "apps/v1",
    "kind": "ControllerRevision",
    "metadata": {"name": "web-1"},
    "data": {"spec": {"template": {"x": [1, 2.5, None, True]}}},
    "revision": 1,
}
ROLE: Obj = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "r1"},
    "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}],
}


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(CONFIGMAP, id="configmap-data-and-binary-data"),
        pytest.param(SECRET, id="secret"),
        pytest.param(NAMESPACE, id="namespace"),
        pytest.param(DEPLOYMENT, id="kubectl-create-deployment"),
        pytest.param(SERVICE, id="service-int-and-named-target-port"),
        pytest.param(HPA, id="autoscaling-v1-hpa"),
        pytest.param(JOB, id="job"),
        pytest.param(CRONJOB, id="cronjob"),
        pytest.param(DEPLOYMENT_STORED, id="deployment-with-creation-timestamp"),
        pytest.param(POD, id="pod-quantities-inline-embeds-int-or-string"),
        pytest.param(EVENT, id="events-v1-micro-time"),
        pytest.param(CONTROLLER_REVISION, id="raw-extension"),
        pytest.param(ROLE, id="rbac-role"),
    ],
)
def test_round_trip(obj: Obj) -> None:
    """decode(encode(x)) gives back x for objects in Go's JSON form."""
    body = encode(obj)
    assert is_protobuf(body)
    assert decode(body) == obj


@pytest.mark.parametrize(
    ("body", "obj"),
    [
        pytest.param(KUBECTL_CREATE_DEPLOYMENT, DEPLOYMENT, id="create-deployment"),
        pytest.param(KUBECTL_CREATE_SERVICE, SERVICE, id="create-service-clusterip"),
        pytest.param(KUBECTL_AUTOSCALE, HPA, id="autoscale"),
    ],
)
def test_kubectl_bodies(body: bytes, obj: Obj) -> None:
    """Bodies kubectl 1.32 sent decode to the JSON form, and encode writes the same bytes."""
    assert decode(body) == obj
    assert encode(obj) == body


def test_hand_built_negative_ints_unknown_fields_and_times() -> None:
    """Negative int32/int64 varints decode signed; unknown field numbers of every wire type are skipped."""
    created = vfield(1, 1_714_979_289) + vfield(2, 0)  # seconds, nanos
    metadata = b"".join(
        [
            lfield(1, "low"),
            vfield(7, -5),  # generation, int64
            lfield(8, created),  # creationTimestamp
            vfield(10, -1),  # deletionGracePeriodSeconds, an int64 pointer
            vfield(99, 7),  # unknown varint
            tag(98, 1) + b"\x01" * 8,  # unknown fixed64
            tag(97, 5) + b"\x02" * 4,  # unknown fixed32
            lfield(96, b"\xff\xfe"),  # unknown length-delimited
            tag(95, 3) + vfield(1, 1) + lfield(2, "g") + tag(95, 4),  # unknown group
        ]
    )
    raw = lfield(1, metadata) + vfield(2, -1000) + lfield(4, "below the rest") + vfield(42, 1)
    assert decode(envelope("scheduling.k8s.io/v1", "PriorityClass", raw)) == {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {
            "name": "low",
            "generation": -5,
            "creationTimestamp": "2024-05-06T07:08:09Z",
            "deletionGracePeriodSeconds": -1,
        },
        "value": -1000,
        "description": "below the rest",
    }
    assert len(varint(-1000)) == 10


def test_hand_built_packed_and_unpacked_repeated() -> None:
    """A repeated scalar may come packed, unpacked, or both; the values concatenate."""
    packed = lfield(1, varint(8080) + varint(9090) + varint(-1))
    raw = packed + vfield(1, 22)
    assert decode(envelope("v1", "PodPortForwardOptions", raw)) == {
        "apiVersion": "v1",
        "kind": "PodPortForwardOptions",
        "ports": [8080, 9090, -1, 22],
    }
    # spec.securityContext (14) .supplementalGroups (4), packed int64
    groups = lfield(14, lfield(4, varint(1000) + varint(2000)))
    containers = lfield(2, lfield(1, "main"))
    pod = decode(envelope("v1", "Pod", lfield(1, lfield(1, "p")) + lfield(2, containers + groups)))
    assert pod["spec"]["securityContext"] == {"supplementalGroups": [1000, 2000]}


def test_hand_built_zero_values_follow_go_json() -> None:
    """An empty Time is left out, absent pointers stay absent, non-pointer structs appear empty."""
    metadata = lfield(1, "ml") + lfield(2, "") + vfield(7, 0) + lfield(8, b"")
    obj = decode(envelope("v1", "Namespace", lfield(1, metadata)))
    assert obj == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "ml"},
        "spec": {},
        "status": {},
    }
    # ServicePort: port (3) is not omitempty, so a zero still shows; targetPort is an IntOrString
    port = lfield(1, "p") + lfield(4, vfield(1, 1) + vfield(2, 0) + lfield(3, "web"))
    svc = decode(envelope("v1", "Service", lfield(2, lfield(1, port))))
    assert svc["spec"]["ports"] == [{"name": "p", "port": 0, "targetPort": "web"}]


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        pytest.param(b"", None, id="empty-message"),
        pytest.param(vfield(1, -62_135_596_800), None, id="go-zero-time"),
        pytest.param(vfield(1, 0), "1970-01-01T00:00:00Z", id="unix-epoch"),
        pytest.param(
            vfield(1, 86_400) + vfield(2, 999), "1970-01-02T00:00:00Z", id="nanos-ignored"
        ),
        pytest.param(vfield(1, -1), "1969-12-31T23:59:59Z", id="negative-seconds"),
    ],
)
def test_hand_built_times(time: bytes, expected: str | None) -> None:
    """A Time is RFC 3339 in whole seconds; an empty or Go-zero one is left out."""
    obj = decode(envelope("v1", "ConfigMap", lfield(1, lfield(1, "c") + lfield(8, time))))
    assert obj["metadata"].get("creationTimestamp") == expected


def test_hand_built_map_entries_and_bytes() -> None:
    """Map entries decode in any field order; bytes values come out as base64."""
    data = lfield(2, lfield(2, "v") + lfield(1, "k")) + lfield(2, lfield(1, "only-key"))
    binary = lfield(3, lfield(1, "b") + lfield(2, b"\x00\xff"))
    obj = decode(envelope("v1", "ConfigMap", data + binary))
    assert obj["data"] == {"k": "v", "only-key": ""}
    assert obj["binaryData"] == {"b": "AP8="}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"kind": "Pod"}', "magic", id="bad-magic"),
        pytest.param(b"k8s\x00\x0a\x80", "end of data in a varint", id="truncated-varint"),
        pytest.param(b"k8s\x00" + b"\x08" + b"\xff" * 11, "overflows", id="varint-too-long"),
        pytest.param(b"k8s\x00\x0a\x05ab", "unexpected end of data", id="length-past-end"),
        pytest.param(b"k8s\x00\x0f", "illegal wire type 7", id="illegal-wire-type"),
        pytest.param(envelope("v1", "Gadget", b""), 'no kind "Gadget"', id="unknown-kind"),
        pytest.param(envelope("nope/v1", "Pod", b""), 'version "nope/v1"', id="unknown-version"),
        pytest.param(b"k8s\x00" + lfield(2, b""), "does not have a kind", id="no-kind"),
        pytest.param(
            envelope("v1", "Namespace", vfield(1, 3)),
            "metadata: wrong wire type 0 for message",
            id="wrong-wire-type",
        ),
        pytest.param(
            envelope("v1", "ConfigMap", lfield(1, vfield(1, 3))),
            "metadata.name: wrong wire type 0 for string",
            id="wrong-wire-type-nested",
        ),
        pytest.param(
            envelope("v1", "Service", lfield(2, lfield(1, b"") + lfield(1, b"\x18\x80"))),
            "spec.ports[1]: unexpected end of data",
            id="error-names-the-list-item",
        ),
        pytest.param(
            envelope("apps/v1", "ControllerRevision", lfield(2, lfield(1, b"\x01\x02"))),
            "data: embedded object is not JSON",
            id="raw-extension-not-json",
        ),
    ],
)
def test_decode_errors(body: bytes, message: str) -> None:
    """Malformed bodies raise ProtobufError with a message fit for a 400."""
    with pytest.raises(ProtobufError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode(body)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        pytest.param({"apiVersion": "v1"}, "no apiVersion or kind", id="no-kind"),
        pytest.param(
            {**DEPLOYMENT, "spec": {"replicas": "3"}},
            "spec.replicas: expected an integer",
            id="string-for-int",
        ),
        pytest.param(
            {**DEPLOYMENT, "spec": {"replicas": 1 << 31}}, "does not fit in an int32", id="int32"
        ),
        pytest.param({**SECRET, "data": {"k": "%%%"}}, "illegal base64", id="bad-base64"),
        pytest.param(
            {**SERVICE, "spec": {"ports": [{"port": 1}, {"targetPort": 1.5}]}},
            r"spec.ports\[1\].targetPort: expected an integer or a string",
            id="bad-int-or-string",
        ),
        pytest.param(
            {**DEPLOYMENT, "metadata": {"creationTimestamp": "yesterday"}},
            "not an RFC 3339 time",
            id="bad-time",
        ),
    ],
)
def test_encode_errors(obj: Obj, message: str) -> None:
    """Objects that do not fit the message raise ProtobufError naming the field."""
    with pytest.raises(ProtobufError, match=message):
        encode(obj)


def test_is_protobuf() -> None:
    """Only the k8s\\0 magic marks a protobuf body."""
    assert is_protobuf(b"k8s\x00\x0a\x00")
    assert not is_protobuf(b"k8s")
    assert not is_protobuf(b'{"kind":"Pod"}')


def test_quantities_are_canonical_on_encode() -> None:
    """Quantities are written in canonical form, as Go writes them."""
    obj = {"apiVersion": "v1", "kind": "ResourceQuota", "spec": {"hard": {"cpu": "1000m"}}}
    assert decode(encode(obj))["spec"] == {"hard": {"cpu": "1"}}


def test_zero_time_is_written_empty() -> None:
    """Go's zero time, like null, is written as an empty Time message and decodes to nothing."""
    obj = {**NAMESPACE, "metadata": {"name": "ml", "creationTimestamp": "0001-01-01T00:00:00Z"}}
    assert encode(obj) == encode({**obj, "metadata": {"name": "ml"}})
    assert decode(encode(obj))["metadata"] == {"name": "ml"}


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(1, "1ns", id="nanos"),
        pytest.param(1_500, "1.5µs", id="micros"),
        pytest.param(2_250_000, "2.25ms", id="millis"),
        pytest.param(1_500_000_000, "1.5s", id="seconds"),
        pytest.param(90 * 10**9, "1m30s", id="minutes"),
        pytest.param(3600 * 10**9, "1h0m0s", id="hours"),
        pytest.param(-(3661 * 10**9 + 1), "-1h1m1.000000001s", id="negative"),
    ],
)
def test_go_duration(nanos: int, text: str) -> None:
    """Durations print and parse like Go's time.Duration."""
    assert protobuf.go_duration(nanos) == text
    assert protobuf.parse_go_duration(text) == nanos


def test_table_loads_on_first_use() -> None:
    """Importing the module reads no table; the first use loads it once and keeps it."""
    code = "import kybernetes.api.protobuf as p; assert p._table.cache_info().currsize == 0"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert protobuf._table() is protobuf._table()


def test_mutated_bodies_fail_cleanly() -> None:
    """Corrupted kubectl bodies either decode or raise ProtobufError, never anything else."""
    rng = random.Random(7)
    bodies = [KUBECTL_CREATE_DEPLOYMENT, KUBECTL_CREATE_SERVICE, KUBECTL_AUTOSCALE]
    for _ in range(500):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(4, len(body))
            if rng.random() < 0.7:
                body[at] = rng.randrange(256)
            else:
                del body[at:]
                break
        with contextlib.suppress(ProtobufError):
            decode(bytes(body))
