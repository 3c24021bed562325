"""GpuEq: the fair-share currency (BRIEF §4), an exact fraction of one whole GPU.

All quota arithmetic goes through this type so that 3/7 + 4/7 == 1 exactly; it becomes a
decimal only for display.
"""

from __future__ import annotations

from fractions import Fraction
from functools import total_ordering


@total_ordering
class GpuEq:
    __slots__ = ("_v",)

    def __init__(self, value: Fraction | int | str = 0) -> None:
        self._v = Fraction(value)
        if self._v < 0:
            raise ValueError(f"gpueq cannot be negative: {value}")

    @classmethod
    def of(cls, numerator: int, denominator: int = 1) -> GpuEq:
        return cls(Fraction(numerator, denominator))

    @classmethod
    def parse(cls, text: str | int | float) -> GpuEq:
        """Parse '1', '0.5', '3/7'. Floats are limited to a sensible denominator."""
        if isinstance(text, float):
            return cls(Fraction(text).limit_denominator(1000))
        return cls(Fraction(str(text).strip()))

    @staticmethod
    def total(values: object) -> GpuEq:
        acc = Fraction(0)
        for v in values:  # type: ignore[attr-defined]
            acc += v.fraction
        return GpuEq(acc)

    @property
    def fraction(self) -> Fraction:
        return self._v

    def __add__(self, other: GpuEq) -> GpuEq:
        return GpuEq(self._v + other._v)

    def __sub__(self, other: GpuEq) -> GpuEq:
        """Saturates at zero: 'what is left' never goes negative."""
        return GpuEq(max(Fraction(0), self._v - other._v))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GpuEq) and self._v == other._v

    def __lt__(self, other: GpuEq) -> bool:
        return self._v < other._v

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
