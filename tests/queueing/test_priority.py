"""Priority with fair share (issue 16 item 2), pure and on a controllable clock: `now` is a
number the test chooses. Expected values are literals worked out by hand in each case's id or
comment, never computed with the code under test."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import ds01.queue
from ds01.queue.priority import (
    Settings,
    Usage,
    Waiting,
    Weights,
    decay,
    decayed_usage,
    fairshare_factor,
    priority,
    ranked,
)

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY

# Half-life one week, one GPU-day of decayed use halves the fair-share factor, age counts up to
# a day, weights as the config's defaults.
S = Settings(
    half_life_s=WEEK,
    usage_scale=DAY,
    age_max_s=DAY,
    weights=Weights(fairshare=1000, age=100, group=100, size=10),
    group_priority={"phd": 0.5},
)
T0 = 1_000_000_000.0


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        pytest.param(0.0, 1.0, id="use just now counts fully"),
        pytest.param(WEEK, 0.5, id="one half-life ago counts half"),
        pytest.param(2 * WEEK, 0.25, id="two half-lives ago count a quarter"),
        pytest.param(-5.0, 1.0, id="a time in the future counts fully, never more"),
    ],
)
def test_decay(age: float, expected: float) -> None:
    assert decay(age, WEEK) == pytest.approx(expected)


def test_a_gpu_held_for_a_day_that_ended_just_now_counts_a_little_under_a_gpu_day() -> None:
    # ∫0^1d 2^(-t/1w) dt = 1w/ln2 · (1 - 2^(-1/7)) = 872,542.3 · 0.094276 = 82,260.1 s: under
    # a whole day (86,400 s) because the older part has decayed.
    u = [Usage("ann", 1.0, T0 - DAY, T0)]
    assert decayed_usage(u, "ann", T0, WEEK) == pytest.approx(82260.1, rel=1e-4)


def test_usage_recovers_with_the_half_life() -> None:
    """The same day of use, read a week and two weeks later: half, then a quarter."""
    u = [Usage("ann", 1.0, T0 - DAY, T0)]
    now_1w, now_2w = T0 + WEEK, T0 + 2 * WEEK
    assert decayed_usage(u, "ann", now_1w, WEEK) == pytest.approx(82260.1 / 2, rel=1e-4)
    assert decayed_usage(u, "ann", now_2w, WEEK) == pytest.approx(82260.1 / 4, rel=1e-4)


def test_a_live_allocation_counts_until_now_and_others_users_do_not_count() -> None:
    u = [Usage("ann", 0.5, T0 - HOUR, None), Usage("bob", 4.0, T0 - DAY, None)]
    # half a GPU for an hour: 0.5 · 872,542.3 · (1 - 2^(-1/168)) = 0.5 · 3592.6 = 1796.3
    assert decayed_usage(u, "ann", T0, WEEK) == pytest.approx(1796.3, rel=1e-4)


def test_the_entry_penalty_counts_at_once_and_decays() -> None:
    u = [Usage("ann", 1.0, T0, None, penalty=HOUR)]
    assert decayed_usage(u, "ann", T0, WEEK) == pytest.approx(HOUR)
    # a week later: the penalty counts half; the week of use itself ~ 1w/ln2 · 1/2
    later = decayed_usage([Usage("ann", 0.0, T0, None, penalty=HOUR)], "ann", T0 + WEEK, WEEK)
    assert later == pytest.approx(HOUR / 2)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param(0.0, 1.0, id="no use: full share"),
        pytest.param(DAY, 0.5, id="one usage_scale: half"),
        pytest.param(2 * DAY, 0.25, id="two: a quarter"),
    ],
)
def test_fairshare_factor(usage: float, expected: float) -> None:
    assert fairshare_factor(usage, DAY) == pytest.approx(expected)


def test_each_factor_and_the_sum() -> None:
    """A phd member's 2-GPU request, 6 h old, with one GPU-day of decayed use:
    fairshare 0.5·1000 = 500, age 0.25·100 = 25, group 0.5·100 = 50, size 1/2·10 = 5 → 580."""
    w = Waiting(7, "ann", "phd", 2.0, T0 - 6 * HOUR)
    p = priority(w, DAY, T0, S)
    assert [(f.name, f.value, f.points) for f in p.factors] == [
        ("fairshare", pytest.approx(0.5), pytest.approx(500)),
        ("age", pytest.approx(0.25), pytest.approx(25)),
        ("group", 0.5, pytest.approx(50)),
        ("size", 0.5, pytest.approx(5)),
    ]
    assert p.total == pytest.approx(580)


def test_age_stops_counting_at_age_max() -> None:
    w = Waiting(1, "ann", None, 1.0, T0 - 10 * DAY)
    assert priority(w, 0.0, T0, S).factors[1].value == 1.0


@pytest.mark.parametrize(
    ("usages", "expected"),
    [
        pytest.param([], [1, 2, 3], id="no use by anyone: oldest first"),
        pytest.param(
            [Usage("ann", 2.0, T0 - DAY, T0)],
            [2, 3, 1],
            id="heavy recent use puts a user behind those without",
        ),
        pytest.param(
            [Usage("ann", 2.0, T0 - DAY - 12 * WEEK, T0 - 12 * WEEK)],
            [1, 2, 3],
            id="the same use twelve half-lives ago hardly counts: order by age again",
        ),
    ],
)
def test_order_follows_fair_share(usages: list[Usage], expected: list[int]) -> None:
    waiting = [
        Waiting(1, "ann", None, 1.0, T0 - 3 * HOUR),
        Waiting(2, "bob", None, 1.0, T0 - 2 * HOUR),
        Waiting(3, "cem", None, 1.0, T0 - 1 * HOUR),
    ]
    assert [p.entry_id for p in ranked(waiting, usages, T0, S)] == expected


def test_a_burst_from_one_user_does_not_starve_others() -> None:
    """ann queues ten requests before bob queues one. Admitting in order and charging each
    admission (its allocation as usage from then, plus the entry penalty), bob's request is
    admitted second: after ann's first admission her fair share drops below his."""
    waiting = [Waiting(i, "ann", None, 1.0, T0 - 100 + i) for i in range(1, 11)]
    waiting.append(Waiting(11, "bob", None, 1.0, T0 - 50))
    usages: list[Usage] = []
    admitted: list[int] = []
    now = T0
    while waiting:
        head = ranked(waiting, usages, now, S)[0].entry_id
        admitted.append(head)
        chosen = next(w for w in waiting if w.id == head)
        waiting.remove(chosen)
        usages.append(Usage(chosen.user, 1.0, now, None, penalty=HOUR))
        now += 60  # the next unit frees a minute later
    assert admitted[:2] == [1, 11]
    assert sorted(admitted) == list(range(1, 12))


def test_ties_go_to_the_older_entry() -> None:
    waiting = [Waiting(5, "bob", None, 1.0, T0), Waiting(4, "ann", None, 1.0, T0)]
    assert [p.entry_id for p in ranked(waiting, [], T0, S)] == [4, 5]


def test_the_priority_module_is_pure() -> None:
    """No store, Docker, NVML, config or clock: only the standard library."""
    root = Path(ds01.queue.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name == "__future__" or name.split(".")[0] in sys.stdlib_module_names, (
                    path.name,
                    name,
                )
            if isinstance(node, ast.Attribute) and node.attr in ("time", "monotonic"):
                raise AssertionError(f"{path.name} reads a clock")


# ---- estimated start times (queue/eta.py) -------------------------------------------------

from ds01.queue.eta import Release, estimate  # noqa: E402


@pytest.mark.parametrize(
    ("sizes", "free_now", "releases", "expected"),
    [
        pytest.param([1, 1], 0, [], [None, None], id="nothing with a known end: unknown"),
        pytest.param(
            [1, 1, 1],
            0,
            [Release(T0 + 600, 2), Release(T0 + 60, 1)],
            [T0 + 60, T0 + 600, T0 + 600],
            id="the first release serves the head, the second the next two",
        ),
        pytest.param(
            [2, 1],
            1,
            [Release(T0 + 300, 1)],
            [T0 + 300, None],
            id="a free unit and a release cover the head of two units; nothing is left",
        ),
        pytest.param(
            [1], 1, [], [T0], id="covered by free units now (its user is at a quota): now"
        ),
        pytest.param(
            [1], 0, [Release(T0 - 5, 1)], [T0], id="a release already due: now, never the past"
        ),
    ],
)
def test_estimated_start(
    sizes: list[float], free_now: int, releases: list[Release], expected: list[float | None]
) -> None:
    assert estimate(sizes, free_now, releases, T0) == expected
