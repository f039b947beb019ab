"""Ingress routing: hosts, path types and precedence, default backends, the ingress-nginx
canary annotations, and which Ingresses are this controller's."""

from __future__ import annotations

import random
from typing import Any

from kybernetes.proxy.ingress_rules import build, is_ours

Obj = dict[str, Any]
C = "nginx.ingress.kubernetes.io/"


def ingress(name: str, paths: list[tuple[str, str, str]], *, host: str = "",
            annotations: dict[str, str] | None = None, created: str = "2026-01-01T00:00:00Z",
            cls: str | None = None, default: str = "") -> Obj:
    spec: Obj = {"rules": [{"http": {"paths": [
        {"path": p, "pathType": t, "backend": {"service": {"name": s, "port": {"number": 80}}}}
        for p, t, s in paths]}, **({"host": host} if host else {})}]}
    if cls:
        spec["ingressClassName"] = cls
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                         "annotations": annotations or {}}, "spec": spec}


AB = [ingress("main", [("/model1", "Prefix", "model1"), ("/model2", "Prefix", "model2"),
                       ("/predict", "Exact", "model1")]),
      ingress("canary", [("/predict", "Exact", "model2")],
              annotations={C + "canary": "true", C + "canary-weight": "10",
                           C + "canary-by-header": "x-variant",
                           C + "canary-by-header-value": "v2"})]


def svc(routes: Any, path: str, headers: dict[str, str] | None = None, rand: float = 0.5,
        host: str = "example.com") -> str | None:
    b = routes.route(host, path, headers or {}, rand)
    return b.service if b else None


def test_fan_out_by_path() -> None:
    r = build(AB)
    assert svc(r, "/model1") == "model1" and svc(r, "/model1/x?y=1") == "model1"
    assert svc(r, "/model2/predict") == "model2"
    assert svc(r, "/model10") is None and svc(r, "/predict/x") is None
    assert svc(r, "/") is None


def test_canary_by_weight_header_and_precedence() -> None:
    r = build(AB)
    rng = random.Random(7)
    hits = sum(svc(r, "/predict", rand=rng.random()) == "model2" for _ in range(5000))
    assert 400 <= hits <= 600  # 10 % of 5,000, well within chance
    assert all(svc(r, "/predict", {"x-variant": "v2"}, rand=0.99) == "model2"
               for _ in range(20))
    # another value of the header: ignored, the weight decides
    assert svc(r, "/predict", {"x-variant": "v1"}, rand=0.99) == "model1"
    assert svc(r, "/predict", {"x-variant": "v1"}, rand=0.05) == "model2"


def test_canary_header_always_never_cookie_and_pattern() -> None:
    def canary(**ann: str) -> Any:
        return build([ingress("main", [("/", "Prefix", "stable")]),
                      ingress("c", [("/", "Prefix", "next")],
                              annotations={C + "canary": "true",
                                           **{C + k.replace("_", "-"): v
                                              for k, v in ann.items()}})])

    r = canary(canary_by_header="x-canary", canary_by_cookie="beta", canary_weight="100")
    assert svc(r, "/", {"x-canary": "never"}) == "stable"  # header before weight
    assert svc(r, "/", {"x-canary": "always"}) == "next"
    assert svc(r, "/", {"cookie": "beta=never; a=b"}) == "stable"  # cookie before weight
    assert svc(r, "/", {"cookie": "beta=always"}) == "next"
    assert svc(r, "/", {}) == "next"
    r = canary(canary_by_header="x-user", canary_by_header_pattern="^(alice|bob)$")
    assert svc(r, "/", {"x-user": "bob"}) == "next" and svc(r, "/", {"x-user": "eve"}) == "stable"
    r = canary(canary_weight="1", canary_weight_total="3")
    assert svc(r, "/", rand=0.3) == "next" and svc(r, "/", rand=0.34) == "stable"


def test_hosts_exact_beats_prefix_longest_prefix_wins() -> None:
    r = build([ingress("a", [("/", "Prefix", "root"), ("/api", "Prefix", "api"),
                             ("/api/v1", "Prefix", "v1"), ("/api", "Exact", "exact")],
                       host="ml.example.com"),
               ingress("b", [("/", "Prefix", "wild")], host="*.example.com"),
               ingress("c", [("/", "Prefix", "any")], default="fallback")])
    assert svc(r, "/api", host="ml.example.com:8080") == "exact"
    assert svc(r, "/api/v1/x", host="ml.example.com") == "v1"
    assert svc(r, "/api/x", host="ML.example.com") == "api"
    assert svc(r, "/x", host="other.example.com") == "wild"
    assert svc(r, "/x", host="a.b.example.com") == "any"
    assert svc(r, "/x", host="127.0.0.1") == "any"


def test_default_backend_and_oldest_wins() -> None:
    r = build([ingress("new", [("/x", "Prefix", "newer")], created="2026-02-01T00:00:00Z",
                       default="d2"),
               ingress("old", [("/x", "Prefix", "older")], default="d1")])
    assert svc(r, "/x") == "older" and svc(r, "/nothing") == "d1"


def test_classes() -> None:
    ours = {"metadata": {"name": "kybernetes", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "kybernetes.io/ingress-controller"}}
    nginx = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
    plain = ingress("a", [])
    assert is_ours(plain, [ours, nginx]) and is_ours(plain, [])
    assert not is_ours(ingress("b", [], cls="nginx"), [ours, nginx])
    assert is_ours(ingress("c", [], cls="kybernetes"), [nginx])
    nginx_default = {**nginx, "metadata": {"name": "nginx", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}}
    assert not is_ours(plain, [nginx_default])
    assert build([ingress("d", [("/", "Prefix", "x")], cls="nginx")], [nginx]).hosts == {}
