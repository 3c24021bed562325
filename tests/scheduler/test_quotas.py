"""Quota rules (scheduler/quotas.py): the arithmetic with MIG weights on every GPU family, the
order of the five checks, max_containers, CPU requests and the group cap.

Expected values are literals: UUIDs as strings, reasons as enum members, limits as fractions.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from ds01.errors import RefusalReason
from ds01.model.allocation import AllocState
from ds01.model.limits import Limits
from ds01.scheduler.snapshot import Request, Snapshot

from .builders import (
    A30,
    A100_40,
    A100_80,
    H100,
    H200,
    at,
    cpu,
    gpueq,
    gpus,
    limits,
    machine,
    mig,
    outcome,
)

R = RefusalReason

ARITHMETIC = [
    pytest.param(
        machine()
        .gpus(2, A100_40)
        .snapshot()
        .held("alice", "old", "GPU-0", until=at("14:05"))
        .build(),
        gpus(1),
        limits(1),
        R.MAX_GPUEQ,
        id="held allocation counts towards max_gpueq",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().reserved("alice", None, "GPU-0").build(),
        gpus(1),
        limits(1),
        R.MAX_GPUEQ,
        id="reserved allocation counts towards max_gpueq",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_40)
        .snapshot()
        .hold("alice", "old", "GPU-0", state=AllocState.RELEASED)
        .build(),
        gpus(1),
        limits(1),
        ("GPU-0",),
        id="released allocation does not count and its GPU is free again",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().hold("bob", "x", "GPU-0").build(),
        gpus(1),
        limits(1),
        ("GPU-1",),
        id="another user's holding does not count towards my max_gpueq",
    ),
    pytest.param(
        machine().gpus(3, A100_40).snapshot().hold("alice", "a", "GPU-0").build(),
        gpus(1),
        limits(2),
        ("GPU-1",),
        id="reaching max_gpueq exactly is allowed",
    ),
    pytest.param(
        machine()
        .gpu(A100_40)
        .mig("3g.20gb", "2g.10gb", "2g.10gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-1")
        .build(),
        mig("2g.10gb"),
        limits(Fraction(4, 7)),
        ("MIG-0-2",),
        id="A100-40GB two 2g.10gb slices make 4/7, within a cap of 4/7",
    ),
    pytest.param(
        machine()
        .gpu(A100_40)
        .mig("3g.20gb", "2g.10gb", "2g.10gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-1")
        .build(),
        mig("3g.20gb"),
        limits(Fraction(4, 7)),
        R.MAX_GPUEQ,
        id="A100-40GB 2/7 held plus a 3g.20gb (3/7) breaks a cap of 4/7",
    ),
    pytest.param(
        machine()
        .gpu(A100_80)
        .mig(*["1g.10gb"] * 7)
        .snapshot()
        .hold("alice", "a", "MIG-0-0", "MIG-0-1", "MIG-0-2")
        .hold("alice", "b", "MIG-0-3", "MIG-0-4", "MIG-0-5")
        .build(),
        mig("1g.10gb"),
        limits(1, units=8),
        ("MIG-0-6",),
        id="A100-80GB seven 1g.10gb slices add up to exactly 1",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", "4g.40gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-0")
        .build(),
        mig("4g.40gb"),
        limits(1),
        ("MIG-0-1",),
        id="H100 3/7 held plus 4g.40gb (4/7) is exactly 1, within a cap of 1",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-0")
        .build(),
        mig("1g.10gb"),
        limits(Fraction(3, 7)),
        R.MAX_GPUEQ,
        id="H100 3/7 held plus a 1g.10gb breaks a cap of 3/7",
    ),
    pytest.param(
        machine()
        .gpu(H200)
        .mig("3g.71gb", "1c.3g.71gb", "2g.35gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-1")
        .build(),
        mig("2g.35gb"),
        limits(Fraction(3, 7)),
        ("MIG-0-2",),
        id="H200 1c.3g.71gb counts 1/7, so 2g.35gb more fits a cap of 3/7",
    ),
    pytest.param(
        machine()
        .gpu(H200)
        .mig("3g.71gb", "1c.3g.71gb", "2g.35gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-1")
        .build(),
        mig("3g.71gb"),
        limits(Fraction(3, 7)),
        R.MAX_GPUEQ,
        id="H200 1/7 held plus 3g.71gb breaks a cap of 3/7",
    ),
    pytest.param(
        machine()
        .gpu(A30)
        .mig("2g.12gb", "2g.12gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-0")
        .build(),
        mig("2g.12gb"),
        limits(1),
        ("MIG-0-1",),
        id="A30 two 2g.12gb slices are 1/2 each and fill a cap of 1",
    ),
    pytest.param(
        machine()
        .gpu(A30)
        .mig("2g.12gb", "2g.12gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-0")
        .build(),
        mig("2g.12gb"),
        limits(Fraction(3, 4)),
        R.MAX_GPUEQ,
        id="A30 1/2 held plus 2g.12gb breaks a cap of 3/4",
    ),
    pytest.param(
        machine()
        .gpu(A30)
        .mig("1c.2g.12gb", "1c.2g.12gb", "2g.12gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-0")
        .build(),
        mig("1c.2g.12gb"),
        limits(Fraction(1, 2)),
        ("MIG-0-1",),
        id="A30 two 1c.2g.12gb slices are 1/4 each and fill a cap of 1/2",
    ),
    pytest.param(
        machine()
        .gpu(A30)
        .mig("1c.2g.12gb", "1c.2g.12gb", "2g.12gb")
        .snapshot()
        .hold("alice", "a", "MIG-0-2")
        .build(),
        mig("1c.2g.12gb"),
        limits(Fraction(1, 2)),
        R.MAX_GPUEQ,
        id="A30 2g.12gb held plus a 1c.2g.12gb breaks a cap of 1/2",
    ),
    pytest.param(
        machine()
        .gpu(A100_40)
        .gpu(H100)
        .mig("3g.40gb", "4g.40gb")
        .snapshot()
        .hold("alice", "a", "MIG-1-0")
        .build(),
        gpus(1),
        limits(Fraction(10, 7)),
        ("GPU-0",),
        id="a whole GPU plus 3/7 held fits a cap of 10/7",
    ),
]


@pytest.mark.parametrize(("snap", "request_", "lim", "expected"), ARITHMETIC)
def test_quota_arithmetic(snap: Snapshot, request_: Request, lim: Limits, expected: object) -> None:
    assert outcome(snap, request_, lim) == expected


ORDER = [
    pytest.param(
        machine().gpus(4, A100_40).snapshot().build(),
        gpus(3),
        limits(8, units=2, full=False),
        R.FULL_GPU_NOT_ALLOWED,
        id="a forbidden whole GPU is refused before too many units",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig(*["1g.10gb"] * 7)
        .snapshot()
        .hold("alice", "a", "MIG-0-0")
        .hold("alice", "b", "MIG-0-1")
        .build(),
        mig("1g.10gb", "1g.10gb", "1g.10gb"),
        limits(8, units=2, containers=2),
        R.MAX_UNITS_PER_CONTAINER,
        id="too many units is refused before too many containers",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("alice", "a", "GPU-0")
        .hold("alice", "b", "GPU-1")
        .build(),
        gpus(1),
        limits(2, containers=2),
        R.MAX_CONTAINERS,
        id="too many containers is refused before max_gpueq",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("alice", "a", "GPU-0", group="phd")
        .hold("bob", "b", "GPU-1", group="phd")
        .build(),
        gpus(1),
        limits(1, group="phd", group_cap=2),
        R.MAX_GPUEQ,
        id="max_gpueq is refused before the group cap",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_40)
        .snapshot()
        .hold("bob", "a", "GPU-0", group="phd")
        .hold("carol", "b", "GPU-1", group="phd")
        .build(),
        gpus(1),
        limits(2, group="phd", group_cap=2),
        R.GROUP_MAX_GPUEQ,
        id="the group cap is refused before capacity",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_40)
        .snapshot()
        .hold("alice", "a", "GPU-0")
        .hold("bob", "b", "GPU-1")
        .build(),
        gpus(1),
        limits(1),
        R.MAX_GPUEQ,
        id="over quota with nothing free is a quota refusal, not a capacity one",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb").snapshot().hold("alice", "a", "MIG-0-0").build(),
        mig("5g.50gb"),
        limits(0),
        R.UNKNOWN_PROFILE,
        id="an unknown profile is refused before any quota",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().build(),
        gpus(0),
        limits(0, full=False),
        R.BAD_REQUEST,
        id="a bad request is refused before any quota",
    ),
]


@pytest.mark.parametrize(("snap", "request_", "lim", "expected"), ORDER)
def test_order_of_checks(snap: Snapshot, request_: Request, lim: Limits, expected: object) -> None:
    assert outcome(snap, request_, lim) == expected


RULES = [
    # allow_full_gpu
    pytest.param(
        machine().gpus(2, A100_40).snapshot().build(),
        gpus(1),
        limits(full=False),
        R.FULL_GPU_NOT_ALLOWED,
        id="gpus=1 for a user without allow_full_gpu",
    ),
    pytest.param(
        machine().gpu(A100_40).gpu(H100).mig("3g.40gb").snapshot().build(),
        mig("3g.40gb"),
        limits(full=False),
        ("MIG-1-0",),
        id="a MIG slice for a user without allow_full_gpu",
    ),
    pytest.param(
        machine().gpu(A100_80).gpu(H100).mig("7g.80gb").snapshot().build(),
        gpueq(1),
        limits(full=False),
        ("MIG-1-0",),
        id="gpueq=1 without allow_full_gpu takes the 7g.80gb slice",
    ),
    pytest.param(
        machine().gpu(A100_40).gpu(H100).mig("3g.40gb", "2g.20gb").snapshot().build(),
        gpueq(1),
        limits(full=False),
        R.FULL_GPU_NOT_ALLOWED,
        id="gpueq=1 without allow_full_gpu where the slices add up to only 5/7",
    ),
    pytest.param(
        machine().gpu(A100_40).gpu(H100).mig("4g.40gb", "3g.40gb").snapshot().build(),
        gpueq(1),
        limits(full=False, units=1),
        R.FULL_GPU_NOT_ALLOWED,
        id="gpueq=1 without allow_full_gpu where slices reach 1 only in 2 units, limit 1",
    ),
    pytest.param(
        machine()
        .gpu(A100_40)
        .gpu(H100)
        .mig("4g.40gb", "3g.40gb")
        .snapshot()
        .hold("bob", "b", "MIG-1-0")
        .build(),
        gpueq(1),
        limits(full=False),
        R.NO_CAPACITY,
        id="gpueq=1 without allow_full_gpu whose slices are in use waits for capacity",
    ),
    # max_units_per_container
    pytest.param(
        machine().gpu(H100).mig("3g.40gb", "2g.20gb", "1g.10gb").snapshot().build(),
        mig("3g.40gb", "2g.20gb", "1g.10gb"),
        limits(units=2),
        R.MAX_UNITS_PER_CONTAINER,
        id="three slices with a limit of two units",
    ),
    pytest.param(
        machine().gpus(3, A100_40).snapshot().build(),
        gpueq(3),
        limits(units=2),
        R.MAX_UNITS_PER_CONTAINER,
        id="gpueq=3 needs three whole GPUs with a limit of two units",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().build(),
        gpus(2),
        limits(units=2),
        ("GPU-0", "GPU-1"),
        id="two GPUs with a limit of two units",
    ),
    # max_containers
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("alice", "a", "GPU-0")
        .hold("alice", "b", "GPU-1")
        .build(),
        gpus(1, container="c"),
        limits(containers=2),
        R.MAX_CONTAINERS,
        id="a third container over a limit of two",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("alice", "a", "GPU-0")
        .hold("alice", "b", "GPU-1")
        .build(),
        gpus(1, container="b", existing_container=True),
        limits(containers=2),
        ("GPU-2",),
        id="an existing container does not count again",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("alice", "a", "GPU-0")
        .hold("alice", "b", "GPU-1")
        .build(),
        gpus(1, container="a"),
        limits(containers=2),
        ("GPU-2",),
        id="a container named like one the user holds is not a new one",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("alice", "a", "GPU-0")
        .hold("alice", "a", "GPU-1")
        .build(),
        gpus(1, container="b"),
        limits(containers=2),
        ("GPU-2",),
        id="two allocations of one container count as one container",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .reserved("alice", None, "GPU-0")
        .reserved("alice", None, "GPU-1")
        .build(),
        gpus(1, container="c"),
        limits(containers=2),
        R.MAX_CONTAINERS,
        id="reservations not yet bound to a container count one each",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("bob", "a", "GPU-0")
        .hold("bob", "b", "GPU-1")
        .build(),
        gpus(1, container="c"),
        limits(containers=1),
        ("GPU-2",),
        id="another user's containers do not count",
    ),
    # CPU requests
    pytest.param(
        machine()
        .gpus(2, A100_40)
        .snapshot()
        .hold("alice", "a", "GPU-0")
        .hold("alice", "b", "GPU-1")
        .build(),
        cpu(container="c"),
        limits(2, containers=2),
        R.MAX_CONTAINERS,
        id="a CPU request is still checked against max_containers",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().hold("alice", "a", "GPU-0").build(),
        cpu(container="c"),
        limits(1, units=0, full=False, containers=2, group="phd", group_cap=0),
        (),
        id="a CPU request skips every GPU quota and gets no unit",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_40)
        .snapshot()
        .hold("bob", "a", "GPU-0")
        .hold("carol", "b", "GPU-1")
        .build(),
        cpu(),
        limits(),
        (),
        id="a CPU request needs no free GPU",
    ),
    # group cap
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("bob", "b", "GPU-0", group="phd")
        .held("carol", "c", "GPU-1", group="phd", until=at("14:05"))
        .build(),
        gpus(1),
        limits(group="phd", group_cap=2),
        R.GROUP_MAX_GPUEQ,
        id="the group cap sums every member's holdings, held ones too",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("bob", "b", "GPU-0", group="phd")
        .hold("carol", "c", "GPU-1", group="msc")
        .build(),
        gpus(1),
        limits(group="phd", group_cap=2),
        ("GPU-2",),
        id="another group's holdings do not count towards my group's cap",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("bob", "b", "GPU-0", group="phd")
        .hold("carol", "c", "GPU-1", group="phd")
        .build(),
        gpus(1),
        limits(group="phd"),
        ("GPU-2",),
        id="no group cap means no group check",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", "4g.40gb")
        .gpu(A100_40)
        .snapshot()
        .hold("bob", "b", "MIG-0-0", group="phd")
        .build(),
        mig("4g.40gb"),
        limits(group="phd", group_cap=1),
        ("MIG-0-1",),
        id="the group cap met exactly by 3/7 and 4/7 is allowed",
    ),
]


@pytest.mark.parametrize(("snap", "request_", "lim", "expected"), RULES)
def test_quota_rule(snap: Snapshot, request_: Request, lim: Limits, expected: object) -> None:
    assert outcome(snap, request_, lim) == expected
