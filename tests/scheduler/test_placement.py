"""Placement (scheduler/placement.py): least recently used whole GPUs, NVLink and NUMA
grouping, MIG packing, drained and held units, preferred units, profile normalization."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ds01.errors import RefusalReason
from ds01.scheduler.snapshot import Request, Snapshot

from .builders import (
    A100_40,
    A100_80,
    H100,
    at,
    gpus,
    limits,
    machine,
    mig,
    outcome,
    with_preferred,
)

R = RefusalReason

WHOLE_GPUS = [
    pytest.param(
        machine().gpus(2, A100_40).snapshot().hold("alice", "a", "GPU-0").build(),
        gpus(1, user="bob"),
        ("GPU-1",),
        id="second user gets the other free A100",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().released("GPU-0", at("10:00")).build(),
        gpus(1),
        ("GPU-1",),
        id="a never-used GPU beats one released this morning",
    ),
    pytest.param(
        machine()
        .gpus(3, A100_40)
        .snapshot()
        .released("GPU-0", at("11:00"))
        .released("GPU-1", at("09:00"))
        .released("GPU-2", at("10:00"))
        .build(),
        gpus(1),
        ("GPU-1",),
        id="the least recently released GPU goes first",
    ),
    pytest.param(
        machine()
        .gpus(3, A100_40)
        .snapshot()
        .released("GPU-0", at("09:00"))
        .released("GPU-1", at("09:00"))
        .released("GPU-2", at("09:00"))
        .build(),
        gpus(2),
        ("GPU-0", "GPU-1"),
        id="equal release times go by GPU index",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb", "4g.40gb").gpu(A100_80).snapshot().build(),
        gpus(1),
        ("GPU-1",),
        id="a GPU in MIG mode is never handed out whole",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb", "4g.40gb").gpu(A100_80).snapshot().build(),
        gpus(2),
        R.NO_CAPACITY,
        id="two whole GPUs asked where one GPU is in MIG mode",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().drain("GPU-0").build(),
        gpus(1),
        ("GPU-1",),
        id="a drained GPU is skipped",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().drain("GPU-0").build(),
        gpus(2),
        R.NO_CAPACITY,
        id="a drained GPU does not make up the count",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_80, nvlink="nv-a", numa=0)
        .gpus(2, A100_80, nvlink="nv-b", numa=1)
        .snapshot()
        .hold("bob", "b", "GPU-1")
        .build(),
        gpus(2),
        ("GPU-2", "GPU-3"),
        id="two GPUs come from one NVLink group rather than in LRU order",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_80, nvlink="nv-a")
        .gpus(2, A100_80, nvlink="nv-b")
        .snapshot()
        .released("GPU-0", at("11:00"))
        .released("GPU-1", at("11:00"))
        .build(),
        gpus(2),
        ("GPU-2", "GPU-3"),
        id="among NVLink groups the least recently used one wins",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_80, numa=0)
        .gpus(2, A100_80, numa=1)
        .snapshot()
        .hold("bob", "b", "GPU-0")
        .build(),
        gpus(2),
        ("GPU-2", "GPU-3"),
        id="without NVLink, two GPUs come from one NUMA node",
    ),
    pytest.param(
        machine()
        .gpu(A100_80, nvlink="nv-a", numa=0)
        .gpu(A100_80, nvlink="nv-b", numa=0)
        .gpu(A100_80, nvlink="nv-b", numa=1)
        .snapshot()
        .build(),
        gpus(2),
        ("GPU-1", "GPU-2"),
        id="NVLink beats NUMA",
    ),
    pytest.param(
        machine()
        .gpu(A100_80, nvlink="nv-a", numa=0)
        .gpu(A100_80, nvlink="nv-b", numa=1)
        .gpu(A100_80, nvlink="nv-c", numa=2)
        .snapshot()
        .released("GPU-0", at("11:00"))
        .build(),
        gpus(2),
        ("GPU-1", "GPU-2"),
        id="when no group has room, plain LRU order",
    ),
    pytest.param(
        machine().gpus(4, A100_40).snapshot().build(),
        with_preferred(gpus(1), "GPU-3"),
        ("GPU-3",),
        id="a free preferred GPU comes first",
    ),
    pytest.param(
        machine().gpus(4, A100_40).snapshot().hold("bob", "b", "GPU-3").build(),
        with_preferred(gpus(1), "GPU-3"),
        ("GPU-0",),
        id="a preferred GPU someone else holds is skipped",
    ),
    pytest.param(
        machine().gpus(4, A100_40).snapshot().drain("GPU-3").build(),
        with_preferred(gpus(1), "GPU-3"),
        ("GPU-0",),
        id="a drained preferred GPU is skipped",
    ),
    pytest.param(
        machine().gpus(4, A100_40).snapshot().build(),
        with_preferred(gpus(2), "GPU-3", "GPU-3", "GPU-9"),
        ("GPU-0", "GPU-3"),
        id="one preferred GPU, then the rest by LRU, listed by index",
    ),
]


@pytest.mark.parametrize(("snap", "request_", "expected"), WHOLE_GPUS)
def test_whole_gpus(snap: Snapshot, request_: Request, expected: object) -> None:
    assert outcome(snap, request_, limits()) == expected


MIG = [
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .snapshot()
        .hold("bob", "b", "MIG-1-0")
        .build(),
        mig("3g.40gb"),
        ("MIG-1-1",),
        id="3g.40gb packs onto the GPU that already has a slice taken",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("1g.10gb", "1g.10gb", "1g.10gb", "4g.40gb")
        .gpu(H100)
        .mig("1g.10gb", "1g.10gb", "1g.10gb", "4g.40gb")
        .snapshot()
        .build(),
        mig("1g.10gb", "1g.10gb"),
        ("MIG-0-0", "MIG-0-1"),
        id="two slices of one request pack onto one GPU",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("1g.10gb", "1g.10gb", "1g.10gb", "4g.40gb")
        .gpu(H100)
        .mig("1g.10gb", "1g.10gb", "3g.40gb", "1g.10gb")
        .snapshot()
        .hold("bob", "b", "MIG-0-0")
        .hold("carol", "c", "MIG-1-2")
        .build(),
        mig("1g.10gb"),
        ("MIG-1-0",),
        id="among partly used GPUs, the one with the least free left",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .snapshot()
        .hold("bob", "b", "MIG-1-0")
        .drain("MIG-1-1")
        .build(),
        mig("3g.40gb"),
        ("MIG-0-0",),
        id="a drained slice is skipped even on a partly used GPU",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .snapshot()
        .released("MIG-0-0", at("11:00"))
        .build(),
        mig("3g.40gb"),
        ("MIG-0-1",),
        id="on equal GPUs the least recently used slice",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .snapshot()
        .hold("bob", "b", "MIG-1-0")
        .build(),
        with_preferred(mig("3g.40gb"), "MIG-0-1"),
        ("MIG-0-1",),
        id="a preferred slice beats packing",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb", "2g.20gb").snapshot().build(),
        with_preferred(mig("3g.40gb"), "MIG-0-1"),
        ("MIG-0-0",),
        id="a preferred slice of another profile is ignored",
    ),
    pytest.param(
        machine().gpu(H100).mig("MIG 3g.40gb", "2g.20gb").snapshot().build(),
        mig("MIG 3G.40GB"),
        ("MIG-0-0",),
        id="profiles match when normalized",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb", "2g.20gb", "1g.10gb").snapshot().build(),
        mig("1g.10gb", "3g.40gb"),
        ("MIG-0-2", "MIG-0-0"),
        id="slices are listed in the order of the request",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb", "3g.40gb").snapshot().build(),
        mig("3g.40gb", "3g.40gb"),
        ("MIG-0-0", "MIG-0-1"),
        id="a repeated profile takes two different slices",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb", "4g.40gb").snapshot().build(),
        mig("3g.40gb", "3g.40gb"),
        R.NO_CAPACITY,
        id="a repeated profile with one slice free",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb").snapshot().hold("bob", "b", "MIG-0-0").build(),
        mig("3g.40gb"),
        R.NO_CAPACITY,
        id="a profile whose only slice is held",
    ),
    # Variants match exactly (docs/allocation.md): the +me slice is free for whoever asks
    # for +me, and a plain request waits for a plain slice.
    pytest.param(
        machine().gpu(H100).mig("1g.10gb", "1g.10gb+me").snapshot().build(),
        mig("1g.10gb+me"),
        ("MIG-0-1",),
        id="a +me request gets the +me slice",
    ),
    pytest.param(
        machine().gpu(H100).mig("1g.10gb+me", "1g.10gb").snapshot().build(),
        mig("1g.10gb"),
        ("MIG-0-1",),
        id="a plain request does not take the +me slice",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("1g.10gb", "1g.10gb+me")
        .snapshot()
        .hold("bob", "b", "MIG-0-0")
        .build(),
        mig("1g.10gb"),
        R.NO_CAPACITY,
        id="a plain request waits although the +me slice is free",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("1g.10gb+me", "1g.10gb")
        .snapshot()
        .hold("bob", "b", "MIG-0-0")
        .build(),
        mig("1g.10gb+me"),
        R.NO_CAPACITY,
        id="a +me request waits although a plain slice is free",
    ),
    pytest.param(
        machine().gpu(H100).mig("1g.10gb", "1g.10gb+me").snapshot().build(),
        mig("MIG 1G.10GB+ME", "1g.10gb"),
        ("MIG-0-1", "MIG-0-0"),
        id="one of each, written any way nvidia-smi would",
    ),
    pytest.param(
        machine().gpu(A100_80).mig("3g.40gb", "1c.3g.40gb").snapshot().build(),
        mig("3g.40gb"),
        ("MIG-0-0",),
        id="a GPU-instance request does not take a compute instance of that size",
    ),
]


@pytest.mark.parametrize(("snap", "request_", "expected"), MIG)
def test_mig_slices(snap: Snapshot, request_: Request, expected: object) -> None:
    assert outcome(snap, request_, limits()) == expected


def test_units_in_state_but_not_in_holdings_are_not_handed_out() -> None:
    """If the unit table and the holdings disagree, the unit counts as taken (fail closed)."""
    snap = machine().gpus(2, A100_40).snapshot().build()
    units = (replace(snap.units[0], holder="bob"), snap.units[1])
    assert outcome(replace(snap, units=units), gpus(1), limits()) == ("GPU-1",)


def test_units_in_holdings_but_free_in_state_are_not_handed_out() -> None:
    snap = machine().gpus(2, A100_40).snapshot().hold("bob", "b", "GPU-0").build()
    units = tuple(replace(us, alloc_id=None, holder=None) for us in snap.units)
    assert outcome(replace(snap, units=units), gpus(1), limits()) == ("GPU-1",)
