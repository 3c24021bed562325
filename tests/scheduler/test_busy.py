"""Units busy outside ds01 (scheduler/busy.py, issue 13 item 2): placement takes quiet units
first; a request only busy units can meet is granted with a warning naming the processes'
owners, or refused with unit_busy when allocation.busy_units is refuse."""

from __future__ import annotations

import pytest

from ds01.errors import Refusal, RefusalReason
from ds01.scheduler.busy import BusyPolicy
from ds01.scheduler.place import place
from ds01.scheduler.snapshot import Request, Snapshot

from .builders import A100_80, H100, gpueq, gpus, limits, machine, mig, refusal_of, uuids

R = RefusalReason
GIB = 1024

CHOICES = [
    pytest.param(
        machine()
        .gpus(4, A100_80)
        .snapshot()
        .hold("bob", "b", "GPU-0")
        .foreign("GPU-1", "carol")
        .use("GPU-1", memory_mib=(70 * GIB, 80 * GIB), utilization_pct=94)
        .build(),
        gpus(2),
        ("GPU-2", "GPU-3"),
        id="the incident: gpus=2 gets the two idle GPUs, not the one 94 % busy outside ds01",
    ),
    pytest.param(
        machine().gpus(2, A100_80).snapshot().foreign("GPU-0", None).build(),
        gpus(1),
        ("GPU-1",),
        id="a process of unknown owner makes a GPU busy too",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_80)
        .snapshot()
        .use("GPU-0", memory_mib=(9 * GIB, 80 * GIB), utilization_pct=0)
        .build(),
        gpus(1),
        ("GPU-1",),
        id="more than a tenth of the memory used is busy",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_80)
        .snapshot()
        .use("GPU-0", memory_mib=(1 * GIB, 80 * GIB), utilization_pct=3)
        .build(),
        gpus(1),
        ("GPU-0",),
        id="a little memory and 3 % utilization is quiet: LRU order stands",
    ),
    pytest.param(
        machine().gpus(2, A100_80).snapshot().use("GPU-0", utilization_pct=10).build(),
        gpus(1),
        ("GPU-1",),
        id="10 % utilization is busy",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("3g.40gb", "3g.40gb")
        .snapshot()
        .foreign("MIG-0-0", "carol")
        .build(),
        mig("3g.40gb"),
        ("MIG-0-1",),
        id="a MIG slice with a foreign process is passed over for its quiet twin",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig("1g.10gb", "1g.10gb")
        .snapshot()
        .foreign("MIG-0-0", "carol")
        .build(),
        gpueq("1/7"),
        ("MIG-0-1",),
        id="gpueq takes the quiet slice",
    ),
]


@pytest.mark.parametrize(("snapshot", "request_", "expected"), CHOICES)
def test_quiet_units_first(
    snapshot: Snapshot, request_: Request, expected: tuple[str, ...]
) -> None:
    placed = place(snapshot, request_, limits())
    assert (uuids(placed.units), placed.warnings) == (expected, ())


BUSY_ONLY = (
    machine()
    .gpus(2, A100_80)
    .snapshot()
    .hold("bob", "b", "GPU-0")
    .foreign("GPU-1", "carol", pid=4242, name="python")
    .use("GPU-1", memory_mib=(70 * GIB, 80 * GIB), utilization_pct=94)
    .build()
)
BUSY_LINE = (
    "GPU 1 (GPU-1): 1 process outside ds01 (python pid 4242 of carol), "
    "70 of 80 GiB memory used, 94 % busy"
)


def test_only_a_busy_unit_is_granted_with_a_warning_naming_the_owner() -> None:
    placed = place(BUSY_ONLY, gpus(1), limits())
    assert uuids(placed.units) == ("GPU-1",)
    assert placed.warnings == (f"only a busy unit was free: {BUSY_LINE}",)


def test_only_a_busy_unit_is_refused_when_config_says_refuse() -> None:
    with pytest.raises(Refusal) as caught:
        place(BUSY_ONLY, gpus(1), limits(), BusyPolicy.REFUSE)
    assert caught.value.reason is R.UNIT_BUSY
    assert caught.value.lines() == [
        f"capacity: only units busy outside ds01 are free: {BUSY_LINE}.",
        "This machine's config sets allocation.busy_units to refuse.",
        "Try again when they are idle (see 'ds01 gpu status'), or ask for other units.",
    ]


def test_refuse_policy_does_not_refuse_when_quiet_units_suffice() -> None:
    snap = machine().gpus(2, A100_80).snapshot().foreign("GPU-0", "carol").build()
    placed = place(snap, gpus(1), limits(), BusyPolicy.REFUSE)
    assert uuids(placed.units) == ("GPU-1",)


def test_no_capacity_is_still_no_capacity_with_busy_units_around() -> None:
    snap = machine().gpus(1, A100_80).snapshot().foreign("GPU-0", "carol").build()
    assert refusal_of(snap, gpus(2), limits()).reason is R.NO_CAPACITY
