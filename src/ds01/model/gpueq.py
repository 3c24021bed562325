"""GpuEq: the fair-share currency (BRIEF §4), an exact fraction of one whole GPU.

All quota arithmetic goes through this type so that 3/7 + 4/7 == 1 exactly; it becomes a
decimal only for display.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import total_ordering

_PLAIN = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6}|/[0-9]{1,6})?")


@total_ordering
class GpuEq:
    __slots__ = ("_v",)

    def __init__(self, value: Fraction | int | str = 0) -> None:
        v = value if type(value) is Fraction else Fraction(value)
        if v.numerator < 0:
            raise ValueError(f"gpueq cannot be negative: {value}")
        self._v = v

    @classmethod
    def _of(cls, v: Fraction) -> GpuEq:
        # Arithmetic results are already valid Fractions: skip __init__ (hot in placement).
        g = object.__new__(cls)
        g._v = v
        return g

    @classmethod
    def of(cls, numerator: int, denominator: int = 1) -> GpuEq:
        return cls(Fraction(numerator, denominator))

    @classmethod
    def parse(cls, text: str | int | float) -> GpuEq:
        """Parse '1', '0.5', '3/7'. Floats are limited to a sensible denominator.

        Text is read only in those plain forms, at most 6 digits a part: Fraction itself would
        take '1e30000000' and spend half a minute building the number (issue 10, D7)."""
        if isinstance(text, float):
            return cls(Fraction(text).limit_denominator(1000))
        if isinstance(text, int):
            return cls(Fraction(text))
        plain = str(text).strip()
        if not _PLAIN.fullmatch(plain):
            raise ValueError(f"not a number like 0.5 or 3/7: {plain[:40]!r}")
        return cls(Fraction(plain))

    @staticmethod
    def total(values: object) -> GpuEq:
        # As integers per denominator (add_to), one Fraction at the end: a Fraction addition
        # per value made quota checks a fifth of a placement decision.
        parts: dict[int, int] = {}
        for v in values:  # type: ignore[attr-defined]
            f = v._v
            parts[f.denominator] = parts.get(f.denominator, 0) + f.numerator
        return GpuEq.of_parts(parts)

    @staticmethod
    def add_to(parts: dict[int, int], value: GpuEq) -> None:
        """Add value to parts (denominator → sum of numerators): an exact sum kept as
        integers, for sums over many units of one GPU (one Fraction per sum, see of_parts)."""
        f = value._v
        parts[f.denominator] = parts.get(f.denominator, 0) + f.numerator

    @staticmethod
    def of_parts(parts: dict[int, int]) -> GpuEq:
        """The sum that add_to() kept."""
        if len(parts) == 1:  # the usual case: every unit of one GPU has its slice count
            ((d, n),) = parts.items()
            return GpuEq._of(Fraction(n, d))
        return GpuEq._of(sum((Fraction(n, d) for d, n in parts.items()), Fraction(0)))

    @property
    def fraction(self) -> Fraction:
        return self._v

    def __add__(self, other: GpuEq) -> GpuEq:
        return GpuEq._of(self._v + other._v)

    def __sub__(self, other: GpuEq) -> GpuEq:
        """Saturates at zero: 'what is left' never goes negative."""
        d = self._v - other._v
        return GpuEq._of(d if d.numerator > 0 else Fraction(0))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GpuEq) and self._v == other._v

    def __lt__(self, other: GpuEq) -> bool:
        # Cross-multiplying is exact and much cheaper than Fraction's generic comparison,
        # which placement calls thousands of times per second.
        a, b = self._v, other._v
        return a.numerator * b.denominator < b.numerator * a.denominator

    def __hash__(self) -> int:
        return hash(self._v)

    def __bool__(self) -> bool:
        return self._v != 0

    def __repr__(self) -> str:
        return f"GpuEq({self._v})"

    def __str__(self) -> str:
        return self.display()

    def display(self, places: int = 2) -> str:
        """'1', '0.43', '2.5' — for people; never fed back into arithmetic."""
        if self._v.denominator == 1:
            return str(self._v.numerator)
        return f"{float(self._v):.{places}f}".rstrip("0").rstrip(".")

    def as_text(self) -> str:
        """Exact, round-trippable text ('3/7'), used in JSON and the database."""
        return str(self._v)

    def __float__(self) -> float:
        return float(self._v)
