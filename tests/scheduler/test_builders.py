"""The builders themselves: deterministic UUIDs, and MIG weights pinned to literal fractions
for every layout the scheduler tests use (BRIEF §4: compute slices / the GPU's total)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from ds01.model.allocation import AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import UnitKind

from .builders import A30, A100_40, A100_80, H100, H200, machine


@pytest.mark.parametrize(
    ("gpu", "profile", "weight"),
    [
        pytest.param(A100_40, "1g.5gb", Fraction(1, 7), id="A100-40GB 1g.5gb is 1/7"),
        pytest.param(A100_40, "2g.10gb", Fraction(2, 7), id="A100-40GB 2g.10gb is 2/7"),
        pytest.param(A100_40, "3g.20gb", Fraction(3, 7), id="A100-40GB 3g.20gb is 3/7"),
        pytest.param(A100_40, "4g.20gb", Fraction(4, 7), id="A100-40GB 4g.20gb is 4/7"),
        pytest.param(A100_40, "7g.40gb", Fraction(1), id="A100-40GB 7g.40gb is 1"),
        pytest.param(A100_80, "1g.10gb", Fraction(1, 7), id="A100-80GB 1g.10gb is 1/7"),
        pytest.param(A100_80, "1g.20gb", Fraction(1, 7), id="A100-80GB 1g.20gb is 1/7"),
        pytest.param(A100_80, "3g.40gb", Fraction(3, 7), id="A100-80GB 3g.40gb is 3/7"),
        pytest.param(A100_80, "4g.40gb", Fraction(4, 7), id="A100-80GB 4g.40gb is 4/7"),
        pytest.param(H100, "1g.10gb", Fraction(1, 7), id="H100 1g.10gb is 1/7"),
        pytest.param(H100, "2g.20gb", Fraction(2, 7), id="H100 2g.20gb is 2/7"),
        pytest.param(H100, "3g.40gb", Fraction(3, 7), id="H100 3g.40gb is 3/7"),
        pytest.param(H100, "7g.80gb", Fraction(1), id="H100 7g.80gb is 1"),
        pytest.param(H200, "1g.18gb", Fraction(1, 7), id="H200 1g.18gb is 1/7"),
        pytest.param(H200, "1c.3g.71gb", Fraction(1, 7), id="H200 1c.3g.71gb is 1/7"),
        pytest.param(H200, "2g.35gb", Fraction(2, 7), id="H200 2g.35gb is 2/7"),
        pytest.param(H200, "3g.71gb", Fraction(3, 7), id="H200 3g.71gb is 3/7"),
        pytest.param(A30, "1g.6gb", Fraction(1, 4), id="A30 1g.6gb is 1/4"),
        pytest.param(A30, "2g.12gb", Fraction(1, 2), id="A30 2g.12gb is 1/2"),
        pytest.param(A30, "1c.2g.12gb", Fraction(1, 4), id="A30 1c.2g.12gb is 1/4"),
        pytest.param(A30, "4g.24gb", Fraction(1), id="A30 4g.24gb is 1"),
    ],
)
def test_mig_weight(gpu: str, profile: str, weight: Fraction) -> None:
    (unit,) = machine().gpu(gpu).mig(profile).build()
    assert unit.gpueq == GpuEq(weight)


def test_uuids_are_deterministic_and_short() -> None:
    units = machine().gpu(A100_40).gpu(H100).mig("3g.40gb", "4g.40gb").gpu(A100_40).build()
    assert [(u.uuid, u.kind, u.gpu_uuid, u.gpu_index) for u in units] == [
        ("GPU-0", UnitKind.GPU, "GPU-0", 0),
        ("MIG-1-0", UnitKind.MIG, "GPU-1", 1),
        ("MIG-1-1", UnitKind.MIG, "GPU-1", 1),
        ("GPU-2", UnitKind.GPU, "GPU-2", 2),
    ]


def test_snapshot_marks_live_holdings_only() -> None:
    snap = (
        machine()
        .gpus(3, A100_40)
        .snapshot()
        .hold("alice", "thesis", "GPU-0")
        .hold("bob", "old", "GPU-1", state=AllocState.RELEASED)
        .drain("GPU-2")
        .build()
    )
    assert [(s.unit.uuid, s.alloc_id, s.holder, s.drained) for s in snap.units] == [
        ("GPU-0", 1, "alice", False),
        ("GPU-1", None, None, False),
        ("GPU-2", None, None, True),
    ]
