"""Exact refusal texts (scheduler/explain.py): what failed, why, what to do — for the main
cases of every reason the scheduler gives. The texts are the user interface of a refusal, so
they are pinned word for word."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from fractions import Fraction

import pytest

from ds01.errors import MigProfileError, RefusalReason
from ds01.model.limits import Limits
from ds01.scheduler.place import place
from ds01.scheduler.snapshot import Request, RequestKind, Snapshot

from .builders import (
    A100_40,
    A100_80,
    H100,
    TOMORROW,
    at,
    gpueq,
    gpus,
    limits,
    machine,
    mig,
    refusal_of,
)

R = RefusalReason


@pytest.fixture(autouse=True)
def utc_clock() -> Iterator[None]:
    """Refusals show clock times in the local zone; the builders' times are UTC, so these
    tests run with the local zone set to UTC (and put the zone back after)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


TEXTS = [
    pytest.param(
        machine()
        .gpus(3, A100_40)
        .snapshot()
        .hold("alice", "thesis", "GPU-0")
        .held("alice", "scratch", "GPU-1", until=at("14:05"))
        .build(),
        gpus(1),
        limits(2),
        R.MAX_GPUEQ,
        [
            "quota: you hold 2 of 2 gpueq (thesis: 1×A100-SXM4-40GB 1,"
            " scratch: 1×A100-SXM4-40GB 1, held until 14:05).",
            "This request needs 1 gpueq; max_gpueq is 2, so 0 more fits.",
            "Retire one (ds01 container retire NAME) or ask an admin.",
        ],
        id="max_gpueq lists what the user holds, held allocations with their end",
    ),
    pytest.param(
        machine().gpus(3, A100_40).snapshot().build(),
        gpus(3),
        limits(2),
        R.MAX_GPUEQ,
        [
            "quota: you hold 0 of 2 gpueq.",
            "This request needs 3 gpueq; max_gpueq is 2, so 2 more fits.",
            "Ask for at most 2 gpueq, or ask an admin.",
        ],
        id="max_gpueq for a user holding nothing suggests asking for less",
    ),
    pytest.param(
        machine().gpu(H100).mig("4g.40gb", "2g.20gb", "1g.10gb").snapshot().build(),
        gpueq(Fraction(1, 2)),
        limits(Fraction(1, 2)),
        R.MAX_GPUEQ,
        [
            "quota: you hold 0 of 0.5 gpueq.",
            "This request needs 0.57 gpueq (the smallest free fit for gpueq=0.5);"
            " max_gpueq is 0.5, so 0.5 more fits.",
            "Ask for at most 0.5 gpueq, or ask an admin.",
        ],
        id="max_gpueq on a gpueq request states what the chosen slice costs",
    ),
    pytest.param(
        machine()
        .gpu(H100)
        .mig(*["1g.10gb"] * 7)
        .snapshot()
        .hold("alice", "a", "MIG-0-0", "MIG-0-1")
        .build(),
        gpueq(Fraction(2, 7)),
        limits(Fraction(3, 7)),
        R.MAX_GPUEQ,
        [
            "quota: you hold 0.29 of 0.43 gpueq (a: 2×H100 80GB HBM3 1g.10gb 0.29).",
            "This request needs at least 0.29 gpueq; max_gpueq is 0.43, so 0.14 more fits.",
            "Retire one (ds01 container retire NAME) or ask an admin.",
        ],
        id="max_gpueq before placement says at least",
    ),
    pytest.param(
        machine()
        .gpu(A100_80)
        .mig("3g.40gb", "3g.40gb", "1g.10gb")
        .snapshot()
        .hold("bob", "b", "MIG-0-0")
        .hold("carol", "c", "MIG-0-1")
        .build(),
        mig("3g.40gb"),
        limits(),
        R.NO_CAPACITY,
        [
            "capacity: no free 3g.40gb slice (2 in use by 2 users); 1g.10gb slices are free.",
            "No hold ends at a known time: the units in use belong to running or starting"
            " containers.",
            "Ask for a free profile instead (--mig 1g.10gb), or try again later.",
        ],
        id="capacity for a MIG profile says which profiles are free",
    ),
    pytest.param(
        machine()
        .gpu(A100_80)
        .mig("3g.40gb", "3g.40gb", "1g.10gb")
        .snapshot()
        .hold("bob", "b", "MIG-0-0")
        .held("carol", "c", "MIG-0-1", until=at("14:05"))
        .build(),
        mig("3g.40gb"),
        limits(),
        R.NO_CAPACITY,
        [
            "capacity: no free 3g.40gb slice (2 in use by 2 users); 1g.10gb slices are free.",
            "The next 3g.40gb slice frees up at 14:05, when a stopped container's hold ends.",
            "Ask for a free profile instead (--mig 1g.10gb), or try again later.",
        ],
        id="capacity says when the next slice frees up",
    ),
    pytest.param(
        machine()
        .gpus(3, A100_40)
        .gpu(H100)
        .mig("3g.40gb")
        .snapshot()
        .hold("bob", "b", "GPU-0")
        .drain("GPU-1")
        .build(),
        gpus(2),
        limits(),
        R.NO_CAPACITY,
        [
            "capacity: only 1 free whole GPU, 2 asked (1 in use by 1 user, 1 drained);"
            " 3g.40gb slices are free.",
            "No hold ends at a known time: the units in use belong to running or starting"
            " containers.",
            "Ask for fewer GPUs (--gpus 1), or try again later.",
        ],
        id="capacity for whole GPUs counts drained ones and suggests fewer",
    ),
    pytest.param(
        machine()
        .gpus(2, A100_40)
        .gpu(H100)
        .mig("3g.40gb")
        .snapshot()
        .hold("bob", "b", "GPU-0")
        .held("bob", "c", "GPU-1", until=at("09:30", TOMORROW))
        .build(),
        gpus(1),
        limits(),
        R.NO_CAPACITY,
        [
            "capacity: no free whole GPU (2 in use by 1 user); 3g.40gb slices are free.",
            "The next whole GPU frees up at 04 Mar 09:30, when a stopped container's hold ends.",
            "Ask for a MIG slice instead (--mig 3g.40gb), or try again later.",
        ],
        id="capacity for a whole GPU points to a slice, and dates a hold ending tomorrow",
    ),
    pytest.param(
        machine().gpu(H100).mig("3g.40gb", "1g.10gb").snapshot().build(),
        mig("5g.50gb"),
        limits(),
        R.UNKNOWN_PROFILE,
        [
            "request: this machine has no 5g.50gb MIG slice.",
            "Its MIG profiles are 1g.10gb, 3g.40gb.",
            "Ask for one of those (--mig 1g.10gb), or see 'ds01 gpu status'.",
        ],
        id="unknown profile lists the machine's profiles",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().build(),
        mig("3g.40gb"),
        limits(),
        R.UNKNOWN_PROFILE,
        [
            "request: this machine has no 3g.40gb MIG slice.",
            "None of its GPUs is in MIG mode.",
            "Ask for whole GPUs (--gpus N) instead.",
        ],
        id="unknown profile on a machine without MIG",
    ),
    pytest.param(
        machine().gpu(H100).mig("1g.10gb+me", "3g.40gb").snapshot().build(),
        mig("1g.10gb"),
        limits(),
        R.UNKNOWN_PROFILE,
        [
            "request: this machine has no 1g.10gb MIG slice.",
            "Its MIG profiles are 1g.10gb+me, 3g.40gb.",
            "Of that size it has 1g.10gb+me: ask for it by that name (--mig 1g.10gb+me)"
            " if it will do.",
        ],
        id="a plain profile that exists only with +me names the variant",
    ),
    pytest.param(
        machine().gpu(H100).mig("1g.10gb", "3g.40gb").snapshot().build(),
        mig("1g.10gb+me.all"),
        limits(),
        R.UNKNOWN_PROFILE,
        [
            "request: this machine has no 1g.10gb+me.all MIG slice.",
            "Its MIG profiles are 1g.10gb, 3g.40gb.",
            "Of that size it has 1g.10gb: ask for it by that name (--mig 1g.10gb) if it will do.",
        ],
        id="a variant the machine lacks names the plain profile of that size",
    ),
    pytest.param(
        machine().gpus(2, A100_40).gpu(H100).mig("3g.40gb").snapshot().build(),
        gpus(2),
        limits(full=False),
        R.FULL_GPU_NOT_ALLOWED,
        [
            "quota: whole GPUs are not allowed for you (gpus=2 asks for whole GPUs).",
            "Your limits set allow_full_gpu to false.",
            "Ask for a MIG slice instead (--mig 3g.40gb), or ask an admin.",
        ],
        id="full GPU refused for gpus=N",
    ),
    pytest.param(
        machine().gpus(2, A100_40).gpu(H100).mig("3g.40gb").snapshot().build(),
        gpueq(1),
        limits(full=False, units=2),
        R.FULL_GPU_NOT_ALLOWED,
        [
            "quota: whole GPUs are not allowed for you (gpueq=1 needs a whole GPU here).",
            "Your limits set allow_full_gpu to false, and the MIG slices here cannot reach"
            " 1 gpueq within 2 units.",
            "Ask for a MIG slice instead (--mig 3g.40gb), or ask an admin.",
        ],
        id="full GPU refused for a gpueq request only whole GPUs can meet",
    ),
    pytest.param(
        machine().gpus(4, A100_40).snapshot().build(),
        gpus(3),
        limits(units=2),
        R.MAX_UNITS_PER_CONTAINER,
        [
            "quota: this request needs 3 units; at most 2 per container.",
            "Your limits set max_units_per_container to 2.",
            "Ask for fewer units, or spread the work over several containers.",
        ],
        id="too many units",
    ),
    pytest.param(
        machine().gpu(H100).mig(*["1g.10gb"] * 7).snapshot().build(),
        gpueq(Fraction(3, 7)),
        limits(units=2),
        R.MAX_UNITS_PER_CONTAINER,
        [
            "quota: this request needs at least 3 units; at most 2 per container.",
            "The fewest units worth 0.43 gpueq on this machine are 3."
            " Your limits set max_units_per_container to 2.",
            "Ask for fewer units, or spread the work over several containers.",
        ],
        id="too many units for a gpueq request",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .snapshot()
        .hold("alice", "thesis", "GPU-0")
        .reserved("alice", None, "GPU-1")
        .build(),
        gpus(1, container="new"),
        limits(containers=2),
        R.MAX_CONTAINERS,
        [
            "quota: you have 2 of 2 containers (thesis, allocation 2).",
            "A new container would make 3; your limits set max_containers to 2.",
            "Retire one (ds01 container retire NAME) or ask an admin.",
        ],
        id="too many containers names them",
    ),
    pytest.param(
        machine()
        .gpus(4, A100_40)
        .gpu(H100)
        .mig("3g.40gb")
        .snapshot()
        .hold("bob", "b", "GPU-0", group="phd")
        .hold("carol", "c", "GPU-1", group="phd")
        .hold("alice", "a", "MIG-4-0", group="phd")
        .build(),
        gpus(1),
        limits(group="phd", group_cap=Fraction(17, 7)),
        R.GROUP_MAX_GPUEQ,
        [
            "quota: group 'phd' holds 2.43 of 2.43 gpueq (bob 1, carol 1, alice 0.43).",
            "This request needs 1 gpueq; the group's cap is 2.43, so 0 more fits.",
            "Wait for a group member to retire a container, or ask an admin.",
        ],
        id="group cap lists members by what they hold",
    ),
    pytest.param(
        machine().gpus(2, A100_40).snapshot().build(),
        gpus(0),
        limits(),
        R.BAD_REQUEST,
        [
            "request: gpus=0 asks for no GPU.",
            "A GPU request needs at least 1 whole GPU.",
            "Ask for gpus=1 or more, or for a CPU-only container.",
        ],
        id="gpus=0 is a bad request",
    ),
]


@pytest.mark.parametrize(("snap", "request_", "lim", "reason", "lines"), TEXTS)
def test_refusal_text(
    snap: Snapshot, request_: Request, lim: Limits, reason: RefusalReason, lines: list[str]
) -> None:
    refusal = refusal_of(snap, request_, lim)
    assert (refusal.reason, refusal.lines()) == (reason, lines)


def test_refusal_carries_reason_in_json() -> None:
    refusal = refusal_of(machine().gpus(1, A100_40).snapshot().build(), gpus(2), limits())
    assert refusal.to_dict()["reason"] == "no_capacity"


BAD = [
    pytest.param(gpus(0), id="gpus=0"),
    pytest.param(gpus(-1), id="gpus=-1"),
    pytest.param(mig(), id="mig with no profile"),
    pytest.param(gpueq(0), id="gpueq=0"),
    pytest.param(Request(user="alice", kind=RequestKind.GPUEQ), id="gpueq missing"),
    pytest.param(
        Request(user="alice", kind=RequestKind.GPUS, count=1, profiles=("3g.40gb",)),
        id="gpus request that also names profiles",
    ),
    pytest.param(
        Request(user="alice", kind=RequestKind.CPU, count=1), id="cpu request with a count"
    ),
]


@pytest.mark.parametrize("request_", BAD)
def test_bad_request(request_: Request) -> None:
    snap = machine().gpu(H100).mig("3g.40gb").gpu(A100_40).snapshot().build()
    assert refusal_of(snap, request_, limits()).reason is R.BAD_REQUEST


def test_a_name_that_is_not_a_profile_is_the_one_usage_error_not_a_refusal() -> None:
    # The same error the API, the CLI and machine files give (model/profile.py), not a
    # Refusal: it is the caller's input that is wrong, whatever the machine has.
    snap = machine().gpu(H100).mig("3g.40gb").snapshot().build()
    with pytest.raises(MigProfileError) as err:
        place(snap, mig("3g.40gb", "big"), limits())
    assert err.value.lines() == [
        "'big' is not a MIG profile name",
        "MIG profiles are written [Nc.]Ng.NNgb with an optional +me, +me.all, +gfx or -me,"
        " such as 3g.40gb, 1c.3g.71gb or 1g.10gb+me.",
        "Write it as 'ds01 gpu status' shows it, such as 3g.40gb, 1c.3g.71gb or 1g.10gb+me.",
    ]
    assert err.value.exit_code == 2
