"""Labels, annotations and label selectors (apimachinery's ``meta/v1/validation``).

Selectors are plain ``LabelSelector`` dicts. :func:`selector_matches` follows
``metav1.LabelSelectorAsSelector``: a missing selector (``None``) selects nothing, an empty
one (``{}``) selects everything, and an invalid one cannot be evaluated (``None``)::

    >>> selector_matches({"matchLabels": {"app": "web"}}, {"app": "web", "tier": "1"})
    True
"""

from __future__ import annotations

from typing import Any

from kybernetes.api.errors import FieldError
from kybernetes.api.validation.common import (
    Errors,
    child,
    index,
    invalid_each,
    is_label_value,
    is_qualified_name,
)

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


def validate_label_name(name: str, path: str) -> Errors:
    return invalid_each(path, name, is_qualified_name(name))


def validate_labels(labels: Any, path: str) -> Errors:
    errs: Errors = []
    if not isinstance(labels, dict):
        return errs
    for k, v in labels.items():
        errs += validate_label_name(k, path)
        errs += invalid_each(path, v, is_label_value(v if isinstance(v, str) else str(v)))
    return errs


def validate_annotations(annotations: Any, path: str) -> Errors:
    errs: Errors = []
    if not isinstance(annotations, dict):
        return errs
    total = 0
    for k, v in annotations.items():
        # The rule is a qualified name, except that case does not matter.
        errs += invalid_each(path, k, is_qualified_name(k.lower()))
        total += len(k.encode()) + len(str(v).encode())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(FieldError.too_long(path, "", TOTAL_ANNOTATION_SIZE_LIMIT))
    return errs


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_label_selector(selector: Any, path: str, *, allow_invalid_values: bool = False
                            ) -> Errors:
    """``ValidateLabelSelector``: matchLabels as labels, each expression well formed."""
    errs: Errors = []
    if not isinstance(selector, dict):
        return errs
    errs += validate_labels(selector.get("matchLabels"), child(path, "matchLabels"))
    exprs = selector.get("matchExpressions")
    for i, expr in enumerate(exprs if isinstance(exprs, list) else []):
        errs += _validate_requirement(expr if isinstance(expr, dict) else {},
                                      index(child(path, "matchExpressions"), i),
                                      allow_invalid_values)
    return errs


def _validate_requirement(req: dict[str, Any], path: str, allow_invalid_values: bool) -> Errors:
    errs: Errors = []
    op = req.get("operator", "")
    values = req.get("values") or []
    if op in ("In", "NotIn"):
        if not values:
            errs.append(FieldError.required(
                child(path, "values"), "must be specified when `operator` is 'In' or 'NotIn'"))
    elif op in ("Exists", "DoesNotExist"):
        if values:
            errs.append(FieldError.forbidden(
                child(path, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
    else:
        errs.append(FieldError.invalid(child(path, "operator"), op,
                                       "not a valid selector operator"))
    errs += validate_label_name(str(req.get("key", "")), child(path, "key"))
    if not allow_invalid_values:
        for i, v in enumerate(values):
            errs += invalid_each(index(child(path, "values"), i), v, is_label_value(str(v)))
    return errs


def selector_is_valid(selector: Any) -> bool:
    """Whether ``LabelSelectorAsSelector`` would accept the selector."""
    if selector is None:
        return True
    if not isinstance(selector, dict):
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if is_qualified_name(k) or is_label_value(str(v)):
            return False
    for req in selector.get("matchExpressions") or []:
        if not isinstance(req, dict):
            return False
        op, values = req.get("operator"), req.get("values") or []
        if op not in _OPERATORS or is_qualified_name(str(req.get("key", ""))):
            return False
        if (op in ("In", "NotIn")) != bool(values):
            return False
        if any(is_label_value(str(v)) for v in values):
            return False
    return True


def selector_is_empty(selector: Any) -> bool:
    """True for a present selector with no requirements (it selects everything)."""
    return isinstance(selector, dict) and not selector.get("matchLabels") \
        and not selector.get("matchExpressions")


def selector_matches(selector: Any, labels: Any) -> bool | None:
    """Whether ``labels`` satisfy ``selector``; ``None`` when the selector is invalid."""
    if not selector_is_valid(selector):
        return None
    if selector is None:
        return False
    labels = labels if isinstance(labels, dict) else {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for req in selector.get("matchExpressions") or []:
        k, op, values = req["key"], req["operator"], req.get("values") or []
        present = k in labels
        if op == "In" and not (present and labels[k] in values):
            return False
        if op == "NotIn" and present and labels[k] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
