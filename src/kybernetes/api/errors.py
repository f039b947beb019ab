"""API errors as Kubernetes reports them: ``metav1.Status`` bodies and field errors.

A :class:`StatusError` carries everything an HTTP response needs::

    raise StatusError.not_found("pods", "nope")
    # -> 404 {"kind": "Status", ..., "reason": "NotFound", "message": "pods \"nope\" not found"}

Field errors read like the Go ``field.Error``: ``spec.replicas: Invalid value: -1: must be
greater than or equal to 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# field.ErrorType -> (cause reason, text)
INVALID = ("FieldValueInvalid", "Invalid value")
TYPE_INVALID = ("FieldValueTypeInvalid", "Invalid value")
REQUIRED = ("FieldValueRequired", "Required value")
NOT_SUPPORTED = ("FieldValueNotSupported", "Unsupported value")
DUPLICATE = ("FieldValueDuplicate", "Duplicate value")
NOT_FOUND = ("FieldValueNotFound", "Not found")
FORBIDDEN = ("FieldValueForbidden", "Forbidden")
TOO_LONG = ("FieldValueTooLong", "Too long")
TOO_MANY = ("FieldValueTooMany", "Too many")
INTERNAL = ("InternalError", "Internal error")

_NO_VALUE = object()


def format_value(value: Any) -> str:
    """A value as Go's field errors print it: strings quoted, numbers bare."""
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class FieldError:
    """One field's problem, e.g. ``FieldError.invalid("spec.replicas", -1, "must be ...")``."""

    kind: tuple[str, str]
    field: str
    value: Any = _NO_VALUE
    detail: str = ""

    @classmethod
    def invalid(cls, path: str, value: Any, detail: str) -> FieldError:
        return cls(INVALID, path, value, detail)

    @classmethod
    def type_invalid(cls, path: str, value: Any, detail: str) -> FieldError:
        return cls(TYPE_INVALID, path, value, detail)

    @classmethod
    def required(cls, path: str, detail: str = "") -> FieldError:
        return cls(REQUIRED, path, _NO_VALUE, detail)

    @classmethod
    def not_supported(cls, path: str, value: Any, supported: list[str]) -> FieldError:
        detail = "supported values: " + ", ".join(format_value(s) for s in supported)
        return cls(NOT_SUPPORTED, path, value, detail)

    @classmethod
    def duplicate(cls, path: str, value: Any) -> FieldError:
        return cls(DUPLICATE, path, value)

    @classmethod
    def forbidden(cls, path: str, detail: str) -> FieldError:
        return cls(FORBIDDEN, path, _NO_VALUE, detail)

    @classmethod
    def too_long(cls, path: str, value: Any, max_length: int) -> FieldError:
        return cls(TOO_LONG, path, _NO_VALUE, f"may not be more than {max_length} bytes")

    @classmethod
    def too_many(cls, path: str, actual: int, max_items: int) -> FieldError:
        return cls(TOO_MANY, path, actual, f"must have at most {max_items} items")

    @classmethod
    def not_found(cls, path: str, value: Any) -> FieldError:
        return cls(NOT_FOUND, path, value)

    def body(self) -> str:
        """The message without the field path (what a cause's ``message`` holds)."""
        text = self.kind[1]
        if self.value is not _NO_VALUE and self.kind in (INVALID, TYPE_INVALID, NOT_SUPPORTED,
                                                         DUPLICATE, NOT_FOUND, TOO_MANY):
            text += ": " + format_value(self.value)
        if self.detail:
            text += ": " + self.detail
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}" if self.field else self.body()

    def cause(self) -> dict[str, str]:
        return {"reason": self.kind[0], "message": self.body(), "field": self.field}


def join_field_errors(errors: list[FieldError]) -> str:
    """Errors joined as Go's ``ErrorList.ToAggregate`` does (``[a, b]`` for several)."""
    msgs = list(dict.fromkeys(str(e) for e in errors))
    if len(msgs) == 1:
        return msgs[0]
    return "[" + ", ".join(msgs) + "]"


@dataclass
class StatusError(Exception):
    """An API failure, rendered as a ``metav1.Status`` body."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body

    # -- constructors named after apimachinery's errors.New* -----------------------

    @staticmethod
    def _details(resource: str, name: str, group: str = "", kind: str = "") -> dict[str, Any]:
        d: dict[str, Any] = {}
        if name:
            d["name"] = name
        if group:
            d["group"] = group
        d["kind"] = kind or resource
        return d

    @staticmethod
    def _qualified(resource: str, group: str) -> str:
        return f"{resource}.{group}" if group else resource

    @classmethod
    def not_found(cls, resource: str, name: str, group: str = "") -> StatusError:
        return cls(404, "NotFound",
                   f'{cls._qualified(resource, group)} "{name}" not found',
                   cls._details(resource, name, group))

    @classmethod
    def already_exists(cls, resource: str, name: str, group: str = "") -> StatusError:
        return cls(409, "AlreadyExists",
                   f'{cls._qualified(resource, group)} "{name}" already exists',
                   cls._details(resource, name, group))

    @classmethod
    def conflict(cls, resource: str, name: str, detail: str, group: str = "") -> StatusError:
        return cls(409, "Conflict",
                   f'Operation cannot be fulfilled on {cls._qualified(resource, group)} '
                   f'"{name}": {detail}',
                   cls._details(resource, name, group))

    @classmethod
    def invalid(cls, kind: str, name: str, errors: list[FieldError], group: str = "") -> StatusError:
        qualified = f"{kind}.{group}" if group else kind
        return cls(422, "Invalid",
                   f'{qualified} "{name}" is invalid: {join_field_errors(errors)}',
                   {"name": name, "group": group, "kind": kind,
                    "causes": [e.cause() for e in errors]} if group else
                   {"name": name, "kind": kind, "causes": [e.cause() for e in errors]})

    @classmethod
    def bad_request(cls, message: str) -> StatusError:
        return cls(400, "BadRequest", message)

    @classmethod
    def method_not_allowed(cls, message: str) -> StatusError:
        return cls(405, "MethodNotAllowed", message)

    @classmethod
    def unauthorized(cls) -> StatusError:
        return cls(401, "Unauthorized", "Unauthorized")

    @classmethod
    def forbidden(cls, resource: str, name: str, message: str, group: str = "") -> StatusError:
        return cls(403, "Forbidden",
                   f'{cls._qualified(resource, group)} "{name}" is forbidden: {message}',
                   cls._details(resource, name, group))

    @classmethod
    def gone(cls, message: str) -> StatusError:
        return cls(410, "Expired", message)

    @classmethod
    def too_large(cls, message: str = "Request entity too large") -> StatusError:
        return cls(413, "RequestEntityTooLarge", message)

    @classmethod
    def unsupported_media_type(cls, content_type: str) -> StatusError:
        return cls(415, "UnsupportedMediaType",
                   f"the body of the request was in an unknown format - accepted media types "
                   f"include: application/json, application/yaml, "
                   f"application/vnd.kubernetes.protobuf (got {content_type!r})")

    @classmethod
    def not_acceptable(cls, message: str) -> StatusError:
        return cls(406, "NotAcceptable", message)

    @classmethod
    def internal(cls, message: str) -> StatusError:
        return cls(500, "InternalError", f"Internal error occurred: {message}")

    @classmethod
    def service_unavailable(cls, message: str) -> StatusError:
        return cls(503, "ServiceUnavailable", message)

    @classmethod
    def too_many_requests(cls, message: str, retry_after: int = 1) -> StatusError:
        return cls(429, "TooManyRequests", message, {"retryAfterSeconds": retry_after})
