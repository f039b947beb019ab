"""Kubernetes resource quantities: parsing, canonical form and arithmetic.

>>> canonical("1000m"), canonical("2048Mi"), canonical(0.5), canonical("1.5Gi")
('1', '2Gi', '500m', '1536Mi')
>>> parse("250m") + parse("1")
Fraction(5, 4)
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"

_NUMBER = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?$")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {v: k for k, v in _DECIMAL.items()}
_BINARY_SUFFIX = {v: k for k, v in _BINARY.items()}
_NANO = Fraction(1, 10**9)

DECIMAL_SI, BINARY_SI, DECIMAL_EXPONENT = "DecimalSI", "BinarySI", "DecimalExponent"


def _split(s: str) -> tuple[str, str]:
    i = 0
    if s and s[0] in "+-":
        i = 1
    while i < len(s) and (s[i].isdigit() or s[i] == "."):
        i += 1
    return s[:i], s[i:]


def parse_with_format(q: str | int | float) -> tuple[Fraction, str]:
    """The exact value and the format (DecimalSI, BinarySI, DecimalExponent) of ``q``."""
    if isinstance(q, bool):
        raise ValueError("quantities must be strings or numbers")
    if isinstance(q, int):
        return Fraction(q), DECIMAL_SI
    if isinstance(q, float):
        if not math.isfinite(q):
            raise ValueError("quantity must be finite")
        q = repr(q)
        if "e" in q or "E" in q:
            mant, _, exp_text = q.lower().partition("e")
            return _number(mant) * Fraction(10) ** int(exp_text), DECIMAL_SI
    s = q.strip() if isinstance(q, str) else q
    if not s:
        raise ValueError("quantities must match the regular expression")
    num, suffix = _split(s)
    m = _NUMBER.match(num)
    if not m or num in ("", "+", "-", ".") or (not m.group(2) and not m.group(3)):
        raise ValueError(f"unable to parse quantity's suffix or number: {q!r}")
    value = _number(num)
    if suffix in _BINARY:
        return value * 1024 ** _BINARY[suffix], BINARY_SI
    if suffix in _DECIMAL:
        return value * Fraction(10) ** _DECIMAL[suffix], DECIMAL_SI
    if suffix[:1] in ("e", "E"):
        try:
            exp = int(suffix[1:])
        except ValueError:
            raise ValueError(f"unable to parse quantity's suffix: {q!r}") from None
        return value * Fraction(10) ** exp, DECIMAL_EXPONENT
    raise ValueError(f"unable to parse quantity's suffix: {q!r}")


def _number(num: str) -> Fraction:
    m = _NUMBER.match(num)
    if not m:
        raise ValueError(f"bad number {num!r}")
    sign, whole, frac = m.group(1), m.group(2) or "0", m.group(3) or ""
    v = Fraction(int(whole + frac), 10 ** len(frac)) if frac else Fraction(int(whole))
    return -v if sign == "-" else v


def parse(q: str | int | float) -> Fraction:
    """The exact value of a quantity (``"1.5Gi"`` -> 1610612736)."""
    return parse_with_format(q)[0]


def _round_up_nano(v: Fraction) -> Fraction:
    scaled = v / _NANO
    if scaled.denominator == 1:
        return v
    return Fraction(math.ceil(scaled)) * _NANO


def format_quantity(v: Fraction, fmt: str = DECIMAL_SI) -> str:
    """The canonical string for value ``v`` in format ``fmt``."""
    v = _round_up_nano(v)
    if v == 0:
        return "0"
    if fmt == BINARY_SI:
        if -1024 < v < 1024 or v.denominator != 1:
            fmt = DECIMAL_SI
        else:
            n, k = int(v), 0
            while k < 6 and n % 1024 == 0:
                n //= 1024
                k += 1
            return f"{n}{_BINARY_SUFFIX[k] if k else ''}"
    # decimal: mantissa * 10**exp with exp a multiple of 3, as large as possible
    exp = -9
    mant = v / Fraction(10) ** exp
    assert mant.denominator == 1
    n = int(mant)
    while n % 1000 == 0 and (fmt == DECIMAL_EXPONENT or exp < 18):
        n //= 1000
        exp += 3
    if fmt == DECIMAL_EXPONENT:
        return f"{n}e{exp}" if exp else str(n)
    return f"{n}{_DECIMAL_SUFFIX[exp]}"


@functools.lru_cache(maxsize=4096, typed=True)
def canonical(q: str | int | float) -> str:
    """``q`` in Kubernetes' canonical form (what the API server stores and returns).
    Remembered: the same few quantities come in every pod of a workload."""
    v, fmt = parse_with_format(q)
    return format_quantity(v, fmt)


def milli_value(q: str | int | float) -> int:
    """The value in thousandths, rounded up (``"250m"`` -> 250, ``"1"`` -> 1000)."""
    return math.ceil(parse(q) * 1000)


def value(q: str | int | float) -> int:
    """The value rounded up to a whole number (``"1.5Gi"`` -> 1610612736)."""
    return math.ceil(parse(q))
