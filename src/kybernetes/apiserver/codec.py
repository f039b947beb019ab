"""Bytes in, dicts out: request decoding and stored-object encoding.

Stored objects are JSON with ``apiVersion``, ``kind`` and ``metadata`` as their first
keys and no ``metadata.resourceVersion`` (the store's revision is the resourceVersion).
That order lets :func:`with_revision` put the resourceVersion back by splicing bytes, so
GETs and LISTs can be answered without decoding and re-encoding each object.
"""

from __future__ import annotations

from typing import Any

import orjson

from kybernetes.api.errors import StatusError

Obj = dict[str, Any]

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"

_META_KEY = b'"metadata":{'

def media_type(content_type: str | None) -> str:
    """``application/json`` from ``application/json; charset=utf-8``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def decode_yaml(body: bytes) -> Any:
    import yaml  # only YAML bodies need it: keep it off the start-up path

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(body, Loader=loader)
    except yaml.YAMLError as e:
        raise StatusError.bad_request(f"error converting YAML to JSON: {e}") from None


def decode_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise StatusError.bad_request(
            f"couldn't get version/kind; json parse error: {e}") from None


def decode_object(content_type: str | None, body: bytes) -> Obj:
    """A request body (JSON, YAML or protobuf) as an object dict."""
    mt = media_type(content_type)
    if mt in ("", JSON, "*/*"):
        obj = decode_json(body)
    elif mt in (YAML, "application/x-yaml", "text/yaml"):
        obj = decode_yaml(body)
    elif mt == PROTOBUF:
        from kybernetes.api import protobuf

        try:
            obj = protobuf.decode(body)
        except protobuf.ProtobufError as e:
            raise StatusError.bad_request(f"unable to decode protobuf body: {e}") from None
    else:
        raise StatusError.unsupported_media_type(content_type or "")
    if not isinstance(obj, dict):
        raise StatusError.bad_request(
            "couldn't get version/kind; json parse error: json: cannot unmarshal "
            f"{type(obj).__name__} into Go value of type struct {{ APIVersion string "
            '"json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }')
    return obj


def storage_bytes(obj: Obj) -> bytes:
    """Encode for the store: apiVersion, kind, metadata first; no resourceVersion."""
    meta = obj.get("metadata") or {}
    if "resourceVersion" in meta:
        meta = {k: v for k, v in meta.items() if k != "resourceVersion"}
    ordered: Obj = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                    "metadata": meta}
    for k, v in obj.items():
        if k not in ordered:
            ordered[k] = v
    return orjson.dumps(ordered)


def with_revision(value: bytes, revision: int) -> bytes:
    """Stored bytes with ``metadata.resourceVersion`` set to ``revision``."""
    return value.replace(_META_KEY, b'"metadata":{"resourceVersion":"%d",' % revision, 1)


def load_stored(value: bytes, revision: int) -> Obj:
    obj: Obj = orjson.loads(value)
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
