"""What an admin's reservation keeps from a request and what it means for the queue's estimates
(scheduler/reservations.py): pure rules, literal cases."""

from __future__ import annotations

import pytest

from ds01.scheduler.reservations import Window, judge, own_window, set_aside, with_own_windows

H = 3600.0


def _w(
    units: str = "a,b",
    *,
    user: str | None = "ann",
    group: str | None = None,
    start: float = 10 * H,
    end: float = 14 * H,
    grace: float = 0.5 * H,
    used: bool = False,
    rid: int = 1,
) -> Window:
    return Window(
        id=rid,
        units=frozenset(units.split(",")),
        user=user,
        group=group,
        start=start,
        end=end,
        grace_s=grace,
        reason="deadline",
        used=used,
    )


@pytest.mark.parametrize(
    ("now", "used", "in_force", "returns_at"),
    [
        (9 * H, False, True, 10.5 * H),
        (10.4 * H, False, True, 10.5 * H),
        (10.5 * H, False, False, 10.5 * H),
        (10.5 * H, True, True, 14 * H),
        (14 * H, True, False, 14 * H),
    ],
    ids=[
        "before its window: in force, back at the end of its grace period if unused",
        "in its grace period, unused: in force",
        "unused at the end of its grace period: its units are back",
        "used: in force until its end",
        "at its end: over",
    ],
)
def test_when_a_reservation_is_in_force(
    now: float, used: bool, in_force: bool, returns_at: float
) -> None:
    w = _w(used=used)
    assert w.in_force(now) is in_force
    assert w.returns_at(now) == max(now, returns_at)


@pytest.mark.parametrize(
    ("user", "groups", "now", "latest_end", "withheld", "lendable", "mine"),
    [
        ("bob", (), 10.2 * H, None, {"a", "b"}, set(), ()),
        ("bob", (), 10.2 * H, 10.3 * H, {"a", "b"}, set(), ()),
        ("bob", (), 8 * H, None, {"a", "b"}, set(), ()),
        ("bob", (), 8 * H, 10.5 * H, {"a", "b"}, set(), ()),
        ("bob", (), 8 * H, 10 * H, set(), {"a", "b"}, ()),
        ("ann", (), 10.2 * H, None, set(), set(), ("a", "b")),
        ("ann", (), 8 * H, None, set(), set(), ()),
        ("bob", (), 10.6 * H, None, set(), set(), ()),
    ],
    ids=[
        "in the window, another user: kept back",
        "in the window, another user with a max_runtime: kept back all the same",
        "before the window, another user with no known end: kept back",
        "before the window, another user who could run into it: kept back",
        "before the window, another user who must end by its start: may borrow them",
        "in the window, its user: theirs first",
        "before the window, its user: nothing kept back, nothing preferred",
        "unused past its grace period: nothing kept back",
    ],
)
def test_what_a_reservation_keeps_from_whom(
    user: str,
    groups: tuple[str, ...],
    now: float,
    latest_end: float | None,
    withheld: set[str],
    lendable: set[str],
    mine: tuple[str, ...],
) -> None:
    v = judge([_w()], user, groups, now, latest_end)
    assert (set(v.withheld), set(v.lendable), v.mine) == (withheld, lendable, mine)


def test_a_group_reservation_is_for_its_members_only() -> None:
    w = _w(user=None, group="lab")
    assert judge([w], "cem", ("lab", "users"), 10.2 * H, None).mine == ("a", "b")
    assert set(judge([w], "bob", ("users",), 10.2 * H, None).withheld) == {"a", "b"}


def test_a_unit_an_open_window_keeps_is_not_lent_for_a_later_one() -> None:
    now_open = _w("a", user="cem", start=7 * H, end=9 * H, used=True, rid=2)
    later = _w("a", start=10 * H)
    v = judge([later, now_open], "bob", (), 8 * H, 9.5 * H)
    assert (set(v.withheld), set(v.lendable)) == ({"a"}, set())


def test_the_free_reserved_units_are_set_aside_until_they_return() -> None:
    windows = [_w("a,b"), _w("c", user="cem", start=8 * H, used=True, rid=2)]
    kept, returns = set_aside(windows, frozenset({"a", "c", "d"}), 9 * H)
    assert kept == 2
    assert sorted(returns) == [(10.5 * H, 1), (14 * H, 1)]


def test_an_entry_of_a_reservations_user_starts_on_its_units() -> None:
    windows = [_w("a,b")]
    entries = [("bob", (), 1.0), ("ann", (), 2.0), ("ann", (), 3.0)]
    # Both free: ann's 2-unit entry can start now (they are hers, window open or not).
    got = with_own_windows([None, 12 * H, None], entries, windows, frozenset({"a", "b"}), 9 * H)
    assert got == [None, 9 * H, None]  # bob: not his; ann's 3-unit entry does not fit them
    # Lent until the window opens: by its start at the latest.
    got = with_own_windows([None, 12 * H, None], entries, windows, frozenset(), 9 * H)
    assert got == [None, 10 * H, None]
    assert own_window(windows, "ann", (), 2, frozenset({"a"}), 9 * H) is None
    assert own_window(windows, "ann", (), 2, frozenset({"a", "b"}), 9 * H) == windows[0]
