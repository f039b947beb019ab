"""The JSONPath subset used by printer columns (client-go ``util/jsonpath`` semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from kybernetes.api import jsonpath

OBJ: dict[str, Any] = {
    "metadata": {
        "name": "trainer",
        "labels": {"app.kubernetes.io/name": "web"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"},
    },
    "spec": {
        "replicas": 3,
        "containers": [
            {"name": "main", "image": "pytorch:2.3", "ports": [{"containerPort": 8080}]},
            {"name": "sidecar", "image": "envoy:1.30"},
        ],
    },
    "status": {
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T11:00:00Z"},
            {"type": "Synced", "status": "False", "observedGeneration": 4},
        ],
        "score": 0.5,
        "empty": None,
    },
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        pytest.param(".metadata.name", ["trainer"], id="field"),
        pytest.param("{.metadata.name}", ["trainer"], id="braces"),
        pytest.param("$.spec.replicas", [3], id="root"),
        pytest.param(".spec.containers[0].image", ["pytorch:2.3"], id="index"),
        pytest.param(".spec.containers[-1].name", ["sidecar"], id="negative-index"),
        pytest.param(".spec.containers[*].name", ["main", "sidecar"], id="wildcard"),
        pytest.param(".spec.containers[0:1].name", ["main"], id="slice"),
        pytest.param(".spec.containers[1:].name", ["sidecar"], id="open-slice"),
        pytest.param(".spec.containers[0,1].image", ["pytorch:2.3", "envoy:1.30"], id="union"),
        pytest.param(".spec.containers[0]['name','image']", ["main", "pytorch:2.3"],
                     id="key-union"),
        pytest.param('.status.conditions[?(@.type=="Ready")].status', ["True"], id="filter"),
        pytest.param("{.status.conditions[?(@.type == 'Synced')].status}", ["False"],
                     id="filter-single-quotes-spaces"),
        pytest.param(".status.conditions[?(@.status!=\"True\")].type", ["Synced"],
                     id="filter-not-equal"),
        pytest.param(".spec.containers[0].ports[?(@.containerPort>=8080)].containerPort", [8080],
                     id="filter-number"),
        pytest.param(".status.conditions[?(@.observedGeneration)].type", ["Synced"],
                     id="filter-exists"),
        pytest.param(".metadata.labels['app.kubernetes.io/name']", ["web"], id="quoted-key"),
        pytest.param('.metadata.labels["app.kubernetes.io/name"]', ["web"],
                     id="double-quoted-key"),
        pytest.param(".metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt",
                     ["2024-05-01T10:00:00Z"], id="escaped-dots"),
        pytest.param("..containerPort", [8080], id="recursive"),
        pytest.param(".spec.containers[*].ports[*].containerPort", [8080],
                     id="missing-in-some-items"),
        pytest.param(".metadata.missing", [], id="missing-key"),
        pytest.param(".status.empty", [None], id="null-value"),
        pytest.param('.status.conditions[?(@.type=="Stalled")].status', [], id="filter-no-match"),
    ],
)
def test_find(expr: str, expected: list[Any]) -> None:
    """find selects what client-go's JSONPath selects, missing keys allowed."""
    assert jsonpath.find(OBJ, expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param(".spec.containers[2].name", id="index-out-of-range"),
        pytest.param(".metadata[0]", id="index-on-map"),
        pytest.param(".metadata[?(@.a)]", id="filter-on-map"),
        pytest.param(".status.conditions[?(@.type==1)]", id="compare-string-with-int"),
        pytest.param(".status.conditions[?(@.observedGeneration>1)]",
                     id="compare-missing-field"),
        pytest.param(".spec.containers[name]", id="unquoted-key"),
        pytest.param(".spec.containers[0", id="unclosed-bracket"),
        pytest.param("{range .items[*]}{.name}{end}", id="range-template"),
        pytest.param(".spec.containers[?(@.name==main)]", id="unquoted-operand"),
    ],
)
def test_find_errors(expr: str) -> None:
    """Paths client-go rejects, or cannot evaluate, raise JSONPathError."""
    with pytest.raises(jsonpath.JSONPathError):
        jsonpath.find(OBJ, expr)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param("Running", "Running", id="string"),
        pytest.param(3, "3", id="int"),
        pytest.param(True, "true", id="bool"),
        pytest.param(None, "<nil>", id="null"),
        pytest.param(1.0, "1", id="whole-float"),
        pytest.param(0.25, "0.25", id="fraction"),
        pytest.param(123456.0, "123456", id="six-digits"),
        pytest.param(2.5e6, "2.5e+06", id="exponent"),
        pytest.param(1e-05, "1e-05", id="small-exponent"),
        pytest.param(0.0001, "0.0001", id="small-plain"),
        pytest.param(-3.5, "-3.5", id="negative"),
        pytest.param({"b": 1, "a": ["x"]}, '{"a":["x"],"b":1}', id="map-as-json"),
        pytest.param([1, "<b>"], '[1,"\\u003cb\\u003e"]', id="list-html-escaped"),
    ],
)
def test_format_value(value: Any, text: str) -> None:
    """Values print the way Go's JSONPath printer writes them."""
    assert jsonpath.format_value(value) == text


def test_parse_reuses_steps() -> None:
    """A parsed path can be evaluated repeatedly without re-parsing."""
    path = jsonpath.parse("{.spec.containers[*].image}")
    assert jsonpath.find(OBJ, path) == ["pytorch:2.3", "envoy:1.30"]
    assert jsonpath.find({"spec": {"containers": []}}, path) == []
