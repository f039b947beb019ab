"""JSON patch, JSON merge patch and strategic merge patch apply as kube-apiserver does."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any

import pytest

from kybernetes.api.patch import (
    PatchError,
    PatchSchema,
    json_patch,
    merge_patch,
    schema_for,
    strategic_merge_patch,
)
from kybernetes.api.schema import builtin_definitions


def _ids(value: Any) -> Iterator[int]:
    """The ids of every dict and list inside a JSON value."""
    if isinstance(value, dict):
        yield id(value)
        for v in value.values():
            yield from _ids(v)
    elif isinstance(value, list):
        yield id(value)
        for v in value:
            yield from _ids(v)


def _apply(fn: Any, doc: Any, patch: Any, *args: Any) -> Any:
    """Run ``fn`` and check it neither mutates its inputs nor shares containers with them."""
    doc_before, patch_before = copy.deepcopy(doc), copy.deepcopy(patch)
    try:
        result = fn(doc, patch, *args)
    finally:
        assert doc == doc_before
        assert patch == patch_before
    assert not set(_ids(result)) & (set(_ids(doc)) | set(_ids(patch)))
    return result


# -- RFC 6902 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "ops", "expected"),
    [
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"baz": "qux", "foo": "bar"},
            id="A.1-add-member",
        ),
        pytest.param(
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
            id="A.2-add-array-element",
        ),
        pytest.param(
            {"baz": "qux", "foo": "bar"},
            [{"op": "remove", "path": "/baz"}],
            {"foo": "bar"},
            id="A.3-remove-member",
        ),
        pytest.param(
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
            id="A.4-remove-array-element",
        ),
        pytest.param(
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
            id="A.5-replace",
        ),
        pytest.param(
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
            id="A.6-move-member",
        ),
        pytest.param(
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
            id="A.7-move-array-element",
        ),
        pytest.param(
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2},
            ],
            {"baz": "qux", "foo": ["a", 2, "c"]},
            id="A.8-test-success",
        ),
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
            id="A.10-add-nested-object",
        ),
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
            {"foo": "bar", "baz": "qux"},
            id="A.11-ignore-unknown-members",
        ),
        pytest.param(
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": 10}],
            {"/": 9, "~1": 10},
            id="A.14-escape-order",
        ),
        pytest.param(
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
            id="A.16-append-array-value",
        ),
        pytest.param(
            {"a": {"b": [1]}},
            [
                {"op": "copy", "from": "/a", "path": "/c"},
                {"op": "add", "path": "/c/b/-", "value": 2},
            ],
            {"a": {"b": [1]}, "c": {"b": [1, 2]}},
            id="copy-is-deep",
        ),
        pytest.param(
            {"metadata": {"labels": {"app.kubernetes.io/name": "x"}}},
            [{"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1name"}],
            {"metadata": {"labels": {}}},
            id="slash-in-label-key",
        ),
        pytest.param(
            {"a": [1, 2]},
            [{"op": "add", "path": "/a/2", "value": 3}],
            {"a": [1, 2, 3]},
            id="add-at-end-index",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "replace", "path": "", "value": {"b": 2}}],
            {"b": 2},
            id="replace-root",
        ),
        pytest.param(
            {"a": 1.0},
            [{"op": "test", "path": "/a", "value": 1}],
            {"a": 1.0},
            id="numbers-compare-by-value",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "move", "from": "/a", "path": "/a"}],
            {"a": 1},
            id="move-onto-itself",
        ),
    ],
)
def test_json_patch(doc: Any, ops: Any, expected: Any) -> None:
    """RFC 6902 operations and the RFC's appendix examples."""
    assert _apply(json_patch, doc, ops) == expected


@pytest.mark.parametrize(
    ("doc", "ops", "code", "message"),
    [
        pytest.param(
            {"baz": "qux"},
            [{"op": "test", "path": "/baz", "value": "bar"}],
            422,
            "testing value /baz failed: test failed",
            id="A.9-test-failed",
        ),
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/baz/bat", "value": "qux"}],
            422,
            'add operation does not apply: doc is missing path: "/baz/bat": missing value',
            id="A.12-add-to-missing-parent",
        ),
        pytest.param(
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": "10"}],
            422,
            "testing value /~01 failed: test failed",
            id="A.15-string-is-not-number",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "test", "path": "/a", "value": True}],
            422,
            "testing value /a failed: test failed",
            id="true-is-not-1",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "remove", "path": "/b"}],
            422,
            "error in remove for path: '/b': Unable to remove nonexistent key: b: missing value",
            id="remove-missing-key",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "replace", "path": "/b", "value": 2}],
            422,
            "replace operation does not apply: doc is missing key: /b: missing value",
            id="replace-missing-key",
        ),
        pytest.param(
            {"a": [1]},
            [{"op": "add", "path": "/a/3", "value": 2}],
            422,
            "error in add for path: '/a/3': Unable to access invalid index: 3: "
            "invalid index referenced",
            id="index-out-of-bounds",
        ),
        pytest.param(
            {"a": [1, 2]},
            [{"op": "remove", "path": "/a/01"}],
            422,
            "error in remove for path: '/a/01': value was not a proper array index: '01'",
            id="leading-zero-index",
        ),
        pytest.param(
            {"a": [1]},
            [{"op": "replace", "path": "/a/-", "value": 2}],
            422,
            "error in replace for path: '/a/-': value was not a proper array index: '-'",
            id="dash-only-for-add",
        ),
        pytest.param(
            {"a": {"b": 1}},
            [{"op": "move", "from": "/a", "path": "/a/c"}],
            422,
            'move operation does not apply: "from" /a is a prefix of "path" /a/c',
            id="move-into-own-child",
        ),
        pytest.param(
            {}, [{"op": "frob", "path": "/a"}], 422, "Unexpected kind: frob", id="unknown-op"
        ),
        pytest.param(
            {},
            [{"op": "add", "value": 1}],
            422,
            "add operation failed to decode path: missing value",
            id="missing-path",
        ),
        pytest.param(
            {},
            [{"op": "add", "path": "/a"}],
            422,
            "add operation, missing value field: missing value",
            id="missing-value",
        ),
        pytest.param(
            {},
            {"op": "add", "path": "/a", "value": 1},
            400,
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
            id="not-a-list",
        ),
        pytest.param(
            {},
            ["add"],
            400,
            "json: cannot unmarshal string into Go value of type jsonpatch.Operation",
            id="op-not-an-object",
        ),
    ],
)
def test_json_patch_errors(doc: Any, ops: Any, code: int, message: str) -> None:
    """Malformed patches are 400, patches that do not apply are 422, worded as evanphx."""
    with pytest.raises(PatchError) as err:
        _apply(json_patch, doc, ops)
    assert (err.value.code, err.value.message) == (code, message)


def test_json_patch_is_atomic() -> None:
    """A failing operation leaves the input untouched even after earlier ones applied."""
    doc = {"a": 1}
    ops = [{"op": "remove", "path": "/a"}, {"op": "test", "path": "/a", "value": 1}]
    with pytest.raises(PatchError):
        json_patch(doc, ops)
    assert doc == {"a": 1}


# -- RFC 7386 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        pytest.param({"a": "b"}, {"a": "c"}, {"a": "c"}, id="replace-member"),
        pytest.param({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}, id="add-member"),
        pytest.param({"a": "b"}, {"a": None}, {}, id="delete-member"),
        pytest.param({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}, id="delete-one-of-two"),
        pytest.param({"a": ["b"]}, {"a": "c"}, {"a": "c"}, id="array-to-string"),
        pytest.param({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}, id="string-to-array"),
        pytest.param(
            {"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}, id="nested"
        ),
        pytest.param({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}, id="arrays-replace"),
        pytest.param(["a", "b"], ["c", "d"], ["c", "d"], id="array-root"),
        pytest.param({"a": "b"}, ["c"], ["c"], id="array-patch-replaces-object"),
        pytest.param({"a": "foo"}, None, None, id="null-patch"),
        pytest.param({"a": "foo"}, "bar", "bar", id="string-patch"),
        pytest.param({"e": None}, {"a": 1}, {"e": None, "a": 1}, id="null-in-target-kept"),
        pytest.param([1, 2], {"a": "b", "c": None}, {"a": "b"}, id="object-patch-on-array"),
        pytest.param({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}, id="nulls-stripped"),
    ],
)
def test_merge_patch(doc: Any, patch: Any, expected: Any) -> None:
    """The examples of RFC 7386 appendix A."""
    assert _apply(merge_patch, doc, patch) == expected


# -- schema navigation ----------------------------------------------------------------


@functools.cache
def _schema(definition: str) -> PatchSchema:
    return schema_for(builtin_definitions(), definition)


def _deployment_schema() -> PatchSchema:
    return _schema("io.k8s.api.apps.v1.Deployment")


def _field(schema: PatchSchema | None, path: str) -> PatchSchema | None:
    """Follow ``a.b[].c`` (``[]`` steps into list items)."""
    for part in path.split("."):
        assert schema is not None
        if part.endswith("[]"):
            inner = schema.field(part[:-2])
            assert inner is not None
            schema = inner.items()
        else:
            schema = schema.field(part)
    return schema


@pytest.mark.parametrize(
    ("path", "strategy", "merge_key"),
    [
        pytest.param("spec.template.spec.containers", ["merge"], "name", id="containers"),
        pytest.param("spec.template.spec.containers[].env", ["merge"], "name", id="env"),
        pytest.param(
            "spec.template.spec.containers[].ports", ["merge"], "containerPort", id="ports"
        ),
        pytest.param(
            "spec.template.spec.containers[].volumeMounts", ["merge"], "mountPath", id="mounts"
        ),
        pytest.param(
            "spec.template.spec.volumes", ["merge", "retainKeys"], "name", id="comma-separated"
        ),
        pytest.param("spec.strategy", ["retainKeys"], None, id="read-before-ref"),
        pytest.param("metadata.finalizers", ["merge"], None, id="primitive-set"),
        pytest.param("spec.template.spec.tolerations", [], None, id="atomic-list"),
        pytest.param("metadata.labels.app", [], None, id="map-value"),
    ],
)
def test_schema_metadata(path: str, strategy: list[str], merge_key: str | None) -> None:
    """Patch strategies and merge keys are read from the property that names the field."""
    schema = _field(_deployment_schema(), path)
    assert schema is not None
    assert (schema.strategy, schema.merge_key) == (strategy, merge_key)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("spec.nope", id="unknown-property"),
        pytest.param("spec.replicas.x", id="inside-a-scalar"),
        pytest.param("spec.template.spec.containers[].image.x", id="inside-a-string"),
    ],
)
def test_schema_unknown(path: str) -> None:
    """Fields the schema does not know have no schema."""
    assert _field(_deployment_schema(), path) is None


# -- strategic merge patch ------------------------------------------------------------

_APP = {
    "name": "app",
    "image": "app:1",
    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    "ports": [{"containerPort": 80, "protocol": "TCP"}],
    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
}
_SIDECAR = {"name": "sidecar", "image": "side:1"}
_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "labels": {"app": "web", "tier": "front"},
        "finalizers": ["a/x", "b/y"],
    },
    "spec": {
        "replicas": 2,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        "extra": {"items": [{"name": "b"}], "keep": 1},
        "template": {
            "spec": {
                "containers": [_APP, _SIDECAR],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
            }
        },
    },
}


def _pod_spec(patch: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": patch}}}


def _app(patch: dict[str, Any]) -> dict[str, Any]:
    return _pod_spec({"containers": [{"name": "app", **patch}]})


def _at(doc: Any, path: str) -> Any:
    for part in path.split("/"):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


_CONTAINERS = "spec/template/spec/containers"


@pytest.mark.parametrize(
    ("patch", "path", "expected"),
    [
        pytest.param(
            _pod_spec(
                {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [{"image": "i", "name": "app"}],
                }
            ),
            _CONTAINERS,
            [{**_APP, "image": "i"}, _SIDECAR],
            id="kubectl-set-image",
        ),
        pytest.param(
            _app({"env": [{"name": "B", "value": "20"}]}),
            f"{_CONTAINERS}/0/env",
            [{"name": "A", "value": "1"}, {"name": "B", "value": "20"}],
            id="change-env-var",
        ),
        pytest.param(
            _app({"env": [{"name": "C", "value": "3"}]}),
            f"{_CONTAINERS}/0/env",
            [{"name": "C", "value": "3"}, *_APP["env"]],
            id="new-element-goes-first",
        ),
        pytest.param(
            _app(
                {
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                    "env": [{"name": "C", "value": "3"}],
                }
            ),
            f"{_CONTAINERS}/0/env",
            [*_APP["env"], {"name": "C", "value": "3"}],
            id="set-element-order-appends",
        ),
        pytest.param(
            _pod_spec({"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}),
            _CONTAINERS,
            [_SIDECAR, _APP],
            id="set-element-order-reorders",
        ),
        pytest.param(
            _pod_spec({"containers": [{"$patch": "delete", "name": "sidecar"}]}),
            _CONTAINERS,
            [_APP],
            id="delete-container",
        ),
        pytest.param(
            _pod_spec(
                {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [{"$patch": "delete", "name": "sidecar"}],
                }
            ),
            _CONTAINERS,
            [_APP],
            id="kubectl-apply-delete-container",
        ),
        pytest.param(
            _pod_spec({"containers": [{"name": "new", "image": "n"}, {"$patch": "replace"}]}),
            _CONTAINERS,
            [{"name": "new", "image": "n"}],
            id="replace-list",
        ),
        pytest.param(
            {"metadata": {"labels": {"$patch": "replace", "new": "x"}}},
            "metadata/labels",
            {"new": "x"},
            id="replace-map",
        ),
        pytest.param(
            {"spec": {"strategy": {"$patch": "delete"}}},
            "spec/strategy",
            {},
            id="delete-map",
        ),
        pytest.param(
            {"metadata": {"labels": {"$patch": "merge", "new": "x"}}},
            "metadata/labels",
            {"app": "web", "tier": "front", "new": "x"},
            id="merge-directive",
        ),
        pytest.param(
            {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
            "spec/strategy",
            {"type": "Recreate"},
            id="retain-keys-recreate",
        ),
        pytest.param(
            {
                "spec": {
                    "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}
                }
            },
            "spec/strategy",
            {"type": "Recreate"},
            id="retain-keys-with-null",
        ),
        pytest.param(
            _pod_spec(
                {
                    "volumes": [
                        {
                            "name": "data",
                            "$retainKeys": ["name", "hostPath"],
                            "hostPath": {"path": "/x"},
                        }
                    ]
                }
            ),
            "spec/template/spec/volumes",
            [{"name": "data", "hostPath": {"path": "/x"}}],
            id="retain-keys-in-merged-list",
        ),
        pytest.param(
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/x"]}},
            "metadata/finalizers",
            ["b/y"],
            id="delete-from-primitive-list",
        ),
        pytest.param(
            {
                "metadata": {
                    "$setElementOrder/finalizers": ["a/x", "c/z"],
                    "$deleteFromPrimitiveList/finalizers": ["b/y"],
                    "finalizers": ["c/z"],
                }
            },
            "metadata/finalizers",
            ["a/x", "c/z"],
            id="primitive-list-apply",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["c/z", "a/x"]}},
            "metadata/finalizers",
            ["c/z", "a/x", "b/y"],
            id="primitive-list-union",
        ),
        pytest.param(
            {"metadata": {"labels": {"tier": None}}},
            "metadata/labels",
            {"app": "web"},
            id="null-deletes-label",
        ),
        pytest.param(
            _app({"ports": [{"containerPort": 80, "name": "http"}]}),
            f"{_CONTAINERS}/0/ports",
            [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
            id="port-merged-by-container-port",
        ),
        pytest.param(
            _app({"ports": [{"containerPort": 443}]}),
            f"{_CONTAINERS}/0/ports",
            [{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}],
            id="port-added",
        ),
        pytest.param(
            _app({"volumeMounts": [{"mountPath": "/data", "readOnly": True}]}),
            f"{_CONTAINERS}/0/volumeMounts",
            [{"name": "data", "mountPath": "/data", "readOnly": True}],
            id="mount-merged-by-mount-path",
        ),
        pytest.param(
            _pod_spec({"tolerations": [{"key": "other", "operator": "Exists", "value": None}]}),
            "spec/template/spec/tolerations",
            [{"key": "other", "operator": "Exists"}],
            id="atomic-list-replaced",
        ),
        pytest.param(
            _pod_spec({"imagePullSecrets": [{"name": "r"}, {"$patch": "delete", "name": "s"}]}),
            "spec/template/spec/imagePullSecrets",
            [{"name": "r"}],
            id="merge-list-new-field",
        ),
        pytest.param(
            {"spec": {"template": {"metadata": {"labels": {"a": "1", "b": None}}}}},
            "spec/template/metadata",
            {"labels": {"a": "1"}},
            id="nulls-dropped-from-new-map",
        ),
        pytest.param(
            {"spec": {"extra": {"items": [{"name": "a"}], "keep": None}}},
            "spec/extra",
            {"items": [{"name": "a"}]},
            id="unknown-field-is-merge-patch",
        ),
        pytest.param(
            {"spec": {"replicas": 3, "paused": True}},
            "spec/replicas",
            3,
            id="scalar-replaced",
        ),
    ],
)
def test_strategic_merge_patch(patch: dict[str, Any], path: str, expected: Any) -> None:
    """Strategic merge patches on a Deployment, as kubectl sends them."""
    result = _apply(strategic_merge_patch, _DEPLOYMENT, patch, _deployment_schema())
    assert _at(result, path) == expected


def test_strategic_merge_patch_leaves_the_rest() -> None:
    """Fields the patch does not name are kept as they were."""
    patch = _app({"image": "app:2"})
    result = _apply(strategic_merge_patch, _DEPLOYMENT, patch, _deployment_schema())
    expected = copy.deepcopy(_DEPLOYMENT)
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = "app:2"
    assert result == expected


def test_strategic_merge_patch_without_schema() -> None:
    """Without a schema every list is replaced, as in a JSON merge patch."""
    patch = _app({"image": "app:2"})
    result = _apply(strategic_merge_patch, _DEPLOYMENT, patch, None)
    assert _at(result, _CONTAINERS) == [{"name": "app", "image": "app:2"}]
    assert result == merge_patch(_DEPLOYMENT, patch)


def test_strategic_merge_patch_pod() -> None:
    """The kubectl set image patch on a single-container Pod."""
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "old"}]}}
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "c"}],
            "containers": [{"image": "i", "name": "c"}],
        }
    }
    result = _apply(strategic_merge_patch, pod, patch, _schema("io.k8s.api.core.v1.Pod"))
    assert result == {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }


@pytest.mark.parametrize(
    ("patch", "code", "message"),
    [
        pytest.param(
            _pod_spec({"containers": [{"$patch": "delete", "image": "x"}]}),
            400,
            "map: map[$patch:delete image:x] does not contain declared merge key: name",
            id="delete-without-merge-key",
        ),
        pytest.param(
            _pod_spec({"containers": [{"image": "x"}]}),
            400,
            "map: map[image:x] does not contain declared merge key: name",
            id="element-without-merge-key",
        ),
        pytest.param(
            _pod_spec({"containers": ["app"]}),
            400,
            "list element app is not a map; the list merges by key name",
            id="element-not-a-map",
        ),
        pytest.param(
            {"spec": {"$patch": "bogus"}},
            400,
            "unknown patch type: bogus in map: map[$patch:bogus]",
            id="unknown-map-directive",
        ),
        pytest.param(
            _pod_spec({"containers": [{"$patch": "bogus", "name": "app"}]}),
            400,
            "unknown patch type: bogus in map: map[$patch:bogus name:app]",
            id="unknown-element-directive",
        ),
        pytest.param(
            {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}},
            400,
            "invalid patch format of retainKeys",
            id="retain-keys-mismatch",
        ),
        pytest.param(
            {"spec": {"strategy": {"$retainKeys": "type"}}},
            400,
            "invalid patch format of retainKeys",
            id="retain-keys-not-a-list",
        ),
        pytest.param(
            _pod_spec({"$setElementOrder/containers": {"name": "app"}}),
            400,
            "invalid patch format of setElementOrder list",
            id="set-element-order-not-a-list",
        ),
        pytest.param(
            _pod_spec({"$setElementOrderX": []}),
            400,
            "invalid patch format of setElementOrder list",
            id="set-element-order-bad-key",
        ),
        pytest.param(
            _pod_spec(
                {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [{"name": "sidecar"}, {"name": "app"}],
                }
            ),
            400,
            "The order in patch list:\n[map[name:sidecar] map[name:app]]\n doesn't match "
            "$setElementOrder list:\n[map[name:app] map[name:sidecar]]\n",
            id="set-element-order-mismatch",
        ),
        pytest.param(
            {"metadata": {"$deleteFromPrimitiveList/finalizers": "a/x"}},
            400,
            "invalid patch format of primitive list",
            id="delete-list-not-a-list",
        ),
        pytest.param(
            {"metadata": {"finalizers": [["a"]]}},
            422,
            "lists of lists are not supported",
            id="list-of-lists",
        ),
        pytest.param(["not", "a", "map"], 400, "invalid JSON document", id="not-a-map"),
    ],
)
def test_strategic_merge_patch_errors(patch: Any, code: int, message: str) -> None:
    """Bad directives are rejected with apimachinery's messages."""
    with pytest.raises(PatchError) as err:
        _apply(strategic_merge_patch, _DEPLOYMENT, patch, _deployment_schema())
    assert (err.value.code, err.value.message) == (code, message)
