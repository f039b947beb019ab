"""Quantities parse and print as Kubernetes does."""

from fractions import Fraction

import pytest

from kybernetes.api import quantity


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        pytest.param("1000m", "1", id="milli-to-unit"),
        pytest.param("2048Mi", "2Gi", id="binary-up"),
        pytest.param("0.5", "500m", id="fraction-to-milli"),
        pytest.param(0.5, "500m", id="json-number"),
        pytest.param("1.5Gi", "1536Mi", id="binary-fraction"),
        pytest.param("1500m", "1500m", id="no-fraction-digits"),
        pytest.param("2000", "2k", id="decimal-up"),
        pytest.param("1e3", "1e3", id="exponent-kept"),
        pytest.param("0.1n", "1n", id="rounded-up-to-nano"),
        pytest.param(1024, "1024", id="int"),
        pytest.param("512", "512", id="small-binary-is-decimal"),
        pytest.param("0", "0", id="zero"),
    ],
)
def test_canonical(given: str | int | float, canonical: str) -> None:
    """Canonical forms match what kube-apiserver stores."""
    assert quantity.canonical(given) == canonical


def test_arithmetic() -> None:
    """Values are exact fractions; milli and whole values round up."""
    assert quantity.parse("250m") + quantity.parse("1") == Fraction(5, 4)
    assert quantity.milli_value("1.5") == 1500
    assert quantity.value("1.5") == 2
    assert quantity.value("1Gi") == 1024**3


@pytest.mark.parametrize("bad", ["", "abc", "1x", "--1", ".", "1.2.3"])
def test_rejects(bad: str) -> None:
    """Malformed quantities raise ValueError."""
    with pytest.raises(ValueError):
        quantity.canonical(bad)
