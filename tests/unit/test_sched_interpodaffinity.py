"""The InterPodAffinity scheduler plugin: filtering, scoring, PreFilter extensions, events."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.schedfakes import FakeHandle, run_filter, run_score

from kybernetes.scheduler.framework import Action, ClusterEvent, Code, CycleState, Status
from kybernetes.scheduler.plugins.interpodaffinity import (
    ERR_REASON_AFFINITY_RULES_NOT_MATCH,
    ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH,
    ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH,
    InterPodAffinity,
    new,
)
from kybernetes.scheduler.types import NodeInfo, PodInfo, make_node, make_pod

Obj = dict[str, Any]

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"


def term(key: str = ZONE, match: dict[str, str] | None = None, *,
         exprs: list[Obj] | None = None, namespaces: list[str] | None = None,
         ns_selector: Obj | None = None) -> Obj:
    sel: Obj = {}
    if match is not None:
        sel["matchLabels"] = match
    if exprs is not None:
        sel["matchExpressions"] = exprs
    t: Obj = {"labelSelector": sel, "topologyKey": key}
    if namespaces is not None:
        t["namespaces"] = namespaces
    if ns_selector is not None:
        t["namespaceSelector"] = ns_selector
    return t


def weighted(weight: int, t: Obj) -> Obj:
    return {"weight": weight, "podAffinityTerm": t}


def affinity(*, required: tuple[Obj, ...] = (), preferred: tuple[Obj, ...] = (),
             anti: tuple[Obj, ...] = (), anti_preferred: tuple[Obj, ...] = ()) -> Obj:
    out: Obj = {}
    for kind, req, pref in (("podAffinity", required, preferred),
                            ("podAntiAffinity", anti, anti_preferred)):
        part: Obj = {}
        if req:
            part["requiredDuringSchedulingIgnoredDuringExecution"] = list(req)
        if pref:
            part["preferredDuringSchedulingIgnoredDuringExecution"] = list(pref)
        if part:
            out[kind] = part
    return out


def pod(name: str, labels: dict[str, str] | None = None, *, node: str = "",
        ns: str = "default", aff: Obj | None = None) -> Obj:
    spec: Obj = {}
    if node:
        spec["nodeName"] = node
    if aff:
        spec["affinity"] = aff
    return make_pod(name, ns, labels=dict(labels or {}), **spec)


def zoned_nodes() -> list[Obj]:
    """n1, n2 in zone a; n3, n4 in zone b; n5 has no zone label."""
    return [make_node("n1", labels={ZONE: "a"}), make_node("n2", labels={ZONE: "a"}),
            make_node("n3", labels={ZONE: "b"}), make_node("n4", labels={ZONE: "b"}),
            make_node("n5")]


OUTCOMES: dict[str, tuple[Code, str] | None] = {
    "ok": None,
    "affinity": (Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_REASON_AFFINITY_RULES_NOT_MATCH),
    "anti": (Code.UNSCHEDULABLE, ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH),
    "existing": (Code.UNSCHEDULABLE, ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH),
}


def outcome(st: Status | None) -> tuple[Code, str] | None:
    return None if st is None else (st.code, st.message)


def expect(*per_node: str) -> dict[str, tuple[Code, str] | None]:
    """Outcomes for n1..n5 in order."""
    return {f"n{i}": OUTCOMES[o] for i, o in enumerate(per_node, 1)}


S1 = {"security": "S1"}
S2 = {"security": "S2"}
DB = {"app": "db"}
WEB = {"app": "web"}


# -- Filter ---------------------------------------------------------------------------

FILTER_CASES = [
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, S1),))),
                 [pod("s1", S1, node="n3")], {},
                 expect("affinity", "affinity", "ok", "ok", "affinity"),
                 id="affinity-zone-where-a-matching-pod-runs"),
    pytest.param(pod("p", aff=affinity(required=(term(HOST, DB),))),
                 [pod("db", DB, node="n2")], {},
                 expect("affinity", "ok", "affinity", "affinity", "affinity"),
                 id="affinity-hostname"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, DB),))),
                 [pod("web", WEB, node="n1")], {},
                 expect(*["affinity"] * 5),
                 id="affinity-no-matching-pod-and-not-self"),
    pytest.param(pod("p", WEB, aff=affinity(required=(term(ZONE, WEB),))),
                 [pod("db", DB, node="n1")], {},
                 expect("ok", "ok", "ok", "ok", "affinity"),
                 id="self-affinity-first-pod-of-group-needs-only-the-topology-key"),
    pytest.param(pod("p", WEB, aff=affinity(required=(term(ZONE, WEB),))),
                 [pod("web", WEB, node="n3")], {},
                 expect("affinity", "affinity", "ok", "ok", "affinity"),
                 id="self-affinity-once-the-group-exists"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, DB), term(HOST, {"tier": "cache"})))),
                 [pod("db", DB, node="n1"), pod("cache", {"tier": "cache"}, node="n1")], {},
                 expect(*["affinity"] * 5),
                 id="affinity-terms-need-one-pod-matching-all"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, DB), term(HOST, {"tier": "cache"})))),
                 [pod("db", {"app": "db", "tier": "cache"}, node="n1")], {},
                 expect("ok", "affinity", "affinity", "affinity", "affinity"),
                 id="affinity-terms-one-pod-matching-all"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, S1),))),
                 [pod("s1", S1, node="n3", ns="other")], {},
                 expect(*["affinity"] * 5),
                 id="affinity-term-defaults-to-own-namespace"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, S1, namespaces=["other"]),))),
                 [pod("s1", S1, node="n3", ns="other")], {},
                 expect("affinity", "affinity", "ok", "ok", "affinity"),
                 id="affinity-term-namespaces"),
    pytest.param(pod("p", aff=affinity(required=(
                     term(ZONE, S1, ns_selector={"matchLabels": {"team": "a"}}),))),
                 [pod("s1-a", S1, node="n3", ns="team-a"),
                  pod("s1-b", S1, node="n1", ns="team-b")],
                 {"team-a": {"team": "a"}, "team-b": {"team": "b"}},
                 expect("affinity", "affinity", "ok", "ok", "affinity"),
                 id="affinity-namespace-selector"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, S1, ns_selector={}),))),
                 [pod("s1", S1, node="n1", ns="not-in-cache")], {},
                 expect("ok", "ok", "affinity", "affinity", "affinity"),
                 id="affinity-empty-namespace-selector-selects-every-namespace"),
    pytest.param(pod("p", aff=affinity(anti=(term(ZONE, S2),))),
                 [pod("s2", S2, node="n1")], {},
                 expect("anti", "anti", "ok", "ok", "ok"),
                 id="anti-affinity-zone-node-without-key-passes"),
    pytest.param(pod("p", WEB, aff=affinity(anti=(term(HOST, WEB),))),
                 [pod("web", WEB, node="n2")], {},
                 expect("ok", "anti", "ok", "ok", "ok"),
                 id="anti-affinity-hostname"),
    pytest.param(pod("p", aff=affinity(anti=(term(HOST, exprs=[
                     {"key": "app", "operator": "In", "values": ["web", "api"]}]),))),
                 [pod("api", {"app": "api"}, node="n3"), pod("db", DB, node="n4")], {},
                 expect("ok", "ok", "anti", "ok", "ok"),
                 id="anti-affinity-match-expressions"),
    pytest.param(pod("p", aff=affinity(anti=(
                     term(HOST, S2, ns_selector={"matchLabels": {"team": "a"}}),))),
                 [pod("s2", S2, node="n1", ns="not-in-cache")], {},
                 expect(*["ok"] * 5),
                 id="anti-affinity-namespace-selector-skips-unknown-namespace"),
    pytest.param(pod("p", WEB),
                 [pod("guard", aff=affinity(anti=(term(HOST, WEB),)), node="n1")], {},
                 expect("existing", "ok", "ok", "ok", "ok"),
                 id="existing-pod-anti-affinity-hostname"),
    pytest.param(pod("p", WEB),
                 [pod("guard", aff=affinity(anti=(term(ZONE, WEB),)), node="n3")], {},
                 expect("ok", "ok", "existing", "existing", "ok"),
                 id="existing-pod-anti-affinity-zone"),
    pytest.param(pod("p", WEB),
                 [pod("guard", ns="other", node="n1", aff=affinity(anti=(
                     term(HOST, WEB, ns_selector={"matchLabels": {"env": "prod"}}),)))],
                 {"default": {"env": "prod"}},
                 expect("existing", "ok", "ok", "ok", "ok"),
                 id="existing-pod-anti-affinity-namespace-selector"),
    pytest.param(pod("p", DB, aff=affinity(required=(term(ZONE, DB),), anti=(term(HOST, WEB),))),
                 [pod("db", DB, node="n3"), pod("web1", WEB, node="n1"),
                  pod("web3", WEB, node="n3")], {},
                 expect("affinity", "affinity", "anti", "ok", "affinity"),
                 id="affinity-is-checked-before-anti-affinity"),
    pytest.param(pod("p", WEB, aff=affinity(anti=(term(HOST, DB),))),
                 [pod("guard", aff=affinity(anti=(term(HOST, WEB),)), node="n2"),
                  pod("db", DB, node="n2")], {},
                 expect("ok", "anti", "ok", "ok", "ok"),
                 id="own-anti-affinity-is-checked-before-existing"),
]


@pytest.mark.parametrize(("incoming", "existing", "namespaces", "expected"), FILTER_CASES)
def test_filter(incoming: Obj, existing: list[Obj], namespaces: dict[str, dict[str, str]],
                expected: dict[str, tuple[Code, str] | None]) -> None:
    """Each node is accepted or refused with upstream's code and reason."""
    handle = FakeHandle(zoned_nodes(), existing, namespaces=namespaces)
    pre, statuses = run_filter(new({}, handle), incoming, handle)
    assert pre is None
    assert {n: outcome(st) for n, st in statuses.items()} == expected


@pytest.mark.parametrize(("incoming", "existing"), [
    pytest.param(pod("p", WEB), [], id="empty-cluster"),
    pytest.param(pod("p", WEB, aff=affinity(preferred=(weighted(5, term(ZONE, DB)),))),
                 [pod("db", DB, node="n1")], id="only-preferred-terms"),
    pytest.param(pod("p", WEB),
                 [pod("guard", aff=affinity(anti=(term(HOST, DB),)), node="n1")],
                 id="existing-anti-affinity-not-matching"),
    pytest.param(pod("p", WEB),
                 [pod("guard", ns="other", aff=affinity(anti=(term(HOST, WEB),)), node="n1")],
                 id="existing-anti-affinity-other-namespace"),
    pytest.param(pod("p", WEB),
                 [pod("guard", aff=affinity(anti=(term(ZONE, WEB),)), node="n5")],
                 id="existing-anti-affinity-node-without-topology-key"),
])
def test_prefilter_skips(incoming: Obj, existing: list[Obj]) -> None:
    """No required terms and no existing pod's anti-affinity toward the pod: Skip."""
    handle = FakeHandle(zoned_nodes(), existing)
    pre, _ = run_filter(new({}, handle), incoming, handle)
    assert pre is not None and pre.code == Code.SKIP


def test_filter_without_prefilter_state_is_an_error() -> None:
    """Filter needs what PreFilter wrote."""
    handle = FakeHandle(zoned_nodes())
    node = handle.node("n1")
    assert node is not None
    st = new({}, handle).filter(CycleState(), PodInfo(pod("p")), node)
    assert st is not None and st.code == Code.ERROR
    assert "PreFilterInterPodAffinity" in st.message


# -- the examples of "Assigning Pods to Nodes" -----------------------------------------

REDIS = {"app": "store"}
WEB_STORE = {"app": "web-store"}


def redis(name: str) -> Obj:
    return pod(name, REDIS, aff=affinity(anti=(term(HOST, REDIS),)))


def web(name: str) -> Obj:
    return pod(name, WEB_STORE, aff=affinity(required=(term(HOST, REDIS),),
                                              anti=(term(HOST, WEB_STORE),)))


def schedule(plugin: InterPodAffinity, handle: FakeHandle, p: Obj
             ) -> tuple[str | None, dict[str, Status | None]]:
    """Filter, then the best-scored feasible node (first by name on ties); bind there."""
    _, statuses = run_filter(plugin, p, handle)
    feasible = [n for n, st in statuses.items() if st is None]
    if not feasible:
        return None, statuses
    scores = run_score(plugin, p, handle, feasible)
    best = max(sorted(feasible), key=lambda n: scores[n])
    p["spec"]["nodeName"] = best
    target = handle.node(best)
    assert target is not None
    target.add_pod(PodInfo(p))
    return best, statuses


@pytest.mark.parametrize(("order", "placed"), [
    pytest.param([redis("redis-0"), redis("redis-1"), redis("redis-2"),
                  web("web-0"), web("web-1"), web("web-2")],
                 ["node-1", "node-2", "node-3", "node-1", "node-2", "node-3"],
                 id="caches-first"),
    pytest.param([redis("redis-0"), web("web-0"), redis("redis-1"), web("web-1"),
                  redis("redis-2"), web("web-2")],
                 ["node-1", "node-1", "node-2", "node-2", "node-3", "node-3"],
                 id="interleaved"),
    pytest.param([web("web-0"), redis("redis-0"), web("web-1")],
                 [None, "node-1", "node-1"],
                 id="web-before-any-cache-waits"),
])
def test_docs_redis_cache_and_web_store(order: list[Obj], placed: list[str | None]) -> None:
    """Each web server runs beside a cache, one of each per node, as in the docs."""
    handle = FakeHandle([make_node(f"node-{i}") for i in (1, 2, 3)])
    plugin = new({}, handle)
    assert [schedule(plugin, handle, p)[0] for p in order] == placed


@pytest.mark.parametrize(("extra", "reason"), [
    pytest.param(redis("redis-3"), ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH, id="fourth-cache"),
    pytest.param(web("web-3"), ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH, id="fourth-web"),
])
def test_docs_fourth_replica_does_not_fit(extra: Obj, reason: str) -> None:
    """With three nodes full, a fourth replica of either set is refused everywhere."""
    handle = FakeHandle([make_node(f"node-{i}") for i in (1, 2, 3)])
    plugin = new({}, handle)
    for p in [redis("redis-0"), redis("redis-1"), redis("redis-2"),
              web("web-0"), web("web-1"), web("web-2")]:
        assert schedule(plugin, handle, p)[0] is not None
    node, statuses = schedule(plugin, handle, extra)
    assert node is None
    assert {outcome(st) for st in statuses.values()} == {(Code.UNSCHEDULABLE, reason)}


def test_docs_zone_security_example() -> None:
    """Required affinity to S1 in the zone, preferred anti-affinity (100) to S2 in the zone."""
    nodes = [make_node("v1", labels={ZONE: "V"}), make_node("v2", labels={ZONE: "V"}),
             make_node("w1", labels={ZONE: "W"}), make_node("x1", labels={ZONE: "X"})]
    existing = [pod("s1-v", S1, node="v1"), pod("s1-w", S1, node="w1"),
                pod("s2-w", S2, node="w1")]
    incoming = pod("with-pod-affinity", aff=affinity(
        required=(term(ZONE, exprs=[{"key": "security", "operator": "In", "values": ["S1"]}]),),
        anti_preferred=(weighted(100, term(ZONE, exprs=[
            {"key": "security", "operator": "In", "values": ["S2"]}])),)))
    handle = FakeHandle(nodes, existing)
    plugin = new({}, handle)
    _, statuses = run_filter(plugin, incoming, handle)
    feasible = [n for n, st in statuses.items() if st is None]
    assert feasible == ["v1", "v2", "w1"]
    assert outcome(statuses["x1"]) == OUTCOMES["affinity"]
    assert run_score(plugin, incoming, handle, feasible) == {"v1": 100, "v2": 100, "w1": 0}


# -- Score ----------------------------------------------------------------------------

SCORE_CASES = [
    pytest.param(pod("p", aff=affinity(preferred=(weighted(10, term(ZONE, DB)),))),
                 [pod("db", DB, node="n3")], {}, {},
                 [0, 0, 100, 100, 0], id="preferred-affinity"),
    pytest.param(pod("p", aff=affinity(anti_preferred=(weighted(10, term(ZONE, DB)),))),
                 [pod("db", DB, node="n3")], {}, {},
                 [100, 100, 0, 0, 100], id="preferred-anti-affinity"),
    pytest.param(pod("p", aff=affinity(preferred=(weighted(8, term(ZONE, DB)),),
                                       anti_preferred=(weighted(2, term(HOST, DB)),))),
                 [pod("db", DB, node="n1")], {}, {},
                 [75, 100, 0, 0, 0], id="weights-add-up"),
    pytest.param(pod("p", aff=affinity(preferred=(weighted(5, term(ZONE, DB)),))),
                 [pod("db1", DB, node="n1"), pod("db2", DB, node="n2"),
                  pod("db3", DB, node="n3")], {}, {},
                 [100, 100, 50, 50, 0], id="weight-per-matching-pod"),
    pytest.param(pod("p", WEB),
                 [pod("fan", node="n2", aff=affinity(required=(term(HOST, WEB),)))], {}, {},
                 [0, 100, 0, 0, 0], id="existing-required-affinity-hard-weight"),
    pytest.param(pod("p", WEB, aff=affinity(preferred=(weighted(3, term(ZONE, DB)),))),
                 [pod("fan", node="n2", aff=affinity(required=(term(HOST, WEB),))),
                  pod("db", DB, node="n3")], {}, {},
                 [0, 33, 100, 100, 0], id="hard-weight-default-1"),
    pytest.param(pod("p", WEB, aff=affinity(preferred=(weighted(3, term(ZONE, DB)),))),
                 [pod("fan", node="n2", aff=affinity(required=(term(HOST, WEB),))),
                  pod("db", DB, node="n3")], {"hardPodAffinityWeight": 5}, {},
                 [0, 100, 60, 60, 0], id="hard-weight-5"),
    pytest.param(pod("p", WEB),
                 [pod("fan", node="n2", aff=affinity(required=(term(HOST, WEB),)))],
                 {"hardPodAffinityWeight": 0}, {},
                 [0, 0, 0, 0, 0], id="hard-weight-0-ignores-required-terms"),
    pytest.param(pod("p", WEB),
                 [pod("fan", node="n1", aff=affinity(preferred=(weighted(20, term(ZONE, WEB)),)))],
                 {}, {},
                 [100, 100, 0, 0, 0], id="existing-preferred-affinity"),
    pytest.param(pod("p", WEB),
                 [pod("shy", node="n1",
                      aff=affinity(anti_preferred=(weighted(20, term(ZONE, WEB)),)))],
                 {}, {},
                 [0, 0, 100, 100, 100], id="existing-preferred-anti-affinity"),
    pytest.param(pod("p", WEB),
                 [pod("shy", node="n1",
                      aff=affinity(anti_preferred=(weighted(20, term(ZONE, WEB)),)))],
                 {"ignorePreferredTermsOfExistingPods": True}, {},
                 [0, 0, 0, 0, 0], id="ignore-preferred-terms-of-existing-pods"),
    pytest.param(pod("p", WEB, aff=affinity(preferred=(weighted(10, term(ZONE, DB)),))),
                 [pod("shy", node="n1",
                      aff=affinity(anti_preferred=(weighted(5, term(ZONE, WEB)),))),
                  pod("db", DB, node="n3")],
                 {"ignorePreferredTermsOfExistingPods": True}, {},
                 [0, 0, 100, 100, 33], id="ignore-applies-only-to-pods-without-preferences"),
    pytest.param(pod("p", WEB), [pod("db", DB, node="n1")], {}, {},
                 [0, 0, 0, 0, 0], id="nothing-to-score"),
    pytest.param(pod("p", aff=affinity(preferred=(weighted(10, term(ZONE, DB)),))),
                 [pod("db", DB, node="n3", ns="other")], {}, {},
                 [0, 0, 0, 0, 0], id="preferred-term-defaults-to-own-namespace"),
    pytest.param(pod("p", WEB),
                 [pod("fan", ns="other", node="n1", aff=affinity(preferred=(weighted(10, term(
                     ZONE, WEB, ns_selector={"matchLabels": {"env": "prod"}})),)))],
                 {}, {"default": {"env": "prod"}},
                 [100, 100, 0, 0, 0], id="existing-term-namespace-selector-matches"),
    pytest.param(pod("p", WEB),
                 [pod("fan", ns="other", node="n1", aff=affinity(preferred=(weighted(10, term(
                     ZONE, WEB, ns_selector={"matchLabels": {"env": "prod"}})),)))],
                 {}, {"default": {"env": "dev"}},
                 [0, 0, 0, 0, 0], id="existing-term-namespace-selector-no-match"),
]


@pytest.mark.parametrize(("incoming", "existing", "args", "namespaces", "expected"),
                         SCORE_CASES)
def test_score(incoming: Obj, existing: list[Obj], args: dict[str, Any],
               namespaces: dict[str, dict[str, str]], expected: list[int]) -> None:
    """Normalized scores for n1..n5."""
    handle = FakeHandle(zoned_nodes(), existing, namespaces=namespaces)
    scores = run_score(new(args, handle), incoming, handle)
    assert [scores[f"n{i}"] for i in range(1, 6)] == expected


def test_raw_scores_are_signed_sums() -> None:
    """Score is the sum of weights over the node's topology pairs, negative for anti."""
    handle = FakeHandle(zoned_nodes(), [pod("db", DB, node="n1"), pod("db3", DB, node="n3")])
    plugin = new({}, handle)
    pi = PodInfo(pod("p", aff=affinity(preferred=(weighted(4, term(ZONE, DB)),),
                                       anti_preferred=(weighted(7, term(HOST, DB)),))))
    state = CycleState()
    assert plugin.pre_score(state, pi, handle.nodes()) is None
    raw = {n.name: plugin.score(state, pi, n) for n in handle.nodes()}
    assert raw == {"n1": -3, "n2": 4, "n3": -3, "n4": 4, "n5": 0}


@pytest.mark.parametrize(("raw", "normalized"), [
    pytest.param([-5, 0, 3], [0, 62, 100], id="negative-to-positive"),
    pytest.param([-10, -20], [100, 0], id="all-negative"),
    pytest.param([7, 7, 7], [0, 0, 0], id="all-equal"),
    pytest.param([0, 1, 2], [0, 50, 100], id="small"),
    pytest.param([0, 3, 10], [0, 30, 100], id="truncates"),
])
def test_normalize_score(raw: list[int], normalized: list[int]) -> None:
    """Min/max scaling to 0..100, truncated like upstream's int64(float)."""
    handle = FakeHandle(zoned_nodes(), [pod("db", DB, node="n1")])
    plugin = new({}, handle)
    pi = PodInfo(pod("p", aff=affinity(preferred=(weighted(1, term(ZONE, DB)),))))
    state = CycleState()
    assert plugin.pre_score(state, pi, handle.nodes()) is None
    scores = list(raw)
    plugin.normalize_score(state, pi, scores)
    assert scores == normalized


# -- PreFilter extensions -------------------------------------------------------------

GUARD_WEB_ZONE = affinity(anti=(term(ZONE, WEB),))

EXTENSION_CASES = [
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, DB),))),
                 [pod("db", DB, node="n3")],
                 [("add", pod("db1", DB), "n1")],
                 expect("ok", "ok", "ok", "ok", "affinity"),
                 id="add-pod-matching-affinity"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, DB),))),
                 [pod("db", DB, node="n3")],
                 [("remove", pod("db", DB), "n3")],
                 expect(*["affinity"] * 5),
                 id="remove-last-matching-pod"),
    pytest.param(pod("p", WEB, aff=affinity(required=(term(ZONE, WEB),))),
                 [pod("web", WEB, node="n3")],
                 [("remove", pod("web", WEB), "n3")],
                 expect("ok", "ok", "ok", "ok", "affinity"),
                 id="remove-last-matching-pod-self-affinity-applies"),
    pytest.param(pod("p", WEB, aff=affinity(anti=(term(HOST, DB),))), [],
                 [("add", pod("guard", aff=GUARD_WEB_ZONE), "n3")],
                 expect("ok", "ok", "existing", "existing", "ok"),
                 id="add-pod-whose-anti-affinity-blocks"),
    pytest.param(pod("p", WEB), [pod("guard", node="n1", aff=GUARD_WEB_ZONE)],
                 [("remove", pod("guard", aff=GUARD_WEB_ZONE), "n1")],
                 expect(*["ok"] * 5),
                 id="remove-pod-whose-anti-affinity-blocked"),
    pytest.param(pod("p", aff=affinity(anti=(term(HOST, DB),))), [],
                 [("add", pod("db", DB), "n4")],
                 expect("ok", "ok", "ok", "anti", "ok"),
                 id="add-pod-matching-anti-affinity"),
    pytest.param(pod("p", aff=affinity(anti=(term(ZONE, DB),))),
                 [pod("db1", DB, node="n1"), pod("db2", DB, node="n2")],
                 [("remove", pod("db1", DB), "n1")],
                 expect("anti", "anti", "ok", "ok", "ok"),
                 id="remove-one-of-two-keeps-the-zone-blocked"),
    pytest.param(pod("p", aff=affinity(anti=(term(ZONE, DB),))), [],
                 [("add", pod("db", DB), "n1"), ("remove", pod("db", DB), "n1")],
                 expect(*["ok"] * 5),
                 id="add-then-remove-restores"),
]


@pytest.mark.parametrize(("incoming", "existing", "ops", "expected"), EXTENSION_CASES)
def test_prefilter_extensions(incoming: Obj, existing: list[Obj],
                              ops: list[tuple[str, Obj, str]],
                              expected: dict[str, tuple[Code, str] | None]) -> None:
    """add_pod/remove_pod move the PreFilter counts as preemption and nominations need."""
    handle = FakeHandle(zoned_nodes(), existing)
    plugin = new({}, handle)
    pi = PodInfo(incoming)
    state = CycleState()
    _, st = plugin.pre_filter(state, pi, handle.nodes())
    assert st is None
    for op, other, node_name in ops:
        node = handle.node(node_name)
        assert node is not None
        fn = plugin.add_pod if op == "add" else plugin.remove_pod
        assert fn(state, pi, PodInfo(other), node) is None
    got = {n.name: outcome(plugin.filter(state, pi, n)) for n in handle.nodes()}
    assert got == expected


def test_cloned_state_is_independent() -> None:
    """Changing a clone (as preemption does) leaves the original state alone."""
    handle = FakeHandle(zoned_nodes())
    plugin = new({}, handle)
    pi = PodInfo(pod("p", aff=affinity(anti=(term(HOST, DB),))))
    state = CycleState()
    plugin.pre_filter(state, pi, handle.nodes())
    clone = state.clone()
    n1 = handle.node("n1")
    assert n1 is not None
    plugin.add_pod(clone, pi, PodInfo(pod("db", DB)), n1)
    assert outcome(plugin.filter(clone, pi, n1)) == OUTCOMES["anti"]
    assert plugin.filter(state, pi, n1) is None


def test_add_pod_without_prefilter_state_is_an_error() -> None:
    """After a PreFilter Skip the framework must not call the extensions."""
    handle = FakeHandle(zoned_nodes())
    n1 = handle.node("n1")
    assert n1 is not None
    st = new({}, handle).add_pod(CycleState(), PodInfo(pod("p")), PodInfo(pod("q")), n1)
    assert st is not None and st.code == Code.ERROR


# -- events and queueing hints --------------------------------------------------------


def test_events_to_register() -> None:
    """Pod add/delete/label update and Node add/label update."""
    events = {e.event for e in new({}, FakeHandle()).events_to_register()}
    assert events == {
        ClusterEvent("Pod", Action.ADD | Action.UPDATE_POD_LABEL | Action.DELETE),
        ClusterEvent("Node", Action.ADD | Action.UPDATE_NODE_LABEL),
    }


WAITING = pod("p", WEB, aff=affinity(required=(term(ZONE, DB),), anti=(term(HOST, S2),)))
GUARD = pod("guard", node="n1", aff=affinity(anti=(term(HOST, WEB),)))


@pytest.mark.parametrize(("waiting", "old", "new_obj", "queue"), [
    pytest.param(WAITING, None, pod("db", DB, node="n1"), True, id="added-pod-matches-affinity"),
    pytest.param(WAITING, None, pod("x", S1, node="n1"), False, id="added-pod-unrelated"),
    pytest.param(WAITING, None, pod("db", DB), False, id="added-pod-unscheduled"),
    pytest.param(WAITING, pod("x", S1, node="n1"), pod("x", DB, node="n1"), True,
                 id="label-update-now-matches-affinity"),
    pytest.param(WAITING, pod("x", S2, node="n1"), pod("x", S1, node="n1"), True,
                 id="label-update-no-longer-matches-anti-affinity"),
    pytest.param(WAITING, pod("x", S1, node="n1"), pod("x", {"a": "b"}, node="n1"), False,
                 id="label-update-unrelated"),
    pytest.param(WAITING, pod("x", S2, node="n1"), None, True,
                 id="deleted-pod-matched-anti-affinity"),
    pytest.param(pod("p", WEB), GUARD, None, True,
                 id="deleted-pod-anti-affinity-matched-the-waiting-pod"),
    pytest.param(WAITING, pod("x", DB, node="n1"), None, False, id="deleted-pod-unrelated"),
])
def test_pod_event_hint(waiting: Obj, old: Obj | None, new_obj: Obj | None,
                        queue: bool) -> None:
    """Whether a pod event may make the waiting pod schedulable."""
    plugin = new({}, FakeHandle())
    hint = next(e.hint for e in plugin.events_to_register() if e.event.resource == "Pod")
    assert hint is not None
    assert hint(PodInfo(waiting), old, new_obj) is queue


@pytest.mark.parametrize(("waiting", "old", "new_obj", "queue"), [
    pytest.param(WAITING, None, make_node("z", labels={ZONE: "c"}), True,
                 id="added-node-with-topology-key"),
    pytest.param(WAITING, None, NodeInfo(make_node("z")), True,
                 id="added-node-with-anti-affinity-key"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, DB),))), None, make_node("z"),
                 False, id="added-node-without-affinity-key"),
    pytest.param(pod("p", aff=affinity(required=(term(ZONE, DB),))),
                 make_node("z", labels={ZONE: "c"}), make_node("z"), True,
                 id="topology-key-removed"),
    pytest.param(pod("p", WEB), None, make_node("z"), True,
                 id="pod-without-required-affinity"),
])
def test_node_event_hint(waiting: Obj, old: Any, new_obj: Any, queue: bool) -> None:
    """Whether a node event may make the waiting pod schedulable."""
    plugin = new({}, FakeHandle())
    hint = next(e.hint for e in plugin.events_to_register() if e.event.resource == "Node")
    assert hint is not None
    assert hint(PodInfo(waiting), old, new_obj) is queue


# -- args ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "weight", "ignore"), [
    pytest.param({}, 1, False, id="defaults"),
    pytest.param({"hardPodAffinityWeight": None}, 1, False, id="null-weight"),
    pytest.param({"hardPodAffinityWeight": 0}, 0, False, id="zero"),
    pytest.param({"hardPodAffinityWeight": 100, "ignorePreferredTermsOfExistingPods": True},
                 100, True, id="max-and-ignore"),
])
def test_args(args: dict[str, Any], weight: int, ignore: bool) -> None:
    """InterPodAffinityArgs with upstream's defaults."""
    plugin = new(args, FakeHandle())
    assert plugin.name == "InterPodAffinity"
    assert plugin.hard_pod_affinity_weight == weight
    assert plugin.ignore_preferred_terms_of_existing_pods is ignore


@pytest.mark.parametrize(("args", "message"), [
    pytest.param({"hardPodAffinityWeight": 101},
                 "hardPodAffinityWeight: Invalid value: 101: not in valid range [0, 100]",
                 id="too-big"),
    pytest.param({"hardPodAffinityWeight": -1},
                 "hardPodAffinityWeight: Invalid value: -1: not in valid range [0, 100]",
                 id="negative"),
    pytest.param({"hardPodAffinityWeight": "5"}, "must be an integer", id="string"),
    pytest.param({"ignorePreferredTermsOfExistingPods": "yes"}, "must be a boolean",
                 id="ignore-not-bool"),
])
def test_invalid_args(args: dict[str, Any], message: str) -> None:
    """Bad args fail when the plugin is built."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        new(args, FakeHandle())


def test_batch_normalize_rounds_as_the_float_formula() -> None:
    """NormalizeScore is upstream's float formula, ``int(100 * ((s - min) / (max - min)))``
    (29 of 0..100 gives 28, where integer arithmetic gives 29); the batch form rounds
    alike."""
    import numpy as np

    from kybernetes.scheduler.plugins.interpodaffinity import PRE_SCORE_STATE_KEY, _PreScoreState

    pl = new({}, FakeHandle())
    state = CycleState()
    state.write(PRE_SCORE_STATE_KEY, _PreScoreState({"zone": {"a": 1}}))
    raw = [0, 29, 57, 100, 64]
    one = list(raw)
    pl.normalize_score(state, PodInfo(make_pod("p")), one)
    many = pl.normalize_batch(state, PodInfo(make_pod("p")), np.array(raw, np.int64))
    assert one == [0, 28, 56, 100, 64]
    assert many.tolist() == one
