"""Admins' reservations (issue 16 item 5): which units a reservation keeps from a request.

A reservation keeps its units for one user or one group from `start` to `end`. Rules, in order:

- It is *in force* from its creation until `end`, unless it was cancelled, or its window began
  more than `grace_s` ago and its party has not used it (then its units are back in the pool).
- For its own party (the user, or a member of the group) it keeps nothing back: in the window
  they take its units first (place() gets them as preferred units).
- For anyone else, a reservation in force keeps its units back while the window is open, and
  before it opens unless the requester's allocation must end before it: their max_runtime plus
  gpu_hold_after_stop from now ends by `start` (`latest_end`; None: no known end, e.g. no
  max_runtime or an exemption from it). Such a request still gets other units first; it is
  given reserved ones only when nothing else fits, with a warning saying when they must be
  back.

The queue (services/queue.py) reads them too: the free units reservations keep are not free
for the line until they return (set_aside), and an entry of a reservation's party starts on its
units as soon as enough are free, whatever waits ahead of it (own_window, with_own_windows).

Pure: times are floats the caller passes, no clock, no store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ds01.timetext import clock


@dataclass(frozen=True)
class Window:
    """One reservation as decisions need it."""

    id: int
    units: frozenset[str]  # unit UUIDs
    user: str | None  # for this user, or
    group: str | None  # for the members of this group
    start: float
    end: float
    grace_s: float
    reason: str
    used: bool  # its party holds, or held, one of its units since the window began

    def is_for(self, user: str, groups: Iterable[str]) -> bool:
        if self.user is not None:
            return self.user == user
        return self.group is not None and self.group in set(groups)

    def in_force(self, now: float) -> bool:
        if now >= self.end:
            return False
        return self.used or now < self.start + self.grace_s

    def returns_at(self, now: float) -> float:
        """When its units are back in the pool if nothing changes: the end of the grace
        period while unused, else the end of the window."""
        if not self.used and self.start + self.grace_s < self.end:
            return max(now, self.start + self.grace_s)
        return self.end

    @property
    def party(self) -> str:
        return self.user if self.user is not None else f"group {self.group}"

    def describe(self, now: float) -> str:
        """'reserved for alice from 14:00 to 18:00 (reservation 3: thesis run)'."""
        return (
            f"reserved for {self.party} from {clock(self.start, now)} to {clock(self.end, now)}"
            f" (reservation {self.id}: {self.reason})"
        )

    def describe_to_others(self, now: float) -> str:
        """describe(), and before the window what others may still do with its units."""
        text = self.describe(now)
        if now < self.start:
            text += (
                "; until it starts only a container that must end before then (its"
                " max_runtime and GPU hold) may use them"
            )
        return text


@dataclass(frozen=True)
class Verdict:
    """What the reservations in force mean for one request now."""

    withheld: Mapping[str, Window]  # unit → the reservation that keeps it from the requester
    # Units reserved later that the requester may still take, when nothing else fits: their
    # allocation must end before the window (unit → that reservation).
    lendable: Mapping[str, Window]
    mine: tuple[str, ...]  # units reserved for the requester, window open: theirs first


def judge(
    windows: Iterable[Window],
    user: str,
    groups: Iterable[str],
    now: float,
    latest_end: float | None,
) -> Verdict:
    """The verdict of every reservation in force on a request of `user` (in `groups`) now.
    latest_end: when what they are given now must be back at the latest (None: unknown)."""
    gs = frozenset(groups)
    withheld: dict[str, Window] = {}
    lendable: dict[str, Window] = {}
    mine: list[str] = []
    for w in sorted(windows, key=lambda w: (w.start, w.id)):
        if not w.in_force(now):
            continue
        if w.is_for(user, gs):
            if now >= w.start:
                mine += sorted(w.units)
            continue
        for uuid in w.units:
            if now < w.start and latest_end is not None and latest_end <= w.start:
                if uuid not in withheld:
                    lendable.setdefault(uuid, w)
            else:
                withheld.setdefault(uuid, w)
                lendable.pop(uuid, None)
    return Verdict(withheld=withheld, lendable=lendable, mine=tuple(dict.fromkeys(mine)))


def overlaps(a_start: float, a_end: float, b_start: float, b_end: float) -> bool:
    return a_start < b_end and b_start < a_end


# ---- the queue's view (services/queue.py: estimates and backfill) ---------------------------


def set_aside(
    windows: Iterable[Window], free: frozenset[str], now: float
) -> tuple[int, list[tuple[float, int]]]:
    """For the queue's estimates: how many of the free units the reservations in force keep
    from the line (their window open, or not begun: an entry that starts now may run past its
    start), and when each group of them returns — (at, units)."""
    kept: dict[str, Window] = {}
    for w in sorted(windows, key=lambda w: (w.start, w.id)):
        for uuid in w.units & free:
            kept.setdefault(uuid, w)
    by_window: dict[int, tuple[Window, int]] = {}
    for w in kept.values():
        _, n = by_window.get(w.id, (w, 0))
        by_window[w.id] = (w, n + 1)
    return len(kept), [(w.returns_at(now), n) for w, n in by_window.values()]


def own_window(
    windows: Iterable[Window],
    user: str,
    groups: Iterable[str],
    size: float,
    free: frozenset[str],
    now: float,
) -> Window | None:
    """A reservation in force for this user (or their group) with at least `size` of its
    units free now, if any: an entry of theirs can start there now (its party may use a
    reservation's units before its window too: they are kept for no one else)."""
    gs = frozenset(groups)
    for w in sorted(windows, key=lambda w: (w.start, w.id)):
        if w.in_force(now) and w.is_for(user, gs) and len(w.units & free) >= size:
            return w
    return None


def with_own_windows(
    etas: Sequence[float | None],
    entries: Sequence[tuple[str, Iterable[str], float]],
    windows: Sequence[Window],
    free: frozenset[str],
    now: float,
) -> list[float | None]:
    """Each estimate, or sooner for an entry (user, groups, size) of a reservation's party:
    now when enough of its units are free; else by the window's start, when the units are
    lent until then (a borrower's container must end before it)."""
    out = list(etas)
    for i, (user, groups, size) in enumerate(entries):
        if own_window(windows, user, groups, size, free, now) is not None:
            out[i] = now
            continue
        gs = frozenset(groups)
        later = [
            w.start
            for w in windows
            if now < w.start and w.in_force(now) and w.is_for(user, gs) and len(w.units) >= size
        ]
        if later:
            cur = out[i]
            out[i] = min(later) if cur is None else min(cur, *later)
    return out
