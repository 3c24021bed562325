"""gpueq=X requests (scheduler/fit.py): the fewest units worth at least X, smallest first,
MIG slices before whole GPUs of the same worth, whole GPUs only when the user may have them,
and the quota checked on what the chosen units really cost."""

from __future__ import annotations

from fractions import Fraction

import pytest

from ds01.errors import RefusalReason
from ds01.model.gpueq import GpuEq
from ds01.model.limits import Limits
from ds01.scheduler.fit import fewest_units
from ds01.scheduler.snapshot import Request, Snapshot

from .builders import A30, A100_80, H100, gpueq, limits, machine, outcome, with_preferred

R = RefusalReason
H100_MIXED = ("3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb")

CASES = [
    pytest.param(
        machine().gpu(H100).mig(*H100_MIXED).snapshot().build(),
        gpueq(Fraction(2, 7)),
        limits(),
        ("MIG-0-1",),
        id="gpueq=2/7 takes the 2g.20gb slice, the smallest that fits",
    ),
    pytest.param(
        machine().gpu(H100).mig(*H100_MIXED).snapshot().build(),
        gpueq("0.3"),
        limits(),
        ("MIG-0-0",),
        id="gpueq=0.3 takes the 3g.40gb slice, since 2/7 is less than 0.3",
    ),
    pytest.param(
        machine().gpu(H100).mig(*H100_MIXED).snapshot().build(),
        gpueq(Fraction(1, 7)),
        limits(),
        ("MIG-0-2",),
        id="gpueq=1/7 takes the first of two equal 1g.10gb slices",
    ),
    pytest.param(
        machine().gpu(A100_80).gpu(H100).mig(*H100_MIXED).snapshot().build(),
        gpueq(1),
        limits(),
        ("GPU-0",),
        id="gpueq=1 takes one whole GPU rather than three slices",
    ),
    pytest.param(
        machine().gpu(A100_80).gpu(H100).mig("7g.80gb").snapshot().build(),
        gpueq(1),
        limits(),
        ("MIG-1-0",),
        id="gpueq=1 takes a 7g.80gb slice before a whole GPU of the same worth",
    ),
    pytest.param(
        machine().gpu(A30).mig("2g.12gb", "4g.24gb").gpu(A30).mig("4g.24gb").snapshot().build(),
        gpueq(Fraction(1, 2)),
        limits(),
        ("MIG-0-0",),
        id="gpueq=1/2 on A30 takes a 2g.12gb slice, not a 4g.24gb",
    ),
    pytest.param(
        machine().gpus(3, A100_80).gpu(H100).mig("7g.80gb").snapshot().build(),
        gpueq(2),
        limits(full=True),
        ("GPU-0", "MIG-3-0"),
        id="gpueq=2 takes the 7g.80gb slice and one whole GPU",
    ),
    pytest.param(
        machine().gpus(3, A100_80).snapshot().build(),
        gpueq(2),
        limits(),
        ("GPU-0", "GPU-1"),
        id="gpueq=2 takes two whole GPUs",
    ),
    pytest.param(
        machine().gpu(H100).mig("4g.40gb", "3g.40gb").gpu(A100_80).snapshot().build(),
        gpueq(1),
        limits(full=False),
        ("MIG-0-0", "MIG-0-1"),
        id="gpueq=1 without whole GPUs combines a 4g.40gb and a 3g.40gb",
    ),
    pytest.param(
        machine().gpus(2, A100_80).gpu(H100).mig("4g.40gb", "3g.40gb").snapshot().build(),
        gpueq(Fraction(3, 2)),
        limits(),
        ("GPU-0", "MIG-2-0"),
        id="gpueq=3/2 takes a whole GPU and a 4g.40gb, 11/7 in all",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("4g.40gb", "3g.40gb")
        .gpu(H100)
        .mig("4g.40gb", "3g.40gb")
        .snapshot()
        .hold("bob", "b", "MIG-1-1")
        .build(),
        gpueq(Fraction(1, 2)),
        limits(),
        ("MIG-1-0",),
        id="gpueq=1/2 packs its 4g.40gb onto the partly used GPU",
    ),
    pytest.param(
        machine().gpu(H100).mig(*["1g.10gb"] * 7).snapshot().build(),
        gpueq(Fraction(3, 7)),
        limits(units=2),
        R.MAX_UNITS_PER_CONTAINER,
        id="gpueq=3/7 on a machine of 1g slices needs three units, limit two",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", *["1g.10gb"] * 4)
        .snapshot()
        .hold("bob", "b", "MIG-0-0")
        .build(),
        gpueq(Fraction(3, 7)),
        limits(units=2),
        R.NO_CAPACITY,
        id="gpueq=3/7 when only 1g slices are free and the limit is two units",
    ),
    pytest.param(
        machine().gpu(A100_80).snapshot().build(),
        gpueq(2),
        limits(),
        R.NO_CAPACITY,
        id="gpueq=2 on a machine worth 1 in all",
    ),
    pytest.param(
        machine().gpu(H100).mig("4g.40gb", "2g.20gb", "1g.10gb").snapshot().build(),
        gpueq(Fraction(1, 2)),
        limits(Fraction(1, 2)),
        R.MAX_GPUEQ,
        id="gpueq=1/2 lands on 4/7 and is checked at 4/7 against a cap of 1/2",
    ),
    pytest.param(
        machine().gpu(H100).mig("4g.40gb", "2g.20gb", "1g.10gb").snapshot().build(),
        with_preferred(gpueq(Fraction(1, 7)), "MIG-0-1"),
        limits(),
        ("MIG-0-1",),
        id="a free preferred unit is taken first for gpueq",
    ),
    pytest.param(
        machine().gpu(H100).mig("4g.40gb", "2g.20gb", "1g.10gb").snapshot().build(),
        with_preferred(gpueq(Fraction(4, 7)), "MIG-0-2"),
        limits(units=1),
        ("MIG-0-0",),
        id="a preferred unit that would make the request impossible is dropped",
    ),
]


@pytest.mark.parametrize(("snap", "request_", "lim", "expected"), CASES)
def test_gpueq_request(snap: Snapshot, request_: Request, lim: Limits, expected: object) -> None:
    assert outcome(snap, request_, lim) == expected


@pytest.mark.parametrize(
    ("weights", "target", "expected"),
    [
        pytest.param([Fraction(1, 7)] * 7, Fraction(1), 7, id="seven 1/7 make 1"),
        pytest.param([Fraction(1, 7)] * 6, Fraction(1), None, id="six 1/7 do not make 1"),
        pytest.param([Fraction(1), Fraction(4, 7)], Fraction(3, 2), 2, id="1 and 4/7 make 3/2"),
        pytest.param([Fraction(1, 2), Fraction(1)], Fraction(1), 1, id="one whole is enough"),
    ],
)
def test_fewest_units(weights: list[Fraction], target: Fraction, expected: int | None) -> None:
    assert fewest_units([GpuEq(w) for w in weights], GpuEq(target)) == expected
