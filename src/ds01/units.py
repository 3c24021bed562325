"""Durations and sizes as people write them in ds01.yaml, and back.

Owns the text forms `30s`, `30m`, `4h`, `2d`, `1h30m` (durations → whole seconds) and `512m`,
`32g`, `1.5g`, `32GiB`, `32gb` (sizes → bytes, always binary multiples: k = 1024). Pure
functions; raises ValueError with a message fit to print after the key path. Must not know
about YAML, pydantic or config keys.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

DURATION_EXAMPLE = "a duration like 30m, 4h or 2d"
SIZE_EXAMPLE = "a size like 512m, 32g or 1.5t"

# Longer is a typo, and past what clocks and datetimes can hold (timestamps overflow).
MAX_DURATION = 100 * 365 * 86400

_DURATION_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# ASCII digits only: str.isdigit() and a Unicode \d also match '²' and '١' (int() refuses one).
_DURATION_SECONDS = re.compile(r"\d+", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])", re.ASCII)
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+", re.ASCII)

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "p": 1024**5,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?", re.IGNORECASE | re.ASCII)


def describe(value: object) -> str:
    """How a bad value is quoted in a message: 'text' in quotes, numbers bare, else its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def parse_duration(value: object) -> int:
    """Whole seconds from 30s / 30m / 4h / 2d / 1w / 1h30m / 0.5h, or a plain int (seconds);
    at most MAX_DURATION (100 years)."""
    bad = ValueError(f"expected {DURATION_EXAMPLE}, got {describe(value)}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        if value > MAX_DURATION:
            raise ValueError(f"a duration must be at most 100 years, got {value}")
        return value
    if not isinstance(value, str):
        raise bad
    text = value.strip().lower()
    if _DURATION_SECONDS.fullmatch(text):
        total = Fraction(int(text))
    elif _DURATION_WHOLE.fullmatch(text):
        total = Fraction(0)
        for number, unit in _DURATION_PART.findall(text):
            total += Fraction(number) * _DURATION_UNITS[unit]
    else:
        raise bad
    if total.denominator != 1:
        raise ValueError(f"a duration must be a whole number of seconds, got {describe(value)}")
    if total > MAX_DURATION:
        raise ValueError(f"a duration must be at most 100 years, got {describe(value)}")
    return int(total)


def parse_size(value: object) -> int:
    """Bytes from 512m / 32g / 1.5g / 32GiB / 32gb / 4096 (plain numbers are bytes).

    Every multiple is binary (k = 1024, m = 1024², g = 1024³, t = 1024⁴), whether written
    g, gb or GiB, because that is what Docker and the kernel mean. Fractions of a byte round down.
    """
    bad = ValueError(f"expected {SIZE_EXAMPLE}, got {describe(value)}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise bad
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise bad
    number, unit = match.groups()
    try:
        amount = Fraction(Decimal(number))
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise bad from None
    return int(amount * _SIZE_UNITS[unit.lower()])


def format_duration(seconds: int) -> str:
    """The shortest exact text: 90 → '1m30s', 14400 → '4h', 0 → '0s'."""
    if seconds == 0:
        return "0s"
    parts: list[str] = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_size(num_bytes: int) -> str:
    """The largest binary unit that divides exactly: 34359738368 → '32g', 1610612736 → '1536m'."""
    for unit in ("p", "t", "g", "m", "k"):
        size = _SIZE_UNITS[unit]
        if num_bytes and num_bytes % size == 0:
            return f"{num_bytes // size}{unit}"
    return str(num_bytes)
