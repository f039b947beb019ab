"""The Endpoints and EndpointSlice controllers' decisions: which pods are endpoints,
target ports, subsets, slice endpoints and how slices are reused."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.client import NAMESPACE_INDEX, namespace_index
from kybernetes.controllers import endpointutil as eu
from kybernetes.controllers.endpoints import (
    EndpointsController,
    desired_labels,
    endpoint_subsets,
)
from kybernetes.controllers.endpointslice import (
    Desired,
    desired_endpoints,
    plan_slices,
    ports_key,
    service_index,
)

Obj = dict[str, Any]


def pod(name: str, ip: str = "", *, ready: bool = True, phase: str = "Running",
        deleting: bool = False, node: str = "n1", ports: list[Obj] | None = None,
        hostname: str = "", subdomain: str = "") -> Obj:
    md: Obj = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": {"app": "web"}}
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    spec: Obj = {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]}
    if hostname:
        spec["hostname"], spec["subdomain"] = hostname, subdomain
    status: Obj = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False",
         "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": md, "spec": spec, "status": status}


def service(ports: list[Obj] | None = None, **spec: Any) -> Obj:
    return {"metadata": {"name": "web", "namespace": "ns", "uid": "uid-svc",
                         "labels": {"team": "a"},
                         "creationTimestamp": "2023-01-01T00:00:00Z"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.0.0.1",
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]
                     if ports is None else ports, **spec}}


# -- which pods, which ports -----------------------------------------------------------


@pytest.mark.parametrize(("p", "terminating", "expected"), [
    pytest.param(pod("a", "10.0.0.2"), False, True, id="running-with-ip"),
    pytest.param(pod("a"), False, False, id="no-ip"),
    pytest.param(pod("a", "10.0.0.2", phase="Succeeded"), True, False, id="terminal"),
    pytest.param(pod("a", "10.0.0.2", deleting=True), False, False, id="deleting-excluded"),
    pytest.param(pod("a", "10.0.0.2", deleting=True), True, True, id="deleting-included"),
    pytest.param(pod("a", "10.0.0.2", ready=False), False, True, id="not-ready-still-in"),
])
def test_should_be_in_endpoints(p: Obj, terminating: bool, expected: bool) -> None:
    """Only pods with an IP that are not terminal; terminating ones where asked."""
    assert eu.should_be_in_endpoints(p, include_terminating=terminating) is expected


NAMED = [{"name": "http", "containerPort": 8081, "protocol": "TCP"},
         {"name": "dns", "containerPort": 53, "protocol": "UDP"}]


@pytest.mark.parametrize(("svc_port", "expected"), [
    pytest.param({"port": 80, "targetPort": 9000}, 9000, id="number"),
    pytest.param({"port": 80}, 80, id="defaults-to-port"),
    pytest.param({"port": 80, "targetPort": "http"}, 8081, id="named"),
    pytest.param({"port": 53, "targetPort": "dns", "protocol": "UDP"}, 53, id="named-udp"),
    pytest.param({"port": 53, "targetPort": "dns"}, None, id="named-wrong-protocol"),
    pytest.param({"port": 80, "targetPort": "metrics"}, None, id="named-missing"),
])
def test_find_port(svc_port: Obj, expected: int | None) -> None:
    """A numeric targetPort as is, a named one from the container ports."""
    assert eu.find_port(pod("a", "10.0.0.2", ports=NAMED), svc_port) == expected


# -- Endpoints subsets -----------------------------------------------------------------


def _ips(subset: Obj, field: str) -> list[str]:
    return [a["ip"] for a in subset.get(field) or []]


@pytest.mark.parametrize(("svc", "pods", "expected"), [
    pytest.param(service(), [pod("b", "10.0.0.3"), pod("a", "10.0.0.2")],
                 [(["10.0.0.2", "10.0.0.3"], [], [8080])], id="ready-sorted"),
    pytest.param(service(), [pod("a", "10.0.0.2"), pod("b", "10.0.0.3", ready=False)],
                 [(["10.0.0.2"], ["10.0.0.3"], [8080])], id="not-ready"),
    pytest.param(service(publishNotReadyAddresses=True),
                 [pod("a", "10.0.0.2", ready=False), pod("b", "10.0.0.3", deleting=True)],
                 [(["10.0.0.2", "10.0.0.3"], [], [8080])], id="publish-not-ready"),
    pytest.param(service(), [pod("a", "10.0.0.2", deleting=True), pod("b")], [],
                 id="terminating-and-ipless-left-out"),
    pytest.param(service([{"name": "web", "port": 80, "targetPort": "http",
                           "protocol": "TCP"}]),
                 [pod("a", "10.0.0.2", ports=NAMED),
                  pod("b", "10.0.0.3", ports=[{"name": "http", "containerPort": 9090}]),
                  pod("c", "10.0.0.4")],
                 [(["10.0.0.2"], [], [8081]), (["10.0.0.3"], [], [9090])],
                 id="named-ports-split-subsets"),
    pytest.param(service([], clusterIP="None"), [pod("a", "10.0.0.2")],
                 [(["10.0.0.2"], [], [])], id="headless-without-ports"),
    pytest.param(service([]), [pod("a", "10.0.0.2")], [], id="no-ports-not-headless"),
])
def test_endpoint_subsets(svc: Obj, pods: list[Obj],
                          expected: list[tuple[list[str], list[str], list[int]]]) -> None:
    """Ready and not-ready addresses, grouped by resolved ports."""
    subsets = endpoint_subsets(svc, pods)
    assert [(_ips(s, "addresses"), _ips(s, "notReadyAddresses"),
             [p["port"] for p in s.get("ports") or []]) for s in subsets] == expected


def test_endpoint_address_fields() -> None:
    """An address names its node and pod, and its hostname under a matching subdomain."""
    [subset] = endpoint_subsets(service(), [pod("a", "10.0.0.2", hostname="h",
                                                subdomain="web")])
    assert subset["addresses"] == [{"ip": "10.0.0.2", "nodeName": "n1", "hostname": "h",
                                    "targetRef": {"kind": "Pod", "namespace": "ns",
                                                  "name": "a", "uid": "uid-a"}}]
    assert subset["ports"] == [{"port": 8080, "protocol": "TCP"}]


@pytest.mark.parametrize(("svc", "expected"), [
    pytest.param(service(), {"team": "a", "endpoints.kubernetes.io/managed-by":
                             "endpoint-controller"}, id="plain"),
    pytest.param(service(clusterIP="None"), {"team": "a", eu.HEADLESS: "",
                                             "endpoints.kubernetes.io/managed-by":
                                             "endpoint-controller"}, id="headless"),
])
def test_endpoints_labels(svc: Obj, expected: dict[str, str]) -> None:
    """The Service's labels, the headless label and the managed-by label."""
    assert desired_labels(svc) == expected


def test_trigger_time_is_the_newest_change() -> None:
    """The newest pod condition transition or the Service's creation."""
    assert eu.trigger_time(service(), [pod("a", "10.0.0.2")]) == "2024-01-01T00:00:00Z"
    assert eu.trigger_time(service(), []) == "2023-01-01T00:00:00Z"


# -- EndpointSlice endpoints -----------------------------------------------------------

NODES = {"n1": {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}}}}


@pytest.mark.parametrize(("p", "svc", "conditions"), [
    pytest.param(pod("a", "10.0.0.2"), service(), (True, True, False), id="ready"),
    pytest.param(pod("a", "10.0.0.2", ready=False), service(), (False, False, False),
                 id="not-ready"),
    pytest.param(pod("a", "10.0.0.2", deleting=True), service(), (False, True, True),
                 id="terminating"),
    pytest.param(pod("a", "10.0.0.2", ready=False), service(publishNotReadyAddresses=True),
                 (True, False, False), id="publish-not-ready"),
])
def test_slice_endpoint_conditions(p: Obj, svc: Obj,
                                   conditions: tuple[bool, bool, bool]) -> None:
    """ready = serving and not terminating (or publishNotReadyAddresses)."""
    desired = desired_endpoints(svc, [p], NODES)
    [ep] = desired.endpoints[ports_key([{"name": "", "port": 8080, "protocol": "TCP"}])]
    c = ep["conditions"]
    assert (c["ready"], c["serving"], c["terminating"]) == conditions
    assert (ep["addresses"], ep["nodeName"], ep["zone"]) == (["10.0.0.2"], "n1", "z1")
    assert ep["targetRef"]["name"] == "a"


def test_slice_endpoint_on_unknown_node_waits() -> None:
    """A pod on a node the cache does not know yet is left out for a retry."""
    desired = desired_endpoints(service(), [pod("a", "10.0.0.2", node="n9")], NODES)
    assert desired.missing_node and not desired.endpoints


def test_slice_ipv6_service_skips_ipv4_pods() -> None:
    """Only the Service's address family goes into its slices."""
    desired = desired_endpoints(service(ipFamilies=["IPv6"]), [pod("a", "10.0.0.2")], NODES)
    assert not desired.endpoints


# -- reusing slices --------------------------------------------------------------------

PORTS = [{"name": "", "port": 8080, "protocol": "TCP"}]
KEY = ports_key(PORTS)


def ep(i: int) -> Obj:
    return {"addresses": [f"10.0.1.{i}"], "targetRef": {"uid": f"u{i}"},
            "conditions": {"ready": True, "serving": True, "terminating": False}}


def es(name: str, endpoints: list[Obj], ports: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name}, "ports": PORTS if ports is None else ports,
            "endpoints": endpoints}


def want(*ids: int) -> Desired:
    return Desired(ports={KEY: PORTS} if ids else {},
                   endpoints={KEY: [ep(i) for i in ids]} if ids else {})


@pytest.mark.parametrize(("existing", "desired", "expected"), [
    pytest.param([], want(1, 2), ([2], [], [], []), id="create"),
    pytest.param([], want(*range(250)), ([100, 100, 50], [], [], []), id="create-chunked"),
    pytest.param([es("a", [ep(1), ep(2)])], want(1, 2), ([], [], [], ["a"]), id="unchanged"),
    pytest.param([es("a", [ep(1), ep(2)])], want(1), ([], [("a", 1)], [], []), id="shrink"),
    pytest.param([es("a", [ep(1)])], want(1, 2, 3), ([], [("a", 3)], [], []),
                 id="grow-in-place"),
    pytest.param([es("a", [ep(i) for i in range(100)])], want(*range(101)),
                 ([1], [], [], ["a"]), id="full-slice-new-one"),
    pytest.param([es("a", [ep(1)]), es("b", [ep(2)])], want(2), ([], [], ["a"], ["b"]),
                 id="emptied-deleted"),
    pytest.param([es("a", [ep(1)], ports=[{"name": "", "port": 1, "protocol": "TCP"}])],
                 want(1), ([1], [], ["a"], []), id="ports-changed"),
    pytest.param([], want(), ([0], [], [], []), id="placeholder-created"),
    pytest.param([es("p", [], ports=[]), es("a", [ep(1)])], want(), ([], [], ["a"], ["p"]),
                 id="placeholder-kept"),
])
def test_plan_slices(existing: list[Obj], desired: Desired,
                     expected: tuple[list[int], list[tuple[str, int]], list[str], list[str]]
                     ) -> None:
    """Endpoints stay where they are, new ones fill room first, empty slices go."""
    plan = plan_slices(existing, desired)
    got = ([len(e) for _, e in plan.create],
           [(s["metadata"]["name"], len(e)) for s, e in plan.update],
           [s["metadata"]["name"] for s in plan.delete],
           [s["metadata"]["name"] for s in plan.keep])
    assert got == expected


@pytest.mark.parametrize(("labels", "expected"), [
    pytest.param({"kubernetes.io/service-name": "web",
                  "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                 ["ns/web"], id="ours"),
    pytest.param({"kubernetes.io/service-name": "web",
                  "endpointslice.kubernetes.io/managed-by": "someone-else"}, [], id="theirs"),
])
def test_service_index(labels: dict[str, str], expected: list[str]) -> None:
    """Only this controller's slices are indexed by their Service."""
    assert service_index({"metadata": {"namespace": "ns", "labels": labels}}) == expected


# -- the Endpoints controller against a fake API ---------------------------------------------


class FakeClient:
    def __init__(self) -> None:
        self.writes: list[tuple[str, Obj]] = []
        self.deleted: list[str] = []

    async def create(self, api_version: str, plural: str, obj: Obj, *,
                     namespace: str | None = None) -> Obj:
        self.writes.append(("create", obj))
        return obj

    async def update(self, api_version: str, plural: str, obj: Obj, *,
                     namespace: str | None = None) -> Obj:
        self.writes.append(("update", obj))
        return obj

    async def delete(self, api_version: str, plural: str, name: str, *,
                     namespace: str | None = None) -> Obj:
        self.deleted.append(name)
        return {}


def endpoints_controller(client: FakeClient, services: list[Obj], pods: list[Obj],
                         endpoints: list[Obj]) -> EndpointsController:
    c = EndpointsController(client)  # type: ignore[arg-type]
    c.pods.add_index(NAMESPACE_INDEX, namespace_index)
    c.services.add_index(NAMESPACE_INDEX, namespace_index)
    c.pods._replace(pods, "1")
    c.services._replace(services, "1")
    c.endpoints._replace(endpoints, "1")
    return c


async def test_endpoints_created_then_left_when_unchanged() -> None:
    """The first sync creates the Endpoints; the same state again writes nothing."""
    client = FakeClient()
    c = endpoints_controller(client, [service()], [pod("a", "10.0.0.2")], [])
    await c.reconcile("ns/web")
    [(verb, body)] = client.writes
    assert verb == "create" and body["metadata"]["name"] == "web"
    assert body["metadata"]["annotations"][eu.TRIGGER_TIME] == "2024-01-01T00:00:00Z"
    c.endpoints._replace([{**body, "metadata": {**body["metadata"], "namespace": "ns",
                                                 "resourceVersion": "2"}}], "2")
    await c.reconcile("ns/web")
    assert len(client.writes) == 1


async def test_endpoints_without_selector_left_alone() -> None:
    """A Service without a selector: its Endpoints are the user's."""
    client = FakeClient()
    svc = service()
    del svc["spec"]["selector"]
    c = endpoints_controller(client, [svc], [pod("a", "10.0.0.2")], [])
    await c.reconcile("ns/web")
    assert client.writes == [] and client.deleted == []


async def test_endpoints_of_deleted_service_deleted() -> None:
    """When the Service goes, so does its Endpoints."""
    client = FakeClient()
    c = endpoints_controller(client, [], [], [{"metadata": {"name": "web", "namespace": "ns"}}])
    await c.reconcile("ns/web")
    assert client.deleted == ["web"]
